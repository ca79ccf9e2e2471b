"""``make bench``: sr-cli's speed against plain PyTorch (and BasicSR), as alternated ratios.

Writes ``results.md`` and ``results.json`` (default folder ``bench/``) with the machine, torch
version, thread count and date. Every compared figure is the median of repeated measurements
taken alternately (A, B, A, B, ...), with min and max, so a busy machine slows both sides alike.

    python -m bench.run [--preset smoke|quick|full] [--out DIR] [--only train,data,...]

Sections: ``train`` (step overhead of the real sr-train path, GAN and non-GAN), ``peer`` (the same
EDSR step in BasicSR), ``data`` (datamodule throughput and time waiting for data), ``upscale``
(tiled inference and its memory), ``eval`` (sr-eval per image), ``scaling`` (batch, patch,
2-process DDP), ``gpu`` (bf16 and channels_last, CUDA only).
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("train", "peer", "data", "upscale", "eval", "scaling", "gpu")

#: What each preset runs. ``smoke`` checks the wiring in about a minute (its numbers mean
#: little); ``quick`` is the default (a quarter of an hour on 2 shared cores); ``full`` takes
#: long. ``threads``: torch threads unless ``--threads`` says otherwise (none: torch's choice).
#: smoke and quick use 1: on a shared 2-core machine a second OpenMP thread that the scheduler
#: parks makes every small op wait (SSIM measured 12x slower with 2 threads at load 5).
PRESETS: dict[str, dict] = {
    "smoke": dict(
        batch=2, patch=32, edsr_preset="small", warmup=1, block=1, rounds=2, workers=0,
        data_batches=3, upscale_sizes=[(96, 64), (192, 128)], upscale_ratio_size=(192, 128),
        upscale_rounds=2,
        eval_images=2, scaling_batches=[1, 2], scaling_patches=[32], ddp_steps=3, peer=False,
        threads=1,
    ),
    "quick": dict(
        batch=8, patch=64, edsr_preset="baseline", warmup=2, block=2, rounds=4, workers=2,
        data_batches=8, upscale_sizes=[(400, 300), (800, 600)], upscale_ratio_size=(500, 375),
        upscale_rounds=2, eval_images=4, scaling_batches=[4, 16], scaling_patches=[48, 96],
        ddp_steps=6, peer=True, threads=1,
    ),
    "full": dict(
        batch=16, patch=128, edsr_preset="baseline", warmup=5, block=5, rounds=9, workers=4,
        data_batches=30, upscale_sizes=[(1000, 750), (2000, 1500)],
        upscale_ratio_size=(2000, 1500), upscale_rounds=3,
        eval_images=8, scaling_batches=[4, 8, 16, 32], scaling_patches=[64, 96, 128, 192],
        ddp_steps=20, peer=True,
    ),
}  # fmt: skip


# ------------------------------------------------------------------------------- helpers
def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def stats(samples: list[float]) -> dict:
    """Median, min and max of a list of measurements (seconds or any unit)."""
    return {
        "median": statistics.median(samples),
        "min": min(samples),
        "max": max(samples),
        "n": len(samples),
    }


def alternate(fns: dict[str, Callable[[], float]], rounds: int) -> dict[str, dict]:
    """Call each measurement in turn, ``rounds`` times (A, B, A, B, ...); stats per name.

    Each function returns the figure it measured (e.g. seconds per call)."""
    samples: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name].append(float(fn()))
    return {k: stats(v) for k, v in samples.items()}


def bench_timer(fn: Callable[[], object], number: int = 1) -> Callable[[], float]:
    """A measurement (seconds per call, ``number`` calls) taken by ``torch.utils.benchmark``."""
    from torch.utils.benchmark import Timer

    timer = Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())
    return lambda: timer.timeit(number).mean


def row(section: str, what: str, **kw) -> dict:
    r = {"section": section, "what": what}
    r.update(kw)
    return r


def ratio_row(
    section: str, what: str, a: dict, b: dict, a_label: str, b_label: str, target: float | None
) -> dict:
    ratio = a["median"] / b["median"]
    return row(
        section,
        what,
        a=a,
        b=b,
        a_label=a_label,
        b_label=b_label,
        unit="s",
        ratio=ratio,
        target=target,
        met=None if target is None else bool(ratio <= target),
    )


def environment(device: str) -> dict:
    return {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.node()} {platform.machine()} ({os.cpu_count()} CPUs)",
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


# ----------------------------------------------------------------------- sr-train configs
def compose_train(overrides: list[str]):
    """The sr-train config a user gets for these overrides (logger off, output in a temp dir)."""
    from hydra import compose, initialize_config_dir

    from sr_cli.config import config_dir, register_resolvers, rewrite_overrides

    register_resolvers()
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose("train", overrides=rewrite_overrides(overrides))


def train_overrides(p: dict, model: str, loss: str, out: Path, device: str, extra=()) -> list[str]:
    model_args = (
        ["model=edsr_baseline", f"model.preset={p['edsr_preset']}"]
        if model == "edsr"
        else ["model=esrgan", "model.preset=small"]
    )
    return [
        *model_args,
        f"loss={loss}",
        "logger=none",
        f"data.batch_size={p['batch']}",
        f"data.patch_size={p['patch']}",
        f"data.num_workers={p['workers']}",
        f"trainer.accelerator={'gpu' if device.startswith('cuda') else 'cpu'}",
        "trainer.enable_model_summary=false",
        f"paths.output_dir={out}",
        *extra,
    ]


class PlainLoop:
    """The same training iteration written as a plain PyTorch loop.

    Same generator architecture and initialisation, batch, loss weights, optimizer settings and
    on-device degradation as the sr-train config; GT batches are drawn once from the same
    datamodule and cycled (data loading is measured separately, in the data section)."""

    def __init__(self, cfg, device: str, n_batches: int = 4, channels_last: bool = False):
        from hydra.utils import instantiate

        from sr_cli.train.build import build_datamodule

        torch.manual_seed(int(cfg.seed))
        self.device = torch.device(device)
        fmt = torch.channels_last if channels_last else torch.contiguous_format
        self.gen = instantiate(cfg.model.generator, _convert_="all").to(
            self.device, memory_format=fmt
        )
        self.opt = instantiate(cfg.optim.generator, _convert_="all")(self.gen.parameters())
        self.deg = instantiate(cfg.degradation, _convert_="all").to(self.device)
        self.terms = {k: v for k, v in cfg.loss.items() if v is not None}
        self.disc = None
        if "gan" in self.terms:
            g = self.terms["gan"]
            self.disc = instantiate(g.discriminator, _convert_="all").to(self.device)
            self.opt_d = instantiate(cfg.optim.discriminator, _convert_="all")(
                self.disc.parameters()
            )
        dm = build_datamodule(cfg, num_workers=0)
        dm.setup("fit")
        it = iter(dm.train_dataloader())
        self.batches = [next(it)["gt"].to(self.device) for _ in range(n_batches)]
        self.rng = torch.Generator(self.device).manual_seed(0)
        self.i = 0

    def _ragan(self, real: torch.Tensor, fake: torch.Tensor, fake_is_real: bool) -> torch.Tensor:
        bce = F.binary_cross_entropy_with_logits
        one, zero = torch.ones_like(real), torch.zeros_like(real)
        a, b = (one, zero) if fake_is_real else (zero, one)
        return (bce(real - fake.mean(), b) + bce(fake - real.mean(), a)) / 2

    def step(self) -> None:
        gt = self.batches[self.i % len(self.batches)]
        self.i += 1
        with torch.no_grad():
            params = self.deg.sample(gt, generator=self.rng)
            lq = self.deg(gt, params)
        sr = self.gen(lq)
        loss = sr.new_zeros(())
        t = self.terms
        if "l1" in t:
            loss = loss + t["l1"].weight * (sr - gt).abs().mean()
        if "downsample" in t:
            loss = loss + t["downsample"].weight * (self.deg.replay(sr, params) - lq).abs().mean()
        if self.disc is not None:
            self.disc.requires_grad_(False)
            real = self.disc(gt).detach()
            loss = loss + t["gan"].weight * self._ragan(real, self.disc(sr), fake_is_real=True)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if self.disc is not None:
            self.disc.requires_grad_(True)
            real, fake = self.disc(gt), self.disc(sr.detach())
            d_loss = self._ragan(real, fake, fake_is_real=False)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            self.opt_d.step()

    def run(self, n: int) -> float:
        """Seconds per iteration over ``n`` iterations."""
        sync(self.device)
        t0 = time.perf_counter()
        for _ in range(n):
            self.step()
        sync(self.device)
        return (time.perf_counter() - t0) / n


def run_real_trainer(cfg, p: dict, pause: Callable[[int], None] | None, rounds: int):
    """Fit with the real sr-train objects (datamodule, SRModule, callbacks, loggers) and a clock."""
    import pytorch_lightning as pl

    from bench.clock import StepClock
    from sr_cli.environment import setup_environment
    from sr_cli.train.build import build_datamodule, build_module, build_trainer

    setup_environment()
    out = Path(cfg.paths.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    dm = build_datamodule(cfg)
    dm.setup("fit")
    module = build_module(cfg, dm.val_names, out)
    trainer = build_trainer(cfg, module, out)
    clock = StepClock(warmup=p["warmup"], block=p["block"], rounds=rounds, pause=pause)
    trainer.callbacks.append(clock)
    t0 = time.perf_counter()
    clock.start()
    trainer.fit(module, datamodule=dm)
    total = time.perf_counter() - t0
    return clock, total


# -------------------------------------------------------------------- 1. training overhead
TRAIN_CASES = [
    # (label, model, loss, target ratio)
    ("EDSR-baseline, L1", "edsr", "l1", 1.05),
    ("RRDBNet-small, L1", "rrdb", "l1", 1.05),
    ("RRDBNet-small + VGG discriminator, L1 + RaGAN", "rrdb", "l1+gan", 1.10),
    ("RRDBNet-small + VGG discriminator, downsample+gan", "rrdb", "downsample+gan", 1.10),
]


def bench_train(p: dict, device: str, tmp: Path, cases=TRAIN_CASES, extra=(), tag="") -> list[dict]:
    rows = []
    for label, model, loss, target in cases:
        cfg = compose_train(
            train_overrides(p, model, loss, tmp / f"train-{model}-{loss}{tag}", device, extra)
        )
        print(f"[bench] train: {label}", file=sys.stderr, flush=True)
        plain = PlainLoop(cfg, device)
        plain.run(p["warmup"])  # warm-up outside the timed blocks
        plain_blocks: list[float] = []
        clock, total = run_real_trainer(
            cfg,
            p,
            lambda n, plain=plain, blocks=plain_blocks: blocks.append(plain.run(n)),
            rounds=p["rounds"],
        )
        sr = clock.blocks[: len(plain_blocks)] or clock.blocks
        what = f"train step{tag}, {label}, batch {p['batch']}x{p['patch']}px"
        if not plain_blocks:
            plain_blocks = [plain.run(p["block"])]
        r = ratio_row(
            "train", what, stats(sr), stats(plain_blocks), "sr-train", "plain loop", target
        )
        r["startup_s"] = clock.startup
        r["note"] = f"start-up (fit to first batch) {clock.startup:.2f} s, excluded"
        rows.append(r)
    return rows


def _op_times(prof, steps: int) -> dict[str, float]:
    """Self CPU milliseconds per step of every op (and labelled range) a profiler saw."""
    return {e.key: e.self_cpu_time_total / 1000.0 / steps for e in prof.key_averages()}


def _op_counts(prof, steps: int) -> dict[str, float]:
    return {e.key: e.count / steps for e in prof.key_averages()}


def profile_train_step(p: dict, device: str, tmp: Path, model: str, loss: str) -> str:
    """Where the sr-train path spends its time beyond the plain loop (torch.profiler).

    One steady-state block of the real sr-train path and the same number of plain-loop
    iterations are profiled; the table lists, per op, self CPU ms per iteration on each side
    and the difference (sr-train - plain), largest first. ``Optimizer.step#Adam.step`` on the
    sr-train side wraps Lightning's closure (training_step, backward, hooks), so its self time
    is the Python around the ops."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    cfg = compose_train(train_overrides(p, model, loss, tmp / f"profile-{model}-{loss}", device))
    plain = PlainLoop(cfg, device)
    plain.run(p["warmup"])
    steps = p["block"]
    box: dict = {}

    def pause(n: int) -> None:  # profile exactly the second block
        if "p" not in box:
            box["p"] = profile(activities=acts)
            box["p"].__enter__()
        elif "done" not in box:
            box["p"].__exit__(None, None, None)
            box["done"] = True

    run_real_trainer(cfg, dict(p, rounds=3), pause, rounds=3)
    if "done" not in box:
        return ""
    with profile(activities=acts) as pp:
        plain.run(steps)
    a, b = _op_times(box["p"], steps), _op_times(pp, steps)
    na, nb = _op_counts(box["p"], steps), _op_counts(pp, steps)
    diff = sorted(((a.get(k, 0.0) - b.get(k, 0.0), k) for k in set(a) | set(b)), reverse=True)
    lines = [
        f"self CPU ms per iteration over {steps} iterations: sr-train {sum(a.values()):.1f}, "
        f"plain loop {sum(b.values()):.1f}",
        "",
        f"{'op':<60} {'sr-train':>9} {'plain':>9} {'diff':>8} {'calls/it':>11}",
    ]
    for d, k in diff[:14]:
        calls = f"{na.get(k, 0):g}/{nb.get(k, 0):g}"
        lines.append(
            f"{k[:60]:<60} {a.get(k, 0.0):9.2f} {b.get(k, 0.0):9.2f} {d:+8.2f} {calls:>11}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- BasicSR peer
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


# -------------------------------------------------------------------------- 2. data pipeline
def bench_data(p: dict, device: str, tmp: Path) -> list[dict]:
    from sr_cli.train.build import build_datamodule

    rows = []
    batch = 16 if p["batch"] >= 8 else p["batch"]
    for deg in ("bicubic", "realesrgan"):
        q = dict(p, batch=batch)
        cfg = compose_train(
            train_overrides(q, "edsr", "l1", tmp / f"data-{deg}", device, [f"degradation={deg}"])
        )
        dm = build_datamodule(cfg)
        dm.setup("fit")
        loader = dm.train_dataloader()

        def deliver(loader=loader) -> float:
            it = iter(loader)
            next(it)  # worker start-up and first batch excluded
            t0 = time.perf_counter()
            for _ in range(p["data_batches"]):
                next(it)
            return p["data_batches"] * batch / (time.perf_counter() - t0)

        plain = PlainLoop(cfg, device, n_batches=2)
        plain.run(1)
        res = alternate(
            {"deliver": deliver, "consume": lambda plain=plain: batch / plain.run(p["block"])}, 2
        )
        clock, _ = run_real_trainer(cfg, q, None, rounds=p["rounds"])
        steady = slice(p["warmup"], None)
        waits = [
            max(w - d, 0.0) / i
            for w, d, i in zip(
                clock.waits[steady], clock.transfers[steady], clock.iterations[steady]
            )
        ]
        share = stats(waits)
        rows.append(
            row(
                "data",
                f"{deg}: datamodule patches/s vs generator consumption, batch {batch}x{p['patch']}px, "
                f"{p['workers']} workers",
                delivered=res["deliver"],
                consumed=res["consume"],
                wait_share=share,
                target=0.05,
                met=bool(share["median"] <= 0.05),
                unit="patches/s",
            )
        )
    return rows


# ------------------------------------------------------------------------------ 3. upscale
def bench_upscale(p: dict, device: str, tmp: Path) -> list[dict]:

    from bench.upscale_memory import measure
    from sr_cli.evaluate.upscaling import Picture, upscale_picture

    rows = []
    fwd, pic, lq = upscale_inputs(p, device)
    w, h = p["upscale_ratio_size"]
    res = alternate(
        {
            "tiled": bench_timer(lambda: upscale_picture(pic, fwd, 4, tile=256, overlap=16)),
            "whole": bench_timer(lambda: fwd(lq).cpu()),
        },
        p["upscale_rounds"],
    )
    r = ratio_row(
        "upscale",
        f"sr-upscale tiled (default: 256 px, overlap 16) vs one untiled forward, EDSR small x4, "
        f"{w}x{h}",
        res["tiled"], res["whole"], "tiled", "untiled", 1.15,
    )  # fmt: skip
    r["area_factor"] = tiled_area(w, h)
    r["note"] = (
        f"the tiles cover {r['area_factor']:.2f}x the image's pixels; tiled includes quantizing "
        "the output to 8 bits; both in-process, no file I/O"
    )
    rows.append(r)
    if device == "cpu":
        for tile in (256, 0):
            for size in p["upscale_sizes"]:
                m = measure("edsr", tile=tile, overlap=16, size=size)
                rows.append(
                    row(
                        "upscale",
                        f"peak RSS of sr-upscale, {size[0]}x{size[1]}, "
                        + (f"tile {tile}" if tile else "untiled (--tile 0)"),
                        value=m["vm_hwm_mib"],
                        unit="MiB",
                        note=f"{m['seconds']:.1f} s incl. PNG I/O",
                    )
                )
    else:
        for size in p["upscale_sizes"]:
            x = torch.rand(1, 3, size[1], size[0])
            torch.cuda.reset_peak_memory_stats()
            upscale_picture(
                Picture(rgb=x[0].permute(1, 2, 0).numpy(), alpha=None, gray=False, bits=8), fwd, 4
            )
            rows.append(row("upscale", f"peak CUDA memory, {size[0]}x{size[1]}, tile 256",
                            value=torch.cuda.max_memory_allocated() / 2**20, unit="MiB"))  # fmt: skip
    return rows


def upscale_inputs(p: dict, device: str):
    """The upscale section's generator forward (EDSR small x4, seed 0), a random RGB picture of
    ``p["upscale_ratio_size"]`` and the same image as an LQ tensor: shared by the timing and
    the profile, so both measure the same thing."""
    import numpy as np
    from hydra.utils import instantiate

    from bench.upscale_memory import MODELS
    from sr_cli.evaluate.upscaling import Picture, make_forward

    torch.manual_seed(0)
    gen = instantiate(MODELS["edsr"]).eval().to(device)
    fwd = make_forward(gen, torch.device(device))
    w, h = p["upscale_ratio_size"]
    rgb = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    pic = Picture(rgb=rgb, alpha=None, gray=False, bits=8)
    return fwd, pic, torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()


def tiled_area(w: int, h: int, tile: int = 256, overlap: int = 16) -> float:
    """Pixels the generator processes when tiling a ``w x h`` LQ, over the image's pixels."""
    from sr_cli.evaluate.tiling import tile_layout

    (th, ys), (tw, xs) = tile_layout(h, tile, overlap), tile_layout(w, tile, overlap)
    return len(xs) * tw * len(ys) * th / (w * h)


def profile_upscale(p: dict, device: str, tmp: Path) -> str:
    """One tiled and one untiled upscale under torch.profiler: the convolution work of each,
    and the tile grid's pixel count against the image's at several sizes."""
    from torch.profiler import ProfilerActivity, profile

    from sr_cli.evaluate.tiling import tile_starts
    from sr_cli.evaluate.upscaling import upscale_picture

    fwd, pic, lq = upscale_inputs(p, device)
    w, h = p["upscale_ratio_size"]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    out = {}
    for name, fn in (
        ("tiled", lambda: upscale_picture(pic, fwd, 4, tile=256, overlap=16)),
        ("untiled", lambda: fwd(lq).cpu()),
    ):
        with profile(activities=acts) as prof:
            t0 = time.perf_counter()
            fn()
            wall = time.perf_counter() - t0
        ops = {e.key: (e.self_cpu_time_total / 1e6, e.count) for e in prof.key_averages()}
        out[name] = (wall, ops)
    keys = sorted(set(out["tiled"][1]) | set(out["untiled"][1]),
                  key=lambda k: -out["tiled"][1].get(k, (0, 0))[0])[:8]  # fmt: skip
    lines = [f"one call each, {w}x{h} LQ, EDSR small x4: tiled {out['tiled'][0]:.2f} s, "
             f"untiled {out['untiled'][0]:.2f} s", "",
             f"{'op (self CPU s, calls)':<48} {'tiled':>16} {'untiled':>16}"]  # fmt: skip
    for k in keys:
        a, b = out["tiled"][1].get(k, (0, 0)), out["untiled"][1].get(k, (0, 0))
        lines.append(f"{k[:48]:<48} {a[0]:9.2f} ({a[1]:>4}) {b[0]:9.2f} ({b[1]:>4})")
    lines += ["", "tile grid (tile 256, overlap 16): tiles and processed pixels / image pixels"]
    for sw, sh in [(w, h), (1000, 750), (2000, 1500)]:
        n = len(tile_starts(sw, 256, 16)) * len(tile_starts(sh, 256, 16))
        lines.append(f"  {sw}x{sh}: {n} tiles, {tiled_area(sw, sh):.2f}x")
    return "\n".join(lines)


# --------------------------------------------------------------------------------- 4. eval
EVAL_MODELS = [("edsr_baseline", "EDSR-baseline"), ("edsr", "EDSR small (2 blocks, 32 features)")]


def _eval_inputs(p: dict, tmp: Path):
    """Random 8-bit HR images in two folders (n and 2n images) and their bicubic LQ."""
    import numpy as np
    from PIL import Image

    from sr_cli.degradations.resize import imresize

    n, side = p["eval_images"], p["patch"] * 4
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(2 * n)]
    sets = {}
    for k in (n, 2 * n):
        d = tmp / "eval" / f"set{k}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(k):
            Image.fromarray(imgs[i]).save(d / f"{i}.png")
        sets[k] = d
    gts = [torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 for a in imgs[:n]]
    return sets, gts, [imresize(g, scale=0.25) for g in gts], side


