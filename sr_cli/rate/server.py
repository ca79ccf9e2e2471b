"""The rating server: a WSGI application served by waitress, a JSON API and two pages.

Routes::

    GET  /                 the rating page (sr_cli.rate.page)
    GET  /app.js /app.css  its script and style
    GET  /admin /admin.js  the admin page (sr_cli.rate.admin_page): progress and live scores
    GET  /api/session      {"mode", "by_invitation"}: what the page needs before anything else
    GET  /api/next         the rater's next item: opaque image URLs, progress
    POST /api/vote         {"item", "choice": left|right|same} or {"item", "rating": 1-5}
    GET  /api/admin        the admin view (needs the admin token)
    GET  /img/<token>.png  a crop of this session (random tokens; nothing else is served)

Who is asking: ``Authorization: Bearer <token>`` carries an invite or admin token (the pages
read it from their link's ``#invite=`` / ``#admin=`` fragment, which browsers never send to a
server or a proxy, so it stays out of access logs). A session by invitation refuses a request
without a valid rater token with HTTP 403 and one line in the server log; an open session (no
invite link made, served on localhost only) takes the rater's name (``?rater=`` / ``"rater"``).

Why waitress rather than the standard library's ``ThreadingHTTPServer``: measured with 50
raters posting at once (``python -m bench.rate_server``, README), the stdlib server's listen
backlog of 5 resets connections, and even with a large backlog it spends a thread per open
connection, so slow or idle clients pin threads. waitress reads requests asynchronously and
hands only complete ones to a fixed pool of worker threads, closes idle connections after
``channel_timeout`` and trusts ``X-Forwarded-*`` headers only from a proxy named with
``--trusted-proxy``. TLS is the reverse proxy's job (README: nginx and Caddy snippets).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

from sr_cli.errors import ConfigError
from sr_cli.rate import db
from sr_cli.rate.admin_page import ADMIN_HTML, ADMIN_JS
from sr_cli.rate.app import Forbidden, RateApp
from sr_cli.rate.page import APP_CSS, APP_JS, INDEX_HTML

log = logging.getLogger(__name__)

MAX_BODY = 4096
#: Worker threads (votes are short transactions; the database serializes the writes anyway).
THREADS = 8
#: Open connections accepted at once (idle keep-alive browsers and slow clients included).
CONNECTION_LIMIT = 1000
#: Seconds after which an idle connection is closed.
CHANNEL_TIMEOUT = 60
SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]
STATIC = {
    "/": (INDEX_HTML, "text/html; charset=utf-8"),
    "/index.html": (INDEX_HTML, "text/html; charset=utf-8"),
    "/app.js": (APP_JS, "text/javascript; charset=utf-8"),
    "/app.css": (APP_CSS, "text/css; charset=utf-8"),
    "/admin": (ADMIN_HTML, "text/html; charset=utf-8"),
    "/admin.js": (ADMIN_JS, "text/javascript; charset=utf-8"),
}
REASONS = {
    200: "OK",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Payload Too Large",
    415: "Unsupported Media Type",
}

StartResponse = Callable[..., Any]


def _printable(text: str, limit: int = 120) -> str:
    """``text`` safe for one log line (no control characters, bounded)."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[:limit] + "..."


