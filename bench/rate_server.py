"""Which HTTP server for ``sr-rate``: the same WSGI application under three servers, measured.

    python -m bench.rate_server [--raters 50] [--items 18] [--slow 300] [--rounds 3]

Servers: the standard library's ``ThreadingHTTPServer`` with its default listen backlog of 5
(what ``sr-rate`` used before), the same with a backlog of 1024, and waitress (what it uses now).
Each runs in a process of its own on a votes database of its own. Two loads, from another process:

* ``burst``: ``--raters`` threads, each with its own invite token, start together and post a vote
  on every one of ``--items`` items, one new connection per vote (as a browser without
  keep-alive). Counted: votes answered 200, connections refused/reset/timed out, votes in the
  database afterwards, latency and wall time.
* ``slow``: ``--slow`` clients open a connection, send half a request and stall; meanwhile 20
  votes are posted. Counted: how many of those votes got through, their latency, and the
  server's thread count (a thread per stalled connection for the stdlib server).

Prints a Markdown table (the README quotes it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

KINDS = ("stdlib-5", "stdlib-1024", "waitress")


# ---------------------------------------------------------------------------- server side
def make_session(db_path: Path, items: int, raters: int) -> list[str]:
    """A pairwise session of 3 runs and ``items`` items in a new database; the raters' tokens."""
    from sr_cli.rate import db, invites

    engine = db.open_engine(db.default_url(str(db_path)))
    runs = [{"idx": k, "name": f"run{k}", "checkpoint": "-", "digest": "-"} for k in range(3)]
    rows = [
        dict(image="img", y=0, x=0, size=8, run_a=k % 2, run_b=2, reason="random")
        for k in range(items)
    ]
    sid = db.create_session(engine, "f" * 64, "pairwise", {}, runs, rows)
    return [invites.issue(engine, sid, f"rater{k:03d}") for k in range(raters)]


def serve(kind: str, db_path: str, port_file: str) -> None:
    """Serve the session of ``db_path`` with server ``kind``; write the port to ``port_file``."""
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

    from sr_cli.rate import db
    from sr_cli.rate.app import RateApp
    from sr_cli.rate.server import RateServer, RateWSGI

    engine = db.open_engine(db.default_url(db_path))
    sid = db.list_sessions(engine)[0]["id"]
    app = RateApp(engine, sid, "pairwise", "f" * 64, db.session_items(engine, sid), Path("."))
    if kind == "waitress":
        server = RateServer(app, "127.0.0.1", 0)
        port = server.server_address[1]
        run = server.serve_forever
    else:

        class Quiet(WSGIRequestHandler):
            def log_message(self, *args) -> None:
                pass

        class Threading(ThreadingMixIn, WSGIServer):
            daemon_threads = True
            request_queue_size = int(kind.split("-")[1])

        httpd = Threading(("127.0.0.1", 0), Quiet)
        httpd.set_app(RateWSGI(app))
        port = httpd.server_address[1]
        run = httpd.serve_forever
    Path(port_file).write_text(str(port))
    run()


# ---------------------------------------------------------------------------- client side
def post_vote(port: int, token: str, item: int, timeout: float = 60) -> str:
    """One vote on a new connection: ``"200"``, another status, or the error's class name."""
    body = json.dumps({"item": item, "choice": "same"})
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(
            "POST",
            "/api/vote",
            body,
            {
                "Content-Type": "application/json",
                "Authorization": f"Bearer {token}",
                "Connection": "close",
            },
        )
        resp = conn.getresponse()
        resp.read()
        return str(resp.status)
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        conn.close()


