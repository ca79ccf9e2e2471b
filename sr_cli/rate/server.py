"""The rating server: stdlib ``ThreadingHTTPServer``, a JSON API and the page.

Routes::

    GET  /                 the page (sr_cli.rate.page)
    GET  /app.js /app.css  its script and style
    GET  /api/next?rater=  the rater's next item: opaque image URLs, progress
    POST /api/vote         {"rater", "item", "choice": left|right|same} or {..., "rating": 1-5}
    GET  /img/<token>.png  a crop of this session (random tokens; nothing else is served)

Each rater sees the items in an order of their own and the two runs of a pair on sides of
their own, both derived from the session fingerprint and the rater's name, so a reload or a
server restart shows the same thing again. Image URLs are random tokens that say nothing
about the run; run names never reach the page.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy.engine import Engine

from sr_cli.errors import ConfigError
from sr_cli.rate import db
from sr_cli.rate.page import APP_CSS, APP_JS, INDEX_HTML

MAX_BODY = 4096
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class BadVote(ConfigError):
    """A malformed vote (HTTP 400)."""


def _stable_int(*parts: Any) -> int:
    h = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(h[:8], "big")


class RateApp:
    """The session being rated: its items, image tokens and votes (no HTTP in here)."""

    def __init__(
        self,
        engine: Engine,
        session_id: int,
        mode: str,
        fingerprint: str,
        items: list[db.Item],
        crops_dir: Path,
        show_gt: bool = False,
    ) -> None:
        self.engine = engine
        self.session_id = session_id
        self.mode = mode
        self.fingerprint = fingerprint
        self.items = {it.id: it for it in items}
        self.show_gt = show_gt
        self._files: dict[str, Path] = {}
        self._tokens: dict[tuple[int, str], str] = {}
        roles = ("a", "b", "gt") if mode == "pairwise" else ("a", "gt")
        for it in items:
            for role in roles:
                token = secrets.token_urlsafe(12)
                self._tokens[it.id, role] = token
                self._files[token] = crops_dir / f"{it.id}_{role}.png"
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ per rater
    def order(self, rater: str) -> list[int]:
        """The items in this rater's order (stable across reloads and restarts)."""
        return sorted(self.items, key=lambda i: _stable_int(self.fingerprint, rater, "order", i))

    def left_is_a(self, rater: str, item_id: int) -> bool:
        return _stable_int(self.fingerprint, rater, "side", item_id) % 2 == 0

    def side_runs(self, rater: str, item_id: int) -> dict[str, int | None]:
        """Run index shown on each side to ``rater`` (for analyses and tests)."""
        it = self.items[item_id]
        if self.mode != "pairwise":
            return {"left": it.run_a, "right": None}
        if self.left_is_a(rater, item_id):
            return {"left": it.run_a, "right": it.run_b}
        return {"left": it.run_b, "right": it.run_a}

    def run_of_image(self, url: str) -> tuple[int, int | None] | None:
        """``(item, run index)`` of an image URL (``None`` for GT or unknown)."""
        token = url.rsplit("/", 1)[-1].removesuffix(".png")
        for (item_id, role), t in self._tokens.items():
            if t == token:
                it = self.items[item_id]
                return item_id, {"a": it.run_a, "b": it.run_b}.get(role)
        return None

    def next_item(self, rater: str) -> dict:
        rater = db.check_rater_name(rater)
        done = db.rated_items(self.engine, self.session_id, rater) & set(self.items)
        total = len(self.items)
        todo = [i for i in self.order(rater) if i not in done]
        if not todo:
            return {"finished": True, "done": len(done), "total": total}
        item_id = todo[0]
        it = self.items[item_id]
        if self.mode == "pairwise":
            left, right = ("a", "b") if self.left_is_a(rater, item_id) else ("b", "a")
            images = {
                "left": f"/img/{self._tokens[item_id, left]}.png",
                "right": f"/img/{self._tokens[item_id, right]}.png",
            }
        else:
            images = {"left": f"/img/{self._tokens[item_id, 'a']}.png"}
        images["gt"] = f"/img/{self._tokens[item_id, 'gt']}.png" if self.show_gt else None
        return {
            "finished": False,
            "item": item_id,
            "mode": self.mode,
            "size": it.size,
            "images": images,
            "done": len(done),
            "total": total,
        }

    def vote(self, payload: Any) -> dict:
        """Validate and store one vote. Raises :class:`BadVote` or :class:`db.DuplicateVote`."""
        if not isinstance(payload, dict):
            raise BadVote("the vote must be a JSON object")
        allowed = {"rater", "item", "choice", "rating"}
        extra = set(payload) - allowed
        if extra:
            raise BadVote(
                f"unknown field(s) {sorted(extra)} in the vote; allowed: {sorted(allowed)}"
            )
        try:
            rater = db.check_rater_name(payload.get("rater"))
        except ConfigError as exc:
            raise BadVote(str(exc)) from None
        item_id = payload.get("item")
        if not isinstance(item_id, int) or isinstance(item_id, bool) or item_id not in self.items:
            raise BadVote(f"item {item_id!r} is not an item of this session")
        sides = self.side_runs(rater, item_id)
        if self.mode == "pairwise":
            if "rating" in payload:
                raise BadVote("this is a pairwise session: send choice=left|right|same, no rating")
            choice = payload.get("choice")
            if choice not in ("left", "right", "same"):
                raise BadVote(f"choice {choice!r} must be 'left', 'right' or 'same'")
            it = self.items[item_id]
            stored = "same"
            if choice != "same":
                winner = sides[choice]
                stored = "a" if winner == it.run_a else "b"
            db.record_vote(
                self.engine, self.session_id, item_id, rater, choice=stored, left_run=sides["left"]
            )
        else:
            if "choice" in payload:
                raise BadVote("this is an absolute session: send rating=1..5, no choice")
            rating = payload.get("rating")
            if not isinstance(rating, int) or isinstance(rating, bool) or not 1 <= rating <= 5:
                raise BadVote(f"rating {rating!r} must be an integer from 1 to 5")
            db.record_vote(self.engine, self.session_id, item_id, rater, rating=rating)
        done = len(db.rated_items(self.engine, self.session_id, rater) & set(self.items))
        return {"ok": True, "done": done, "total": len(self.items)}

    def image(self, token: str) -> Path | None:
        return self._files.get(token)


