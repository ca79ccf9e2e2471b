"""Paired data augmentation on the device: flips, 90-degree rotations, mixup and CutBlur.

:class:`PairedAugment` transforms a batch of ``(lq, gt)`` pairs the same way per pair, with
per-sample random choices drawn from a ``torch.Generator`` (on the generator's device, then
moved), so a seed reproduces the batch.

* Dihedral transforms: a horizontal flip, a vertical flip and a transpose, each with probability
  1/2, give the 8 flips/rotations by multiples of 90 degrees with equal odds. The transpose (and
  thus the 90/270-degree rotations) needs square images; for non-square batches only the flips
  are used.
* Mixup (Zhang et al., 2018; for SR, Yoo et al., 2020): ``lam * a + (1 - lam) * b`` with
  ``lam ~ Beta(alpha, alpha)`` per sample and the partner ``b`` taken from a random permutation
  of the batch, applied identically to LQ and GT.
* CutBlur (Yoo et al., 2020, "Rethinking Data Augmentation for Image Super-resolution", CVPR):
  a random box of the *input* is replaced by the same box of the other resolution, either the
  HR patch pasted into the (upsampled) LR input or the LR patch pasted into the HR image. The box
  side is ``(alpha + 0.01 N(0, 1))`` times the image side. The target is unchanged. CutBlur
  needs LQ and GT at the same resolution: pass an upsampled LQ, or set ``cutblur_upsample`` to
  have the LQ upsampled (MATLAB bicubic) to the GT size; either way the model must then take
  HR-sized inputs.
"""

from __future__ import annotations

import torch
from kornia.geometry.transform import hflip, vflip
from torch import Tensor, nn

from sr_cli.degradations.base import Params
from sr_cli.degradations.functional import check_prob, rand, randperm
from sr_cli.degradations.resize import imresize
from sr_cli.errors import ConfigError


def sample_beta(
    alpha: float, n: int, generator: torch.Generator | None, device: torch.device | str
) -> Tensor:
    """``Beta(alpha, alpha)`` samples from uniforms only (Johnk's rejection method).

    ``torch.distributions.Beta`` cannot take a generator; this can, and is exact.
    """
    out = torch.full((n,), 0.5)
    done = torch.zeros(n, dtype=torch.bool)
    for _ in range(1000):
        if bool(done.all()):
            break
        u = rand(n, generator, "cpu").double()
        v = rand(n, generator, "cpu").double()
        x, y = u.pow(1.0 / alpha), v.pow(1.0 / alpha)
        ok = (x + y <= 1.0) & (x + y > 0) & ~done
        out = torch.where(ok, (x / (x + y).clamp(min=1e-300)).float(), out)
        done |= ok
    return out.to(device)


