"""Issue #26, bad destinations: an output that exists and is not a regular file (a device, a
FIFO, a folder) is refused with one line and left as it was, a read-only output folder is named
in one line, and nothing is computed or written first. sr-export, sr-upscale, sr-eval, sr-report
and sr-train (whose run folder Hydra creates)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sr_cli.commands import export as export_cmd
from sr_cli.commands import report as report_cmd
from sr_cli.commands import upscale as upscale_cmd
from sr_cli.commands.eval import _run as eval_run
from tests.commands.test_sr_train import TINY_CLI, run_cli
from tests.evaluate.test_eval import compose_eval


def _special(tmp_path: Path, kind: str) -> Path:
    """A destination that is not a regular file: a FIFO, a folder or a link to /dev/full
    (replacing the link would not hurt the device, so the test is safe as root)."""
    path = tmp_path / f"dest_{kind}.safetensors"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "folder":
        path.mkdir()
    else:
        path.symlink_to("/dev/full")
    return path


def _same(path: Path, before: os.stat_result) -> bool:
    after = os.lstat(path)
    return (after.st_ino, stat.S_IFMT(after.st_mode)) == (
        before.st_ino,
        stat.S_IFMT(before.st_mode),
    )


def _one_line_error(capsys, prog: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    return err


@pytest.mark.parametrize("kind", ["dev_full", "fifo", "folder"])
def test_sr_export_refuses_a_destination_that_is_not_a_regular_file(
    trained_run, tmp_path, capsys, kind
):
    dest = _special(tmp_path, kind)
    before = os.lstat(dest)
    with pytest.raises(SystemExit) as info:
        export_cmd.main([str(trained_run), "--format", "safetensors", "-o", str(dest)])
    assert info.value.code == 2
    err = _one_line_error(capsys, "sr-export")
    assert f"-o {str(dest)!r} is " in err and "not a regular file" in err
    assert _same(dest, before)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_sr_upscale_refuses_a_destination_that_is_not_a_regular_file(
    trained_run, eval_images, tmp_path, capsys, kind
):
    dest = tmp_path / "out"
    dest.mkdir()
    image = sorted(eval_images.glob("*.png"))[0]
    target = dest / image.name
    os.mkfifo(target) if kind == "fifo" else target.mkdir()
    before = os.lstat(target)
    with pytest.raises(SystemExit) as info:
        upscale_cmd.main([str(trained_run), str(eval_images), "-o", str(dest), "-q"])
    assert info.value.code == 2
    err = _one_line_error(capsys, "sr-upscale")
    assert str(target) in err and "not a regular file" in err
    assert _same(target, before)
    assert sorted(p.name for p in dest.iterdir()) == [image.name]  # no other output written


def test_sr_upscale_names_a_read_only_output_folder(
    trained_run, eval_images, read_only_dir, capsys
):
    out = read_only_dir / "big"
    with pytest.raises(SystemExit) as info:
        upscale_cmd.main([str(trained_run), str(eval_images), "-o", str(out), "-q"])
    assert info.value.code == 2
    err = _one_line_error(capsys, "sr-upscale")
    assert f"cannot create -o folder {str(out)!r}" in err and "read-only" in err


def test_sr_eval_refuses_result_files_that_are_folders_before_computing(
    trained_run, eval_images, tmp_path, capsys
):
    out = tmp_path / "ev"
    (out / "results.csv").mkdir(parents=True)
    cfg = compose_eval(
        [f"checkpoints=[{trained_run}]", f"datasets={{v:{eval_images}}}", "metrics=[psnr_y]"], out
    )
    with pytest.raises(SystemExit) as info:
        eval_run(cfg)
    assert info.value.code == 2
    err = _one_line_error(capsys, "sr-eval")
    assert "output_dir" in err and "results.csv" in err and "is a folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["results.csv"]


def test_sr_eval_names_a_read_only_output_dir(trained_run, eval_images, read_only_dir, capsys):
    out = read_only_dir / "ev"
    cfg = compose_eval(
        [f"checkpoints=[{trained_run}]", f"datasets={{v:{eval_images}}}", "metrics=[psnr_y]"], out
    )
    with pytest.raises(SystemExit) as info:
        eval_run(cfg)
    assert info.value.code == 2
    err = _one_line_error(capsys, "sr-eval")
    assert f"cannot create output_dir {str(out)!r}" in err and "read-only" in err


def test_sr_report_refuses_a_fifo_as_its_output_folder(trained_run, tmp_path, capsys):
    out = tmp_path / "report"
    os.mkfifo(out)
    with pytest.raises(SystemExit) as info:
        report_cmd.main([str(trained_run), "-o", str(out)])
    assert info.value.code == 2
    err = _one_line_error(capsys, "sr-report")
    assert f"-o {str(out)!r}" in err and "a FIFO (named pipe), not a folder" in err
    assert stat.S_ISFIFO(os.lstat(out).st_mode)


def test_sr_train_names_a_read_only_run_folder_in_one_line(read_only_dir, tmp_path):
    """Hydra creates the run folder before sr-train's task runs: its mkdir used to fail with a
    traceback (exit 1)."""
    run_dir = read_only_dir / "outputs" / "run"
    result = run_cli([*TINY_CLI, "trainer.max_steps=1", f"hydra.run.dir={run_dir}"], tmp_path)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr
    assert lines[0].startswith(f"sr-train: error: cannot create hydra.run.dir {str(run_dir)!r}")
    assert "read-only" in lines[0]
    assert list(read_only_dir.iterdir()) == []
