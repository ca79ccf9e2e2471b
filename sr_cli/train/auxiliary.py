"""Pretrain the auxiliary perceptual network (AuxNet) on the bundled training images.

``make pretrain-aux`` runs :func:`pretrain_auxnet` and writes
``sr_cli/data/weights/auxnet_samples.safetensors``. The task: tell which training image a patch
was cut from (one class per image; :mod:`sr_cli.models.auxnet`). Every step cuts patches from
random images at random places and flips, rotates and rescales their brightness, so the network
has to learn the images' textures and colours rather than a position or an exposure. The
accuracy on fresh patches is measured at the end and written into the file's metadata with the
recipe, so the file says what it is.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sr_cli.models.auxnet import AuxNet


def _patches(
    images: list[np.ndarray], n: int, size: int, rng: np.random.Generator, augment: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    labels = rng.integers(0, len(images), size=n)
    out = []
    for k in labels:
        img = images[int(k)]
        h, w = img.shape[:2]
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        patch = img[top : top + size, left : left + size].astype(np.float32) / 255.0
        if augment:
            if rng.random() < 0.5:
                patch = patch[:, ::-1]
            patch = np.rot90(patch, int(rng.integers(4)))
            patch = np.clip(patch * rng.uniform(0.7, 1.3), 0.0, 1.0)
        out.append(np.ascontiguousarray(patch))
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float()
    return x, torch.from_numpy(labels)


def _load(folder: Path) -> tuple[list[np.ndarray], list[str]]:
    from sr_cli.data.images import list_images, read_image

    files = list_images(folder, what="AuxNet training images")
    return [read_image(p, warn=False) for p in files], [p.stem for p in files]


def accuracy(net: AuxNet, images: list[np.ndarray], size: int, n: int, seed: int) -> float:
    """Share of ``n`` fresh patches (no augmentation) whose source image ``net`` names."""
    x, labels = _patches(images, n, size, np.random.default_rng(seed), augment=False)
    net.eval()
    with torch.no_grad():
        return float((net(x).argmax(1) == labels).float().mean())


def pretrain_auxnet(
    train_dir: str | Path,
    out: str | Path,
    steps: int = 2000,
    batch_size: int = 32,
    patch_size: int = 48,
    lr: float = 1e-3,
    seed: int = 0,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train :class:`AuxNet` on the source-image task and save it (safetensors, with its recipe
    and accuracy in the metadata) to ``out``. Returns the metadata."""
    from safetensors.torch import save

    from sr_cli.serialization import atomic_write

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    images, names = _load(Path(train_dir))
    net = AuxNet(classes=len(images))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    loss_fn = nn.CrossEntropyLoss()
    t0 = time.monotonic()
    for step in range(1, steps + 1):
        net.train()
        x, labels = _patches(images, batch_size, patch_size, rng, augment=True)
        loss = loss_fn(net(x), labels)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        if step % max(1, steps // 10) == 0 or step == steps:
            say(f"auxnet step {step}/{steps}: loss {loss.item():.4f}")
    meta: dict[str, Any] = {
        "network": "sr_cli.models.auxnet.AuxNet",
        "task": "source-image classification (Exemplar-CNN-style surrogate classes)",
        "classes": names,
        "steps": steps,
        "batch_size": batch_size,
        "patch_size": patch_size,
        "lr": lr,
        "seed": seed,
        "accuracy": round(accuracy(net, images, patch_size, 512, seed + 1), 4),
        "chance": round(1 / len(images), 4),
        "seconds": round(time.monotonic() - t0, 1),
    }
    state = {k: v.contiguous() for k, v in net.state_dict().items()}
    text = {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}
    atomic_write(Path(out), lambda f: f.write(save(state, metadata=text)))
    say(f"wrote {out}: accuracy {meta['accuracy']} (chance {meta['chance']}), {meta['seconds']} s")
    return meta