def burst(port: int, tokens: list[str], items: list[int]) -> dict:
    results: list[tuple[str, float]] = []
    lock = threading.Lock()
    barrier = threading.Barrier(len(tokens))

    def rater(token: str) -> None:
        barrier.wait()
        for item in items:
            t0 = time.perf_counter()
            outcome = post_vote(port, token, item)
            with lock:
                results.append((outcome, time.perf_counter() - t0))

    threads = [threading.Thread(target=rater, args=(t,)) for t in tokens]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lat = sorted(d for o, d in results if o == "200")
    errors: dict[str, int] = {}
    for o, _ in results:
        if o != "200":
            errors[o] = errors.get(o, 0) + 1
    return {
        "sent": len(results),
        "ok": len(lat),
        "errors": errors,
        "p50_ms": 1000 * lat[len(lat) // 2] if lat else None,
        "p95_ms": 1000 * lat[int(len(lat) * 0.95)] if lat else None,
        "max_ms": 1000 * lat[-1] if lat else None,
        "wall_s": wall,
    }


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


def slow_clients(port: int, pid: int, tokens: list[str], items: list[int], n: int) -> dict:
    stalled = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /api/vote HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n")
        stalled.append(s)
    time.sleep(1.0)
    threads = threads_of(pid)
    outcomes, lat = [], []
    for k in range(20):
        t0 = time.perf_counter()
        outcomes.append(post_vote(port, tokens[k % len(tokens)], items[k // len(tokens)], 15))
        lat.append(time.perf_counter() - t0)
    for s in stalled:
        s.close()
    ok = [d for o, d in zip(outcomes, lat) if o == "200"]
    return {
        "ok": len(ok),
        "of": len(outcomes),
        "server_threads": threads,
        "max_ms": 1000 * max(ok) if ok else None,
    }


def count_votes(db_path: Path) -> int:
    import sqlite3

    with sqlite3.connect(db_path) as conn:
        return conn.execute("SELECT COUNT(*) FROM rate_votes").fetchone()[0]


def measure(kind: str, raters: int, items: int, slow: int, folder: Path) -> dict:
    db_path = folder / f"{kind}.db"
    tokens = make_session(db_path, items + 1, raters)
    port_file = folder / f"{kind}.port"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.rate_server", "--serve", kind, str(db_path), str(port_file)],
        env=env,
        cwd=Path(__file__).resolve().parent.parent,
    )
    try:
        end = time.monotonic() + 60
        while not port_file.is_file() or not port_file.read_text():
            if time.monotonic() > end or proc.poll() is not None:
                raise RuntimeError(f"the {kind} server did not start")
            time.sleep(0.05)
        port = int(port_file.read_text())
        item_ids = list(range(1, items + 1))  # ids of a fresh database: 1..items+1
        out = burst(port, tokens, item_ids)
        out["stored"] = count_votes(db_path)
        out["slow"] = slow_clients(port, proc.pid, tokens, [items + 1] * 20, slow)
        return out
    finally:
        proc.terminate()
        proc.wait(30)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--raters", type=int, default=50)
    p.add_argument("--items", type=int, default=18)
    p.add_argument("--slow", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument("--serve", nargs=3, metavar=("KIND", "DB", "PORT_FILE"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(*args.serve)
        return 0
    print(
        f"{args.raters} raters x {args.items} votes at once, one connection per vote; then "
        f"{args.slow} stalled clients and 20 votes; {os.cpu_count()} CPUs\n"
    )
    print(
        "| server | round | votes 200 | errors | stored | p50 ms | p95 ms | max ms | wall s | "
        "votes past stalled clients | server threads | max ms |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in range(args.rounds):
        for kind in args.kinds.split(","):  # alternated, so a busy machine slows all alike
            with tempfile.TemporaryDirectory() as tmp:
                m = measure(kind, args.raters, args.items, args.slow, Path(tmp))
            s = m["slow"]
            slow_max = "-" if s["max_ms"] is None else f"{s['max_ms']:.0f}"
            errors = ", ".join(f"{k} {v}" for k, v in sorted(m["errors"].items())) or "none"
            print(
                f"| {kind} | {r + 1} | {m['ok']}/{m['sent']} | {errors} | {m['stored']} | "
                f"{m['p50_ms']:.0f} | {m['p95_ms']:.0f} | {m['max_ms']:.0f} | {m['wall_s']:.1f} | "
                f"{s['ok']}/{s['of']} | {s['server_threads']} | {slow_max} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
