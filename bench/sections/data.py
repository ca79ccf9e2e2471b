"""2. Data pipeline: what the datamodule delivers against what the generator consumes, and the
share of each step spent waiting for data."""

from __future__ import annotations

import time
from pathlib import Path

from bench.harness import PlainLoop, compose_train, run_real_trainer, train_overrides
from bench.measure import alternate, row, stats


def bench_data(p: dict, device: str, tmp: Path) -> list[dict]:
    from sr_cli.train.build import build_datamodule

    rows = []
    batch = 16 if p["batch"] >= 8 else p["batch"]
    for deg in ("bicubic", "realesrgan"):
        q = dict(p, batch=batch)
        cfg = compose_train(
            train_overrides(q, "edsr", "l1", tmp / f"data-{deg}", device, [f"degradation={deg}"])
        )
        dm = build_datamodule(cfg)
        dm.setup("fit")
        loader = dm.train_dataloader()

        def deliver(loader=loader) -> float:
            it = iter(loader)
            next(it)  # worker start-up and first batch excluded
            t0 = time.perf_counter()
            for _ in range(p["data_batches"]):
                next(it)
            return p["data_batches"] * batch / (time.perf_counter() - t0)

        plain = PlainLoop(cfg, device, n_batches=2)
        plain.run(1)
        res = alternate(
            {"deliver": deliver, "consume": lambda plain=plain: batch / plain.run(p["block"])}, 2
        )
        clock, _ = run_real_trainer(cfg, q, None, rounds=p["rounds"])
        steady = slice(p["warmup"], None)
        waits = [
            max(w - d, 0.0) / i
            for w, d, i in zip(
                clock.waits[steady], clock.transfers[steady], clock.iterations[steady]
            )
        ]
        share = stats(waits)
        rows.append(
            row(
                "data",
                f"{deg}: datamodule patches/s vs generator consumption, batch {batch}x{p['patch']}px, "
                f"{p['workers']} workers",
                delivered=res["deliver"],
                consumed=res["consume"],
                wait_share=share,
                target=0.05,
                met=bool(share["median"] <= 0.05),
                unit="patches/s",
            )
        )
    return rows
