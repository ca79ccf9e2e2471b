"""``sr-data shard`` and ``data=stream``: WebDataset shards written from the bundled images, read
back byte for byte, split across workers and ranks, resumed exactly, and trained on."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sr_cli.commands.data import main as sr_data
from sr_cli.data import SAMPLES_DIR
from sr_cli.data.images import read_image
from sr_cli.data.streaming import (
    StreamingHRDataset,
    StreamLoader,
    decode_image,
    open_shard_set,
)
from sr_cli.errors import ConfigError, DataError
from sr_cli.train.training import train

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def hr_dir(tmp_path_factory) -> Path:
    """The 12 bundled images (training and validation) in one HR folder."""
    src = tmp_path_factory.mktemp("hr")
    for path in sorted((SAMPLES_DIR / "train").glob("*.png")) + sorted(
        (SAMPLES_DIR / "val").glob("*.png")
    ):
        shutil.copy(path, src / path.name)
    return src


def _shard(src: Path, out: Path, *args: str) -> Path:
    assert sr_data(["shard", str(src), str(out), "--quiet", *args]) == 0
    return out


@pytest.fixture(scope="module")
def shards_1(hr_dir, tmp_path_factory) -> Path:
    """One image per shard: 12 shards."""
    return _shard(hr_dir, tmp_path_factory.mktemp("s") / "one", "--shard-size", "1")


@pytest.fixture(scope="module")
def shards_2(hr_dir, tmp_path_factory) -> Path:
    """Two images per shard: 6 shards."""
    return _shard(hr_dir, tmp_path_factory.mktemp("s") / "two", "--shard-size", "2")


def test_shard_set_round_trips_bytes_and_pixels(hr_dir, tmp_path, capsys):
    out = _shard(hr_dir, tmp_path / "set", "--shard-size", "5")
    assert "12 images" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["count"] == 12
    assert [s["count"] for s in manifest["shards"]] == [5, 5, 2]
    assert sorted(p.name for p in out.iterdir()) == [
        "manifest.json",
        "shard-000000.tar",
        "shard-000001.tar",
        "shard-000002.tar",
    ]
    sources = sorted(hr_dir.iterdir())
    stored = {}
    for entry in manifest["shards"]:
        path = out / entry["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"]
        assert path.stat().st_size == entry["bytes"]
        with tarfile.open(path) as tar:  # the standard library reads what webdataset wrote
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        assert len(members) == 2 * entry["count"]
        for name, data in members.items():
            key, ext = name.split(".", 1)
            stored.setdefault(key, {})[ext] = data
    assert len(stored) == 12
    for key, files in stored.items():
        source = sources[int(key)]
        assert files["name.txt"].decode() == source.name
        assert files["png"] == source.read_bytes()
        assert np.array_equal(decode_image(files["png"], key), read_image(source))


def test_shard_bytes_limit_and_existing_output(hr_dir, tmp_path):
    out = _shard(hr_dir, tmp_path / "set", "--shard-bytes", "1")  # every image closes a shard
    assert [s["count"] for s in json.loads((out / "manifest.json").read_text())["shards"]] == [
        1
    ] * 12
    assert sr_data(["shard", str(hr_dir), str(out), "--quiet"]) == 2  # refuses to overwrite
    assert sr_data(["shard", str(hr_dir), str(out), "--quiet", "--force", "--shard-size", "6"]) == 0
    assert len(list(out.glob("shard-*.tar"))) == 2


def _dataset(shards, rank=0, world=2, batch=1, iters=6, **kw) -> StreamingHRDataset:
    return StreamingHRDataset(
        open_shard_set(str(shards)),
        patch_size=32,
        scale=4,
        batch_size=batch,
        iters_per_epoch=iters,
        seed=7,
        rank=rank,
        world_size=world,
        **kw,
    )


def _epoch(ds, start=0, workers=2) -> list[dict]:
    return list(StreamLoader(ds, start_batch=lambda: start, num_workers=workers))


def test_two_workers_two_ranks_read_disjoint_samples_covering_the_set(shards_1):
    """12 shards, 2 ranks x 2 worker processes: each reader's pass is 3 images of its own."""
    seen: dict[tuple[int, int], list[str]] = {}
    for rank in range(2):
        batches = _epoch(_dataset(shards_1, rank=rank))
        assert len(batches) == 6
        for t, batch in enumerate(batches):
            seen.setdefault((rank, t % 2), []).extend(batch["key"])  # batch t <- worker t % 2
            assert batch["gt"].shape == (1, 3, 32, 32)
    assert all(len(keys) == 3 for keys in seen.values())
    every = [key for keys in seen.values() for key in keys]
    assert sorted(every) == [f"{i:08d}" for i in range(12)]  # disjoint, and the whole set


