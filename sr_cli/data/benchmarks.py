"""The standard SR benchmark folders (Set5, Set14, BSD100/B100, Urban100, Manga109).

Two common layouts are recognised (folder names are matched case-insensitively):

* EDSR / ``benchmark.tar``: ``<root>/HR/*.png`` and ``<root>/LR_bicubic/X{s}/<stem>x{s}.png``;
* BasicSR: ``<root>/GTmod12/*.png`` and ``<root>/LRbicx{s}/<stem>.png``.

A :class:`BenchmarkDataset` yields full images with ``"lq"`` read from the LR folder, so the
published LR images are evaluated, not a re-made approximation.
:func:`~sr_cli.data.datasets.open_eval_dataset` falls back to the HR images alone (LR then made
on the device) when the LR folder of the requested scale is missing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sr_cli.data.paired import PairedFolderDataset
from sr_cli.errors import DataError

#: HR folder names, in order of preference, and the layout each belongs to.
HR_FOLDERS = (("HR", "edsr"), ("GTmod12", "basicsr"), ("GT", "basicsr"))


@dataclass
class BenchmarkLayout:
    """Where the HR and LR images of one benchmark folder live.

    Attributes:
        root: the benchmark folder (e.g. ``.../Set5``).
        hr_dir: its HR images.
        lr_dirs: ``{scale: folder}`` of the LR sets found.
        style: ``"edsr"`` or ``"basicsr"``.
    """

    root: Path
    hr_dir: Path
    style: str
    lr_dirs: dict[int, Path] = field(default_factory=dict)

    def expected_lr_dir(self, scale: int) -> Path:
        """Where the LR images of ``scale`` would be in this layout."""
        if self.style == "edsr":
            return self.root / "LR_bicubic" / f"X{scale}"
        return self.root / f"LRbicx{scale}"


def _children(folder: Path) -> dict[str, Path]:
    try:
        return {p.name.lower(): p for p in folder.iterdir() if p.is_dir()}
    except OSError:
        return {}


def _scale_of(name: str, prefix: str) -> int | None:
    rest = name[len(prefix) :] if name.startswith(prefix) else ""
    return int(rest) if rest.isdigit() and int(rest) > 0 else None


def detect_layout(root: str | Path) -> BenchmarkLayout | None:
    """The benchmark layout of ``root``, or ``None`` when it is a plain folder of images."""
    root = Path(root).expanduser()
    if not root.is_dir():
        return None
    children = _children(root)
    for name, style in HR_FOLDERS:
        hr = children.get(name.lower())
        if hr is None:
            continue
        layout = BenchmarkLayout(root=root, hr_dir=hr, style=style)
        lr_parent = children.get("lr_bicubic")
        if lr_parent is not None:
            for sub_name, sub in _children(lr_parent).items():
                scale = _scale_of(sub_name, "x")
                if scale:
                    layout.lr_dirs[scale] = sub
        for sub_name, sub in children.items():
            scale = _scale_of(sub_name, "lrbicx")
            if scale:
                layout.lr_dirs.setdefault(scale, sub)
        if style == "basicsr" and name == "GT" and not layout.lr_dirs:
            continue  # a bare GT/ folder is not enough evidence of a benchmark layout
        return layout
    return None


class BenchmarkDataset(PairedFolderDataset):
    """Full HR images of a benchmark folder with the published LR images as ``"lq"``.

    Args:
        root: benchmark folder in the EDSR (``HR`` + ``LR_bicubic/X{s}``) or BasicSR
            (``GTmod12`` + ``LRbicx{s}``) layout.
        scale: SR scale; picks the LR folder. HR is mod-cropped to it.
        cache_images: ``True``, ``False`` or ``"auto"``.
        skip_bad: skip unmatched, mis-sized, corrupt or too-small pairs with a warning.

    Items are ``{"gt": (3, H, W), "lq": (3, H/s, W/s), "name": str, "index": int}``.

    Example:
        >>> ds = BenchmarkDataset("data/benchmark/Set5", scale=4)
        >>> ds.name, len(ds)
        ('Set5', 5)
    """

    def __init__(
        self,
        root: str | Path,
        scale: int,
        cache_images: bool | str = "auto",
        skip_bad: bool = False,
        max_pixels: int | None = None,
    ) -> None:
        layout = detect_layout(root)
        if layout is None:
            raise DataError(
                f"{str(root)!r} is not a benchmark folder: expected HR/ with LR_bicubic/X{scale}/ "
                f"(EDSR layout) or GTmod12/ with LRbicx{scale}/ (BasicSR layout)."
            )
        lr_dir = layout.lr_dirs.get(int(scale))
        if lr_dir is None:
            raise DataError(
                f"benchmark folder {str(root)!r} has no LR images for scale {scale}: expected "
                f"{str(layout.expected_lr_dir(int(scale)))!r}."
            )
        self.layout = layout
        self.name = layout.root.name
        super().__init__(
            layout.hr_dir,
            lr_dir,
            scale,
            patch_size=None,
            cache_images=cache_images,
            skip_bad=skip_bad,
            what=f"benchmark {self.name!r}",
            max_pixels=max_pixels,
        )