def _where(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    return torch.where(mask.view(-1, 1, 1, 1), a, b)


class PairedAugment(nn.Module):
    """Augment ``(lq, gt)`` batches identically per pair.

    Args:
        hflip: random horizontal flips.
        vflip: random vertical flips.
        rot90: random transposes (with the flips: all rotations by multiples of 90 degrees);
            skipped for non-square images.
        mixup_prob: probability that a sample is mixed with another one of the batch.
        mixup_alpha: Beta parameter of the mixing weight (1.2 in Yoo et al.).
        cutblur_prob: probability of CutBlur per sample.
        cutblur_alpha: relative side of the CutBlur box (0.7 in Yoo et al.).
        cutblur_upsample: upsample the LQ to the GT size when they differ (only when
            ``cutblur_prob > 0``); otherwise differing sizes are an error.

    Shape:
        ``lq``: ``(B, C, h, w)``, ``gt``: ``(B, C, H, W)`` -> the same shapes (``lq`` becomes
        ``(B, C, H, W)`` with ``cutblur_upsample``).

    Example:
        >>> aug = PairedAugment()
        >>> lq, gt = aug(torch.rand(2, 3, 8, 8), torch.rand(2, 3, 16, 16), torch.Generator())
    """

    def __init__(
        self,
        hflip: bool = True,
        vflip: bool = True,
        rot90: bool = True,
        mixup_prob: float = 0.0,
        mixup_alpha: float = 1.2,
        cutblur_prob: float = 0.0,
        cutblur_alpha: float = 0.7,
        cutblur_upsample: bool = False,
    ) -> None:
        super().__init__()
        self.hflip, self.vflip, self.rot90 = bool(hflip), bool(vflip), bool(rot90)
        self.mixup_prob = check_prob("PairedAugment.mixup_prob", mixup_prob)
        if mixup_alpha <= 0:
            raise ConfigError(f"PairedAugment.mixup_alpha must be positive, got {mixup_alpha}")
        self.mixup_alpha = float(mixup_alpha)
        self.cutblur_prob = check_prob("PairedAugment.cutblur_prob", cutblur_prob)
        if not 0.0 < cutblur_alpha <= 1.0:
            raise ConfigError(f"PairedAugment.cutblur_alpha must be in (0, 1], got {cutblur_alpha}")
        self.cutblur_alpha = float(cutblur_alpha)
        self.cutblur_upsample = bool(cutblur_upsample)

    def sample(self, n: int, device: torch.device | str, generator=None) -> Params:
        """Per-sample choices (every draw is made whatever the options, for a stable stream)."""
        p: Params = {
            "hflip": rand(n, generator, device) < 0.5,
            "vflip": rand(n, generator, device) < 0.5,
            "transpose": rand(n, generator, device) < 0.5,
            "mixup": rand(n, generator, device) < self.mixup_prob,
            "mixup_lam": sample_beta(self.mixup_alpha, n, generator, device),
            "mixup_perm": randperm(n, generator).to(device),
            "cutblur": rand(n, generator, device) < self.cutblur_prob,
            "cutblur_hr_into_lr": rand(n, generator, device) < 0.5,
        }
        # Box side ratio alpha + 0.01 N(0, 1) (Box-Muller from two uniforms), and its position.
        u1 = rand(n, generator, device).clamp(min=1e-7)
        u2 = rand(n, generator, device)
        normal = torch.sqrt(-2 * torch.log(u1)) * torch.cos(2 * torch.pi * u2)
        p["cutblur_ratio"] = (self.cutblur_alpha + 0.01 * normal).clamp(0.01, 1.0)
        p["cutblur_pos"] = rand((n, 2), generator, device)
        return p

    def _dihedral(self, x: Tensor, p: Params, square: bool) -> Tensor:
        if self.hflip:
            x = _where(p["hflip"], hflip(x), x)
        if self.vflip:
            x = _where(p["vflip"], vflip(x), x)
        if self.rot90 and square:
            x = _where(p["transpose"], x.transpose(-1, -2), x)
        return x

    def dihedral_regions(self, regions: Tensor, boxes: Tensor, p: Params) -> tuple[Tensor, Tensor]:
        """The flips/rotations of ``p`` applied to square context regions ``(B, C, S, S)`` (each
        patch centred in its region, so the transformed patch is the centre of the transformed
        region) and to their valid boxes ``(B, 4)`` ``(top, bottom, left, right)``."""
        side = regions.shape[-1]
        top, bottom, left, right = boxes.unbind(-1)
        if self.hflip:
            flip = p["hflip"]
            regions = _where(flip, hflip(regions), regions)
            left, right = (
                torch.where(flip, side - right, left),
                torch.where(flip, side - left, right),
            )
        if self.vflip:
            flip = p["vflip"]
            regions = _where(flip, vflip(regions), regions)
            top, bottom = (
                torch.where(flip, side - bottom, top),
                torch.where(flip, side - top, bottom),
            )
        if self.rot90:
            swap = p["transpose"]
            regions = _where(swap, regions.transpose(-1, -2), regions)
            top, bottom, left, right = (
                torch.where(swap, left, top),
                torch.where(swap, right, bottom),
                torch.where(swap, top, left),
                torch.where(swap, bottom, right),
            )
        return regions, torch.stack([top, bottom, left, right], dim=-1)

    def dihedral(self, x: Tensor, p: Params) -> Tensor:
        """The flips/rotations of ``p`` (square images; see :meth:`dihedral_regions`)."""
        return self._dihedral(x, p, square=x.shape[-1] == x.shape[-2])

    @staticmethod
    def without_dihedral(p: Params) -> Params:
        """``p`` with no flip or rotation left (what remains: mixup, CutBlur)."""
        return {
            **p,
            **{k: torch.zeros_like(p[k]) for k in ("hflip", "vflip", "transpose")},
        }

    def _cutblur(self, lq: Tensor, gt: Tensor, p: Params) -> Tensor:
        b, _, h, w = gt.shape
        ch = (p["cutblur_ratio"] * h).long().clamp(1, h)
        cw = (p["cutblur_ratio"] * w).long().clamp(1, w)
        y0 = (p["cutblur_pos"][:, 0] * (h - ch + 1).float()).long()
        x0 = (p["cutblur_pos"][:, 1] * (w - cw + 1).float()).long()
        ys = torch.arange(h, device=gt.device).view(1, h, 1)
        xs = torch.arange(w, device=gt.device).view(1, 1, w)
        box = (
            (ys >= y0.view(-1, 1, 1))
            & (ys < (y0 + ch).view(-1, 1, 1))
            & (xs >= x0.view(-1, 1, 1))
            & (xs < (x0 + cw).view(-1, 1, 1))
        ).unsqueeze(1)  # (B, 1, H, W)
        # HR patch into the LR input, or the LR patch into the HR image.
        hr_into_lr = p["cutblur_hr_into_lr"].view(-1, 1, 1, 1)
        inside = torch.where(hr_into_lr, gt, lq)
        outside = torch.where(hr_into_lr, lq, gt)
        mixed = torch.where(box, inside, outside)
        return _where(p["cutblur"], mixed, lq)

    def forward(
        self,
        lq: Tensor,
        gt: Tensor,
        generator: torch.Generator | None = None,
        params: Params | None = None,
    ) -> tuple[Tensor, Tensor]:
        if lq.shape[0] != gt.shape[0]:
            raise ValueError(f"lq and gt batch sizes differ: {lq.shape[0]} vs {gt.shape[0]}")
        if self.cutblur_prob > 0 and lq.shape[-2:] != gt.shape[-2:]:
            if not self.cutblur_upsample:
                raise ConfigError(
                    f"CutBlur needs LQ and GT at the same resolution, got {tuple(lq.shape[-2:])} "
                    f"and {tuple(gt.shape[-2:])}; set cutblur_upsample=true (the model must then "
                    "take HR-sized inputs) or cutblur_prob=0"
                )
            lq = imresize(lq, size=tuple(gt.shape[-2:]))
        p = self.sample(gt.shape[0], gt.device, generator) if params is None else params
        square = lq.shape[-1] == lq.shape[-2] and gt.shape[-1] == gt.shape[-2]
        lq, gt = self._dihedral(lq, p, square), self._dihedral(gt, p, square)
        if self.mixup_prob > 0:
            lam = torch.where(p["mixup"], p["mixup_lam"], torch.ones_like(p["mixup_lam"]))
            lam = lam.view(-1, 1, 1, 1)
            perm = p["mixup_perm"]
            lq = lam.to(lq.dtype) * lq + (1 - lam.to(lq.dtype)) * lq[perm]
            gt = lam.to(gt.dtype) * gt + (1 - lam.to(gt.dtype)) * gt[perm]
        if self.cutblur_prob > 0:
            lq = self._cutblur(lq, gt, p)
        return lq, gt

    def extra_repr(self) -> str:
        return (
            f"hflip={self.hflip}, vflip={self.vflip}, rot90={self.rot90}, "
            f"mixup_prob={self.mixup_prob}, cutblur_prob={self.cutblur_prob}"
        )
