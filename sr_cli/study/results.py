"""``results.md`` and ``results.json`` of a study: the claim, the protocol, every arm's mean with
its intervals, each criterion with the numbers it was decided on, and the verdict.

Names that come from a study file (arm, criterion and metric names, notes) are escaped: the
Markdown may be rendered as HTML, and a study file is data.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sr_cli.serialization import atomic_write


def md(text: Any) -> str:
    """``text`` safe inside a Markdown table cell (HTML escaped, pipes and newlines neutral)."""
    return html.escape(str(text), quote=False).replace("|", "\\|").replace("\n", " ")


def _code(line: str) -> str:
    """A command line inside a fenced block: no backtick can close the fence early."""
    return str(line).replace("`", "'").replace("\n", " ")


def metric_targets(metrics: Sequence[str]) -> dict[str, float]:
    """Metrics whose GT value is a target (shown as the distance ``|x - target|``)."""
    from sr_cli.metrics.registry import get_metric

    out = {}
    for m in metrics:
        target = getattr(get_metric(m), "target", None)
        if target is not None:
            out[m] = float(target)
    return out


def _header(metric: str, targets: Mapping[str, float]) -> str:
    from sr_cli.metrics.registry import get_metric

    spec = get_metric(metric)
    if metric in targets:
        return f"\\|{spec.label} − {targets[metric]:g}\\| ↓"
    return f"{spec.label} {'↑' if spec.higher_is_better else '↓'}"


def _decimals(metric: str) -> int:
    from sr_cli.metrics.registry import get_metric

    return get_metric(metric).decimals


def _cell(cell: Mapping[str, Any] | None, decimals: int) -> str:
    if not cell:
        return "n/a"
    seeds, images = cell["seeds"], cell["images"]
    mean = seeds["mean"]
    text = f"{mean:.{decimals}f}"
    if seeds["n"] >= 2 and not math.isnan(seeds["lo"]):
        text += f" ± {(seeds['hi'] - seeds['lo']) / 2:.{decimals}f}"
    if images["n"] >= 2 and not math.isnan(images["lo"]):
        text += f" [{images['lo']:.{decimals}f}, {images['hi']:.{decimals}f}]"
    return text


def _mos_cell(mos: Mapping[str, Any] | None, arm: str) -> str:
    if not mos or arm not in mos:
        return "–"
    m = mos[arm]
    return f"{m['score']:.2f} [{m['lo']:.2f}, {m['hi']:.2f}] ({m['votes']} votes)"


def _interval_text(iv: Mapping[str, Any] | None, relative: bool) -> str:
    if not iv:
        return "n/a"
    f = (lambda x: f"{100 * x:+.2f}%") if relative else (lambda x: f"{x:+.3g}")
    if iv["n"] < 2 or math.isnan(iv["lo"]):
        return f"{f(iv['mean'])} (n={iv['n']})"
    return f"{f(iv['mean'])} [{f(iv['lo'])}, {f(iv['hi'])}]"


def results_markdown(info: Mapping[str, Any]) -> str:
    metrics: list[str] = info["metrics"]
    targets = metric_targets(metrics)
    seeds = info["seeds"]
    minutes = info["wall_seconds"] / 60
    lines = [
        f"# Study `{md(info['study'])}` (preset `{md(info['preset'])}`)",
        "",
        f"**Claim.** {md(info['claim'])}",
        "",
        f"**Verdict: {info['verdict']}**"
        + (f" ({md(info['verdict_note'])})" if info.get("verdict_note") else ""),
        "",
        f"Measured {info['date']} on `{md(info['host'])}` ({info['cpus']} CPU cores): wall time "
        f"**{minutes:.1f} min** for this command"
        + (
            " (every job trained by it, from nothing cached)"
            if info.get("fresh")
            else " (some jobs were finished or cached before it ran)"
        )
        + ".",
        "",
        "## Protocol",
        "",
        f"- Seeds: {', '.join(map(str, seeds))} ({len(seeds)} per arm); arms with the same seed "
        "share the initialisation, the data order and the degradation streams, so differences "
        "are paired by seed.",
        f"- Evaluation: {info['images']} image(s) of "
        + ", ".join(f"`{md(k)}` ({md(v)})" for k, v in info["eval_sets"].items())
        + "; no run trained or validated on them (the bundled validation images select "
        "checkpoints during training only). Every row is a run's final generator (`last.ckpt`, "
        "its EMA when the run keeps one), never a checkpoint selected on these images.",
        "- Each cell: mean over seeds ± the half-width of its 95% t-interval over seeds "
        "(training variance), then [the 95% bootstrap interval over images] (image variance, "
        "10 000 resamples). A criterion passes when both intervals of its difference clear the "
        "margin in the claimed direction, fails when both lie on the other side, and is "
        "inconclusive otherwise.",
    ]
    for w in info.get("warm_starts") or []:
        lines.append(
            f"- Warm start `{md(w['name'])}`: trained once per seed and cached by the hash of its "
            f"config (`{md(w['key'])}`, folder `{md(w['folder'])}`); used by "
            + (", ".join(md(b) for b in w["by"]) or "nothing")
            + ". A rerun, or another study with the same config, reuses it."
        )
    lines += ["", "## Results", ""]
    mos = info.get("mos")
    head = ["arm", "seeds", *[_header(m, targets) for m in metrics], *(["MOS"] if mos else [])]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|---|---:|" + "---:|" * (len(head) - 2))
    for row in info["table"]:
        cells = [
            "unavailable"
            if m in info["unavailable"]
            else _cell(row["metrics"].get(m), _decimals(m))
            for m in metrics
        ]
        if mos:
            cells.append(_mos_cell(mos, row["arm"]))
        seeds_text = "–" if row["arm"] == "bicubic" else str(row["seeds"])
        lines.append(f"| {md(row['arm'])} | {seeds_text} | " + " | ".join(cells) + " |")
    for arm, per_seed in (info.get("statuses") or {}).items():
        bad = {s: st for s, st in per_seed.items() if st != "finished"}
        if bad:
            lines.append(
                f"| {md(arm)} | – | "
                + md(", ".join(f"seed {s}: {st}" for s, st in sorted(bad.items())))
                + " |" * len(metrics)
            )
    lines.append("")
    for title, key in (("Criteria", "criteria"), ("Sanity checks", "sanity")):
        items = info.get(key) or []
        if not items:
            continue
        lines += [
            f"## {title}",
            "",
            "| id | says | compares | difference over seeds [95% CI] | over images [95% CI] | "
            "margin | verdict |",
            "|---|---|---|---|---|---:|---|",
        ]
        for v in items:
            rel = bool(v.get("relative"))
            margin = f"{100 * v['margin']:.2f}%" if rel else f"{v['margin']:g}"
            if v.get("seed_interval") is None:
                seed_text, image_text = md(v.get("why", "")), ""
            else:
                seed_text = _interval_text(v["seed_interval"], rel)
                image_text = _interval_text(v["image_interval"], rel)
            lines.append(
                f"| {md(v['id'])} | {md(v['says'])} | {md(v['left'])} {md(v['op'])} "
                f"{md(v['right'])} | {seed_text} | {image_text} | {margin} | "
                f"**{v['verdict']}** |"
            )
        lines.append("")
    notes = list(info.get("notes") or [])
    notes += [f"{m} unavailable: {why}" for m, why in (info.get("unavailable") or {}).items()]
    notes += [f"{m}: {why}" for m, why in (info.get("metric_notes") or {}).items()]
    if notes:
        lines += ["## Notes", "", *[f"- {md(n)}" for n in notes], ""]
    lines += ["## Commands", "", "```bash", _code(info["command"])]
    for cmd in (info.get("protocol") or {}).get("commands", {}).values():
        lines.append(_code(cmd))
    lines += ["```", ""]
    if info.get("report"):
        lines += [f"Report with crops: [{md(info['report'])}]({info['report']})", ""]
    if info.get("plane"):
        png, points = info["plane"]["png"], info["plane"]["csv"]
        lines += [
            f"Perception-distortion plane (NIQE against RMSE_Y, one point per arm and seed, each "
            f"arm's mean with its 95% interval): [{md(png)}]({png}), points in "
            f"[{md(points)}]({points})",
            "",
        ]
    return "\n".join(lines)


def write_results(info: Mapping[str, Any], root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    text = json.dumps(info, indent=2, default=str)
    atomic_write(root / "results.json", lambda f: f.write(text.encode()))
    page = results_markdown(info)
    atomic_write(root / "results.md", lambda f: f.write(page.encode()))
