"""sr-upscale and sr-eval out of accelerator memory: one line naming the tile option, nothing
half-written; and sr-eval's tiling (tile=...), which is what that line points to.

A generator that runs out of memory on inputs larger than ``max_side`` pixels (torch's own
exception and message) stands in for a real CUDA OOM on the CPU test machine. Checkpoints name
only sr-cli's own models: for these tests alone, the allow-list of :mod:`sr_cli.rebuild`
(``ALLOWED_PACKAGES``) is extended with this test package (monkeypatch)."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import pytest
import torch

from sr_cli.commands.upscale import main as upscale_main
from sr_cli.errors import OutOfMemory
from sr_cli.evaluate.evaluation import evaluate
from sr_cli.models.rrdbnet import RRDBNet, rrdbnet
from tests.evaluate.test_eval import compose_eval

MESSAGE = "CUDA out of memory. Tried to allocate 1.50 GiB. GPU 0 has 0 bytes free."


class OOMAboveSide(RRDBNet):
    """RRDBNet that runs out of memory on an input side over :attr:`max_side` pixels."""

    max_side = 0

    def forward(self, x):
        if max(x.shape[-2:]) > self.max_side:
            raise torch.OutOfMemoryError(MESSAGE)
        return super().forward(x)


def oom_above_side(max_side: int, **kwargs) -> RRDBNet:
    net = rrdbnet(**kwargs)
    net.__class__ = OOMAboveSide
    net.max_side = int(max_side)
    return net


@pytest.fixture
def oom_checkpoint(trained_run, tmp_path, monkeypatch) -> Path:
    """The tiny run's checkpoint, its generator config naming :func:`oom_above_side` (8 px)."""
    import sr_cli.models.detect
    import sr_cli.rebuild

    monkeypatch.setattr(
        sr_cli.rebuild, "ALLOWED_PACKAGES", (*sr_cli.rebuild.ALLOWED_PACKAGES, "tests.evaluate")
    )
    monkeypatch.setattr(  # the detector builds only generator classes and listed factories
        sr_cli.models.detect,
        "GENERATOR_FACTORIES",
        sr_cli.models.detect.GENERATOR_FACTORIES | {f"{__name__}.oom_above_side"},
    )
    ckpt = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt = copy.deepcopy(ckpt)
    gen = ckpt["sr_cli"]["model"]["generator"]
    gen["_target_"] = f"{__name__}.oom_above_side"
    gen["max_side"] = 8
    path = tmp_path / "oom.ckpt"
    torch.save(ckpt, path)
    return path


def test_upscale_out_of_memory_names_tile_and_writes_nothing_partial(
    oom_checkpoint, eval_images, tmp_path, capsys
):
    from PIL import Image

    out = tmp_path / "big"
    (tmp_path / "small").mkdir()
    images = []
    for src in sorted(eval_images.glob("*.png"))[:2]:  # 20x14 crops: sides over 8 px
        images.append(tmp_path / "small" / src.name)
        Image.open(src).crop((0, 0, 20, 14)).save(images[-1])
    for tile, hint in (
        ("0", "upscale on tiles: --tile 256 (now 0, the whole image at once)"),
        ("16", "lower --tile (now 16), e.g. --tile 8"),
    ):
        with pytest.raises(SystemExit) as info:
            upscale_main([str(oom_checkpoint), *map(str, images), "-o", str(out),
                          "--tile", tile, "--overlap", "2", "--device", "cpu", "-q"])  # fmt: skip
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1, err
        assert err[0] == (
            "sr-upscale: error: CUDA out of memory (tried to allocate 1.50 GiB) while upscaling "
            f"{str(images[0])!r}; {hint}; 0 image(s) written before it, none partly."
        )
        assert not out.exists() or not any(out.iterdir())
    # What the line says works: tiles of 8 LQ pixels fit.
    upscale_main([str(oom_checkpoint), *map(str, images), "-o", str(out), "--tile", "8",
                  "--overlap", "2", "--device", "cpu", "-q"])  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == [p.name for p in images]


def _psnr_rows(out: Path) -> dict[str, float]:
    with open(out / "results.csv", newline="") as f:
        return {r["model"]: float(r["psnr_y"]) for r in csv.DictReader(f) if r["psnr_y"]}


def test_eval_out_of_memory_names_tile_and_tiling_works(
    oom_checkpoint, trained_run, eval_images, tmp_path
):
    sets = f"datasets={{val3:{eval_images}}}"
    metrics = "metrics=[psnr_y,ssim_y]"
    out = tmp_path / "eval"
    with pytest.raises(OutOfMemory) as info:
        evaluate(compose_eval([f"checkpoints=[{oom_checkpoint}]", sets, metrics], out))
    assert str(info.value) == (
        "CUDA out of memory (tried to allocate 1.50 GiB) while evaluating; super-resolve on "
        "tiles with tile=256 (tile_overlap=16), or evaluate fewer checkpoints at once (now 1); "
        "nothing was written."
    )
    assert not (out / "results.csv").exists()
    with pytest.raises(OutOfMemory, match=r"lower tile \(now 16\), e\.g\. tile=8"):
        evaluate(compose_eval([f"checkpoints=[{oom_checkpoint}]", sets, metrics, "tile=16",
                               "tile_overlap=2"], out))  # fmt: skip
    results, _ = evaluate(
        compose_eval(
            [f"checkpoints=[{oom_checkpoint}]", sets, metrics, "tile=8", "tile_overlap=2"],
            tmp_path / "tiled8",
        )  # fmt: skip
    )
    assert "Generators ran on 8-pixel LQ tiles overlapping by 2" in results.caption
    # Tiling is what the OOM line points to, so its figures must hold: a tile as large as the
    # image is one pass (the very figures of no tiling); small tiles stay close to them.
    runs = [f"checkpoints=[{trained_run}]", sets, metrics]
    whole = _psnr_rows(evaluate(compose_eval(runs, tmp_path / "whole"))[0].output_dir)
    one = _psnr_rows(evaluate(compose_eval([*runs, "tile=64"], tmp_path / "one"))[0].output_dir)
    tiled = evaluate(compose_eval([*runs, "tile=8", "tile_overlap=4"], tmp_path / "t8"))[0]
    assert one == whole
    small = _psnr_rows(tiled.output_dir)
    assert small.keys() == whole.keys()
    for model, value in whole.items():
        assert abs(small[model] - value) < 0.3, (model, small[model], value)


@pytest.mark.parametrize("override,message", [
    ("tile=-1", "tile=-1 must be a whole number of LQ pixels >= 0"),
    ("tile=8", "tile_overlap=16 must be smaller than tile=8"),
])  # fmt: skip
def test_eval_tile_options_are_checked(override, message, trained_run, tmp_path):
    from sr_cli.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        evaluate(compose_eval([f"checkpoints=[{trained_run}]", override], tmp_path / "e"))
