"""Runs, their SR of the image set, and the regions a rating session shows.

The LQ of every image is made as ``sr-eval`` makes it: the first checkpoint's stored
degradation (sr-eval's fallback: MATLAB bicubic, quantized), seeded per image with
``make_lq`` of :mod:`sr_cli.evaluate.compare` (the ``val_degradation`` stream), or the LR images of a benchmark folder. So the SR rated
here is the SR sr-eval scores.

Regions: for every pair of runs and every image, the ``n_diff`` windows where the two SRs
differ most (mean absolute difference, windows do not overlap), plus ``n_random`` windows
drawn from the seed. In absolute mode, the windows where all runs differ most (sum over
pairs) plus random ones, each rated once per run.
"""

from __future__ import annotations

import hashlib
import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from sr_cli.errors import ConfigError, DataError


@dataclass
class RateRun:
    """A run taking part in a session."""

    name: str
    checkpoint: Path
    digest: str
    generator: torch.nn.Module
    scale: int
    degradation_config: dict | None


def file_digest(path: Path) -> str:
    """SHA-256 of a file's bytes (identifies a checkpoint across renames)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_name(arg: str | Path, ckpt: Path) -> str:
    """``ckpt["sr_cli"]["name"]`` when the checkpoint stores one, else the run folder's name
    (for a bare ``.ckpt`` outside sr-train's layout: its stem)."""
    from sr_cli.serialization import safe_torch_load

    meta = {}
    try:
        data = safe_torch_load(ckpt, map_location="cpu")
        meta = data.get("sr_cli") or {} if isinstance(data, dict) else {}
    except Exception:  # load_generator already reported unreadable files
        meta = {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if isinstance(name, str) and name.strip():
        return name.strip()
    p = Path(arg).expanduser()
    if p.is_dir():
        return p.resolve().name
    if ckpt.parent.name == "checkpoints":
        return ckpt.resolve().parent.parent.name
    return ckpt.stem


def load_runs(paths: list[str], prefer_ema: bool = True) -> list[RateRun]:
    """Load every run (a run folder or a ``.ckpt``); names made unique with ``#2``, ``#3``..."""
    from sr_cli.evaluate.compare import unique_labels
    from sr_cli.evaluate.inference import load_generator, resolve_checkpoint

    if len(paths) < 1:
        raise ConfigError("no run given: sr-rate RUN_OR_CKPT [RUN_OR_CKPT ...]")
    ckpts = [resolve_checkpoint(p) for p in paths]
    loaded = [load_generator(c, prefer_ema=prefer_ema) for c in ckpts]
    names = unique_labels([run_name(p, c) for p, c in zip(paths, ckpts)])
    runs = [
        RateRun(
            name=n,
            checkpoint=c.resolve(),
            digest=file_digest(c),
            generator=lg.generator,
            scale=lg.scale,
            degradation_config=lg.degradation_config,
        )
        for n, c, lg in zip(names, ckpts, loaded)
    ]
    for r in runs[1:]:
        if r.scale != runs[0].scale:
            raise ConfigError(
                f"{str(r.checkpoint)!r} is x{r.scale} but {str(runs[0].checkpoint)!r} is "
                f"x{runs[0].scale}; rate runs of one scale at a time"
            )
    return runs


def image_set(set_arg: str) -> Path:
    """``samples`` (the bundled validation images) or an image folder."""
    from sr_cli.data import sample_dir

    if set_arg == "samples":
        return Path(sample_dir("val"))
    p = Path(set_arg).expanduser()
    if not p.is_dir():
        raise DataError(f"--set {set_arg!r} is not a folder; pass 'samples' or an image folder")
    return p.resolve()


def lq_degradation(runs: list[RateRun]):
    """The LQ degradation sr-eval uses: the first checkpoint's (rebuilt through the allow-list),
    else quantized MATLAB bicubic."""
    from sr_cli.evaluate.compare import default_lq_config
    from sr_cli.rebuild import rebuild

    cfg = runs[0].degradation_config or default_lq_config(runs[0].scale)
    return rebuild(cfg, runs[0].checkpoint, "degradation")


@torch.no_grad()
def super_resolve_set(
    runs: list[RateRun], folder: Path, max_images: int = 0, seed: int = 0
) -> list[tuple[str, Tensor, list[Tensor]]]:
    """``[(image name, GT (1,3,H,W), [SR of each run])]`` for the images of ``folder``."""
    from sr_cli.data.datasets import open_eval_dataset
    from sr_cli.evaluate.compare import make_lq
    from sr_cli.evaluate.inference import super_resolve

    scale = runs[0].scale
    dataset = open_eval_dataset(folder, scale)
    if len(dataset) == 0:
        raise DataError(f"no image in {str(folder)!r}")
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    degradation = None
    out = []
    for index in range(n):
        item = dataset[index]
        gt = item["gt"].unsqueeze(0).float()
        if "lq" in item:
            lq = item["lq"].unsqueeze(0).float()
        else:
            # The same LQ as sr-eval and validation (the val_degradation stream).
            degradation = degradation or lq_degradation(runs)
            lq, _ = make_lq(degradation, gt, seed, index)
        srs = []
        for r in runs:
            sr = super_resolve(r.generator, lq).float()
            if sr.shape != gt.shape:
                raise ConfigError(
                    f"{r.name} turned a {tuple(lq.shape[-2:])} LQ into {tuple(sr.shape[-2:])}, "
                    f"but GT {item.get('name', index)!r} is {tuple(gt.shape[-2:])}"
                )
            srs.append(sr)
        out.append((str(item.get("name", index)), gt, srs))
    return out


def _windows(energy: Tensor, size: int, stride: int) -> tuple[np.ndarray, int]:
    """Mean of ``energy`` (H, W) over every ``size`` window at ``stride``: (grid, stride)."""
    pooled = torch.nn.functional.avg_pool2d(energy[None, None].double(), size, stride=stride)
    return pooled[0, 0].numpy(), stride


def pick_regions(
    energy: Tensor,
    size: int,
    n_diff: int,
    n_random: int,
    rng: np.random.Generator,
) -> list[tuple[int, int, str]]:
    """Top-left corners ``(y, x, reason)``: the ``n_diff`` non-overlapping windows of highest
    mean ``energy`` (skipping windows with none), then ``n_random`` random other windows."""
    h, w = energy.shape
    stride = max(1, size // 4)
    grid, stride = _windows(energy, size, stride)
    chosen: list[tuple[int, int, str]] = []
    order = np.argsort(-grid, axis=None, kind="stable")
    for flat in order:
        if len([c for c in chosen if c[2] == "diff"]) >= n_diff:
            break
        gy, gx = np.unravel_index(flat, grid.shape)
        if grid[gy, gx] <= 0:
            break
        y, x = int(gy) * stride, int(gx) * stride
        if any(abs(y - cy) < size and abs(x - cx) < size for cy, cx, _ in chosen):
            continue
        chosen.append((y, x, "diff"))
    taken = {(c[0], c[1]) for c in chosen}
    candidates = [
        (int(gy) * stride, int(gx) * stride)
        for gy in range(grid.shape[0])
        for gx in range(grid.shape[1])
        if (int(gy) * stride, int(gx) * stride) not in taken
    ]
    if candidates and n_random > 0:
        picks = rng.choice(len(candidates), size=min(n_random, len(candidates)), replace=False)
        chosen.extend((candidates[i][0], candidates[i][1], "random") for i in sorted(picks))
    return chosen


def plan_items(
    images: list[tuple[str, Tensor, list[Tensor]]],
    n_runs: int,
    mode: str,
    crop: int,
    n_diff: int,
    n_random: int,
    seed: int,
) -> list[dict]:
    """Rows for :data:`sr_cli.rate.db.items`: the regions to rate and the runs shown."""
    rows: list[dict] = []
    for i, (name, gt, srs) in enumerate(images):
        h, w = gt.shape[-2:]
        size = min(crop, h, w)
        if size < 8:
            raise DataError(f"image {name!r} is {w}x{h}: too small to rate (8 px at least)")
        pairs = list(itertools.combinations(range(n_runs), 2))
        if mode == "pairwise":
            for p, (a, b) in enumerate(pairs):
                energy = (srs[a][0] - srs[b][0]).abs().mean(0)
                rng = np.random.default_rng([seed, i, p])
                for y, x, why in pick_regions(energy, size, n_diff, n_random, rng):
                    rows.append(dict(image=name, y=y, x=x, size=size, run_a=a, run_b=b, reason=why))
        else:
            energy = torch.zeros(h, w, dtype=torch.float64)
            for a, b in pairs:
                energy += (srs[a][0] - srs[b][0]).abs().mean(0).double()
            rng = np.random.default_rng([seed, i])
            for y, x, why in pick_regions(energy, size, n_diff, n_random, rng):
                for r in range(n_runs):
                    rows.append(
                        dict(image=name, y=y, x=x, size=size, run_a=r, run_b=None, reason=why)
                    )
    if not rows:
        raise ConfigError(
            "nothing to rate: pairwise mode needs two runs at least (or use --mode absolute), "
            "and --crops/--random-crops must not both be 0"
        )
    return rows


def write_crop(img: Tensor, y: int, x: int, size: int, path: Path) -> None:
    """Save the ``size`` x ``size`` window at ``(y, x)`` of a ``(1, 3, H, W)`` image as PNG."""
    from PIL import Image

    from sr_cli.pixels import to_uint8
    from sr_cli.serialization import atomic_write

    window = to_uint8(img[0, :, y : y + size, x : x + size])
    atomic_write(path, lambda f: Image.fromarray(window).save(f, format="PNG"))
