"""The pictures of the ``sr-report`` page: crops, difference maps, power spectra and training
curves, as PNG bytes."""

from __future__ import annotations

import io
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from sr_cli.pixels import quantize_array, to_uint8
from sr_cli.report.runs import Run, read_metrics_csv


def to_png(img: np.ndarray) -> bytes:
    """``(H, W, 3)`` uint8 or float ``[0, 1]`` -> PNG bytes."""
    from PIL import Image

    if img.dtype != np.uint8:
        img = quantize_array(img, 8)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def tensor_image(x: Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` or ``(3, H, W)`` in ``[0, 1]`` -> ``(H, W, 3)`` uint8."""
    return to_uint8(x.detach().float())


def detail_window(gt: Tensor, size: int, align: int) -> tuple[int, int]:
    """Top-left ``(y, x)`` (multiples of ``align``) of the ``size`` window with the most GT detail."""
    gray = gt[0].float().mean(0, keepdim=True)[None]
    gy = (gray[..., 1:, :-1] - gray[..., :-1, :-1]).abs()
    gx = (gray[..., :-1, 1:] - gray[..., :-1, :-1]).abs()
    energy = gy + gx
    k = min(size, energy.shape[-2], energy.shape[-1])
    pooled = torch.nn.functional.avg_pool2d(energy, k, stride=align)
    idx = int(pooled.flatten().argmax())
    y, x = divmod(idx, pooled.shape[-1])
    return y * align, x * align


def heat_map(err: np.ndarray, vmax: float) -> np.ndarray:
    """``(H, W)`` errors -> ``(H, W, 3)`` uint8 with matplotlib's *inferno* colormap."""
    from matplotlib import colormaps

    rgba = colormaps["inferno"](np.clip(err / max(vmax, 1e-8), 0, 1))
    return quantize_array(rgba[..., :3], 8)


def radial_power_spectrum(img: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Radially averaged power spectrum of the luma of ``(1, 3, H, W)``: (frequency, power).

    Frequencies are in cycles per pixel (0 to 0.5, the Nyquist frequency)."""
    y = (
        img[0].double() * torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)[:, None, None]
    ).sum(0)
    y = y - y.mean()
    power = torch.fft.fftshift(torch.fft.fft2(y)).abs().pow(2).numpy()
    h, w = power.shape
    fy = np.fft.fftshift(np.fft.fftfreq(h))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(w))[None, :]
    radius = np.sqrt(fy**2 + fx**2)
    nbins = min(h, w) // 2
    bins = np.minimum((radius / 0.5 * nbins).astype(int), nbins)
    sums = np.bincount(bins.ravel(), power.ravel(), minlength=nbins + 1)[:nbins]
    counts = np.bincount(bins.ravel(), minlength=nbins + 1)[:nbins]
    freq = (np.arange(nbins) + 0.5) / nbins * 0.5
    return freq[1:], (sums / np.maximum(counts, 1))[1:] / (h * w)


def figure_png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def spectrum_plot(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for label, (f, p) in curves.items():
        style = dict(color="black", linewidth=2.0) if label == "GT" else dict(linewidth=1.2)
        ax.semilogy(f, np.maximum(p, 1e-20), label=label, **style)
    ax.set_xlabel("spatial frequency (cycles / pixel)")
    ax.set_ylabel("power (log scale)")
    ax.set_title(title, fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return figure_png(fig)


def curves_plot(runs: Sequence[Run]) -> bytes | None:
    """Training loss and validation PSNR_Y of every run, against the step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = {r.label: read_metrics_csv(r.metrics_csv) for r in runs if r.metrics_csv}
    if not data:
        return None
    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 3.8))
    for label, series in data.items():
        loss_key = (
            "train/loss_total"
            if "train/loss_total" in series
            else next(
                (
                    k
                    for k in series
                    if k.startswith("train/loss_") and not k.endswith("_unweighted")
                ),
                None,
            )
        )
        if loss_key:
            s, v = zip(*series[loss_key])
            ax_loss.plot(s, v, label=f"{label} ({loss_key})", marker="." if len(s) < 20 else None)
        if "val/psnr_y" in series:
            s, v = zip(*series["val/psnr_y"])
            ax_val.plot(s, v, label=label, marker="o")
    ax_loss.set_title("training loss")
    ax_loss.set_xlabel("step")
    ax_loss.set_yscale("log")
    ax_val.set_title("validation PSNR_Y (dB)")
    ax_val.set_xlabel("step")
    for ax in (ax_loss, ax_val):
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return figure_png(fig)
