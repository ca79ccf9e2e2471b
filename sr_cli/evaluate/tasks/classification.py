"""``sr-eval task=classification data=<folder>``: ImageNet classification of HR, bicubic and SR.

The set is a folder with one subfolder per class, as torchvision's ``ImageFolder``: each
subfolder is named after the class, either its ImageNet index (``0`` to ``999``) or its category
name as torchvision lists it (``tench``, ``goldfish``; case and ``_`` for spaces do not matter).

The classifier is a torchvision model (``task_options.classifier``, default ``resnet50``) with
the weights ``task_options.weights`` (default ``IMAGENET1K_V2``, file ``resnet50-11ad3fa6.pth``;
``IMAGENET1K_V1`` is ``resnet50-0676ba61.pth``) read from the torch hub cache
(``$TORCH_HOME/hub/checkpoints``) with ``weights_only=True``; nothing is downloaded. Each version
of an image is rounded to 8 bits (as a saved PNG) and goes through the weights' own
preprocessing (resize, centre crop 224, ImageNet normalisation). Measures: top-1 and top-5
accuracy.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from sr_cli.errors import CheckpointError, ConfigError, DataError, WeightsUnavailableError
from sr_cli.evaluate.tasks import LabelledImage, Task

DEFAULTS = {"classifier": "resnet50", "weights": "IMAGENET1K_V2"}
#: The second measure: top-k accuracy.
TOP_K = 5


def _option(options: dict, key: str):
    return options.get(key, DEFAULTS[key])


def _weights(options: dict):
    """torchvision's weights enum entry for the classifier and weights named in the options."""
    import torchvision

    arch, name = str(_option(options, "classifier")), str(_option(options, "weights"))
    try:
        enum = torchvision.models.get_model_weights(arch)
    except ValueError as exc:
        raise ConfigError(
            f"task_options.classifier={arch!r} is not a torchvision classification model "
            "(e.g. resnet50, resnet18, convnext_tiny)"
        ) from exc
    if name not in enum.__members__:
        raise ConfigError(
            f"task_options.weights={name!r}: {arch} has {', '.join(enum.__members__)}"
        )
    return arch, enum[name]


def weights_path(options: dict) -> Path:
    """Where the classifier's weights must be: ``<torch.hub.get_dir()>/checkpoints/<file>``."""
    _, weights = _weights(options)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def class_index(folder_name: str, categories: list[str]) -> int:
    """The ImageNet index a class folder stands for (its number or its category name)."""
    if folder_name.isdigit() and int(folder_name) < len(categories):
        return int(folder_name)
    wanted = folder_name.replace("_", " ").strip().lower()
    for i, category in enumerate(categories):
        if category.lower() == wanted:
            return i
    raise DataError(
        f"class folder {folder_name!r} is neither an index (0-{len(categories) - 1}) nor one of the "
        f"classifier's categories (e.g. {', '.join(categories[:3])}); rename it."
    )


def list_items(folder: str, options: dict) -> list[LabelledImage]:
    from sr_cli.data.images import list_images

    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"data={str(root)!r} is not a folder; pass a labelled image folder")
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if not classes:
        raise DataError(
            f"data={str(root)!r} has no class subfolders; put each class's images in a subfolder "
            "named after the class (as torchvision's ImageFolder)"
        )
    _, weights = _weights(options)
    categories = list(weights.meta["categories"])
    items = []
    for sub in classes:
        label = class_index(sub.name, categories)
        for path in list_images(sub, f"class folder {sub.name!r}"):
            items.append(LabelledImage(path, label, f"{sub.name}/{path.stem}"))
    return items


class Classifier:
    """A torchvision classifier with its preprocessing, in eval mode."""

    def __init__(self, model: torch.nn.Module, transform) -> None:
        self.model = model.eval().requires_grad_(False)
        self.transform = transform

    @torch.no_grad()
    def logits(self, images: Tensor) -> Tensor:
        from sr_cli.pixels import to_levels

        x = to_levels(images.float(), 8) / 255.0  # as saved to PNG
        return self.model(self.transform(x))


def build(options: dict) -> Classifier:
    import torchvision

    arch, weights = _weights(options)
    path = weights_path(options)
    if not path.is_file():
        raise WeightsUnavailableError(
            f"task=classification needs {arch} {weights.name} weights: {path.name} is not in "
            f"{path.parent}. Nothing is downloaded: fetch {weights.url} on a machine with "
            f"internet access and copy it to {path} (or set TORCH_HOME to a cache that has it)."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model = torchvision.models.get_model(arch, weights=None)
        model.load_state_dict(state)
    except Exception as exc:
        raise CheckpointError(
            f"{path} is not a {arch} state dict ({str(exc).splitlines()[0]}); replace it with "
            f"{weights.url}"
        ) from exc
    return Classifier(model, weights.transforms())


def score(classifier: Classifier, images: Tensor, labels: list[Any]) -> dict[str, Tensor]:
    logits = classifier.logits(images)
    target = torch.tensor(labels, dtype=torch.long)
    top = logits.topk(min(TOP_K, logits.shape[1]), dim=1).indices
    return {
        "top1": (top[:, 0] == target).double(),
        f"top{TOP_K}": (top == target[:, None]).any(1).double(),
    }


def describe(options: dict) -> str:
    arch, weights = _weights(options)
    return (
        f"Classifier: torchvision {arch} ({weights.name}, {os.path.basename(weights.url)}), "
        "8-bit images, the weights' own preprocessing."
    )


TASK = Task("classification", ("top1", f"top{TOP_K}"), list_items, build, score, describe)
