"""sr-rate: sessions in the database, the HTTP API (validation, concurrency), results, CLI."""

from __future__ import annotations

import csv
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sr_cli.commands.rate import main, prepare
from sr_cli.rate import db
from sr_cli.rate.aggregate import bradley_terry
from tests.rate.rate_helpers import LiveServer, rate_args, three_runs


@pytest.fixture(scope="module")
def runs(trained_run, tmp_path_factory):
    return three_runs(trained_run, tmp_path_factory.mktemp("rate_runs"))


@pytest.fixture
def live(runs, eval_images, tmp_path):
    server = LiveServer(rate_args(runs, eval_images, tmp_path / "out"))
    yield server
    server.close()


def post(url: str, payload, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else json.dumps(payload).encode()
    req = urllib.request.Request(
        url + "api/vote", data=data, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(url: str) -> tuple[int, bytes, dict]:
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read(), dict(e.headers)


def test_session_items_crops_and_resume(runs, eval_images, tmp_path):
    args = rate_args(runs, eval_images, tmp_path / "out")
    app = prepare(args)
    info = db.session_info(app.engine, app.session_id)
    # Names: the run folder, a stored duplicate name made unique, a bare checkpoint's stem.
    assert [r["name"] for r in info["runs"]] == ["tiny", "tiny#2", "noisy"]
    # 3 images (48 wide, 60 high) x 3 pairs x (1 region of largest difference + 1 random region).
    assert len(app.items) == 18
    items = list(app.items.values())
    assert {(it.run_a, it.run_b) for it in items} == {(0, 1), (0, 2), (1, 2)}
    assert sorted(it.reason for it in items).count("diff") == 9
    for it in items:
        assert it.size == 32 and 0 <= it.y <= 60 - 32 and 0 <= it.x <= 48 - 32
        crops = app.image(app._tokens[it.id, "gt"])
        gt_crop = np.asarray(Image.open(crops))
        gt_full = np.asarray(Image.open(eval_images / f"{it.image}.png").convert("RGB"))
        np.testing.assert_array_equal(gt_crop, gt_full[it.y : it.y + 32, it.x : it.x + 32])
        a = np.asarray(Image.open(app.image(app._tokens[it.id, "a"])))
        b = np.asarray(Image.open(app.image(app._tokens[it.id, "b"])))
        assert a.shape == b.shape == (32, 32, 3)
        if it.reason == "diff":
            assert np.abs(a.astype(int) - b.astype(int)).sum() > 0
    # The difference region of a pair is where the two runs' SR differ most.
    db.record_vote(app.engine, app.session_id, items[0].id, "alice", choice="a")
    again = prepare(args)  # rerunning resumes: same session, items, votes
    assert again.session_id == app.session_id
    assert sorted(again.items) == sorted(app.items)
    assert len(db.session_votes(again.engine, again.session_id)) == 1
    assert items[0].id not in {again.next_item("alice")["item"]}
    # Another mode is another session in the same database.
    other = prepare(rate_args(runs, eval_images, tmp_path / "out", "--mode", "absolute"))
    assert other.session_id != app.session_id
    assert len(other.items) == 3 * 2 * 3  # 3 images x 2 regions x 3 runs


def test_api_refuses_malformed_votes_and_serves_only_session_images(live):
    url = live.url
    status, body, headers = get(url)
    assert status == 200 and b"sr-rate" in body
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert live.server.server_address[0] == "127.0.0.1"  # localhost unless --host
    nxt = json.loads(get(url + "api/next?rater=alice")[1])
    item = nxt["item"]
    bad = [
        ([1, 2], "JSON object"),
        ({"rater": "alice", "item": item}, "choice None must be"),
        ({"rater": "alice", "item": item, "choice": "middle"}, "'middle' must be"),
        ({"rater": "", "item": item, "choice": "left"}, "rater name is empty"),
        ({"rater": "x" * 65, "item": item, "choice": "left"}, "longer than 64"),
        ({"rater": "a\x00b", "item": item, "choice": "left"}, "control characters"),
        ({"rater": "alice", "item": 10**6, "choice": "left"}, "not an item of this session"),
        ({"rater": "alice", "item": "1", "choice": "left"}, "not an item of this session"),
        ({"rater": "alice", "item": item, "rating": 3}, "pairwise session"),
        ({"rater": "alice", "item": item, "choice": "left", "run": 0}, "unknown field"),
    ]
    for payload, message in bad:
        status, reply = post(url, payload)
        assert status == 400 and message in reply["error"], (payload, reply)
    status, reply = post(url, None, raw=b"{not json")
    assert status == 400 and "not valid JSON" in reply["error"]
    status, reply = post(url, None, raw=b"x" * 5000)
    assert status == 413
    req = urllib.request.Request(
        url + "api/vote",
        data=json.dumps({"rater": "eve", "item": item, "choice": "left"}).encode(),
        headers={"Content-Type": "text/plain"},  # what a cross-site form could send
    )
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=30)
    assert info.value.code == 415
    assert db.session_votes(live.app.engine, live.app.session_id) == []
    # Images: only the session's crops, under random tokens; nothing from the file system.
    status, png, headers = get(url.rstrip("/") + nxt["images"]["left"])
    assert status == 200 and png.startswith(b"\x89PNG") and headers["Content-Type"] == "image/png"
    for path in ("img/../../etc/passwd", "img/%2e%2e%2fvotes.db.png", "img/nope.png", "votes.db"):
        assert get(url + path)[0] == 404
    # The left/right assignment is the rater's own, and stored as the run shown on the left.
    status, reply = post(url, {"rater": "alice", "item": item, "choice": "left"})
    assert status == 200 and reply == {"ok": True, "done": 1, "total": 18}
    (vote,) = db.session_votes(live.app.engine, live.app.session_id)
    sides = live.app.side_runs("alice", item)
    it = live.app.items[item]
    assert vote.left_run == sides["left"]
    assert vote.choice == ("a" if sides["left"] == it.run_a else "b")
    assert post(url, {"rater": "alice", "item": item, "choice": "right"})[0] == 409


def test_no_vote_lost_when_votes_arrive_at_once(live):
    """8 threads x 2 raters post every item at the same moment: each (rater, item) is stored
    exactly once, every other copy is refused with 409, nothing is lost."""
    items = sorted(live.app.items)
    barrier = threading.Barrier(8)
    codes: list[int] = []
    lock = threading.Lock()

    def worker(k: int) -> None:
        rater = "alice" if k % 2 else "bob"
        barrier.wait()
        for item in items:
            status, _ = post(live.url, {"rater": rater, "item": item, "choice": "same"})
            with lock:
                codes.append(status)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    votes = db.session_votes(live.app.engine, live.app.session_id)
    assert sorted((v.rater, v.item_id) for v in votes) == sorted(
        (r, i) for r in ("alice", "bob") for i in items
    )
    assert codes.count(200) == 2 * len(items) and codes.count(409) == 6 * len(items)
    assert json.loads(get(live.url + "api/next?rater=bob")[1])["finished"] is True


def test_results_cli_and_report_column(live, runs, eval_images, tmp_path, capsys, monkeypatch):
    """A rater who always prefers run 0, then run 1: run 0 first with a narrow interval, the
    scores those of the Bradley-Terry fit of the known win matrix."""
    app = live.app
    for item in sorted(app.items):
        sides = app.side_runs("alice", item)
        best = min(sides["left"], sides["right"])
        choice = "left" if sides["left"] == best else "right"
        assert post(live.url, {"rater": "alice", "item": item, "choice": choice})[0] == 200
    out = tmp_path / "out"
    monkeypatch.setenv("WANDB_MODE", "offline")
    main(["--results", "-o", str(out), "--bootstrap", "200"])
    printed = capsys.readouterr().out
    assert "Win matrix" in printed and "Votes: 18 from 1 rater(s) (alice)" in printed
    with open(out / "mos.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["tiny", "tiny#2", "noisy"]
    # 6 items per pair: wins[0,1] = wins[0,2] = wins[1,2] = 6.
    wins = np.array([[0, 6, 6], [0, 0, 6], [0, 0, 0]], dtype=float)
    expected = bradley_terry(wins, alpha=0.01)
    np.testing.assert_allclose([float(r["score"]) for r in rows], expected, atol=1e-3)
    top = rows[0]
    lo, hi = float(top["ci_low"]), float(top["ci_high"])
    assert float(top["win_rate"]) == 1.0 and lo > float(rows[1]["ci_high"])
    assert hi - lo < 0.25 * float(top["score"])  # every resample agrees: a narrow interval
    assert (out / "mos.md").read_text().startswith("# sr-rate results")
    assert list((out / "wandb").glob("offline-run-*"))  # logged to wandb, offline
    # sr-report shows the score as a column (matched by checkpoint path or run name).
    from sr_cli.report.page import build_report

    page = build_report(
        [runs[0]], tmp_path / "report", images=eval_images, crop=32, mos=out / "mos.csv"
    )
    text = page.read_text()
    assert "<th>MOS" in text and f"<td>{float(top['score']):.2f}" in text


def test_cli_errors(runs, eval_images, tmp_path, capsys):
    cases = [
        ([], "no run given"),
        ([runs[0], "--set", str(eval_images)], "pairwise rating needs two runs"),
        ([runs[0], runs[1], "--set", str(tmp_path / "nope")], "is not a folder"),
        ([*runs[:2], "--set", str(eval_images), "--db", "nosuchdb://x"], "not a database URL"),
        ([*runs[:2], "--crop", "4"], "--crop must be 8 pixels"),
        (["--results", "-o", str(tmp_path / "empty")], "no votes database"),
    ]
    for argv, message in cases:
        with pytest.raises(SystemExit) as info:
            main([*argv, "-o", str(tmp_path / "o")] if "-o" not in argv else argv)
        err = capsys.readouterr().err
        assert info.value.code == 2 and err.startswith("sr-rate: error:") and message in err, err


def test_db_unique_vote_constraint(tmp_path):
    """The schema itself refuses a second vote of one rater on one item and a bad rating."""
    import sqlalchemy as sa

    engine = db.open_engine(db.default_url(str(tmp_path / "v.db")))
    sid = db.create_session(
        engine, "f" * 64, "absolute", {}, [{"idx": 0, "name": "r", "checkpoint": "c", "digest": "d"}],
        [dict(image="i", y=0, x=0, size=8, run_a=0, run_b=None, reason="random")],
    )  # fmt: skip
    item = db.session_items(engine, sid)[0].id
    db.record_vote(engine, sid, item, "ann", rating=4)
    with pytest.raises(db.DuplicateVote):
        db.record_vote(engine, sid, item, "ann", rating=5)
    with engine.begin() as conn:
        rid = conn.execute(sa.select(db.raters.c.id)).scalar()
        other = conn.execute(
            sa.insert(db.raters).values(session_id=sid, name="bo", created=0.0)
        ).inserted_primary_key[0]
    for rater_id, rating in ((rid, 5), (other, 9)):  # a second vote; a rating out of 1-5
        with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
            conn.execute(
                sa.insert(db.votes).values(
                    session_id=sid, item_id=item, rater_id=rater_id, rating=rating, created=0.0
                )
            )
    assert [v.rating for v in db.session_votes(engine, sid)] == [4]
    assert Path(tmp_path / "v.db").is_file()


def test_absolute_votes(runs, eval_images, tmp_path):
    from sr_cli.rate.app import BadVote

    app = prepare(rate_args(runs, eval_images, tmp_path / "out", "--mode", "absolute"))
    nxt = app.next_item("ann")
    assert nxt["mode"] == "absolute" and set(nxt["images"]) == {"left", "gt"}
    assert nxt["images"]["gt"] is None  # no reference unless --show-gt
    for bad, message in (
        ({"rater": "ann", "item": nxt["item"], "rating": 7}, "from 1 to 5"),
        ({"rater": "ann", "item": nxt["item"], "rating": True}, "from 1 to 5"),
        ({"rater": "ann", "item": nxt["item"], "choice": "left"}, "absolute session"),
    ):
        with pytest.raises(BadVote, match=message):
            app.vote(bad)
    assert app.vote({"rater": "ann", "item": nxt["item"], "rating": 4})["done"] == 1
    (vote,) = db.session_votes(app.engine, app.session_id)
    assert (vote.rating, vote.choice, vote.rater) == (4, None, "ann")


def test_console_script_serves_the_page(runs, eval_images, tmp_path):
    """The real command: it prints its address, serves the page, stops on Ctrl-C, also when
    started with SIGINT ignored (a shell's background job: Python then keeps SIG_IGN)."""
    import os
    import signal
    import subprocess
    import sys

    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "sr_cli.commands.rate", *runs[:2], "--set", str(eval_images),
         "-o", str(out), "--crop", "32", "--port", "0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        line = proc.stdout.readline()
        assert line.startswith("sr-rate: rate at http://127.0.0.1:"), (line, proc.stderr.read())
        url = line.split()[3]
        status, body, _ = get(url)
        assert status == 200 and b"<title>sr-rate</title>" in body
        nxt = json.loads(get(url + "api/next?rater=ann")[1])
        # 3 images x 1 pair x (1 difference region: a second would overlap it + 1 random)
        assert nxt["total"] == 6
        assert post(url, {"rater": "ann", "item": nxt["item"], "choice": "same"})[0] == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "every vote cast is saved" in err
    engine = db.open_engine(db.default_url(str(out / "votes.db")))
    assert [v.choice for v in db.session_votes(engine, 1)] == ["same"]
