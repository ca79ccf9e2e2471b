"""4. Evaluation (sr-eval): time per image against the forward pass alone, and where the rest
goes."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.measure import alternate, bench_timer, ratio_row, stats, sync

EVAL_MODELS = [("edsr_baseline", "EDSR-baseline"), ("edsr", "EDSR small (2 blocks, 32 features)")]


def _eval_inputs(p: dict, tmp: Path):
    """Random 8-bit HR images in two folders (n and 2n images) and their bicubic LQ."""
    import numpy as np
    from PIL import Image

    from sr_cli.degradations.resize import imresize

    n, side = p["eval_images"], p["patch"] * 4
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(2 * n)]
    sets = {}
    for k in (n, 2 * n):
        d = tmp / "eval" / f"set{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(k):
            Image.fromarray(imgs[i]).save(d / f"{i}.png")
        sets[k] = d
    gts = [torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 for a in imgs[:n]]
    return sets, gts, [imresize(g, scale=0.25) for g in gts], side


def _sr_eval(ckpt: Path, folder: Path, out: Path, device: str) -> float:
    """The sr-eval task in-process (``evaluate(cfg)``, the config a user's command gets, with
    its progress bar and its CSV/Markdown outputs); seconds."""
    from hydra import compose, initialize_config_dir

    from sr_cli.config import config_dir
    from sr_cli.evaluate.evaluation import evaluate

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("eval", overrides=[
            f"checkpoints=[{ckpt}]", f"datasets={{bench: {folder}}}", "metrics=[psnr_y,ssim_y]",
            f"output_dir={out}", f"trainer.accelerator={'gpu' if device != 'cpu' else 'cpu'}",
            "~logger",
        ])  # fmt: skip
    t0 = time.perf_counter()
    evaluate(cfg)
    return time.perf_counter() - t0


def bench_eval(p: dict, device: str, tmp: Path) -> list[dict]:
    from bench.upscale_memory import make_checkpoint
    from sr_cli.evaluate.inference import load_generator

    n = p["eval_images"]
    sets, _, lqs, side = _eval_inputs(p, tmp)
    rows = []
    for key, label in EVAL_MODELS:
        ckpt = tmp / "eval" / f"{key}.ckpt"
        make_checkpoint(ckpt, key)
        gen = load_generator(ckpt).generator.eval().to(device)

        @torch.inference_mode()
        def forward(gen=gen) -> float:
            t0 = time.perf_counter()
            for x in lqs:
                gen(x.to(device))
            sync(device)
            return (time.perf_counter() - t0) / n

        per_image: list[float] = []
        fwd: list[float] = []
        out = tmp / "eval" / f"out-{key}"
        _sr_eval(ckpt, sets[n], out, device)  # warm-up: imports, metric set-up
        for _ in range(p["upscale_rounds"]):
            t_n = _sr_eval(ckpt, sets[n], out, device)
            fwd.append(forward())
            t_2n = _sr_eval(ckpt, sets[2 * n], out, device)
            per_image.append(max(t_2n - t_n, 1e-9) / n)
        a, b = stats(per_image), stats(fwd)
        r = ratio_row(
            "eval", f"sr-eval per image (PSNR_Y + SSIM_Y) vs forward pass alone, {label}, "
            f"{side}x{side} HR, x4", a, b, "sr-eval", "forward", 1.20,
        )  # fmt: skip
        r["model"] = key
        r["note"] = (
            f"beyond the forward: {(a['median'] - b['median']) * 1000:.0f} ms per image. Per "
            f"image = (time for {2 * n} images - time for {n}) / {n}: start-up cancels out; "
            "includes decoding, the bicubic LQ, the bicubic baseline row and the CSVs"
        )
        rows.append(r)
    return rows


def profile_eval(p: dict, device: str, tmp: Path, model: str) -> str:
    """Where sr-eval's time per image goes: its pieces timed alone (torch.utils.benchmark), the
    Y-plane sharing measured against the old per-metric conversion, and a torch.profiler table
    of ``evaluate`` itself."""
    from torch.profiler import ProfilerActivity, profile

    from bench.upscale_memory import make_checkpoint
    from sr_cli.degradations.resize import imresize
    from sr_cli.evaluate.inference import load_generator
    from sr_cli.metrics.protocol import prepare_y_one, psnr255, psnr_y, ssim, ssim_y
    from sr_cli.metrics.registry import MetricInputs, compute_metrics

    n = p["eval_images"]
    sets, gts, lqs, side = _eval_inputs(p, tmp / "prof")
    ckpt = tmp / "prof" / "eval" / f"prof-{model}.ckpt"
    make_checkpoint(ckpt, model)
    gen = load_generator(ckpt).generator.eval().to(device)
    gt, lq = gts[0].to(device), lqs[0].to(device)
    with torch.inference_mode():
        sr = gen(lq).clamp(0, 1).float()
    bic = imresize(lq, size=tuple(gt.shape[-2:])).clamp(0, 1)
    y_sr, y_gt = prepare_y_one(sr, 4), prepare_y_one(gt, 4)

    def both_rows_now() -> None:  # what sr-eval does per image since the fix
        cache: dict = {}
        for s in (sr, bic):
            compute_metrics(["psnr_y", "ssim_y"], MetricInputs(s, gt, lq, 4, gt_cache=cache))

    def both_rows_before() -> None:  # each metric converted both images to Y itself
        for s in (sr, bic):
            psnr_y(s, gt, 4)
            ssim_y(s, gt, 4)

    pieces = {
        "generator forward": lambda: gen(lq),
        "bicubic baseline row (MATLAB imresize x4)": lambda: imresize(
            lq, size=tuple(gt.shape[-2:])
        ),
        "8-bit rounding + Y + crop, one image": lambda: prepare_y_one(sr, 4),
        "PSNR on Y planes": lambda: psnr255(y_sr, y_gt),
        "SSIM on Y planes (float64, 11x11 Gaussian)": lambda: ssim(y_sr, y_gt, data_range=255.0),
        "PSNR_Y + SSIM_Y, both rows, shared Y planes (now)": both_rows_now,
        "PSNR_Y + SSIM_Y, both rows, Y per metric (before)": both_rows_before,
    }
    with torch.inference_mode():
        res = alternate({k: bench_timer(f, number=3) for k, f in pieces.items()}, 3)
    lines = [f"pieces, one {side}x{side} image, ms (median of 3 alternated rounds of 3 calls):"]
    lines += [f"  {k:<52} {v['median'] * 1000:8.1f}" for k, v in res.items()]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    _sr_eval(ckpt, sets[n], tmp / "prof" / "eval" / "out", device)
    with profile(activities=acts) as prof:
        _sr_eval(ckpt, sets[n], tmp / "prof" / "eval" / "out", device)
    lines += ["", f"torch.profiler, sr-eval on {n} images, top ops by self CPU:", ""]
    lines.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    return "\n".join(lines)
