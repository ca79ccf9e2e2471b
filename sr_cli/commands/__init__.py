"""The console entry points (``sr-train``, ``sr-eval``, ...), one module each.

A command parses its arguments, calls one feature (:mod:`sr_cli.train`, :mod:`sr_cli.evaluate`,
:mod:`sr_cli.report`, :mod:`sr_cli.rate`, :mod:`sr_cli.study`) and prints; it never imports
another command, and nothing outside this package imports one.
"""
