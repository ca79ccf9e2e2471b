"""A study's perception-distortion plane: one point per arm and seed (the seed's mean over the
images), each arm's mean, bicubic as one ungrouped point; linked from results.md."""

from __future__ import annotations

import pytest

from sr_cli.report.plane import read_points_csv
from sr_cli.study.plane import PLANE_METRICS, draw_study_plane, with_plane_metrics


def values():
    def img(niqe, rmse):
        return {"niqe": niqe, "rmse_y": rmse, "psnr_y": 30.0}

    return {
        "bicubic": {-1: {"a": img(7.0, 16.0), "b": img(8.0, 17.0)}},
        "l1": {s: {"a": img(6.0 + s, 12.0), "b": img(6.0 + s, 13.0)} for s in range(3)},
        "gan": {s: {"a": img(3.0, 14.0 + s), "b": img(5.0, float("nan"))} for s in range(3)},
    }


def test_points_per_arm_and_seed_and_means(tmp_path):
    said = []
    plane = draw_study_plane(values(), ["bicubic", "l1", "gan"], tmp_path, "t", said.append)
    assert plane == {"png": "plane.png", "csv": "plane.csv"} and not said
    assert (tmp_path / "plane.png").stat().st_size > 1000
    rows = read_points_csv(tmp_path / "plane.csv")
    points = {r["label"]: r for r in rows if r["kind"] == "point"}
    assert list(points) == ["bicubic", *[f"l1/seed_{s}" for s in range(3)],
                            *[f"gan/seed_{s}" for s in range(3)]]  # fmt: skip
    assert points["bicubic"]["group"] == "" and points["l1/seed_2"]["group"] == "l1"
    assert float(points["bicubic"]["x"]) == pytest.approx(7.5)
    assert float(points["l1/seed_1"]["x"]) == pytest.approx(7.0)
    assert float(points["l1/seed_1"]["rmse_y"]) == pytest.approx(12.5)
    # a non-finite value on one image leaves that image out of the seed's mean
    assert float(points["gan/seed_2"]["rmse_y"]) == pytest.approx(16.0)
    assert float(points["gan/seed_2"]["x"]) == pytest.approx(4.0)
    means = {r["label"]: r for r in rows if r["kind"] == "mean"}
    assert set(means) == {"l1", "gan"} and means["l1"]["n"] == "3"
    assert float(means["l1"]["x"]) == pytest.approx(7.0)


def test_no_plane_without_both_measures(tmp_path):
    said = []
    only_psnr = {"l1": {0: {"a": {"psnr_y": 30.0}}}}
    assert draw_study_plane(only_psnr, ["l1"], tmp_path, "t", said.append) is None
    assert not (tmp_path / "plane.png").exists() and "NIQE and RMSE_Y" in said[0]


def test_every_study_computes_the_plane_measures():
    assert with_plane_metrics(["psnr_y", "niqe"]) == ["psnr_y", "niqe", "rmse_y"]
    assert set(PLANE_METRICS) <= set(with_plane_metrics([]))
