"""DISTS loss: offline message, and values with generated weight files of the right shape."""

from __future__ import annotations

import pytest
import torch

from sr_cli.errors import WeightsUnavailableError
from sr_cli.losses.base import LossInputs
from sr_cli.losses.dists import DISTSLoss, dists_weight_files


@pytest.fixture
def hub(tmp_path, monkeypatch):
    home = tmp_path / "torch_home"
    (home / "hub" / "checkpoints").mkdir(parents=True)
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home / "hub" / "checkpoints"


def test_missing_weights_name_the_file_and_the_folder(hub):
    with pytest.raises(WeightsUnavailableError) as err:
        DISTSLoss()
    msg = str(err.value)
    assert "vgg16-397923af.pth" in msg and "dists_weights.pt" in msg and str(hub) in msg


def test_generated_weights_give_zero_on_identical_images(hub):
    from torchvision.models import vgg16

    torch.manual_seed(0)
    files = list(dists_weight_files())
    torch.save(vgg16().state_dict(), hub / files[0])
    channels = 3 + 64 + 128 + 256 + 512 + 512
    alpha, beta = torch.rand(1, channels, 1, 1), torch.rand(1, channels, 1, 1)
    total = alpha.sum() + beta.sum()
    torch.save({"alpha": alpha / total, "beta": beta / total}, hub / files[1])
    term = DISTSLoss()
    x = torch.rand(1, 3, 64, 64)
    same = LossInputs(sr=x, gt=x.clone(), lq=x[..., ::4, ::4], sr_levels=[x])
    assert term(same).loss.item() == pytest.approx(0.0, abs=1e-5)
    y = (x + 0.3 * torch.randn_like(x)).clamp(0, 1).requires_grad_()
    other = LossInputs(sr=y, gt=x, lq=x[..., ::4, ::4], sr_levels=[y])
    value = term(other).loss
    assert 0 < value.item() < 1
    value.backward()
    assert y.grad is not None and not any(p.requires_grad for p in term.parameters())
