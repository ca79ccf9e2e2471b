"""sr-cli's Optuna sweeper where Hydra looks for plugins: Hydra instantiates a sweeper only when its
class lives under the ``hydra_plugins`` namespace. The code is :mod:`sr_cli.train.optuna_sweeper`;
``conf/hydra/sweeper/sr_optuna.yaml`` names this class."""

from sr_cli.train.optuna_sweeper import OptunaSweeper as _OptunaSweeper


class OptunaSweeper(_OptunaSweeper):
    """:class:`sr_cli.train.optuna_sweeper.OptunaSweeper`, registered as a Hydra plugin."""
