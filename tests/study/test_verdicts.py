"""Verdict logic of sr-study on hand-made tables: held, did not hold, inconclusive, a failing
sanity check, a failed run; and the declared studies load and expand to sr-train overrides."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from sr_cli.errors import ConfigError
from sr_cli.study.criteria import (
    FAIL,
    HELD,
    INCONCLUSIVE,
    NOT_HELD,
    PASS,
    UNDECIDED,
    judge,
    overall,
)
from sr_cli.study.runner import first_error_line, load_study, run_overrides, study_names

GT = {"run": "a", "metric": "psnr_y"}
CRIT = {"id": "c", "left": GT, "op": ">", "right": {"run": "b", "metric": "psnr_y"}, "margin": 0.5}
OK = {"a": "finished", "b": "finished"}


def table(a: float, b: float, bicubic: float = 20.0) -> dict:
    return {"a": {"psnr_y": a}, "b": {"psnr_y": b}, "bicubic": {"psnr_y": bicubic}}


@pytest.mark.parametrize(
    ("a", "b", "verdict"),
    [(26.0, 25.0, PASS), (25.0, 26.0, FAIL), (25.3, 25.0, UNDECIDED), (24.8, 25.0, UNDECIDED)],
)
def test_a_criterion_passes_fails_or_is_inside_its_margin(a, b, verdict):
    assert judge(CRIT, table(a, b), OK).verdict == verdict


def test_less_than_and_constants_and_distance_from():
    crit = {
        "id": "c",
        "left": {"run": "a", "metric": "hf", "distance_from": 1.0},
        "op": "<",
        "right": {"value": 0.2},
        "margin": 0.05,
    }
    assert judge(crit, {"a": {"hf": 1.1}}, OK).verdict == PASS  # |1.1 - 1| = 0.1 < 0.2 - 0.05
    assert judge(crit, {"a": {"hf": 0.6}}, OK).verdict == FAIL  # 0.4 > 0.2 + 0.05
    assert judge(crit, {"a": {"hf": 1.22}}, OK).verdict == UNDECIDED


def test_overall_verdicts():
    good = judge(CRIT, table(26, 25), OK)
    bad = judge(CRIT, table(24, 25), OK)
    unsure = judge(CRIT, table(25.1, 25), OK)
    sanity = {"id": "s", "left": GT, "op": ">", "right": {"run": "bicubic", "metric": "psnr_y"}}
    passes = judge(sanity, table(26, 25, bicubic=20), OK)
    assert overall([good, good], [passes]) == HELD
    assert overall([good, bad], [passes]) == NOT_HELD
    assert overall([good, unsure], [passes]) == INCONCLUSIVE
    # The L1 baseline below bicubic: the budget decides nothing, whatever the criteria say.
    fails = judge(sanity, table(26, 25, bicubic=27), OK)
    assert fails.verdict == FAIL
    assert overall([good, good], [fails]) == INCONCLUSIVE
    assert overall([good, bad], [fails]) == INCONCLUSIVE


def test_a_failed_run_has_no_values_and_its_status_can_be_checked():
    statuses = {"a": "failed", "b": "finished"}
    v = judge(CRIT, {"b": {"psnr_y": 25.0}}, statuses)
    assert (v.verdict, v.why) == (UNDECIDED, "not measured")
    diverged = {
        "id": "d",
        "left": {"run": "a", "status": True},
        "op": "!=",
        "right": {"value": "finished"},
    }
    assert judge(diverged, {}, statuses).verdict == PASS
    assert judge(diverged, {}, OK).verdict == FAIL
    assert judge(diverged, {}, {"a": "not started"}).verdict == UNDECIDED
    either = {
        "id": "e",
        "any": [
            {k: v for k, v in diverged.items() if k != "id"},
            {k: v for k, v in CRIT.items() if k != "id"},
        ],
    }
    assert judge(either, {"b": {"psnr_y": 25.0}}, statuses).verdict == PASS  # diverged
    assert judge(either, table(24, 25), OK).verdict == FAIL  # finished and worse
    assert judge(either, table(25.2, 25), OK).verdict == UNDECIDED


def test_first_error_line_prefers_sr_train_message():
    err = "Traceback...\n  File x\nValueError: boom\nsr-train: error: loss gan is NaN at 3\n"
    assert first_error_line(err) == "sr-train: error: loss gan is NaN at 3"
    assert first_error_line("noise\nRuntimeError: bad\n") == "RuntimeError: bad"


def test_declared_studies_load_and_expand():
    assert {"downsample", "translational", "iterative_perceptual", "catalogue"} <= set(
        study_names()
    )
    for name in study_names():
        cfg = load_study(name)
        for preset in ("cpu", "full", "smoke"):
            for run in cfg.runs:
                args, _ = run_overrides(cfg, preset, run, ["x=1"], lambda f: True)
                assert args[-1] == "x=1" and not any("$" in a or "?" in a for a in args)
    cfg = load_study("translational")
    args, notes = run_overrides(cfg, "cpu", "late", [], lambda f: False)
    assert "loss=[l1,gan,translational]" in args and "loss.translational.start_step=250" in args
    assert "perceptual left out of late" in notes[0]
    args, notes = run_overrides(cfg, "cpu", "late", [], lambda f: True)
    assert "loss=[l1,perceptual,gan,translational]" in args and not notes


def test_unknown_study_preset_and_bad_criterion_are_one_line_errors():
    with pytest.raises(ConfigError, match="unknown study 'nope'; choose one of"):
        load_study("nope")
    with pytest.raises(ConfigError, match="no preset 'huge'"):
        run_overrides(load_study("downsample"), "huge", "l1", [], lambda f: True)
    with pytest.raises(ConfigError, match="op '~'"):
        judge({"id": "x", "left": {"value": 1}, "op": "~", "right": {"value": 2}}, {}, {})
    assert OmegaConf.is_config(load_study("downsample"))


@pytest.mark.parametrize(
    "study", ["downsample", "translational", "iterative_perceptual", "catalogue"]
)
def test_every_run_of_every_preset_composes_and_passes_sr_train_checks(study):
    from hydra.utils import instantiate

    from sr_cli.train.training import check_options
    from tests.conftest import compose_train

    cfg = load_study(study)
    for preset in ("cpu", "full", "smoke"):
        for run in cfg.runs:
            args, _ = run_overrides(cfg, preset, run, [], lambda f: True)
            train_cfg = compose_train([*args, f"name={run}"])
            check_options(train_cfg)
            assert train_cfg.run_name == run
            if preset == "smoke":  # the generator the smoke run trains is buildable
                assert instantiate(train_cfg.model.generator, _convert_="all") is not None
