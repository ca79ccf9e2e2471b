"""Orchestration shared by the commands: training runs, run directories, stages, inference,
tiling, generator comparison and the Lightning pieces (:mod:`sr_cli.engine.lit`).

The engine imports the leaves (models, losses, degradations, data, metrics, config, errors, ...),
never a command.
"""
