"""Validation of :class:`~sr_cli.train.lit.module.SRModule`.

Validation logs the registry's validation metrics (paper protocol: Y channel, border crop,
rounding to the source's bit depth: 8, or 16 for 16-bit images), gathered per image across processes, so the figure is exact under DDP, and the
same metrics of bicubic upscaling of the very validation LQ, once (what the run has to beat).
Its LQ comes from the ``val_degradation`` stream, as ``sr-eval``'s does. The first
``val.save_images`` images of each set are written as LQ (bicubic) | SR | GT PNGs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sr_cli.data.images import save_image
from sr_cli.degradations.base import Degradation, DegradationNotInvertible
from sr_cli.degradations.resize import imresize
from sr_cli.metrics.aggregate import PerImageTable, image_mean
from sr_cli.metrics.registry import MetricInputs, compute_metrics, metric_names
from sr_cli.pixels import to_uint8

#: Metrics logged per validation set, as ``<set>/<metric>``: the registry's validation entries
#: (:mod:`sr_cli.metrics.registry`); ``lr_consistency_psnr`` only when the degradation replays.
VAL_METRICS = metric_names(validation=True)


def has_consistency(degradation: Degradation) -> bool:
    """Whether the degradation can replay its deterministic part (probed once, on a tiny batch,
    so every DDP rank agrees on the validation metrics it reduces)."""
    s = degradation.scale
    probe = torch.zeros(1, 3, 8 * s, 8 * s)
    try:
        degradation.replay(probe, degradation.sample(probe, torch.Generator().manual_seed(0)))
    except DegradationNotInvertible:
        return False
    return True


class Validation:
    """Validation hooks of :class:`SRModule`: metrics per image, the bicubic reference, images."""

    def _optimizer_mode(self, mode: str) -> None:
        """Schedule-free optimizers keep two weight sequences: validate with the averaged one
        (``optimizer.eval()``), train with the other (``optimizer.train()``)."""
        if self._trainer is None or not self.trainer.optimizers or self.trainer.state.fn != "fit":
            return
        for opt in self.trainer.optimizers:
            switch = getattr(opt, mode, None)
            if callable(switch) and "schedulefree" in type(opt).__module__.lower():
                switch()

    def on_validation_epoch_start(self) -> None:
        self._optimizer_mode("eval")
        self._val_sums = {
            i: PerImageTable(len(self.val_metrics), self.device) for i in range(len(self.val_names))
        }
        if not self.bicubic_reference:
            self._bicubic_sums = {
                i: PerImageTable(len(self.val_metrics), self.device)
                for i in range(len(self.val_names))
            }

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        lq, gt = batch["lq"], batch["gt"]
        sr = self(lq).float().clamp(0, 1)  # float: autocast may give bf16/fp16
        if sr.shape != gt.shape:
            raise RuntimeError(
                f"generator output {tuple(sr.shape)} does not match GT {tuple(gt.shape)}: "
                f"check that the model scale equals scale={self.scale}"
            )
        params = batch.get("degradation_params")
        replay = None
        # D(SR) vs LQ needs D's own parameters for this image (or a deterministic D).
        if self._consistency_ok and (params is not None or not self.degradation.stochastic):

            def replay(s: Tensor) -> Tensor:
                return self.degradation.replay(s, params)

        bits = int(batch["bits"][0]) if "bits" in batch else 8  # the source's depth
        inputs = MetricInputs(sr, gt, lq, self.scale, self.val_protocol, replay, bits=bits)
        self._val_sums[dataloader_idx].update(
            batch["index"], compute_metrics(self.val_metrics, inputs, self._metric_modules())
        )
        if not self.bicubic_reference:
            up = imresize(lq, size=tuple(gt.shape[-2:])).clamp(0, 1)
            ref = MetricInputs(up, gt, lq, self.scale, self.val_protocol, replay, bits=bits)
            self._bicubic_sums[dataloader_idx].update(
                batch["index"], compute_metrics(self.val_metrics, ref, self._metric_modules())
            )
        if self.image_dir is not None and int(batch["index"][0]) < self.save_images:
            self._save_triptych(lq[0], sr[0], gt[0], batch["name"][0], dataloader_idx)

    def _metric_modules(self) -> dict[str, nn.Module]:
        return {n: m.to(self.device) for n, m in self.metric_modules.items()}

    def on_validation_epoch_end(self) -> None:
        self._optimizer_mode("train")
        datasets = getattr(self.trainer, "val_dataloaders", None)
        datasets = datasets if isinstance(datasets, (list, tuple)) else [datasets]
        first = not self.bicubic_reference
        for idx, prefix in enumerate(self.val_names):
            # Per-image values gathered from every process (each rank joins, even with an
            # empty shard) and averaged in image order: the mean is exact under DDP.
            count = len(datasets[idx].dataset)
            table = self._val_sums[idx].compute(count)
            if first:
                ref = self._bicubic_sums[idx].compute(count)
                self.bicubic_reference[prefix] = {
                    key: mean
                    for k, key in enumerate(self.val_metrics)
                    if (mean := image_mean(ref[:, k])) is not None
                }
            for k, key in enumerate(self.val_metrics):
                mean = image_mean(table[:, k])
                if mean is None:
                    continue
                self.log(
                    f"{prefix}/{key}",
                    torch.tensor(mean, dtype=torch.float32),
                    prog_bar=key == "psnr_y",
                    add_dataloader_idx=False,
                    sync_dist=False,
                )
            for key, mean in self.bicubic_reference.get(prefix, {}).items():
                self.log(
                    f"{prefix}/bicubic_{key}",
                    torch.tensor(mean, dtype=torch.float32),
                    add_dataloader_idx=False,
                    sync_dist=False,
                )

    def _save_triptych(
        self, lq: Tensor, sr: Tensor, gt: Tensor, name: str, dataloader_idx: int
    ) -> None:
        up = imresize(lq.unsqueeze(0), size=tuple(gt.shape[-2:]))[0].clamp(0, 1)
        row = torch.cat([up, sr, gt], dim=-1)
        prefix = self.val_names[dataloader_idx].replace("/", "_")
        path = self.image_dir / prefix / f"{name}_iter{self.iteration:07d}.png"
        save_image(to_uint8(row), path)
        for logger in self.loggers:
            log_image = getattr(logger, "log_image", None)
            if callable(log_image):
                log_image(
                    key=f"{prefix}/{name}",
                    images=[str(path)],
                    caption=["LQ (bicubic) | SR | GT"],
                    step=self._logger_step(),
                )

    def _logger_step(self) -> int:
        """The step Lightning gives this iteration's logged metrics (train and validation alike),
        so images land on the same step as the numbers."""
        loop = getattr(self.trainer.fit_loop, "epoch_loop", None)
        return int(getattr(loop, "_batches_that_stepped", max(self.iteration - 1, 0)))
