"""Console entry points.

``sr-train`` accepts every Hydra override, plus the shorthand ``loss=a+b`` for selecting several
loss terms (rewritten to Hydra's ``loss=[a,b]``, also inside sweeps: ``-m loss=l1,a+b``).
User errors (bad option, bad file, diverged loss) print one clear message and exit with 2.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from sr_cli.config import config_dir, register_resolvers, rewrite_overrides, unknown_list_members
from sr_cli.errors import exit_on_user_error

log = logging.getLogger("sr_cli")


def _is_multirun() -> bool:
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except Exception:
        return False


@hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")
def _train_task(cfg: DictConfig) -> float | None:
    from sr_cli.train import run

    if _is_multirun():  # a failed job must fail the sweep, with its traceback
        metrics, _ = run(cfg)
    else:
        with exit_on_user_error("sr-train"):
            metrics, _ = run(cfg)
    return metrics.get(cfg.get("optimized_metric", "val/psnr_y"))


def train_main() -> None:
    """``sr-train [overrides...]``: train a model (see ``conf/train.yaml``)."""
    register_resolvers()
    args = rewrite_overrides(sys.argv[1:])
    problem = unknown_list_members(args)
    if problem:
        print(problem, file=sys.stderr)
        sys.exit(1)
    sys.argv = [sys.argv[0], *args]
    _train_task()


if __name__ == "__main__":  # python -m sr_cli.cli
    train_main()
