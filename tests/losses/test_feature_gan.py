"""SRFeat's feature discriminator (``feature_gan``) and one discriminator optimizer per
adversarial term.

The VGG19 weights are generated (``fake_vgg_home``: torchvision's keys and shapes, seeded values)
and put in a temporary torch hub cache, as the perceptual-loss tests do.
"""

from __future__ import annotations

import csv

import pytest
import torch

from sr_cli.losses.adversarial import GAN_TYPES, AdversarialLoss
from sr_cli.losses.feature_gan import FeatureAdversarialLoss, vgg19_channels
from sr_cli.losses.perceptual import VGGFeatureExtractor
from sr_cli.models.discriminators import FeatureDiscriminator
from sr_cli.train.training import train
from tests.losses.conftest import use_torch_home


@pytest.fixture
def vgg_home(fake_vgg_home, monkeypatch):
    home, _ = fake_vgg_home
    use_torch_home(monkeypatch, home)
    return home


def _term(gan_type: str, **kw) -> FeatureAdversarialLoss:
    torch.manual_seed(0)
    return FeatureAdversarialLoss(
        FeatureDiscriminator(512, num_feat=8, num_blocks=1), gan_type=gan_type, **kw
    )


@pytest.mark.parametrize("gan_type", GAN_TYPES)
def test_is_the_adversarial_loss_on_vgg_features(gan_type, vgg_home, make_inputs):
    """The term equals AdversarialLoss played on VGG19 conv5_4 maps computed independently;
    the generator gets a gradient through VGG, the discriminator step trains only D."""
    term = _term(gan_type, r1_weight=0.5)
    g = torch.Generator().manual_seed(1)
    gt = torch.rand(2, 3, 32, 32, generator=g)
    sr = torch.rand(2, 3, 32, 32, generator=g, requires_grad=True)
    extractor = VGGFeatureExtractor(["conv5_4"])
    plain = AdversarialLoss(term.discriminator, gan_type=gan_type, r1_weight=0.5)
    f_sr, f_gt = extractor(sr)["conv5_4"], extractor(gt)["conv5_4"].detach()
    assert f_sr.shape == (2, 512, 2, 2)
    expected = plain.compute(make_inputs(f_sr, f_gt))
    value = term.compute(make_inputs(sr, gt))
    assert torch.allclose(value, expected, atol=1e-6)
    value.backward()
    assert sr.grad is not None and float(sr.grad.abs().sum()) > 0
    assert all(p.grad is None for p in term.extractor.parameters())

    term.zero_grad(set_to_none=True)
    torch.manual_seed(3)  # wgan_gp draws its interpolation weights
    d_value = term.discriminator_loss(make_inputs(sr.detach(), gt))
    torch.manual_seed(3)
    d_expected = plain.discriminator_loss(make_inputs(f_sr.detach(), f_gt))
    assert torch.allclose(d_value, d_expected, atol=1e-6)
    d_value.backward()
    assert all(p.grad is not None for p in term.discriminator.parameters())
    assert all(p.grad is None for p in term.extractor.parameters())


def test_layer_and_discriminator_channels_must_agree(vgg_home):
    from sr_cli.errors import ConfigError

    assert vgg19_channels("conv5_4") == 512 and vgg19_channels("relu3_4") == 256
    with pytest.raises(ConfigError, match="in_channels=256"):
        FeatureAdversarialLoss(FeatureDiscriminator(512), layer="relu3_4")


def test_vgg_weights_not_cached_is_one_clear_error(tmp_path, monkeypatch):
    from sr_cli.errors import WeightsUnavailableError

    use_torch_home(monkeypatch, tmp_path / "empty")
    with pytest.raises(WeightsUnavailableError, match="vgg19-dcbb9e9d.pth"):
        FeatureAdversarialLoss(FeatureDiscriminator(512))


# ------------------------------------------------------------------------------- training
def _train(tiny_cfg, out, *overrides):
    cfg = tiny_cfg("val.save_images=0", *overrides, out=out)
    _, objects = train(cfg)
    return objects


#: Every type's loss is checked above; the training loop is the same for all, so the default
#: suite trains SRFeat's own (vanilla) and the one with a gradient penalty, the rest run as slow.
TRAINED_TYPES = [
    t if t in ("vanilla", "wgan_gp") else pytest.param(t, marks=pytest.mark.slow) for t in GAN_TYPES
]


