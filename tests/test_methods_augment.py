"""The augmentation methods in the engine: CutBlur's space-to-depth head, composition, ADD's boxes
following the saliency, the saliency cache reused, and bad recipes refused before training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attrsr import models
from attrsr.errors import AttrsrError
from attrsr.methods.augment import ADD, SpaceToDepthSR
from engine_helpers import run, tiny_config, weights

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


def _methods(*items: dict) -> str:
    return "methods=[" + ", ".join(json.dumps(i) for i in items) + "]"


def test_space_to_depth_head_starts_as_the_plain_network():
    torch.manual_seed(0)
    net = models.create("edsr-baseline", scale=2, n_resblocks=1, n_feats=8).eval()
    wrapped = SpaceToDepthSR(net, 2).eval()
    lr = torch.rand(2, 3, 12, 10)
    with torch.no_grad():
        torch.testing.assert_close(wrapped(lr), net(lr), rtol=1e-5, atol=1e-6)
        hr_size = lr.repeat_interleave(2, -2).repeat_interleave(2, -1)
        torch.testing.assert_close(wrapped(hr_size, hr_size=True), net(lr), rtol=1e-5, atol=1e-6)


def test_cutblur_run_trains_the_wrapped_network_and_says_what_it_exports(tmp_path, cache):
    cfg = tiny_config(cache, "train.iterations=4", _methods({"name": "cutblur"}, {"name": "cutout", "alpha": 0.05}))
    tr = run(cfg, tmp_path / "run")
    assert isinstance(tr.model, SpaceToDepthSR)
    w = weights(tmp_path / "run" / "model.safetensors")
    assert "head.weight" in w and any(k.startswith("net.") for k in w)
    from safetensors import safe_open

    with safe_open(str(tmp_path / "run" / "model.safetensors"), "pt") as f:
        meta = f.metadata()
    assert "SpaceToDepthSR" in json.dumps(meta)


def test_two_forward_owners_are_a_recipe_error_and_plain_ops_compose(tmp_path, cache):
    with pytest.raises(AttrsrError, match="forward"):
        run(tiny_config(cache, "train.iterations=1", _methods({"name": "cutblur"}, {"name": "moa"})), tmp_path / "a")
    tr = run(tiny_config(cache, "train.iterations=2", _methods({"name": "cutmix"}, {"name": "mixup"},
                                                                {"name": "moa", "ops": {"blend": 1, "rgb": 1}})), tmp_path / "b")
    assert tr.step == 2 and not isinstance(tr.model, SpaceToDepthSR)


@pytest.mark.parametrize("bad", [{"name": "moa", "ops": {"cutmx": 1}}, {"name": "cutmix", "prob": 1.5},
                                 {"name": "add", "box": "biggest"}])
def test_bad_method_parameters_fail_before_training(tmp_path, cache, bad):
    with pytest.raises(AttrsrError) as err:
        run(tiny_config(cache, _methods(bad)), tmp_path / "run")
    assert bad["name"] in str(err.value)
    assert not (tmp_path / "run").exists()


def _batch_with_peak(b=4, p=16, peak=(11, 3)):
    torch.manual_seed(0)
    sal = torch.full((b, p, p), 0.01)
    sal[:, peak[0], peak[1]] = 1.0
    return {"lr": torch.rand(b, 3, p, p), "hr": torch.rand(b, 3, 2 * p, 2 * p), "aux": {"saliency": sal}}


def test_add_puts_cutblurs_hr_detail_on_the_salient_spot():
    method = ADD(ADD.Params(ops={"cutblur": 1.0}, alpha=0.3))
    method.scale = 2
    batch = _batch_with_peak()
    for seed in range(5):
        out = method.augment(dict(batch), None, np.random.default_rng(seed))
        up = batch["lr"].repeat_interleave(2, -2).repeat_interleave(2, -1)
        hr_px = out["hr_input"][..., 22:24, 6:8]  # the HR pixels above LR (11, 3)
        changed = ~torch.isclose(out["hr_input"], up).all(1)
        if torch.equal(hr_px, batch["hr"][..., 22:24, 6:8]):  # HR pasted into LR: the box covers the peak
            assert bool(changed[:, 22:24, 6:8].all())
        else:  # LR pasted into HR: the box (LR-size content) sits on the peak
            assert torch.equal(hr_px, up[..., 22:24, 6:8])


def test_add_cutmix_pastes_the_sources_salient_region():
    method = ADD(ADD.Params(ops={"cutmix": 1.0}, alpha=0.25))
    method.scale = 2
    batch = _batch_with_peak()
    batch["aux"]["saliency"][1:, 11, 3] = 0.01  # only sample 0 has the peak
    batch["aux"]["saliency"][0, 2, 12] = 0.0
    out = method.augment(dict(batch), None, np.random.default_rng(0))
    # every sample that received sample 0's content got the region around its peak
    got = [i for i in range(4) if torch.equal(out["lr"][i, :, 11, 3], batch["lr"][0, :, 11, 3]) and i != 0]
    assert got, "some sample must draw sample 0 as its source"


def test_add_saliency_is_computed_once_and_reused(tmp_path, cache, monkeypatch):
    import attrsr.methods.augment as mod

    calls = []
    real = mod.cam_tiles
    monkeypatch.setattr(mod, "cam_tiles", lambda *a: calls.append(1) or real(*a))
    from skimage import data

    from attrsr.images import save_image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, (r, c) in enumerate([(100, 150), (250, 300), (30, 40)]):  # three small real HR images
        save_image(data.astronaut()[r : r + 48, c : c + 64], photos / f"p{i}.png")
    spec = {"name": "add_plus", "saliency": {"steps": 3, "tile": 16}, "n_blocks": 2}
    sets = ["train.iterations=2", f"data.train={photos}", "data.repeat=2", f"data.cache_dir={tmp_path / 'cache'}"]
    run(tiny_config(cache, *sets, _methods(spec)), tmp_path / "a")
    first = len(calls)
    assert first == 3
    tr = run(tiny_config(cache, *sets, _methods(spec)), tmp_path / "b")
    assert len(calls) == first  # the second run read the cache
    for s in tr.train_set.aux["saliency"]:
        assert s.shape == (24, 32) and s.dtype == np.float16 and float(np.max(s)) == 1.0


def test_a_wrapped_export_is_rebuilt_for_evaluation(tmp_path, cache):
    """``attrsr experiment`` evaluates a CutBlur run's export (zoo_loadable: false) through the
    method's ``rebuild``, to the numbers of the trained network itself."""
    from attrsr.data.datasets import open_dataset
    from attrsr.evaluation import evaluate
    from attrsr.experiment import Run, _evaluate_run

    cfg = tiny_config(cache, "train.iterations=2", _methods({"name": "cutblur"}))
    tr = run(cfg, tmp_path / "run")
    got = _evaluate_run(Run("cutblur", 0, cfg, tmp_path / "run"), ["samples:val"])
    from attrsr import models

    with pytest.raises(AttrsrError, match="SpaceToDepthSR"):  # load() says what the file is
        models.load(weights=tmp_path / "run" / "model.safetensors")
    want = evaluate(tr.model.eval(), [open_dataset("samples:val", 2, name="samples:val")], 2, progress=False)
    assert got["samples:val"]["psnr_y"] == want["samples:val"]["psnr_y"]


