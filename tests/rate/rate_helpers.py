"""Helpers for the sr-rate tests: three runs from one tiny trained run, and a live server."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import torch

from sr_cli.commands.rate import build_parser, prepare
from sr_cli.rate.server import address, make_server


def perturbed_copy(src: Path, dst: Path, amount: float, name: str | None, seed: int) -> Path:
    """A copy of an sr-train checkpoint whose generator weights get relative Gaussian noise
    (so its SR differs visibly), optionally with a stored run name."""
    ckpt = torch.load(src, map_location="cpu", weights_only=True)
    gen = torch.Generator().manual_seed(seed)
    for key, value in ckpt["state_dict"].items():
        if key.startswith("generator") and value.is_floating_point() and value.numel() > 1:
            value.add_(amount * value.std() * torch.randn(value.shape, generator=gen))
    if name is not None:
        ckpt["sr_cli"]["name"] = name
    dst.parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, dst)
    return dst


def three_runs(trained_run: Path, folder: Path) -> list[str]:
    """The trained run folder ("tiny"), a slightly perturbed copy that stores the name "tiny"
    too (shown as "tiny#2") and a strongly perturbed bare checkpoint ("noisy")."""
    last = trained_run / "checkpoints" / "last.ckpt"
    b = perturbed_copy(last, folder / "b" / "b.ckpt", 0.3, "tiny", 1)
    c = perturbed_copy(last, folder / "noisy.ckpt", 1.0, None, 2)
    return [str(trained_run), str(b), str(c)]


def rate_args(runs: list[str], images: Path, out: Path, *extra: str) -> argparse.Namespace:
    return build_parser().parse_args(
        [*runs, "--set", str(images), "-o", str(out), "--crop", "32", "--crops", "1",
         "--random-crops", "1", "--port", "0", *extra]
    )  # fmt: skip


class LiveServer:
    """An sr-rate server for ``args`` on a free localhost port, in a background thread; the
    invite links of ``args.raters`` / ``args.invite`` in :attr:`tokens`, an admin token in
    :attr:`admin`."""

    def __init__(self, args: argparse.Namespace) -> None:
        from sr_cli.commands.rate import invite
        from sr_cli.rate import invites

        self.app = prepare(args)
        self.tokens = invite(args, self.app)
        self.admin = invites.issue(self.app.engine, self.app.session_id, "admin", role="admin")
        self.server = make_server(self.app, "127.0.0.1", 0)
        self.url = address(self.server)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
