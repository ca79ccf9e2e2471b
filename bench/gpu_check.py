"""``make gpu-check``: the GPU paths of sr-cli, each run for a few steps as a real CLI process.

    python -m bench.gpu_check [--out bench/gpu_check.md] [--allow-cpu]

Checks, in order (each is ``python -m sr_cli.commands.<cmd>`` under :mod:`bench.gpu_probe`,
which records the peak CUDA memory of rank 0, the peak resident memory and the optimizer
step times):

1. ``train bf16 GAN``: ``sr-train trainer=gpu trainer.precision=bf16-mixed loss=[l1,gan]``
   (RRDBNet, paper size, 128 px patches, batch 16).
2. ``train DDP x2``: the same on 2 GPUs (``trainer=ddp trainer.devices=2``) when
   ``torch.cuda.device_count() >= 2``; otherwise the row says ``skipped: 1 GPU``.
3. ``sr-eval sharded``: the checkpoint of check 1 on the bundled validation images, sharded
   over every GPU (``trainer.strategy=ddp`` when there are several), PSNR_Y as key figure.
4. ``sr-upscale bf16``: that checkpoint on a generated 2000x1500 image, ``--precision bf16``
   (fp32 in the CPU dry run: sr-upscale refuses bf16 without CUDA).

It prints a table (check, status, wall time, peak memory, key figure) and writes it to
``--out`` with the date, the GPU and the versions. Without CUDA it says so and exits 0;
``--allow-cpu`` runs the same checks on the CPU with tiny sizes (DDP as 2 gloo processes): a
dry run of the script itself, whose numbers mean nothing. The whole check is bounded to
``--budget`` seconds (540): a check that would start past it is reported as skipped.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CHECKS = ("train bf16 GAN", "train DDP x2", "sr-eval sharded", "sr-upscale bf16")


@dataclass
class Row:
    check: str
    status: str = "not run"
    wall_s: float | None = None
    gpu_peak: str = "-"
    rss_peak: str = "-"
    figure: str = "-"
    extra: dict = field(default_factory=dict)


def _gib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def _rate(step_times: list[list[float]]) -> float | None:
    """Iterations per second of the optimizer that stepped most (the generator), from the
    median interval between its steps (robust to the first, slow step and to validation)."""
    if not step_times:
        return None
    times = max(step_times, key=len)
    if len(times) < 3:
        return None
    return 1.0 / statistics.median(np.diff(times[1:]))


def _last_error(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "error" in line.lower():
            return line[:200]
    return lines[-1][:200] if lines else "no output"


def run_cli(row: Row, module: str, args: list[str], work: Path, timeout: float) -> dict | None:
    """Run ``module`` with ``args`` under the probe; fill the row's time, memory and status.
    Returns the probe's record, or ``None`` when the command failed."""
    probe = work / f"probe_{len(list(work.glob('probe_*.json')))}.json"
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.gpu_probe", str(probe), module, *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        row.wall_s = time.perf_counter() - start
        row.status = f"FAILED: timed out after {timeout:.0f} s"
        return None
    row.wall_s = time.perf_counter() - start
    (work / f"{probe.stem}.log").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    record = json.loads(probe.read_text()) if probe.is_file() else {}
    row.gpu_peak = _gib(record.get("cuda_peak_bytes"))
    row.rss_peak = _gib(record.get("max_rss_bytes"))
    if proc.returncode != 0:
        row.status = f"FAILED (exit {proc.returncode}): {_last_error(proc.stderr)}"
        return None
    row.status = "ok"
    return record


def _sizes(cpu: bool) -> dict:
    if cpu:
        return dict(
            model=["experiment=demo", "model.pretrained=null", "model.preset=small"],
            patch=32, batch=2, steps=3, workers=0, accel="cpu", image=(200, 150),
        )  # fmt: skip
    return dict(
        model=["model=esrgan", "model.preset=paper", "model.pretrained=null"],
        patch=128, batch=16, steps=40, workers=4, accel="gpu", image=(2000, 1500),
    )  # fmt: skip