def _sr_eval(ckpt: Path, folder: Path, out: Path, device: str) -> float:
    """The sr-eval task in-process (``evaluate(cfg)``, the config a user's command gets, with
    its progress bar and its CSV/Markdown outputs); seconds."""
    from hydra import compose, initialize_config_dir

    from sr_cli.config import config_dir
    from sr_cli.evaluate.evaluation import evaluate

    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        cfg = compose("eval", overrides=[
            f"checkpoints=[{ckpt}]", f"datasets={{bench: {folder}}}", "metrics=[psnr_y,ssim_y]",
            f"output_dir={out}", f"trainer.accelerator={'gpu' if device != 'cpu' else 'cpu'}",
            "~logger",
        ])  # fmt: skip
    t0 = time.perf_counter()
    evaluate(cfg)
    return time.perf_counter() - t0


def bench_eval(p: dict, device: str, tmp: Path) -> list[dict]:
    from bench.upscale_memory import make_checkpoint
    from sr_cli.evaluate.inference import load_generator

    n = p["eval_images"]
    sets, _, lqs, side = _eval_inputs(p, tmp)
    rows = []
    for key, label in EVAL_MODELS:
        ckpt = tmp / "eval" / f"{key}.ckpt"
        make_checkpoint(ckpt, key)
        gen = load_generator(ckpt).generator.eval().to(device)

        @torch.inference_mode()
        def forward(gen=gen) -> float:
            t0 = time.perf_counter()
            for x in lqs:
                gen(x.to(device))
            sync(device)
            return (time.perf_counter() - t0) / n

        per_image: list[float] = []
        fwd: list[float] = []
        out = tmp / "eval" / f"out-{key}"
        _sr_eval(ckpt, sets[n], out, device)  # warm-up: imports, metric set-up
        for _ in range(p["upscale_rounds"]):
            t_n = _sr_eval(ckpt, sets[n], out, device)
            fwd.append(forward())
            t_2n = _sr_eval(ckpt, sets[2 * n], out, device)
            per_image.append(max(t_2n - t_n, 1e-9) / n)
        a, b = stats(per_image), stats(fwd)
        r = ratio_row(
            "eval", f"sr-eval per image (PSNR_Y + SSIM_Y) vs forward pass alone, {label}, "
            f"{side}x{side} HR, x4", a, b, "sr-eval", "forward", 1.20,
        )  # fmt: skip
        r["model"] = key
        r["note"] = (
            f"beyond the forward: {(a['median'] - b['median']) * 1000:.0f} ms per image. Per "
            f"image = (time for {2 * n} images - time for {n}) / {n}: start-up cancels out; "
            "includes decoding, the bicubic LQ, the bicubic baseline row and the CSVs"
        )
        rows.append(r)
    return rows


