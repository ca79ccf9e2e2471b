"""sr-eval takes the image size limit from its config (max_pixels)."""

from __future__ import annotations

import pytest


def test_sr_eval_max_pixels(trained_run, eval_images, tmp_path, capsys):
    from sr_cli.commands.eval import _run
    from tests.evaluate.test_eval import compose_eval

    base = [f"checkpoints=[{trained_run}]", f"datasets={{val3:{eval_images}}}"]
    cfg = compose_eval([*base, "metrics=[psnr_y]", "max_pixels=2000"], tmp_path / "e")
    with pytest.raises(SystemExit) as info:
        _run(cfg)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-eval: error: image") and "over the limit of 2000" in err
    assert str(eval_images) in err and err.count("\n") == 1
