"""TensorBoard for ``logger=tensorboard``, fed what wandb gets (``conf/logger/tensorboard.yaml``).

Lightning's :class:`~pytorch_lightning.loggers.TensorBoardLogger` already writes every scalar the
run logs (``train/loss_*``, ``val/psnr_y``, ...), at the same steps as ``metrics.csv``. This
subclass adds the rest of what sr-train gives wandb:

* the validation images (LQ upscaled | SR | GT), through the ``log_image`` call validation makes
  on every logger that has one, at the step of that validation's numbers;
* the hyper-parameters (the resolved config and the provenance record) in the HParams dashboard,
  listed against ``hparam_metrics`` (their values are the scalars of the same names), without the
  placeholder ``hp_metric`` Lightning would log;
* the best value of the checkpoint's monitored metric as ``best/<metric>`` when training ends
  (:func:`sr_cli.train.rundir.finish_loggers`), wandb's ``define_metric(summary=max)``.

The event files go to ``<run folder>/tensorboard/``: ``tensorboard --logdir outputs`` (or a sweep
folder) compares runs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pytorch_lightning.loggers import TensorBoardLogger as _TensorBoardLogger
from pytorch_lightning.utilities import rank_zero_only


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"model/generator/scale": 4, ...}``: nested mappings joined with ``/``; values that
    TensorBoard cannot hold as hyper-parameters (lists, ``None``, ...) become text."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flat_params(value, f"{name}/"))
        elif isinstance(value, bool | int | float | str):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def read_image(image: Any) -> np.ndarray:
    """An HWC uint8 array from a path or an array (HWC, or CHW with 1-4 channels)."""
    if isinstance(image, str | Path):
        from PIL import Image

        with Image.open(image) as im:
            return np.asarray(im.convert("RGB"))
    array = np.asarray(image.detach().cpu() if hasattr(image, "detach") else image)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return array


class TensorBoardLogger(_TensorBoardLogger):
    """Lightning's TensorBoard logger with validation images and an HParams entry.

    Args:
        save_dir: the run folder.
        name: the subfolder of the event files (``tensorboard``).
        hparam_metrics: the scalars the HParams dashboard lists next to the hyper-parameters.
        **kwargs: passed to Lightning's logger (and on to ``SummaryWriter``).
    """

    def __init__(
        self,
        save_dir: str | Path,
        name: str = "tensorboard",
        version: int | str | None = "",
        hparam_metrics: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("default_hp_metric", False)
        super().__init__(save_dir=str(save_dir), name=name, version=version, **kwargs)
        self.hparam_metrics = [str(m) for m in hparam_metrics]

    @rank_zero_only
    def log_hyperparams(self, params: Any, metrics: Any = None, step: int | None = None) -> None:
        super().log_hyperparams(params, metrics, step)  # hparams.yaml beside the event files
        if metrics is not None or not self.hparam_metrics:
            return
        from omegaconf import DictConfig, OmegaConf
        from torch.utils.tensorboard.summary import hparams

        if isinstance(params, DictConfig):
            params = OmegaConf.to_container(params, resolve=True)
        flat = flat_params(params if isinstance(params, Mapping) else vars(params))
        # The metric values are the scalars of these names: no value is written here.
        experiment, start, end = hparams(flat, {m: 0.0 for m in self.hparam_metrics})
        writer = self.experiment._get_file_writer()
        for summary in (experiment, start, end):
            writer.add_summary(summary)

    @rank_zero_only
    def log_image(
        self,
        key: str,
        images: Sequence[Any],
        step: int | None = None,
        caption: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        """Images under ``key`` (``key/<i>`` for several), as ``WandbLogger.log_image`` takes
        them: file paths or arrays. TensorBoard has no captions; the tag names the image."""
        for i, image in enumerate(images):
            tag = key if len(images) == 1 else f"{key}/{i}"
            self.experiment.add_image(tag, read_image(image), global_step=step, dataformats="HWC")
        self.experiment.flush()

    @rank_zero_only
    def log_best(self, metric: str, value: float, step: int) -> None:
        """``best/<metric>``: the best value the run reached, at the step it was logged."""
        self.experiment.add_scalar(f"best/{metric}", float(value), global_step=int(step))
        self.experiment.flush()
