"""1. Training-step overhead: the real sr-train path against the plain PyTorch loop, GAN and
non-GAN, and a torch.profiler table of where the difference goes."""

from __future__ import annotations

import sys
from pathlib import Path

from bench.harness import PlainLoop, compose_train, run_real_trainer, train_overrides
from bench.measure import ratio_row, stats

TRAIN_CASES = [
    # (label, model, loss, target ratio)
    ("EDSR-baseline, L1", "edsr", "l1", 1.05),
    ("RRDBNet-small, L1", "rrdb", "l1", 1.05),
    ("RRDBNet-small + VGG discriminator, L1 + RaGAN", "rrdb", "l1+gan", 1.10),
    ("RRDBNet-small + VGG discriminator, downsample+gan", "rrdb", "downsample+gan", 1.10),
]


def bench_train(p: dict, device: str, tmp: Path, cases=TRAIN_CASES, extra=(), tag="") -> list[dict]:
    rows = []
    for label, model, loss, target in cases:
        cfg = compose_train(
            train_overrides(p, model, loss, tmp / f"train-{model}-{loss}{tag}", device, extra)
        )
        print(f"[bench] train: {label}", file=sys.stderr, flush=True)
        plain = PlainLoop(cfg, device)
        plain.run(p["warmup"])  # warm-up outside the timed blocks
        plain_blocks: list[float] = []
        clock, total = run_real_trainer(
            cfg,
            p,
            lambda n, plain=plain, blocks=plain_blocks: blocks.append(plain.run(n)),
            rounds=p["rounds"],
        )
        sr = clock.blocks[: len(plain_blocks)] or clock.blocks
        what = f"train step{tag}, {label}, batch {p['batch']}x{p['patch']}px"
        if not plain_blocks:
            plain_blocks = [plain.run(p["block"])]
        r = ratio_row(
            "train", what, stats(sr), stats(plain_blocks), "sr-train", "plain loop", target
        )
        r["startup_s"] = clock.startup
        r["note"] = f"start-up (fit to first batch) {clock.startup:.2f} s, excluded"
        rows.append(r)
    return rows


def _op_times(prof, steps: int) -> dict[str, float]:
    """Self CPU milliseconds per step of every op (and labelled range) a profiler saw."""
    return {e.key: e.self_cpu_time_total / 1000.0 / steps for e in prof.key_averages()}


def _op_counts(prof, steps: int) -> dict[str, float]:
    return {e.key: e.count / steps for e in prof.key_averages()}


def profile_train_step(p: dict, device: str, tmp: Path, model: str, loss: str) -> str:
    """Where the sr-train path spends its time beyond the plain loop (torch.profiler).

    One steady-state block of the real sr-train path and the same number of plain-loop
    iterations are profiled; the table lists, per op, self CPU ms per iteration on each side
    and the difference (sr-train - plain), largest first. ``Optimizer.step#Adam.step`` on the
    sr-train side wraps Lightning's closure (training_step, backward, hooks), so its self time
    is the Python around the ops."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    cfg = compose_train(train_overrides(p, model, loss, tmp / f"profile-{model}-{loss}", device))
    plain = PlainLoop(cfg, device)
    plain.run(p["warmup"])
    steps = p["block"]
    box: dict = {}

    def pause(n: int) -> None:  # profile exactly the second block
        if "p" not in box:
            box["p"] = profile(activities=acts)
            box["p"].__enter__()
        elif "done" not in box:
            box["p"].__exit__(None, None, None)
            box["done"] = True

    run_real_trainer(cfg, dict(p, rounds=3), pause, rounds=3)
    if "done" not in box:
        return ""
    with profile(activities=acts) as pp:
        plain.run(steps)
    a, b = _op_times(box["p"], steps), _op_times(pp, steps)
    na, nb = _op_counts(box["p"], steps), _op_counts(pp, steps)
    diff = sorted(((a.get(k, 0.0) - b.get(k, 0.0), k) for k in set(a) | set(b)), reverse=True)
    lines = [
        f"self CPU ms per iteration over {steps} iterations: sr-train {sum(a.values()):.1f}, "
        f"plain loop {sum(b.values()):.1f}",
        "",
        f"{'op':<60} {'sr-train':>9} {'plain':>9} {'diff':>8} {'calls/it':>11}",
    ]
    for d, k in diff[:14]:
        calls = f"{na.get(k, 0):g}/{nb.get(k, 0):g}"
        lines.append(
            f"{k[:60]:<60} {a.get(k, 0.0):9.2f} {b.get(k, 0.0):9.2f} {d:+8.2f} {calls:>11}"
        )
    return "\n".join(lines)
