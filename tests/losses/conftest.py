"""Shared fixtures for the loss tests: tiny LossInputs and a fake torchvision VGG19 cache."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision

from sr_cli.losses.base import LossInputs


def build_inputs(
    sr: torch.Tensor, gt: torch.Tensor, scale: int = 2, **kwargs: object
) -> LossInputs:
    """A LossInputs around SR/GT with an LQ made by average pooling (no trainer needed).
    ``discriminator=net`` stands for ``discriminators={"gan": net}``."""
    lq = torch.nn.functional.avg_pool2d(gt, scale) if scale > 1 else gt.clone()
    disc = kwargs.pop("discriminator", None)
    if disc is not None:
        kwargs["discriminators"] = {"gan": disc}
    return LossInputs(sr=sr, gt=gt, lq=lq, sr_levels=[sr], scale=scale, **kwargs)


@pytest.fixture
def make_inputs():
    """Factory ``make_inputs(sr, gt, scale=2, **LossInputs fields)`` (see :func:`build_inputs`)."""
    return build_inputs


def fake_vgg19_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's VGG19 keys and shapes with seeded values (He-scaled convs, zero classifier)."""
    with torch.device("meta"):
        skeleton = torchvision.models.vgg19(weights=None).state_dict()
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, meta in skeleton.items():
        if key.startswith("features.") and key.endswith("weight"):
            fan_in = math.prod(meta.shape[1:])
            state[key] = torch.randn(meta.shape, generator=g) * math.sqrt(2.0 / fan_in)
        elif key.startswith("features."):
            state[key] = 0.01 * torch.randn(meta.shape, generator=g)
        else:  # the classifier is never used by the extractor
            state[key] = torch.zeros(meta.shape)
    return state


@pytest.fixture(scope="session")
def fake_vgg_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A TORCH_HOME whose hub cache holds a generated vgg19-dcbb9e9d.pth; returns (home, state)."""
    home = tmp_path_factory.mktemp("torch_home")
    folder = home / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    state = fake_vgg19_state_dict()
    torch.save(state, folder / "vgg19-dcbb9e9d.pth")
    save_fake_dists_weights(folder)
    return home, state


def save_fake_dists_weights(folder: Path, seed: int = 0) -> None:
    """Generated files of the shapes piq's DISTS loads: torchvision's VGG16 and the alpha/beta
    channel weights (``(1, 1475, 1, 1)`` each, summing to 1 together)."""
    torch.manual_seed(seed)
    torch.save(torchvision.models.vgg16(weights=None).state_dict(), folder / "vgg16-397923af.pth")
    g = torch.Generator().manual_seed(seed)
    alpha, beta = torch.rand(1, 1475, 1, 1, generator=g), torch.rand(1, 1475, 1, 1, generator=g)
    total = alpha.sum() + beta.sum()
    torch.save({"alpha": alpha / total, "beta": beta / total}, folder / "dists_weights.pt")


def use_torch_home(monkeypatch: pytest.MonkeyPatch, home: Path) -> Path:
    """Point TORCH_HOME and torch.hub at ``home`` for one test (restored afterwards)."""
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.setattr(torch.hub, "_hub_dir", torch.hub._hub_dir)  # restore on teardown
    torch.hub.set_dir(str(home / "hub"))
    return home / "hub" / "checkpoints"


@pytest.fixture
def vgg_cache(monkeypatch: pytest.MonkeyPatch, fake_vgg_home: tuple[Path, dict]) -> dict:
    """The fake VGG19 weights, cached where the loss looks for them; returns the state dict."""
    home, state = fake_vgg_home
    use_torch_home(monkeypatch, home)
    return state


@pytest.fixture
def empty_torch_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A TORCH_HOME with no cached weights; returns the checkpoints folder the loss expects."""
    return use_torch_home(monkeypatch, tmp_path / "torch_home")
