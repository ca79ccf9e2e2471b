"""Per-iteration work of sr-train kept off the iterations that do not need it: the progress bar
reads the losses (a host sync per loss on a GPU) at most every ``losses_every_s`` and always at
the last iteration; the module logs only on the iterations Lightning writes."""

from __future__ import annotations

import pytest

from sr_cli.train.lit.progress import RunProgress
from sr_cli.train.training import train


@pytest.mark.slow  # ~50 s on 2 shared cores
def test_bar_shows_the_losses_of_the_last_iteration(tiny_cfg, capsys):
    cfg = tiny_cfg("model=edsr_baseline", "trainer.enable_progress_bar=true", "trainer.max_steps=3")
    _, objects = train(cfg)
    (bar,) = [c for c in objects["trainer"].callbacks if isinstance(c, RunProgress)]
    assert bar.losses_every_s == 0.5
    err = capsys.readouterr().err
    assert "3/3" in err
    assert "loss_total" in err  # read at the end even though the run took under 0.5 s per read


@pytest.mark.slow  # ~40 s on 2 shared cores
def test_train_losses_logged_every_log_every_n_steps_and_at_the_end(tiny_cfg):
    """The module calls self.log only on the iterations Lightning writes (it skips the others to
    save its Python overhead): metrics.csv gets the same rows as before, steps 1, 3 and 4."""
    import csv
    from pathlib import Path

    cfg = tiny_cfg("model=edsr_baseline", "trainer.max_steps=5", "trainer.log_every_n_steps=2")
    train(cfg)
    rows = list(csv.DictReader(open(Path(cfg.paths.output_dir) / "metrics.csv")))
    steps = [int(r["step"]) for r in rows if r.get("train/loss_total")]
    assert steps == [1, 3, 4]
