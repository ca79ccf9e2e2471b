"""``sr-study``: re-run the claim behind an idea and say whether it held.

:mod:`~sr_cli.study.runner` trains the study's runs, evaluates them and writes the results;
:mod:`~sr_cli.study.criteria` judges the declared criteria. The top feature wing: it uses
:mod:`sr_cli.evaluate` and :mod:`sr_cli.report` (and runs ``sr-train`` as a subprocess).
"""