def profile_eval(p: dict, device: str, tmp: Path, model: str) -> str:
    """Where sr-eval's time per image goes: its pieces timed alone (torch.utils.benchmark), the
    Y-plane sharing measured against the old per-metric conversion, and a torch.profiler table
    of ``evaluate`` itself."""
    from torch.profiler import ProfilerActivity, profile

    from bench.upscale_memory import make_checkpoint
    from sr_cli.degradations.resize import imresize
    from sr_cli.evaluate.inference import load_generator
    from sr_cli.metrics.protocol import prepare_y_one, psnr255, psnr_y, ssim, ssim_y
    from sr_cli.metrics.registry import MetricInputs, compute_metrics

    n = p["eval_images"]
    sets, gts, lqs, side = _eval_inputs(p, tmp / "prof")
    ckpt = tmp / "prof" / "eval" / f"prof-{model}.ckpt"
    make_checkpoint(ckpt, model)
    gen = load_generator(ckpt).generator.eval().to(device)
    gt, lq = gts[0].to(device), lqs[0].to(device)
    with torch.inference_mode():
        sr = gen(lq).clamp(0, 1).float()
    bic = imresize(lq, size=tuple(gt.shape[-2:])).clamp(0, 1)
    y_sr, y_gt = prepare_y_one(sr, 4), prepare_y_one(gt, 4)

    def both_rows_now() -> None:  # what sr-eval does per image since the fix
        cache: dict = {}
        for s in (sr, bic):
            compute_metrics(["psnr_y", "ssim_y"], MetricInputs(s, gt, lq, 4, gt_cache=cache))

    def both_rows_before() -> None:  # each metric converted both images to Y itself
        for s in (sr, bic):
            psnr_y(s, gt, 4)
            ssim_y(s, gt, 4)

    pieces = {
        "generator forward": lambda: gen(lq),
        "bicubic baseline row (MATLAB imresize x4)": lambda: imresize(
            lq, size=tuple(gt.shape[-2:])
        ),
        "8-bit rounding + Y + crop, one image": lambda: prepare_y_one(sr, 4),
        "PSNR on Y planes": lambda: psnr255(y_sr, y_gt),
        "SSIM on Y planes (float64, 11x11 Gaussian)": lambda: ssim(y_sr, y_gt, data_range=255.0),
        "PSNR_Y + SSIM_Y, both rows, shared Y planes (now)": both_rows_now,
        "PSNR_Y + SSIM_Y, both rows, Y per metric (before)": both_rows_before,
    }
    with torch.inference_mode():
        res = alternate({k: bench_timer(f, number=3) for k, f in pieces.items()}, 3)
    lines = [f"pieces, one {side}x{side} image, ms (median of 3 alternated rounds of 3 calls):"]
    lines += [f"  {k:<52} {v['median'] * 1000:8.1f}" for k, v in res.items()]
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    _sr_eval(ckpt, sets[n], tmp / "prof" / "eval" / "out", device)
    with profile(activities=acts) as prof:
        _sr_eval(ckpt, sets[n], tmp / "prof" / "eval" / "out", device)
    lines += ["", f"torch.profiler, sr-eval on {n} images, top ops by self CPU:", ""]
    lines.append(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=10))
    return "\n".join(lines)


