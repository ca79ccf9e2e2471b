"""``sr-eval [overrides...]``: evaluate checkpoints on benchmark sets (see ``conf/eval.yaml``).

The evaluation itself is :func:`sr_cli.evaluate.evaluation.evaluate`.
"""

from __future__ import annotations

from omegaconf import DictConfig

from sr_cli.config import config_dir, register_resolvers
from sr_cli.errors import exit_on_hydra_user_error, exit_on_user_error
from sr_cli.evaluate.evaluation import evaluate


# ---------------------------------------------------------------------------- CLI
def _run(cfg: DictConfig) -> None:
    with exit_on_user_error("sr-eval"):
        evaluate(cfg)


def main() -> None:
    """``sr-eval [overrides...]``: evaluate checkpoints (see ``conf/eval.yaml``)."""
    import hydra

    register_resolvers()
    task = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")(_run)
    with exit_on_hydra_user_error():
        task()


if __name__ == "__main__":  # python -m sr_cli.commands.eval
    main()
