"""logger=tensorboard: the event file holds the run's scalars, validation images and
hyper-parameters (read back with TensorBoard's own reader); loggers combine as a list group."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from sr_cli.config import rewrite_overrides
from tests.conftest import compose_train

METRIC = "val/psnr_y"


def _events(run: Path) -> EventAccumulator:
    files = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert files, f"no event file in {run / 'tensorboard'}"
    acc = EventAccumulator(
        str(run / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0}
    )
    acc.Reload()
    return acc


def _csv_curve(run: Path, metric: str) -> dict[int, float]:
    with (run / "metrics.csv").open(newline="") as f:
        return {int(r["step"]): float(r[metric]) for r in csv.DictReader(f) if r.get(metric)}


@pytest.mark.slow  # (about 25 s on 2 cores; the next test covers the same in short)
def test_tensorboard_gets_scalars_images_and_hparams(tiny_cfg, val_subset, tmp_path):
    from sr_cli.train.training import train

    run = tmp_path / "run"
    train(
        tiny_cfg(
            "logger=tensorboard",
            f"data.val_dir={val_subset}",
            "trainer.max_steps=4",
            "val.save_images=1",
            "seed=3",
        )
    )
    acc = _events(run)
    # val/psnr_y at both validations (iterations 2 and 4: steps 1 and 3), the CSV's values
    expected = _csv_curve(run, METRIC)
    assert sorted(expected) == [1, 3]
    got = {e.step: e.value for e in acc.Scalars(METRIC)}
    assert got == pytest.approx(expected, abs=1e-4)
    assert "train/loss_l1" in acc.Tags()["scalars"]
    # the best value, as wandb's summary of the monitored metric
    (best,) = acc.Scalars(f"best/{METRIC}")
    assert best.value == pytest.approx(max(expected.values()), abs=1e-4)
    assert expected[best.step] == pytest.approx(best.value, abs=1e-4)
    # the validation image (LQ upscaled | SR | GT of the 48x48 crop) at each validation
    images = acc.Images("val/camera")
    assert [i.step for i in images] == [1, 3]
    assert (images[0].width, images[0].height) == (3 * 48, 48)
    # the hyper-parameters: the resolved config and the provenance record, against the metrics
    content = acc.PluginTagToContent("hparams")
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    hp = start.session_start_info.hparams
    assert hp["scale"].number_value == 4 and hp["seed"].number_value == 3
    assert hp["model/name"].string_value == "esrgan"
    assert hp["loss/l1/weight"].number_value == 1.0
    assert hp["provenance/seed"].number_value == 3
    assert "provenance/packages/torch" in hp
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    names = [m.name.tag for m in experiment.metric_infos]
    assert names == [METRIC, f"best/{METRIC}"]
    # no placeholder hp_metric
    assert "hp_metric" not in acc.Tags()["scalars"]


def test_wandb_and_tensorboard_together(tiny_cfg, val_subset, tmp_path):
    from sr_cli.train.training import train

    run = tmp_path / "run"
    train(tiny_cfg("logger=[wandb,tensorboard]", f"data.val_dir={val_subset}"))
    assert list((run / "wandb").glob("offline-run-*/run-*.wandb")), "wandb wrote no run"
    acc = _events(run)
    assert {e.step: e.value for e in acc.Scalars(METRIC)} == pytest.approx(_csv_curve(run, METRIC))
    assert [i.step for i in acc.Images("val/camera")] == [1]
    assert "_hparams_/session_start_info" in acc.PluginTagToContent("hparams")
    assert (run / "metrics.csv").is_file()  # the CSV logger is always on


@pytest.mark.parametrize(
    "arg,members",
    [
        ("logger=wandb", ["wandb"]),
        ("logger=tensorboard", ["tensorboard"]),
        ("logger=none", []),
        ("logger=wandb+tensorboard", ["wandb", "tensorboard"]),
        ("logger=[wandb,tensorboard]", ["wandb", "tensorboard"]),
    ],
)
def test_logger_is_a_list_group(arg, members):
    cfg = compose_train(rewrite_overrides([arg]))
    assert list(cfg.logger) == members
    assert list(compose_train(["debug=fast"]).logger) == []
    assert list(compose_train([]).logger) == ["wandb"]  # the default
