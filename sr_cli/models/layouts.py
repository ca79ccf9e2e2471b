"""Key layouts of published weights, renamed to sr-cli's (which is BasicSR's where BasicSR has
the architecture).

:func:`to_sr_cli_layout` recognises a foreign layout by its keys and renames it; the tensors
are never changed, except where a port shares one PReLU slope between all channels: it is
repeated per channel, which gives the same function. Layouts:

* the original ESRGAN release (``RRDB_ESRGAN_x4.pth``: ``model.0``, ``model.1.sub.{i}.RDB{j}``,
  ``model.3``/``6``/``8``/``10``) and the old BasicSR/mmsr RRDBNet (``RRDB_trunk``,
  ``trunk_conv``, ``upconv1``/``2``, ``HRconv``) -> :class:`~sr_cli.models.rrdbnet.RRDBNet`;
* the old BasicSR/mmsr MSRResNet (``recon_trunk``, ``HRconv``) ->
  :class:`~sr_cli.models.srresnet.MSRResNet`;
* the original EDSR release (``head.0``, ``body.{i}.body.{0,2}``, ``body.{N}``, ``tail``) ->
  :class:`~sr_cli.models.edsr.EDSR`; the original RCAN release (``head.0``,
  ``body.{g}.body.{b}.body.{0,2}``, ``...body.3.conv_du.{0,2}``, ``body.{g}.body.{B}``,
  ``body.{G}``, ``tail``) -> :class:`~sr_cli.models.rcan.RCAN`; their ``sub_mean``/``add_mean``
  constants are dropped (the models shift by the same DIV2K mean);
* the widely used PyTorch ports of the pre-2017 models, whose authors released Caffe,
  MatConvNet or Theano weights: FSRCNN and ESPCN of ``yjn870`` (``first_part``, ``mid_part``,
  ``last_part``), VDSR of ``twtygqyy`` (``input``, ``residual_layer.{i}.conv``, ``output``);
* official SwinIR files: the derivable buffers ``relative_position_index`` and ``attn_mask``
  are dropped;
* ``module.`` (DataParallel, the D-DBPN release) and ``netG.`` prefixes are stripped.

A leaf module: it imports nothing of sr-cli.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Mapping

from torch import Tensor

#: Buffers official SwinIR files carry that sr-cli derives instead.
DERIVED_BUFFERS = ("relative_position_index", "attn_mask")

_ESRGAN_RDB = re.compile(r"^model\.1\.sub\.(\d+)\.RDB(\d)\.conv(\d)\.0\.(weight|bias)$")
_ESRGAN_TRUNK = re.compile(r"^model\.1\.sub\.(\d+)\.(weight|bias)$")
_ESRGAN_TOP = {
    "model.0": "conv_first",
    "model.3": "conv_up1",
    "model.6": "conv_up2",
    "model.8": "conv_hr",
    "model.10": "conv_last",
}


def convert_esrgan_original(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Original ESRGAN (``model.*``) keys -> RRDBNet keys."""
    out = {}
    for k, v in sd.items():
        if m := _ESRGAN_RDB.match(k):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
        elif m := _ESRGAN_TRUNK.match(k):
            out[f"conv_body.{m[2]}"] = v
        else:
            base, _, param = k.rpartition(".")
            out[f"{_ESRGAN_TOP.get(base, base)}.{param}"] = v
    return out


_OLD_TOP = {"trunk_conv": "conv_body", "upconv1": "conv_up1", "upconv2": "conv_up2"}


