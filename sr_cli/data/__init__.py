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


#: Generator weights shipped with the repo (``make pretrain-demo`` rebuilds them).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Warm starts of ``experiment=demo``, by (model name, preset, scale).
DEMO_WEIGHTS = {("esrgan", "small", 4): "esrgan_small_x4_l1.safetensors"}


def demo_weights(model: str, preset: str, scale: int) -> str | None:
    """The bundled L1-pretrained generator for ``model``/``preset``/``scale``, or ``None``.

    Used by ``${sr_demo_weights:...}`` in ``conf/experiment/demo.yaml``: the demo fine-tunes a
    PSNR-oriented generator with its GAN mix (as ESRGAN does) where one ships, and trains from
    scratch otherwise.
    """
    name = DEMO_WEIGHTS.get((str(model), str(preset), int(scale)))
    if name is None or not (WEIGHTS_DIR / name).is_file():
        return None
    return str(WEIGHTS_DIR / name)
