"""sr-cli: a command-line experiment runner for single-image super-resolution."""

#: The one place the version is written (setup.cfg reads it: ``version = attr: sr_cli.__version__``).
__version__ = "0.1.0"
