"""Subcommands of ``nol-ros`` (see :mod:`nol_ros.cli`): one module per command group, each with
``register(subparsers)``; modules whose name starts with ``_`` are helpers."""
