"""``python -m lightning_ganeval``: the command line (see :mod:`lightning_ganeval.cli`)."""

from lightning_ganeval.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
