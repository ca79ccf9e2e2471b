"""``make bench``: speed of sr-cli's pieces as ratios against plain PyTorch references.

Writes ``bench/results.md`` (and prints it). Every row times the sr-cli path and a plain
PyTorch path doing the same work on the same device, and reports ``sr-cli / plain``
(1.00 = no overhead). Absolute numbers depend on the machine; the ratios are what to compare.

    python -m bench.run [--device cpu|cuda] [--quick]
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

RESULTS = Path(__file__).resolve().parent / "results.md"


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timeit(fn: Callable[[], object], device: str, repeat: int, warmup: int = 2) -> float:
    """Median seconds per call."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


def bench_resize(device: str, quick: bool) -> dict:
    """MATLAB-exact bicubic (two dense matmuls) vs torch's antialiased bicubic interpolate."""
    from sr_cli.degradations.resize import imresize

    x = torch.rand(8 if quick else 16, 3, 256, 256, device=device)
    ours = timeit(lambda: imresize(x, scale=0.25), device, 5 if quick else 20)
    ref = timeit(
        lambda: F.interpolate(
            x, scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False
        ),
        device,
        5 if quick else 20,
    )
    return {
        "what": f"bicubic x4 down, batch {x.shape[0]}x3x256x256",
        "sr_cli_s": ours,
        "plain_s": ref,
    }


def bench_train_step(device: str, quick: bool) -> dict:
    """One SRModule training iteration through Lightning vs a hand-written PyTorch loop."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    from sr_cli.degradations.pipeline import ResizeDownsample
    from sr_cli.lit.module import SRModule
    from sr_cli.losses.pixel import L1Loss
    from sr_cli.models.edsr import edsr

    steps = 10 if quick else 40
    batch, patch = 8, 96
    data = torch.rand(batch * (steps + 4), 3, patch, patch)

    class Wrap(TensorDataset):
        def __getitem__(self, i):
            return {"gt": super().__getitem__(i)[0], "index": i}

    loader = DataLoader(Wrap(data), batch_size=batch, drop_last=True)

    torch.manual_seed(0)
    module = SRModule(
        generator=edsr(4, "baseline"),
        losses={"l1": L1Loss()},
        degradation=ResizeDownsample(4),
        generator_optimizer=lambda p: torch.optim.Adam(p, lr=1e-4),
        val_names=[],
    )
    trainer = pl.Trainer(
        accelerator="gpu" if device.startswith("cuda") else "cpu",
        devices=1,
        max_steps=steps + 4,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    _sync(device)
    ours = (time.perf_counter() - t0) / (steps + 4)

    torch.manual_seed(0)
    net = edsr(4, "baseline").to(device)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    down = ResizeDownsample(4)
    t0 = time.perf_counter()
    for (gt,) in DataLoader(TensorDataset(data), batch_size=batch, drop_last=True):
        gt = gt.to(device)
        with torch.no_grad():
            lq = down(gt)
        loss = (net(lq) - gt).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    ref = (time.perf_counter() - t0) / (steps + 4)
    return {
        "what": f"train iteration, EDSR-baseline x4, L1, batch {batch}x{patch}px (incl. Lightning start-up)",
        "sr_cli_s": ours,
        "plain_s": ref,
        "images_per_s": batch / ours,
    }


def bench_metrics(device: str, quick: bool) -> dict:
    """Protocol PSNR_Y + SSIM_Y (float64, exact) vs a plain float32 RGB PSNR."""
    from sr_cli.metrics.protocol import psnr_y, ssim_y

    sr = torch.rand(1, 3, 512, 512, device=device)
    gt = torch.rand(1, 3, 512, 512, device=device)

    def ours():
        psnr_y(sr, gt, 4)
        ssim_y(sr, gt, 4)

    def ref():
        10 * torch.log10(1 / F.mse_loss(sr, gt))

    return {
        "what": "PSNR_Y + SSIM_Y (paper protocol, float64) vs plain RGB PSNR, 512x512",
        "sr_cli_s": timeit(ours, device, 3 if quick else 10),
        "plain_s": timeit(ref, device, 3 if quick else 10),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions")
    args = ap.parse_args(argv)
    rows = [fn(args.device, args.quick) for fn in (bench_resize, bench_metrics, bench_train_step)]

    from bench.degradation_throughput import run as degradation_run

    degr = degradation_run(device=args.device, batch=8 if args.quick else 16, size=256)
    lines = [
        "# sr-cli benchmarks",
        "",
        f"Device: {args.device} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads)",
        "",
        "| what | sr-cli (s) | plain PyTorch (s) | ratio sr-cli / plain |",
        "|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['what']} | {r['sr_cli_s']:.4f} | {r['plain_s']:.4f} | {r['sr_cli_s'] / r['plain_s']:.2f} |"
        )
    train_ips = rows[-1]["images_per_s"]
    lines += [
        "",
        "## Degradation throughput next to the training step",
        "",
        f"Training step (EDSR-baseline x4, 96 px patches): {train_ips:.1f} images/s.",
        "",
        "| degradation | images/s | ratio to training step |",
        "|---|---|---|",
    ]
    for d in degr:
        lines.append(
            f"| {d['name']} | {d['images_per_s']:.1f} | {d['images_per_s'] / train_ips:.1f}x |"
        )
    upscale = Path(__file__).resolve().parent / "upscale_memory.py"
    if upscale.is_file():
        from bench.upscale_memory import run as upscale_run

        lines += ["", "## sr-upscale memory", "", str(upscale_run())]
    text = "\n".join(lines) + "\n"
    RESULTS.write_text(text)
    print(text)
    print(f"written to {RESULTS}")


if __name__ == "__main__":
    main()