# ------------------------------------------------------------------------------ 5. scaling
def bench_scaling(p: dict, device: str, tmp: Path) -> list[dict]:
    rows = []
    for batch in p["scaling_batches"]:
        for patch in p["scaling_patches"]:
            q = dict(p, batch=batch, patch=patch, workers=0)
            cfg = compose_train(train_overrides(q, "edsr", "l1", tmp / "scaling", device))
            plain = PlainLoop(cfg, device, n_batches=1)
            plain.run(1)
            s = alternate({"t": bench_timer(plain.step)}, p["rounds"])["t"]
            rows.append(
                row("scaling", f"EDSR-{p['edsr_preset']} L1 step, batch {batch}, patch {patch}px",
                    value=s, unit="s/step", note=f"{batch / s['median']:.1f} patches/s")
            )  # fmt: skip
    if device != "cpu":
        return rows
    steps = p["ddp_steps"]
    results = {}
    for world in (1, 2):
        out = tmp / f"ddp{world}"
        cmd = [
            sys.executable, "-m", "sr_cli.commands.train",
            *train_overrides(dict(p, workers=0), "edsr", "l1", out, "cpu"),
            *(["trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu"] if world == 2 else []),
            f"trainer.max_steps={steps + 10}", "+callbacks.bench_clock._target_=bench.clock.StepClock",
            f"+callbacks.bench_clock.path={out / 'clock.json'}", f"+callbacks.bench_clock.stop_after={steps}",
            f"+callbacks.bench_clock.warmup={min(p['warmup'], steps - 1)}", f"hydra.run.dir={out}",
        ]  # fmt: skip
        env = dict(os.environ, PYTHONPATH=str(ROOT), WANDB_MODE="offline")
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(tmp))
        clock = out / "clock.json"
        if proc.returncode or not clock.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            rows.append(
                row(
                    "scaling",
                    f"CPU DDP, {world} process(es)",
                    unavailable=f"sr-train failed: {tail}",
                )
            )
            return rows
        rec = json.loads(clock.read_text())
        it = rec["iteration_s"][rec["warmup"] :] or rec["iteration_s"]
        results[world] = stats([world * p["batch"] / t for t in it])
    rows.append(
        row("scaling", f"CPU DDP throughput, 2 processes vs 1, batch {p['batch']}/process",
            a=results[2], b=results[1], a_label="2 processes", b_label="1 process", unit="patches/s",
            ratio=results[2]["median"] / results[1]["median"], target=None, met=None,
            note=f"{torch.get_num_threads()} threads in the 1-process run; the 2 processes share the same cores")
    )  # fmt: skip
    return rows


