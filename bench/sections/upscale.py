"""3. Inference (sr-upscale): tiled against one untiled forward, peak memory, and a profile of
the tile grid's work."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from bench.measure import alternate, bench_timer, ratio_row, row


def bench_upscale(p: dict, device: str, tmp: Path) -> list[dict]:

    from bench.upscale_memory import measure
    from sr_cli.evaluate.upscaling import Picture, upscale_picture

    rows = []
    fwd, pic, lq = upscale_inputs(p, device)
    w, h = p["upscale_ratio_size"]
    res = alternate(
        {
            "tiled": bench_timer(lambda: upscale_picture(pic, fwd, 4, tile=256, overlap=16)),
            "whole": bench_timer(lambda: fwd(lq).cpu()),
        },
        p["upscale_rounds"],
    )
    r = ratio_row(
        "upscale",
        f"sr-upscale tiled (default: 256 px, overlap 16) vs one untiled forward, EDSR small x4, "
        f"{w}x{h}",
        res["tiled"], res["whole"], "tiled", "untiled", 1.15,
    )  # fmt: skip
    r["area_factor"] = tiled_area(w, h)
    r["note"] = (
        f"the tiles cover {r['area_factor']:.2f}x the image's pixels; tiled includes quantizing "
        "the output to 8 bits; both in-process, no file I/O"
    )
    rows.append(r)
    if device == "cpu":
        for tile in (256, 0):
            for size in p["upscale_sizes"]:
                m = measure("edsr", tile=tile, overlap=16, size=size)
                rows.append(
                    row(
                        "upscale",
                        f"peak RSS of sr-upscale, {size[0]}x{size[1]}, "
                        + (f"tile {tile}" if tile else "untiled (--tile 0)"),
                        value=m["vm_hwm_mib"],
                        unit="MiB",
                        note=f"{m['seconds']:.1f} s incl. PNG I/O",
                    )
                )
    else:
        for size in p["upscale_sizes"]:
            x = torch.rand(1, 3, size[1], size[0])
            torch.cuda.reset_peak_memory_stats()
            upscale_picture(
                Picture(rgb=x[0].permute(1, 2, 0).numpy(), alpha=None, gray=False, bits=8), fwd, 4
            )
            rows.append(row("upscale", f"peak CUDA memory, {size[0]}x{size[1]}, tile 256",
                            value=torch.cuda.max_memory_allocated() / 2**20, unit="MiB"))  # fmt: skip
    return rows


def upscale_inputs(p: dict, device: str):
    """The upscale section's generator forward (EDSR small x4, seed 0), a random RGB picture of
    ``p["upscale_ratio_size"]`` and the same image as an LQ tensor: shared by the timing and
    the profile, so both measure the same thing."""
    import numpy as np
    from hydra.utils import instantiate

    from bench.upscale_memory import MODELS
    from sr_cli.evaluate.upscaling import Picture, make_forward

    torch.manual_seed(0)
    gen = instantiate(MODELS["edsr"]).eval().to(device)
    fwd = make_forward(gen, torch.device(device))
    w, h = p["upscale_ratio_size"]
    rgb = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    pic = Picture(rgb=rgb, alpha=None, gray=False, bits=8)
    return fwd, pic, torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def tiled_area(w: int, h: int, tile: int = 256, overlap: int = 16) -> float:
    """Pixels the generator processes when tiling a ``w x h`` LQ, over the image's pixels."""
    from sr_cli.evaluate.tiling import tile_layout

    (th, ys), (tw, xs) = tile_layout(h, tile, overlap), tile_layout(w, tile, overlap)
    return len(xs) * tw * len(ys) * th / (w * h)


def profile_upscale(p: dict, device: str, tmp: Path) -> str:
    """One tiled and one untiled upscale under torch.profiler: the convolution work of each,
    and the tile grid's pixel count against the image's at several sizes."""
    from torch.profiler import ProfilerActivity, profile

    from sr_cli.evaluate.tiling import tile_starts
    from sr_cli.evaluate.upscaling import upscale_picture

    fwd, pic, lq = upscale_inputs(p, device)
    w, h = p["upscale_ratio_size"]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    out = {}
    for name, fn in (
        ("tiled", lambda: upscale_picture(pic, fwd, 4, tile=256, overlap=16)),
        ("untiled", lambda: fwd(lq).cpu()),
    ):
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
        ops = {e.key: (e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()}
        out[name] = (wall, ops)
    keys = sorted(set(out["tiled"][1]) | set(out["untiled"][1]),
                  key=lambda k: -out["tiled"][1].get(k, (0, 0))[0])[:8]  # fmt: skip
    lines = [f"one call each, {w}x{h} LQ, EDSR small x4: tiled {out['tiled'][0]:.2f} s, "
             f"untiled {out['untiled'][0]:.2f} s", "",
             f"{'op (self CPU s, calls)':<48} {'tiled':>16} {'untiled':>16}"]  # fmt: skip
    for k in keys:
        a, b = out["tiled"][1].get(k, (0, 0)), out["untiled"][1].get(k, (0, 0))
        lines.append(f"{k[:48]:<48} {a[0]:9.2f} ({a[1]:>4}) {b[0]:9.2f} ({b[1]:>4})")
    lines += ["", "tile grid (tile 256, overlap 16): tiles and processed pixels / image pixels"]
    for sw, sh in [(w, h), (1000, 750), (2000, 1500)]:
        n = len(tile_starts(sw, 256, 16)) * len(tile_starts(sh, 256, 16))
        lines.append(f"  {sw}x{sh}: {n} tiles, {tiled_area(sw, sh):.2f}x")
    return "\n".join(lines)
