"""sr-rate aggregation on synthetic votes: Bradley-Terry, bootstrap, agreement, absolute MOS."""

from __future__ import annotations

import numpy as np
import pytest

from sr_cli.rate import db
from sr_cli.rate.aggregate import (
    _md,
    bootstrap,
    bradley_terry,
    fit_pairs,
    krippendorff_alpha,
    markdown,
    percent_agreement,
    summarize,
    win_matrices,
)


def test_two_runs_mle_is_the_log_odds():
    # Plain MLE (no prior): P(0 beats 1) = 7/10 exactly, so s0 - s1 = log(7/3).
    s = bradley_terry(np.array([[0.0, 7.0], [3.0, 0.0]]), alpha=0.0)
    assert s[0] - s[1] == pytest.approx(np.log(7 / 3), abs=1e-6)
    assert s.sum() == pytest.approx(0.0, abs=1e-9)


def test_mle_matches_observed_wins():
    """At the MLE, every run's expected number of wins equals its observed number."""
    w = np.array([[0, 5, 8, 2], [3, 0, 4, 6], [1, 6, 0, 3], [4, 2, 5, 0]], dtype=float)
    s = bradley_terry(w, alpha=0.0)
    n = w + w.T
    p = 1 / (1 + np.exp(-(s[:, None] - s[None, :])))
    np.testing.assert_allclose((n * p).sum(1) - np.diag(n * p), w.sum(1), atol=1e-5)


def test_synthetic_votes_recover_the_ground_truth_ranking():
    rng = np.random.default_rng(0)
    truth = np.array([1.5, 0.5, 0.0, -0.7, -1.3])
    rows = []
    for _ in range(3000):
        i, j = rng.choice(5, 2, replace=False)
        p = 1 / (1 + np.exp(-(truth[i] - truth[j])))
        rows.append((i, j, 0) if rng.random() < p else (j, i, 0))
    pairs = np.array(rows)
    s = fit_pairs(pairs, 5, alpha=0.01)
    assert list(np.argsort(-s)) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(s, truth - truth.mean(), atol=0.15)
    lo, hi = bootstrap(lambda d: fit_pairs(d, 5, 0.01), pairs, 100, seed=1)
    assert np.all(lo <= truth - truth.mean() + 0.05) and np.all(hi >= truth - truth.mean() - 0.05)
    lo2, hi2 = bootstrap(lambda d: fit_pairs(d, 5, 0.01), pairs, 100, seed=1)
    np.testing.assert_array_equal(lo, lo2)  # seeded: the same interval every time
    np.testing.assert_array_equal(hi, hi2)


def test_ties_count_half_and_an_unbeaten_run_stays_finite():
    wins, ties = win_matrices(np.array([[0, 1, 1], [0, 1, 0], [1, 0, 0]]), 2)
    assert wins.tolist() == [[0, 1], [1, 0]] and ties.tolist() == [[0, 1], [1, 0]]
    s = fit_pairs(np.array([[0, 1, 0]] * 20), 2, alpha=0.01)
    assert np.all(np.isfinite(s)) and s[0] > s[1]


def test_krippendorff_alpha_known_values():
    # Two raters, four units: (a,a) (a,b) (b,b) (b,b) -> alpha = 1 - 7 * 2 / (2 * 3 * 5) = 8/15.
    units = [["a", "a"], ["a", "b"], ["b", "b"], ["b", "b"]]
    assert krippendorff_alpha(units) == pytest.approx(8 / 15)
    assert percent_agreement(units) == pytest.approx(3 / 4)
    assert krippendorff_alpha([["a", "a"], ["b", "b"], ["same", "same"]]) == pytest.approx(1.0)
    assert krippendorff_alpha([["a"], ["b"]]) is None  # no unit rated twice
    # Interval: (1,2) (3,3): o12=o21=1, o33=2; n=4, D_o=2/4, D_e=(2*1*1*1+2*1*2*4+2*1*2*1)/12.
    d_e = (2 * 1 * 1 * 1 + 2 * 1 * 2 * 4 + 2 * 1 * 2 * 1) / 12
    assert krippendorff_alpha([[1, 2], [3, 3]], "interval") == pytest.approx(1 - 0.5 / d_e)


def _session(tmp_path, mode: str, n_runs: int, item_rows: list[dict]):
    engine = db.open_engine(db.default_url(str(tmp_path / "votes.db")))
    runs = [{"idx": k, "name": f"run{k}", "checkpoint": f"/c{k}", "digest": str(k)} for k in range(n_runs)]  # fmt: skip
    sid = db.create_session(engine, "x" * 64, mode, {}, runs, item_rows)
    return engine, sid, db.session_items(engine, sid)