def _val_folder(work: Path, cpu: bool) -> Path:
    """The bundled validation images (on CPU: 64 px crops of them, for speed)."""
    from PIL import Image

    from sr_cli.data import SAMPLES_DIR

    if not cpu:
        return SAMPLES_DIR / "val"
    folder = work / "val"
    folder.mkdir(exist_ok=True)
    for path in sorted((SAMPLES_DIR / "val").glob("*.png")):
        Image.open(path).crop((0, 0, 64, 64)).save(folder / path.name)
    return folder


def _train_args(s: dict, run_dir: Path, val: Path) -> list[str]:
    return [
        *s["model"],
        "loss=[l1,gan]",
        "trainer.precision=bf16-mixed",
        f"trainer.accelerator={s['accel']}",
        f"data.patch_size={s['patch']}",
        f"data.batch_size={s['batch']}",
        f"trainer.max_steps={s['steps']}",
        f"data.iters_per_epoch={s['steps']}",  # one validation, after the last step
        f"data.num_workers={s['workers']}",
        f"data.val_dir={val}",
        "logger=none",
        "val.save_images=0",
        "trainer.enable_progress_bar=false",
        f"hydra.run.dir={run_dir}",
    ]


def _check_training(row: Row, record: dict | None, run_dir: Path, world: int) -> None:
    if record is None:
        return
    summary = json.loads((run_dir / "summary.json").read_text())
    loss = summary["metrics"].get("train/loss_total")
    problems = []
    if summary.get("status") != "finished":
        problems.append(f"status {summary.get('status')}")
    if summary.get("world_size") != world:
        problems.append(f"world size {summary.get('world_size')}, expected {world}")
    if loss is None or not np.isfinite(loss):
        problems.append(f"train/loss_total {loss}")
    rate = _rate(record.get("step_times", []))
    row.figure = (f"{rate:.2f} it/s" if rate else "? it/s") + (
        f", loss {loss:.4f}" if loss is not None else ""
    )
    if problems:
        row.status = "FAILED: " + "; ".join(problems)


