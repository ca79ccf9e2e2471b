"""sr-cli as a package: the sdist and the wheel build cleanly and pass ``twine check``, hold every
file of the package (configs, sample images, weights, the sweeper plugin), and every command works
from the installed wheel, run from another folder (issue #21).

The wheel goes into a fresh venv that reuses this environment's packages through a ``.pth`` file
(torch and the rest are not installed again) and gets only the wheel itself (``--no-deps``);
the test checks that ``sr_cli`` is then imported from that venv, not from this checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from pathlib import Path

import pytest
import yaml

import sr_cli

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
COMMANDS = [
    "sr-train",
    "sr-eval",
    "sr-upscale",
    "sr-report",
    "sr-export",
    "sr-data",
    "sr-study",
    "sr-rate",
]
TINY_TRAIN = [
    "trainer.accelerator=cpu",
    "data.num_workers=0",
    "data.patch_size=32",
    "data.batch_size=2",
    "data.iters_per_epoch=2",
    "trainer.max_steps=2",
    "trainer.enable_progress_bar=false",
]


def _git_files(*paths: str) -> set[str]:
    try:
        out = subprocess.run(
            ["git", "ls-files", *paths], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return set(out.split())


@pytest.fixture(scope="module")
def dists(tmp_path_factory) -> tuple[Path, Path]:
    """``python -m build`` (the sdist, then the wheel built from it), offline with this venv's
    setuptools; no warning; ``twine check --strict`` passes."""
    out = tmp_path_factory.mktemp("dist")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    res = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(REPO)],
        capture_output=True, text=True, env=env, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    assert not [line for line in log.splitlines() if "warning" in line.lower()], log[-3000:]
    (wheel,) = out.glob("*.whl")
    (sdist,) = out.glob("*.tar.gz")
    check = subprocess.run(
        [sys.executable, "-m", "twine", "check", "--strict", str(wheel), str(sdist)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    return wheel, sdist


def test_distributions_hold_every_file(dists):
    wheel, sdist = dists
    names = set(zipfile.ZipFile(wheel).namelist())
    assert not _git_files("sr_cli", "hydra_plugins") - names
    assert "sr_cli/conf/train.yaml" in names and "sr_cli/conf/study/downsample.yaml" in names
    meta = (
        zipfile.ZipFile(wheel)
        .read(f"sr_cli-{sr_cli.__version__}.dist-info/entry_points.txt")
        .decode()
    )
    assert all(f"{c} = " in meta for c in COMMANDS)
    # the sdist has the whole repository but the top-level conf symlink (and .gitignore)
    with tarfile.open(sdist) as tar:
        held = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    assert _git_files() - held == {"conf", ".gitignore"}
    assert not [n for n in held if "__pycache__" in n or n.endswith(".pyc")]


@pytest.fixture(scope="module")
def venv(dists, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel; this environment's packages through a .pth file."""
    root = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True)
    (site,) = root.glob("lib/python*/site-packages")
    shared = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    (site / "_shared_site_packages.pth").write_text("\n".join(shared) + "\n")
    res = subprocess.run(
        [root / "bin" / "python", "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--ignore-installed", str(dists[0])],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    return root


def _env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("WANDB", "SR_CLI")) and k not in ("PYTHONPATH", "PYTHONHOME")
    }
    env["OMP_NUM_THREADS"] = "1"
    return env


