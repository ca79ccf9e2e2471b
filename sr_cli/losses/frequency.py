"""Frequency-domain losses.

* :func:`fft_loss` / :class:`FFTLoss`: L1 between the amplitude spectra ``|F(SR)|`` and
  ``|F(GT)|`` of the orthonormal 2-D DFT. It penalizes missing or spurious frequencies (lost
  high-frequency detail, ringing) and ignores phase, so mix it with a pixel loss.
* :func:`focal_frequency_loss` / :class:`FocalFrequencyLoss`: the focal frequency loss of Jiang
  et al., "Focal Frequency Loss for Image Reconstruction and Synthesis", ICCV 2021. The squared
  spectrum distance ``|F(SR) - F(GT)|^2`` at each frequency is weighted by
  ``w = |F(SR) - F(GT)|^alpha`` scaled to ``[0, 1]`` (and detached), so the frequencies that
  are hardest to synthesize get the most weight.

Both use ``torch.fft.fft2(norm="ortho")`` on each channel, computed in float32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sr_cli.errors import ConfigError
from sr_cli.losses.base import LossInputs, LossTerm, check_same_shape, reduce_loss


def _check_images(pred: Tensor, target: Tensor, name: str) -> None:
    check_same_shape(pred, target, name)
    if pred.dim() != 4:
        raise ValueError(f"{name} expects (B, C, H, W) images, got {tuple(pred.shape)}")


def fft_loss(pred: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """L1 between orthonormal 2-D amplitude spectra, ``mean | |F(pred)| - |F(target)| |``.

    Shape:
        ``pred``, ``target``: ``(B, C, H, W)``.

    Example:
        >>> fft_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))  # DC = 4 / sqrt(4) = 2
        tensor(0.5000)
    """
    _check_images(pred, target, "fft_loss")
    amp_pred = torch.fft.fft2(pred.float(), norm="ortho").abs()
    amp_target = torch.fft.fft2(target.float(), norm="ortho").abs()
    return reduce_loss((amp_pred - amp_target).abs(), reduction)


class FFTLoss(LossTerm):
    """L1 between the amplitude spectra of SR and GT (see :func:`fft_loss`).

    Shape:
        ``inputs.sr``, ``inputs.gt``: ``(B, C, H, W)``.
    """

    def compute(self, inputs: LossInputs) -> Tensor:
        return fft_loss(inputs.sr, inputs.gt)


def _patch_spectra(x: Tensor, patch_factor: int) -> Tensor:
    """Split into ``patch_factor**2`` tiles and take each tile's orthonormal DFT.

    ``(B, C, H, W) -> (B, P*P, C, H/P, W/P)`` complex.
    """
    b, c, h, w = x.shape
    ph, pw = h // patch_factor, w // patch_factor
    tiles = x.reshape(b, c, patch_factor, ph, patch_factor, pw).permute(0, 2, 4, 1, 3, 5)
    tiles = tiles.reshape(b, patch_factor * patch_factor, c, ph, pw)
    return torch.fft.fft2(tiles.float(), norm="ortho")


def focal_frequency_loss(
    pred: Tensor,
    target: Tensor,
    alpha: float = 1.0,
    patch_factor: int = 1,
    ave_spectrum: bool = False,
    log_matrix: bool = False,
    batch_matrix: bool = False,
) -> Tensor:
    """Focal frequency loss (Jiang et al., ICCV 2021).

    ``mean(w * |F(pred) - F(target)|^2)`` with ``w = |F(pred) - F(target)|^alpha``, optionally
    ``log(1 + w)``, divided by its maximum (per image, tile and channel; or over the whole batch
    with ``batch_matrix``) and detached.

    Args:
        alpha: scaling exponent of the spectrum weight.
        patch_factor: split each image into ``patch_factor x patch_factor`` tiles first; ``H``
            and ``W`` must be divisible by it.
        ave_spectrum: compare the batch-averaged spectra (minibatch average spectrum).
        log_matrix: take ``log(1 + w)`` before normalizing.
        batch_matrix: normalize ``w`` by the batch maximum instead of per spectrum.

    Shape:
        ``pred``, ``target``: ``(B, C, H, W)``.

    Example:
        >>> focal_frequency_loss(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2))  # 2^2 / 4
        tensor(1.)
    """
    _check_images(pred, target, "focal_frequency_loss")
    if alpha < 0:
        raise ValueError(f"focal_frequency_loss alpha must be >= 0, got {alpha}")
    if patch_factor < 1 or pred.shape[-2] % patch_factor or pred.shape[-1] % patch_factor:
        raise ValueError(
            f"focal_frequency_loss: patch_factor {patch_factor} must be >= 1 and divide the image "
            f"size {pred.shape[-2]}x{pred.shape[-1]}"
        )
    spec_pred = _patch_spectra(pred, patch_factor)
    spec_target = _patch_spectra(target, patch_factor)
    if ave_spectrum:
        spec_pred = spec_pred.mean(0, keepdim=True)
        spec_target = spec_target.mean(0, keepdim=True)
    diff = spec_pred - spec_target
    distance = diff.real**2 + diff.imag**2
    with torch.no_grad():
        matrix = distance.sqrt() ** alpha
        if log_matrix:
            matrix = torch.log1p(matrix)
        if batch_matrix:
            matrix = matrix / matrix.max()
        else:
            matrix = matrix / matrix.amax(dim=(-2, -1), keepdim=True)
        matrix = torch.nan_to_num(matrix, nan=0.0).clamp(0.0, 1.0)
    return (matrix * distance).mean()


class FocalFrequencyLoss(LossTerm):
    """Focal frequency loss between SR and GT (see :func:`focal_frequency_loss`).

    Args:
        weight, start_step: see :class:`~sr_cli.losses.base.LossTerm` (the paper uses 1.0).
        alpha, patch_factor, ave_spectrum, log_matrix, batch_matrix: see
            :func:`focal_frequency_loss`.

    Shape:
        ``inputs.sr``, ``inputs.gt``: ``(B, C, H, W)``.
    """

    def __init__(
        self,
        weight: float = 1.0,
        start_step: int = 0,
        alpha: float = 1.0,
        patch_factor: int = 1,
        ave_spectrum: bool = False,
        log_matrix: bool = False,
        batch_matrix: bool = False,
    ) -> None:
        super().__init__(weight, start_step)
        if alpha < 0:
            raise ConfigError(f"focal_frequency.alpha must be >= 0, got {alpha}")
        if int(patch_factor) != patch_factor or patch_factor < 1:
            raise ConfigError(
                f"focal_frequency.patch_factor must be a positive integer, got {patch_factor}"
            )
        self.alpha = float(alpha)
        self.patch_factor = int(patch_factor)
        self.ave_spectrum = bool(ave_spectrum)
        self.log_matrix = bool(log_matrix)
        self.batch_matrix = bool(batch_matrix)

    def compute(self, inputs: LossInputs) -> Tensor:
        return focal_frequency_loss(
            inputs.sr,
            inputs.gt,
            self.alpha,
            self.patch_factor,
            self.ave_spectrum,
            self.log_matrix,
            self.batch_matrix,
        )

    def extra_repr(self) -> str:
        return (
            f"alpha={self.alpha}, patch_factor={self.patch_factor}, "
            f"ave_spectrum={self.ave_spectrum}, log_matrix={self.log_matrix}, "
            f"batch_matrix={self.batch_matrix}, " + super().extra_repr()
        )
