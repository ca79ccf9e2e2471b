"""The ``sr-report`` page: one self-contained HTML page comparing training runs.

For every validation image the page shows synchronized crops side by side (LQ, bicubic, the SR
of each run, GT) around the most detailed region of GT, a difference map ``|SR - GT|`` per run
(heat map on a shared scale), and the radially averaged power spectrum of each SR and of GT
(log scale), where missing or invented high frequencies show. Then the metric table (paper
protocol, on these images) and the training curves of every run from its ``metrics.csv``.

SR images are computed from each run's checkpoint (``checkpoints/last.ckpt``, or ``best.ckpt``
with ``--checkpoint best``; formerly ``best.ckpt``, else
``last.ckpt``) on the validation images of the first run's ``config_resolved.yaml``
(``data.val_dir``) or on ``--images``. The LQ of HR-only folders is made with the first run's
degradation, seeded per image as ``sr-eval`` does, so every run sees the same LQ.

All pictures are embedded in the page as base64 PNG data URIs (one file to share), and also
written next to it as PNG files.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from sr_cli.errors import ConfigError, DataError
from sr_cli.report.figures import (
    curves_plot,
    detail_window,
    heat_map,
    radial_power_spectrum,
    spectrum_plot,
    tensor_image,
    to_png,
)
from sr_cli.report.runs import load_run

#: Marks every image load on the page: ``document.body.dataset.imagesLoaded = "3/3"``.
LOAD_CHECK_SCRIPT = """
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (im) { return im.complete && im.naturalWidth > 0; }).length;
  document.body.dataset.imagesLoaded = ok + "/" + imgs.length;
});
"""

CSS = """
body { font-family: system-ui, sans-serif; margin: 24px; color: #222; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
.row { display: flex; flex-wrap: wrap; gap: 12px; align-items: flex-start; }
figure { margin: 0; text-align: center; }
figcaption { font-size: 0.8em; color: #555; max-width: 260px; }
img.crop { image-rendering: pixelated; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.note { font-size: 0.85em; color: #555; }
"""


# ---------------------------------------------------------------------------- the page
class Page:
    """Collects the page's HTML; every picture is embedded and also written as a PNG file."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self.parts: list[str] = []

    def add(self, markup: str) -> None:
        self.parts.append(markup)

    def img(self, png: bytes, name: str, alt: str, width: int | None = None, cls: str = "") -> str:
        from sr_cli.serialization import atomic_write

        atomic_write(self.out_dir / f"{name}.png", lambda f: f.write(png))
        data = base64.b64encode(png).decode("ascii")
        size = f' width="{width}"' if width else ""
        klass = f' class="{cls}"' if cls else ""
        return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"{size}{klass}>'

    def figure(self, img_tag: str, caption: str) -> str:
        return f"<figure>{img_tag}<figcaption>{caption}</figcaption></figure>"

    def render(self, title: str) -> str:
        body = "\n".join(self.parts)
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            f"<h1>{html.escape(title)}</h1>\n{body}\n<script>{LOAD_CHECK_SCRIPT}</script>\n"
            "</body></html>\n"
        )


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name)


def build_report(
    run_dirs: Sequence[str | Path],
    out_dir: str | Path,
    images: str | Path | None = None,
    crop: int = 96,
    max_images: int = 6,
    prefer_ema: bool = True,
    title: str = "sr-cli report",
    mos: str | Path | None = None,
    checkpoint: str = "last",
) -> Path:
    """Write ``report.html`` (and its PNG files) to ``out_dir``; returns the page's path.
    ``checkpoint``: which checkpoint of each run folder, ``last`` or ``best``."""
    from torch.utils.data import Subset

    from sr_cli.data.datasets import open_eval_dataset
    from sr_cli.evaluate.compare import (
        checkpoint_rows,
        compare,
        default_lq_config,
        load_checkpoints,
        unique_labels,
    )
    from sr_cli.evaluate.evaluation import plane_files
    from sr_cli.metrics.registry import metric_names, select_metrics
    from sr_cli.rate.aggregate import read_mos_csv
    from sr_cli.rebuild import rebuild
    from sr_cli.serialization import atomic_write_text, check_output_dir, check_output_file

    if not run_dirs:
        raise ConfigError("no run directory given: sr-report RUN_DIR [RUN_DIR ...]")
    check_output_dir(out_dir, "-o")  # before anything is computed
    check_output_file(Path(out_dir) / "report.html", "-o", folder=False)
    runs = [load_run(p, checkpoint) for p in run_dirs]
    loaded, scale = load_checkpoints([r.checkpoint for r in runs], prefer_ema=prefer_ema)
    for run, label in zip(
        runs, unique_labels([getattr(lg, "name", None) or r.label for r, lg in zip(runs, loaded)])
    ):
        run.label = label
    if images is None:
        images = (runs[0].config.get("data") or {}).get("val_dir")
        if not images:
            raise ConfigError(
                f"{str(runs[0].path)!r} has no config_resolved.yaml with data.val_dir; "
                "pass the validation images with --images FOLDER"
            )
    images_dir = Path(str(images)).expanduser()
    if not images_dir.exists():
        raise DataError(
            f"validation folder {str(images_dir)!r} does not exist (from the run's config); "
            "pass --images FOLDER"
        )
    for path in plane_files(out_dir, images_dir.name):  # the plane's PNG and CSV
        check_output_file(path, "-o", folder=False)
    dataset = open_eval_dataset(images_dir, scale)
    deg_cfg = loaded[0].degradation_config or default_lq_config(scale)
    degradation = rebuild(deg_cfg, loaded[0].source, "degradation")  # stored config: allow-list
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    page = Page(out)
    n_images = min(len(dataset), max_images) if max_images > 0 else len(dataset)
    crop = max(scale, crop - crop % scale)
    # sr-eval's comparison (seed 0, the val_degradation stream: the LQ of validation), keeping
    # each image's LQ, GT and SRs for the pictures.
    pictures: list[tuple[str, Tensor, Tensor, dict[str, Tensor]]] = []
    plane_metrics = [m for m in ("niqe", "rmse_y", "pi") if m in metric_names()]
    selection = select_metrics(metric_names("default"), plane_metrics)
    results, _, _ = compare(
        checkpoint_rows(loaded, degradation, deg_cfg, labels=[r.label for r in runs]),
        {images_dir.name: Subset(dataset, range(n_images))},
        degradation,
        selection.active,
        scale,
        on_image=lambda ds, i, name, lq, gt, srs: pictures.append((name, lq, gt, srs)),
        dataset_dirs={images_dir.name: images_dir},
    )
    sections = [
        image_section(
            page,
            name,
            lq,
            gt,
            srs,
            {label: results.image(images_dir.name, name, label) for label in srs},
            scale,
            crop,
        )
        for name, lq, gt, srs in pictures
    ]
    page.add(
        f'<p class="note">{n_images} image(s) from <code>{html.escape(str(images_dir))}</code>, '
        f"x{scale}. LQ made with <code>{html.escape(str(deg_cfg.get('_target_', '')))}</code> "
        "unless the folder provides LR images.</p>"
    )
    scores = read_mos_csv(mos) if mos else None  # sr-rate's MOS column
    page.add(metric_table(results, selection.unavailable, scores))
    page.add(plane_section(page, results))
    page.add("<h2>Training curves</h2>")
    curves = curves_plot(runs)
    if curves is None:
        page.add('<p class="note">No metrics.csv in the run directories.</p>')
    else:
        page.add(page.figure(page.img(curves, "training_curves", "training curves"), ""))
    page.add("<h2>Images</h2>")
    page.parts.extend(sections)
    runs_list = "".join(
        f"<li><b>{html.escape(r.label)}</b>: <code>{html.escape(str(r.checkpoint))}</code>"
        f"{' (EMA)' if lg.used_ema else ''}, iteration {lg.iteration}</li>"
        for r, lg in zip(runs, loaded)
    )
    page.parts.insert(0, f"<ul>{runs_list}</ul>")
    path = out / "report.html"
    atomic_write_text(path, page.render(title))
    return path


def plane_section(page: Page, results) -> str:
    """The perception-distortion plane of the compared runs and bicubic (its points also as
    ``plane_<set>.csv`` beside the page)."""
    from sr_cli.report.plane import comparison_planes

    parts = ["<h2>Perception-distortion plane</h2>"]
    pngs = comparison_planes(results, page.out_dir)
    if not pngs:
        why = (
            results.unavailable.get("niqe")
            or results.notes.get("niqe")
            or "NIQE or RMSE_Y could not be computed"
        )
        return parts[0] + f'<p class="note">Not drawn: {html.escape(why)}.</p>'
    for png in pngs:
        tag = page.img(png.read_bytes(), png.stem, "perception-distortion plane", width=560)
        parts.append(
            page.figure(
                tag,
                "RMSE of Y (8-bit levels) against NIQE (PI when Ma's model is cached), one point "
                f"per run; PIRM 2018's regions shaded. Points: <code>{png.stem}.csv</code>.",
            )
        )
    return "".join(parts)


def metric_table(results, unavailable: dict[str, str], mos: dict | None = None) -> str:
    """The comparison's mean per model as an HTML table, labelled by the metric registry, with
    sr-rate's MOS (score and 95% interval, matched by checkpoint path, else run name) when given."""
    from sr_cli.evaluate.evaluation import scored_cell
    from sr_cli.metrics.registry import header
    from sr_cli.rate.aggregate import mos_cell

    head = "".join(f"<th>{html.escape(header(m))}</th>" for m in results.metrics)
    head += "<th>MOS ↑</th>" if mos is not None else ""

    def checkpoint(r) -> str | None:
        return str(Path(r["checkpoint"]).resolve()) if r.get("checkpoint") else None

    rows = "".join(
        f"<tr><td>{html.escape(r['model'])}</td><td>{html.escape(scored_cell(r))}</td>"
        + "".join(f"<td>{results.cell(r, m)}</td>" for m in results.metrics)
        + (mos_cell(mos, checkpoint(r), r["model"]) if mos is not None else "")
        + "</tr>"
        for r in results.rows
    )
    notes = "".join(f"<li><b>{html.escape(line)}</b></li>" for line in results.caveats)
    notes += "".join(
        f"<li>{html.escape(' '.join([header(m), kind]).strip())}: {html.escape(why)}</li>"
        for kind, items in (("unavailable", unavailable), ("", results.notes))
        for m, why in items.items()
    )
    return (
        f"<h2>Metrics</h2><table><tr><th>Model</th><th>Checkpoint</th>{head}</tr>{rows}</table>"
        f'<p class="note">Mean over the images below. {html.escape(results.caption)}</p>'
        + (f'<ul class="note">{notes}</ul>' if notes else "")
    )


def image_section(
    page: Page,
    name: str,
    lq: Tensor,
    gt: Tensor,
    srs: dict[str, Tensor],
    metrics: dict[str, dict[str, float | None]],
    scale: int,
    crop: int,
) -> str:
    """Crops, difference maps and spectra of one image."""
    from sr_cli.metrics.registry import format_value

    h, w = gt.shape[-2:]
    size = min(crop, h - h % scale, w - w % scale)
    y, x = detail_window(gt, size, scale)
    display = 2 * size if size <= 128 else size
    key = _safe(name)
    parts = [f"<h3>{html.escape(name)} ({w}x{h})</h3>"]
    # Context: GT with the crop marked.
    ctx = tensor_image(gt).copy()
    ctx[y : y + size, [x, min(x + size, w) - 1]] = (255, 0, 0)
    ctx[[y, min(y + size, h) - 1], x : x + size] = (255, 0, 0)
    figs = [page.figure(page.img(to_png(ctx), f"{key}_context", f"{name} GT"), "GT, crop marked")]
    lq_crop = lq[..., y // scale : (y + size) // scale, x // scale : (x + size) // scale]
    figs.append(
        page.figure(
            page.img(to_png(tensor_image(lq_crop)), f"{key}_lq", "LQ", display, "crop"), "LQ"
        )
    )
    for label, sr in srs.items():
        m = metrics[label]
        figs.append(
            page.figure(
                page.img(
                    to_png(tensor_image(sr[..., y : y + size, x : x + size])),
                    f"{key}_{_safe(label)}",
                    label,
                    display,
                    "crop",
                ),
                f"{html.escape(label)}<br>{format_value('psnr_y', m.get('psnr_y'))} dB / "
                f"{format_value('ssim_y', m.get('ssim_y'))}",
            )
        )
    figs.append(
        page.figure(
            page.img(
                to_png(tensor_image(gt[..., y : y + size, x : x + size])),
                f"{key}_gt",
                "GT",
                display,
                "crop",
            ),
            "GT",
        )
    )
    parts.append(f'<div class="row">{"".join(figs)}</div>')
    # Difference maps on a shared scale.
    errs = {label: (sr - gt).abs().mean(1)[0].numpy() for label, sr in srs.items()}
    vmax = max(
        float(np.percentile(np.concatenate([e.ravel() for e in errs.values()]), 99)), 1 / 255
    )
    diff_figs = [
        page.figure(
            page.img(to_png(heat_map(e, vmax)), f"{key}_diff_{_safe(label)}", f"|{label} - GT|"),
            f"|{html.escape(label)} − GT|",
        )
        for label, e in errs.items()
    ]
    parts.append(
        "<h4>Difference maps</h4>"
        f'<p class="note">Mean absolute RGB error, inferno colormap from 0 (black) to '
        f"{vmax * 255:.1f}/255 (yellow), shared by all maps of this image.</p>"
        f'<div class="row">{"".join(diff_figs)}</div>'
    )
    curves = {label: radial_power_spectrum(sr) for label, sr in srs.items()}
    curves["GT"] = radial_power_spectrum(gt)
    spec = spectrum_plot(curves, f"{name}: radially averaged power spectrum")
    parts.append(
        "<h4>Error spectrum</h4>"
        + page.figure(page.img(spec, f"{key}_spectrum", f"{name} spectrum"), "")
    )
    return "\n".join(parts)
