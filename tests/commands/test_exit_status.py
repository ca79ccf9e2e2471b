"""Every installed console script exits with status 2 on a user error (sr_cli/errors.py), with a
one-line message and no traceback; Hydra's own option errors included."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent

CASES = [
    ("sr-train", ["loss=l1+nope"], "Could not find 'loss/nope'"),
    ("sr-train", ["model=nope"], "Could not find 'model/nope'"),
    ("sr-train", ["trainer.max_steps=="], "Error parsing override 'trainer.max_steps=='"),
    ("sr-eval", ["model=nope"], "Could not override 'model'"),
    ("sr-eval", ["task=detection", "data={tmp}/set"], "task='detection' is unknown"),
    ("sr-eval", ["plane=maybe", "checkpoints=[{tmp}/a.ckpt]"], "plane='maybe' is not one of"),
    ("sr-upscale", ["{tmp}/no.ckpt", "{tmp}/no.png", "-o", "{tmp}/out"], "sr-upscale: error:"),
    ("sr-export", ["{tmp}/no.ckpt", "-o", "{tmp}/out.pt"], "sr-export: error: checkpoint"),
    ("sr-report", ["{tmp}/no_run", "-o", "{tmp}/out"], "sr-report: error: checkpoint"),
    ("sr-rate", ["{tmp}/a", "{tmp}/b", "--set", "{tmp}/set"], "sr-rate: error: checkpoint"),
    ("sr-data", ["prepare", "{tmp}/no_src", "{tmp}/out"], "sr-data prepare: error: source"),
]


@pytest.mark.parametrize(
    "script,args,message", CASES, ids=[f"{s}-{a[0].split('/')[-1]}" for s, a, _ in CASES]
)
def test_user_error_exits_with_2(tmp_path, script, args, message):
    exe = shutil.which(script) or str(BIN / script)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB", "HYDRA_FULL"))}
    res = subprocess.run(
        [exe, *(a.format(tmp=tmp_path) for a in args)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert res.returncode == 2, res.stderr[-2000:]
    assert message in res.stderr
    assert "Traceback" not in res.stderr
