"""The study sweeper as a Hydra plugin (Hydra instantiates sweepers only from ``hydra_plugins``).

The implementation is :class:`sr_cli.study.sweeper.StudySweeper`; this subclass only gives it
the module path Hydra requires.
"""

from __future__ import annotations

from sr_cli.study.sweeper import StudySweeper as _StudySweeper


class StudySweeper(_StudySweeper):
    """sr-study's sweeper (see :mod:`sr_cli.study.sweeper`)."""
