"""A fast_dev_run training run for every model config (small preset, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sr_cli.config import group_options
from sr_cli.train.training import train

SCALE_FOR = {"lapsrn": 4, "dbpn": 4}


#: model=spandrel needs a weights file: its fast_dev_run is in test_published.py.
DETECTED = {"spandrel"}


@pytest.mark.parametrize("model", [m for m in group_options("model") if m not in DETECTED])
def test_fast_dev_run(model, tiny_cfg, val_subset, tmp_path):
    loss = "loss=[l1]"
    cfg = tiny_cfg(
        f"model={model}",
        loss,
        "model.preset=small",
        f"scale={SCALE_FOR.get(model, 4)}",
        f"data.val_dir={val_subset}",
        "+trainer.fast_dev_run=true",
        out=tmp_path / model,
    )
    metrics, objects = train(cfg)
    module = objects["module"]
    assert module.iteration == 1
    assert "train/loss_l1" in metrics and metrics["val/psnr_y"] > 0
    assert Path(cfg.paths.output_dir, "config_resolved.yaml").is_file()


def test_progressive_model_supervises_every_level(tiny_cfg, val_subset, tmp_path):
    """LapSRN returns its pyramid; `levels: all` puts a Charbonnier term on every level."""
    cfg = tiny_cfg(
        "model=lapsrn",
        "loss=[charbonnier]",
        "loss.charbonnier.levels=all",
        f"data.val_dir={val_subset}",
        "+trainer.fast_dev_run=true",
    )
    metrics, objects = train(cfg)
    module = objects["module"]
    batch = module.on_after_batch_transfer(next(iter(objects["datamodule"].train_dataloader())), 0)
    inputs = module.loss_inputs(batch)
    assert [lv.shape[-1] for lv in inputs.sr_levels] == [32 // 2, 32]  # x2 then x4
    term = module.losses["charbonnier"]
    last_only = type(term)(levels="last")(inputs).loss
    assert term(inputs).loss.item() > last_only.item()
    assert metrics["val/psnr_y"] > 0
