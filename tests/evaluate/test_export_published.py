"""sr-export --format pth|safetensors: weights spandrel detects, with sr-cli's outputs."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sr_cli.commands.export import main
from sr_cli.errors import ConfigError
from sr_cli.evaluate.export import export
from sr_cli.evaluate.inference import load_generator, resolve_checkpoint, super_resolve
from tests.models.test_generators import CONF_DIR
from tests.models.test_published import random_state_dict, reference_edsr


def fake_run_checkpoint(tmp_path, model: str, scale: int, preset: str, **gen_overrides):
    """An sr-train-style checkpoint (generator weights + stored model config) without training."""
    cfg = OmegaConf.create({"scale": scale, "model": OmegaConf.load(CONF_DIR / f"{model}.yaml")})
    cfg.model.preset = preset
    for k, v in gen_overrides.items():
        cfg.model.generator[k] = v
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    torch.manual_seed(0)
    net = instantiate(model_cfg["generator"])
    net.load_state_dict(random_state_dict(net, 1))
    path = tmp_path / f"{model}-{preset}-x{scale}.ckpt"
    torch.save(
        {
            "state_dict": {f"generator.{k}": v for k, v in net.state_dict().items()},
            "sr_cli": {"model": model_cfg, "scale": scale, "iteration": 7},
        },
        path,
    )
    return path


# (config, scale, preset, generator overrides, spandrel architecture id)
CASES = [
    ("span", 4, "small", {}, "SPAN"),
    ("realplksr", 2, "small", {}, "PLKSR"),
    ("compact", 4, "small", {}, "Compact"),
    ("omnisr", 2, "small", {}, "OmniSR"),
    ("hat", 2, "small", {}, "HAT"),
    ("dat", 2, "small", {}, "DAT"),
    ("esrgan", 4, "paper", {}, "ESRGAN"),
    ("swinir_light", 2, "light", {}, "SwinIR"),
]


@pytest.mark.parametrize(("model", "scale", "preset", "overrides", "arch"), CASES)
def test_spandrel_loads_the_export_with_identical_output(
    tmp_path, model, scale, preset, overrides, arch
):
    fmt = "safetensors" if model in ("compact", "hat") else "pth"
    from spandrel import ModelLoader

    ckpt = fake_run_checkpoint(tmp_path, model, scale, preset, **overrides)
    report = export(ckpt, tmp_path / f"out.{fmt}", fmt=fmt)
    assert report.path.is_file() and report.max_abs_diff and report.skipped is None
    # spandrel alone (its own file reader), no sr-cli code on the loading side:
    desc = ModelLoader().load_from_file(report.path)
    assert str(desc.architecture.id) == arch and desc.scale == scale
    ours = load_generator(ckpt).generator
    x = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        torch.testing.assert_close(desc.model.eval()(x), ours(x), atol=1e-5, rtol=1e-5)


def test_edsr_export_is_basicsr_layout_at_img_range_255(tmp_path):
    """spandrel has no EDSR: the export is BasicSR's layout at img_range=255, which BasicSR's
    forward (written independently) and sr-cli's published loader reproduce."""
    ckpt = fake_run_checkpoint(tmp_path, "edsr_baseline", 2, "small")
    report = export(ckpt, tmp_path / "edsr.pth", fmt="pth")
    assert report.detected == "EDSR (from its metadata)" and "img_range=255" in report.layout
    sd = torch.load(report.path, weights_only=True)["params"]  # BasicSR's container
    x = torch.rand(1, 3, 10, 12)
    ref = reference_edsr(sd, [2], x, num_block=2, img_range=255.0)
    ours = load_generator(ckpt).generator
    with torch.no_grad():
        torch.testing.assert_close(ours(x), ref, atol=2e-5, rtol=1e-4)


def test_cli_export_and_spandrel_detection_message(tmp_path, capsys):
    ckpt = fake_run_checkpoint(tmp_path, "compact", 2, "small")
    main([str(ckpt), "--format", "safetensors", "-o", str(tmp_path / "c.safetensors")])
    out = capsys.readouterr().out
    assert "spandrel detects RealESRGAN Compact x2" in out and "max abs diff" in out
    # a published file round-trips through sr-export too
    main([str(tmp_path / "c.safetensors"), "--format", "pth", "-o", str(tmp_path / "c.pth")])
    assert "spandrel detects RealESRGAN Compact x2" in capsys.readouterr().out
    with pytest.raises(ConfigError, match="overwrite"):
        export(ckpt, ckpt, fmt="pth")


def test_small_esrgan_is_read_back_although_spandrel_cannot_represent_it(trained_run, tmp_path):
    """spandrel's ESRGAN assumes 32 growth channels; the small preset (16) is read back by
    sr-cli (from its metadata, with its edge padding) and spandrel's refusal is reported, whole."""
    report = export(trained_run, tmp_path / "e.pth", fmt="pth")
    assert report.path.is_file() and report.detected == "ESRGAN (from its metadata)"
    assert max(report.max_abs_diff.values()) == 0.0
    assert not report.spandrel_loads and "size mismatch" in report.spandrel
    sd = torch.load(report.path, weights_only=True)["params"]
    net = load_generator(resolve_checkpoint(trained_run)).generator
    assert set(sd) == set(net.state_dict())
    x = torch.rand(1, 3, 8, 8)
    assert super_resolve(net, x).shape == (1, 3, 32, 32)
