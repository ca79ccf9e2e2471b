"""``sr-train``: one training run from a config (:func:`sr_cli.train.training.train`), its stages,
sweeps, cluster jobs and run folders; the Lightning pieces are in :mod:`sr_cli.train.lit`.

A feature wing: it imports the leaves (models, losses, degradations, data, metrics) and the
ground modules, never a command and never another feature.
"""
