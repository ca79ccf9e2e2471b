"""sr-cli's own architectures, recognised from the keys and tensor shapes of a state dict.

For each architecture, :data:`ARCHITECTURES` holds the keys that identify it (in sr-cli's key
layout, see :mod:`sr_cli.models.layouts`) and a function that reads the hyper-parameters back
from the shapes: widths, depths, growth, upsampler and scale. What shapes cannot tell is
assumed, and said so (``assumed``):

* ``img_range=255`` for EDSR and RCAN (every published EDSR/RCAN), EDSR's residual scaling
  (0.1 for 256 features, as published, else 1), ESPCN's tanh, zero padding for RRDBNet;
* the scale of networks whose weights do not depend on it (SRCNN and VDSR, which upscale with
  bicubic first; a transposed-conv or nearest+conv upsampler whose stride is not stored;
  RRDBNet's x3 and x4 share their shapes): it comes from the caller's hint (a command's
  ``scale``, the file name's ``x3``/``4x``) among the scales the shapes allow, else the
  published one where there is one (RRDBNet: x4), else detection says what to do.

A leaf module: it knows only the names of sr-cli's factories, not their code.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

SD = Mapping[str, Tensor]


class NotThis(Exception):
    """The keys looked like this architecture but the shapes say otherwise (with the reason)."""


@dataclass
class Inferred:
    """Hyper-parameters read from a state dict."""

    args: dict[str, Any]
    #: The scales the shapes allow (one when the shapes tell it).
    scales: tuple[int, ...]
    #: Arguments that were assumed, not read from the shapes.
    assumed: tuple[str, ...] = ()
    #: The scale to take when the caller gives no hint (``None``: ask).
    default_scale: int | None = None


@dataclass(frozen=True)
class Architecture:
    """One of sr-cli's architectures as detection sees it."""

    name: str  # display name, as tables show it
    config: str  # conf/model/<config>.yaml
    factory: str  # the sr-cli factory a description names
    preset: str  # preset whose values the inferred arguments override
    signature: tuple[str, ...]  # keys that identify it
    infer: Callable[[SD], Inferred]
    forbidden: tuple[str, ...] = field(default=())  # keys it never has


def _idx(sd: SD, pattern: str) -> list[int]:
    return sorted({int(m[1]) for k in sd if (m := re.match(pattern, k))})


def _w(sd: SD, key: str) -> tuple[int, ...]:
    return tuple(sd[key].shape)


def _pow2_steps(n: int) -> int:
    return 2**n