def test_stream_resumes_exactly_from_any_batch(shards_2):
    """Starting at batch 3 or 5 gives the very batches (images, crops, flips) the run from
    batch 0 gave there: through block skips, a partial block and into the next pass."""
    kw = dict(rank=0, world=1, batch=2, iters=5, shuffle_shards=2, shuffle_buffer=3)
    whole = _epoch(_dataset(shards_2, **kw), start=0) + _epoch(_dataset(shards_2, **kw), start=5)
    assert len(whole) == 10
    for start in (3, 5):
        part = _epoch(_dataset(shards_2, **kw), start=start)
        for i, batch in enumerate(part[: 10 - start]):
            expected = whole[start + i]
            assert batch["key"] == expected["key"]
            assert torch.equal(batch["gt"], expected["gt"])
    # Crops differ from one position to the next, and passes repeat images in a new order.
    keys = [k for b in whole for k in b["key"]]
    assert len(set(keys)) == 12
    assert not torch.equal(whole[0]["gt"], whole[1]["gt"])


def test_too_few_shards_for_the_readers_is_a_config_error(shards_2):
    ds = _dataset(shards_2, world=4)  # 4 ranks x 2 workers = 8 readers, 6 shards
    with pytest.raises(ConfigError, match="6 usable shards.*8 readers.*--shard-size"):
        StreamLoader(ds, start_batch=lambda: 0, num_workers=2)


