"""The Lightning pieces of ``sr-train``: the :class:`~sr_cli.train.lit.module.SRModule` (its core in
``module.py``; the objective, plain step and NaN guard in ``generator_step.py``, the GAN step in
``gan_step.py``, validation in ``validation.py``), the datamodule, the callbacks that keep a run's
work safe, the checkpoint and the progress bar. They use models, losses, degradations, metrics
and data."""
