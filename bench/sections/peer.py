"""1b. Peer: the same EDSR-baseline training step in BasicSR, alternated with sr-train's in one
run (BasicSR in its own venv, ``bench/.peer-venv``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch

from bench.harness import compose_train, run_real_trainer, train_overrides
from bench.measure import ratio_row, row, stats

ROOT = Path(__file__).resolve().parents[2]


PEER_DIR = ROOT / "bench" / ".peer-venv"


PEER_PACKAGES = [
    "basicsr==1.4.2", "addict", "yapf", "lmdb", "opencv-python-headless", "scikit-image",
    "future", "tb-nightly",
]  # fmt: skip


def _peer_site() -> Path:
    (site_dir,) = list((PEER_DIR / "lib").glob("python3*/site-packages"))
    return site_dir


def _peer_compat() -> None:
    """BasicSR 1.4.2 vs today's torchvision: ``bench/peer_compat.py`` goes into the venv's
    site-packages with a ``.pth`` line that imports it at start-up (see that file)."""
    site_dir = _peer_site()
    src = (ROOT / "bench" / "peer_compat.py").read_text()
    (site_dir / "bench_peer_compat.py").write_text(src)
    (site_dir / "bench_peer_compat.pth").write_text("import bench_peer_compat\n")


def peer_python() -> Path:
    """BasicSR in its own venv (bench/.peer-venv), sharing this torch through a .pth file.

    BasicSR and the packages it imports come from the package registry (pip), installed with
    ``--no-deps`` so pip never resolves (or replaces) torch there; sr-cli's environment is never
    touched. A small compatibility module is added for torchvision >= 0.17 (``_peer_compat``)."""
    py = PEER_DIR / "bin" / "python"
    stamp = PEER_DIR / ".installed"
    if stamp.is_file():
        _peer_compat()
        return py
    base = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(PEER_DIR)], check=True)
    import site

    site_dir = _peer_site()
    (site_dir / "sr_cli_torch.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--quiet",
            "--no-deps",
            *PEER_PACKAGES,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        timeout=1200,  # no index reachable: the row says so instead of waiting for ever
    )
    _peer_compat()
    stamp.touch()
    return py


class PeerWorker:
    """``bench/peer_worker.py`` running in the BasicSR venv; ``run(n)`` = seconds per step."""

    def __init__(self, py: Path, p: dict):
        env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
        env.pop("PYTHONPATH", None)
        self.proc = subprocess.Popen(
            [str(py), str(ROOT / "bench" / "peer_worker.py"), str(p["batch"]), str(p["patch"]),
             str(torch.get_num_threads())],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.version = self._read()

    def _read(self) -> str:
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read().strip().splitlines()
            raise RuntimeError(err[-1] if err else "BasicSR worker exited")
        return line.strip()

    def run(self, n: int) -> float:
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return float(self._read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def bench_peer(p: dict, device: str, tmp: Path) -> list[dict]:
    what = (
        f"train step vs BasicSR 1.4.2 SRModel, EDSR-baseline L1, batch {p['batch']}x{p['patch']}px"
    )
    if not p["peer"]:
        return [row("peer", what, unavailable="skipped in this preset")]
    if device != "cpu":
        return [row("peer", what, unavailable="the BasicSR worker runs on the CPU only")]
    try:
        worker = PeerWorker(peer_python(), dict(p, edsr_preset="baseline"))
        worker.run(p["warmup"])
    except Exception as e:  # report, never crash the bench
        return [row("peer", what, unavailable=f"{type(e).__name__}: {e}".splitlines()[0][:300])]
    try:
        cfg = compose_train(
            train_overrides(dict(p, edsr_preset="baseline"), "edsr", "l1", tmp / "peer", device)
        )
        peer_blocks: list[float] = []
        clock, _ = run_real_trainer(
            cfg,
            dict(p, edsr_preset="baseline"),
            lambda n: peer_blocks.append(worker.run(n)),
            p["rounds"],
        )
    finally:
        worker.close()
    sr = clock.blocks[: len(peer_blocks)]
    r = ratio_row("peer", what, stats(sr), stats(peer_blocks), "sr-train", "BasicSR", None)
    r["note"] = (
        f"{worker.version}; BasicSR gets LQ made once (its paired-data path); sr-cli degrades "
        "on the device in the step. Goal: ratio < 1"
    )
    return [r]
