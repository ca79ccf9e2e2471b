"""Published checkpoints: spandrel detection, BasicSR's EDSR (img_range=255), safe loading."""

from __future__ import annotations

import pickle
import re

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf
from safetensors.torch import save_file

from sr_cli.errors import CheckpointError, ConfigError
from sr_cli.evaluate.inference import load_generator, super_resolve
from sr_cli.models.community import FAMILIES
from sr_cli.models.detect import load_weights
from sr_cli.models.edsr import edsr
from sr_cli.models.pretrained import load_pretrained, rescale_img_range
from sr_cli.models.published import spandrel_detect, spandrel_generator
from sr_cli.models.rcan import rcan
from tests.models.test_generators import CONF_DIR

DIV2K_MEAN = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1)


def random_state_dict(net: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """A generated state dict of ``net``'s shapes: He-scaled weights, non-zero biases; buffers
    (position indices, masks) are kept, as in a published file."""
    g = torch.Generator().manual_seed(seed)
    params = {k for k, _ in net.named_parameters()}
    out = {}
    for k, v in net.state_dict().items():
        if k not in params or v.numel() == 0:
            out[k] = v.clone()
        elif v.dim() > 1:
            fan_in = v[0].numel()
            out[k] = torch.randn(v.shape, generator=g) * (2.0 / fan_in) ** 0.5 * 0.5
        else:
            out[k] = torch.randn(v.shape, generator=g) * 0.1
    return out


# ------------------------------------------------------------------ BasicSR EDSR, img_range=255
def basicsr_edsr_sd(num_feat=64, num_block=16, scale=4, seed=0):
    """BasicSR ``EDSR`` state-dict keys and shapes, written out by hand (no sr-cli code)."""
    g = torch.Generator().manual_seed(seed)

    def conv(cin, cout, k=3):
        w = torch.randn(cout, cin, k, k, generator=g) * (2.0 / (cin * k * k)) ** 0.5 * 0.3
        return w, torch.randn(cout, generator=g) * 2.0  # biases in [0, 255]-image units

    sd = {}
    sd["conv_first.weight"], sd["conv_first.bias"] = conv(3, num_feat)
    for i in range(num_block):
        sd[f"body.{i}.conv1.weight"], sd[f"body.{i}.conv1.bias"] = conv(num_feat, num_feat)
        sd[f"body.{i}.conv2.weight"], sd[f"body.{i}.conv2.bias"] = conv(num_feat, num_feat)
    sd["conv_after_body.weight"], sd["conv_after_body.bias"] = conv(num_feat, num_feat)
    steps = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
    for j, r in enumerate(steps):
        sd[f"upsample.{2 * j}.weight"], sd[f"upsample.{2 * j}.bias"] = conv(
            num_feat, num_feat * r * r
        )
    sd["conv_last.weight"], sd["conv_last.bias"] = conv(num_feat, 3)
    return sd, steps


def reference_edsr(sd, steps, x, num_block, res_scale=1.0, img_range=255.0):
    """BasicSR's EDSR forward, written independently with torch.nn.functional:
    ``x = (x - mean) * img_range``, conv_first, body + conv_after_body with the long skip,
    pixel-shuffle upsampler, conv_last, ``x / img_range + mean``."""

    def conv(t, name):
        return F.conv2d(t, sd[f"{name}.weight"], sd[f"{name}.bias"], padding=1)

    x = (x - DIV2K_MEAN) * img_range
    x = conv(x, "conv_first")
    res = x
    for i in range(num_block):
        res = res + res_scale * conv(F.relu(conv(res, f"body.{i}.conv1")), f"body.{i}.conv2")
    res = conv(res, "conv_after_body") + x
    for j, r in enumerate(steps):
        res = F.pixel_shuffle(conv(res, f"upsample.{2 * j}"), r)
    return conv(res, "conv_last") / img_range + DIV2K_MEAN


def edsr_baseline_from_config():
    model = OmegaConf.load(CONF_DIR / "edsr_baseline.yaml")
    cfg = OmegaConf.create({"scale": 4, "model": model})
    return instantiate(cfg.model.generator).eval()


@pytest.mark.parametrize("container", ["params", "params_ema", "safetensors"])
def test_basicsr_edsr_weights_give_the_reference_output(tmp_path, container):
    """`model=edsr_baseline model.pretrained=<BasicSR EDSR>`: BasicSR's output, not a wrong image."""
    sd, steps = basicsr_edsr_sd()
    if container == "safetensors":
        path = tmp_path / "EDSR_Mx4_f64b16_DIV2K_official.safetensors"
        save_file(sd, str(path))
    else:
        path = tmp_path / "EDSR_Mx4_f64b16_DIV2K_official.pth"
        torch.save({container: sd}, path)
    x = torch.rand(1, 3, 12, 10, generator=torch.Generator().manual_seed(3))
    ref = reference_edsr(sd, steps, x, num_block=16)
    assert 0.005 < ref.std() < 5  # a varied image, not constant or exploding

    net = edsr_baseline_from_config()  # img_range=1 in sr-cli: weights converted exactly
    assert net.img_range == 1.0
    load_pretrained(net, path)
    with torch.no_grad():
        out = net(x)
    torch.testing.assert_close(out, ref, atol=2e-5, rtol=1e-4)

    # Loading the same tensors without the conversion is the wrong image the issue saw.
    naive = edsr_baseline_from_config()
    naive.load_state_dict(sd)
    with torch.no_grad():
        assert (naive(x) - ref).abs().max() > 0.5

    # Bare published file in sr-eval / sr-upscale: detected as EDSR x4 with img_range 255.
    loaded = load_generator(path)
    assert loaded.model_config["name"] == "EDSR" and loaded.scale == 4
    torch.testing.assert_close(
        super_resolve(loaded.generator, x), ref.clamp(0, 1), atol=2e-5, rtol=1e-4
    )


def test_img_range_conversion_is_exact_for_rcan():
    torch.manual_seed(0)
    src = rcan(scale=2, preset="small", img_range=255.0).eval()
    src.load_state_dict(random_state_dict(src, 1))
    dst = rcan(scale=2, preset="small").eval()
    dst.load_state_dict(rescale_img_range(src.state_dict(), 255.0, 1.0, "RCAN"))
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), atol=1e-5, rtol=1e-4)


