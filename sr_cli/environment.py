"""The process every command runs in: wandb never prompts, and start-up stays quiet.

* :func:`setup_environment`: wandb offline unless the user configured it, never an interactive
  login prompt (``sr-train``, ``sr-eval``, ``sr-rate --results``, ``sr-study``).
* :func:`quiet_startup`: no start-up lines that carry no information for the user (Lightning's
  hardware banner and tips, dependency deprecation warnings); warnings about the user's own
  inputs stay (``sr-train``, ``sr-study``).

A ground module: the standard library only.
"""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

log = logging.getLogger(__name__)


def setup_environment() -> None:
    """wandb offline unless the user configured it, and never an interactive login prompt."""
    os.environ.setdefault("WANDB_MODE", "offline")
    os.environ.setdefault("WANDB_SILENT", "true")
    os.environ.setdefault("WANDB_CONSOLE", "off")
    if os.environ["WANDB_MODE"] not in ("offline", "disabled") and not os.environ.get(
        "WANDB_API_KEY"
    ):
        netrc = Path.home() / ".netrc"
        if not (netrc.is_file() and "api.wandb.ai" in netrc.read_text(errors="ignore")):
            log.warning(
                "WANDB_MODE=%s but no wandb credentials found; logging offline",
                os.environ["WANDB_MODE"],
            )
            os.environ["WANDB_MODE"] = "offline"


def quiet_startup() -> None:
    """Silence start-up lines that carry no information for sr-train users (Lightning's
    hardware banner and tips, dependency deprecation warnings); warnings about the user's own
    inputs stay."""
    for name in (
        "pytorch_lightning.utilities.rank_zero",
        "lightning.pytorch.utilities.rank_zero",
        "lightning_fabric.utilities.rank_zero",
        "pytorch_lightning.accelerators.cuda",
        "lightning_fabric.utilities.seed",
        "pytorch_lightning.trainer.connectors.checkpoint_connector",
    ):
        logging.getLogger(name).setLevel(logging.WARNING)
    for module in (
        "torch",
        "torchvision",
        "kornia",
        "piq",
        "wandb",
        "lightning_utilities",
        "pytorch_lightning",
        "lightning_fabric",
        "hydra",
        "omegaconf",
        "pkg_resources",
        "pydantic",
        "google",
        "sentry_sdk",
    ):
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=module)
        warnings.filterwarnings("ignore", category=FutureWarning, module=module)
    warnings.filterwarnings("ignore", message=r".*litlogger.*")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # sr-cli's own design, not the user's input: epochs are data.iters_per_epoch iterations (the
    # bar and the validation lines report progress), and LQ is made in on_after_batch_transfer.
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    warnings.filterwarnings("ignore", message=r".*overridden `on_after_batch_transfer`.*")
    warnings.filterwarnings("ignore", message=r".*`isinstance\(treespec, LeafSpec\)`.*")
