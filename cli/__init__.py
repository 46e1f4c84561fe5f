"""The ``robustlab`` command line (typer): :mod:`cli.main`."""
