"""``make bench``: sr-cli's speed against plain PyTorch (and BasicSR), as alternated ratios.

Writes ``results.md`` and ``results.json`` (default folder ``bench/``) with the machine, torch
version, thread count and date. Every compared figure is the median of repeated measurements
taken alternately (A, B, A, B, ...), with min and max, so a busy machine slows both sides alike.

    python -m bench.run [--preset smoke|quick|full] [--out DIR] [--only train,data,...]

Sections: ``train`` (step overhead of the real sr-train path, GAN and non-GAN), ``peer`` (the same
EDSR step in BasicSR), ``data`` (datamodule throughput and time waiting for data), ``upscale``
(tiled inference and its memory), ``eval`` (sr-eval per image), ``scaling`` (batch, patch,
2-process DDP), ``gpu`` (bf16 and channels_last, CUDA only).

This module is the runner (presets, the command line, which missed targets get profiled). Each
section is a module of :mod:`bench.sections`; :mod:`bench.measure` is how everything is measured,
:mod:`bench.harness` the real sr-train path and the plain loop it is compared with, and
:mod:`bench.tables` writes ``results.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench.measure import environment, row
from bench.sections import SECTIONS
from bench.sections.data import bench_data
from bench.sections.eval import bench_eval, profile_eval
from bench.sections.gpu import bench_gpu
from bench.sections.peer import bench_peer
from bench.sections.scaling import bench_scaling
from bench.sections.train import bench_train, profile_train_step
from bench.sections.upscale import bench_upscale, profile_upscale
from bench.tables import FIXES, markdown

ROOT = Path(__file__).resolve().parent.parent

#: What each preset runs. ``smoke`` checks the wiring in about a minute (its numbers mean
#: little); ``quick`` is the default (a quarter of an hour on 2 shared cores); ``full`` takes
#: long. ``threads``: torch threads unless ``--threads`` says otherwise (none: torch's choice).
#: smoke and quick use 1: on a shared 2-core machine a second OpenMP thread that the scheduler
#: parks makes every small op wait (SSIM measured 12x slower with 2 threads at load 5).
PRESETS: dict[str, dict] = {
    "smoke": dict(
        batch=2, patch=32, edsr_preset="small", warmup=1, block=1, rounds=2, workers=0,
        data_batches=3, upscale_sizes=[(96, 64), (192, 128)], upscale_ratio_size=(192, 128),
        upscale_rounds=2,
        eval_images=2, scaling_batches=[1, 2], scaling_patches=[32], ddp_steps=3, peer=False,
        threads=1,
    ),
    "quick": dict(
        batch=8, patch=64, edsr_preset="baseline", warmup=2, block=2, rounds=4, workers=2,
        data_batches=8, upscale_sizes=[(400, 300), (800, 600)], upscale_ratio_size=(500, 375),
        upscale_rounds=2, eval_images=4, scaling_batches=[4, 16], scaling_patches=[48, 96],
        ddp_steps=6, peer=True, threads=1,
    ),
    "full": dict(
        batch=16, patch=128, edsr_preset="baseline", warmup=5, block=5, rounds=9, workers=4,
        data_batches=30, upscale_sizes=[(1000, 750), (2000, 1500)],
        upscale_ratio_size=(2000, 1500), upscale_rounds=3,
        eval_images=8, scaling_batches=[4, 8, 16, 32], scaling_patches=[64, 96, 128, 192],
        ddp_steps=20, peer=True,
    ),
}  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--out", default=str(ROOT / "bench"), help="folder for results.md/.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the preset's, 1 for smoke and quick; else torch's choice)",
    )
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        ap.error(f"--only {','.join(unknown)}: unknown section; choose from {','.join(SECTIONS)}")
    p = copy.deepcopy(PRESETS[args.preset])
    threads = args.threads or p.get("threads")
    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the sr-eval / DDP child processes
    env = environment(args.device)
    env["preset"] = args.preset
    env["load_before"] = list(os.getloadavg())
    env["section_load"] = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fns = {"train": bench_train, "peer": bench_peer, "data": bench_data, "upscale": bench_upscale,
           "eval": bench_eval, "scaling": bench_scaling, "gpu": bench_gpu}  # fmt: skip
    rows: list[dict] = []
    profiles: list[dict] = []

    def write() -> None:
        """Written after every section, so an interrupted run keeps what it measured."""
        env["load_after"] = list(os.getloadavg())
        (out / "results.json").write_text(
            json.dumps({"environment": env, "rows": rows, "profiles": profiles}, indent=1)
        )
        (out / "results.md").write_text(markdown(env, rows, profiles))

    with tempfile.TemporaryDirectory(prefix="sr-bench-") as tmp:
        for sec in only:
            t0 = time.perf_counter()
            load0 = os.getloadavg()[0]
            try:
                rows += fns[sec](p, args.device, Path(tmp))
            except Exception as e:  # one broken section must not hide the others
                rows.append(
                    row(sec, f"section {sec}", unavailable=f"{type(e).__name__}: {e}"[:300])
                )
            took = time.perf_counter() - t0
            env["section_load"][sec] = {"before": load0, "after": os.getloadavg()[0], "s": took}
            print(f"[bench] {sec}: {took:.0f} s", file=sys.stderr, flush=True)
            write()
        if args.preset != "smoke":
            for what, title, fn in profile_jobs(rows, only):
                t0 = time.perf_counter()
                print(f"[bench] profile: {title}", file=sys.stderr, flush=True)
                try:
                    text = fn(p, args.device, Path(tmp))
                except Exception as e:  # report, never crash the bench
                    text = f"profile failed: {type(e).__name__}: {e}"
                profiles.append({"section": what, "title": title, "text": text,
                                 "fix": FIXES.get(what, ""), "s": time.perf_counter() - t0})  # fmt: skip
                write()
    print((out / "results.md").read_text())
    print(f"written to {out / 'results.md'} and {out / 'results.json'}")


def profile_jobs(rows: list[dict], only: list[str]):
    """``(section, title, fn)`` for each missed target, plus the EDSR-baseline training step
    (the last missed target before this round) and EDSR-baseline evaluation, always profiled."""
    jobs, seen = [], set()
    train_missed = [r for r in rows if r["section"] == "train" and r.get("met") is False]
    if "train" in only:
        train_missed.insert(0, {"what": "train step, EDSR-baseline, L1", "met": None})
    for r in train_missed:
        label = r["what"].split(", ", 1)[1]
        model = "edsr" if label.startswith("EDSR") else "rrdb"
        loss = (
            "downsample+gan" if "downsample" in label else ("l1+gan" if "RaGAN" in label else "l1")
        )
        if (model, loss) in seen:
            continue
        seen.add((model, loss))
        state = "missed" if r.get("met") is False else "profiled every run"
        jobs.append(("train", f"{r['what']} ({state})",
                     lambda p, d, t, m=model, lo=loss: profile_train_step(p, d, t, m, lo)))  # fmt: skip
    if any(r["section"] == "upscale" and r.get("met") is False for r in rows):
        jobs.append(("upscale", "sr-upscale tiled vs untiled (missed)", profile_upscale))
    eval_rows = [r for r in rows if r["section"] == "eval" and "ratio" in r]
    for r in eval_rows:
        if r.get("met") is False or r.get("model") == "edsr_baseline":
            state = "missed" if r.get("met") is False else "met"
            jobs.append(("eval", f"{r['what']} ({state})",
                         lambda p, d, t, m=r["model"]: profile_eval(p, d, t, m)))  # fmt: skip
    return jobs


if __name__ == "__main__":
    main()
