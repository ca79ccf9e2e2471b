"""val.extra_metrics: registry metrics logged during validation (what a sweep can optimise)."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from sr_cli.errors import ConfigError
from sr_cli.metrics.registry import VGG16_WEIGHTS, MetricInputs, get_metric
from sr_cli.train.training import train


def test_an_extra_registry_metric_is_logged_per_validation(tiny_cfg, val_subset, tmp_path):
    cfg = tiny_cfg(
        "loss=[l1]",
        f"data.val_dir={val_subset}",
        "val.save_images=0",
        "data.iters_per_epoch=1",
        "trainer.max_steps=2",
        "val.extra_metrics=[gmsd]",
        "optimized_metric=val/gmsd",
    )
    metrics, objects = train(cfg)
    out = objects["output_dir"]
    rows = [r for r in csv.DictReader((out / "metrics.csv").open()) if r.get("val/gmsd")]
    assert [int(r["step"]) + 1 for r in rows] == [1, 2]  # one value per validation
    assert all(r["val/psnr_y"] for r in rows)  # the validation metrics are still there
    # the logged value is GMSD (piq, border-cropped) of the final generator's output
    module = objects["module"].eval()
    loaders = objects["datamodule"].val_dataloader()
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    batch = module.on_after_batch_transfer(next(iter(loader)), 0)  # LQ made as validation does
    with torch.no_grad():
        sr = module(batch["lq"]).clamp(0, 1)
    expected = get_metric("gmsd")(MetricInputs(sr, batch["gt"], batch["lq"], module.scale, "paper"))
    assert float(rows[-1]["val/gmsd"]) == pytest.approx(float(expected), rel=1e-4, abs=1e-6)
    assert metrics["val/gmsd"] == pytest.approx(float(rows[-1]["val/gmsd"]))
    # the bicubic reference gets it too, and the summary keeps the lower-is-better best
    summary = json.loads((out / "summary.json").read_text())
    assert "gmsd" in summary["bicubic"]["val"]


def test_lpips_without_cached_weights_stops_at_start_up(
    tiny_cfg, val_subset, tmp_path, monkeypatch
):
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # restored on teardown
    torch.hub.set_dir(str(home / "hub"))
    cfg = tiny_cfg("loss=[l1]", f"data.val_dir={val_subset}", "val.extra_metrics=[lpips]")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("val.extra_metrics: lpips weights not in the torch hub cache")
    assert str(home / "hub" / "checkpoints" / VGG16_WEIGHTS) in message
    assert not (tmp_path / "run").exists()  # nothing trained, no run folder left behind


def test_an_unknown_extra_metric_is_a_one_line_error(tiny_cfg, val_subset):
    cfg = tiny_cfg("loss=[l1]", f"data.val_dir={val_subset}", "val.extra_metrics=[nope]")
    with pytest.raises(ConfigError, match=r"unknown metric 'nope' in val.extra_metrics"):
        train(cfg)


class _MeanAbs(torch.nn.Module):
    """A metric network: per-image mean absolute error times a (parameter) factor of 1."""

    def __init__(self) -> None:
        super().__init__()
        self.factor = torch.nn.Parameter(torch.ones(()))

    def forward(self, sr, gt):
        return (sr - gt).abs().flatten(1).mean(1) * self.factor


def test_a_metric_with_a_network_is_built_once_and_kept_out_of_checkpoints(tiny_cfg, val_subset):
    """The path LPIPS takes (a registry entry with a network), with a network that needs no
    weights: the value is logged and the network is not saved with the generator."""
    from sr_cli.metrics.registry import MetricSpec, register_metric, unregister_metric
    from sr_cli.serialization import safe_torch_load

    register_metric(
        MetricSpec("test_mae", "MAE", 4, False, lambda x: x.module(*x.cropped()), build=_MeanAbs)
    )
    try:
        cfg = tiny_cfg(
            "loss=[l1]",
            f"data.val_dir={val_subset}",
            "val.save_images=0",
            "val.extra_metrics=[test_mae]",
        )
        metrics, objects = train(cfg)
    finally:
        unregister_metric("test_mae")
    module, out = objects["module"].eval(), objects["output_dir"]
    assert isinstance(module.metric_modules["test_mae"], _MeanAbs)
    loaders = objects["datamodule"].val_dataloader()
    loader = loaders[0] if isinstance(loaders, (list, tuple)) else loaders
    batch = module.on_after_batch_transfer(next(iter(loader)), 0)
    with torch.no_grad():
        sr = module(batch["lq"]).clamp(0, 1)
    s = module.scale
    expected = (sr - batch["gt"])[..., s:-s, s:-s].abs().mean()
    assert metrics["val/test_mae"] == pytest.approx(float(expected), rel=1e-4)
    state = safe_torch_load(out / "checkpoints" / "last.ckpt")["state_dict"]
    assert not any("factor" in k or "metric" in k for k in state)
