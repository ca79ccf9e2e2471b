"""Issue #26: the project's own weights files work in every command that takes weights.

The bundled warm start and the ``*.generator.safetensors`` a small-preset ESRGAN run writes
beside its checkpoints (the README's "file to keep and share") were refused by sr-upscale:
spandrel built growth 32 where the small preset has 16. Their metadata now says what they are,
and each gives the very picture its run gives.
"""

from __future__ import annotations

import csv
import inspect
import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from sr_cli.commands.upscale import main as upscale_main
from sr_cli.data import DEMO_WEIGHTS, WEIGHTS_DIR
from sr_cli.errors import ConfigError
from sr_cli.evaluate.evaluation import evaluate
from sr_cli.evaluate.export import export
from sr_cli.evaluate.inference import load_generator, resolve_checkpoint
from sr_cli.models.metadata import generator_metadata
from sr_cli.models.rrdbnet import RRDBNet
from sr_cli.train.lit.callbacks import generator_weights_path
from tests.conftest import TINY, compose_train
from tests.evaluate.conftest import run_script
from tests.evaluate.test_eval import compose_eval

BUNDLED = WEIGHTS_DIR / DEMO_WEIGHTS[("esrgan", "small", 4)]


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    g = torch.Generator().manual_seed(0)
    for i, (h, w) in enumerate([(13, 17), (21, 9)]):
        rgb = (torch.rand(h, w, 3, generator=g) * 255).byte().numpy()
        Image.fromarray(rgb).save(folder / f"p{i}.png")
    return folder


def upscaled(weights, photos, out) -> dict[str, np.ndarray]:
    upscale_main([str(weights), str(photos), "-o", str(out), "-q"])
    return {p.name: np.asarray(Image.open(p)) for p in sorted(out.glob("*.png"))}


def same_pictures(a: dict, b: dict) -> bool:
    return len(a) == 2 and a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def demo_model_config() -> dict:
    """The model config `make pretrain-demo` trains (experiment=demo_pretrain)."""
    cfg = compose_train(["model=esrgan", "loss=l1", "experiment=demo_pretrain"])
    return OmegaConf.to_container(cfg.model, resolve=True)


def test_bundled_warm_start_upscales_as_its_run(tmp_path, photos):
    with safe_open(str(BUNDLED), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == "sr-cli generator" and meta["scale"] == "4"
    stored, wanted = json.loads(meta["model"]), demo_model_config()
    # The file predates options added since (RRDBNet's upsampler): it leaves out only
    # arguments at their factory defaults, so it describes the same generator.
    defaults = inspect.signature(RRDBNet).parameters
    left_out = {k: v for k, v in wanted["generator"].items() if k not in stored["generator"]}
    assert all(defaults[k].default == v for k, v in left_out.items()), left_out
    stored["generator"].update(left_out)
    assert stored == wanted
    # The run folder of those weights: the checkpoint sr-train writes, with its stored config.
    run = tmp_path / "pretrain_run"
    (run / "checkpoints").mkdir(parents=True)
    state = {f"generator.{k}": v for k, v in load_file(BUNDLED).items()}
    stored = {"model": demo_model_config(), "scale": 4, "iteration": 2000}
    torch.save({"state_dict": state, "sr_cli": stored}, run / "checkpoints" / "last.ckpt")
    assert same_pictures(
        upscaled(BUNDLED, photos, tmp_path / "a"), upscaled(run, photos, tmp_path / "b")
    )


def test_run_generator_snapshot_upscales_as_the_run_folder(trained_run, photos, tmp_path):
    """A real 2-iteration small-preset ESRGAN run: its generator snapshot gives the run's
    picture, pixel for pixel."""
    snapshot = generator_weights_path(resolve_checkpoint(trained_run))
    assert snapshot.is_file()
    assert same_pictures(
        upscaled(snapshot, photos, tmp_path / "a"), upscaled(trained_run, photos, tmp_path / "b")
    )


def test_every_command_takes_the_snapshot(trained_run, eval_images, tmp_path, no_hub_cache):
    from sr_cli.rate.crops import load_runs
    from sr_cli.report.page import build_report

    snapshot = generator_weights_path(resolve_checkpoint(trained_run))
    # sr-eval: the run, its snapshot and the bundled warm start; the first two are one network
    out = tmp_path / "eval"
    ckpts = f"{trained_run},{snapshot},{BUNDLED}"
    cfg = compose_eval(
        [f"checkpoints=[{ckpts}]", f"datasets={{val3:{eval_images}}}", "metrics=[psnr_y,ssim_y]"],
        out,
    )
    evaluate(cfg)
    rows = list(csv.DictReader(open(out / "results.csv")))
    run_row, snap_row, bundled_row = rows[1:]
    assert snap_row["checkpoint"] == str(snapshot) and bundled_row["arch"] == "esrgan"
    assert (snap_row["psnr_y"], snap_row["ssim_y"]) == (run_row["psnr_y"], run_row["ssim_y"])
    # sr-export: written with its description, read back exactly
    report = export(snapshot, tmp_path / "shared.safetensors", fmt="safetensors")
    assert report.detected == "ESRGAN (from its metadata)"
    assert max(report.max_abs_diff.values()) == 0.0
    # sr-report and sr-rate
    page = build_report(
        [trained_run, snapshot], tmp_path / "report", images=eval_images, max_images=1
    )
    assert snapshot.name.split(".")[0] in page.read_text() or str(snapshot) in page.read_text()
    (rated,) = load_runs([str(snapshot)])
    run_net = load_generator(resolve_checkpoint(trained_run)).generator
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        assert rated.scale == 4 and torch.equal(rated.generator(x), run_net(x))


def test_sr_train_warm_start_must_match_the_configured_model(tmp_path):
    from sr_cli.train.training import train

    cfg = compose_train(
        [*TINY, "model=esrgan", f"model.pretrained={BUNDLED}", "++model.generator.num_grow_ch=8"],
        output_dir=tmp_path / "run",
    )
    with pytest.raises(ConfigError, match="num_grow_ch=16 in the file, 8 in the model"):
        train(cfg)


def test_installed_sr_upscale_takes_the_bundled_file_and_refuses_crafted_metadata(tmp_path, photos):
    res = run_script(
        "sr-upscale", [str(BUNDLED), str(photos), "-o", str(tmp_path / "up"), "-q"], tmp_path
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list((tmp_path / "up").glob("*.png"))) == 2
    # metadata naming a function inside sr_cli.models that writes a file: refused, nothing runs
    marker = tmp_path / "written.safetensors"
    evil = tmp_path / "4x-evil.safetensors"
    model = {
        "name": "esrgan",
        "generator": {
            "_target_": "sr_cli.models.pretrained.export_generator",
            "checkpoint": str(BUNDLED),
            "out": str(marker),
        },
    }
    save_file(load_file(BUNDLED), str(evil), metadata=generator_metadata(model, 4))
    res = run_script("sr-upscale", [str(evil), str(photos), "-o", str(tmp_path / "no")], tmp_path)
    assert res.returncode == 2 and "is not a generator" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not marker.exists() and not (tmp_path / "no").exists()
