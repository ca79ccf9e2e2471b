"""sr_cli.rebuild: stored configs are built only from sr-cli's own models and degradations."""

from __future__ import annotations

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from sr_cli.errors import CheckpointError
from sr_cli.rebuild import rebuild
from tests.conftest import CONF, compose_train

# model=spandrel is built from a weights file (tests/models/test_published.py covers it).
MODELS = sorted(p.stem for p in (CONF / "model").glob("*.yaml") if p.stem != "spandrel")
DEGRADATIONS = sorted(p.stem for p in (CONF / "degradation").glob("*.yaml"))
DISCRIMINATORS = ["gan", "wgan_gp"]


def same_as_instantiate(node: dict, what: str) -> None:
    torch.manual_seed(0)
    ours = rebuild(node, "x.ckpt", what)
    torch.manual_seed(0)
    hydras = instantiate(node, _convert_="all")
    assert type(ours) is type(hydras)
    if isinstance(ours, torch.nn.Module):
        a, b = ours.state_dict(), hydras.state_dict()
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", MODELS)
def test_every_shipped_model_rebuilds(name):
    cfg = compose_train(["experiment=demo", f"model={name}"])
    same_as_instantiate(OmegaConf.to_container(cfg.model.generator, resolve=True), "model")


@pytest.mark.parametrize("name", DEGRADATIONS)
def test_every_shipped_degradation_rebuilds(name):
    cfg = compose_train(["experiment=demo", f"degradation={name}"])
    same_as_instantiate(OmegaConf.to_container(cfg.degradation, resolve=True), "degradation")


@pytest.mark.parametrize("term", DISCRIMINATORS)
def test_shipped_discriminators_rebuild(term):
    cfg = compose_train(["experiment=demo", f"loss=[{term}]"])
    node = OmegaConf.to_container(cfg.loss[term].discriminator, resolve=True)
    same_as_instantiate(node, "discriminator")


def test_args_partial_and_activation_blocks():
    part = rebuild(
        {"_target_": "sr_cli.degradations.pipeline.ResizeDownsample", "_partial_": True},
        "x.ckpt",
        "degradation",
    )
    assert part(scale=3).scale == 3
    built = rebuild(
        {"_target_": "sr_cli.degradations.pipeline.ResizeDownsample", "_args_": [2]},
        "x.ckpt",
        "degradation",
    )
    assert built.scale == 2
    assert isinstance(rebuild({"_target_": "torch.nn.GELU"}, "x.ckpt", "model"), torch.nn.GELU)
    node = {"_target_": "sr_cli.models.espcn.espcn", "scale": 2, "preset": "small"}
    assert rebuild(node, "x.ckpt", "model").scale == 2


REFUSED = [
    ("pathlib.Path.touch", "only classes and factories"),
    ("builtins.open", "only classes and factories"),
    ("os.system", "only classes and factories"),
    ("torch.load", "only classes and factories"),
    ("sr_cli.models.pretrained.Path.touch", "pathlib.Path.touch, defined outside"),
    ("sr_cli.models.pretrained.Path", "pathlib.Path, defined outside"),
    ("sr_cli.models.edsr.EDSR.load_state_dict", "defined outside"),
    ("sr_cli.models.edsr.EDSR.__init__.__globals__", "private or special"),
    ("sr_cli.models.pretrained._strip", "private or special"),
    ("sr_cli.models.edsr", "not a class or factory"),
    ("sr_cli.models", "only classes and factories"),
    ("sr_cli.train.lit.module.SRModule", "only classes and factories"),
    ("sr_cli.modelsx.edsr", "only classes and factories"),
    ("${oc.env:HOME}", "not a dotted Python name"),
    ("sr_cli.models.no_such_module.thing", "does not exist"),
]


@pytest.mark.parametrize(("target", "why"), REFUSED)
def test_refused_targets(target, why, tmp_path):
    victim = tmp_path / "victim"
    node = {"_target_": target, "_args_": [str(victim)]}
    with pytest.raises(CheckpointError) as info:
        rebuild(node, tmp_path / "bad.ckpt", "model")
    msg = str(info.value)
    assert why in msg and "bad.ckpt" in msg and f"_target_: {target}" in msg and "\n" not in msg
    assert not victim.exists()


def test_nothing_is_built_when_any_node_is_refused(tmp_path):
    """The check covers the whole tree before the first constructor runs."""
    victim = tmp_path / "victim"
    node = {
        "_target_": "sr_cli.degradations.pipeline.DegradationPipeline",
        "scale": 2,
        "stages": [
            {"_target_": "sr_cli.degradations.blur.Blur"},
            [{"_target_": "sr_cli.degradations.noise.Noise", "extra": [{"x": None}]}],
            {"_target_": "pathlib.Path.touch", "_args_": [str(victim)], "_partial_": True},
        ],
    }
    with pytest.raises(CheckpointError, match=r"at stages\[2\]"):
        rebuild(node, "x.ckpt", "degradation")
    with pytest.raises(CheckpointError, match="not a mapping with a _target_"):
        rebuild(["sr_cli.models.edsr.edsr"], "x.ckpt", "model")
    with pytest.raises(CheckpointError, match="_partial_ is not true/false"):
        rebuild({"_target_": "torch.nn.ReLU", "_partial_": "yes"}, "x.ckpt", "model")
    assert not victim.exists()


def test_omegaconf_containers_are_walked_too(tmp_path):
    victim = tmp_path / "victim"
    node = OmegaConf.create(
        {
            "_target_": "sr_cli.degradations.pipeline.DegradationPipeline",
            "scale": 2,
            "stages": [[{"_target_": "pathlib.Path.touch", "_args_": [str(victim)]}]],
        }
    )
    with pytest.raises(CheckpointError, match=r"at stages\[0\]\[0\]"):
        rebuild(node, "x.ckpt", "degradation")
    assert not victim.exists()


def test_degradations_stored_by_earlier_versions_still_rebuild():
    """Checkpoints of the previous release stored BicubicDownsample / resample.ResizeDownsample."""
    import torch

    from sr_cli.degradations.resize import imresize
    from sr_cli.rebuild import rebuild

    old = {
        "_target_": "sr_cli.degradations.resize.BicubicDownsample",
        "scale": 2,
        "quantize": False,
    }
    deg = rebuild(old, "old.ckpt", "degradation")
    hr = torch.rand(1, 3, 16, 16)
    assert torch.equal(deg(hr, deg.sample(hr)), imresize(hr, 1 / 2).clamp(0, 1))
    older = {
        "_target_": "sr_cli.degradations.resample.ResizeDownsample",
        "scale": 2,
        "mode": "area",
    }
    assert rebuild(older, "old.ckpt", "degradation").scale == 2
