"""The perception-distortion plane: the points, the group means with their intervals, the
picture, and sr-eval's plane beside results.md."""

from __future__ import annotations

import csv
import math

import pytest
from PIL import Image

from sr_cli.report.plane import PIRM_REGIONS, PlanePoint, draw_plane, read_points_csv

#: Student's t quantile t(0.975, 2), for 3 seeds.
T_975_2 = 4.302652729911275


def arms():
    return [
        PlanePoint("bicubic", 7.5, 16.4),
        PlanePoint("l1_s0", 6.0, 12.0, seed=0),
        PlanePoint("l1_s1", 6.2, 12.2, seed=1),
        PlanePoint("l1_s2", 6.4, 12.1, seed=2),
        PlanePoint("gan_s0", 3.0, 14.0, seed=0),
        PlanePoint("gan_s1", 3.5, 14.6, seed=1),
        PlanePoint("gan_s2", 4.0, 14.3, seed=2),
    ]


def test_points_and_group_means_with_intervals(tmp_path):
    groups = {f"{arm}_s{s}": arm for arm in ("l1", "gan") for s in range(3)}
    png, out_csv = tmp_path / "plane.png", tmp_path / "plane.csv"
    means = draw_plane(arms(), png, out_csv, groups=groups)
    rows = read_points_csv(out_csv)
    points = [r for r in rows if r["kind"] == "point"]
    assert [(r["label"], float(r["x"]), float(r["rmse_y"])) for r in points] == [
        (p.label, p.perception, p.rmse) for p in arms()
    ]
    assert [r["group"] for r in points] == ["", *["l1"] * 3, *["gan"] * 3]
    assert {r["x_metric"] for r in rows} == {"niqe"}
    mean_rows = {r["label"]: r for r in rows if r["kind"] == "mean"}
    assert set(mean_rows) == {"l1", "gan"} and [m.group for m in means] == ["l1", "gan"]
    gan = mean_rows["gan"]
    assert float(gan["x"]) == pytest.approx(3.5) and float(gan["rmse_y"]) == pytest.approx(14.3)
    assert gan["n"] == "3"
    # x: values 3.0, 3.5, 4.0 -> sd 0.5; half width t * sd / sqrt(3)
    half = T_975_2 * 0.5 / math.sqrt(3)
    assert float(gan["x_ci_low"]) == pytest.approx(3.5 - half, abs=1e-6)
    assert float(gan["x_ci_high"]) == pytest.approx(3.5 + half, abs=1e-6)
    half_y = T_975_2 * 0.3 / math.sqrt(3)  # 14.0, 14.6, 14.3 -> sd 0.3
    assert float(gan["rmse_ci_low"]) == pytest.approx(14.3 - half_y, abs=1e-6)
    with Image.open(png) as im:
        assert im.format == "PNG" and im.size[0] > 300


def test_non_finite_points_stay_in_the_csv_but_not_in_the_picture(tmp_path):
    pts = [PlanePoint("a", 5.0, 12.0), PlanePoint("b", float("nan"), 13.0)]
    draw_plane(pts, tmp_path / "p.png", tmp_path / "p.csv", path=True, x_metric="pi")
    rows = read_points_csv(tmp_path / "p.csv")
    assert [r["label"] for r in rows] == ["a", "b"] and rows[1]["x"] == "nan"
    assert rows[0]["x_metric"] == "pi"
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_pirm_regions():
    assert PIRM_REGIONS == (11.5, 12.5, 16.0)


def test_sr_eval_writes_the_plane_beside_results_md(trained_run, tmp_path, monkeypatch):
    """Two checkpoints (best and last of the tiny run) and bicubic on the bundled validation
    images (large enough for NIQE's 96x96 blocks): one point each, equal to the table."""
    from sr_cli.commands.eval import _run
    from tests.evaluate.test_eval import compose_eval

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    out = tmp_path / "eval"
    ckpts = trained_run / "checkpoints"
    cfg = compose_eval([f"checkpoints=[{ckpts / 'best.ckpt'},{ckpts / 'last.ckpt'}]"], out)
    _run(cfg)
    table = {r["model"]: r for r in csv.DictReader(open(out / "results.csv"))}
    assert len(table) == 3 and "bicubic" in table
    points = read_points_csv(out / "plane_samples.csv")
    assert [p["label"] for p in points] == list(table)
    for p in points:
        assert p["x_metric"] == "niqe"
        assert float(p["x"]) == pytest.approx(float(table[p["label"]]["niqe"]), abs=1e-5)
        assert float(p["rmse_y"]) == pytest.approx(float(table[p["label"]]["rmse_y"]), abs=1e-5)
        # RMSE_Y and PSNR_Y are one measure per image; their means differ only by Jensen's gap
        assert float(p["rmse_y"]) > 0
    assert (out / "plane_samples.png").stat().st_size > 1000
    md = (out / "results.md").read_text()
    assert "![plane_samples](plane_samples.png)" in md


def test_plane_files_stay_in_the_output_folder(tmp_path):
    """A dataset's name (a study file's, a folder's) never leads out of the folder or into the
    page's markup."""
    from sr_cli.evaluate.evaluation import plane_files

    for name in ("../../escape", "/etc/x", "a<b>&c", "..", ""):
        png, points = plane_files(tmp_path, name)
        assert png.parent == points.parent == tmp_path
        assert png.name.startswith("plane_") and png.suffix == ".png" and points.suffix == ".csv"
        assert not set(png.stem) - set(
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_.-0123456789"
        )
    assert plane_files(tmp_path, "set5") == (
        tmp_path / "plane_set5.png",
        tmp_path / "plane_set5.csv",
    )


def test_draw_plane_never_writes_through_a_link_to_a_device(tmp_path):
    """The points' CSV is written atomically: a destination that is a link to a device is refused
    in one line and left as it was (a plain open() wrote into /dev/null), and no picture is drawn."""
    from sr_cli.errors import ConfigError

    link = tmp_path / "p.csv"
    link.symlink_to("/dev/null")
    with pytest.raises(ConfigError, match="not a regular file"):
        draw_plane([PlanePoint("a", 5.0, 12.0)], tmp_path / "p.png", link)
    assert link.is_symlink() and str(link.readlink()) == "/dev/null"
    assert not (tmp_path / "p.png").exists()


def test_sr_eval_refuses_a_plane_destination_before_computing(
    trained_run, eval_images, tmp_path, capsys
):
    """plane=true: plane_<set>.png / .csv are checked with results.csv, before any metric."""
    from sr_cli.commands.eval import _run
    from tests.evaluate.test_eval import compose_eval

    out = tmp_path / "ev"
    (out / "plane_v.csv").mkdir(parents=True)
    cfg = compose_eval(
        [f"checkpoints=[{trained_run}]", f"datasets={{v:{eval_images}}}", "metrics=[psnr_y]",
         "plane=true"],
        out,
    )  # fmt: skip
    with pytest.raises(SystemExit) as info:
        _run(cfg)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("sr-eval: error: ") and err.count("\n") == 1, err
    assert "plane_v.csv" in err and "is a folder" in err
    assert sorted(p.name for p in out.iterdir()) == ["plane_v.csv"]  # nothing computed or written