def convert_rrdb_old(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Old BasicSR/mmsr RRDBNet (``RRDB_trunk.{i}.RDB{j}``, ``trunk_conv``, ``upconv1``,
    ``HRconv``) -> RRDBNet keys."""
    out = {}
    for k, v in sd.items():
        if m := re.match(r"^RRDB_trunk\.(\d+)\.RDB(\d)\.conv(\d)\.(weight|bias)$", k):
            out[f"body.{m[1]}.rdb{m[2]}.conv{m[3]}.{m[4]}"] = v
            continue
        base, _, param = k.rpartition(".")
        base = "conv_hr" if base == "HRconv" else _OLD_TOP.get(base, base)
        out[f"{base}.{param}"] = v
    return out


def convert_msrresnet_old(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Old BasicSR/mmsr MSRResNet (``recon_trunk``, ``HRconv``) -> MSRResNet keys."""
    out = {}
    for k, v in sd.items():
        if k.startswith("recon_trunk."):
            k = "body." + k[len("recon_trunk.") :]
        elif k.startswith("HRconv."):
            k = "conv_hr." + k[len("HRconv.") :]
        out[k] = v
    return out


_EDSR_BLOCK = re.compile(r"^body\.(\d+)\.body\.([02])\.(weight|bias)$")
_EDSR_TRUNK = re.compile(r"^body\.(\d+)\.(weight|bias)$")
_TAIL_UP = re.compile(r"^tail\.0\.(\d+)\.(weight|bias)$")


def _head_tail(k: str) -> str | None:
    if m := _TAIL_UP.match(k):
        return f"upsample.{m[1]}.{m[2]}"
    if k.startswith("head.0."):
        return "conv_first." + k[len("head.0.") :]
    if k.startswith("tail.1."):
        return "conv_last." + k[len("tail.1.") :]
    return None


def convert_edsr_original(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Original EDSR (``head``/``body``/``tail``) keys -> EDSR keys; mean-shift constants dropped."""
    out = {}
    for k, v in sd.items():
        if k.startswith(("sub_mean.", "add_mean.")):
            continue
        if m := _EDSR_BLOCK.match(k):
            out[f"body.{m[1]}.conv{1 if m[2] == '0' else 2}.{m[3]}"] = v
        elif m := _EDSR_TRUNK.match(k):
            out[f"conv_after_body.{m[2]}"] = v
        else:
            out[_head_tail(k) or k] = v
    return out


_RCAN_CONV = re.compile(r"^body\.(\d+)\.body\.(\d+)\.body\.([02])\.(weight|bias)$")
_RCAN_CA = re.compile(r"^body\.(\d+)\.body\.(\d+)\.body\.3\.conv_du\.([02])\.(weight|bias)$")
_RCAN_GROUP_END = re.compile(r"^body\.(\d+)\.body\.(\d+)\.(weight|bias)$")


def convert_rcan_original(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Original RCAN (``head``, ``body.{g}.body.{b}.body``, ``tail``) keys -> RCAN keys."""
    out = {}
    for k, v in sd.items():
        if k.startswith(("sub_mean.", "add_mean.")):
            continue
        if m := _RCAN_CONV.match(k):
            out[f"body.{m[1]}.residual_group.{m[2]}.rcab.{m[3]}.{m[4]}"] = v
        elif m := _RCAN_CA.match(k):
            j = 1 if m[3] == "0" else 3
            out[f"body.{m[1]}.residual_group.{m[2]}.rcab.3.attention.{j}.{m[4]}"] = v
        elif m := _RCAN_GROUP_END.match(k):
            out[f"body.{m[1]}.conv.{m[3]}"] = v
        elif m := _EDSR_TRUNK.match(k):
            out[f"conv_after_body.{m[2]}"] = v
        else:
            out[_head_tail(k) or k] = v
    return out


def _prelu_per_channel(sd: dict[str, Tensor], prelu: str, conv: str) -> None:
    """A PReLU stored with one shared slope -> one slope per output channel of ``conv``."""
    key, ref = f"{prelu}.weight", f"{conv}.weight"
    if key in sd and ref in sd and sd[key].numel() == 1:
        sd[key] = sd[key].reshape(1).repeat(sd[ref].shape[0])


def convert_fsrcnn_port(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """yjn870's FSRCNN (``first_part.{0,1}``, ``mid_part.{i}``, ``last_part``) -> FSRCNN keys."""
    mid = sorted({int(m[1]) for k in sd if (m := re.match(r"^mid_part\.(\d+)\.weight$", k))})
    convs = [i for i in mid if sd[f"mid_part.{i}.weight"].dim() == 4]
    names = ["shrink", *(f"mapping.{j}" for j in range(len(convs) - 2)), "expand"]
    rename = {"first_part.0": "feature.0", "first_part.1": "feature.1", "last_part": "upsample.0"}
    for name, i in zip(names, convs):
        rename[f"mid_part.{i}"] = f"{name}.0"
        rename[f"mid_part.{i + 1}"] = f"{name}.1"
    out = {}
    for k, v in sd.items():
        base, _, param = k.rpartition(".")
        out[f"{rename.get(base, base)}.{param}"] = v
    for name in ("feature", "shrink", *(f"mapping.{j}" for j in range(len(convs) - 2)), "expand"):
        _prelu_per_channel(out, f"{name}.1", f"{name}.0")
    return out


def convert_espcn_port(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """yjn870's ESPCN (``first_part.{0,2}``, ``last_part.0``) -> ESPCN keys."""
    rename = {"first_part.0": "conv1", "first_part.2": "conv2", "last_part.0": "upsample.0"}
    out = {}
    for k, v in sd.items():
        base, _, param = k.rpartition(".")
        out[f"{rename.get(base, base)}.{param}"] = v
    return out


def convert_vdsr_port(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """twtygqyy's VDSR (``input``, ``residual_layer.{i}.conv``, ``output``) -> VDSR keys."""
    out = {}
    for k, v in sd.items():
        if m := re.match(r"^residual_layer\.(\d+)\.conv\.(weight|bias)$", k):
            out[f"body.{2 * int(m[1])}.{m[2]}"] = v
        elif k.startswith("input."):
            out["conv_first." + k[len("input.") :]] = v
        elif k.startswith("output."):
            out["conv_last." + k[len("output.") :]] = v
        else:
            out[k] = v
    return out


def _has(sd: Mapping[str, Tensor], *patterns: str) -> bool:
    return all(any(re.match(p, k) for k in sd) for p in patterns)


#: ``(layout name, test on the keys, converter)``, tried in order.
LAYOUTS: tuple[tuple[str, Callable[[Mapping], bool], Callable[[Mapping], dict]], ...] = (
    (
        "original ESRGAN",
        lambda sd: "model.0.weight" in sd and _has(sd, r"^model\.1\.sub\."),
        convert_esrgan_original,
    ),
    ("old BasicSR RRDBNet", lambda sd: _has(sd, r"^RRDB_trunk\."), convert_rrdb_old),
    ("old BasicSR MSRResNet", lambda sd: _has(sd, r"^recon_trunk\."), convert_msrresnet_old),
    (
        "original RCAN",
        lambda sd: "head.0.weight" in sd and _has(sd, _RCAN_CA.pattern),
        convert_rcan_original,
    ),
    (
        "original EDSR",
        lambda sd: "head.0.weight" in sd and "tail.1.weight" in sd,
        convert_edsr_original,
    ),
    (
        "yjn870 FSRCNN",
        lambda sd: "first_part.0.weight" in sd and _has(sd, r"^mid_part\."),
        convert_fsrcnn_port,
    ),
    (
        "yjn870 ESPCN",
        lambda sd: "first_part.2.weight" in sd and "last_part.0.weight" in sd,
        convert_espcn_port,
    ),
    (
        "twtygqyy VDSR",
        lambda sd: "input.weight" in sd and _has(sd, r"^residual_layer\.\d+\.conv\."),
        convert_vdsr_port,
    ),
)

_PREFIXES = ("module.", "netG.")


def strip_prefixes(sd: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``sd`` without a ``module.``/``netG.`` prefix shared by every key."""
    sd = dict(sd)
    for prefix in _PREFIXES:
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    return sd


def to_sr_cli_layout(
    sd: Mapping[str, Tensor], keep: Collection[str] = ()
) -> tuple[dict[str, Tensor], str]:
    """``(state dict in sr-cli's key layout, name of the layout it was in)``.

    Derived SwinIR buffers are dropped (but those named in ``keep``: a module that stores
    them); a layout sr-cli does not know is returned unchanged as ``"BasicSR"`` (the layout of
    sr-cli's own modules).
    """
    sd = strip_prefixes(sd)
    name = "BasicSR"
    for layout, test, convert in LAYOUTS:
        if test(sd):
            sd, name = convert(sd), layout
            break
    sd = {k: v for k, v in sd.items() if k in keep or not k.endswith(DERIVED_BUFFERS)}
    return sd, name
