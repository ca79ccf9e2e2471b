"""``results.md``: the bench's rows and profiles as Markdown tables, with what was fixed after each
profile."""

from __future__ import annotations

from bench.sections import SECTIONS


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
        "(tests/metrics/test_y_cache.py; tests/metrics and tests/evaluate/test_compare.py pass). SSIM "
        "itself (float64 Gaussian filtering on the full-resolution Y plane, kept for the "
        "bit-exact protocol) and the bicubic baseline row are the fixed cost that remains: "
        "against a small generator it is larger than the forward pass, against EDSR-baseline "
        "a fraction of it."
    ),
}
