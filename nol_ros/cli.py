"""The ``nol-ros`` command line: one subcommand per task, one module per command group.

Every module in :mod:`nol_ros.commands` (names not starting with ``_``) that defines
``register(subparsers)`` adds its subcommands, so a new group (learn, render, train-detector,
...) is a new file there and nothing else changes. ``nol-ros COMMAND --help`` shows each
command with an example. Arguments after ``--ros-args`` go to ROS (remapping, parameters).

Exit codes of every subcommand (for scripts): 0 ok; 1 failed while running (a node died, a job
failed); 2 bad arguments or input, with a message naming the problem; 130 interrupted before
finishing where finishing matters (long-running commands stopped with Ctrl-C return 0).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import nol_ros.commands as pkg
from nol_ros import __version__
from nol_ros.commands._common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, split_ros_args
from nol_ros.errors import ConfigError, InputError, NolError


def command_modules() -> list:
    """The command-group modules, ordered by their ``ORDER`` (then name)."""
    mods = []
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name.startswith("_"):
            continue
        mod = importlib.import_module(f"nol_ros.commands.{info.name}")
        if hasattr(mod, "register"):
            mods.append(mod)
    return sorted(mods, key=lambda m: (getattr(m, "ORDER", 100), m.__name__))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nol-ros", description="nol_ros command line: learn an object from a bag or a "
        "dataset folder, render its training set, train and evaluate the recognisers (offline, "
        "no ROS graph needed); bring the ROS graph up, replay and record bags.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 ok, 1 failed while running, 2 bad arguments or input\n"
               "run 'nol-ros COMMAND --help' for a command's options and an example")
    parser.add_argument("--version", action="version", version=f"nol_ros {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for mod in command_modules():
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    argv, ros_args = split_ros_args(argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 0 for --help/--version, 2 for bad arguments
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_OK if not argv else EXIT_USAGE
    args.ros_args = ros_args
    try:
        return int(args.func(args) or 0)
    except (InputError, ConfigError) as e:
        print(f"nol-ros {args.command}: error [{e.code}]: {e}", file=sys.stderr)
        return EXIT_USAGE
    except NolError as e:
        print(f"nol-ros {args.command}: failed [{e.code}]: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:  # the disk, permissions, a file that vanished: one line, no traceback
        where = f" '{e.filename}'" if getattr(e, "filename", None) else ""
        print(f"nol-ros {args.command}: failed [OS_ERROR]: {e.strerror or e}{where}; check the "
              "path, its permissions and the free disk space", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print(f"nol-ros {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
