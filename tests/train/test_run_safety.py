"""Nothing lost, nothing run: last/best checkpoints, signals, corrupt files, the NaN guard,
resume rules, the run-folder lock and bad options — each against the real mechanism
(real signals to a real sr-train process, truncated files, a second process, a full disk)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sr_cli.errors import CheckpointError, ConfigError, NonFiniteLossError
from sr_cli.losses.base import LossTerm
from sr_cli.train.training import train
from tests.commands.test_sr_train import SR_TRAIN, TINY_CLI, run_cli

COMMON = ["loss=[l1]", "val.save_images=0"]


def _iteration(path: Path) -> int:
    return int(torch.load(path, weights_only=True, map_location="cpu")["sr_cli"]["iteration"])


# --------------------------------------------------------------------------- last / best
def test_last_is_newest_even_when_the_metric_stops_improving(tiny_cfg, val_subset, tmp_path):
    """mode=min on a PSNR: the 'best' is the first validation, yet last.ckpt follows the run."""
    out = tmp_path / "run"
    cfg = tiny_cfg(
        *COMMON,
        f"data.val_dir={val_subset}",
        "trainer.max_steps=6",
        "callbacks.checkpoint.mode=min",
        "callbacks.checkpoint.generator_every=3",
        out=out,
    )
    metrics, objects = train(cfg)
    ckpts = out / "checkpoints"
    assert _iteration(ckpts / "last.ckpt") == 6
    import csv

    vals = [
        (float(r["val/psnr_y"]), int(r["step"]) + 1)
        for r in csv.DictReader((out / "metrics.csv").open())
        if r.get("val/psnr_y")
    ]
    assert [it for _, it in vals] == [2, 4, 6]
    header = (out / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "lr/generator" in header
    assert _iteration(ckpts / "best.ckpt") == min(vals)[1]
    summary = json.loads((out / "summary.json").read_text())
    assert Path(summary["last_checkpoint"]).is_file() and Path(summary["best_checkpoint"]).is_file()
    assert summary["best"]["iteration"] == min(vals)[1]
    # keep_last=2: the two newest states stay as iter_<N>.ckpt, older ones are pruned
    assert sorted(p.name for p in ckpts.glob("iter_*.ckpt")) == [
        "iter_0000004.ckpt",
        "iter_0000006.ckpt",
    ]
    # a generator-only safetensors beside every checkpoint, equal to the checkpoint's generator
    state = torch.load(ckpts / "last.ckpt", weights_only=True)["state_dict"]
    gen = load_file(ckpts / "last.generator.safetensors")
    assert gen.keys() == {k[len("generator.") :] for k in state if k.startswith("generator.")}
    assert all(torch.equal(v, state[f"generator.{k}"]) for k, v in gen.items())
    assert (ckpts / "best.generator.safetensors").is_file()
    assert sorted(p.name for p in ckpts.glob("generator_*.safetensors")) == [
        "generator_0000003.safetensors",
        "generator_0000006.safetensors",
    ]
    size = (ckpts / "last.generator.safetensors").stat().st_size
    assert size < (ckpts / "last.ckpt").stat().st_size / 2


def test_ema_weights_are_written_beside_the_checkpoint(tiny_cfg, val_subset, tmp_path):
    out = tmp_path / "ema"
    train(tiny_cfg(*COMMON, f"data.val_dir={val_subset}", "ema.enabled=true", out=out))
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    ema = load_file(out / "checkpoints" / "last.generator_ema.safetensors")
    assert all(torch.equal(v, state[f"generator_ema.{k}"]) for k, v in ema.items())


def test_truncated_last_falls_back_to_the_newest_readable_state(
    tiny_cfg, val_subset, tmp_path, caplog
):
    out = tmp_path / "run"
    common = [*COMMON, f"data.val_dir={val_subset}"]
    train(tiny_cfg(*common, "trainer.max_steps=4", out=out))
    last = out / "checkpoints" / "last.ckpt"
    os.unlink(last)  # a damaged copy of the newest state (a new file, not the hard link)
    good = (out / "checkpoints" / "iter_0000004.ckpt").read_bytes()
    last.write_bytes(good[: len(good) // 2])
    with caplog.at_level(logging.WARNING):
        _, objects = train(tiny_cfg(*common, "trainer.max_steps=6", "resume=auto", out=out))
    assert "last.ckpt is unreadable" in caplog.text and "iter_0000004.ckpt" in caplog.text
    assert objects["module"].iteration == 6
    assert _iteration(last) == 6


# --------------------------------------------------------------------------- signals
def _start(tmp_path: Path, run_dir: Path, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env["PYTHONUNBUFFERED"] = "1"
    args = [
        SR_TRAIN,
        "experiment=demo",  # the same base config as the in-process tiny_cfg runs
        "model.pretrained=null",
        *TINY_CLI,
        *COMMON,
        "data.iters_per_epoch=2",
        "trainer.max_steps=100000",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    return subprocess.Popen(
        args,
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    end = time.monotonic() + timeout
    while not path.is_file():
        if proc.poll() is not None:
            raise AssertionError(f"sr-train ended early: {proc.communicate()[1][-2000:]}")
        if time.monotonic() > end:
            proc.kill()
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.2)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGUSR1", "SIGINT"])
def test_signal_saves_a_resumable_checkpoint_and_exits_nonzero(
    signame, tiny_cfg, tmp_path, val_subset
):
    run_dir = tmp_path / "sig"
    proc = _start(tmp_path, run_dir, f"data.val_dir={val_subset}")
    _wait_for(run_dir / "checkpoints" / "last.ckpt", proc)
    signum = getattr(signal, signame)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signum, err[-2000:]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert f"stopped by {signame}" in err and str(last) in err
    stopped_at = _iteration(last)
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "interrupted"
    assert not (run_dir / ".lock").exists()
    if signame != "SIGTERM":
        return
    # The resumed run ends with the same weights as a run that was never interrupted.
    common = [*COMMON, f"data.val_dir={val_subset}", "data.num_workers=0"]
    total = stopped_at + 2
    _, resumed = train(
        tiny_cfg(*common, f"trainer.max_steps={total}", f"resume={last}", out=tmp_path / "new")
    )
    assert resumed["output_dir"] == run_dir  # continued in the original folder
    _, straight = train(tiny_cfg(*common, f"trainer.max_steps={total}", out=tmp_path / "straight"))
    a, b = straight["module"].state_dict(), resumed["module"].state_dict()
    assert resumed["module"].iteration == total
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_kill_9_then_resume_auto_takes_over_the_stale_lock(tmp_path, val_subset):
    run_dir = tmp_path / "killed"
    # a monitored value that never improves after the first validation (bicubic's is constant)
    proc = _start(
        tmp_path,
        run_dir,
        f"data.val_dir={val_subset}",
        "callbacks.checkpoint.monitor=val/bicubic_psnr_y",
    )
    last = run_dir / "checkpoints" / "last.ckpt"
    _wait_for(last, proc)
    end = time.monotonic() + 240
    while _iteration(last) < 4 and time.monotonic() < end and proc.poll() is None:
        time.sleep(0.2)  # last.ckpt is replaced atomically: reading it while it moves is safe
    proc.kill()
    proc.wait()
    assert (run_dir / ".lock").is_file()  # left behind by the killed process
    before = _iteration(run_dir / "checkpoints" / "last.ckpt")
    assert before >= 4 and _iteration(run_dir / "checkpoints" / "best.ckpt") == 2
    result = run_cli(
        [
            *TINY_CLI,
            *COMMON,
            f"data.val_dir={val_subset}",
            "data.iters_per_epoch=2",
            f"trainer.max_steps={before + 2}",
            f"hydra.run.dir={run_dir}",
            "resume=auto",
        ],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "stale lock" in result.stdout + result.stderr  # Hydra logs to stdout
    assert _iteration(run_dir / "checkpoints" / "last.ckpt") == before + 2


# --------------------------------------------------------------------------- lock
def test_a_second_process_cannot_use_a_run_folder_in_use(tiny_cfg, tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    owner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        import socket

        (out / ".lock").write_text(json.dumps({"pid": owner.pid, "host": socket.gethostname()}))
        with pytest.raises(ConfigError, match=rf"in use by sr-train \(pid {owner.pid}"):
            train(tiny_cfg(*COMMON, out=out))
        assert not (out / "metrics.csv").exists()
    finally:
        owner.kill()
        owner.wait()


# --------------------------------------------------------------------------- NaN guard
class GradientBomb(LossTerm):
    """A finite value whose gradient is NaN from iteration 1 on (sqrt at 0)."""

    def compute(self, inputs):
        x = inputs.sr * 0.0
        return (x.abs() if inputs.step < 1 else x.abs().sqrt()).mean()


class NaNTwice(LossTerm):
    """NaN at iterations 1 and 2 only."""

    def compute(self, inputs):
        value = (inputs.sr - inputs.gt).abs().mean()
        return value * float("nan") if inputs.step in (1, 2) else value


def test_nan_gradient_is_blamed_on_its_term_and_the_saved_state_is_finite(
    tiny_cfg, val_subset, tmp_path
):
    out = tmp_path / "grad"
    cfg = tiny_cfg(
        *COMMON,
        f"data.val_dir={val_subset}",
        "trainer.max_steps=4",
        "+loss.tv._target_=sr_cli.losses.tv.TVLoss",
        "+loss.bomb._target_=tests.train.test_run_safety.GradientBomb",
        out=out,
    )
    with pytest.raises(
        NonFiniteLossError, match=r"gradient of loss term 'bomb' \(generator\).*iteration 1"
    ) as info:
        train(cfg)
    assert "'l1'" not in str(info.value) and "'tv'" not in str(info.value)
    saved = out / "checkpoints" / "last_good_iter0000001.ckpt"
    assert str(saved) in str(info.value)
    state = torch.load(saved, weights_only=True)
    assert state["sr_cli"]["iteration"] == 1
    assert all(
        torch.isfinite(v).all() for v in state["state_dict"].values() if v.is_floating_point()
    )


def test_nan_guard_in_a_gan_run_names_the_term(tiny_cfg, val_subset, tmp_path):
    cfg = tiny_cfg(
        "loss=[l1,gan]",
        "val.save_images=0",
        f"data.val_dir={val_subset}",
        "trainer.max_steps=4",
        "+loss.bomb._target_=tests.train.test_run_safety.GradientBomb",
        out=tmp_path / "g",
    )
    with pytest.raises(NonFiniteLossError, match=r"gradient of loss term 'bomb'"):
        train(cfg)


def test_skip_policy_skips_and_continues(tiny_cfg, val_subset, tmp_path):
    out = tmp_path / "skip"
    cfg = tiny_cfg(
        *COMMON,
        f"data.val_dir={val_subset}",
        "trainer.max_steps=4",
        "nan_guard.policy=skip",
        "+loss.twice._target_=tests.train.test_run_safety.NaNTwice",
        out=out,
    )
    metrics, objects = train(cfg)
    assert objects["module"].iteration == 4
    assert objects["module"].skipped_steps == 2
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 2


def test_skip_policy_gives_up_after_k_in_a_row(tiny_cfg, val_subset, tmp_path):
    cfg = tiny_cfg(
        *COMMON,
        f"data.val_dir={val_subset}",
        "trainer.max_steps=4",
        "nan_guard.policy=skip",
        "nan_guard.max_consecutive_skips=2",
        "+loss.twice._target_=tests.train.test_run_safety.NaNTwice",
        out=tmp_path / "k",
    )
    with pytest.raises(NonFiniteLossError, match=r"'twice'.*after 2 skipped steps in a row"):
        train(cfg)


# --------------------------------------------------------------------------- resume rules
def test_resume_applies_a_new_learning_rate(tiny_cfg, val_subset, tmp_path, caplog):
    out = tmp_path / "lr"
    common = [*COMMON, f"data.val_dir={val_subset}", "optim.scheduler=null"]
    train(tiny_cfg(*common, out=out))
    with caplog.at_level(logging.WARNING):
        _, objects = train(
            tiny_cfg(
                *common, "trainer.max_steps=4", "resume=auto", "optim.generator.lr=1e-5", out=out
            )
        )
    opt = objects["trainer"].optimizers[0]
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert "optim.generator.lr: 5e-05 -> 1e-05" in caplog.text  # demo's lr -> the new one
    assert (out / "config_resolved.before-resume-1.yaml").is_file()


@pytest.mark.parametrize(
    "change,expected",
    [
        ("+model.generator.num_feat=8", "model.generator.num_feat"),
        ("ema.enabled=true", "ema.enabled: False -> True"),
        ("loss=[l1,tv]", r"loss terms: l1 -> l1\+tv"),
        ("optim.generator._target_=torch.optim.AdamW", "does not fit another optimizer"),
    ],
)
def test_resume_with_another_setup_is_a_one_line_error(
    change, expected, tiny_cfg, val_subset, tmp_path
):
    out = tmp_path / "r"
    common = [f"data.val_dir={val_subset}", "val.save_images=0"]
    train(tiny_cfg("loss=[l1]", *common, out=out))
    record = (out / "config_resolved.yaml").read_text()
    overrides = [change] if change.startswith("loss=") else ["loss=[l1]", change]
    with pytest.raises(CheckpointError, match=expected):
        train(tiny_cfg(*overrides, *common, "trainer.max_steps=4", "resume=auto", out=out))
    assert (out / "config_resolved.yaml").read_text() == record


def test_resume_auto_with_nothing_to_resume_says_so(tiny_cfg, val_subset, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        train(tiny_cfg(*COMMON, f"data.val_dir={val_subset}", "resume=auto", out=tmp_path / "n"))
    assert "resume=auto: nothing to resume" in caplog.text


# --------------------------------------------------------------------------- bad options
@pytest.mark.parametrize(
    "override,expected",
    [
        ("scale=0", "scale must be a positive integer, got 0"),
        ("optim.generator.lr=-1e-4", "optim.generator.lr must be a number >= 0"),
        ("data.batch_size=0", "data.batch_size must be a positive integer"),
        ("trainer.max_steps=0", "trainer.max_steps must be a positive number of iterations"),
        ("data.iters_per_epoch=0", "data.iters_per_epoch must be a positive integer"),
        ("nan_guard.policy=ignore", "nan_guard.policy must be one of stop, skip"),
        ("callbacks.checkpoint.keep_last=0", "keep_last must be >= 1"),
        # issue #26: -1 trained forever, a negative weight was gradient ascent, -1 workers a
        # DataLoader traceback that left the run folder behind
        ("trainer.max_steps=-1", "trainer.max_steps must be a positive number of iterations"),
        ("trainer.max_steps=-5", "got -5 (-1 would train forever)"),
        ("loss.l1.weight=-1", "loss.l1.weight=-1 is negative"),
        ("loss.l1.weight=-0.5", "allow_negative_loss_weights=true"),
        ("data.num_workers=-1", "data.num_workers must be an integer >= 0, got -1"),
    ],
)
def test_bad_options_fail_before_anything_is_written(override, expected, tiny_cfg, tmp_path):
    from sr_cli.errors import find_user_error

    out = tmp_path / "bad"
    with pytest.raises(Exception) as info:  # noqa: B017 - Hydra may wrap it; the CLI unwraps
        train(tiny_cfg(*COMMON, override, out=out))
    error = find_user_error(info.value)
    assert isinstance(error, ConfigError) and expected in str(error)
    assert not out.exists()  # no orphan run folder


@pytest.mark.parametrize(
    "override,option",
    [("trainer.max_steps=0", "trainer.max_steps"), ("data.num_workers=-1", "data.num_workers")],
)
def test_cli_user_error_is_one_line_and_leaves_no_folder(tmp_path, override, option):
    result = run_cli([*TINY_CLI, override], tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"sr-train: error: {option}")
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "outputs").exists()


def test_negative_loss_weight_is_trained_only_when_the_run_opts_in(tiny_cfg, tmp_path):
    """``allow_negative_loss_weights=true`` (the command line's opt-in) lets a negative weight
    through to the term, which then counts negatively in the objective."""
    from sr_cli.train.build import build_losses
    from sr_cli.train.training import check_options

    cfg = tiny_cfg(
        *COMMON, "loss=[l1,tv]", "loss.tv.weight=-0.01", "allow_negative_loss_weights=true"
    )
    check_options(cfg)
    assert build_losses(cfg.loss)["tv"].weight == -0.01
    with pytest.raises(ConfigError, match=r"loss\.tv\.weight=-0\.01 is negative"):
        check_options(tiny_cfg(*COMMON, "loss=[l1,tv]", "loss.tv.weight=-0.01"))


def test_start_step_beyond_max_steps_warns(tiny_cfg, tmp_path, caplog):
    from sr_cli.train.training import check_options

    with caplog.at_level(logging.WARNING):
        check_options(tiny_cfg("loss=[l1,translational]", "trainer.max_steps=300"))
    assert "loss.translational.start_step=10000 is not below trainer.max_steps=300" in caplog.text


def _mount_tmpfs(path: Path, options: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return (
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)]).returncode == 0
    )


def test_read_only_output_folder_is_refused_before_compute(tiny_cfg, tmp_path):
    mnt = tmp_path / "ro"
    if not _mount_tmpfs(mnt, "ro,size=1m"):
        pytest.skip("needs root to mount a read-only tmpfs")
    try:
        with pytest.raises(ConfigError, match=r"cannot write to the run folder .*read-only"):
            train(tiny_cfg(*COMMON, out=mnt / "run"))
    finally:
        subprocess.run(["umount", str(mnt)])


def test_full_disk_keeps_the_previous_checkpoints(tiny_cfg, val_subset, tmp_path):
    mnt = tmp_path / "small"
    if not _mount_tmpfs(mnt, "size=64m"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        out = mnt / "run"
        common = [*COMMON, f"data.val_dir={val_subset}", "callbacks.checkpoint.keep_last=1"]
        train(tiny_cfg(*common, out=out))
        last = out / "checkpoints" / "last.ckpt"
        before = last.read_bytes()
        filler = mnt / "filler"
        with filler.open("wb") as f:  # fill the disk, leaving less than one checkpoint
            try:
                while True:
                    f.write(b"\0" * 65536)
            except OSError:
                pass
        os.truncate(filler, max(0, filler.stat().st_size - 100_000))
        with pytest.raises(CheckpointError, match=r"no space left on .*checkpoints"):
            train(tiny_cfg(*common, "trainer.max_steps=4", "resume=auto", out=out))
        assert last.read_bytes() == before
        assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    finally:
        subprocess.run(["umount", str(mnt)])


def test_unknown_preset_for_a_model_config_lists_the_valid_ones(tiny_cfg):
    from sr_cli.train.training import check_options

    with pytest.raises(
        ConfigError, match=r"model=swinir_light has no preset 'paper'; valid presets: light, small"
    ):
        check_options(tiny_cfg("model=swinir_light", "model.preset=paper"))
    check_options(tiny_cfg("model=swinir_light", "model.preset=light"))


def test_swinir_real_preset_keeps_its_upsampler(tiny_cfg):
    from hydra.utils import instantiate

    cfg = tiny_cfg("model=swinir", "model.preset=real")
    assert instantiate(cfg.model.generator).upsampler == "nearest+conv"


def test_schedule_free_validates_with_its_averaged_weights(tiny_cfg, val_subset, tmp_path):
    """optimizer.eval() around validation, train() after: training goes on in train mode."""
    _, objects = train(
        tiny_cfg(*COMMON, f"data.val_dir={val_subset}", "optim=schedule_free", out=tmp_path / "sf")
    )
    opt = objects["trainer"].optimizers[0]
    assert "schedulefree" in type(opt).__module__.lower()
    assert opt.param_groups[0]["train_mode"] is True
