"""Checkpoint compatibility: every supported layout loads and reproduces the source model."""

from __future__ import annotations

import argparse
import logging
import re

import pytest
import torch
from safetensors.torch import save_file

from sr_cli.errors import CheckpointError
from sr_cli.models.edsr import edsr
from sr_cli.models.pretrained import load_pretrained
from sr_cli.models.rrdbnet import rrdbnet
from sr_cli.models.srresnet import msrresnet
from sr_cli.models.swinir import relative_position_index, shifted_window_mask, swinir


def seeded(factory, seed, **kw):
    torch.manual_seed(seed)
    net = factory(**kw).eval()
    with torch.no_grad():  # make biases non-zero so a dropped key would show
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return net


def assert_same_outputs(a, b, x=None):
    x = torch.rand(1, 3, 11, 9, generator=torch.Generator().manual_seed(1)) if x is None else x
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def to_original_esrgan(sd, num_block):
    out = {}
    top = {
        "conv_first": "model.0",
        "conv_up1": "model.3",
        "conv_up2": "model.6",
        "conv_hr": "model.8",
        "conv_last": "model.10",
    }
    for k, v in sd.items():
        if m := re.match(r"body\.(\d+)\.rdb(\d)\.conv(\d)\.(\w+)", k):
            out[f"model.1.sub.{m[1]}.RDB{m[2]}.conv{m[3]}.0.{m[4]}"] = v
        elif k.startswith("conv_body."):
            out[f"model.1.sub.{num_block}.{k.split('.')[-1]}"] = v
        else:
            base, param = k.rsplit(".", 1)
            out[f"{top[base]}.{param}"] = v
    return out


def to_original_edsr(sd, num_block):
    out = {
        "sub_mean.weight": torch.eye(3).view(3, 3, 1, 1),
        "sub_mean.bias": torch.rand(3),
        "add_mean.weight": torch.eye(3).view(3, 3, 1, 1),
        "add_mean.bias": torch.rand(3),
    }
    for k, v in sd.items():
        if m := re.match(r"body\.(\d+)\.conv([12])\.(\w+)", k):
            out[f"body.{m[1]}.body.{0 if m[2] == '1' else 2}.{m[3]}"] = v
        elif k.startswith("conv_after_body."):
            out[f"body.{num_block}.{k.split('.')[-1]}"] = v
        elif k.startswith("upsample."):
            out["tail.0." + k[len("upsample.") :]] = v
        elif k.startswith("conv_first."):
            out["head.0." + k[len("conv_first.") :]] = v
        elif k.startswith("conv_last."):
            out["tail.1." + k[len("conv_last.") :]] = v
    return out


def test_rrdbnet_original_esrgan_layout(tmp_path):
    src = seeded(rrdbnet, 0, scale=4, preset="small")
    path = tmp_path / "RRDB_ESRGAN_x4.pth"
    torch.save(to_original_esrgan(src.state_dict(), num_block=2), path)
    dst = seeded(rrdbnet, 1, scale=4, preset="small")
    load_pretrained(dst, path)
    assert_same_outputs(src, dst)


def test_rrdbnet_basicsr_params_ema_preferred(tmp_path):
    src = seeded(rrdbnet, 0, scale=4, preset="small")
    other = seeded(rrdbnet, 2, scale=4, preset="small")
    path = tmp_path / "RealESRGAN_x4plus.pth"
    torch.save({"params": other.state_dict(), "params_ema": src.state_dict()}, path)
    dst = seeded(rrdbnet, 1, scale=4, preset="small")
    load_pretrained(dst, path)
    assert_same_outputs(src, dst)


@pytest.mark.parametrize("layout", ["original", "basicsr"])
def test_edsr_layouts(tmp_path, layout):
    # Published EDSR weights work on [0, 255] images (img_range=255, see test_published.py for
    # the conversion to img_range=1); with a matching img_range they load unchanged.
    src = seeded(edsr, 0, scale=4, preset="small", img_range=255.0)
    sd = src.state_dict()
    obj = to_original_edsr(sd, num_block=2) if layout == "original" else {"params": sd}
    path = tmp_path / f"edsr_{layout}.pt"
    torch.save(obj, path)
    dst = seeded(edsr, 1, scale=4, preset="small", img_range=255.0)
    load_pretrained(dst, path)
    assert_same_outputs(src, dst)


@pytest.mark.parametrize("scale", [3, 4])
def test_msrresnet_basicsr_params(tmp_path, scale):
    src = seeded(msrresnet, 0, scale=scale, preset="small")
    keys = set(src.state_dict())
    assert {
        "conv_first.weight",
        "body.0.conv1.weight",
        "body.1.conv2.bias",
        "upconv1.weight",
        "conv_hr.weight",
        "conv_last.weight",
    } <= keys
    assert ("upconv2.weight" in keys) == (scale == 4)
    path = tmp_path / "MSRResNet.pth"
    torch.save({"params": src.state_dict()}, path)
    dst = seeded(msrresnet, 1, scale=scale, preset="small")
    load_pretrained(dst, path)
    assert_same_outputs(src, dst)


