"""sr-rate with remote raters: invite links (tokens stored hashed), 403 for everything else, the
admin page's figures, 50 raters at once, stalled clients, kill -9 mid-vote, and the command."""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from sr_cli.commands.rate import main
from sr_cli.rate import db, invites
from sr_cli.rate.aggregate import summarize
from tests.rate.rate_helpers import LiveServer, rate_args, three_runs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(trained_run, tmp_path_factory):
    return three_runs(trained_run, tmp_path_factory.mktemp("remote_runs"))


def call(url: str, method: str, path: str, token: str | None = None, payload=None, timeout=30):
    """``(status, JSON reply)`` of one request on a new connection; connection errors raise."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"Connection": "close"}
    body = None
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if payload is not None:
        body = json.dumps(payload)
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body, headers)
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_invite_links_refusals_and_the_admin_view(runs, eval_images, tmp_path, caplog, monkeypatch):
    monkeypatch.setattr("sr_cli.rate.app.ADMIN_BOOTSTRAP", 200)  # 1000 in use; faster here
    live = LiveServer(rate_args(runs, eval_images, tmp_path / "out", "--raters", "alice,bob"))
    try:
        url, app = live.url, live.app
        alice, bob = live.tokens["alice"], live.tokens["bob"]
        assert len(alice) >= 43 and alice != bob  # token_urlsafe(32): 256 random bits
        # Only the digests are stored: no token appears in the database file.
        with sqlite3.connect(tmp_path / "out" / "votes.db") as conn:
            rows = conn.execute("SELECT role, name, digest FROM rate_tokens").fetchall()
        assert ("rater", "alice", hashlib.sha256(alice.encode()).hexdigest()) in rows
        raw = b"".join(p.read_bytes() for p in (tmp_path / "out").glob("votes.db*"))
        assert all(t.encode() not in raw for t in (alice, bob, live.admin))

        assert call(url, "GET", "/api/session") == (
            200,
            {"mode": "pairwise", "by_invitation": True},
        )
        item = call(url, "GET", "/api/next", alice)[1]["item"]
        caplog.set_level(logging.WARNING, logger="sr_cli.rate.server")
        refused = [
            ("GET", "/api/next?rater=alice", None, None, "by invitation"),
            ("POST", "/api/vote", None, {"rater": "alice", "item": item, "choice": "left"},
             "by invitation"),
            ("POST", "/api/vote", "x" * 43, {"item": item, "choice": "left"}, "not valid"),
            ("POST", "/api/vote", alice, {"rater": "bob", "item": item, "choice": "left"},
             "only vote as yourself"),
            ("POST", "/api/vote", live.admin, {"item": item, "choice": "left"}, "not valid"),
            ("GET", "/api/admin", None, None, "admin link"),
            ("GET", "/api/admin", alice, None, "admin link"),
        ]  # fmt: skip
        for method, path, token, payload, message in refused:
            status, reply = call(url, method, path, token, payload)
            assert status == 403 and message in reply["error"], (path, token, reply)
        lines = [r.getMessage() for r in caplog.records if r.name == "sr_cli.rate.server"]
        assert len(lines) == len(refused)  # one line in the server log per refusal
        assert all(re.match(r"refused (GET|POST) /api/\w+ from 127\.0\.0\.1: ", m) for m in lines)
        assert all(t not in "".join(lines) for t in (alice, bob, live.admin))
        assert db.session_votes(app.engine, app.session_id) == []  # nothing refused was stored

        # Each rater votes as themself, with or without naming themself.
        assert call(url, "POST", "/api/vote", alice, {"item": item, "choice": "left"})[0] == 200
        nxt = call(url, "GET", "/api/next", alice)[1]
        assert nxt["rater"] == "alice" and nxt["done"] == 1
        assert call(url, "POST", "/api/vote", alice, {"rater": "alice", "item": nxt["item"],
                                                      "choice": "same"})[0] == 200  # fmt: skip
        bob_item = call(url, "GET", "/api/next", bob)[1]["item"]
        assert call(url, "POST", "/api/vote", bob, {"item": bob_item, "choice": "right"})[0] == 200
        # A replayed vote is refused, not counted twice.
        assert call(url, "POST", "/api/vote", bob, {"item": bob_item, "choice": "left"})[0] == 409
        votes = db.session_votes(app.engine, app.session_id)
        assert sorted(v.rater for v in votes) == ["alice", "alice", "bob"]

        # The admin view: progress per rater and the scores of sr-rate --results.
        status, view = call(url, "GET", "/api/admin", live.admin)
        assert status == 200 and view["by_invitation"] is True
        assert view["progress"] == [
            {"rater": "alice", "done": 2, "total": 18},
            {"rater": "bob", "done": 1, "total": 18},
        ]
        res = summarize(app.engine, app.session_id, n_boot=200, seed=0)
        shown = {r["run"]: r for r in view["scores"]["runs"]}
        assert view["scores"]["votes"] == 3 and len(shown) == 3
        for k, name in enumerate(res.names):
            np.testing.assert_allclose(
                [shown[name]["score"], shown[name]["ci_low"], shown[name]["ci_high"]],
                [res.score[k], res.ci_low[k], res.ci_high[k]],
                atol=1e-9,
            )

        # A new link for alice replaces the old one; her votes stay hers.
        new = invites.ensure(app.engine, app.session_id, [], renew=["alice"])["alice"]
        assert call(url, "GET", "/api/next", alice)[0] == 403
        assert call(url, "GET", "/api/next", new)[1]["done"] == 2
    finally:
        live.close()


def test_fifty_raters_at_once_lose_no_vote(runs, eval_images, tmp_path):
    """50 raters, each with their own link, post 8 votes each from the same moment, one new
    connection per vote: every vote is answered 200 and stored; none refused or reset (the
    stdlib server with its backlog of 5 reset 20 to 72 of 900: python -m bench.rate_server)."""
    names = [f"rater{k:02d}" for k in range(50)]
    live = LiveServer(rate_args(runs, eval_images, tmp_path / "out", "--raters", ",".join(names)))
    try:
        items = sorted(live.app.items)[:8]
        barrier = threading.Barrier(len(names))
        outcomes: list[str] = []
        lock = threading.Lock()

        def rater(name: str) -> None:
            token = live.tokens[name]
            barrier.wait()
            for item in items:
                try:
                    status, _ = call(live.url, "POST", "/api/vote", token,
                                     {"item": item, "choice": "same"}, timeout=120)  # fmt: skip
                    outcome = str(status)
                except (OSError, http.client.HTTPException) as exc:
                    outcome = type(exc).__name__
                with lock:
                    outcomes.append(outcome)

        threads = [threading.Thread(target=rater, args=(n,)) for n in names]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        errors = sorted({o for o in outcomes if o != "200"})
        assert errors == [] and len(outcomes) == 50 * 8, errors
        assert db.count_votes(live.app.engine, live.app.session_id) == 50 * 8
        assert db.votes_per_rater(live.app.engine, live.app.session_id) == {n: 8 for n in names}
    finally:
        live.close()


def test_stalled_clients_do_not_hold_up_votes(runs, eval_images, tmp_path):
    """300 connections that send half a request and stall (slowloris) take no worker thread:
    a rater's vote still goes through at once."""
    live = LiveServer(rate_args(runs, eval_images, tmp_path / "out", "--raters", "ann"))
    port = live.server.server_address[1]
    stalled = []
    try:
        for _ in range(300):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            s.sendall(b"POST /api/vote HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
            stalled.append(s)
        token = live.tokens["ann"]
        for item in sorted(live.app.items)[:3]:
            t0 = time.monotonic()
            status, _ = call(live.url, "POST", "/api/vote", token, {"item": item, "choice": "same"})
            assert status == 200 and time.monotonic() - t0 < 5
    finally:
        for s in stalled:
            s.close()
        live.close()
    assert db.count_votes(live.app.engine, live.app.session_id) == 3


def _start(runs, images, out: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "sr_cli.commands.rate", *runs, "--set", str(images),
         "-o", str(out), "--crop", "32", "--port", "0", *extra],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip


def test_kill_9_mid_vote_loses_no_accepted_vote(runs, eval_images, tmp_path):
    """The real command with 8 invited raters voting as fast as they can is killed with
    SIGKILL: every vote that was answered 200 is in the database, which is intact."""
    out = tmp_path / "out"
    names = [f"r{k}" for k in range(8)]
    proc = _start(runs, eval_images, out, "--raters", ",".join(names), "--crops", "1")
    try:
        first = proc.stdout.readline()
        assert first.startswith("sr-rate: rate at http://127.0.0.1:"), (first, proc.stderr.read())
        url = first.split()[3]
        links = {}
        while len(links) < len(names) + 1:
            line = proc.stdout.readline()
            m = re.match(r"sr-rate: (?:invite link for (\S+)|admin page .*?): (\S+)$", line)
            assert m, line
            links[m.group(1) or "admin"] = m.group(2)
        assert all(links[n].startswith(url + "#invite=") for n in names)
        assert links["admin"].startswith(url + "admin#admin=")
        tokens = {n: links[n].split("#invite=")[1] for n in names}
        accepted: list[tuple[str, int]] = []
        lock = threading.Lock()
        killed = threading.Event()

        def rater(name: str) -> None:
            while not killed.is_set():
                try:
                    status, nxt = call(url, "GET", "/api/next", tokens[name])
                    if nxt.get("finished"):
                        return
                    status, _ = call(url, "POST", "/api/vote", tokens[name],
                                     {"item": nxt["item"], "choice": "left"})  # fmt: skip
                except (OSError, http.client.HTTPException, ValueError):
                    continue  # the server is gone
                if status == 200:
                    with lock:
                        accepted.append((name, nxt["item"]))

        threads = [threading.Thread(target=rater, args=(n,)) for n in names]
        for t in threads:
            t.start()
        end = time.monotonic() + 120
        while len(accepted) < 20 and time.monotonic() < end:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)  # mid-vote: requests are in flight
        proc.wait(30)
        killed.set()
        for t in threads:
            t.join(60)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=30)
    assert 20 <= len(accepted) < 8 * 18
    with sqlite3.connect(out / "votes.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    engine = db.open_engine(db.default_url(str(out / "votes.db")))
    stored = {(v.rater, v.item_id) for v in db.session_votes(engine, 1)}
    assert set(accepted) <= stored  # at most the votes in flight were not answered


def test_host_beyond_localhost_needs_invitations(runs, eval_images, tmp_path, capsys):
    base = [*runs[:2], "--set", str(eval_images), "-o", str(tmp_path / "o"), "--crop", "32"]
    cases = [
        (["--raters", "alice,,bob"], "--raters 'alice,,bob': the rater name is empty"),
        (["--raters", "alice,alice"], "names 'alice' twice"),
        (["--public-url", "rate.lab.org"], "--public-url 'rate.lab.org' must start with https://"),
        (["--host", "0.0.0.0"], "--host 0.0.0.0 lets other machines vote: invite the raters"),
    ]
    for extra, message in cases:
        with pytest.raises(SystemExit) as info:
            main([*base, *extra])
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert info.value.code == 2 and last.startswith("sr-rate: error:") and message in last


def test_links_use_the_public_url_and_sigterm_revokes_the_admin_link(runs, eval_images, tmp_path):
    out = tmp_path / "out"
    proc = _start(runs[:2], eval_images, out, "--invite", "carol",
                  "--public-url", "https://rate.lab.org/sr")  # fmt: skip
    try:
        lines = [proc.stdout.readline() for _ in range(3)]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert lines[1].startswith("sr-rate: invite link for carol: https://rate.lab.org/sr/#invite=")
    assert lines[2].startswith("sr-rate: admin page (progress, live scores): "
                               "https://rate.lab.org/sr/admin#admin=")  # fmt: skip
    assert proc.returncode == 0 and "every vote cast is saved" in err
    admin = lines[2].strip().split("#admin=")[1]
    engine = db.open_engine(db.default_url(str(out / "votes.db")))
    assert invites.holder(engine, 1, admin) is None  # revoked when the server stopped
    carol = lines[1].strip().split("#invite=")[1]
    assert invites.holder(engine, 1, carol) == invites.Holder("rater", "carol")
