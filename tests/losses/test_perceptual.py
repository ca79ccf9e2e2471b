"""VGG feature extractor, perceptual and texture losses, against a fake cached VGG19."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from sr_cli.errors import CheckpointError, ConfigError, SrCliError, WeightsUnavailableError
from sr_cli.losses.perceptual import (
    VGG19_LAYERS,
    PerceptualLoss,
    StyleLoss,
    VGGFeatureExtractor,
    gram_matrix,
    style_loss,
)

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def reference_features(state: dict, x: torch.Tensor, index: int) -> torch.Tensor:
    """torchvision's VGG19 ``features[: index + 1]`` with ``state``, on ImageNet-normalized x."""
    with torch.device("meta"):
        features = torchvision.models.vgg19(weights=None).features
    features = features.to_empty(device="cpu")
    features.load_state_dict(
        {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    )
    with torch.no_grad():
        return features[: index + 1]((x - MEAN) / STD)


def test_layer_names_follow_vgg_paper() -> None:
    # torchvision indices: conv1_2=2, relu2_2=8, conv3_1=10, conv5_4=34, relu5_4=35, pool5=36.
    expected = {"conv1_1": 0, "conv1_2": 2, "relu2_2": 8, "pool2": 9, "conv3_1": 10}
    expected |= {"conv5_4": 34, "relu5_4": 35, "pool5": 36}
    for name, index in expected.items():
        assert VGG19_LAYERS.index(name) == index
    assert len(VGG19_LAYERS) == 37


def test_missing_weights_raise_at_construction(empty_torch_home, monkeypatch) -> None:
    def no_download(*args, **kwargs):
        raise AssertionError("must not try to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    with pytest.raises(WeightsUnavailableError) as info:
        PerceptualLoss(layer_weights={"conv5_4": 1.0})
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message
    assert str(empty_torch_home) in message
    assert "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth" in message
    assert isinstance(info.value, SrCliError) and isinstance(info.value, FileNotFoundError)
    with pytest.raises(WeightsUnavailableError):
        StyleLoss()


def test_cached_weights_load_and_match_reference(vgg_cache) -> None:
    extractor = VGGFeatureExtractor(["conv1_2", "relu2_2", "conv5_4"])
    x = torch.rand(2, 3, 32, 32)
    feats = extractor(x)
    assert set(feats) == {"conv1_2", "relu2_2", "conv5_4"}
    for name, index in (("conv1_2", 2), ("relu2_2", 8), ("conv5_4", 34)):
        torch.testing.assert_close(feats[name], reference_features(vgg_cache, x, index))
    assert feats["conv5_4"].shape == (2, 512, 2, 2)


def test_legacy_format_file_loads_and_corrupt_file_is_refused(
    empty_torch_home, fake_vgg_home
) -> None:
    # torchvision's own file predates the zip format; it cannot be memory-mapped.
    state = fake_vgg_home[1]
    features_only = {k: v for k, v in state.items() if k.startswith("features.")}
    empty_torch_home.mkdir(parents=True)
    path = empty_torch_home / "vgg19-dcbb9e9d.pth"
    torch.save(features_only, path, _use_new_zipfile_serialization=False)
    x = torch.rand(1, 3, 16, 16)
    got = VGGFeatureExtractor(["conv2_1"])(x)["conv2_1"]
    torch.testing.assert_close(got, reference_features(state, x, 5))

    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="vgg19-dcbb9e9d.pth"):
        VGGFeatureExtractor(["conv2_1"])
    torch.save({"features.0.weight": torch.zeros(1)}, path)
    with pytest.raises(CheckpointError, match="VGG19"):
        VGGFeatureExtractor(["conv2_1"])


def test_truncated_after_deepest_layer(vgg_cache) -> None:
    shallow = VGGFeatureExtractor(["relu2_2"])
    assert len(shallow.features) == 9 and isinstance(shallow.features[-1], nn.ReLU)
    deep = VGGFeatureExtractor(["conv1_1", "conv5_4"])
    assert len(deep.features) == 35 and isinstance(deep.features[-1], nn.Conv2d)


def test_before_and_after_relu(vgg_cache) -> None:
    # Asking for both also checks that the ReLU does not overwrite the conv output in place.
    feats = VGGFeatureExtractor(["conv2_2", "relu2_2"])(torch.rand(1, 3, 16, 16))
    assert (feats["conv2_2"] < 0).any()
    assert (feats["relu2_2"] >= 0).all()
    torch.testing.assert_close(feats["relu2_2"], feats["conv2_2"].clamp_min(0))


def test_imagenet_normalization_and_grayscale(vgg_cache) -> None:
    x = torch.rand(1, 3, 16, 16)
    with_norm = VGGFeatureExtractor(["conv1_1"])
    without = VGGFeatureExtractor(["conv1_1"], normalize=False)
    torch.testing.assert_close(with_norm(x)["conv1_1"], without((x - MEAN) / STD)["conv1_1"])
    gray = torch.rand(1, 1, 16, 16)
    torch.testing.assert_close(
        with_norm(gray)["conv1_1"], with_norm(gray.expand(-1, 3, -1, -1))["conv1_1"]
    )


def test_frozen_and_kept_out_of_checkpoints(vgg_cache) -> None:
    loss = PerceptualLoss()
    assert not any(p.requires_grad for p in loss.parameters())
    holder = nn.ModuleDict({"perceptual": loss, "head": nn.Linear(2, 2)})
    holder.train()
    assert not loss.vgg.training
    state = holder.state_dict()
    assert sorted(state) == ["head.bias", "head.weight"]
    assert not holder.load_state_dict(state, strict=True).missing_keys
    # A checkpoint that does contain the VGG weights still loads.
    full = {
        **state,
        **{f"perceptual.vgg.features.{k}": v for k, v in loss.vgg.features.state_dict().items()},
    }
    holder.load_state_dict(full, strict=True)


def test_bad_options_and_inputs(vgg_cache) -> None:
    with pytest.raises(ConfigError, match="conv6_1"):
        VGGFeatureExtractor(["conv6_1"])
    with pytest.raises(ConfigError, match="weights"):
        VGGFeatureExtractor(["conv1_1"], weights="places365")
    with pytest.raises(ConfigError, match="distance"):
        PerceptualLoss(distance="l3")
    with pytest.raises(ConfigError, match="layer_weights"):
        PerceptualLoss(layer_weights={})
    with pytest.raises(ValueError, match="16x16"):
        VGGFeatureExtractor(["conv5_4"])(torch.rand(1, 3, 8, 8))


def test_random_weights_warn_loudly(empty_torch_home) -> None:
    with pytest.warns(UserWarning, match="meaningless"):
        loss = PerceptualLoss(layer_weights={"relu1_2": 1.0}, weights="random")
    assert loss.vgg.weights == "random"


def test_perceptual_known_values_and_gradient(vgg_cache, make_inputs) -> None:
    gt = torch.rand(2, 3, 16, 16)
    loss = PerceptualLoss(layer_weights={"conv5_4": 1.0, "relu2_2": 0.5}, distance="l1")
    assert loss(make_inputs(gt.clone(), gt)).loss.item() == 0.0

    sr = torch.rand(2, 3, 16, 16, requires_grad=True)
    value = loss(make_inputs(sr, gt)).loss
    expected = sum(
        w
        * (reference_features(vgg_cache, sr.detach(), i) - reference_features(vgg_cache, gt, i))
        .abs()
        .mean()
        for w, i in ((1.0, 34), (0.5, 8))
    )
    assert value.item() == pytest.approx(expected.item(), rel=1e-4)
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss.parameters())

    l2 = PerceptualLoss(layer_weights={"conv1_1": 2.0}, distance="l2")
    ref = (
        reference_features(vgg_cache, sr.detach(), 0) - reference_features(vgg_cache, gt, 0)
    ) ** 2
    assert l2(make_inputs(sr, gt)).loss.item() == pytest.approx(2 * ref.mean().item(), rel=1e-4)


