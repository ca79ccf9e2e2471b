"""The perception-distortion plane (Blau and Michaeli, CVPR 2018), as PIRM 2018 drew it.

Each point is one run (a checkpoint, a stage, an arm's seed): its distortion on the y-axis,
RMSE of the Y channel in 8-bit levels (border cropped, ``rmse_y``), and its perceptual quality on
the x-axis, NIQE (``niqe``) or the perceptual index PI = ((10 - Ma) + NIQE) / 2 (``pi``) when
Ma's model is cached. Lower is better on both; no method can reach the lower left corner (the
perception-distortion trade-off). PIRM 2018 ranked methods by PI within three regions of RMSE:
<= 11.5, <= 12.5 and <= 16, drawn as horizontal bands.

:func:`draw_plane` draws any set of points and writes them as a CSV beside the picture, with
optional groups (an arm: one point per seed, plus its mean with a 95% t-interval on both axes)
and an optional path (stages in order). :func:`points_from_rows` reads the points out of
``sr-eval``'s rows (:class:`~sr_cli.evaluate.compare.Comparison`).

Example:
    >>> pts = [PlanePoint("bicubic", 7.1, 16.3), PlanePoint("esrgan", 3.2, 14.0)]
    >>> draw_plane(pts, "plane.png", "plane.csv")  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: PIRM 2018's RMSE regions (upper bounds, 8-bit levels on Y).
PIRM_REGIONS = (11.5, 12.5, 16.0)
#: Metrics that may stand on the perception axis, in order of preference.
PERCEPTION_METRICS = ("pi", "niqe")
#: Why the x-axis is NIQE and not PI when no ``pi`` metric is registered.
PI_MISSING = (
    "PI not shown: Ma et al.'s score needs their trained model and feature extractor, "
    "which sr-cli does not have"
)
CSV_COLUMNS = (
    "kind",
    "label",
    "group",
    "seed",
    "x_metric",
    "x",
    "rmse_y",
    "n",
    "x_ci_low",
    "x_ci_high",
    "rmse_ci_low",
    "rmse_ci_high",
)


@dataclass(frozen=True)
class PlanePoint:
    """One run on the plane: ``perception`` (NIQE or PI) and ``rmse`` (RMSE_Y, 8-bit levels)."""

    label: str
    perception: float
    rmse: float
    group: str | None = None
    seed: int | str | None = None


@dataclass(frozen=True)
class GroupMean:
    """The mean of a group's points with 95% t-intervals on both axes (``None`` for one point)."""

    group: str
    n: int
    perception: float
    rmse: float
    perception_ci: tuple[float, float] | None
    rmse_ci: tuple[float, float] | None


