"""sr-report: a self-contained page, rendered headless in Chromium with every image loaded."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess

import pytest

from sr_cli.commands.report import main
from sr_cli.report.figures import radial_power_spectrum
from sr_cli.report.page import build_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(trained_run, eval_images, tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    # The same run twice (labels made unique) plus --images: two runs, three images.
    page = build_report([trained_run, trained_run], out, images=eval_images, crop=32)
    return page


def test_page_is_self_contained(report):
    text = report.read_text()
    srcs = re.findall(r'<img src="([^"]+)"', text)
    # Per image: context, LQ, bicubic, 2 runs, GT (6 crops) + 3 difference maps + 1 spectrum;
    # plus the training curves.
    assert len(srcs) == 3 * (6 + 3 + 1) + 1
    assert all(s.startswith("data:image/png;base64,") for s in srcs)
    png = base64.b64decode(srcs[0].split(",", 1)[1])
    assert png.startswith(b"\x89PNG")
    for word in ("Metrics", "Training curves", "Difference maps", "Error spectrum", "bicubic"):
        assert word in text
    assert "tiny#2" in text  # second copy of the run, made unique
    pngs = list(report.parent.glob("*.png"))
    assert len(pngs) == len(srcs)  # written next to the page too
    assert "http://" not in text and "https://" not in text  # nothing fetched


def test_spectrum_of_noise_is_flat():
    import torch

    img = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    freq, power = radial_power_spectrum(img)
    assert freq.min() > 0 and freq.max() <= 0.5
    assert power.max() / power.min() < 10  # white noise: no frequency dominates


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make test installs it)")
def test_renders_in_headless_chromium(report, tmp_path):
    res = subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            report.resolve().as_uri(),
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', res.stdout)
    assert m, f"load marker missing; stderr: {res.stderr[-2000:]}"
    loaded, total = int(m.group(1)), int(m.group(2))
    assert total == 31 and loaded == total


def test_cli_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main([str(tmp_path / "no-such-run"), "-o", str(tmp_path / "r")])
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("sr-report: error:")


def test_a_corrupt_byte_in_metrics_csv_costs_that_row_only(trained_run, eval_images, tmp_path):
    """sr-report (a real process) on a run whose metrics.csv has a byte that is not UTF-8: the
    page is written, with one warning line naming the file and the row, and the curves of the
    readable rows."""
    import sys
    from pathlib import Path

    from sr_cli.report.runs import read_metrics_csv

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    metrics = run / "metrics.csv"
    lines = metrics.read_bytes().splitlines(keepends=True)
    assert len(lines) >= 3
    lines[1] = b"\xff" + lines[1][1:]
    metrics.write_bytes(b"".join(lines))
    sr_report = shutil.which("sr-report") or str(Path(sys.executable).parent / "sr-report")
    out = tmp_path / "r"
    res = subprocess.run(
        [sr_report, str(run), "-o", str(out), "--images", str(eval_images), "--max-images", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (out / "report.html").is_file() and "Training curves" in (
        out / "report.html"
    ).read_text()
    said = [line for line in res.stderr.splitlines() if "row 2" in line]
    assert len(said) == 1 and str(metrics) in said[0] and "Traceback" not in res.stderr, res.stderr
    series = read_metrics_csv(metrics)
    assert series and all(len(values) for values in series.values())


def test_the_plane_is_in_the_page(report):
    text = report.read_text()
    assert "<h2>Perception-distortion plane</h2>" in text
    # the shared fixture's 48x60 crops are too small for NIQE's 96x96 blocks: said, not drawn
    assert "Not drawn" in text and "96x96" in text


def test_the_plane_is_drawn_for_images_large_enough(trained_run, tmp_path):
    from sr_cli.data import SAMPLES_DIR

    out = tmp_path / "r"
    page = build_report([trained_run], out, images=SAMPLES_DIR / "val", crop=32, max_images=1)
    text = page.read_text()
    assert 'alt="perception-distortion plane"' in text
    assert (out / "plane_val.png").is_file() and (out / "plane_val.csv").is_file()
