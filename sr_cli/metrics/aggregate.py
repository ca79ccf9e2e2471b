"""Per-image metric tables gathered across processes with torchmetrics, exactly.

Each process evaluates its own shard of the images. :class:`PerImageTable` keeps, through two
:class:`torchmetrics.CatMetric` states (float64, NaN kept), the index of every image it saw and
that image's row of values. ``compute`` gathers them from every process (torchmetrics pads the
uneven shards) and puts each row back at its image index, so every process ends with the same
table as a single device, and means taken over it in image order are bit-identical for any
number of devices.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor
from torchmetrics import CatMetric


class PerImageTable:
    """Rows of ``width`` float64 values keyed by image index; NaN marks a missing value.

    Example:
        >>> t = PerImageTable(width=2)
        >>> t.update(torch.tensor([1]), torch.tensor([[3.0, float("nan")]]))
        >>> t.compute(2)
        tensor([[nan, nan],
                [3., nan]], dtype=torch.float64)
    """

    def __init__(self, width: int, device: torch.device | str = "cpu") -> None:
        self.width = int(width)
        # set_dtype after .to(): torchmetrics' .to() resets the dtype to the default float32.
        self._index = CatMetric(nan_strategy="disable").to(device).set_dtype(torch.float64)
        self._values = CatMetric(nan_strategy="disable").to(device).set_dtype(torch.float64)

    def update(self, index: Tensor, values: Tensor) -> None:
        """``index``: ``(B,)`` image indices; ``values``: ``(B, width)``."""
        values = values.detach().to(torch.float64).reshape(-1, self.width)
        if values.shape[0] != index.numel():
            raise ValueError(f"{index.numel()} indices for {values.shape[0]} rows of values")
        self._index.update(index.detach().to(values.device, torch.float64).reshape(-1))
        self._values.update(values.reshape(-1))
        assert self._values.dtype == torch.float64  # exact per-image figures

    def compute(self, num_images: int) -> Tensor:
        """The ``(num_images, width)`` table, identical on every process (CPU, float64).

        Every process must call this (it is a collective operation under DDP)."""
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*called before the ``update``.*")
            index, values = self._index.compute(), self._values.compute()
        table = torch.full((num_images, self.width), float("nan"), dtype=torch.float64)
        if isinstance(index, list) or index.numel() == 0:
            return table
        rows = values.cpu().reshape(-1, self.width)
        table[index.cpu().long()] = rows
        return table


def image_mean(values: Tensor) -> float | None:
    """Mean of the non-NaN per-image values of a table column, in image order (``None``:
    no image has one)."""
    ok = ~torch.isnan(values)
    return float(values[ok].sum() / ok.sum()) if bool(ok.any()) else None