@pytest.mark.parametrize("gan_type", TRAINED_TYPES)
def test_trains_next_to_the_image_gan_with_every_gan_type(
    gan_type, vgg_home, tiny_cfg, val_subset, tmp_path
):
    objects = _train(
        tiny_cfg,
        tmp_path / gan_type,
        "loss=[l1,gan,feature_gan]",
        f"data.val_dir={val_subset}",
        f"loss.feature_gan.gan_type={gan_type}",
        "loss.feature_gan.discriminator.num_feat=8",
        "loss.gan.discriminator.num_feat=8",
    )
    module, trainer = objects["module"], objects["trainer"]
    assert list(module.adversarial) == ["gan", "feature_gan"]
    opt_g, opt_gan, opt_feat = trainer.optimizers  # one discriminator optimizer per term
    feat_d = module.losses["feature_gan"].discriminator
    in_opt = {id(p) for grp in opt_feat.param_groups for p in grp["params"]}
    assert in_opt == {id(p) for p in feat_d.parameters()}
    assert all(int(opt_feat.state[p]["step"]) == 2 for p in feat_d.parameters())
    logged = trainer.callback_metrics
    assert torch.isfinite(logged["train/loss_feature_gan"])
    assert torch.isfinite(logged["train/loss_feature_gan_d"])


def test_each_discriminator_has_its_own_schedule_from_its_own_start(
    vgg_home, tiny_cfg, val_subset, tmp_path
):
    """With one shared optimizer, a term whose discriminator starts later got the schedule of
    the first; now each term's LR follows its own steps (lr/discriminator_<term> in the logs)."""
    out = tmp_path / "sched"
    objects = _train(
        tiny_cfg,
        out,
        "loss=[l1,gan,feature_gan]",
        f"data.val_dir={val_subset}",
        "trainer.max_steps=4",
        "data.iters_per_epoch=4",
        "loss.feature_gan.d_start_step=2",
        "loss.feature_gan.discriminator.num_feat=8",
        "loss.gan.discriminator.num_feat=8",
        "optim.discriminator.lr=1e-3",
        "optim.scheduler=null",
        "optim.discriminator_scheduler={_target_:torch.optim.lr_scheduler.StepLR,"
        "_partial_:true,step_size:1,gamma:0.5}",
    )
    _, opt_gan, opt_feat = objects["trainer"].optimizers
    assert opt_gan.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**4)  # 4 steps
    assert opt_feat.param_groups[0]["lr"] == pytest.approx(1e-3 * 0.5**2)  # from iteration 2
    rows = [r for r in csv.DictReader(open(out / "metrics.csv")) if r.get("lr/discriminator")]
    # logged after the iteration's discriminator steps: iteration 3 is its second step
    assert float(rows[-1]["lr/discriminator_feature_gan"]) == pytest.approx(1e-3 * 0.5**2)
    assert float(rows[-1]["lr/discriminator"]) == pytest.approx(1e-3 * 0.5**4)
    # not trained before its d_start_step: the first two iterations leave its weights alone
    feat_d = objects["module"].losses["feature_gan"].discriminator
    assert all(int(opt_feat.state[p]["step"]) == 2 for p in feat_d.parameters())


def test_resume_is_exact_with_both_discriminators(vgg_home, tiny_cfg, val_subset, tmp_path):
    """Both discriminators, their optimizers and the generator resume bit-identically."""
    common = [
        "loss=[l1,gan,feature_gan]",
        f"data.val_dir={val_subset}",
        "loss.feature_gan.discriminator.num_feat=8",
        "loss.gan.discriminator.num_feat=8",
    ]
    straight = _train(tiny_cfg, tmp_path / "a", *common, "trainer.max_steps=3")
    _train(tiny_cfg, tmp_path / "b", *common, "trainer.max_steps=1")
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    assert any(k.startswith("losses.feature_gan.discriminator.") for k in ckpt["state_dict"])
    assert not any(k.startswith("losses.feature_gan.extractor.") for k in ckpt["state_dict"])
    assert len(ckpt["optimizer_states"]) == 3
    resumed = _train(tiny_cfg, tmp_path / "c", *common, "trainer.max_steps=3", f"resume={last}")
    a, b = straight["module"], resumed["module"]
    assert a.iteration == b.iteration == 3
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), f"{name} differs after resume"
    for oa, ob in zip(straight["trainer"].optimizers, resumed["trainer"].optimizers):
        for pa, pb in zip(oa.state.values(), ob.state.values()):
            assert all(torch.equal(pa[k], pb[k]) for k in pa), "optimizer state differs"


def test_a_changed_discriminator_rate_on_resume_reaches_every_discriminator(
    tiny_cfg, val_subset, tmp_path
):
    common = [
        "loss=[l1,gan]",
        "+loss.lsq._target_=tests.losses.test_contract.LeastSquaresTerm",
        "+loss.lsq.d_start_step=0",
        f"data.val_dir={val_subset}",
        "loss.gan.discriminator.num_feat=8",
        "optim.scheduler=null",
    ]
    _train(tiny_cfg, tmp_path / "a", *common, "trainer.max_steps=1")
    last = tmp_path / "a" / "checkpoints" / "last.ckpt"
    resumed = _train(
        tiny_cfg,
        tmp_path / "b",
        *common,
        "trainer.max_steps=2",
        f"resume={last}",
        "optim.discriminator.lr=3e-5",
    )
    _, opt_gan, opt_lsq = resumed["trainer"].optimizers
    assert opt_gan.param_groups[0]["lr"] == opt_lsq.param_groups[0]["lr"] == pytest.approx(3e-5)
