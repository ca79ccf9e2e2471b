"""sr-train's progress bar reads the losses at most every ``losses_every_s`` (each read is a host
sync per loss on a GPU) and always at the last iteration."""

from __future__ import annotations

import pytest

from sr_cli.engine.lit.progress import RunProgress
from sr_cli.engine.training import train


@pytest.mark.slow  # ~50 s on 2 shared cores
def test_bar_shows_the_losses_of_the_last_iteration(tiny_cfg, capsys):
    cfg = tiny_cfg("model=edsr_baseline", "trainer.enable_progress_bar=true", "trainer.max_steps=3")
    _, objects = train(cfg)
    (bar,) = [c for c in objects["trainer"].callbacks if isinstance(c, RunProgress)]
    assert bar.losses_every_s == 0.5
    err = capsys.readouterr().err
    assert "3/3" in err
    assert "loss_total" in err  # read at the end even though the run took under 0.5 s per read