class Handler(BaseHTTPRequestHandler):
    server_version = "sr-rate"
    app: RateApp  # set on the subclass made by make_server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)

    def _send(self, status: int, body: bytes, ctype: str, cache: str = "no-store") -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", cache)
        for k, v in SECURITY_HEADERS.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any) -> None:
        self._send(status, json.dumps(obj).encode(), "application/json; charset=utf-8")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        url = urlsplit(self.path)
        path = url.path
        if path in ("/", "/index.html"):
            return self._send(200, INDEX_HTML.encode(), "text/html; charset=utf-8")
        if path == "/app.js":
            return self._send(200, APP_JS.encode(), "text/javascript; charset=utf-8")
        if path == "/app.css":
            return self._send(200, APP_CSS.encode(), "text/css; charset=utf-8")
        if path == "/api/next":
            rater = (parse_qs(url.query).get("rater") or [""])[0]
            try:
                return self._json(200, self.app.next_item(rater))
            except ConfigError as exc:
                return self._error(400, str(exc))
        if path.startswith("/img/") and path.endswith(".png"):
            file = self.app.image(path[len("/img/") : -len(".png")])
            if file is not None and file.is_file():
                return self._send(
                    200, file.read_bytes(), "image/png", cache="private, max-age=3600"
                )
        return self._error(404, f"no such page: {path}")

    do_HEAD = do_GET

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        if urlsplit(self.path).path != "/api/vote":
            return self._error(404, f"no such endpoint: {self.path}")
        ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            # Also keeps other web sites from posting votes: a cross-site JSON POST needs a
            # CORS preflight, which this server never grants.
            return self._error(415, "send the vote as Content-Type: application/json")
        try:
            length = int(self.headers.get("Content-Length") or "0")
        except ValueError:
            return self._error(400, "bad Content-Length header")
        if length <= 0:
            return self._error(400, "empty vote: send a JSON object")
        if length > MAX_BODY:
            return self._error(413, f"a vote is at most {MAX_BODY} bytes")
        raw = self.rfile.read(length)
        try:
            payload = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._error(400, f"the vote is not valid JSON: {exc}")
        try:
            return self._json(200, self.app.vote(payload))
        except db.DuplicateVote as exc:
            return self._error(409, str(exc))
        except ConfigError as exc:
            return self._error(400, str(exc))

    def do_PUT(self) -> None:  # noqa: N802
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and POST are served")

    do_DELETE = do_PATCH = do_PUT


class RateServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    verbose = False


def make_server(app: RateApp, host: str = "127.0.0.1", port: int = 0) -> RateServer:
    """A server for ``app`` on ``host:port`` (port 0: any free port); not started yet."""
    import socket

    handler = type("BoundHandler", (Handler,), {"app": app})
    server_cls = RateServer
    if ":" in host:
        server_cls = type("RateServer6", (RateServer,), {"address_family": socket.AF_INET6})
    try:
        return server_cls((host, port), handler)
    except OSError as exc:
        raise ConfigError(
            f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port"
        ) from exc


def address(server: RateServer) -> str:
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in str(shown):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def serve_forever(server: RateServer, announce: bool = True) -> None:
    if announce:
        print(f"sr-rate: rate at {address(server)}  (Ctrl-C to stop)", flush=True)
        if server.server_address[0] in ("0.0.0.0", "::"):
            print(
                "sr-rate: listening on every interface: raters on your LAN use this machine's "
                "address with the same port",
                file=sys.stderr,
                flush=True,
            )
    # Ctrl-C and SIGTERM stop the server, even when this process was started with SIGINT ignored
    # (a shell's background job `sr-rate ... &`, or a parent that ignores it: Python then keeps
    # SIG_IGN and Ctrl-C would do nothing).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("\nsr-rate: stopped; every vote cast is saved", file=sys.stderr)
    finally:
        server.server_close()
