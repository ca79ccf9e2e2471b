"""A checkpoint never runs code, also through the configs stored inside it.

Each crafted checkpoint is a real sr-train checkpoint (it loads with ``weights_only=True``)
whose stored model, degradation or discriminator config is edited to call
``pathlib.Path.touch`` / ``builtins.open`` on a file. Hydra's ``instantiate`` would create or
empty that file (checked below, so the payloads are real); every entry point refuses with a
one-line error naming the checkpoint, and no file appears or changes.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate

from sr_cli.errors import CheckpointError
from tests.evaluate.conftest import run_script

PRECIOUS = "precious data\n"


def touch(victim: Path) -> dict:
    return {"_target_": "pathlib.Path.touch", "_args_": [str(victim)]}


def payloads(victim: Path, precious: Path, real: dict) -> dict[str, dict]:
    """Stored configs: the attack at the top, nested in a real node, and as a ``_partial_``."""
    nested = copy.deepcopy(real)
    nested["extra"] = {"_target_": "builtins.open", "_args_": [str(precious), "w"]}
    nested["more"] = [{"inner": touch(victim)}]
    partial = copy.deepcopy(real)
    partial["hook"] = {**touch(victim), "_partial_": True}
    return {
        "top": touch(victim),
        "nested": nested,
        "partial": partial,
        "reexported": {"_target_": "sr_cli.models.pretrained.Path.touch", "_args_": [str(victim)]},
    }


def craft(src: Path, dst: Path, where: str, node: dict) -> Path:
    """Copy checkpoint ``src`` to ``dst`` with the stored config at ``where`` replaced."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    meta = ckpt["sr_cli"]
    if where == "model":
        meta["model"]["generator"] = node
    elif where == "degradation":
        meta["degradation"] = node
    else:
        meta["loss"]["gan"]["discriminator"] = node
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    torch.load(dst, map_location="cpu", weights_only=True)  # still a "safe" file
    return dst


def real_node(ckpt: Path, where: str) -> dict:
    meta = torch.load(ckpt, map_location="cpu", weights_only=True)["sr_cli"]
    return {
        "model": meta["model"]["generator"],
        "degradation": meta["degradation"],
        "discriminator": meta["loss"]["gan"]["discriminator"],
    }[where]


@pytest.fixture
def victims(tmp_path):
    victim = tmp_path / "victims" / "created.txt"
    precious = tmp_path / "victims" / "precious.txt"
    victim.parent.mkdir()
    precious.write_text(PRECIOUS)
    return victim, precious


def assert_untouched(victim: Path, precious: Path) -> None:
    assert not victim.exists(), "a stored config created a file"
    assert precious.read_text() == PRECIOUS, "a stored config emptied a file"


def test_the_payloads_are_real(gan_checkpoint, victims):
    """What Hydra's instantiate does with them: this is what the entry points must not do."""
    victim, precious = victims
    p = payloads(victim, precious, real_node(gan_checkpoint, "degradation"))
    instantiate(p["top"])
    assert victim.exists()
    victim.unlink()
    with pytest.raises(InstantiationException):
        instantiate(p["nested"], _convert_="all")  # open() ran before the outer call failed
    assert precious.read_text() == ""


@pytest.mark.parametrize("where", ["model", "degradation"])
@pytest.mark.parametrize("kind", ["top", "nested", "partial", "reexported"])
def test_load_generator_refuses(gan_checkpoint, tmp_path, victims, where, kind):
    from sr_cli.evaluate.inference import load_generator

    victim, precious = victims
    node = payloads(victim, precious, real_node(gan_checkpoint, where))[kind]
    bad = craft(gan_checkpoint, tmp_path / "bad" / "last.ckpt", where, node)
    with pytest.raises(CheckpointError) as info:
        load_generator(bad)
    msg = str(info.value)
    assert "\n" not in msg and str(bad) in msg and "refusing to build" in msg
    assert_untouched(victim, precious)


def test_upscale_refuses_in_a_real_process(gan_checkpoint, tmp_path, victims, eval_images):
    victim, precious = victims
    bad = craft(gan_checkpoint, tmp_path / "bad.ckpt", "model", touch(victim))
    img = sorted(eval_images.glob("*.png"))[0]
    res = run_script("sr-upscale", [str(bad), str(img), "-o", str(tmp_path / "o.png")], tmp_path)
    assert res.returncode == 2
    assert res.stderr.startswith("sr-upscale: error:") and str(bad) in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert "pathlib.Path.touch" in res.stderr
    assert_untouched(victim, precious)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("where", ["model", "degradation"])