# ---------------------------------------------------------------------------------- 6. GPU
def bench_gpu(p: dict, device: str, tmp: Path) -> list[dict]:
    if not torch.cuda.is_available():
        return [
            row(
                "gpu",
                "bf16 and channels_last training steps",
                unavailable="not run: no CUDA device",
            )
        ]
    rows = bench_train(
        p, "cuda", tmp, TRAIN_CASES[:1], ["trainer.precision=bf16-mixed"], " (bf16-mixed)"
    )
    cfg = compose_train(train_overrides(p, "edsr", "l1", tmp / "cl", "cuda"))
    a, b = PlainLoop(cfg, "cuda", channels_last=True), PlainLoop(cfg, "cuda")
    a.run(p["warmup"])
    b.run(p["warmup"])
    res = alternate(
        {"cl": lambda: a.run(p["block"]), "nchw": lambda: b.run(p["block"])}, p["rounds"]
    )
    rows.append(ratio_row("gpu", "plain EDSR step, channels_last vs contiguous", res["cl"], res["nchw"],
                          "channels_last", "contiguous", None))  # fmt: skip
    return rows


# -------------------------------------------------------------------------------- output
def fmt_stats(s: dict, unit: str = "s") -> str:
    scale, u = (1000.0, "ms") if unit == "s" else (1.0, unit)
    return f"{s['median'] * scale:.3g} {u} [{s['min'] * scale:.3g}-{s['max'] * scale:.3g}]"


