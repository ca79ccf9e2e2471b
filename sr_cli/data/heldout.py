"""``heldout``: 10 natural images that no bundled run trains or validates on, for evaluation.

The bundled images (``samples/train``, ``samples/val``) train and select models. A study's
claims are judged on other images: these ten, read at run time from image files that installed
packages ship (scikit-image, scikit-learn and PyWavelets, dependencies of sr-cli), so nothing is
downloaded and nothing is redistributed. They are written once as PNGs (cropped to a multiple of
12, so that every scale in {2, 3, 4} divides them; grayscale replicated to RGB) into
``$SR_CLI_CACHE/heldout`` (default ``~/.cache/sr-cli/heldout``), and used from there.

Every image is checked against the SHA-256 of its pixels as first written: a package release
that changes an image makes a warning, since figures on it are then not comparable with earlier
ones. Any name of :data:`HELDOUT_NAMES` resolves to the folder (``datasets={heldout:heldout}``
in sr-eval, ``eval.dataset: heldout`` in a study).

None of them is in ``samples/`` (that is tested), and none is a crop of a bundled image. Six are
grayscale (replicated to RGB; the metrics of the protocol are on Y). skimage's ``cell`` was left
out: a near-flat phase image on which bicubic reaches 54 dB, one image that would dominate a
mean PSNR.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sr_cli.errors import DataError

#: Dataset names that mean this set.
HELDOUT_NAMES = ("heldout",)
#: Sides are cropped to a multiple of this (x2, x3 and x4 all divide it).
MODCROP = 12


@dataclass(frozen=True)
class HeldoutImage:
    """One image: its file name, the package and file it comes from, and its provenance."""

    name: str
    package: str  # pip package
    module: str  # module whose folder holds the file
    file: str  # path relative to that folder
    source: str
    license: str
    sha256: str  # of the RGB uint8 pixels after the crop, as first written


# Provenance and licenses as documented by the packages that ship the files.
HELDOUT_IMAGES: tuple[HeldoutImage, ...] = (
    HeldoutImage(
        "motorcycle.png",
        "scikit-image",
        "skimage.data",
        "motorcycle_left.png",
        "Middlebury 2014 stereo benchmark, left view, down-sampled by 4 (skimage `stereo_motorcycle`)",
        "Middlebury stereo data (Scharstein et al., GCPR 2014), distributed with scikit-image",
        "9def6c548e90cbdf97225870da4c21bb54a95cb9cfc98b4ec856cc58489cddeb",
    ),
    HeldoutImage(
        "coins.png",
        "scikit-image",
        "skimage.data",
        "coins.png",
        "Greek coins from Pompeii, Brooklyn Museum Collection (skimage `coins`)",
        "no known copyright restrictions (skimage)",
        "6c18a92b92cae0083c09ab7fdb49eb9e38cd0d51fb42669f7dddc2f4427c3352",
    ),
    HeldoutImage(
        "moon.png",
        "scikit-image",
        "skimage.data",
        "moon.png",
        "Surface of the moon (skimage `moon`)",
        "distributed with scikit-image (BSD-licensed package); no notice of its own",
        "e4f04a0ca15e35e46b9a889c7b8c57eadf550b62c2b6223b1035fc92c6c62a4d",
    ),
    HeldoutImage(
        "page.png",
        "scikit-image",
        "skimage.data",
        "page.png",
        "Scanned page of printed text (skimage `page`)",
        "distributed with scikit-image (BSD-licensed package); no notice of its own",
        "4bf58ecc63f49299a2fbb46d4e946b31d546745be230448e99ab20901c9b40ef",
    ),
    HeldoutImage(
        "text.png",
        "scikit-image",
        "skimage.data",
        "text.png",
        "Gray-level text image, Wikipedia File:Corner.png (skimage `text`)",
        "public domain (skimage)",
        "5f48e952a7a9943d43390e0d780121f415f40be309b70204fa6b6079d37e9ea7",
    ),
    HeldoutImage(
        "mri.png",
        "matplotlib",
        "matplotlib",
        "mpl-data/sample_data/s1045.ima.gz",
        "MRI slice of a human head, 256x256 (matplotlib sample data `s1045.ima.gz`)",
        "distributed with matplotlib's sample data; no notice of its own",
        "94651cd5606dad174a2916fc8a2cf28732843c218112b4e1dbdc2bd6ab92e81c",
    ),
    HeldoutImage(
        "china.png",
        "scikit-learn",
        "sklearn.datasets",
        "images/china.jpg",
        "Summer Palace, Beijing, by danielbuechele on Flickr (sklearn `china.jpg`)",
        "CC BY 2.0",
        "05752b8fd83dd136205cf2546e035f6bf16edfe69eae5ac773e04800b40897c9",
    ),
    HeldoutImage(
        "flower.png",
        "scikit-learn",
        "sklearn.datasets",
        "images/flower.jpg",
        "Dahlia, by vultilion on Flickr (sklearn `flower.jpg`)",
        "CC BY 2.0",
        "950b0c6dc0aa83b72812e2c2b1510563d44a85e094c46c2eba2b0842c3e3623f",
    ),
    HeldoutImage(
        "aero.png",
        "PyWavelets",
        "pywt.data",
        "aero.npz",
        "Aerial photograph (pywt `data.aero`)",
        "distributed with PyWavelets (MIT-licensed package); no notice of its own",
        "e59909b60e86d3efcd40ce0b74d47eba13b7d11cd7fbd27dab822c2571b17892",
    ),
    HeldoutImage(
        "ascent.png",
        "PyWavelets",
        "pywt.data",
        "ascent.npz",
        "People climbing stairs, accent-to-the-top.jpg from public-domain-image.com (pywt `ascent`)",
        "public domain",
        "c336ff99e4a92d5caec6374a23474cc0339c948d7958e054c6c69916603e4695",
    ),
)


def cache_root() -> Path:
    """``$SR_CLI_CACHE``, else ``$XDG_CACHE_HOME/sr-cli``, else ``~/.cache/sr-cli``."""
    env = os.environ.get("SR_CLI_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sr-cli"


def _source_path(image: HeldoutImage) -> Path:
    try:
        module = importlib.import_module(image.module)
    except ImportError as exc:
        raise DataError(
            f"the held-out image {image.name} comes from the {image.package} package, which is "
            f"not installed ({exc}); install it with `pip install {image.package}`"
        ) from None
    path = Path(module.__file__).resolve().parent / image.file
    if not path.is_file():
        raise DataError(
            f"the held-out image {image.name} should be {path} (shipped by {image.package}), "
            f"but that file is missing; reinstall it with `pip install --force-reinstall "
            f"{image.package}`"
        )
    return path


def _read_pixels(path: Path) -> np.ndarray:
    """RGB ``uint8 (H, W, 3)`` of a shipped file: an image, an ``.npz`` with ``data``, or
    matplotlib's raw MRI slice (``.ima.gz``: 256x256 big-endian uint16 whose values fit 8 bits)."""
    if path.name.endswith(".ima.gz"):
        import gzip

        with gzip.open(path) as f:
            data = f.read(256 * 256 * 2 + 1)
        raw = np.frombuffer(data, dtype=">u2") if len(data) == 256 * 256 * 2 else None
        if raw is None or int(raw.max()) > 255:
            raise DataError(f"{path} is not the 256x256 8-bit-valued MRI slice sr-cli expects")
        a = raw.reshape(256, 256).astype(np.uint8)
    elif path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            a = np.asarray(npz["data"])
    else:
        from sr_cli.data.images import open_image

        with open_image(path) as im:
            a = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    if a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    return a[:, :, :3]


