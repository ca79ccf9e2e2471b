"""The installed ``sr-train`` console script: config path, shorthand, sweeps, errors, outputs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sr_cli.config import rewrite_list_override, rewrite_overrides
from tests.conftest import compose_train

SR_TRAIN = shutil.which("sr-train") or str(Path(sys.executable).parent / "sr-train")
TINY_CLI = [
    "logger=none",
    "trainer.accelerator=cpu",
    "model.preset=small",
    "data.patch_size=32",
    "data.batch_size=2",
    "data.num_workers=0",
    "trainer.enable_progress_bar=false",
]


def run_cli(args, tmp_path, env_extra=None, timeout=300):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(env_extra or {})
    return subprocess.run(
        [SR_TRAIN, *args],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.mark.parametrize(
    "arg,expected",
    [
        ("loss=downsample+gan", "loss=[downsample,gan]"),
        ("loss=l1", "loss=[l1]"),
        ("loss=l1,downsample+gan", "loss=[l1],[downsample,gan]"),
        ("loss=[downsample,gan]", "loss=[downsample,gan]"),
        ("loss.gan.weight=0.1", "loss.gan.weight=0.1"),
        ("model=esrgan", "model=esrgan"),
        ("loss=choice(l1,gan)", "loss=choice(l1,gan)"),
        ("loss=l1,[downsample,gan]", "loss=[l1],[downsample,gan]"),
        ("loss=a+b,[c,d]", "loss=[a,b],[c,d]"),
        ("loss=null", "loss=null"),
    ],
)
def test_plus_shorthand_rewrite(arg, expected):
    assert rewrite_list_override(arg) == expected


def test_rewritten_overrides_compose_to_both_terms():
    cfg = compose_train(rewrite_overrides(["model=esrgan", "loss=downsample+gan"]))
    assert list(cfg.loss) == ["downsample", "gan"]
    assert cfg.loss.gan._target_.endswith("AdversarialLoss")
    assert cfg.loss.gan.discriminator.input_size == cfg.data.patch_size
    assert cfg.model.generator.scale == cfg.scale == cfg.degradation.scale == cfg.data.scale
    assert cfg.model.generator._target_.endswith("rrdbnet")
    native = compose_train(["loss=[downsample,gan]"])
    assert list(native.loss) == ["downsample", "gan"]


def test_esrgan_is_the_paper_configuration():
    from hydra.utils import instantiate

    from sr_cli.models import count_parameters

    cfg = compose_train(["model=esrgan"])
    assert cfg.model.preset == "paper"
    net = instantiate(cfg.model.generator)
    assert len(net.body) == 23 and net.conv_first.out_channels == 64
    assert net.body[0].rdb1.conv1.out_channels == 32
    assert count_parameters(net) == 16_697_987


@pytest.mark.parametrize("group,value", [("loss", "nope"), ("model", "nope")])
def test_unknown_option_lists_available(tmp_path, group, value):
    res = run_cli([f"{group}={value}", *TINY_CLI], tmp_path, timeout=120)
    assert res.returncode != 0
    assert f"Could not find '{group}/nope'" in res.stderr
    assert f"Available options in '{group}'" in res.stderr
    listed = "downsample" if group == "loss" else "esrgan"
    assert listed in res.stderr


def test_bad_folder_is_one_clear_line(tmp_path):
    res = run_cli(["data.train_dir=/no/such/folder", *TINY_CLI], tmp_path, timeout=120)
    assert res.returncode == 2
    assert (
        "sr-train: error: training folder (data.train_dir) '/no/such/folder' does not exist"
        in res.stderr
    )
    assert "Traceback" not in res.stderr


def test_headline_command_from_the_shell(tmp_path):
    """`sr-train model=esrgan loss=downsample+gan` with a tiny budget; wandb offline, no prompt."""
    run_dir = tmp_path / "run"
    res = run_cli(
        [
            "model=esrgan",
            "loss=downsample+gan",
            "experiment=demo",
            "logger=wandb",
            "trainer.max_steps=2",
            "data.iters_per_epoch=2",
            "data.patch_size=32",
            "data.batch_size=2",
            "trainer.enable_progress_bar=false",
            "val.save_images=1",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert (run_dir / "checkpoints" / "best.ckpt").is_file()
    assert (run_dir / "metrics.csv").is_file()
    assert (run_dir / "config_resolved.yaml").is_file()
    assert list((run_dir / "images" / "val").glob("*.png"))
    assert list((run_dir / "wandb").glob("offline-run-*")), "wandb did not run offline"


def test_sweep_with_shorthand(tmp_path):
    res = run_cli(
        [
            "-m",
            "loss=l1,downsample+gan",
            "debug=fast",
            f"hydra.sweep.dir={tmp_path}/sweep",
            *TINY_CLI,
        ],
        tmp_path,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    jobs = sorted(p.name for p in (tmp_path / "sweep").iterdir() if p.is_dir())
    assert len(jobs) == 2, jobs
    # job folders named after the run, safe as paths and as override values
    assert jobs == ["0_esrgan_l1", "1_esrgan_downsample+gan"], jobs


@pytest.mark.parametrize(
    "overlay",
    [
        "experiment=demo",
        "experiment=iterative_perceptual",
        "debug=fast",
        "hparams_search=loss_weights",
    ],
)
def test_overlays_compose(overlay):
    cfg = compose_train([overlay])
    assert cfg.loss and cfg.model.generator._target_
    if overlay == "hparams_search=loss_weights":
        assert list(cfg.loss) == ["downsample", "gan"]


def test_user_error_wrapped_by_hydra_prints_one_line(capsys):
    """Hydra's instantiate wraps a ConfigError; every CLI still prints it as one line, exit 2."""
    from hydra.errors import InstantiationException

    from sr_cli.errors import ConfigError, exit_on_user_error

    with pytest.raises(SystemExit) as info, exit_on_user_error("sr-x"):
        try:
            raise ConfigError("bad upsampler 'bogus'")
        except ConfigError as exc:
            raise InstantiationException("Error in call to target") from exc
    assert info.value.code == 2
    assert capsys.readouterr().err == "sr-x: error: bad upsampler 'bogus'\n"
    with pytest.raises(KeyError), exit_on_user_error("sr-x"):  # not a user error: propagates
        raise KeyError("bug")
