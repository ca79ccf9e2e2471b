"""``sr-report``: one self-contained HTML page comparing training runs.

:mod:`~sr_cli.report.page` builds the page (:func:`~sr_cli.report.page.build_report`) from the
runs of :mod:`~sr_cli.report.runs` and the pictures of :mod:`~sr_cli.report.figures`. A feature
wing: it compares the runs with :mod:`sr_cli.evaluate` and shows sr-rate's mean opinion scores
(:mod:`sr_cli.rate`).
"""
