"""Published weights everywhere a checkpoint is accepted: sr-eval, sr-upscale, sr-report and
``sr-train model=spandrel model.pretrained=...``, on generated weights of each spandrel family."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from sr_cli.commands.upscale import main as upscale_main
from sr_cli.evaluate.evaluation import evaluate
from sr_cli.evaluate.inference import load_generator, super_resolve
from sr_cli.models.community import FAMILIES
from tests.conftest import TINY, compose_train
from tests.evaluate.conftest import run_script
from tests.evaluate.test_eval import compose_eval
from tests.models.test_published import basicsr_edsr_sd, random_state_dict

DETECTED_NAME = {
    "span": "SPAN",
    "realplksr": "RealPLKSR",
    "compact": "RealESRGAN Compact",
    "omnisr": "OmniSR",
    "hat": "HAT",
    "dat": "DAT",
}


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> dict[str, object]:
    """``{family: path}``: generated x2 weights of each family saved as published files
    (BasicSR ``params_ema`` containers, Compact as ``.safetensors``), plus a BasicSR EDSR."""
    folder = tmp_path_factory.mktemp("published")
    out = {}
    for name, (factory, _) in sorted(FAMILIES.items()):
        torch.manual_seed(0)
        net = factory(scale=2, preset="small")
        sd = random_state_dict(net, 1)
        if name == "compact":
            path = folder / f"2x-{name}.safetensors"
            save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
        else:
            path = folder / f"2x-{name}.pth"
            torch.save({"params_ema": sd}, path)
        out[name] = path
    sd, _ = basicsr_edsr_sd(num_feat=16, num_block=2, scale=2)
    out["edsr"] = folder / "EDSR_Mx2_f16b2.pth"
    torch.save({"params": sd}, out["edsr"])
    return out


def test_sr_eval_names_the_detected_architectures(published, eval_images, tmp_path, no_hub_cache):
    names = [*DETECTED_NAME, "edsr"]
    ckpts = ",".join(str(published[n]) for n in names)
    out = tmp_path / "eval"
    cfg = compose_eval(
        [f"checkpoints=[{ckpts}]", f"datasets={{val3:{eval_images}}}", "metrics=[psnr_y,ssim_y]"],
        out,
    )
    results, _ = evaluate(cfg)
    rows = list(csv.DictReader(open(out / "results.csv")))
    archs = {r["model"]: r["arch"] for r in rows}
    for n in names:
        label = published[n].stem
        assert archs[label] == DETECTED_NAME.get(n, "EDSR"), (label, archs)
        row = results.row("val3", label)
        assert row["images"] == 3 and 0 < row["psnr_y"] < 100


@pytest.mark.parametrize("name", sorted(DETECTED_NAME))
def test_sr_upscale_a_published_file(published, tmp_path, name):
    src = tmp_path / "photos"
    src.mkdir()
    rgb = (torch.rand(3, 13, 17, generator=torch.Generator().manual_seed(0)) * 255).byte()
    Image.fromarray(rgb.permute(1, 2, 0).numpy()).save(src / "a.png")
    upscale_main([str(published[name]), str(src), "-o", str(tmp_path / "out"), "-q"])
    out = Image.open(tmp_path / "out" / "a.png")
    assert out.size == (34, 26)
    loaded = load_generator(published[name])
    x = rgb.float().div(255).unsqueeze(0)
    ref = (super_resolve(loaded.generator, x)[0] * 255).round().byte().permute(1, 2, 0)
    got = torch.from_numpy(np.asarray(out.convert("RGB")).copy())
    assert (got.int() - ref.int()).abs().max() <= 1


@pytest.mark.parametrize("name", sorted(DETECTED_NAME))
def test_sr_train_fine_tunes_a_detected_model(published, tmp_path, name):
    """``sr-train model=spandrel model.pretrained=...``: spandrel's module is the generator; its
    checkpoint is rebuilt by detection from its own weights (no need for the original file)."""
    from sr_cli.train.training import train

    out = tmp_path / "run"
    cfg = compose_train(
        [
            *TINY,
            "model=spandrel",
            f"model.pretrained={published[name]}",
            "scale=2",
            "loss=[l1]",
            "trainer.max_steps=1",
            "val.save_images=0",
        ],
        output_dir=out,
    )
    _, objects = train(cfg)
    module = objects["module"]
    before = load_generator(published[name]).generator
    assert type(module.generator).__module__.startswith("spandrel.")
    changed = any(
        not torch.equal(p, q)
        for p, q in zip(module.generator.state_dict().values(), before.state_dict().values())
    )
    assert changed, "one optimizer step should change the weights"
    loaded = load_generator(out / "checkpoints" / "last.ckpt", prefer_ema=False)
    assert loaded.scale == 2 and type(loaded.generator) is type(module.generator)
    x = torch.rand(1, 3, 16, 16)
    module.generator.eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded.generator(x), module.generator(x))


def test_installed_scripts_accept_a_published_file(published, eval_images, tmp_path):
    res = run_script(
        "sr-eval",
        [
            f"checkpoints=[{published['compact']}]",
            f"datasets={{val3:{eval_images}}}",
            "trainer.accelerator=cpu",
            "trainer.enable_progress_bar=false",
            "metrics=[psnr_y]",
            f"hydra.run.dir={tmp_path / 'cli'}",
        ],
        tmp_path,
        env_extra={"WANDB_MODE": "disabled"},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.DictReader(open(tmp_path / "cli" / "results.csv")))
    assert [r["arch"] for r in rows] == ["MATLAB bicubic", "RealESRGAN Compact"]
    up = tmp_path / "up"
    res = run_script(
        "sr-upscale", [str(published["span"]), str(eval_images), "-o", str(up), "-q"], tmp_path
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert len(list(up.glob("*.png"))) == 3


def test_sr_report_compares_a_run_with_a_published_file(
    published, trained_run, eval_images, tmp_path
):
    """sr-report takes a bare published file next to a run (x4 EDSR weights, BasicSR layout)."""
    from sr_cli.report.page import build_report
    from tests.models.test_published import basicsr_edsr_sd

    sd, _ = basicsr_edsr_sd(num_feat=16, num_block=2, scale=4)
    edsr_file = tmp_path / "EDSR_Mx4_f16b2.pth"
    torch.save({"params": sd}, edsr_file)
    out = tmp_path / "report"
    page = build_report([trained_run, edsr_file], out, images=eval_images, max_images=1)
    html = page.read_text()
    assert "EDSR_Mx4_f16b2" in html