def run_checks(cpu: bool, work: Path, budget: float) -> tuple[list[Row], dict]:
    import torch

    s = _sizes(cpu)
    gpus = torch.cuda.device_count() if not cpu else 0
    val = _val_folder(work, cpu)
    rows = {name: Row(name) for name in CHECKS}
    t0 = time.perf_counter()

    def left() -> float:
        return budget - (time.perf_counter() - t0)

    def fits(row: Row, need: float) -> bool:
        if left() < need:
            row.status = f"skipped: time budget ({budget:.0f} s) spent"
            return False
        return True

    # 1. bf16 GAN training on one device.
    row = rows["train bf16 GAN"]
    run1 = work / "train_bf16_gan"
    if fits(row, 60):
        record = run_cli(
            row,
            "sr_cli.commands.train",
            [*_train_args(s, run1, val), *([] if cpu else ["trainer=gpu"]), "trainer.devices=1"],
            work,
            min(300, left()),
        )
        _check_training(row, record, run1, 1)

    # 2. DDP over 2 devices (2 GPUs, or 2 gloo processes in the CPU dry run).
    row = rows["train DDP x2"]
    run2 = work / "train_ddp"
    if not cpu and gpus < 2:
        row.status = f"skipped: {gpus} GPU"
    elif fits(row, 60):
        record = run_cli(
            row,
            "sr_cli.commands.train",
            [*_train_args(s, run2, val), "trainer=ddp", "trainer.devices=2"],
            work,
            min(300, left()),
        )
        _check_training(row, record, run2, 2)

    ckpt = next(
        (d for d in (run1, run2) if (d / "checkpoints" / "last.ckpt").is_file()),
        None,
    )
    # 3. sr-eval sharded over the GPUs (one shard per device).
    row = rows["sr-eval sharded"]
    devices = 2 if cpu else max(1, gpus)
    if ckpt is None:
        row.status = "skipped: no checkpoint (both training checks failed)"
    elif fits(row, 30):
        ev = work / "eval"
        record = run_cli(
            row,
            "sr_cli.commands.eval",
            [
                f"checkpoints=[{ckpt}]",
                f"datasets={{val:{val}}}",
                "metrics=[psnr_y,ssim_y,psnr_rgb]",
                f"trainer.accelerator={s['accel']}",
                f"trainer.devices={devices}",
                f"trainer.strategy={'ddp' if devices > 1 else 'auto'}",
                "trainer.enable_progress_bar=false",
                "logger=none",
                f"hydra.run.dir={ev}",
            ],
            work,
            min(240, left()),
        )
        if record is not None:
            table = list(csv.DictReader(open(ev / "results.csv")))
            model = [r for r in table if r.get("checkpoint")]
            psnr = float(model[0]["psnr_y"]) if model and model[0]["psnr_y"] else float("nan")
            row.figure = f"PSNR_Y {psnr:.2f} dB, {devices} shard(s), {model[0]['images']} images"
            if not np.isfinite(psnr):
                row.status = "FAILED: no PSNR_Y in results.csv"

    # 4. sr-upscale --precision bf16 on a generated image.
    row = rows["sr-upscale bf16"]
    if ckpt is None:
        row.status = "skipped: no checkpoint (both training checks failed)"
    elif fits(row, 30):
        from PIL import Image

        w, h = s["image"]
        rng = np.random.default_rng(0)
        y, x = np.mgrid[0:h, 0:w]
        img = np.dstack([np.sin(x / (17 + 9 * k) + y / (23 + 5 * k)) for k in range(3)])
        img = ((img + 1) * 100 + rng.integers(0, 55, img.shape)).clip(0, 255).astype(np.uint8)
        src = work / "upscale_in.png"
        Image.fromarray(img).save(src)
        dst = work / "upscale_out.png"
        record = run_cli(
            row,
            "sr_cli.commands.upscale",
            [
                str(ckpt),
                str(src),
                "-o",
                str(dst),
                "--precision",
                "fp32" if cpu else "bf16",  # sr-upscale refuses bf16 without CUDA
                "--device",
                "cpu" if cpu else "cuda",
                "--quiet",
            ],
            work,
            min(240, left()),
        )
        if record is not None:
            with Image.open(dst) as out:
                size = out.size
            scale = size[0] // w
            row.figure = f"{w}x{h} -> {size[0]}x{size[1]} in {row.wall_s:.1f} s (whole process)"
            if cpu:
                row.figure += ", fp32 (bf16 needs CUDA)"
            if size != (w * scale, h * scale) or scale < 2:
                row.status = f"FAILED: output is {size[0]}x{size[1]}"

    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "device": "CPU dry run (tiny sizes; numbers mean nothing)"
        if cpu
        else ", ".join(torch.cuda.get_device_name(i) for i in range(gpus)),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "total_s": time.perf_counter() - t0,
    }
    return [rows[name] for name in CHECKS], meta


def table(rows: list[Row], meta: dict) -> str:
    lines = [
        f"gpu-check, {meta['date']}: {meta['device']}; torch {meta['torch']}, "
        f"python {meta['python']}; total {meta['total_s']:.0f} s",
        "",
        "| check | status | wall time | peak GPU memory (rank 0) | peak RSS | key figure |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        wall = "-" if r.wall_s is None else f"{r.wall_s:.1f} s"
        status = r.status.replace("|", "/")
        lines.append(
            f"| {r.check} | {status} | {wall} | {r.gpu_peak} | {r.rss_peak} | {r.figure} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=None, help="Markdown table (bench/gpu_check.md)")
    parser.add_argument(
        "--allow-cpu",
        action="store_true",
        help="without CUDA, dry-run the same checks on the CPU with tiny sizes",
    )
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all checks")
    parser.add_argument("--keep", default=None, help="keep the runs' files in this folder")
    args = parser.parse_args(argv)

    import torch

    cpu = not torch.cuda.is_available()
    if cpu and not args.allow_cpu:
        print("gpu-check: no CUDA device; nothing run (--allow-cpu dry-runs the checks on CPU).")
        return 0
    out = Path(args.out or ROOT / "bench" / ("gpu_check_cpu.md" if cpu else "gpu_check.md"))
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows, meta = run_checks(cpu, work.resolve(), args.budget)
    text = table(rows, meta)
    print(text, end="")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"gpu-check: table written to {out}")
    return 0 if all(r.status == "ok" or r.status.startswith("skipped: 1 GPU") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
