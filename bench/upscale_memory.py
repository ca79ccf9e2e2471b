"""Peak resident memory of ``sr-upscale`` on a 2000x1500 image, CPU, tiled (not part of tests).

The upscale runs in a child process (a fresh interpreter), which reports its own peak RSS: with
psutil when installed (polled by the parent), and always from the kernel's high-water mark
``VmHWM`` in ``/proc/self/status``. tracemalloc would miss torch's allocations.

    python -m bench.upscale_memory [--model edsr|esrgan] [--tile 256] [--overlap 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODELS = {
    "edsr": {
        "_target_": "sr_cli.models.edsr.edsr",
        "scale": 4,
        "preset": "small",
        "upsampler": "pixelshuffle",
    },
    "esrgan": {"_target_": "sr_cli.models.rrdbnet.rrdbnet", "scale": 4, "preset": "small"},
    "edsr_baseline": {
        "_target_": "sr_cli.models.edsr.edsr",
        "scale": 4,
        "preset": "baseline",
        "upsampler": "pixelshuffle",
    },
}


def vm_hwm_mib() -> float:
    """This process's peak resident set size (MiB) from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def make_checkpoint(path: Path, model: str) -> None:
    """An sr-train-style checkpoint of a randomly initialised generator (``MODELS[model]``)."""
    import torch
    from hydra.utils import instantiate

    gen_cfg = MODELS[model]
    gen = instantiate(gen_cfg)
    torch.save(
        {
            "state_dict": {f"generator.{k}": v for k, v in gen.state_dict().items()},
            "sr_cli": {
                "model": {"name": model, "preset": gen_cfg["preset"], "generator": gen_cfg},
                "degradation": {
                    "_target_": "sr_cli.degradations.pipeline.ResizeDownsample",
                    "scale": 4,
                    "mode": "bicubic",
                },
                "scale": 4,
                "iteration": 0,
            },
        },
        path,
    )


def child(args: list[str]) -> None:
    from sr_cli.commands.upscale import main

    t0 = time.perf_counter()
    main(args)
    print(json.dumps({"vm_hwm_mib": vm_hwm_mib(), "seconds": time.perf_counter() - t0}))


def measure(model: str = "edsr", tile: int = 256, overlap: int = 16, size=(2000, 1500)) -> dict:
    import numpy as np
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        make_checkpoint(tmp / "model.ckpt", model)
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(
            tmp / "in.png"
        )
        cmd = [
            sys.executable,
            "-m",
            "bench.upscale_memory",
            "--child",
            str(tmp / "model.ckpt"),
            str(tmp / "in.png"),
            "-o",
            str(tmp / "out.png"),
            "--tile",
            str(tile),
            "--overlap",
            str(overlap),
            "--device",
            "cpu",
            "-q",
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
        peak_psutil = None
        try:
            import psutil

            p = psutil.Process(proc.pid)
            peak_psutil = 0.0
            while proc.poll() is None:
                try:
                    peak_psutil = max(peak_psutil, p.memory_info().rss / 2**20)
                except psutil.Error:
                    break
                time.sleep(0.05)
        except ImportError:
            pass
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError(f"sr-upscale failed with status {proc.returncode}")
        result = json.loads(out.strip().splitlines()[-1])
        result.update(model=model, tile=tile, overlap=overlap, size=f"{size[0]}x{size[1]}")
        if peak_psutil is not None:
            result["psutil_peak_mib"] = peak_psutil
        return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="edsr")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--overlap", type=int, default=16)
    a = parser.parse_args()
    base = measure(a.model, a.tile, a.overlap, size=(32, 32))  # imports + model, no image
    r = measure(a.model, a.tile, a.overlap)
    print(
        f"upscale_memory: {r['model']} small x4 {r['size']} tile={r['tile']} "
        f"overlap={r['overlap']} CPU: peak RSS {r['vm_hwm_mib']:.0f} MiB "
        f"({r['vm_hwm_mib'] - base['vm_hwm_mib']:.0f} MiB above a 32x32 run), {r['seconds']:.1f} s"
    )


if __name__ == "__main__":
    main()
