"""Reading a remote shard over HTTP(S) that survives dropped connections, byte for byte.

:class:`ResumableHTTPReader` is a read-only file whose bytes are those of the URL, whatever
happens to the connection: when a read fails (reset, timeout, a connection closed before the
expected size), it waits, reconnects and goes on where it stopped, with a ``Range`` request
when the server honours it (HTTP 206) or by reading the file again from the start and
dropping the bytes already delivered (a server that answers 200). The consumer sees one
uninterrupted stream, so a tar reader on top of it yields every sample once, in order.

Retries are bounded: after ``retries`` failures in a row without a byte of progress it gives
up with an :class:`OSError` naming the URL, the offset and the last reason. The waits grow
exponentially, ``backoff * 2**k`` seconds (at most :data:`MAX_DELAY`). Each retry is logged.
"""

from __future__ import annotations

import http.client
import io
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from urllib.parse import urlparse

log = logging.getLogger(__name__)

#: Longest wait between two attempts, in seconds.
MAX_DELAY = 60.0
#: Socket timeout of a connection, in seconds: a stalled server counts as a failure.
TIMEOUT = 60.0
CHUNK = 1 << 16


class ResumableHTTPReader(io.RawIOBase):
    """The bytes at ``url`` (``size`` of them, when known), across dropped connections.

    Args:
        url: an ``http://`` or ``https://`` URL.
        size: the expected length in bytes (e.g. from a manifest); a stream that ends earlier
            is a dropped connection. ``None``: the server's ``Content-Length`` if it sends one.
        retries: failures in a row (without progress) tolerated before giving up.
        backoff: first wait in seconds; doubled after each failure in a row.
        sleep: the waiting function (``time.sleep``).
    """

    def __init__(
        self,
        url: str,
        size: int | None = None,
        retries: int = 5,
        backoff: float = 1.0,
        sleep=time.sleep,
    ) -> None:
        super().__init__()
        self.url = url
        self.size = size
        self.retries = int(retries)
        self.backoff = float(backoff)
        self.sleep = sleep
        self.offset = 0
        self.resumed = 0  # reconnections so far (for tests and logs)
        self._resp = None
        self._skip = 0  # bytes to drop after a server restarted from the beginning

    def readable(self) -> bool:
        return True

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        headers = {"User-Agent": "sr-cli"}
        if self.offset:
            headers["Range"] = f"bytes={self.offset}-"
        resp = urllib.request.urlopen(
            urllib.request.Request(self.url, headers=headers), timeout=TIMEOUT
        )
        status = resp.status
        if self.offset and status == 206:
            start = _range_start(resp.headers.get("Content-Range"))
            if start != self.offset:
                resp.close()
                raise OSError(f"asked for bytes from {self.offset}, the server sent from {start}")
            self._skip = 0
        elif status == 200:
            self._skip = self.offset  # no range support: read again, drop what was delivered
            if self.offset:
                log.warning(
                    "%s: the server ignores ranges: reading it again from the start, dropping "
                    "the %d bytes already read",
                    self.url,
                    self.offset,
                )
            length = resp.headers.get("Content-Length")
            if self.size is None and length is not None and length.isdigit():
                self.size = int(length)
        else:
            resp.close()
            raise OSError(f"HTTP {status} for {'a range' if self.offset else 'the file'}")
        self._resp = resp

    def _drop(self) -> None:
        if self._resp is not None:
            try:
                self._resp.close()
            except Exception:  # noqa: BLE001 - the connection is broken already
                pass
            self._resp = None

    # ------------------------------------------------------------------ reading
    def readinto(self, buffer) -> int:
        want = len(buffer)
        if self.size is not None:
            want = min(want, self.size - self.offset)
        if want <= 0:
            return 0
        failures = 0
        while True:
            try:
                if self._resp is None:
                    self._connect()
                while self._skip:
                    dropped = self._resp.read(min(self._skip, CHUNK))
                    if not dropped:
                        raise OSError("the connection closed while reading the file again")
                    self._skip -= len(dropped)
                n = self._resp.readinto(memoryview(buffer)[:want])
                if n:
                    self.offset += n
                    return n
                if self.size is None:
                    return 0  # the end, as far as anyone can tell
                raise OSError(f"the connection closed after {self.offset} of {self.size} bytes")
            except (OSError, http.client.HTTPException, ValueError) as exc:
                self._drop()
                if isinstance(exc, urllib.error.HTTPError) and exc.code in (404, 410):
                    raise OSError(f"HTTP {exc.code}: no such file on the server") from None
                failures += 1
                if failures > self.retries:
                    raise OSError(
                        f"{_reason(exc)}; still failing at byte {self.offset} after "
                        f"{self.retries} retries"
                    ) from None
                delay = min(MAX_DELAY, self.backoff * 2 ** (failures - 1))
                log.warning(
                    "%s: %s at byte %d; retry %d of %d in %.2g s",
                    self.url,
                    _reason(exc),
                    self.offset,
                    failures,
                    self.retries,
                    delay,
                )
                self.sleep(delay)
                self.resumed += 1

    def close(self) -> None:
        self._drop()
        super().close()


def _range_start(content_range: str | None) -> int | None:
    """``bytes 100-199/200`` -> 100."""
    if not content_range or not content_range.startswith("bytes "):
        return None
    first = content_range[len("bytes ") :].split("-", 1)[0]
    return int(first) if first.isdigit() else None


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0][:200]


def open_resumable(url: str, size: int | None, retries: int, backoff: float) -> io.BufferedReader:
    """A buffered :class:`ResumableHTTPReader` (what a tar reader wants)."""
    return io.BufferedReader(ResumableHTTPReader(url, size, retries, backoff), CHUNK)


def tar_samples(url: str, size: int | None, retries: int, backoff: float) -> Iterator[dict]:
    """webdataset's samples of one tar shard. An http(s) shard is read through a
    :class:`ResumableHTTPReader` (``retries`` failures in a row, exponential ``backoff``), so a
    dropped connection costs a retry, not the shard, and every sample comes out once, in order.
    Local files and ``pipe:`` commands are read by webdataset (no retry: a ``pipe:`` command
    may do its own)."""
    from webdataset.tariterators import group_by_keys, tar_file_expander, tarfile_samples

    def reraise(exc: Exception) -> bool:
        raise exc

    if urlparse(url).scheme not in ("http", "https"):
        yield from tarfile_samples([{"url": url}], handler=reraise)
        return
    stream = open_resumable(url, size, retries, backoff)
    try:
        files = tar_file_expander([{"url": url, "stream": stream}], handler=reraise)
        yield from group_by_keys(files, handler=reraise)
    finally:
        stream.close()