def test_summarize_absolute_mode(tmp_path):
    rows = [dict(image="i", y=0, x=0, size=8, run_a=k, run_b=None, reason="diff") for k in (0, 1)]
    engine, sid, items = _session(tmp_path, "absolute", 2, rows)
    for rater, (r0, r1) in {"ann": (5, 2), "bo": (4, 2), "cy": (5, 1)}.items():
        db.record_vote(engine, sid, items[0].id, rater, rating=r0)
        db.record_vote(engine, sid, items[1].id, rater, rating=r1)
    res = summarize(engine, sid, n_boot=300, seed=0)
    np.testing.assert_allclose(res.score, [14 / 3, 5 / 3])
    assert res.ci_low[0] >= 4.0 and res.ci_high[0] <= 5.0 and res.ci_high[1] <= 2.0
    assert res.n_votes == 6 and res.votes_per_run == [3, 3] and res.raters == ["ann", "bo", "cy"]
    assert res.alpha_agreement is not None and res.alpha_agreement > 0.5
    text = markdown(res)
    assert "mean opinion score" in text and "| 1 | run0 | 4.667 |" in text


def test_summarize_pairwise_known_win_matrix(tmp_path):
    rows = [dict(image="i", y=0, x=k, size=8, run_a=0, run_b=1, reason="diff") for k in range(4)]
    engine, sid, items = _session(tmp_path, "pairwise", 2, rows)
    for it, choice in zip(items, ["a", "a", "b", "same"]):
        db.record_vote(engine, sid, it.id, "ann", choice=choice, left_run=0)
    res = summarize(engine, sid, n_boot=100, seed=0)
    assert res.wins.tolist() == [[0, 2], [1, 0]] and res.ties.tolist() == [[0, 1], [1, 0]]
    assert res.win_rate == [pytest.approx(2.5 / 4), pytest.approx(1.5 / 4)]
    np.testing.assert_allclose(res.score, bradley_terry(np.array([[0, 2.5], [1.5, 0]])))
    assert res.left_rate == pytest.approx(2 / 3)  # run 0 was on the left and won 2 of 3
    assert res.alpha_agreement is None and res.shared_items == 0


def test_markdown_escapes_names():
    assert _md("a|b") == "a\\|b" and _md("x\ny") == "x y"


HOSTILE = "<script>alert(1)</script>|x"


def test_mos_md_escapes_rater_and_run_names_as_the_html_report_does(tmp_path):
    """Issue #26: mos.md wrote rater and run names as raw HTML (a Markdown viewer runs it)."""
    import html

    from sr_cli.rate.aggregate import write_results

    rows = [dict(image="i", y=0, x=k, size=8, run_a=0, run_b=1, reason="diff") for k in range(2)]
    engine = db.open_engine(db.default_url(str(tmp_path / "votes.db")))
    runs = [
        {"idx": 0, "name": "<img src=x onerror=alert(2)>\nrow", "checkpoint": "/a", "digest": "0"},
        {"idx": 1, "name": "plain", "checkpoint": "/b", "digest": "1"},
    ]
    sid = db.create_session(engine, "y" * 64, "pairwise", {}, runs, rows)
    for it in db.session_items(engine, sid):
        db.record_vote(engine, sid, it.id, HOSTILE, choice="a", left_run=0)
    res = summarize(engine, sid, n_boot=50, seed=0)
    assert HOSTILE in res.raters
    _, md_path = write_results(res, tmp_path / "out")
    text = md_path.read_text(encoding="utf-8")
    assert "<script>" not in text and "<img" not in text
    assert html.escape("<script>alert(1)</script>") + "\\|x" in text
    assert "&lt;img src=x onerror=alert(2)&gt; row" in text  # the newline is a space
    for line in text.splitlines():  # every table row keeps its number of cells
        if line.startswith("| ") and "rank" not in line and "---" not in line:
            cells = [c for c in line.replace("\\|", "").split("|")[1:-1]]
            assert len(cells) in (3, 6), line


def test_a_text_file_as_the_votes_database_is_one_line(tmp_path):
    """Issue #26: sqlite:////<a text file> gave an SQLAlchemy traceback."""
    from sr_cli.errors import ConfigError

    text = tmp_path / "notes.txt"
    text.write_text("these are my notes, not a database\n" * 20)
    before = text.read_bytes()
    with pytest.raises(ConfigError) as info:
        db.open_engine(f"sqlite:///{text}")
    message = str(info.value)
    assert str(text) in message and "not an SQLite database" in message and "\n" not in message
    assert text.read_bytes() == before
