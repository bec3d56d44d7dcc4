import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from attrsr import images
from attrsr.errors import AttrsrError


@pytest.fixture
def astronaut():
    return skdata.astronaut()


def test_png_round_trip_is_lossless(tmp_path, astronaut):
    p = images.save_image(astronaut, tmp_path / "a.png")
    assert np.array_equal(images.read_image(p), astronaut)
    t = images.load_image(p)
    assert t.shape == (3, 512, 512) and t.dtype == torch.float32
    assert np.array_equal(images.to_uint8(t), astronaut)


def test_grey_and_16bit_become_rgb(tmp_path):
    cam = skdata.camera()
    Image.fromarray(cam).save(tmp_path / "g.png")
    rgb = images.read_image(tmp_path / "g.png")
    assert rgb.shape == (*cam.shape, 3) and np.array_equal(rgb[..., 1], cam)
    deep = cam.astype(np.uint16) * 257  # exact 8→16-bit expansion
    Image.fromarray(deep).save(tmp_path / "d.png")
    arr = images.read_image(tmp_path / "d.png")
    assert arr.dtype == np.uint16
    assert torch.allclose(images.to_tensor(arr), images.to_tensor(rgb), atol=1e-7)


def test_alpha_opaque_dropped_translucent_refused(tmp_path, astronaut):
    rgba = np.dstack([astronaut, np.full(astronaut.shape[:2], 255, np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "o.png")
    assert np.array_equal(images.read_image(tmp_path / "o.png"), astronaut)
    rgba[:10, :10, 3] = 128
    Image.fromarray(rgba).save(tmp_path / "t.png")
    with pytest.raises(AttrsrError, match="translucent"):
        images.read_image(tmp_path / "t.png")


def test_corrupt_and_empty_files_name_the_file(tmp_path, astronaut):
    good = images.save_image(astronaut, tmp_path / "a.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 3])
    (tmp_path / "empty.png").write_bytes(b"")
    for name in ("cut.png", "empty.png"):
        with pytest.raises(AttrsrError, match=name):
            images.read_image(tmp_path / name)


def test_to_uint8_rounds_like_basicsr():
    # BasicSR tensor2img: clamp to [0,1], *255 in float32, np.round (half to even), uint8.
    t = torch.tensor([-0.1, 0.0, 0.7 / 255, 1.5 / 255, 254.2 / 255, 1.2]).view(1, 1, 6).expand(3, 1, 6)
    assert images.to_uint8(t)[0, :, 0].tolist() == [0, 0, 1, 2, 254, 255]
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.uniform(-0.05, 1.05, (3, 64, 64)).astype(np.float32))
    ref = np.round(np.clip(x.numpy().transpose(1, 2, 0), 0, 1) * np.float32(255)).astype(np.uint8)
    assert np.array_equal(images.to_uint8(x), ref)


def test_rgb2ycbcr_matches_matlab_reference_values():
    # MATLAB rgb2ycbcr on uint8 pure colours (rounded): black 16/128/128, white 235/128/128,
    # red 81/90/240, green 145/54/34, blue 41/240/110.
    px = np.array([[[0, 0, 0], [255, 255, 255], [255, 0, 0], [0, 255, 0], [0, 0, 255]]], np.uint8)
    ycc = np.round(images.rgb2ycbcr(px))
    assert ycc[0].tolist() == [[16, 128, 128], [235, 128, 128], [81, 90, 240], [145, 54, 34], [41, 240, 110]]


def test_ycbcr_round_trip_tensor(astronaut):
    t = images.to_tensor(astronaut)[None]
    back = images.ycbcr2rgb(images.rgb2ycbcr(t))
    assert torch.allclose(back, t, atol=1e-5)
    y = images.rgb2ycbcr(t, y_only=True)
    assert y.shape == (1, 1, 512, 512)
    assert np.allclose(y[0, 0].double().numpy() * 255, images.rgb2ycbcr(astronaut, y_only=True), atol=1e-3)


def test_modcrop_arrays_and_tensors():
    a = np.zeros((101, 99, 3))
    assert images.modcrop(a, 4).shape == (100, 96, 3)
    assert images.modcrop(torch.zeros(2, 3, 101, 99), 3).shape == (2, 3, 99, 99)


def _write_png16(arr: np.ndarray, path) -> None:
    """A 16-bit RGB(A) PNG written byte by byte (Pillow cannot write these)."""
    import struct
    import zlib

    h, w, c = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2 if c == 3 else 6, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_16bit_colour_png_keeps_all_16_bits(tmp_path, astronaut):
    # Pillow alone decodes 16-bit colour PNGs to 8 bits (high byte); the low byte must survive.
    deep = astronaut[:64, :80].astype(np.uint16) * 257 + np.arange(80, dtype=np.uint16)[None, :, None]
    _write_png16(deep, tmp_path / "rgb16.png")
    arr = images.read_image(tmp_path / "rgb16.png")
    assert arr.dtype == np.uint16 and np.array_equal(arr, deep)
    _write_png16(np.dstack([deep, np.full(deep.shape[:2], 65535, np.uint16)]), tmp_path / "rgba16.png")
    assert np.array_equal(images.read_image(tmp_path / "rgba16.png"), deep)
    # 16 → 8 bits rounds (v/65535·255), it does not truncate to the high byte.
    expect = np.round(deep.astype(np.float32) / np.float32(65535) * np.float32(255)).astype(np.uint8)
    assert np.array_equal(images.to_uint8(arr), expect)
    assert np.array_equal(images.to_uint8(images.load_image(tmp_path / "rgb16.png")), expect)


def test_jpeg_and_bmp_read_and_write(tmp_path, astronaut):
    images.save_image(astronaut, tmp_path / "a.bmp")
    assert np.array_equal(images.read_image(tmp_path / "a.bmp"), astronaut)  # BMP is lossless
    images.save_image(images.to_tensor(astronaut), tmp_path / "a.jpg")
    jpg = images.read_image(tmp_path / "a.jpg")
    assert jpg.shape == astronaut.shape and jpg.dtype == np.uint8
    assert np.abs(jpg.astype(float) - astronaut).mean() < 4  # lossy, but the same photo
    Image.fromarray(skdata.camera()).save(tmp_path / "g.jpeg")
    grey = images.read_image(tmp_path / "g.jpeg")
    assert grey.shape == (512, 512, 3) and np.array_equal(grey[..., 0], grey[..., 2])
    with pytest.raises(AttrsrError, match="unknown image format"):
        images.save_image(astronaut, tmp_path / "a.xyz")


def test_rgb2ycbcr_equals_scikit_image_unrounded(astronaut):
    """BT.601 as MATLAB/BasicSR define it, to the last bit of float64: scikit-image's rgb2ycbcr is an
    independent implementation of the same matrix and offsets (a wrong coefficient moves PSNR by 0.01 dB)."""
    from skimage.color import rgb2ycbcr as sk_rgb2ycbcr

    ref = sk_rgb2ycbcr(astronaut)  # uint8 in, float64 out on the [16, 235/240] scale, not rounded
    ours = images.rgb2ycbcr(astronaut)
    assert ours.dtype == np.float64 and ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-10)
    np.testing.assert_allclose(images.rgb2ycbcr(astronaut, y_only=True).squeeze(), ref[..., 0], rtol=0, atol=1e-10)
    t = torch.from_numpy(astronaut / 255.0).permute(2, 0, 1)[None]  # the tensor path works in [0, 1] (float64 here)
    np.testing.assert_allclose(images.rgb2ycbcr(t)[0].permute(1, 2, 0).numpy() * 255, ref, rtol=0, atol=1e-9)
