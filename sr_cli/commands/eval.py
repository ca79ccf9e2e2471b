"""``sr-eval [overrides...]``: evaluate checkpoints on benchmark sets (see ``conf/eval.yaml``).

The evaluation itself is :func:`sr_cli.evaluate.evaluation.evaluate`.
"""

from __future__ import annotations

import sys
from pathlib import Path

from omegaconf import DictConfig

from sr_cli.config import config_dir, register_resolvers
from sr_cli.errors import exit_on_hydra_user_error, exit_on_user_error
from sr_cli.evaluate.evaluation import evaluate


# ---------------------------------------------------------------------------- CLI
def _run(cfg: DictConfig) -> None:
    with exit_on_user_error("sr-eval"):
        if cfg.get("task"):
            from sr_cli.evaluate.task_evaluation import run_task

            run_task(cfg)
            return
        results, objects = evaluate(cfg)
        if objects["plane"] and objects["is_global_zero"]:
            write_planes(results, objects["output_dir"])


def write_planes(results, output_dir: Path) -> list[Path]:
    """The perception-distortion plane of every dataset beside results.md, linked from it."""
    from sr_cli.report.plane import comparison_planes
    from sr_cli.serialization import atomic_write_text

    pngs = comparison_planes(results, output_dir)
    if pngs:
        md = Path(output_dir) / "results.md"
        lines = ["## Perception-distortion plane", ""]
        lines += [f"![{p.stem}]({p.name}) (points: [{p.stem}.csv]({p.stem}.csv))" for p in pngs]
        atomic_write_text(md, md.read_text() + "\n".join(lines) + "\n")
        for p in pngs:
            print(f"sr-eval: perception-distortion plane {p} (points: {p.with_suffix('.csv')})")
    return pngs


def rewrite_task_data(args: list[str]) -> list[str]:
    """``data=<folder>`` (task-based evaluation's labelled set) -> ``task_data=<folder>``:
    ``data`` is also the name of sr-train's config group, which Hydra would look up."""
    return ["task_data=" + a[len("data=") :] if a.startswith("data=") else a for a in args]


def main() -> None:
    """``sr-eval [overrides...]``: evaluate checkpoints (see ``conf/eval.yaml``)."""
    import hydra

    register_resolvers()
    sys.argv = [sys.argv[0], *rewrite_task_data(sys.argv[1:])]
    task = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="eval")(_run)
    with exit_on_hydra_user_error():
        task()


if __name__ == "__main__":  # python -m sr_cli.commands.eval
    main()
