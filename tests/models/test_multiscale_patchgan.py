"""Multi-scale PatchGAN-SN: shapes per scale, spectral norm, and use inside the gan term."""

from __future__ import annotations

import torch

from sr_cli.models.discriminators import MultiScalePatchGANSN, PatchGANDiscriminator


def test_logits_of_every_scale_are_concatenated():
    torch.manual_seed(0)
    d = MultiScalePatchGANSN(num_feat=8, n_layers=3, num_scales=3).eval()  # no power step
    x = torch.rand(2, 3, 128, 96)
    out, feats = d(x, return_features=True)
    # one 70x70 PatchGAN at 128x96, 64x48, 32x24: (H/8 - 2) x (W/8 - 2) logits each
    single = PatchGANDiscriminator(3, 8, 3, norm="none")
    sizes = [single(torch.rand(1, 3, h, w)).numel() for h, w in ((128, 96), (64, 48), (32, 24))]
    assert sizes == [14 * 10, 6 * 4, 2 * 1]
    assert out.shape == (2, sum(sizes))
    assert len(feats) == 3 * 4
    # each scale sees the 3x3/2 average-pooled image of the previous one
    pooled = torch.nn.functional.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
    assert torch.allclose(
        d.discriminators[1](pooled).flatten(1), out[:, sizes[0] : sizes[0] + sizes[1]]
    )


def test_every_conv_is_spectrally_normalised():
    d = MultiScalePatchGANSN(num_feat=8, num_scales=2)
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(hasattr(c, "parametrizations") for c in convs)
    d.train()
    for _ in range(20):  # power iterations converge: largest singular value of W/sigma -> 1
        d(torch.rand(1, 3, 64, 64))
    w = convs[1].weight.flatten(1)
    assert torch.linalg.matrix_norm(w, ord=2).item() < 1.05


def test_gan_term_config_trains(tiny_cfg, val_subset, tmp_path):
    from sr_cli.train.training import train

    cfg = tiny_cfg(
        "loss=[l1,multiscale_patchgan]",
        "loss.multiscale_patchgan.discriminator.num_feat=8",
        "loss.multiscale_patchgan.discriminator.num_scales=2",
        "data.patch_size=64",
        f"data.val_dir={val_subset}",
        "+trainer.fast_dev_run=true",
        out=tmp_path / "msgan",
    )
    metrics, objects = train(cfg)
    assert "train/loss_multiscale_patchgan" in metrics
    assert (
        type(objects["module"].losses["multiscale_patchgan"].discriminator).__name__
        == "MultiScalePatchGANSN"
    )
