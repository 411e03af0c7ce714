"""Paths from the wire, confined to a root: nothing another host sends can name a file outside
the folder this host configured for transfers.

A wire path is relative, POSIX (``/`` separated), and made of plain names: no empty part, no
``.`` or ``..``, no backslash, no NUL or other control character, no part starting with the
staging folder's name. On disk a confined path must also stay inside the root after symlinks
are resolved (a symlink inside the root that points out is refused): the check is
:func:`nol_ros.workspace.confine`, the one every path from a request goes through.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from nol_ros.errors import InputError
from nol_ros.workspace import BadPathError, confine

STAGING = ".nol_transfer"      # the inbox's staging folder under the root; never a source or
#                                a destination
MAX_PATH_CHARS = 4096


class PathError(InputError):
    """A path from a request or a manifest is not a plain relative path inside the root."""

    code = "BAD_PATH"


def wire_path(rel: str, what: str = "path") -> PurePosixPath:
    """Check a relative path received from another host; returns it as a PurePosixPath.
    Raises PathError naming what is wrong with it."""
    if not isinstance(rel, str) or not rel:
        raise PathError(f"{what} is empty; give a folder relative to the transfer root")
    if len(rel) > MAX_PATH_CHARS:
        raise PathError(f"{what} has {len(rel)} characters (at most {MAX_PATH_CHARS})")
    bad = [c for c in rel if ord(c) < 32 or c in "\\\x7f"]
    if bad:
        raise PathError(f"{what} {rel!r} contains control characters or backslashes; use "
                        "plain names separated by '/'")
    if rel.startswith("/"):
        raise PathError(f"{what} '{rel}' is absolute; give it relative to the transfer root")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise PathError(f"{what} '{rel}' has an empty, '.' or '..' part; it must name a place "
                        "inside the transfer root with plain names")
    if parts[0] == STAGING:
        raise PathError(f"{what} '{rel}' is inside the staging folder {STAGING}/, which is not "
                        "transferable")
    return PurePosixPath(rel)


def confined(root: str | os.PathLike, rel: str | PurePosixPath, what: str = "path") -> Path:
    """``root / rel`` for a checked wire path, refused when it (or a parent, through a
    symlink) leads outside ``root``. The path need not exist."""
    r = Path(os.path.realpath(root))
    p = wire_path(str(rel), what)
    out = r.joinpath(*p.parts)
    try:
        confine(r, out, what)        # symlinks resolved as far as the path exists
    except BadPathError:
        raise PathError(f"{what} '{rel}' leads outside the transfer root {r} (through a "
                        "symbolic link); transfers stay inside their root") from None
    return out


def local_path(root: str | os.PathLike, path: str, what: str = "path") -> Path:
    """A path this host's own user gave (relative to ``root`` or absolute), confined to root.
    Absolute paths are accepted when they lie inside the root."""
    r = Path(os.path.realpath(root))
    if path.startswith("/"):
        try:
            real = confine(r, path, what)
        except BadPathError:
            raise PathError(f"{what} '{path}' is outside the transfer root {r}; move it there "
                            "or configure the root") from None
        if real == r:
            raise PathError(f"{what} '{path}' is the transfer root itself; name a folder in it")
        path = real.relative_to(r).as_posix()
    return confined(r, path, what)