def test_every_command_works_from_the_wheel(venv, tmp_path):
    bin_dir = venv / "bin"
    work = tmp_path / "elsewhere"
    work.mkdir()

    def run(cmd: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
        res = subprocess.run(
            [str(bin_dir / cmd), *args], cwd=work, env=_env(), capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert res.returncode == 0, f"{cmd} {' '.join(args)}:\n{res.stderr[-3000:]}"
        return res

    # the package, its configs and the sweeper plugin come from the venv, not from this checkout
    where = run(
        "python",
        "-c",
        "import sr_cli, hydra_plugins.sr_cli_sweeper as p; from sr_cli.config import config_dir;"
        "print(sr_cli.__file__, p.__file__, config_dir(), sep='\\n')",
    ).stdout.split()
    assert all(Path(w).resolve().is_relative_to(venv.resolve()) for w in where), where
    for cmd in COMMANDS:
        assert (bin_dir / cmd).is_file(), cmd

    # sr-train: the demo fine-tune (the bundled warm start and images), logged to TensorBoard
    run("sr-train", "model=esrgan", "experiment=demo", "logger=tensorboard", "hydra.run.dir=run",
        *TINY_TRAIN)  # fmt: skip
    assert (work / "run" / "checkpoints" / "last.ckpt").is_file()
    assert list((work / "run" / "tensorboard").glob("events.out.tfevents.*"))
    resolved = yaml.safe_load((work / "run" / "config_resolved.yaml").read_text())
    warm_start = Path(resolved["model"]["pretrained"])  # the wheel's copy of the bundled weights
    assert warm_start.name == "esrgan_small_x4_l1.safetensors"
    assert warm_start.resolve().is_relative_to(venv.resolve())

    # sr-eval on it (the bundled validation images)
    run("sr-eval", "checkpoints=[run]", "logger=none", "metrics=[psnr_y,ssim_y]",
        "hydra.run.dir=eval")  # fmt: skip
    assert "psnr_y" in (work / "eval" / "results.csv").read_text()

    # sr-upscale an image
    from PIL import Image

    from sr_cli.data import SAMPLES_DIR

    Image.open(SAMPLES_DIR / "val" / "camera.png").crop((0, 0, 40, 32)).save(work / "in.png")
    run("sr-upscale", "run", "in.png", "-o", "up.png")
    assert Image.open(work / "up.png").size == (160, 128)

    # sr-report, sr-export
    run("sr-report", "run", "-o", "report", "--max-images", "1", "--crop", "32")
    assert (work / "report" / "report.html").is_file()
    run("sr-export", "run", "--format", "safetensors", "-o", "gen.safetensors")
    assert (work / "gen.safetensors").stat().st_size > 0

    # sr-data: a small shard set
    (work / "imgs").mkdir()
    shutil.copy(work / "in.png", work / "imgs" / "a.png")
    run("sr-data", "shard", "imgs", "shards", "--quiet")
    assert json.loads((work / "shards" / "manifest.json").read_text())

    # sr-study reads conf/study from the package; train=false evaluates bicubic on the samples
    run("sr-study", "downsample", "preset=smoke", "train=false", "out=studies")
    assert (work / "studies" / "downsample" / "smoke" / "results.md").is_file()

    # sr-rate: a session of two runs served, one vote, stopped, then scored
    from tests.rate.rate_helpers import perturbed_copy

    perturbed_copy(work / "run" / "checkpoints" / "last.ckpt", work / "b.ckpt", 0.3, "b", 1)
    proc = subprocess.Popen(
        [str(bin_dir / "sr-rate"), "run", "b.ckpt", "--set", "samples", "-o", "rate",
         "--crop", "32", "--crops", "1", "--random-crops", "1", "--max-images", "1",
         "--port", "0"],
        cwd=work, env=_env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("sr-rate: rate at http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split()[3]
        with urllib.request.urlopen(url + "api/next?rater=ann", timeout=60) as r:
            item = json.loads(r.read())["item"]
        vote = json.dumps({"rater": "ann", "item": item, "choice": "same"}).encode()
        request = urllib.request.Request(
            url + "api/vote", data=vote, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=60) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=120)
    assert proc.returncode == 0
    run("sr-rate", "-o", "rate", "--results", "--no-wandb")
    assert (work / "rate" / "mos.csv").is_file()

    # sr-train's Optuna sweeper, found as a plugin of the installed package
    run("sr-train", "hparams_search=optuna", "hydra.sweeper.n_trials=1", "experiment=demo",
        "logger=none", "val.save_images=0", "hydra.sweep.dir=search", *TINY_TRAIN)  # fmt: skip
    assert "best_value" in (work / "search" / "optimization_results.yaml").read_text()
    assert (work / "search" / "optuna.db").is_file()
