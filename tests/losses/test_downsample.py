"""Downsample consistency with real degradations: exact zero for SR = GT, and the warning about
stages the replay cannot reproduce (logged once, naming them)."""

from __future__ import annotations

import logging

import torch

from sr_cli.degradations import QuantizedDownsample, RealESRGANDegradation, ResizeDownsample
from sr_cli.losses.base import LossInputs
from sr_cli.losses.downsample import DownsampleConsistencyLoss

LOGGER = "sr_cli.losses.downsample"


def inputs_for(degradation, hr: torch.Tensor, seed: int = 0) -> LossInputs:
    params = degradation.sample(hr, torch.Generator().manual_seed(seed))
    lq = degradation(hr, params)
    return LossInputs(
        sr=hr, gt=hr, lq=lq, sr_levels=[hr], scale=degradation.scale,
        degradation=degradation, degradation_params=params,
    )  # fmt: skip


def warnings_of(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelname == "WARNING"]


def test_realesrgan_warns_once_naming_the_stages_it_cannot_replay(caplog):
    d = RealESRGANDegradation(2)
    hr = torch.rand(2, 3, 48, 48, generator=torch.Generator().manual_seed(0))
    term = DownsampleConsistencyLoss()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        for seed in range(3):
            out = term(inputs_for(d, hr, seed))
            assert torch.isfinite(out.loss)
    messages = warnings_of(caplog)
    assert len(messages) == 1, messages
    msg = messages[0]
    # First-order noise and JPEG, second-order noise, and the final shuffled JPEG.
    for stage in ("2_noise", "3_jpeg", "6_noise", "7_shuffle.1_jpeg", "(noise, jpeg)"):
        assert stage in msg, msg
    assert "RealESRGANDegradation" in msg and "loss=downsample" in msg
    assert d.not_replayed() == ["2_noise", "3_jpeg", "6_noise", "7_shuffle.1_jpeg"]


def test_quantization_stage_is_named_too(caplog):
    d = QuantizedDownsample(2, bits=4)
    hr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        DownsampleConsistencyLoss()(inputs_for(d, hr))
    (msg,) = warnings_of(caplog)
    assert "1_quantize" in msg


def test_bicubic_replays_everything_silently_and_exactly(caplog):
    d = ResizeDownsample(2, quantize=False)
    assert d.not_replayed() == []
    hr = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        out = DownsampleConsistencyLoss()(inputs_for(d, hr))
    assert warnings_of(caplog) == []
    # LQ = clamp(D(GT)) and D(SR = GT) differ only where bicubic overshoots [0, 1].
    lq = d(hr)
    expected = (d.replay(hr) - lq).abs().mean()
    assert out.loss.item() == expected.item() < 1e-3


def test_training_with_realesrgan_logs_the_warning_once(tiny_cfg, caplog):
    from sr_cli.train.training import train

    cfg = tiny_cfg("loss=[downsample]", "degradation=realesrgan", "val.save_images=0")
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        train(cfg)
    messages = warnings_of(caplog)
    assert len(messages) == 1, messages  # two training steps, one warning
    assert "2_noise, 3_jpeg, 6_noise, 7_shuffle.1_jpeg (noise, jpeg)" in messages[0]
