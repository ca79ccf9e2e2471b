"""Data: image decoding, HR datasets and the bundled sample images."""

from pathlib import Path

#: Bundled, license-clean natural images (see ``samples/LICENSES.md``): 9 for training, 3 for validation.
SAMPLES_DIR = Path(__file__).resolve().parent / "samples"


def sample_dir(split: str) -> str:
    """Absolute path of a bundled split (``train`` or ``val``); used by the ``${sr_samples:...}`` resolver."""
    path = SAMPLES_DIR / split
    if not path.is_dir():
        raise ValueError(f"no bundled sample split {split!r}; choose 'train' or 'val'")
    return str(path)