def test_gram_matrix_known_value() -> None:
    # Two channels, H*W = 2: F = [[1, 2], [3, 4]]; F F^T = [[5, 11], [11, 25]]; / (C H W = 4).
    feats = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)
    expected = torch.tensor([[[5.0, 11.0], [11.0, 25.0]]]) / 4
    torch.testing.assert_close(gram_matrix(feats), expected)
    # A spatial permutation leaves the Gram matrix unchanged (it only sees texture statistics).
    torch.testing.assert_close(gram_matrix(feats.flip(-1)), expected)


def test_style_loss_function_known_value() -> None:
    a = {"x": torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 2, 1, 2)}
    b = {"x": torch.zeros(1, 2, 1, 2)}
    gram = torch.tensor([5.0, 11.0, 11.0, 25.0]) / 4
    assert style_loss(a, b, {"x": 3.0}, "l2").item() == pytest.approx(3 * gram.pow(2).mean().item())
    assert style_loss(a, b, {"x": 1.0}, "l1").item() == pytest.approx(gram.mean().item())


def test_texture_term(vgg_cache, make_inputs) -> None:
    gt = torch.rand(1, 3, 32, 32)
    loss = StyleLoss(layer_weights={"relu1_1": 1.0, "relu2_1": 1.0})
    assert loss(make_inputs(gt.clone(), gt)).loss.item() == 0.0
    sr = torch.rand(1, 3, 32, 32, requires_grad=True)
    value = loss(make_inputs(sr, gt)).loss
    value.backward()
    assert value.item() > 0 and sr.grad.abs().sum() > 0

    # patch_size=16: the same as the whole-image loss on the four 16x16 tiles as a batch.
    tiled = StyleLoss(layer_weights={"relu1_1": 1.0, "relu2_1": 1.0}, patch_size=16)

    def tiles(x):
        return torch.cat([x[..., i : i + 16, j : j + 16] for i in (0, 16) for j in (0, 16)])

    with torch.no_grad():
        got = tiled(make_inputs(sr, gt)).loss
        want = loss(make_inputs(tiles(sr), tiles(gt))).loss
    assert got.item() == pytest.approx(want.item(), rel=1e-5)
