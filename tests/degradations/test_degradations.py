"""Every degradation: shapes, range, dtype, determinism, statistics and consistency replay."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sr_cli.degradations import (
    JPEG,
    Blur,
    BlurDownsample,
    BSRGANDegradation,
    DegradationPipeline,
    JPEGDownsample,
    Noise,
    NoisyDownsample,
    QuantizedDownsample,
    RealESRGANDegradation,
    Resize,
    ResizeDownsample,
    Shuffle,
    imresize,
)
from sr_cli.degradations.blur import KERNEL_TYPES
from sr_cli.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def smooth_image(b=2, size=32, seed=0, dtype=torch.float32) -> torch.Tensor:
    """A natural-ish image: upsampled noise plus some fine texture, in [0, 1]."""
    g = gen(seed)
    coarse = torch.rand(b, 3, size // 4, size // 4, generator=g, dtype=dtype)
    fine = torch.rand(b, 3, size, size, generator=g, dtype=dtype)
    img = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    return (0.8 * img + 0.2 * fine).clamp(0, 1)


def example_pipeline(noise_prob=1.0, jpeg_prob=1.0, quantize=True) -> DegradationPipeline:
    """A second-order pipeline exercising every kind of stage, nesting and a shuffle."""
    return DegradationPipeline(
        2,
        [
            Blur(kernel_list=list(KERNEL_TYPES), kernel_sizes=[7, 11, 21], sinc_prob=0.3),
            Resize("input", (0.4, 1.5), (0.3, 0.5, 0.2), ["bicubic", "bilinear", "area"]),
            Noise(0.5, (1, 20), gray_prob=0.5, prob=noise_prob),
            JPEG((40, 95), prob=jpeg_prob),
            Blur(kernel_list=["aniso"], prob=0.7),
            Resize("lq", (0.5, 1.2), (0.3, 0.4, 0.3), ["bicubic", "nearest"]),
            Shuffle(
                [
                    [Resize("lq", modes=["area", "bilinear"]), Blur(kernel_list=[], sinc_prob=1.0)],
                    JPEG((30, 95), prob=jpeg_prob),
                    Noise(1.0, (1, 5), prob=noise_prob),
                ]
            ),
        ],
        final_resize=None,
        quantize=quantize,
    )


FACTORIES = {
    "bicubic": lambda: ResizeDownsample(2),
    "bilinear": lambda: ResizeDownsample(2, "bilinear"),
    "area": lambda: ResizeDownsample(2, "area"),
    "nearest": lambda: ResizeDownsample(2, "nearest"),
    "blur": lambda: BlurDownsample(2, kernel_list=list(KERNEL_TYPES), sinc_prob=0.2),
    "noise": lambda: NoisyDownsample(2, gaussian_prob=0.5, gray_prob=0.5),
    "jpeg": lambda: JPEGDownsample(2),
    "quantization": lambda: QuantizedDownsample(2, bits=4),
    "pipeline": example_pipeline,
    "bsrgan": lambda: BSRGANDegradation(2),
    "realesrgan": lambda: RealESRGANDegradation(2),
}
STOCHASTIC = {"blur", "noise", "jpeg", "pipeline", "bsrgan", "realesrgan"}


@pytest.mark.parametrize("name", sorted(FACTORIES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_range_dtype(name, dtype):
    d = FACTORIES[name]()
    hr = smooth_image(2, 32, dtype=dtype)
    params = d.sample(hr, gen(1))
    for v in params.values():
        assert v.shape[0] == 2 and v.device == hr.device
    lq = d(hr, params)
    assert lq.shape == (2, 3, 16, 16)
    assert lq.dtype == dtype and lq.device == hr.device
    assert lq.min() >= 0 and lq.max() <= 1
    assert torch.isfinite(lq).all()
    assert d(hr).shape == (2, 3, 16, 16)  # params drawn internally
    assert d.stochastic == (name in STOCHASTIC)


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_determinism_under_a_seed(name):
    d = FACTORIES[name]()
    hr = smooth_image(3, 32)
    a = d(hr, d.sample(hr, gen(7)))
    b = d(hr, d.sample(hr, gen(7)))
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    p = d.sample(hr, gen(8))
    torch.testing.assert_close(d(hr, p), d(hr, p), atol=0, rtol=0)  # params fully determine it
    if name in STOCHASTIC:
        assert not torch.equal(a, d(hr, p))


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_consistency_shape_and_gradient(name):
    d = FACTORIES[name]()
    hr = smooth_image(2, 32)
    params = d.sample(hr, gen(3))
    sr = hr.clone().requires_grad_(True)
    out = d.replay(sr, params)
    assert out.shape == (2, 3, 16, 16)
    out.square().sum().backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0


def test_blur_consistency_equals_forward_without_quantization():
    d = BlurDownsample(3, kernel_list=list(KERNEL_TYPES), kernel_sizes=[9, 21], sinc_prob=0.3)
    d.quantize = False
    hr = smooth_image(4, 48)
    p = d.sample(hr, gen(0))
    torch.testing.assert_close(d.replay(hr, p).clamp(0, 1), d(hr, p), atol=0, rtol=0)
    # ... and that is literally "convolve with the recorded kernel, then MATLAB bicubic".
    manual = torch.stack(
        [
            imresize(
                F.conv2d(
                    F.pad(hr[i : i + 1], (10,) * 4, mode="reflect"),
                    p["0_blur.kernel"][i].flip(-1, -2).expand(3, 1, 21, 21),
                    groups=3,
                ),
                scale=1 / 3,
            )[0]
            for i in range(4)
        ]
    )
    torch.testing.assert_close(d.replay(hr, p), manual, atol=1e-6, rtol=0)


def test_noise_and_jpeg_consistency_is_the_resize():
    hr = smooth_image(2, 32)
    for d in (NoisyDownsample(2), JPEGDownsample(2), QuantizedDownsample(2, bits=3)):
        p = d.sample(hr, gen(0))
        torch.testing.assert_close(d.replay(hr, p), imresize(hr, scale=0.5))
        assert not torch.allclose(d(hr, p), imresize(hr, scale=0.5).clamp(0, 1), atol=1e-3)


def test_pipeline_replay_equals_forward_when_noise_and_jpeg_are_off():
    d = example_pipeline(noise_prob=0.0, jpeg_prob=0.0, quantize=False)
    hr = smooth_image(3, 48)
    for seed in range(4):  # different orders, factors, modes
        p = d.sample(hr, gen(seed))
        torch.testing.assert_close(d.replay(hr, p).clamp(0, 1), d(hr, p), atol=1e-6, rtol=0)
    with_noise = example_pipeline()
    p = with_noise.sample(hr, gen(0))
    assert (with_noise.replay(hr, p) - with_noise(hr, p)).abs().mean() > 1e-3


def test_shuffle_order_is_recorded_and_replayed():
    d = BSRGANDegradation(2)
    hr = smooth_image(2, 48)
    orders = set()
    for seed in range(6):
        p = d.sample(hr, gen(seed))
        order = p["0_shuffle.order"]
        assert order.shape == (2, 5) and torch.equal(order[0], order[1])
        assert sorted(order[0].tolist()) == [0, 1, 2, 3, 4]
        orders.add(tuple(order[0].tolist()))
    assert len(orders) > 1
    p = d.sample(hr, gen(0))
    q = dict(p)
    q["0_shuffle.order"] = p["0_shuffle.order"].flip(1)
    assert not torch.allclose(d.replay(hr, p), d.replay(hr, q))


def test_batch_assembled_from_single_images_replays_per_sample():
    # e.g. degraded one by one in dataloader workers, then collated: resize factors differ.
    d = example_pipeline(quantize=False)
    hr = smooth_image(2, 48)
    p0, p1 = d.sample(hr[:1], gen(0)), d.sample(hr[1:], gen(5))
    assert p0["1_resize.factor"] != p1["1_resize.factor"]
    p = {k: torch.cat([p0[k], p1[k]]) for k in p0}
    out = d(hr, p)
    torch.testing.assert_close(out, torch.cat([d(hr[:1], p0), d(hr[1:], p1)]))
    cons = d.replay(hr, p)
    torch.testing.assert_close(cons, torch.cat([d.replay(hr[:1], p0), d.replay(hr[1:], p1)]))


def test_realesrgan_defaults_and_output():
    d = RealESRGANDegradation(4)
    blur1, resize1, noise1, jpeg1, blur2, resize2, noise2, final = d.body.stages
    assert blur1.kernel_prob == (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    assert blur1.sinc_prob == 0.1 and blur1.sigma == (0.2, 3.0)
    assert resize1.factor_probs == (0.2, 0.7, 0.1) and resize1.factor_range == (0.15, 1.5)
    assert noise1.gaussian_prob == 0.5 and noise1.sigma == (1.0, 30.0)
    assert noise1.poisson_scale == (0.05, 3.0) and noise1.gray_prob == 0.4
    assert jpeg1.quality == (30.0, 95.0)
    assert blur2.prob == 0.8 and blur2.sigma == (0.2, 1.5)
    assert resize2.factor_probs == (0.3, 0.4, 0.3) and resize2.factor_range == (0.3, 1.2)
    assert noise2.sigma == (1.0, 25.0) and noise2.poisson_scale == (0.05, 2.5)
    assert final.stages[0].stages[1].prob == 0.8  # final sinc
    hr = smooth_image(2, 64)
    lq = d(hr, d.sample(hr, gen(0)))
    assert lq.shape == (2, 3, 16, 16)
    assert torch.equal(lq, (lq * 255).round() / 255)  # 8-bit


# --------------------------------------------------------------------------- statistics
def flat(value: float, b=2, size=64) -> torch.Tensor:
    return torch.full((b, 3, size, size), value)


def test_gaussian_noise_sigma_is_measured_back():
    stage = Noise(gaussian_prob=1.0, sigma=(10, 10), gray_prob=0.0)
    x = flat(0.5)
    out = stage(x, stage.sample(2, x.device, gen(0)), (64, 64))
    assert (out - x).std().item() == pytest.approx(10 / 255, rel=0.05)
    assert (out - x).mean().abs() < 1e-3
    # Colour noise differs across channels, gray noise is the same on all three.
    assert not torch.allclose(out[:, 0], out[:, 1])
    gray = Noise(gaussian_prob=1.0, sigma=(10, 10), gray_prob=1.0)
    out = gray(x, gray.sample(2, x.device, gen(0)), (64, 64))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 1], out[:, 2])
    # Whole degradation at scale 1 (the resize is the identity): the same sigma.
    d = NoisyDownsample(1, sigma=(20, 20), gray_prob=0.0, quantize=False)
    lq = d(x, d.sample(x, gen(1)))
    assert (lq - x).std().item() == pytest.approx(20 / 255, rel=0.05)


def test_poisson_noise_variance_scales_with_intensity_and_scale():
    def var(level: float, scale: float) -> float:
        stage = Noise(gaussian_prob=0.0, poisson_scale=(scale, scale), levels=256)
        x = flat(level)
        return (stage(x, stage.sample(2, x.device, gen(0)), (64, 64)) - x).var().item()

    # Var = scale^2 * x / levels.
    assert var(0.25, 1.0) == pytest.approx(0.25 / 256, rel=0.1)
    assert var(0.5, 1.0) / var(0.25, 1.0) == pytest.approx(2.0, rel=0.1)
    assert var(0.25, 2.0) / var(0.25, 1.0) == pytest.approx(4.0, rel=0.1)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return (10 * torch.log10(1 / F.mse_loss(a, b))).item()


def test_jpeg_quality_10_degrades_more_than_90():
    x = smooth_image(2, 48)
    stage = JPEG()
    ones = torch.ones(2, dtype=torch.bool)
    low = stage(x, {"quality": torch.full((2,), 10.0), "apply": ones}, (48, 48))
    high = stage(x, {"quality": torch.full((2,), 90.0), "apply": ones}, (48, 48))
    assert psnr(high, x) > psnr(low, x) + 5
    # Sizes that are not multiples of 16 are padded and cropped back.
    odd = torch.rand(1, 3, 40, 27, generator=gen(0))
    q50 = {"quality": torch.full((1,), 50.0), "apply": ones[:1]}
    assert stage(odd, q50, (40, 27)).shape == (1, 3, 40, 27)


def high_frequency_energy(x: torch.Tensor, cutoff: float = 0.25) -> float:
    spec = torch.fft.fft2(x).abs().square()
    fy = torch.fft.fftfreq(x.shape[-2]).abs().view(-1, 1)
    fx = torch.fft.fftfreq(x.shape[-1]).abs().view(1, -1)
    return spec[..., (fy > cutoff) | (fx > cutoff)].sum().item()


def test_blur_reduces_high_frequency_energy():
    x = torch.rand(2, 3, 64, 64, generator=gen(0))
    blurred = BlurDownsample(1, kernel_list=["iso"], sigma=(1.5, 2.5), quantize=False)
    sharp = ResizeDownsample(1, quantize=False)
    e_blur = high_frequency_energy(blurred(x, blurred.sample(x, gen(0))))
    e_sharp = high_frequency_energy(sharp(x))
    assert e_blur < 0.01 * e_sharp
    # At scale 2 too, against plain bicubic.
    d2 = BlurDownsample(2, kernel_list=["aniso"], sigma=(1.0, 2.0), quantize=False)
    ref = high_frequency_energy(ResizeDownsample(2, quantize=False)(x))
    assert high_frequency_energy(d2(x, d2.sample(x, gen(1)))) < 0.5 * ref


def test_quantization_to_4_bits_gives_16_levels():
    ramp = torch.linspace(0, 1, 64).view(1, 1, 1, 64).expand(1, 3, 8, 64).contiguous()
    d = QuantizedDownsample(1, bits=4)
    out = d(ramp)
    levels = torch.unique(out)
    assert len(levels) == 16
    torch.testing.assert_close(levels, torch.arange(16) / 15)
    ramp.requires_grad_(True)
    d(ramp).sum().backward()  # straight-through
    assert torch.allclose(ramp.grad, torch.ones_like(ramp))


# --------------------------------------------------------------------------- errors
def test_bad_options_are_config_errors():
    with pytest.raises(ConfigError, match="unknown Blur kernel"):
        Blur(kernel_list=["box"])
    with pytest.raises(ConfigError, match="sum to 1"):
        Blur(kernel_list=["iso", "aniso"], kernel_prob=[0.5, 0.6])
    with pytest.raises(ConfigError, match="min <= max"):
        Noise(sigma=(5, 1))
    with pytest.raises(ConfigError, match="resize mode"):
        ResizeDownsample(2, "lanczos")
    with pytest.raises(ConfigError, match="not divisible"):
        BlurDownsample(3)(torch.rand(1, 3, 16, 16))
    with pytest.raises(ConfigError, match="LQ size"):
        DegradationPipeline(2, [Blur()], final_resize=None)(torch.rand(1, 3, 16, 16))
    with pytest.raises(ValueError, match="params"):
        BlurDownsample(2).replay(torch.rand(1, 3, 16, 16))


def test_final_resize_brings_the_pipeline_to_lq_size():
    d = DegradationPipeline(4, [Blur(kernel_list=["iso"])], final_resize="area", quantize=False)
    hr = smooth_image(2, 32)
    p = d.sample(hr, gen(0))
    assert d(hr, p).shape == (2, 3, 8, 8)
    torch.testing.assert_close(d.replay(hr, p).clamp(0, 1), d(hr, p))


def test_params_do_not_depend_on_dtype():
    d = FACTORIES["realesrgan"]()
    p32 = d.sample(smooth_image(2, 32), gen(4))
    p64 = d.sample(smooth_image(2, 32, dtype=torch.float64), gen(4))
    assert p32.keys() == p64.keys()
    for k in p32:
        assert torch.equal(p32[k], p64[k]), k
    assert math.isclose(float(p32["1_resize.factor"][0]), float(p64["1_resize.factor"][0]))
