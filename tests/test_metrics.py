"""BasicSR-exact PSNR/SSIM: cross-checked with scikit-image and with the literature's bicubic numbers."""

import numpy as np
import pytest
from skimage import data as skdata
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from attrsr import images, metrics
from attrsr.errors import AttrsrError
from attrsr.resize import imresize


@pytest.fixture(scope="module")
def pair():
    hr = images.modcrop(skdata.chelsea(), 4)
    lr = imresize(images.to_tensor(hr)[None], scale=0.25)
    sr = imresize(lr, scale=4)[0]
    return images.to_uint8(sr), hr


def _y(arr):
    return images.rgb2ycbcr(arr, y_only=True)


@pytest.mark.parametrize("border", [0, 2, 4])
def test_ssim_equals_scikit_image(pair, border):
    sr, hr = pair
    a, b = _y(sr), _y(hr)
    if border:
        a, b = a[border:-border, border:-border], b[border:-border, border:-border]
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255)
    assert abs(metrics.ssim(sr, hr, border) - ref) <= 1e-6


def test_psnr_equals_scikit_image_on_y(pair):
    sr, hr = pair
    ref = peak_signal_noise_ratio(_y(hr)[4:-4, 4:-4], _y(sr)[4:-4, 4:-4], data_range=255)
    assert abs(metrics.psnr(sr, hr, 4) - ref) < 1e-9


def test_rgb_metrics_and_tensor_input(pair):
    sr, hr = pair
    t_sr = images.to_tensor(sr)
    assert metrics.psnr(t_sr, hr, 4) == metrics.psnr(sr, hr, 4)
    rgb = metrics.psnr(sr, hr, 4, y_channel=False)
    ref = peak_signal_noise_ratio(hr[4:-4, 4:-4], sr[4:-4, 4:-4], data_range=255)
    assert abs(rgb - ref) < 1e-9
    rgb_ssim = metrics.ssim(sr, hr, 4, y_channel=False)
    ref_ssim = structural_similarity(
        hr[4:-4, 4:-4].astype(np.float64), sr[4:-4, 4:-4].astype(np.float64), channel_axis=2,
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=255,
    )
    assert abs(rgb_ssim - ref_ssim) <= 1e-6


def test_tensor_is_rounded_to_8_bits_first(pair):
    sr, hr = pair
    t = images.to_tensor(sr) + 0.4 / 255  # below half a level: rounds back to the same image
    assert metrics.psnr(t, hr, 4) == metrics.psnr(sr, hr, 4)


def test_masked_psnr(pair):
    sr, hr = pair
    full = np.ones(hr.shape[:2], bool)
    assert abs(metrics.psnr_masked(sr, hr, full, 4) - metrics.psnr(sr, hr, 4)) < 1e-9
    mask = np.zeros(hr.shape[:2], bool)
    mask[50:80, 100:160] = True
    expect = peak_signal_noise_ratio(_y(hr)[50:80, 100:160], _y(sr)[50:80, 100:160], data_range=255)
    assert abs(metrics.psnr_masked(sr, hr, mask) - expect) < 1e-9
    with pytest.raises(AttrsrError, match="no pixels"):
        metrics.psnr_masked(sr, hr, np.zeros_like(mask))


def test_shape_mismatch_is_an_error(pair):
    sr, hr = pair
    with pytest.raises(AttrsrError, match="shapes differ"):
        metrics.psnr(sr[:-4], hr)


@pytest.mark.parametrize(
    "scale,psnr_ref,ssim_ref", [(2, 33.68, 0.9304), (3, 30.40, 0.8690), (4, 28.43, 0.8113)]
)
def test_bicubic_baseline_on_set5(set5, scale, psnr_ref, ssim_ref):
    """Shipped MATLAB LR → imresize ×s → 8 bits → Y-PSNR/SSIM, border = scale (issue #2's numbers)."""
    import attrsr

    res = attrsr.evaluate("bicubic", set5, scale, progress=False)["Set5"]
    assert len(res["images"]) == 5
    assert abs(res["psnr_y"] - psnr_ref) <= 0.005
    assert abs(res["ssim_y"] - ssim_ref) <= 0.005