def _square_ratio(big: int, small: int) -> int | None:
    if small <= 0 or big % small:
        return None
    r = math.isqrt(big // small)
    return r if r * r == big // small and r > 1 else None


def _upsample_block(sd: SD, prefix: str, nf: int) -> tuple[str, tuple[int, ...]]:
    """Upsampler of :class:`~sr_cli.models.common.Upsample` under ``prefix``: (mode, scales)."""
    idx = _idx(sd, rf"^{re.escape(prefix)}\.(\d+)\.weight$")
    if not idx:
        raise NotThis(f"no {prefix}.* upsampler weights")
    if idx[0] % 2 == 1:  # [nn.Upsample, conv] per step
        return "nearest+conv", (2, 3) if len(idx) == 1 else (_pow2_steps(len(idx)),)
    shapes = [_w(sd, f"{prefix}.{i}.weight") for i in idx]
    if all(s[-1] == 3 for s in shapes):
        ratios = [_square_ratio(s[0], nf) for s in shapes]
        mode = "pixelshuffle"
    else:  # transposed convs, kernel 2r
        ratios = [s[-1] // 2 for s in shapes]
        mode = "transposed"
    if ratios == [3]:
        return mode, (3,)
    if ratios and all(r == 2 for r in ratios):
        return mode, (_pow2_steps(len(ratios)),)
    raise NotThis(f"{prefix}.* has upsampling steps {ratios}, not x2 steps or one x3 step")


def _image_upsampler(sd: SD, in_feat: int, out_ch: int) -> tuple[str, tuple[int, ...], int]:
    """Upsampler of :func:`~sr_cli.models.layers.image_upsampler`: (mode, scales, kernel)."""
    if "upsample.1.weight" in sd:
        return "nearest+conv", (2, 3, 4), _w(sd, "upsample.1.weight")[-1]
    if "upsample.0.weight" not in sd:
        raise NotThis("no upsample.* weights")
    s = _w(sd, "upsample.0.weight")
    r = _square_ratio(s[0], out_ch) if s[1] == in_feat else None
    if r is not None:
        return "pixelshuffle", (r,), s[-1]
    if s[0] == in_feat and s[1] == out_ch:
        return "transposed", (2, 3, 4), s[-1]
    raise NotThis(f"upsample.0.weight has shape {s}, which fits no upsampler")


# ------------------------------------------------------------------ the architectures
def _rrdbnet(sd: SD) -> Inferred:
    if "conv_up3.weight" in sd:
        raise NotThis("an x8 RRDBNet (conv_up3), which sr-cli's RRDBNet does not build")
    nf, c_in = _w(sd, "conv_first.weight")[:2]
    out = _w(sd, "conv_last.weight")[0]
    up = (_w(sd, "conv_up1.weight")[0], _w(sd, "conv_up2.weight")[0])
    args = {
        "num_feat": nf,
        "num_block": len(_idx(sd, r"^body\.(\d+)\.rdb1\.conv1\.weight$")),
        "num_grow_ch": _w(sd, "body.0.rdb1.conv1.weight")[0],
        "num_out_ch": out,
        "upsampler": "nearest+conv" if up == (nf, nf) else "pixelshuffle",
    }
    if up not in ((nf, nf), (4 * nf, 4 * nf), (9 * nf, nf)):
        raise NotThis(f"conv_up1/conv_up2 make {up} features from {nf}: no upsampler of RRDBNet")
    for scale, fold in ((1, 16), (2, 4)):  # pixel-unshuffle folds the input (Real-ESRGAN x2)
        if c_in == fold * out and up[0] != 9 * nf:
            return Inferred({**args, "num_in_ch": out}, (scale,), assumed=("padding_mode",))
    args["num_in_ch"] = c_in
    if up != (nf, nf):  # a pixel shuffle stores its factors: x3 then x1, or x2 twice
        return Inferred(args, (3 if up[0] == 9 * nf else 4,), assumed=("padding_mode",))
    return Inferred(args, (3, 4), assumed=("padding_mode",), default_scale=4)


def _msrresnet(sd: SD) -> Inferred:
    nf = _w(sd, "conv_first.weight")[0]
    up = [_w(sd, k) for k in ("upconv1.weight", "upconv2.weight") if k in sd]
    args = {
        "num_feat": nf,
        "num_block": len(_idx(sd, r"^body\.(\d+)\.conv1\.weight$")),
        "num_in_ch": _w(sd, "conv_first.weight")[1],
        "num_out_ch": _w(sd, "conv_last.weight")[0],
    }
    if up[0][-1] != 3:  # transposed, kernel 2r
        ratios, mode = [s[-1] // 2 for s in up], "transposed"
    elif up[0][0] == nf:
        mode = "nearest+conv"
        return Inferred({**args, "upsampler": mode}, (4,) if len(up) == 2 else (2, 3))
    else:
        ratios, mode = [_square_ratio(s[0], nf) for s in up], "pixelshuffle"
    if ratios not in ([2, 2], [2], [3]):
        raise NotThis(f"upconv steps {ratios} are not x2, x3 or x2 x2")
    return Inferred({**args, "upsampler": mode}, (math.prod(ratios),))


def _edsr(sd: SD) -> Inferred:
    nf = _w(sd, "conv_first.weight")[0]
    mode, scales = _upsample_block(sd, "upsample", nf)
    args = {
        "num_feat": nf,
        "num_block": len(_idx(sd, r"^body\.(\d+)\.conv1\.weight$")),
        "num_in_ch": _w(sd, "conv_first.weight")[1],
        "num_out_ch": _w(sd, "conv_last.weight")[0],
        "upsampler": mode,
        # The published EDSR (32 blocks x 256 features) scales its residuals by 0.1.
        "res_scale": 0.1 if nf >= 256 else 1.0,
        "img_range": 255.0,
    }
    return Inferred(args, scales, assumed=("res_scale", "img_range"))


def _rcan(sd: SD) -> Inferred:
    nf = _w(sd, "conv_first.weight")[0]
    mode, scales = _upsample_block(sd, "upsample", nf)
    squeeze = _w(sd, "body.0.residual_group.0.rcab.3.attention.1.weight")[0]
    args = {
        "num_feat": nf,
        "num_group": len(_idx(sd, r"^body\.(\d+)\.conv\.weight$")),
        "num_block": len(_idx(sd, r"^body\.0\.residual_group\.(\d+)\.rcab\.0\.weight$")),
        "reduction": nf // squeeze,
        "num_in_ch": _w(sd, "conv_first.weight")[1],
        "num_out_ch": _w(sd, "conv_last.weight")[0],
        "upsampler": mode,
        "img_range": 255.0,
    }
    return Inferred(args, scales, assumed=("img_range",))


def _swinir(sd: SD) -> Inferred:
    if "absolute_pos_embed" in sd:
        raise NotThis("absolute position embeddings (ape=True), which sr-cli's SwinIR lacks")
    dim, c_in = _w(sd, "conv_first.weight")[:2]
    layers = _idx(sd, r"^layers\.(\d+)\.residual_group\.blocks\.0\.norm1\.weight$")
    depths, heads = [], []
    for i in layers:
        depths.append(
            len(_idx(sd, rf"^layers\.{i}\.residual_group\.blocks\.(\d+)\.norm1\.weight$"))
        )
        table = _w(sd, f"layers.{i}.residual_group.blocks.0.attn.relative_position_bias_table")
        heads.append(table[1])
    side = math.isqrt(table[0])
    if side * side != table[0] or side % 2 == 0:
        raise NotThis(f"a relative position table of {table[0]} rows is no (2w-1)^2 window")
    hidden = _w(sd, "layers.0.residual_group.blocks.0.mlp.fc1.weight")[0]
    args: dict[str, Any] = {
        "embed_dim": dim,
        "depths": depths,
        "num_heads": heads,
        "window_size": (side + 1) // 2,
        "mlp_ratio": hidden / dim,
        "num_in_ch": c_in,
        "resi_connection": "3conv" if "layers.0.conv.0.weight" in sd else "1conv",
    }
    if "conv_before_upsample.0.weight" not in sd:  # one conv + pixel shuffle
        r = _square_ratio(_w(sd, "upsample.0.weight")[0], c_in)
        if r is None:
            raise NotThis(f"upsample.0.weight {_w(sd, 'upsample.0.weight')} is no pixel shuffle")
        return Inferred({**args, "upsampler": "pixelshuffledirect", "num_out_ch": c_in}, (r,))
    nf = _w(sd, "conv_before_upsample.0.weight")[0]
    args.update(num_feat=nf, num_out_ch=_w(sd, "conv_last.weight")[0])
    ups = _idx(sd, r"^conv_up(\d+)\.weight$")
    if ups:
        scales = (2, 3) if len(ups) == 1 else (_pow2_steps(len(ups)),)
        return Inferred({**args, "upsampler": "nearest+conv"}, scales)
    mode, scales = _upsample_block(sd, "upsample", nf)
    return Inferred({**args, "upsampler": mode}, scales)


def _kernel(sd: SD, key: str) -> int:
    return _w(sd, key)[-1]


def _srcnn(sd: SD) -> Inferred:
    (n1, c_in, f1, _), (n2, _, f2, _) = _w(sd, "conv1.weight"), _w(sd, "conv2.weight")
    out, _, f3, _ = _w(sd, "conv3.weight")
    args = dict(n1=n1, n2=n2, f1=f1, f2=f2, f3=f3, num_in_ch=c_in, num_out_ch=out)
    return Inferred(args, (2, 3, 4))


def _vdsr(sd: SD) -> Inferred:
    nf, c_in = _w(sd, "conv_first.weight")[:2]
    convs = _idx(sd, r"^body\.(\d+)\.weight$")
    args = {
        "num_feat": nf,
        "num_layers": len(convs) + 2,
        "bias": "conv_first.bias" in sd,
        "num_in_ch": c_in,
        "num_out_ch": _w(sd, "conv_last.weight")[0],
    }
    return Inferred(args, (2, 3, 4))


def _espcn(sd: SD) -> Inferred:
    (n1, c_in, f1, _), (n2, _, f2, _) = _w(sd, "conv1.weight"), _w(sd, "conv2.weight")
    mode, scales, f3 = _image_upsampler(sd, n2, c_in)
    args = dict(n1=n1, n2=n2, f1=f1, f2=f2, f3=f3, num_in_ch=c_in, num_out_ch=c_in)
    return Inferred({**args, "act": "tanh", "upsampler": mode}, scales, assumed=("act",))


def _fsrcnn(sd: SD) -> Inferred:
    d, c_in = _w(sd, "feature.0.weight")[:2]
    mode, scales, kernel = _image_upsampler(sd, d, c_in)
    if kernel != 9:
        raise NotThis(f"an upsampler kernel of {kernel}, where FSRCNN's is 9")
    args = {
        "d": d,
        "s": _w(sd, "shrink.0.weight")[0],
        "m": len(_idx(sd, r"^mapping\.(\d+)\.0\.weight$")),
        "num_in_ch": c_in,
        "num_out_ch": c_in,
        "upsampler": mode,
    }
    return Inferred(args, scales)


def _lapsrn(sd: SD) -> Inferred:
    nf, c_in = _w(sd, "conv_first.weight")[:2]
    levels = _idx(sd, r"^levels\.(\d+)\.to_residual\.weight$")
    layers = _idx(sd, r"^levels\.0\.features\.(\d+)\.weight$")
    args = {"num_feat": nf, "depth": len(layers) - 1, "num_in_ch": c_in}
    return Inferred(args, (_pow2_steps(len(levels)),))


_DBPN_KERNEL = {6: 2, 8: 4, 12: 8}


def _dbpn(sd: SD) -> Inferred:
    feat, c_in = _w(sd, "feat0.conv.weight")[:2]
    kernel = _kernel(sd, "up1.up_conv1.deconv.weight")
    if kernel not in _DBPN_KERNEL:
        raise NotThis(f"projection kernel {kernel} is none of D-DBPN's (6, 8, 12)")
    args = {
        "base_filter": _w(sd, "feat1.conv.weight")[0],
        "feat": feat,
        "num_stages": len(_idx(sd, r"^up(\d+)\.up_conv1\.deconv\.weight$")),
        "num_in_ch": c_in,
        "num_out_ch": _w(sd, "output_conv.conv.weight")[0],
    }
    return Inferred(args, (_DBPN_KERNEL[kernel],))


def _arch(name, config, module, factory, preset, signature, infer, forbidden=()):
    return Architecture(
        name=name,
        config=config,
        factory=f"sr_cli.models.{module}.{factory}",
        preset=preset,
        signature=tuple(signature),
        infer=infer,
        forbidden=tuple(forbidden),
    )


#: Tried in this order; the signatures do not overlap.
ARCHITECTURES: tuple[Architecture, ...] = (
    _arch(
        "ESRGAN", "esrgan", "rrdbnet", "rrdbnet", "paper",
        ("conv_first.weight", "body.0.rdb1.conv1.weight", "conv_body.weight", "conv_up1.weight"),
        _rrdbnet,
    ),
    _arch(
        "MSRResNet", "msrresnet", "srresnet", "msrresnet", "paper",
        ("conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight"),
        _msrresnet,
    ),
    _arch(
        "RCAN", "rcan", "rcan", "rcan", "paper",
        ("conv_first.weight", "body.0.residual_group.0.rcab.0.weight", "conv_after_body.weight"),
        _rcan,
    ),
    _arch(
        "EDSR", "edsr", "edsr", "edsr", "baseline",
        ("conv_first.weight", "body.0.conv1.weight", "conv_after_body.weight", "conv_last.weight"),
        _edsr,
    ),
    _arch(
        "SwinIR", "swinir", "swinir", "swinir", "paper",
        (
            "conv_first.weight",
            "patch_embed.norm.weight",
            "layers.0.residual_group.blocks.0.attn.relative_position_bias_table",
        ),
        _swinir,
    ),
    _arch(
        "SRCNN", "srcnn", "srcnn", "srcnn", "paper",
        ("conv1.weight", "conv2.weight", "conv3.weight"),
        _srcnn,
        forbidden=("upsample.0.weight", "upsample.1.weight", "conv4.weight"),
    ),
    _arch(
        "ESPCN", "espcn", "espcn", "espcn", "paper",
        ("conv1.weight", "conv2.weight"),
        _espcn,
        forbidden=("conv3.weight",),
    ),
    _arch(
        "VDSR", "vdsr", "vdsr", "vdsr", "paper",
        ("conv_first.weight", "body.0.weight", "conv_last.weight"),
        _vdsr,
        forbidden=("body.0.conv1.weight", "conv_after_body.weight"),
    ),
    _arch(
        "FSRCNN", "fsrcnn", "fsrcnn", "fsrcnn", "paper",
        ("feature.0.weight", "shrink.0.weight", "expand.0.weight"),
        _fsrcnn,
    ),
    _arch(
        "LapSRN", "lapsrn", "lapsrn", "lapsrn", "paper",
        ("conv_first.weight", "levels.0.features.0.weight", "levels.0.to_residual.weight"),
        _lapsrn,
    ),
    _arch(
        "D-DBPN", "dbpn", "dbpn", "dbpn", "paper",
        ("feat0.conv.weight", "feat1.conv.weight", "up1.up_conv1.deconv.weight"),
        _dbpn,
    ),
)  # fmt: skip


def candidates(sd: SD) -> list[Architecture]:
    """The architectures whose identifying keys ``sd`` has."""
    return [
        a
        for a in ARCHITECTURES
        if all(k in sd for k in a.signature) and not any(k in sd for k in a.forbidden)
    ]


_NAME_SCALE = re.compile(r"(?i)(?<![0-9a-wyz])x([1-8])(?![0-9])|(?<![0-9])([1-8])x(?![a-z0-9])")


def scale_from_name(name: str) -> int | None:
    """The scale a file name states (``srcnn_x3.pth``, ``4x-Model.pth``, ``EDSR_Mx2_f64``)."""
    found = {int(a or b) for a, b in _NAME_SCALE.findall(name)}
    return found.pop() if len(found) == 1 else None