def markdown(env: dict, rows: list[dict], profiles: list[dict]) -> str:
    lines = [
        "# sr-cli benchmarks",
        "",
        f"Preset `{env['preset']}` on {env['machine']}, {env['processor']}, device {env['device']}"
        f"{' (' + env['cuda'] + ')' if env['cuda'] else ''}; torch {env['torch']}, "
        f"{env['threads']} threads, Python {env['python']}; {env['date']}.",
        "",
        "Figures: median [min-max] of alternated measurements (A, B, A, B, ...). "
        "Ratios compare medians; lower is faster for sr-cli.",
        "",
        "Load average (1 min) before / after: "
        + f"{env['load_before'][0]:.1f} / {env.get('load_after', env['load_before'])[0]:.1f}; per "
        + "section (before -> after, duration): "
        + "; ".join(
            f"{k} {v['before']:.1f} -> {v['after']:.1f}, {v['s']:.0f} s"
            for k, v in env.get("section_load", {}).items()
        )
        + ".",
    ]
    titles = {
        "train": "1. Training-step overhead (steady state): real sr-train path vs a plain PyTorch loop",
        "peer": "1b. Peer: sr-cli vs BasicSR, alternated in one run",
        "data": "2. Data pipeline",
        "upscale": "3. Inference (sr-upscale)",
        "eval": "4. Evaluation (sr-eval)",
        "scaling": "5. Scaling",
        "gpu": "6. GPU",
    }
    for sec in SECTIONS:
        sec_rows = [r for r in rows if r["section"] == sec]
        if not sec_rows:
            continue
        lines += ["", f"## {titles[sec]}", "", "| what | measured | reference | ratio | target | note |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in sec_rows:
            if "unavailable" in r:
                lines.append(f"| {r['what']} | unavailable: {r['unavailable']} | | | | |")
                continue
            target = "" if r.get("target") is None else f"<= {r['target']:.2f}"
            if r.get("met") is not None:
                target += " met" if r["met"] else " **missed**"
            if "wait_share" in r:
                lines.append(
                    f"| {r['what']} | delivered {fmt_stats(r['delivered'], 'patches/s')} | consumed "
                    f"{fmt_stats(r['consumed'], 'patches/s')} | waiting {r['wait_share']['median']:.1%} "
                    f"of the step | < {r['target']:.0%}{' met' if r['met'] else ' **missed**'} | "
                    f"delivered / consumed = {r['delivered']['median'] / r['consumed']['median']:.1f} |"
                )
            elif "ratio" in r:
                u = r.get("unit", "s")
                lines.append(
                    f"| {r['what']} | {r['a_label']}: {fmt_stats(r['a'], u)} | {r['b_label']}: "
                    f"{fmt_stats(r['b'], u)} | {r['ratio']:.3f} | {target} | {r.get('note', '')} |"
                )
            else:
                v = r["value"]
                shown = fmt_stats(v, "s") if isinstance(v, dict) else f"{v:.0f} {r['unit']}"
                lines.append(f"| {r['what']} | {shown} | | | | {r.get('note', '')} |")
    if profiles:
        lines += ["", "## Where the time goes (torch.profiler)"]
        for prof in profiles:
            lines += ["", f"### {prof['title']}", "", "```", prof["text"].strip(), "```"]
            if prof.get("fix"):
                lines += ["", prof["fix"]]
    return "\n".join(lines) + "\n"


#: What was changed after each profile; printed under it in results.md.
FIXES = {
    "train": (
        "Fixes: the progress bar re-reads the losses at most every 0.5 s instead of every "
        "iteration (reading `trainer.callback_metrics` makes Lightning convert each progress-bar "
        "metric with `.item()`, a host sync per loss on a GPU); the bench now keeps the progress "
        "bar on, as a user has it. What remains is Lightning's own per-iteration Python (the "
        "closure inside `Optimizer.step`, hooks, `self.log`), the dataloader hand-off and the NaN "
        "guard's three finiteness checks (loss, gradients, weights; `linalg_vector_norm` per "
        "tensor on the CPU): together a few ms of a step of hundreds, so a ratio within a few "
        "percent of 1 is mostly noise from the other jobs on the machine. Also fixed: the "
        "module calls `self.log` only on iterations Lightning writes (log_every_n_steps)."
    ),
    "upscale": (
        "Not fixed here (sr_cli/evaluate/tiling.py is outside this change): the tiled path does "
        "the same convolutions per pixel, but its grid makes the generator process more pixels "
        "than the image has. Tiles keep the full 256 px side and the last tile of a row or "
        "column is shifted to end at the border, so 500 px wide takes 3 tiles (2 of 256 with "
        "a 16 px overlap reach 496) and the grid covers 2.1x the pixels at 500x375, 1.4x at "
        "2000x1500. Proposed: keep the tile count, shrink the tiles to the even split "
        "(ceil((L + (n-1) overlap) / n)), which covers about 1.1x at 500x375. Untiled memory, "
        "by contrast, grows with the image (rows above), and in one measurement here an untiled "
        "forward at 1000x750 took 15x the 500x375 one (4x the pixels): at large sizes tiling "
        "should win on time too (BENCH=full measures 2000x1500)."
    ),
    "eval": (
        "Fix: PSNR_Y and SSIM_Y used to convert SR and GT to Y each (8-bit rounding, BT.601, "
        "crop in float64), for the model row and again for the bicubic baseline row: 8 "
        "conversions per image. `MetricInputs.y_pair()` now converts each image once and "
        "`sr-eval` shares GT's Y between rows: 3 conversions, bit-identical values "
        "(tests/metrics/test_y_cache.py; tests/metrics and tests/test_compare.py pass). SSIM "
        "itself (float64 Gaussian filtering on the full-resolution Y plane, kept for the "
        "bit-exact protocol) and the bicubic baseline row are the fixed cost that remains: "
        "against a small generator it is larger than the forward pass, against EDSR-baseline "
        "a fraction of it."
    ),
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--out", default=str(ROOT / "bench"), help="folder for results.md/.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: the preset's, 1 for smoke and quick; else torch's choice)",
    )
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(only) - set(SECTIONS))
    if unknown:
        ap.error(f"--only {','.join(unknown)}: unknown section; choose from {','.join(SECTIONS)}")
    p = copy.deepcopy(PRESETS[args.preset])
    threads = args.threads or p.get("threads")
    if threads:
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)  # the sr-eval / DDP child processes
    env = environment(args.device)
    env["preset"] = args.preset
    env["load_before"] = list(os.getloadavg())
    env["section_load"] = {}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fns = {"train": bench_train, "peer": bench_peer, "data": bench_data, "upscale": bench_upscale,
           "eval": bench_eval, "scaling": bench_scaling, "gpu": bench_gpu}  # fmt: skip
    rows: list[dict] = []
    profiles: list[dict] = []

    def write() -> None:
        """Written after every section, so an interrupted run keeps what it measured."""
        env["load_after"] = list(os.getloadavg())
        (out / "results.json").write_text(
            json.dumps({"environment": env, "rows": rows, "profiles": profiles}, indent=1)
        )
        (out / "results.md").write_text(markdown(env, rows, profiles))

    with tempfile.TemporaryDirectory(prefix="sr-bench-") as tmp:
        for sec in only:
            t0 = time.perf_counter()
            load0 = os.getloadavg()[0]
            try:
                rows += fns[sec](p, args.device, Path(tmp))
            except Exception as e:  # one broken section must not hide the others
                rows.append(
                    row(sec, f"section {sec}", unavailable=f"{type(e).__name__}: {e}"[:300])
                )
            took = time.perf_counter() - t0
            env["section_load"][sec] = {"before": load0, "after": os.getloadavg()[0], "s": took}
            print(f"[bench] {sec}: {took:.0f} s", file=sys.stderr, flush=True)
            write()
        if args.preset != "smoke":
            for what, title, fn in profile_jobs(rows, only):
                t0 = time.perf_counter()
                print(f"[bench] profile: {title}", file=sys.stderr, flush=True)
                try:
                    text = fn(p, args.device, Path(tmp))
                except Exception as e:  # report, never crash the bench
                    text = f"profile failed: {type(e).__name__}: {e}"
                profiles.append({"section": what, "title": title, "text": text,
                                 "fix": FIXES.get(what, ""), "s": time.perf_counter() - t0})  # fmt: skip
                write()
    print((out / "results.md").read_text())
    print(f"written to {out / 'results.md'} and {out / 'results.json'}")