def test_export_refuses(gan_checkpoint, tmp_path, victims, capsys, where):
    from sr_cli.commands.export import main

    victim, precious = victims
    node = payloads(victim, precious, real_node(gan_checkpoint, where))["nested"]
    bad = craft(gan_checkpoint, tmp_path / "bad.ckpt", where, node)
    with pytest.raises(SystemExit) as info:
        main([str(bad), "-o", str(tmp_path / "m.onnx")])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-export: error:") and str(bad) in err and err.count("\n") == 1
    assert_untouched(victim, precious)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("where", ["model", "degradation"])
def test_report_refuses(gan_checkpoint, tmp_path, victims, capsys, eval_images, where):
    import shutil

    from sr_cli.commands.report import main

    victim, precious = victims
    run = tmp_path / "run"
    shutil.copytree(gan_checkpoint.parent.parent, run)
    node = payloads(victim, precious, real_node(gan_checkpoint, where))["top"]
    craft(gan_checkpoint, run / "checkpoints" / "last.ckpt", where, node)
    (run / "checkpoints" / "best.ckpt").unlink(missing_ok=True)
    with pytest.raises(SystemExit) as info:
        main([str(run), "-o", str(tmp_path / "report"), "--images", str(eval_images)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-report: error:") and "last.ckpt" in err and err.count("\n") == 1
    assert_untouched(victim, precious)


@pytest.mark.parametrize("where", ["model", "degradation"])
def test_eval_refuses(gan_checkpoint, tmp_path, victims, capsys, eval_images, where):
    from sr_cli.commands.eval import _run
    from tests.evaluate.test_eval import compose_eval

    victim, precious = victims
    node = payloads(victim, precious, real_node(gan_checkpoint, where))["partial"]
    bad = craft(gan_checkpoint, tmp_path / "bad.ckpt", where, node)
    cfg = compose_eval(
        [f"checkpoints=[{bad}]", f"datasets={{val3:{eval_images}}}", "metrics=[psnr_y]"],
        tmp_path / "e",
    )
    with pytest.raises(SystemExit) as info:
        _run(cfg)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-eval: error:") and str(bad) in err and err.count("\n") == 1
    assert_untouched(victim, precious)


@pytest.mark.parametrize("kind", ["top", "nested", "partial", "reexported"])
def test_disc_perceptual_refuses(gan_checkpoint, tmp_path, victims, kind):
    from sr_cli.losses.disc_perceptual import DiscriminatorPerceptualLoss, load_discriminator

    victim, precious = victims
    node = payloads(victim, precious, real_node(gan_checkpoint, "discriminator"))[kind]
    bad = craft(gan_checkpoint, tmp_path / "bad.ckpt", "discriminator", node)
    with pytest.raises(CheckpointError, match="loss.gan.discriminator") as info:
        DiscriminatorPerceptualLoss(checkpoint=str(bad))
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    assert_untouched(victim, precious)
    # The untouched checkpoint still gives its discriminator.
    assert load_discriminator(gan_checkpoint).training is False


@pytest.mark.parametrize(
    "edit,expected",
    [
        ("scale", "its stored sr_cli.scale is '${oc.env:HOME}' (str), not a positive integer"),
        ("generator_scale", "its stored model config does not build (ValueError: invalid literal"),
        ("shape", "does not fit its own model config: Error(s) in loading state_dict for RRDBNet:"),
    ],
)
def test_stored_values_of_the_wrong_type_are_one_line_in_sr_upscale(
    trained_run, eval_images, tmp_path, capsys, edit, expected
):
    """Issue #26: a string where the scale belongs gave a ValueError traceback in sr-upscale; a
    weight of the wrong shape gave a traceback too (and its explanation must not be cut)."""
    from sr_cli.commands.upscale import main

    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    if edit == "scale":
        ckpt["sr_cli"]["scale"] = "${oc.env:HOME}"
    elif edit == "generator_scale":
        ckpt["sr_cli"]["model"]["generator"]["scale"] = "${oc.env:HOME}"
    else:
        key = next(k for k in ckpt["state_dict"] if k.startswith("generator."))
        ckpt["state_dict"][key] = torch.zeros(3)
    bad = tmp_path / "bad.ckpt"
    torch.save(ckpt, bad)
    out = tmp_path / "o.png"
    with pytest.raises(SystemExit) as info:
        main([str(bad), str(sorted(eval_images.glob("*.png"))[0]), "-o", str(out), "-q"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-upscale: error: ") and err.count("\n") == 1 and str(bad) in err
    assert expected in err
    if edit == "shape":
        assert "size mismatch for conv_first.weight: copying a param with shape" in err
    assert not out.exists()