def test_sr_cli_checkpoint_keeps_its_own_img_range(tmp_path):
    """An sr-cli checkpoint says which img_range its weights use: no conversion happens."""
    src = edsr(scale=2, preset="small").eval()
    src.load_state_dict(random_state_dict(src, 0))
    path = tmp_path / "run.ckpt"
    meta = {"model": {"name": "edsr", "generator": {"scale": 2, "preset": "small"}}}
    torch.save(
        {"state_dict": {f"generator.{k}": v for k, v in src.state_dict().items()}, "sr_cli": meta},
        path,
    )
    dst = edsr(scale=2, preset="small").eval()
    load_pretrained(dst, path)
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))


# --------------------------------------------------------------- spandrel-detected families
@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_generated_weights_are_detected_with_identical_output(tmp_path, name):
    factory, arch_id = FAMILIES[name]
    torch.manual_seed(0)
    src = factory(scale=2, preset="small").eval()
    src.load_state_dict(random_state_dict(src, 1))
    path = tmp_path / f"2x-{name}.pth"
    torch.save({"params_ema": src.state_dict()}, path)
    loaded = load_weights(path)
    assert loaded.model_config["architecture"] == arch_id and loaded.scale == 2
    assert loaded.used_ema
    x = torch.rand(1, 3, 16, 20, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        torch.testing.assert_close(loaded.generator(x), src(x), atol=1e-5, rtol=1e-4)
    # model=spandrel: the detected nn.Module, with the run's scale checked.
    net = spandrel_generator(str(path), scale=2)
    assert net.scale == 2
    with pytest.raises(ConfigError, match="scale=2"):
        spandrel_generator(str(path), scale=4)


def test_unknown_architecture_is_a_clear_error(tmp_path):
    path = tmp_path / "mystery.pth"
    torch.save({"foo.weight": torch.rand(3, 3)}, path)
    with pytest.raises(
        CheckpointError, match="not recognised.*mystery.pth|mystery.pth.*not recognised"
    ):
        load_generator(path)


def test_spandrel_config_needs_a_weights_file():
    with pytest.raises(ConfigError, match="model.pretrained"):
        spandrel_generator(None, scale=4)


def test_detect_refuses_grayscale_models():
    from spandrel.architectures.Compact import Compact

    net = Compact(num_in_ch=1, num_out_ch=1, num_feat=8, num_conv=1, upscale=2)
    with pytest.raises(CheckpointError, match="RGB"):
        spandrel_detect(net.state_dict(), "gray.pth")


# ------------------------------------------------------------------------------ safety
class _Payload:
    """Unpickling this object would create ``marker`` (it must never run)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("suffix", [".pth", ".pt"])
def test_crafted_pickle_is_never_executed(tmp_path, suffix):
    marker = tmp_path / "pwned"
    net = edsr(scale=2, preset="small")
    path = tmp_path / f"4x-evil{suffix}"
    torch.save({"params": net.state_dict(), "extra": _Payload(marker)}, path)
    # the file really carries the payload: a plain pickle load would run it
    with pytest.raises(CheckpointError, match="loaded safely"):
        load_generator(path)
    with pytest.raises(CheckpointError, match="loaded safely"):
        spandrel_generator(str(path), scale=2)
    with pytest.raises(CheckpointError, match="loaded safely"):
        load_pretrained(edsr(scale=2, preset="small"), path)
    assert not marker.exists()
    torch.load(path, weights_only=False)  # proof the payload is live
    assert marker.exists()


def test_raw_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps({"params": _Payload(marker)}))
    with pytest.raises(CheckpointError):
        load_generator(path)
    assert not marker.exists()


def test_key_names_match_basicsr():
    """sr-cli's EDSR keeps BasicSR's key layout (what the reference above reads)."""
    sd, _ = basicsr_edsr_sd(num_feat=64, num_block=16, scale=4)
    own = set(edsr(scale=4, preset="baseline").state_dict())
    assert own == set(sd)
    assert all(
        re.match(r"^(conv_first|body\.\d+\.conv[12]|conv_after_body|upsample\.\d|conv_last)\.", k)
        for k in own
    )