def test_swinir_official_params_with_derived_buffers(tmp_path):
    src = seeded(swinir, 0, scale=2, preset="small", drop_path_rate=0.0)
    sd = dict(src.state_dict())
    for name in (
        "conv_first.weight",
        "patch_embed.norm.weight",
        "conv_after_body.weight",
        "conv_before_upsample.0.weight",
        "upsample.0.weight",
        "conv_last.weight",
    ):
        assert name in sd
    assert "layers.1.residual_group.blocks.1.attn.relative_position_bias_table" in sd
    # The official files also store these derivable buffers.
    for i in range(2):
        for j in range(2):
            sd[f"layers.{i}.residual_group.blocks.{j}.attn.relative_position_index"] = (
                relative_position_index(8)
            )
        sd[f"layers.{i}.residual_group.blocks.1.attn_mask"] = shifted_window_mask(
            64, 64, 8, 4, torch.device("cpu")
        )
    path = tmp_path / "001_classicalSR_DF2K_s64w8_SwinIR-M_x2.pth"
    torch.save({"params": sd}, path)
    dst = seeded(swinir, 1, scale=2, preset="small", drop_path_rate=0.0)
    load_pretrained(dst, path)
    assert_same_outputs(src, dst, torch.rand(1, 3, 13, 10))


@pytest.mark.parametrize("ema", ["none", "plain", "averaged_model"])
def test_lightning_checkpoint(tmp_path, ema):
    gen = seeded(msrresnet, 0, scale=2, preset="small")
    gen_ema = seeded(msrresnet, 3, scale=2, preset="small")
    sd = {f"generator.{k}": v for k, v in gen.state_dict().items()}
    sd["loss_terms.gan.discriminator.conv0.weight"] = torch.rand(4, 3, 3, 3)
    if ema == "plain":
        sd.update({f"generator_ema.{k}": v for k, v in gen_ema.state_dict().items()})
    elif ema == "averaged_model":
        sd.update({f"generator_ema.module.{k}": v for k, v in gen_ema.state_dict().items()})
        sd["generator_ema.n_averaged"] = torch.tensor(7)
    path = tmp_path / "last.ckpt"
    torch.save(
        {"state_dict": sd, "epoch": 3, "global_step": 100, "hyper_parameters": {"lr": 1e-4}}, path
    )
    dst = seeded(msrresnet, 1, scale=2, preset="small")
    load_pretrained(dst, path)
    assert_same_outputs(gen if ema == "none" else gen_ema, dst)


def test_safetensors_and_module_prefix(tmp_path):
    src = seeded(edsr, 0, scale=2, preset="small", img_range=255.0)  # as published EDSRs
    path = tmp_path / "edsr.safetensors"
    save_file({f"module.{k}": v.contiguous() for k, v in src.state_dict().items()}, str(path))
    dst = seeded(edsr, 1, scale=2, preset="small", img_range=255.0)
    load_pretrained(dst, path)
    assert_same_outputs(src, dst)


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="nope.pth"):
        load_pretrained(edsr(scale=2, preset="small"), path)


def test_unsafe_pickle_is_refused(tmp_path):
    path = tmp_path / "unsafe.ckpt"
    net = edsr(scale=2, preset="small")
    torch.save({"state_dict": net.state_dict(), "hparams": argparse.Namespace(lr=1)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_pretrained(net, path)


def test_wrong_scale_is_diagnosed(tmp_path):
    path = tmp_path / "x4.pth"
    torch.save({"params": msrresnet(scale=4, preset="small").state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(msrresnet(scale=2, preset="small"), path)
    msg = str(err.value)
    assert "upconv2.weight" in msg and "unexpected" in msg and "scale" in msg


def test_block_count_mismatch_is_diagnosed(tmp_path):
    path = tmp_path / "edsr3.pth"
    torch.save({"params": edsr(scale=2, preset="small", num_block=3).state_dict()}, path)
    with pytest.raises(CheckpointError) as err:
        load_pretrained(edsr(scale=2, preset="small"), path)
    msg = str(err.value)
    assert "body.2.conv1.weight" in msg and "block count" in msg and "3 blocks" in msg


def test_non_strict_loads_what_fits(tmp_path, caplog):
    src = seeded(msrresnet, 0, scale=4, preset="small")
    path = tmp_path / "x4.pth"
    torch.save({"params": src.state_dict()}, path)
    dst = seeded(msrresnet, 1, scale=3, preset="small")
    before = dst.upconv1.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="sr_cli.models.pretrained"):
        load_pretrained(dst, path, strict=False)
    assert "strict=False" in caplog.text and "upconv1.weight: checkpoint" in caplog.text
    assert torch.equal(dst.conv_first.weight, src.conv_first.weight)
    assert torch.equal(dst.body[1].conv2.bias, src.body[1].conv2.bias)
    assert torch.equal(dst.upconv1.weight, before)  # shape differs: left as it was


def test_a_weight_file_that_does_not_fit_is_one_line_with_every_reason(tmp_path):
    """Issue #26: errors are one line and never cut: the missing keys, the shape mismatches and
    the likely cause all stay in it."""
    path = tmp_path / "small.pth"
    torch.save(edsr(scale=2, preset="small").state_dict(), path)
    with pytest.raises(CheckpointError) as info:
        load_pretrained(edsr(scale=2, preset="baseline"), path)
    message = str(info.value)
    assert "\n" not in message
    assert "missing keys: " in message and "shape mismatches: " in message
    assert "likely cause: " in message and message.endswith(
        "(pick the matching `model.preset` or set num_block)"
    )