class RateWSGI:
    """The HTTP face of a :class:`RateApp`, as a WSGI application."""

    def __init__(self, app: RateApp) -> None:
        self.app = app

    # ------------------------------------------------------------------ responses
    def _send(
        self,
        start_response: StartResponse,
        status: int,
        body: bytes,
        ctype: str,
        cache: str = "no-store",
    ) -> list[bytes]:
        headers = [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", cache),
            *SECURITY_HEADERS,
        ]
        start_response(f"{status} {REASONS.get(status, '')}".strip(), headers)
        return [body]

    def _json(self, start_response: StartResponse, status: int, obj: Any) -> list[bytes]:
        body = json.dumps(obj).encode()
        return self._send(start_response, status, body, "application/json; charset=utf-8")

    def _error(self, start_response: StartResponse, status: int, message: str) -> list[bytes]:
        return self._json(start_response, status, {"error": message})

    def _refuse(self, environ: dict, start_response: StartResponse, exc: Forbidden) -> list[bytes]:
        log.warning(
            "refused %s %s from %s: %s",
            environ.get("REQUEST_METHOD"),
            _printable(environ.get("PATH_INFO", "")),
            environ.get("REMOTE_ADDR", "?"),
            exc,
        )
        return self._error(start_response, 403, str(exc))

    @staticmethod
    def _token(environ: dict) -> str | None:
        auth = environ.get("HTTP_AUTHORIZATION") or ""
        scheme, _, value = auth.partition(" ")
        if scheme.lower() != "bearer":
            return None
        return value.strip() or None

    # ------------------------------------------------------------------ dispatch
    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        method = environ.get("REQUEST_METHOD", "GET")
        path = environ.get("PATH_INFO", "") or "/"
        try:
            if method in ("GET", "HEAD"):
                return self._get(environ, start_response, path)
            if method == "POST":
                return self._post(environ, start_response, path)
            return self._error(start_response, 405, "only GET and POST are served")
        except Forbidden as exc:
            return self._refuse(environ, start_response, exc)

    def _get(self, environ: dict, start_response: StartResponse, path: str) -> list[bytes]:
        if path in STATIC:
            text, ctype = STATIC[path]
            return self._send(start_response, 200, text.encode(), ctype)
        if path == "/api/session":
            return self._json(
                start_response,
                200,
                {"mode": self.app.mode, "by_invitation": self.app.by_invitation},
            )
        if path == "/api/next":
            query = parse_qs(environ.get("QUERY_STRING", ""))
            claimed = (query.get("rater") or [None])[0]
            try:
                rater = self.app.rater_for(self._token(environ), claimed)
                return self._json(start_response, 200, self.app.next_item(rater))
            except ConfigError as exc:
                return self._error(start_response, 400, str(exc))
        if path == "/api/admin":
            self.app.check_admin(self._token(environ))
            return self._json(start_response, 200, self.app.admin_view())
        if path.startswith("/img/") and path.endswith(".png"):
            file = self.app.image(path[len("/img/") : -len(".png")])
            if file is not None and file.is_file():
                return self._send(
                    start_response,
                    200,
                    file.read_bytes(),
                    "image/png",
                    cache="private, max-age=3600",
                )
        return self._error(start_response, 404, f"no such page: {_printable(path)}")

    def _post(self, environ: dict, start_response: StartResponse, path: str) -> list[bytes]:
        if path != "/api/vote":
            return self._error(start_response, 404, f"no such endpoint: {_printable(path)}")
        ctype = (environ.get("CONTENT_TYPE") or "").split(";")[0].strip().lower()
        if ctype != "application/json":
            # Also keeps other web sites from posting votes: a cross-site JSON POST needs a
            # CORS preflight, which this server never grants.
            return self._error(
                start_response, 415, "send the vote as Content-Type: application/json"
            )
        try:
            length = int(environ.get("CONTENT_LENGTH") or "0")
        except ValueError:
            return self._error(start_response, 400, "bad Content-Length header")
        if length <= 0:
            return self._error(start_response, 400, "empty vote: send a JSON object")
        if length > MAX_BODY:
            return self._error(start_response, 413, f"a vote is at most {MAX_BODY} bytes")
        raw = environ["wsgi.input"].read(length)
        try:
            payload = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return self._error(start_response, 400, f"the vote is not valid JSON: {exc}")
        token = self._token(environ)
        try:
            rater = None
            if token or self.app.by_invitation:
                claimed = payload.get("rater") if isinstance(payload, dict) else None
                rater = self.app.rater_for(token, claimed)
            return self._json(start_response, 200, self.app.vote(payload, rater))
        except db.DuplicateVote as exc:
            return self._error(start_response, 409, str(exc))
        except ConfigError as exc:
            return self._error(start_response, 400, str(exc))