def heldout_pixels(image: HeldoutImage) -> np.ndarray:
    """The image as it enters evaluation: RGB ``uint8``, sides cropped to a multiple of 12."""
    a = _read_pixels(_source_path(image))
    h, w = a.shape[:2]
    return np.ascontiguousarray(a[: h - h % MODCROP, : w - w % MODCROP])


def pixel_sha256(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def heldout_dir(root: Path | None = None, warn: Callable[[str], None] | None = None) -> Path:
    """The folder of the held-out PNGs, written on first use (atomically, image by image)."""
    from PIL import Image

    from sr_cli.serialization import atomic_write

    folder = (root or cache_root()) / "heldout"
    folder.mkdir(parents=True, exist_ok=True)
    for image in HELDOUT_IMAGES:
        target = folder / image.name
        if target.is_file():
            continue
        pixels = heldout_pixels(image)
        digest = pixel_sha256(pixels)
        if image.sha256 and digest != image.sha256:
            message = (
                f"held-out image {image.name} ({image.package} {image.module}/{image.file}) "
                f"differs from the one sr-cli was measured on (pixel SHA-256 {digest[:12]}..., "
                f"expected {image.sha256[:12]}...): figures on it are not comparable with "
                "earlier ones"
            )
            (warn or (lambda m: warnings.warn(m, stacklevel=2)))(message)
        atomic_write(target, lambda f, p=pixels: Image.fromarray(p).save(f, format="PNG"))
    return folder


def resolve_dataset(name_or_path: str) -> Path:
    """``heldout`` -> its folder; anything else is taken as a path."""
    if str(name_or_path) in HELDOUT_NAMES:
        return heldout_dir()
    return Path(name_or_path)
