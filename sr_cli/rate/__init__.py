"""``sr-rate``: blind mean-opinion-score sessions for SR runs, and their aggregation.

* :mod:`~sr_cli.rate.crops` loads the runs, makes the LQ as ``sr-eval`` does, super-resolves
  the image set and picks the regions to rate (where the runs differ most, plus random ones).
* :mod:`~sr_cli.rate.db` keeps sessions, items, raters and votes in a SQL database
  (SQLAlchemy; SQLite by default), one transaction per vote.
* :mod:`~sr_cli.rate.session` prepares (or resumes) a session from the runs and writes its crops,
  and finds it again for the results.
* :mod:`~sr_cli.rate.app` is the session being rated (items, sides, votes, who may vote, the
  admin view); :mod:`~sr_cli.rate.invites` makes invite and admin links (tokens stored hashed).
* :mod:`~sr_cli.rate.server` serves the rating and admin pages (WSGI on waitress).
* :mod:`~sr_cli.rate.aggregate` fits a Bradley-Terry model to pairwise votes (or averages the
  1-5 ratings), with bootstrap intervals, the win matrix and the agreement between raters.
* :mod:`~sr_cli.commands.rate` is the ``sr-rate`` console script.

A feature wing: it uses :mod:`sr_cli.evaluate` (the runs' generators and the LQ of ``sr-eval``)
and nothing of :mod:`sr_cli.train`.

The mean opinion score is the reference measure of perceptual quality in the SR literature
(e.g. Ledig et al., CVPR 2017, SRGAN; Wang et al., "Deep Learning for Image Super-resolution:
A Survey", TPAMI 2020, Sec. 2.3.3); pairwise comparison with a Bradley-Terry fit is the
standard way to turn paired preferences into a scale (Bradley & Terry, Biometrika 1952).
"""