class RateServer:
    """A waitress server for one :class:`RateApp`, started with :meth:`serve_forever` (in any
    thread) and stopped with :meth:`shutdown` (from another) or a signal."""

    def __init__(
        self,
        app: RateApp,
        host: str = "127.0.0.1",
        port: int = 0,
        trusted_proxy: str | None = None,
        threads: int = THREADS,
    ) -> None:
        import waitress

        logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" noise
        self.app = app
        self.wsgi = RateWSGI(app)
        listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        options: dict[str, Any] = dict(
            listen=listen,
            threads=threads,
            connection_limit=CONNECTION_LIMIT,
            channel_timeout=CHANNEL_TIMEOUT,
            backlog=1024,
            max_request_body_size=64 * 1024,  # the app refuses votes over MAX_BODY with JSON
            ident="sr-rate",
            expose_tracebacks=False,
            clear_untrusted_proxy_headers=True,
        )
        if trusted_proxy:
            options.update(
                trusted_proxy=trusted_proxy,
                trusted_proxy_headers={"x-forwarded-for", "x-forwarded-proto"},
                trusted_proxy_count=1,
            )
        try:
            self._server = waitress.create_server(self.wsgi, **options)
        except OSError as exc:
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); pick another --port"
            ) from exc
        except ValueError as exc:  # waitress: a host it cannot resolve
            raise ConfigError(f"--host {host!r}: {exc}") from exc
        self.server_address = (self._server.effective_host, self._server.effective_port)
        self._lock = threading.Lock()
        self._running = False
        self._closed = False
        self._channels_closed = False
        self._done = threading.Event()

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown` (or Ctrl-C / SIGTERM in the main thread)."""
        with self._lock:
            if self._closed:
                return
            self._running = True
            self._done.clear()
        try:
            self._server.run()  # returns after a KeyboardInterrupt too (waitress catches it)
        finally:
            with self._lock:
                self._running = False
            self._done.set()

    def _close_channels(self) -> None:
        if self._channels_closed:
            return
        self._channels_closed = True
        for channel in list(self._server._map.values()):  # connections and the trigger
            if channel is not self._server:
                try:
                    channel.handle_close()
                except Exception:  # noqa: BLE001 - closing what is left, best effort
                    pass
        self._server.close()  # the listening socket

    def shutdown(self) -> None:
        """Stop serving and close every connection; returns once :meth:`serve_forever` has
        returned and the workers have ended (a vote being written commits first)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            running = self._running
        # Workers first: a vote being written commits and its reply goes out.
        self._server.task_dispatcher.shutdown()
        if running:
            # The sockets belong to the serving thread's loop: close them there, between polls.
            self._server.trigger.pull_trigger(self._close_channels)
            self._done.wait(30)
        if not self._running:  # also what a loop stopped by Ctrl-C left open
            self._close_channels()

    def server_close(self) -> None:
        self.shutdown()


def make_server(
    app: RateApp, host: str = "127.0.0.1", port: int = 0, trusted_proxy: str | None = None
) -> RateServer:
    """A server for ``app`` on ``host:port`` (port 0: any free port); not started yet."""
    return RateServer(app, host, port, trusted_proxy)


def address(server: RateServer) -> str:
    host, port = server.server_address[:2]
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    if ":" in str(shown):
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def serve_forever(
    server: RateServer, announce: bool = True, lines: Iterable[str] = (), on_stop=None
) -> None:
    """Serve in this thread until Ctrl-C or SIGTERM. ``lines`` (the links) are printed after
    the address; ``on_stop()`` runs once the server has stopped (e.g. to revoke the admin link)."""
    # Installed before the address is printed (a parent may signal as soon as it reads it).
    # Ctrl-C and SIGTERM stop the server, even when this process was started with SIGINT ignored
    # (a shell's background job `sr-rate ... &`, or a parent that ignores it: Python then keeps
    # SIG_IGN and Ctrl-C would do nothing).
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        if announce:
            print(f"sr-rate: rate at {address(server)}  (Ctrl-C to stop)", flush=True)
            for line in lines:
                print(line, flush=True)
            if server.server_address[0] in ("0.0.0.0", "::"):
                print(
                    "sr-rate: listening on every interface: raters on your LAN use this "
                    "machine's address with the same port",
                    file=sys.stderr,
                    flush=True,
                )
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        if on_stop is not None:
            on_stop()
    print("\nsr-rate: stopped; every vote cast is saved", file=sys.stderr)
