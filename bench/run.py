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
#: little); ``quick`` is the default (a few minutes on 2 cores); ``full`` takes long.
PRESETS: dict[str, dict] = {
    "smoke": dict(
        batch=2, patch=32, edsr_preset="small", warmup=1, block=1, rounds=2, workers=0,
        data_batches=3, upscale_sizes=[(96, 64), (192, 128)], upscale_rounds=2,
        eval_images=2, scaling_batches=[1, 2], scaling_patches=[32], ddp_steps=3, peer=False,
        threads=1,
    ),
    "quick": dict(
        batch=8, patch=64, edsr_preset="baseline", warmup=2, block=2, rounds=4, workers=2,
        data_batches=8, upscale_sizes=[(400, 300), (800, 600)], upscale_rounds=2,
        eval_images=4, scaling_batches=[4, 16], scaling_patches=[48, 96], ddp_steps=6,
        peer=True,
    ),
    "full": dict(
        batch=16, patch=128, edsr_preset="baseline", warmup=5, block=5, rounds=9, workers=4,
        data_batches=30, upscale_sizes=[(1000, 750), (2000, 1500)], upscale_rounds=5,
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
        "trainer.enable_progress_bar=false",
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

        from sr_cli.engine.training import build_datamodule

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
    from sr_cli.engine.training import (
        build_datamodule,
        build_module,
        build_trainer,
        setup_environment,
    )

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


def profile_train_step(p: dict, device: str, tmp: Path, model: str, loss: str) -> str:
    """torch.profiler table of a few steady-state sr-train iterations (where a target is missed)."""
    from torch.profiler import ProfilerActivity, profile

    cfg = compose_train(train_overrides(p, model, loss, tmp / f"profile-{model}", device))
    steps = p["warmup"] + 2 * p["block"]
    prof_box: dict = {}

    def pause(n: int) -> None:  # profile the second block only
        if "p" not in prof_box:
            acts = [ProfilerActivity.CPU] + (
                [ProfilerActivity.CUDA] if device.startswith("cuda") else []
            )
            prof_box["p"] = profile(activities=acts)
            prof_box["p"].__enter__()

    p2 = dict(p, rounds=2)
    del steps
    run_real_trainer(cfg, p2, pause, rounds=2)
    prof = prof_box.get("p")
    if prof is None:
        return ""
    prof.__exit__(None, None, None)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)


# --------------------------------------------------------------------------- BasicSR peer
PEER_DIR = ROOT / "bench" / ".peer-venv"
PEER_PACKAGES = [
    "basicsr==1.4.2", "addict", "yapf", "lmdb", "opencv-python-headless", "scikit-image",
    "future", "tb-nightly",
]  # fmt: skip


def peer_python() -> Path:
    """BasicSR in its own venv (bench/.peer-venv), sharing this torch through a .pth file.

    Installed with ``--no-deps`` so pip never resolves (or replaces) torch there; sr-cli's
    environment is never touched."""
    py = PEER_DIR / "bin" / "python"
    stamp = PEER_DIR / ".installed"
    if stamp.is_file():
        return py
    base = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    subprocess.run([str(base), "-m", "venv", "--without-pip", str(PEER_DIR)], check=True)
    import site

    (site_dir,) = list((PEER_DIR / "lib").glob("python3*/site-packages"))
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
    from sr_cli.engine.training import build_datamodule

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
    import numpy as np
    from hydra.utils import instantiate

    from bench.upscale_memory import MODELS, measure
    from sr_cli.engine.upscaling import Picture, make_forward, upscale_picture

    rows = []
    torch.manual_seed(0)
    gen = instantiate(MODELS["edsr"]).eval().to(device)
    fwd = make_forward(gen, torch.device(device))
    w, h = p["upscale_sizes"][-1]
    rgb = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    pic = Picture(rgb=rgb, alpha=None, gray=False, bits=8)
    lq = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0).contiguous()
    res = alternate(
        {
            "tiled": bench_timer(lambda: upscale_picture(pic, fwd, 4, tile=256, overlap=16)),
            "whole": bench_timer(lambda: fwd(lq).cpu()),
        },
        p["upscale_rounds"],
    )
    r = ratio_row(
        "upscale",
        f"sr-upscale tiled (256 px, overlap 16) vs one untiled forward, EDSR small x4, {w}x{h}",
        res["tiled"], res["whole"], "tiled", "untiled", 1.15,
    )  # fmt: skip
    r["note"] = "tiled includes quantizing the output to 8 bits; both in-process, no file I/O"
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


