"""Every ``conf/degradation/*.yaml`` instantiates and runs on a small batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sr_cli.degradations import Degradation, DegradationNotInvertible

CONF = Path(__file__).resolve().parents[2] / "conf" / "degradation"
CONFIGS = sorted(p.stem for p in CONF.glob("*.yaml"))


def test_catalogue_is_complete():
    expected = {"bicubic", "bilinear", "area", "nearest", "blur", "noise", "jpeg"}
    expected |= {"quantization", "pipeline_example", "bsrgan_shuffle", "realesrgan"}
    assert expected <= set(CONFIGS)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("name", CONFIGS)
def test_config_instantiates_and_runs(name, scale):
    cfg = OmegaConf.create({"scale": scale, "degradation": OmegaConf.load(CONF / f"{name}.yaml")})
    d = instantiate(cfg.degradation)
    assert isinstance(d, Degradation) and d.scale == scale
    hr = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    params = d.sample(hr, torch.Generator().manual_seed(1))
    lq = d(hr, params)
    assert lq.shape == (2, 3, 48 // scale, 48 // scale)
    assert lq.min() >= 0 and lq.max() <= 1
    assert torch.equal(lq, (lq * 255).round() / 255) or name == "quantization"
    try:
        cons = d.replay(hr, params)
    except DegradationNotInvertible:  # allowed, with a message; none in the catalogue does
        pytest.fail(f"{name} refuses consistency")
    assert cons.shape == lq.shape


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_is_the_one_stage_matlab_pipeline(scale):
    from sr_cli.degradations import DegradationPipeline, Resize, imresize
    from sr_cli.degradations.functional import quantize

    cfg = OmegaConf.create({"scale": scale, "degradation": OmegaConf.load(CONF / "bicubic.yaml")})
    d = instantiate(cfg.degradation)
    assert isinstance(d, DegradationPipeline) and not d.stochastic
    (stage,) = d.body.stages
    assert isinstance(stage, Resize) and stage.modes == ("bicubic",)
    assert d.not_replayed() == []
    hr = torch.rand(2, 3, 12 * scale, 10 * scale, generator=torch.Generator().manual_seed(0))
    assert d.sample(hr, torch.Generator().manual_seed(1)) == {}  # nothing random to draw
    # The very MATLAB operator, to the bit: replay is imresize, forward its 8-bit rounding.
    assert torch.equal(d.replay(hr), imresize(hr, scale=1 / scale))
    assert torch.equal(d(hr), quantize(imresize(hr, scale=1 / scale)))


def test_unknown_resize_downsample_option_is_one_clear_error():
    from sr_cli.degradations import ResizeDownsample
    from sr_cli.errors import ConfigError

    with pytest.raises(ConfigError, match=r"ResizeDownsample got unknown option\(s\) \['sigma'\]"):
        ResizeDownsample(2, sigma=[1, 2])