def profile_jobs(rows: list[dict], only: list[str]):
    """``(section, title, fn)`` for each missed target, plus the EDSR-baseline training step
    (the last missed target before this round) and EDSR-baseline evaluation, always profiled."""
    jobs, seen = [], set()
    train_missed = [r for r in rows if r["section"] == "train" and r.get("met") is False]
    if "train" in only:
        train_missed.insert(0, {"what": "train step, EDSR-baseline, L1", "met": None})
    for r in train_missed:
        label = r["what"].split(", ", 1)[1]
        model = "edsr" if label.startswith("EDSR") else "rrdb"
        loss = (
            "downsample+gan" if "downsample" in label else ("l1+gan" if "RaGAN" in label else "l1")
        )
        if (model, loss) in seen:
            continue
        seen.add((model, loss))
        state = "missed" if r.get("met") is False else "profiled every run"
        jobs.append(("train", f"{r['what']} ({state})",
                     lambda p, d, t, m=model, lo=loss: profile_train_step(p, d, t, m, lo)))  # fmt: skip
    if any(r["section"] == "upscale" and r.get("met") is False for r in rows):
        jobs.append(("upscale", "sr-upscale tiled vs untiled (missed)", profile_upscale))
    eval_rows = [r for r in rows if r["section"] == "eval" and "ratio" in r]
    for r in eval_rows:
        if r.get("met") is False or r.get("model") == "edsr_baseline":
            state = "missed" if r.get("met") is False else "met"
            jobs.append(("eval", f"{r['what']} ({state})",
                         lambda p, d, t, m=r["model"]: profile_eval(p, d, t, m)))  # fmt: skip
    return jobs


if __name__ == "__main__":
    main()