def mean_interval(values: Sequence[float]) -> tuple[float, tuple[float, float] | None]:
    """Mean and its 95% Student-t interval (``None`` below two values)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    from scipy.stats import t

    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = float(t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    return mean, (mean - half, mean + half)


def group_means(points: Iterable[PlanePoint]) -> list[GroupMean]:
    """One :class:`GroupMean` per group, in the order groups first appear."""
    groups: dict[str, list[PlanePoint]] = {}
    for p in points:
        if p.group is not None:
            groups.setdefault(p.group, []).append(p)
    out = []
    for name, members in groups.items():
        x, x_ci = mean_interval([p.perception for p in members])
        y, y_ci = mean_interval([p.rmse for p in members])
        out.append(GroupMean(name, len(members), x, y, x_ci, y_ci))
    return out


def _finite(p: PlanePoint) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in (p.perception, p.rmse))


def write_points_csv(
    points: Sequence[PlanePoint], means: Sequence[GroupMean], out_csv: Path, x_metric: str
) -> None:
    """The points (``kind=point``) and the group means (``kind=mean``) as a CSV."""

    def fmt(v) -> str:
        return "" if v is None else f"{v:.6f}" if isinstance(v, float) else str(v)

    from sr_cli.serialization import atomic_write_text

    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for p in points:
        writer.writerow(
            ["point", p.label, p.group or "", fmt(p.seed), x_metric]
            + [fmt(p.perception), fmt(p.rmse), "1", "", "", "", ""]
        )
    for m in means:
        xl, xh = m.perception_ci or (None, None)
        yl, yh = m.rmse_ci or (None, None)
        writer.writerow(
            ["mean", m.group, m.group, "", x_metric, fmt(m.perception), fmt(m.rmse), str(m.n)]
            + [fmt(xl), fmt(xh), fmt(yl), fmt(yh)]
        )
    atomic_write_text(out_csv, buf.getvalue())  # never into a FIFO or over a device


def read_points_csv(path: str | Path) -> list[dict[str, str]]:
    """The rows of a CSV written by :func:`draw_plane` (plain dicts of strings)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def draw_plane(
    points: Sequence[PlanePoint],
    out_png: str | Path,
    out_csv: str | Path,
    *,
    groups: Mapping[str, str] | None = None,
    x_metric: str = "niqe",
    path: bool = False,
    title: str = "Perception-distortion plane",
    note: str | None = None,
) -> list[GroupMean]:
    """Draw the plane to ``out_png`` and write its points to ``out_csv``.

    Args:
        points: the runs; points with a non-finite coordinate are left out of the picture (the
            CSV keeps them, empty where not finite).
        groups: ``{label: group}`` assigning points to groups (arms); overrides
            ``PlanePoint.group``. Each group gets one colour and its mean with a 95% interval.
        x_metric: ``niqe`` or ``pi`` (the axis label and the CSV's ``x_metric``).
        path: join the points in order with arrows (stages of one run).
        title: the picture's title; ``note`` a line under the axes (e.g. why PI is not shown).

    Returns:
        The group means written to the CSV.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from sr_cli.serialization import atomic_write

    if groups:
        points = [
            PlanePoint(p.label, p.perception, p.rmse, groups.get(p.label, p.group), p.seed)
            for p in points
        ]
    points = list(points)
    out_png, out_csv = Path(out_png), Path(out_csv)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    means = group_means([p for p in points if _finite(p)])
    write_points_csv(points, means, out_csv, x_metric)

    shown = [p for p in points if _finite(p)]
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=110)
    try:
        ys = [p.rmse for p in shown] or [12.0]
        top = max(max(ys) * 1.08, PIRM_REGIONS[-1] * 1.05)
        bottom = min(min(ys) * 0.92, PIRM_REGIONS[0] * 0.9)
        shades = ("#d9f0d3", "#fee8c8", "#f0f0f0")
        lower = bottom
        for k, (bound, shade) in enumerate(zip(PIRM_REGIONS, shades), start=1):
            ax.axhspan(lower, bound, color=shade, zorder=0)
            ax.axhline(bound, color="#999999", lw=0.8, ls="--", zorder=1)
            ax.text(
                1.0, bound, f" region {k}: RMSE <= {bound:g}", transform=ax.get_yaxis_transform(),
                va="top", ha="right", fontsize=7, color="#555555",
            )  # fmt: skip
            lower = bound
        colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
        group_names = list(dict.fromkeys(p.group for p in shown if p.group is not None))
        colour_of = {g: colours[i % len(colours)] for i, g in enumerate(group_names)}
        for i, p in enumerate(shown):
            colour = colour_of.get(p.group, colours[(len(group_names) + i) % len(colours)])
            grouped = p.group is not None
            ax.scatter(
                p.perception, p.rmse, s=22 if grouped else 40, color=colour,
                alpha=0.45 if grouped else 1.0, zorder=3,
                label=None if grouped else p.label,
            )  # fmt: skip
            if not grouped:
                ax.annotate(p.label, (p.perception, p.rmse), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")  # fmt: skip
        if path and len(shown) > 1:
            for a, b in zip(shown, shown[1:]):
                ax.annotate(
                    "", xy=(b.perception, b.rmse), xytext=(a.perception, a.rmse),
                    arrowprops={"arrowstyle": "->", "color": "#444444", "lw": 1.0}, zorder=2,
                )  # fmt: skip
        for m in means:
            xerr = (
                None
                if m.perception_ci is None
                else [[m.perception - m.perception_ci[0]], [m.perception_ci[1] - m.perception]]
            )
            yerr = None if m.rmse_ci is None else [[m.rmse - m.rmse_ci[0]], [m.rmse_ci[1] - m.rmse]]
            ax.errorbar(
                m.perception, m.rmse, xerr=xerr, yerr=yerr, fmt="D", ms=7, capsize=3,
                color=colour_of[m.group], zorder=4, label=f"{m.group} (mean of {m.n}, 95% CI)",
            )  # fmt: skip
        ax.set_ylim(bottom, top)
        ax.set_xlabel(
            "PI = ((10 - Ma) + NIQE) / 2  (lower = more natural)"
            if x_metric == "pi"
            else "NIQE  (lower = more natural)"
        )
        ax.set_ylabel("RMSE of Y, 8-bit levels  (lower = less distortion)")
        ax.set_title(title, fontsize=10)
        if note:
            fig.text(0.01, 0.01, note, fontsize=6.5, color="#555555")
        if shown:
            ax.legend(fontsize=7, loc="best", framealpha=0.8)
        fig.tight_layout(rect=(0, 0.03 if note else 0, 1, 1))
        png = io.BytesIO()
        fig.savefig(png, format="png")
        atomic_write(out_png, lambda f: f.write(png.getvalue()))
    finally:
        plt.close(fig)
    return means


def pick_perception_metric(available: Iterable[str]) -> str | None:
    """``pi`` when it was computed, else ``niqe``, else ``None``."""
    available = set(available)
    return next((m for m in PERCEPTION_METRICS if m in available), None)


def points_from_rows(
    rows: Iterable[Mapping], x_metric: str, dataset: str | None = None
) -> list[PlanePoint]:
    """One point per model row (of one dataset: the first unless ``dataset`` says) of an
    ``sr-eval`` comparison: its mean ``x_metric`` and mean ``rmse_y``."""
    rows = list(rows)
    if not rows:
        return []
    dataset = dataset or rows[0]["dataset"]
    return [
        PlanePoint(
            str(r["model"]),
            float("nan") if r.get(x_metric) is None else float(r[x_metric]),
            float("nan") if r.get("rmse_y") is None else float(r["rmse_y"]),
        )
        for r in rows
        if r["dataset"] == dataset
    ]


def comparison_planes(results, output_dir: str | Path, stem: str = "plane") -> list[Path]:
    """One plane per dataset of an ``sr-eval``/``sr-report`` comparison (bicubic and every
    checkpoint): ``<stem>_<dataset>.png`` and ``.csv`` in ``output_dir``. The x-axis is PI when it
    was computed, else NIQE, with the reason PI is missing under the axes. Returns the PNGs."""
    from sr_cli.evaluate.evaluation import plane_files

    computed = [m for m in results.metrics if m not in results.unavailable]
    x_metric = pick_perception_metric(computed)
    if x_metric is None or "rmse_y" not in computed:
        return []
    note = None
    if x_metric != "pi":
        why = results.unavailable.get("pi")
        note = f"PI not shown: {why}"[:160] if why else PI_MISSING
    written = []
    for dataset in dict.fromkeys(r["dataset"] for r in results.rows):
        points = points_from_rows(results.rows, x_metric, dataset)
        if not any(_finite(p) for p in points):  # e.g. images too small for NIQE's blocks
            continue
        png, points_csv = plane_files(output_dir, dataset, stem)
        draw_plane(
            points,
            png,
            points_csv,
            x_metric=x_metric,
            title=f"Perception-distortion plane: {dataset} (x{results.scale})",
            note=note,
        )
        written.append(png)
    return written