def test_truncated_local_shard_fails_or_is_skipped(shards_2, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(shards_2, bad)
    shard = bad / "shard-000003.tar"
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    with pytest.raises(DataError, match=r"shard-000003\.tar.*truncated.*data\.skip_bad=true"):
        open_shard_set(str(bad))
    with pytest.warns(UserWarning, match=r"skipping shard .*shard-000003\.tar"):
        kept = open_shard_set(str(bad), skip_bad=True)
    assert len(kept) == 5


def test_truncated_remote_shard_fails_or_is_skipped_while_read(shards_2, tmp_path):
    """Through a pipe: URL (no size check possible up front) the tar reader meets the cut."""
    bad = tmp_path / "bad"
    shutil.copytree(shards_2, bad)
    for shard in bad.glob("shard-*.tar"):
        if shard.name != "shard-000000.tar":
            shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    url = f"pipe:cat {bad}/manifest.json"
    kw = dict(batch_size=1, iters_per_epoch=2, shuffle_shards=1, rank=0, world_size=1)
    with pytest.raises(DataError, match=r"shard pipe:cat .*shard-0000\d\d\.tar is truncated"):
        _epoch(StreamingHRDataset(open_shard_set(url), 32, 4, **kw), workers=0)
    ds = StreamingHRDataset(open_shard_set(url), 32, 4, skip_bad=True, **kw)
    with pytest.warns(UserWarning, match="is truncated or unreadable"):
        batches = _epoch(ds, workers=0)
    assert len(batches) == 2  # the readable images still come through


def test_bad_stream_location_is_a_one_line_config_error(tmp_path, tiny_cfg):
    missing = tmp_path / "no_such_set"
    with pytest.raises(ConfigError, match=rf"data\.train_stream='{missing}'.*sr-data shard"):
        train(tiny_cfg("data=stream", f"data.train_stream={missing}"))
    with pytest.raises(ConfigError, match="no training data: set data.train_stream"):
        train(tiny_cfg("data=stream"))


def test_sr_train_trains_on_shards(tiny_cfg, shards_2, val_subset):
    """TINY run, 2 iterations, 2 worker processes reading the shards."""
    metrics, objects = train(
        tiny_cfg(
            "data=stream",
            f"data.train_stream={shards_2}",
            f"data.val_dir={val_subset}",
            "data.num_workers=2",
            "val.save_images=0",
        )
    )
    assert objects["module"].iteration == 2
    assert np.isfinite(metrics["train/loss_l1"]) and 0 < metrics["val/psnr_y"] < 60


@pytest.mark.slow
def test_sr_train_on_shards_and_resume_is_exact(tiny_cfg, shards_2, val_subset, tmp_path):
    """data=stream trains on the shards (2 worker processes) with the folder pipeline's crops
    and on-device degradation; 3 + 2 resumed iterations equal 5 in one go, bit for bit."""
    common = [
        "data=stream",
        f"data.train_stream={shards_2}",
        f"data.val_dir={val_subset}",
        "data.num_workers=2",
        "data.shuffle_buffer=3",
        "val.save_images=0",
    ]
    # 3 of 5 iterations, 2 per epoch: the resumed run starts mid-epoch.
    _, straight = train(tiny_cfg(*common, "trainer.max_steps=5", out=tmp_path / "a"))
    train(tiny_cfg(*common, "trainer.max_steps=3", out=tmp_path / "b"))
    last = tmp_path / "b" / "checkpoints" / "last.ckpt"
    first = torch.load(last, weights_only=True)  # before the resumed run continues that folder
    _, resumed = train(
        tiny_cfg(*common, "trainer.max_steps=5", f"resume={last}", out=tmp_path / "c")
    )
    a, b = straight["module"], resumed["module"]
    assert a.iteration == b.iteration == 5
    moved = False
    for (name, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), f"{name} differs after resume"
        before = first["state_dict"].get(name)
        moved |= before is not None and not torch.equal(before, p)
    assert moved, "training did not change the weights"


@pytest.mark.slow
def test_sr_train_cli_reports_a_bad_stream_in_one_line(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sr_cli.commands.train",
            "data=stream",
            f"data.train_stream={tmp_path}/missing",
            "experiment=demo",
            "logger=none",
            f"hydra.run.dir={tmp_path}/run",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error" in line.lower()]
    assert len(lines) == 1 and f"{tmp_path}/missing" in lines[0] and "sr-data shard" in lines[0]


@pytest.mark.slow
def test_sr_train_ddp_two_processes_on_shards(shards_2, tmp_path):
    """2 gloo processes x 2 workers read the 6 shards through the installed sr-train."""
    from PIL import Image

    from tests.commands.test_sr_train import TINY_CLI, run_cli

    val = tmp_path / "val"  # an image for each rank's validation shard
    val.mkdir()
    for path in sorted((SAMPLES_DIR / "val").glob("*.png"))[:2]:
        Image.open(path).crop((0, 0, 48, 48)).save(val / path.name)

    run_dir = tmp_path / "ddp"
    res = run_cli(
        [
            *TINY_CLI,
            "trainer=ddp",
            "trainer.devices=2",
            "data=stream",
            f"data.train_stream={shards_2}",
            "data.num_workers=2",
            "trainer.max_steps=3",
            "data.iters_per_epoch=2",
            f"data.val_dir={val}",
            "val.save_images=0",
            f"hydra.run.dir={run_dir}",
        ],
        tmp_path,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-4000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["iterations_per_rank"] == [3, 3]


# --------------------------------------------------------------------------------------------
# http(s) shards over a connection that drops


class ShardServer:
    """The files of ``folder`` over HTTP from a thread of this process. The first ``drops``
    requests of ``drop`` get its bytes up to its middle, then a closed connection; the first
    ``refuse`` ones get HTTP 503. ``ranges=False``: Range headers are ignored (HTTP 200, the
    whole file)."""

    def __init__(self, folder: Path, drop: str = "", drops: int = 1, refuse: int = 0,
                 ranges: bool = True) -> None:  # fmt: skip
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.requests: list[tuple[str, str | None]] = []
        state = {"drops": drops, "refuse": refuse}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                rng = self.headers.get("Range")
                outer.requests.append((self.path, rng))
                data = (folder / self.path.lstrip("/")).read_bytes()
                hit = bool(drop) and self.path.endswith(drop)
                if hit and state["refuse"] > 0:
                    state["refuse"] -= 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = int(rng[len("bytes=") :].split("-")[0]) if rng and ranges else 0
                self.send_response(206 if start else 200)
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                if ranges:
                    self.send_header("Accept-Ranges", "bytes")
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if hit and state["drops"] > 0:  # up to the middle of the file, then gone
                    state["drops"] -= 1
                    self.wfile.write(body[: max(0, len(data) // 2 - start)])
                    self.wfile.flush()
                    self.close_connection = True  # mid-shard: the connection goes away
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self, name: str) -> list[str | None]:
        """The Range header of every request of ``name``."""
        return [rng for path, rng in self.requests if path.endswith(name)]


@pytest.mark.parametrize("ranges", [True, False], ids=["range", "no-range"])
def test_dropped_connection_mid_shard_is_resumed_exactly_once(shards_2, ranges, caplog):
    """A connection dropped halfway through a shard is retried: with ranges from the byte where
    it stopped, without them by reading the shard again; a whole pass still yields every image
    exactly once, the very batches of the local set."""
    import logging

    name = "shard-000002.tar"
    server = ShardServer(shards_2, drop=name, ranges=ranges)
    kw = dict(rank=0, world=1, batch=2, iters=6, stream_backoff=0.01)
    try:
        caplog.set_level(logging.WARNING, logger="sr_cli.data.resumable")
        remote = _epoch(_dataset(f"{server.url}/manifest.json", **kw), workers=0)
    finally:
        server.close()
    local = _epoch(_dataset(shards_2, **kw), workers=0)
    keys = [k for b in remote for k in b["key"]]
    assert sorted(keys) == [f"{i:08d}" for i in range(12)]  # every image once
    assert [b["key"] for b in remote] == [b["key"] for b in local]
    assert all(torch.equal(a["gt"], b["gt"]) for a, b in zip(remote, local))
    size = (shards_2 / name).stat().st_size
    gets = server.gets(name)
    assert len(gets) == 2 and gets[0] is None and gets[1] == f"bytes={size // 2}-"
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 1 and name in retries[0] and "retry 1 of 5" in retries[0]
    assert f"at byte {size // 2}" in retries[0]
    if not ranges:
        assert any("ignores ranges" in r.getMessage() for r in caplog.records)


def test_retries_are_bounded_with_exponential_backoff(shards_2):
    from sr_cli.data.resumable import ResumableHTTPReader

    name = "shard-000001.tar"
    data = (shards_2 / name).read_bytes()
    server = ShardServer(shards_2, drop=name, drops=1, refuse=3)
    try:
        waits: list[float] = []
        reader = ResumableHTTPReader(f"{server.url}/{name}", len(data), retries=4, backoff=0.5,
                                     sleep=waits.append)  # fmt: skip
        assert reader.read() == data  # 3 refusals, then half, a drop, the rest
        assert waits == [0.5, 1.0, 2.0, 0.5]  # doubled while failing in a row, reset by progress
    finally:
        server.close()
    server = ShardServer(shards_2, drop=name, drops=99)
    ds = StreamingHRDataset(open_shard_set(f"{server.url}/manifest.json"), 32, 4, batch_size=2,
                            iters_per_epoch=6, stream_retries=2, stream_backoff=0.0)  # fmt: skip
    try:
        with pytest.raises(DataError) as info:
            _epoch(ds, workers=0)
    finally:
        server.close()
    half = len(data) // 2
    assert str(info.value) == (
        f"shard {server.url}/{name} is truncated or unreadable (the connection closed after "
        f"{half} of {len(data)} bytes; still failing at byte {half} after 2 retries); rewrite "
        "the set with `sr-data shard` (raise data.stream_retries, now 2, for a flaky network), "
        "or set data.skip_bad=true to skip the rest of it."
    )
    assert len(server.gets(name)) == 3  # the first try and 2 retries
    with pytest.raises(ConfigError, match="data.stream_retries=-1"):
        StreamingHRDataset(open_shard_set(str(shards_2)), 32, 4, 2, 6, stream_retries=-1)


def test_sr_train_on_http_shards_with_a_dropped_connection(tiny_cfg, shards_2, val_subset,
                                                           tmp_path):  # fmt: skip
    """2 worker processes read the shards over HTTP (each reads its block of 3 shards whole, into
    its shuffle buffer, before its first batch); one shard's connection drops midway: the run
    resumes the shard (a Range request) and ends with the very weights of the run on the local
    shards, so it saw every sample exactly once."""
    common = [f"data.val_dir={val_subset}", "data.num_workers=2", "val.save_images=0",
              "data=stream", "data.stream_backoff=0.01", "trainer.max_steps=1"]  # fmt: skip
    server = ShardServer(shards_2, drop="shard-000003.tar")
    try:
        _, remote = train(tiny_cfg(*common, f"data.train_stream={server.url}/manifest.json",
                                   out=tmp_path / "remote"))  # fmt: skip
    finally:
        server.close()
    _, local = train(tiny_cfg(*common, f"data.train_stream={shards_2}", out=tmp_path / "local"))
    gets = server.gets("shard-000003.tar")
    assert len(gets) == 2 and gets[1] is not None and gets[1].startswith("bytes=")
    a, b = remote["module"].state_dict(), local["module"].state_dict()
    assert remote["module"].iteration == 1 and all(torch.equal(a[k], b[k]) for k in a)
