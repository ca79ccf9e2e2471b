"""Honest evaluation: a run folder is scored through ``last.ckpt`` unless ``checkpoint=best`` says
otherwise, every table says which, and a figure on the run's own validation images says it is
optimistic (sr-eval, sr-report, sr-upscale)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sr_cli.errors import CheckpointError
from sr_cli.evaluate.evaluation import evaluate
from tests.evaluate.test_eval import compose_eval

OPTIMISTIC = "optimistic"


@pytest.fixture(scope="module")
def two_state_run(trained_run, tmp_path_factory) -> Path:
    """A copy of the tiny run whose best.ckpt is another state than last.ckpt: iteration 1, its
    generator's weights halved (as if validation had chosen an earlier iteration)."""
    run = tmp_path_factory.mktemp("two_states") / "tiny"
    shutil.copytree(trained_run, run)
    best = run / "checkpoints" / "best.ckpt"
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    state["sr_cli"]["iteration"] = 1
    for key, value in state["state_dict"].items():
        if key.startswith("generator.") and value.is_floating_point():
            state["state_dict"][key] = value * 0.5
    best.unlink()
    torch.save(state, best)
    return run


def rows_of(path: Path) -> list[dict]:
    return list(csv.DictReader(open(path)))


def test_a_run_folder_is_scored_through_last_by_default(
    two_state_run, eval_images, tmp_path, no_hub_cache
):
    out = tmp_path / "last"
    cfg = compose_eval([f"checkpoints=[{two_state_run}]", f"datasets={{val3:{eval_images}}}"], out)
    results, _ = evaluate(cfg)
    model = next(r for r in results.rows if r["model"] != "bicubic")
    assert model["scored"] == "last" and model["iteration"] == 2
    assert model["checkpoint"].endswith("checkpoints/last.ckpt")
    # The same figure as the file itself.
    direct, _ = evaluate(compose_eval(
        [f"checkpoints=[{two_state_run}/checkpoints/last.ckpt]", f"datasets={{val3:{eval_images}}}"],
        tmp_path / "direct",
    ))  # fmt: skip
    assert direct.rows[1]["psnr_y"] == model["psnr_y"]
    csv_row = rows_of(out / "results.csv")[1]
    assert csv_row["scored"] == "last" and csv_row["iteration"] == "2"
    assert "last @ 2" in (out / "results.md").read_text()


def test_checkpoint_best_scores_best_and_says_so(
    two_state_run, eval_images, tmp_path, no_hub_cache, capsys
):
    runs = {}
    for which in ("last", "best"):
        cfg = compose_eval(
            [
                f"checkpoints=[{two_state_run}]",
                f"datasets={{val3:{eval_images}}}",
                f"checkpoint={which}",
            ],
            tmp_path / which,
        )
        runs[which], _ = evaluate(cfg)
    best = runs["best"].rows[1]
    assert best["scored"] == "best" and best["iteration"] == 1
    assert best["checkpoint"].endswith("checkpoints/best.ckpt")
    assert best["psnr_y"] != runs["last"].rows[1]["psnr_y"]  # another state, another figure
    assert rows_of(tmp_path / "best" / "results.csv")[1]["scored"] == "best"
    md = (tmp_path / "best" / "results.md").read_text()
    assert "| best @ 1 |" in md
    console = capsys.readouterr().out
    assert "best @ 1" in console


def test_the_runs_own_validation_images_are_flagged_optimistic(
    two_state_run, eval_images, tmp_path, no_hub_cache, capsys
):
    """tiny was validated on eval_images (data.val_dir): scoring it there gets the line, in the
    console and results.md; another folder (here a copy of the same images) does not."""
    cfg = compose_eval(
        [f"checkpoints=[{two_state_run}]", f"datasets={{val3:{eval_images}}}", "checkpoint=best"],
        tmp_path / "same",
    )
    results, _ = evaluate(cfg)
    assert len(results.caveats) == 1
    line = results.caveats[0]
    assert OPTIMISTIC in line and "best.ckpt was selected on these very images" in line
    assert line in (tmp_path / "same" / "results.md").read_text()
    assert OPTIMISTIC in capsys.readouterr().out
    assert rows_of(tmp_path / "same" / "results.csv")[1]["validation_images"] == "true"
    other = tmp_path / "other_images"
    shutil.copytree(eval_images, other)
    cfg = compose_eval(
        [f"checkpoints=[{two_state_run}]", f"datasets={{copy:{other}}}", "checkpoint=best"],
        tmp_path / "other",
    )
    results, _ = evaluate(cfg)
    assert results.caveats == []
    assert OPTIMISTIC not in (tmp_path / "other" / "results.md").read_text()
    assert OPTIMISTIC not in capsys.readouterr().out
    assert rows_of(tmp_path / "other" / "results.csv")[1]["validation_images"] == "false"


def test_an_unknown_choice_or_a_missing_file_is_one_line(two_state_run, tmp_path, eval_images):
    with pytest.raises(CheckpointError, match="checkpoint='newest' is not a choice"):
        evaluate(
            compose_eval([f"checkpoints=[{two_state_run}]", "checkpoint=newest"], tmp_path / "a")
        )
    run = tmp_path / "no_best"
    shutil.copytree(two_state_run, run)
    (run / "checkpoints" / "best.ckpt").unlink()
    with pytest.raises(CheckpointError, match="no checkpoints/best.ckpt. It has last.ckpt"):
        evaluate(compose_eval([f"checkpoints=[{run}]", "checkpoint=best"], tmp_path / "b"))


def test_upscale_and_report_take_the_choice(two_state_run, eval_images, tmp_path):
    from sr_cli.commands.report import main as report
    from sr_cli.commands.upscale import main as upscale

    src = tmp_path / "in"
    src.mkdir()
    Image.open(sorted(eval_images.glob("*.png"))[0]).save(src / "a.png")
    outs = {}
    for which in ("last", "best"):
        upscale([str(two_state_run), str(src / "a.png"), "-o", str(tmp_path / f"{which}.png"),
                 "--checkpoint", which, "-q"])  # fmt: skip
        outs[which] = np.asarray(Image.open(tmp_path / f"{which}.png"))
    default = tmp_path / "default.png"
    upscale([str(two_state_run), str(src / "a.png"), "-o", str(default), "-q"])
    assert np.array_equal(np.asarray(Image.open(default)), outs["last"])
    assert not np.array_equal(outs["last"], outs["best"])
    report([str(two_state_run), "-o", str(tmp_path / "report"), "--checkpoint", "best"])
    page = (tmp_path / "report" / "report.html").read_text()
    assert "best @ 1" in page and "best.ckpt" in page
    assert OPTIMISTIC in page  # the report defaults to the run's validation images
