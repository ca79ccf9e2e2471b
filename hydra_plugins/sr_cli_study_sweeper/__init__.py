"""Hydra discovers plugins in the ``hydra_plugins`` namespace: this registers sr-study's sweeper."""
