"""The console entry points (``sr-train``, ``sr-eval``, ...), one module each.

A command parses its arguments and calls into :mod:`sr_cli.engine` and the leaf packages; it
never imports another command.
"""