# --------------------------------------------------------------------------------- 4. eval
def bench_eval(p: dict, device: str, tmp: Path) -> list[dict]:
    import numpy as np
    from PIL import Image

    from bench.upscale_memory import make_checkpoint
    from sr_cli.engine.inference import load_generator

    ckpt = tmp / "eval" / "model.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    make_checkpoint(ckpt, "edsr")
    n = p["eval_images"]
    side = p["patch"] * 4
    sets = {}
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(2 * n)]
    for k in (n, 2 * n):
        d = tmp / "eval" / f"set{k}"
        d.mkdir(exist_ok=True)
        for i in range(k):
            Image.fromarray(imgs[i]).save(d / f"{i}.png")
        sets[k] = d

    def sr_eval(k: int) -> float:
        """The sr-eval task in-process (``evaluate(cfg)``, the config a user's command gets)."""
        from hydra import compose, initialize_config_dir

        from sr_cli.config import config_dir
        from sr_cli.engine.evaluation import evaluate

        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose("eval", overrides=[
                f"checkpoints=[{ckpt}]", f"datasets={{bench: {sets[k]}}}", "metrics=[psnr_y,ssim_y]",
                f"output_dir={tmp / 'eval' / f'out{k}'}", "trainer.enable_progress_bar=false",
                f"trainer.accelerator={'gpu' if device != 'cpu' else 'cpu'}", "~logger",
            ])  # fmt: skip
        t0 = time.perf_counter()
        evaluate(cfg)
        return time.perf_counter() - t0

    gen = load_generator(ckpt).generator.eval().to(device)
    from sr_cli.degradations.resize import imresize

    lqs = [
        imresize(torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255, scale=0.25)
        for a in imgs[:n]
    ]

    @torch.inference_mode()
    def forward() -> float:
        t0 = time.perf_counter()
        for x in lqs:
            gen(x.to(device))
        sync(device)
        return (time.perf_counter() - t0) / n

    per_image: list[float] = []
    fwd: list[float] = []
    sr_eval(n)  # warm-up: imports, metric set-up
    for _ in range(p["upscale_rounds"]):
        t_n = sr_eval(n)
        fwd.append(forward())
        t_2n = sr_eval(2 * n)
        per_image.append(max(t_2n - t_n, 1e-9) / n)
    a, b = stats(per_image), stats(fwd)
    r = ratio_row(
        "eval", f"sr-eval per image (PSNR_Y + SSIM_Y) vs forward pass alone, {side}x{side} HR, x4",
        a, b, "sr-eval", "forward", 1.20,
    )  # fmt: skip
    r["note"] = (
        f"per image = (time for {2 * n} images - time for {n}) / {n}: Lightning start-up "
        "cancels out; includes decoding, the bicubic degradation and writing the CSVs"
    )
    return [r]


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


def markdown(env: dict, rows: list[dict], profile: str) -> str:
    lines = [
        "# sr-cli benchmarks",
        "",
        f"Preset `{env['preset']}` on {env['machine']}, {env['processor']}, device {env['device']}"
        f"{' (' + env['cuda'] + ')' if env['cuda'] else ''}; torch {env['torch']}, "
        f"{env['threads']} threads, Python {env['python']}; {env['date']}.",
        "",
        "Figures: median [min-max] of alternated measurements (A, B, A, B, ...). "
        "Ratios compare medians; lower is faster for sr-cli.",
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
    if profile:
        lines += ["", "## Profile of a missed target (torch.profiler, steady state)", "", "```",
                  profile.strip(), "```"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=sorted(PRESETS), default="quick")
    ap.add_argument("--out", default=str(ROOT / "bench"), help="folder for results.md/.json")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's own choice)"
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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    fns = {"train": bench_train, "peer": bench_peer, "data": bench_data, "upscale": bench_upscale,
           "eval": bench_eval, "scaling": bench_scaling, "gpu": bench_gpu}  # fmt: skip
    rows: list[dict] = []
    profile = ""

    def write() -> None:
        """Written after every section, so an interrupted run keeps what it measured."""
        (out / "results.json").write_text(
            json.dumps({"environment": env, "rows": rows, "profile": profile}, indent=1)
        )
        (out / "results.md").write_text(markdown(env, rows, profile))

    with tempfile.TemporaryDirectory(prefix="sr-bench-") as tmp:
        for sec in only:
            t0 = time.perf_counter()
            try:
                rows += fns[sec](p, args.device, Path(tmp))
            except Exception as e:  # one broken section must not hide the others
                rows.append(
                    row(sec, f"section {sec}", unavailable=f"{type(e).__name__}: {e}"[:300])
                )
            print(f"[bench] {sec}: {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
            write()
        missed = [r for r in rows if r["section"] == "train" and r.get("met") is False]
        if missed and args.preset != "smoke":
            worst = max(missed, key=lambda r: r["ratio"])
            model = "edsr" if worst["what"].split(", ")[1].startswith("EDSR") else "rrdb"
            loss = (
                "l1"
                if "L1," in worst["what"] and "RaGAN" not in worst["what"]
                else ("downsample+gan" if "downsample" in worst["what"] else "l1+gan")
            )
            profile = f"{worst['what']}\n\n" + profile_train_step(
                p, args.device, Path(tmp), model, loss
            )
            write()
    print((out / "results.md").read_text())
    print(f"written to {out / 'results.md'} and {out / 'results.json'}")


if __name__ == "__main__":
    main()
