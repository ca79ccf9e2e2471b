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
