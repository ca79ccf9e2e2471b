"""5. Scaling: the plain step over batch and patch sizes, and CPU DDP with 2 processes against 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from bench.harness import PlainLoop, compose_train, train_overrides
from bench.measure import alternate, bench_timer, row, stats

ROOT = Path(__file__).resolve().parents[2]


def bench_scaling(p: dict, device: str, tmp: Path) -> list[dict]:
    rows = []
    for batch in p["scaling_batches"]:
        for patch in p["scaling_patches"]:
            q = dict(p, batch=batch, patch=patch, workers=0)
            cfg = compose_train(train_overrides(q, "edsr", "l1", tmp / "scaling", device))
            plain = PlainLoop(cfg, device, n_batches=1)
            plain.run(1)
            s = alternate({"t": bench_timer(plain.step)}, p["rounds"])["t"]
            rows.append(
                row("scaling", f"EDSR-{p['edsr_preset']} L1 step, batch {batch}, patch {patch}px",
                    value=s, unit="s/step", note=f"{batch / s['median']:.1f} patches/s")
            )  # fmt: skip
    if device != "cpu":
        return rows
    steps = p["ddp_steps"]
    results = {}
    for world in (1, 2):
        out = tmp / f"ddp{world}"
        cmd = [
            sys.executable, "-m", "sr_cli.commands.train",
            *train_overrides(dict(p, workers=0), "edsr", "l1", out, "cpu"),
            *(["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"] if world == 2 else []),
            f"trainer.max_steps={steps + 10}", "+callbacks.bench_clock._target_=bench.clock.StepClock",
            f"+callbacks.bench_clock.path={out / 'clock.json'}", f"+callbacks.bench_clock.stop_after={steps}",
            f"+callbacks.bench_clock.warmup={min(p['warmup'], steps - 1)}", f"hydra.run.dir={out}",
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp))
        clock = out / "clock.json"
        if proc.returncode or not clock.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            rows.append(
                row(
                    "scaling",
                    f"CPU DDP, {world} process(es)",
                    unavailable=f"sr-train failed: {tail}",
                )
            )
            return rows
        rec = json.loads(clock.read_text())
        it = rec["iteration_s"][rec["warmup"] :] or rec["iteration_s"]
        results[world] = stats([world * p["batch"] / t for t in it])
    rows.append(
        row("scaling", f"CPU DDP throughput, 2 processes vs 1, batch {p['batch']}/process",
            a=results[2], b=results[1], a_label="2 processes", b_label="1 process", unit="patches/s",
            ratio=results[2]["median"] / results[1]["median"], target=None, met=None,
            note=f"{torch.get_num_threads()} threads in the 1-process run; the 2 processes share the same cores")
    )  # fmt: skip
    return rows
