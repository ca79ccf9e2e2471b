"""SwinIR: image restoration with residual Swin Transformer blocks.

Liang et al., "SwinIR: Image Restoration Using Swin Transformer", ICCV Workshops 2021
(arXiv:2108.10257). A 3x3 conv extracts shallow features; residual Swin Transformer blocks
(RSTB: ``depth`` Swin layers of (shifted) window self-attention with a learned relative
position bias, then a conv, with a residual skip) extract deep features; a conv and a global
skip close the body, and an upsampler reconstructs the image.

Configurations from the paper:

* classical SR (``paper``): embed dim 180, 6 RSTBs of 6 layers, 6 heads, window 8, MLP ratio
  2, ``pixelshuffle`` upsampler with 64 features (11.9M parameters at x4);
* lightweight SR (``light``): embed dim 60, 4 RSTBs of 6 layers, 6 heads,
  ``pixelshuffledirect`` (one conv + pixel shuffle; 0.90M at x4 without the relative position
  bias tables, 0.93M with them);
* real-world SR (``real``): the classical body with the ``nearest+conv`` upsampler.

Inputs whose size is not a multiple of the window are reflect-padded and the output is
cropped back. State-dict keys follow the official release (``conv_first``,
``patch_embed.norm``, ``layers.{i}.residual_group.blocks.{j}.attn.relative_position_bias_table``,
``...attn.qkv``, ``...mlp.fc1``, ``layers.{i}.conv``, ``norm``, ``conv_after_body``,
``conv_before_upsample.0``, ``upsample.{j}``, ``conv_last``). The official checkpoints also
store the derivable buffers ``relative_position_index`` and ``attn_mask``; here they are not
persistent and :func:`sr_cli.models.pretrained.load_pretrained` drops them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sr_cli.errors import ConfigError
from sr_cli.models.common import Upsample, check_scale, resolve_preset
from sr_cli.models.layers import DropPath

#: DIV2K RGB mean, subtracted before the first conv as in the official SwinIR.
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)

SWINIR_UPSAMPLERS = ("pixelshuffle", "pixelshuffledirect", "nearest+conv")

PRESETS = {
    "paper": dict(
        embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=8, mlp_ratio=2.0,
        upsampler="pixelshuffle",
    ),
    "light": dict(
        embed_dim=60, depths=(6,) * 4, num_heads=(6,) * 4, window_size=8, mlp_ratio=2.0,
        upsampler="pixelshuffledirect",
    ),
    "real": dict(
        embed_dim=180, depths=(6,) * 6, num_heads=(6,) * 6, window_size=8, mlp_ratio=2.0,
        upsampler="nearest+conv",
    ),
    "small": dict(
        embed_dim=24, depths=(2, 2), num_heads=(2, 2), window_size=8, mlp_ratio=2.0,
        upsampler="pixelshuffle", num_feat=16,
    ),
}  # fmt: skip


def window_partition(x: Tensor, w: int) -> Tensor:
    """``(B, H, W, C) -> (B * H/w * W/w, w * w, C)``."""
    b, h, wd, c = x.shape
    x = x.view(b, h // w, w, wd // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def window_reverse(windows: Tensor, w: int, h: int, wd: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, w * w, C) -> (B, H, W, C)``."""
    c = windows.shape[-1]
    b = windows.shape[0] // ((h // w) * (wd // w))
    x = windows.view(b, h // w, wd // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, wd, c)


def relative_position_index(w: int) -> Tensor:
    """``(w*w, w*w)`` index into the ``(2w-1)^2`` relative position bias table (Swin layout)."""
    coords = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (w - 1)
    return rel[..., 0] * (2 * w - 1) + rel[..., 1]


def shifted_window_mask(h: int, wd: int, w: int, shift: int, device: torch.device) -> Tensor:
    """``(nW, w*w, w*w)`` additive mask (0 or -100) keeping attention inside shifted regions."""
    labels = torch.zeros(1, h, wd, 1, device=device)
    cuts = (slice(0, -w), slice(-w, -shift), slice(-shift, None))
    n = 0
    for hs in cuts:
        for ws in cuts:
            labels[:, hs, ws, :] = n
            n += 1
    lw = window_partition(labels, w).squeeze(-1)
    diff = lw[:, None, :] - lw[:, :, None]
    return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a relative position bias."""

    def __init__(self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) ** 2, num_heads)
        )
        self.register_buffer(
            "relative_position_index", relative_position_index(window_size), persistent=False
        )
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        bw, n, c = x.shape
        qkv = (
            self.qkv(x)
            .reshape(bw, n, 3, self.num_heads, c // self.num_heads)
            .permute(2, 0, 3, 1, 4)
        )
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(bw // nw, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        attn = attn.softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(bw, n, c))


class Mlp(nn.Module):
    """Two linear layers with GELU (keys ``fc1``, ``fc2``)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    """Pre-norm (shifted) window attention + MLP, each with a residual."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self._masks: dict[tuple, Tensor] = {}

    def _mask(self, h: int, w: int, device: torch.device) -> Tensor:
        key = (h, w, device)
        if key not in self._masks:
            if len(self._masks) > 16:
                self._masks.clear()
            self._masks[key] = shifted_window_mask(h, w, self.window_size, self.shift_size, device)
        return self._masks[key]

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        h, w = x_size
        b, _, c = x.shape
        ws, s = self.window_size, self.shift_size
        y = self.norm1(x).view(b, h, w, c)
        mask = None
        if s > 0:
            y = torch.roll(y, shifts=(-s, -s), dims=(1, 2))
            mask = self._mask(h, w, x.device).to(x.dtype)
        y = window_reverse(self.attn(window_partition(y, ws), mask), ws, h, w)
        if s > 0:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        x = x + self.drop_path(y.reshape(b, h * w, c))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class BasicLayer(nn.Module):
    """A stack of Swin blocks alternating regular and shifted windows (key ``blocks``)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
    ) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim,
                    num_heads,
                    window_size,
                    0 if i % 2 == 0 else window_size // 2,
                    mlp_ratio,
                    drop_path[i],
                )
                for i in range(depth)
            ]
        )

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        for blk in self.blocks:
            x = blk(x, x_size)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer block: Swin layers, a conv, and a skip over both."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_path: Sequence[float],
        resi_connection: str = "1conv",
    ) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, num_heads, window_size, mlp_ratio, drop_path)
        if resi_connection == "1conv":
            self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        elif resi_connection == "3conv":
            self.conv = nn.Sequential(
                nn.Conv2d(dim, dim // 4, 3, 1, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(dim // 4, dim // 4, 1, 1, 0),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(dim // 4, dim, 3, 1, 1),
            )
        else:
            raise ConfigError(
                f"resi_connection must be '1conv' or '3conv', got {resi_connection!r}."
            )

    def forward(self, x: Tensor, x_size: tuple[int, int]) -> Tensor:
        b, _, c = x.shape
        y = self.residual_group(x, x_size).transpose(1, 2).reshape(b, c, *x_size)
        return x + self.conv(y).flatten(2).transpose(1, 2)


class PatchEmbed(nn.Module):
    """Image to token sequence (1x1 patches) with a LayerNorm (key ``patch_embed.norm``)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


def _pad_to_multiple(x: Tensor, m: int) -> Tensor:
    h, w = x.shape[-2:]
    ph, pw = (-h) % m, (-w) % m
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return F.pad(x, (0, pw, 0, ph), mode=mode)


class SwinIR(nn.Module):
    """SwinIR generator for super-resolution.

    Args:
        scale: 2, 3, 4 or 8.
        num_in_ch, num_out_ch: image channels.
        embed_dim: token dimension (180 classical, 60 lightweight).
        depths: Swin layers per RSTB (``[6] * 6`` classical, ``[6] * 4`` lightweight).
        num_heads: attention heads per RSTB.
        window_size: attention window (8); inputs are padded to a multiple of it.
        mlp_ratio: MLP hidden size relative to ``embed_dim`` (2).
        upsampler: ``pixelshuffle`` (classical), ``pixelshuffledirect`` (lightweight) or
            ``nearest+conv`` (real-world).
        num_feat: features of the ``pixelshuffle``/``nearest+conv`` reconstruction (64).
        resi_connection: ``1conv`` or ``3conv`` (the conv closing each RSTB).
        drop_path_rate: stochastic depth, linearly increasing over all layers (0.1).
        img_range: multiplier applied after the mean shift (1.0 for the SR models).

    Shape:
        ``(B, C, H, W) -> (B, C, H * scale, W * scale)`` for any ``H``, ``W``.
    """

    def __init__(
        self,
        scale: int = 4,
        num_in_ch: int = 3,
        num_out_ch: int = 3,
        embed_dim: int = 180,
        depths: Sequence[int] = (6, 6, 6, 6, 6, 6),
        num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
        window_size: int = 8,
        mlp_ratio: float = 2.0,
        upsampler: str = "pixelshuffle",
        num_feat: int = 64,
        resi_connection: str = "1conv",
        drop_path_rate: float = 0.1,
        img_range: float = 1.0,
    ) -> None:
        super().__init__()
        self.scale = check_scale("SwinIR", scale, (2, 3, 4, 8))
        depths, num_heads = list(depths), list(num_heads)
        if len(depths) != len(num_heads):
            raise ConfigError(f"SwinIR depths {depths} and num_heads {num_heads} differ in length.")
        if any(embed_dim % h for h in num_heads):
            raise ConfigError(
                f"SwinIR embed_dim={embed_dim} must be divisible by every num_heads {num_heads}."
            )
        if upsampler not in SWINIR_UPSAMPLERS:
            raise ConfigError(
                f"SwinIR upsampler must be one of {', '.join(SWINIR_UPSAMPLERS)}, got {upsampler!r}."
            )
        self.upsampler = upsampler
        self.window_size = window_size
        self.img_range = img_range
        mean = torch.tensor(DIV2K_MEAN if num_in_ch == 3 else (0.0,) * num_in_ch)
        self.register_buffer("mean", mean.view(1, -1, 1, 1), persistent=False)

        self.conv_first = nn.Conv2d(num_in_ch, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]
        self.layers = nn.ModuleList()
        start = 0
        for depth, heads in zip(depths, num_heads):
            self.layers.append(
                RSTB(
                    embed_dim,
                    depth,
                    heads,
                    window_size,
                    mlp_ratio,
                    dpr[start : start + depth],
                    resi_connection,
                )
            )
            start += depth
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = (
            nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
            if resi_connection == "1conv"
            else nn.Sequential(
                nn.Conv2d(embed_dim, embed_dim // 4, 3, 1, 1),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(embed_dim // 4, embed_dim // 4, 1, 1, 0),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(embed_dim // 4, embed_dim, 3, 1, 1),
            )
        )
        if upsampler == "pixelshuffledirect":
            self.upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_out_ch * self.scale**2, 3, 1, 1),
                nn.PixelShuffle(self.scale),
            )
        else:
            self.conv_before_upsample = nn.Sequential(
                nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True)
            )
            if upsampler == "pixelshuffle":
                self.upsample = Upsample(self.scale, num_feat, "pixelshuffle")
            else:
                self.up_steps = [3] if self.scale == 3 else [2] * int(math.log2(self.scale))
                for i in range(len(self.up_steps)):
                    self.add_module(f"conv_up{i + 1}", nn.Conv2d(num_feat, num_feat, 3, 1, 1))
                self.conv_hr = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
                self.lrelu = nn.LeakyReLU(0.2, inplace=True)
            self.conv_last = nn.Conv2d(num_feat, num_out_ch, 3, 1, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: Tensor) -> Tensor:
        b, c, h, w = x.shape
        x = self.patch_embed(x)
        for layer in self.layers:
            x = layer(x, (h, w))
        return self.norm(x).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = _pad_to_multiple(x, self.window_size)
        x = (x - self.mean) * self.img_range
        x = self.conv_first(x)
        x = x + self.conv_after_body(self.forward_features(x))
        if self.upsampler == "pixelshuffledirect":
            x = self.upsample(x)
        elif self.upsampler == "pixelshuffle":
            x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        else:
            x = self.conv_before_upsample(x)
            for i, r in enumerate(self.up_steps):
                conv = getattr(self, f"conv_up{i + 1}")
                x = self.lrelu(conv(F.interpolate(x, scale_factor=r, mode="nearest")))
            x = self.conv_last(self.lrelu(self.conv_hr(x)))
        x = x / self.img_range + self.mean
        return x[..., : h * self.scale, : w * self.scale]


def swinir(scale: int = 4, preset: str = "paper", **overrides) -> SwinIR:
    """SwinIR from a preset: ``paper`` (classical), ``light``, ``real`` or ``small`` (CPU)."""
    return SwinIR(scale=scale, **resolve_preset("SwinIR", PRESETS, preset, overrides))