def test_saliency_weights_of_another_scale_are_refused_before_training(tmp_path, cache):
    """FSRCNN's deconvolution loads at any scale, so only the reconstruction can tell: ×4 weights used
    for a ×2 recipe score far below bicubic and are refused; the ×2 weights pass the same check."""
    from conftest import DATA, need

    x4 = need(DATA / "weights/fsrcnn/fsrcnn_x4.pth")
    bad = {"name": "add", "saliency": {"model": "fsrcnn", "weights": str(x4)}}
    with pytest.raises(AttrsrError, match=r"add: saliency model 'fsrcnn'.*below bicubic.*another scale") as err:
        run(tiny_config(cache, _methods(bad)), tmp_path / "run")
    assert "×2" in str(err.value)
    assert not (tmp_path / "run").exists()

    from attrsr.engine import Trainer
    from attrsr.methods.augment import SaliencySource, _check_saliency_model

    images = Trainer(tiny_config(cache), out=tmp_path / "t", progress=False).images
    right = models.load("fsrcnn", weights=DATA / "weights/fsrcnn/fsrcnn_x2.pth", scale=2)
    _check_saliency_model("add", SaliencySource(model="fsrcnn"), right, images, 2)  # no error


@pytest.mark.parametrize("name", ["edsr-baseline", "fsrcnn", "vdsr", "pan", "swinir-light", "rlfn"])
def test_zoo_models_take_cutblurs_hr_size_input(name):
    from attrsr.methods.augment import check_cutblur_input

    torch.manual_seed(0)
    net = SpaceToDepthSR(models.create(name, scale=2), 2).train()
    check_cutblur_input("cutblur", net, 2, name)  # no error
    assert net.training  # the probe leaves the mode as it found it


def test_a_network_that_cannot_take_cutblurs_input_is_refused():
    from attrsr.methods.augment import check_cutblur_input

    grey_only = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.PixelShuffle(2))  # 1-channel input
    with pytest.raises(AttrsrError, match=r"cutblur: model 'grey' cannot take CutBlur's HR-size input.*drop cutblur"):
        check_cutblur_input("cutblur", SpaceToDepthSR(grey_only, 2), 2, "grey")
    same_size = torch.nn.Conv2d(3, 3, 3, padding=1)  # no upsampling: output at LR size
    with pytest.raises(AttrsrError, match=r"maps CutBlur's 32×32 input to \(1, 3, 16, 16\)"):
        check_cutblur_input("cutblur", SpaceToDepthSR(same_size, 2), 2, "plain-conv")
