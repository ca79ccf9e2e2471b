"""Every generator config: forward + backward on CPU at every supported scale (small presets)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import get_object, instantiate
from omegaconf import OmegaConf

import sr_cli.models.srcnn as srcnn_mod
from sr_cli.degradations.resize import imresize
from sr_cli.errors import ConfigError
from sr_cli.models.common import UPSAMPLERS, final_output
from sr_cli.models.edsr import edsr
from sr_cli.models.espcn import espcn
from sr_cli.models.fsrcnn import fsrcnn
from sr_cli.models.lapsrn import lapsrn
from sr_cli.models.rcan import rcan
from sr_cli.models.srcnn import srcnn
from sr_cli.models.srresnet import msrresnet
from sr_cli.models.swinir import swinir
from sr_cli.models.vdsr import vdsr

CONF_DIR = Path(__file__).resolve().parents[2] / "conf" / "model"

#: Scales each config supports (the paper's).
SCALES = {
    "dbpn": (2, 4, 8),
    "edsr": (2, 3, 4),
    "edsr_baseline": (2, 3, 4),
    "esrgan": (1, 2, 3, 4),
    "espcn": (2, 3, 4, 8),
    "fsrcnn": (2, 3, 4),
    "lapsrn": (2, 4, 8),
    "msrresnet": (2, 3, 4),
    "rcan": (2, 3, 4, 8),
    "srcnn": (2, 3, 4),
    "swinir": (2, 3, 4, 8),
    "swinir_light": (2, 3, 4),
    "vdsr": (2, 3, 4),
    # spandrel's architectures (sr_cli.models.community)
    "compact": (1, 2, 3, 4),
    "dat": (2, 3, 4),
    "hat": (2, 3, 4),
    "omnisr": (1, 2, 3, 4),
    "realplksr": (1, 2, 3, 4),
    "span": (2, 3, 4),
}

#: Configs whose architecture comes from a weights file (tested in test_published.py).
DETECTED = {"spandrel"}
CONFIGS = sorted(p.stem for p in CONF_DIR.glob("*.yaml") if p.stem not in DETECTED)
CASES = [(name, s) for name in CONFIGS for s in SCALES.get(name, ())]


def build(name: str, scale: int, preset: str = "small", **generator_overrides):
    """Compose ``conf/model/<name>.yaml`` as Hydra would and instantiate its generator."""
    model = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    cfg = OmegaConf.create({"scale": scale, "model": model})
    cfg.model.preset = preset
    for k, v in generator_overrides.items():
        cfg.model.generator[k] = v
    return instantiate(cfg.model.generator)


def test_every_config_is_covered():
    assert set(CONFIGS) == set(SCALES), "add new conf/model/*.yaml files to SCALES"
    for name in CONFIGS:
        raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml"), resolve=False)
        assert raw["name"] == name
        assert "pretrained" in raw and raw["pretrained"] is None
        assert raw["generator"]["scale"] == "${scale}"
        assert raw["generator"]["preset"] == "${model.preset}"


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_forward_backward_odd_size(name, scale):
    torch.manual_seed(0)
    net = build(name, scale)
    assert net.scale == scale
    lq = torch.rand(2, 3, 7, 9)
    out = net(lq)
    sr = final_output(out)
    assert sr.shape == (2, 3, 7 * scale, 9 * scale)
    assert torch.isfinite(sr).all()
    levels = out if isinstance(out, list) else [out]
    for i, level in enumerate(levels):
        f = 2 ** (i + 1) if len(levels) > 1 else scale
        assert level.shape == (2, 3, 7 * f, 9 * f)
    sum(level.mean() for level in levels).backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads), f"{name}: some parameters got no gradient"


@pytest.mark.parametrize("name", CONFIGS)
def test_unsupported_scale_is_a_config_error(name):
    bad = next(s for s in (5, 6, 7) if s not in SCALES[name])
    raw = OmegaConf.to_container(OmegaConf.load(CONF_DIR / f"{name}.yaml"), resolve=False)
    factory = get_object(raw["generator"]["_target_"])
    with pytest.raises(ConfigError, match="scale"):
        factory(scale=bad, preset="small")


@pytest.mark.parametrize(
    "factory,scales",
    [
        (msrresnet, (2, 3, 4)),
        (rcan, (2, 3, 4)),
        (edsr, (2, 3, 4)),
        (espcn, (2, 3, 4)),
        (fsrcnn, (2, 3, 4)),
    ],
)
@pytest.mark.parametrize("upsampler", UPSAMPLERS)
def test_upsampler_choice(factory, scales, upsampler):
    for s in scales:
        net = factory(scale=s, preset="small", upsampler=upsampler)
        assert net(torch.rand(1, 3, 5, 7)).shape == (1, 3, 5 * s, 7 * s)


@pytest.mark.parametrize("upsampler", ["pixelshuffle", "pixelshuffledirect", "nearest+conv"])
def test_swinir_upsamplers_and_padding(upsampler):
    net = swinir(scale=4, preset="small", upsampler=upsampler).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        full = net(x)
        # A size that is not a multiple of the window is padded and cropped back.
        assert net(x[..., :13, :11]).shape == (1, 3, 52, 44)
        assert net(torch.rand(1, 3, 3, 2)).shape == (1, 3, 12, 8)
    assert full.shape == (1, 3, 64, 64)


def test_unknown_upsampler_and_preset_are_config_errors():
    with pytest.raises(ConfigError, match="upsampler"):
        msrresnet(scale=4, preset="small", upsampler="bicubic")
    with pytest.raises(ConfigError, match="upsampler"):
        swinir(scale=4, preset="small", upsampler="transposed")
    with pytest.raises(ConfigError, match="preset"):
        rcan(scale=4, preset="huge")


def test_vdsr_is_a_residual_on_matlab_bicubic():
    net = vdsr(scale=3, preset="small")
    torch.nn.init.zeros_(net.conv_last.weight)
    x = torch.rand(1, 3, 7, 9)
    torch.testing.assert_close(net(x), imresize(x, scale=3), rtol=0, atol=0)


def test_srcnn_upsamples_with_project_imresize(monkeypatch):
    calls = []

    def spy(x, scale=None, **kw):
        calls.append(scale)
        return imresize(x, scale=scale, **kw)

    monkeypatch.setattr(srcnn_mod, "imresize", spy)
    srcnn(scale=2, preset="small")(torch.rand(1, 3, 4, 4))
    assert calls == [2]


def test_lapsrn_pyramid_levels():
    net = lapsrn(scale=8, preset="small")
    out = net(torch.rand(1, 3, 5, 6))
    assert isinstance(out, list) and [o.shape[-2:] for o in out] == [(10, 12), (20, 24), (40, 48)]
    # The image branch starts as bilinear x2 upsampling: a constant image stays constant.
    with torch.no_grad():
        for level in net.levels:
            torch.nn.init.zeros_(level.to_residual.weight)
            torch.nn.init.zeros_(level.to_residual.bias)
        out = net(torch.full((1, 3, 6, 6), 0.5))
    torch.testing.assert_close(out[-1][..., 8:-8, 8:-8], torch.full((1, 3, 32, 32), 0.5))


def test_lapsrn_levels_can_be_supervised_against_resized_gt():
    from sr_cli.losses.base import LossInputs, pyramid_targets

    net = lapsrn(scale=4, preset="small")
    out = net(torch.rand(2, 3, 8, 8))
    inputs = LossInputs(
        sr=final_output(out), gt=torch.rand(2, 3, 32, 32), lq=torch.rand(2, 3, 8, 8), sr_levels=out
    )
    pairs = pyramid_targets(inputs)
    assert [t.shape[-1] for _, t in pairs] == [16, 32]
    sum((p - t).abs().mean() for p, t in pairs).backward()
    assert all(level.to_residual.weight.grad is not None for level in net.levels)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_rrdbnet_pixelshuffle_keeps_the_body_and_changes_only_the_upsampler(scale):
    from sr_cli.models.rrdbnet import rrdbnet

    nc = rrdbnet(scale=scale, preset="small")
    ps = rrdbnet(scale=scale, preset="small", upsampler="pixelshuffle")
    x = torch.rand(1, 3, 5, 7)
    assert ps(x).shape == nc(x).shape == (1, 3, 5 * scale, 7 * scale)
    a, b = nc.state_dict(), ps.state_dict()
    assert a.keys() == b.keys()
    differ = {k for k in a if a[k].shape != b[k].shape}
    factors = (9, 1) if scale == 3 else (4, 4)
    expected = {f"conv_up{i + 1}.{w}" for i in (0, 1) if factors[i] > 1 for w in ("weight", "bias")}
    assert differ == expected
    assert b["conv_up1.weight"].shape[0] == factors[0] * a["conv_up1.weight"].shape[0]
    with pytest.raises(ConfigError, match="upsampler"):
        rrdbnet(scale=scale, preset="small", upsampler="transposed")
