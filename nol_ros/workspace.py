"""The on-disk layout of learnt objects, and the one place that builds paths under a root.

A workspace root (the nol node's ``learn.workspace_root``, the trainer's ``train.workspace_root``)
holds::

    ROOT/.nol_lock                 file lock for id allocation and index updates
    ROOT/object_ids.json           name -> BOP object id, assigned once per name (first = 1)
    ROOT/NAME/                     one learnt object (:class:`LearntObject`): a self-annotation run
        report.json report.png trajectory.json scene_mesh.ply
        sequence/                  the frames it was learnt from (BOP scene)
        objects/NAME/              its files (:class:`ObjectFiles`): mesh.ply object.json
                                   frames.json views.json views/ masks/
        renders/                   its training set (render_set.json, render_report.json, OBJ_ID/)
    ROOT/_live_buffer/             the reconstruction node's buffer, exported for LearnObject
    ROOT/_training/KEY/            recogniser training of one object set and preset
    ROOT/_models/                  the models folder the recognizer loads

A self-annotation run on its own (``run_self_annotation`` over several objects of one sequence,
:class:`AnnotationFiles`) has the same files, with one ``objects/NAME/`` per object.

Confinement: names from requests must pass :func:`safe_name` (letters, digits, ``_ . -``, not
starting with a dot: never ``..``, ``/`` or empty), and any path built from outside input goes
through :func:`confine`, which resolves symlinks and refuses whatever lands outside the root --
with the same message whether the path is outside or missing, so a reply reveals nothing about
the file system outside the root.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from nol_ros.errors import FileFormatError, InputError
from nol_ros.io_utils import atomic_write_json

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}")
LOCK_FILE = ".nol_lock"
OBJECT_IDS_FILE = "object_ids.json"
LIVE_BUFFER_DIR, TRAINING_DIR, MODELS_DIR = "_live_buffer", "_training", "_models"
RESERVED = (LIVE_BUFFER_DIR, TRAINING_DIR, MODELS_DIR)
RENDER_SET_FILE = "render_set.json"   # the index of a render set folder (recognition.trainset)


class BadPathError(InputError):
    """A name or path from a request, parameter or file leaves its root or is not allowed."""

    code = "BAD_PATH"


def safe_name(name: str, what: str = "object name") -> str:
    """``name`` if it is a safe single path component, else BadPathError with the rule."""
    if not isinstance(name, str) or not _SAFE.fullmatch(name) or ".." in name:
        raise BadPathError(f"{what} {name!r} is not allowed: use 1-64 letters, digits, '_', '.' "
                           "or '-', starting with a letter or digit (no '/', no '..')")
    return name


def confine(root: str | Path, path: str | Path, what: str = "path",
            must_exist: bool = False) -> Path:
    """``path`` (relative to ``root``, or absolute) resolved with symlinks followed; BadPathError
    unless it lies inside ``root`` (resolved) -- and, with ``must_exist``, exists. The message is
    the same for "outside the root" and "does not exist"."""
    r = Path(root).expanduser().resolve()
    if "\x00" in str(path):
        raise BadPathError(f"{what} {str(path)!r} contains a NUL byte; give a plain path")
    try:
        p = Path(path).expanduser()
    except RuntimeError:        # '~someone' with no such user: an ordinary (relative) name
        p = Path(path)
    full = (p if p.is_absolute() else r / p).resolve()
    inside = full == r or r in full.parents
    if not inside or (must_exist and not full.exists()):
        raise BadPathError(f"{what} '{path}' is not an existing path under {r}" if must_exist
                           else f"{what} '{path}' is not under {r}; give a path inside it")
    return full


@dataclass(frozen=True)
class ObjectFiles:
    """One object's files in a self-annotation run: ``RUN/objects/NAME/``."""

    dir: Path

    @property
    def name(self) -> str:
        return self.dir.name

    mesh = property(lambda self: self.dir / "mesh.ply")
    object_json = property(lambda self: self.dir / "object.json")
    frames_json = property(lambda self: self.dir / "frames.json")
    views_json = property(lambda self: self.dir / "views.json")
    views_dir = property(lambda self: self.dir / "views")
    masks_dir = property(lambda self: self.dir / "masks")

    def mask(self, frame: int) -> Path:
        return self.masks_dir / f"{int(frame):06d}.png"

    def view(self, frame: int, kind: str) -> Path:
        """A selected view's crop: kind rgb | mask | depth."""
        if kind not in ("rgb", "mask", "depth"):
            raise ValueError(f"view kind {kind!r}")
        return self.views_dir / f"{int(frame):06d}_{kind}.png"

    @property
    def learnt(self) -> bool:
        """Self-annotated with selected views (what a renderer needs)."""
        return self.views_json.is_file()

    def read_object(self) -> dict:
        return _read_json(self.object_json, "the object's registration")


@dataclass(frozen=True)
class AnnotationFiles:
    """One self-annotation run (one sequence, one or more objects)."""

    dir: Path

    report = property(lambda self: self.dir / "report.json")
    report_png = property(lambda self: self.dir / "report.png")
    trajectory = property(lambda self: self.dir / "trajectory.json")
    scene_mesh = property(lambda self: self.dir / "scene_mesh.ply")
    sequence = property(lambda self: self.dir / "sequence")
    objects_dir = property(lambda self: self.dir / "objects")

    def object(self, name: str) -> ObjectFiles:
        return ObjectFiles(self.objects_dir / safe_name(name))

    def object_names(self) -> list[str]:
        d = self.objects_dir
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    def read_report(self) -> dict:
        return _read_json(self.report, "the self-annotation report")


@dataclass(frozen=True)
class LearntObject(AnnotationFiles):
    """``ROOT/NAME``: the self-annotation of object NAME and its rendered training set."""

    @property
    def name(self) -> str:
        return self.dir.name

    @property
    def files(self) -> ObjectFiles:
        return self.object(self.name)

    renders = property(lambda self: self.dir / "renders")
    renders_tmp = property(lambda self: self.dir / "renders.tmp")
    renders_old = property(lambda self: self.dir / "renders.old")
    render_set_json = property(lambda self: self.dir / "renders" / RENDER_SET_FILE)
    render_report = property(lambda self: self.dir / "renders" / "render_report.json")

    def render_scene(self, obj_id: int) -> Path:
        """The BOP scene of the rendered training set."""
        return self.renders / f"{int(obj_id):06d}"

    @property
    def rendered(self) -> bool:
        return self.files.object_json.is_file() and self.render_set_json.is_file()


class Workspace:
    """A workspace root of learnt objects (see the module doc)."""

    def __init__(self, root: str | Path):
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"Workspace('{self.root}')"

    # -- layout ------------------------------------------------------------------------------
    def learnt(self, name: str) -> LearntObject:
        """``ROOT/NAME`` (the name checked: it comes from requests)."""
        if safe_name(name) in RESERVED:
            raise BadPathError(f"object name '{name}' is reserved; choose another")
        return LearntObject(self.root / name)

    def names(self, rendered: bool = False) -> list[str]:
        """Learnt objects: folders with a self-annotation of their own object (and, with
        ``rendered``, a training set)."""
        if not self.root.is_dir():
            return []
        out = []
        for d in sorted(self.root.iterdir()):
            if not d.is_dir() or d.name.startswith(("_", ".")) or not _SAFE.fullmatch(d.name):
                continue
            lo = LearntObject(d)
            if (lo.rendered if rendered else lo.files.learnt):
                out.append(d.name)
        return out

    live_buffer = property(lambda self: self.root / LIVE_BUFFER_DIR)
    models = property(lambda self: self.root / MODELS_DIR)
    object_ids_file = property(lambda self: self.root / OBJECT_IDS_FILE)

    def training(self, key: str) -> Path:
        """The work folder of one training (key: preset + object set, made safe here)."""
        k = re.sub(r"[^A-Za-z0-9_.+\-]", "_", key)[:120]
        return self.root / TRAINING_DIR / k

    def within(self, path: str | Path, what: str = "path", must_exist: bool = False) -> Path:
        """A path from a request, confined to this root (:func:`confine`)."""
        return confine(self.root, path, what, must_exist)

    # -- ids ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self):
        """An exclusive lock on the root (fcntl on ROOT/.nol_lock), held for id allocation and
        index updates, so processes and threads sharing a root never race. Re-entrant within a
        thread."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BadPathError(f"cannot create the workspace root '{self.root}' "
                               f"({e.strerror or e}); give a folder you can write to") from e
        key = str(self.root.resolve())
        with _LOCKS_GUARD:
            tlock = _THREAD_LOCKS.setdefault(key, threading.RLock())
        with tlock:
            depth = _HELD.__dict__.setdefault(key, 0)
            _HELD.__dict__[key] = depth + 1
            fd = None
            try:
                if depth == 0:
                    fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
                    fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                _HELD.__dict__[key] = depth
                if fd is not None:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                    os.close(fd)

    def object_ids(self) -> dict[str, int]:
        p = self.object_ids_file
        if not p.is_file():
            return {}
        try:
            return {str(k): int(v) for k, v in json.loads(p.read_text()).items()}
        except (json.JSONDecodeError, ValueError, AttributeError) as e:
            raise FileFormatError(f"'{p}' is not a name -> id mapping ({e}); fix or delete it "
                                  "(ids are then assigned again)") from e

    def object_id(self, name: str, assign: bool = True) -> int:
        """The BOP object id of ``name`` (the recognisers' class); a new name gets the next free
        id (1, 2, ...) when ``assign``, else 0. Allocation holds :meth:`lock`."""
        safe_name(name)
        with self.lock():
            ids = self.object_ids()
            if name in ids or not assign:
                return ids.get(name, 0)
            ids[name] = max(ids.values(), default=0) + 1
            atomic_write_json(self.object_ids_file, ids)
            return ids[name]


_THREAD_LOCKS: dict[str, threading.RLock] = {}   # root -> lock of this process's threads
_LOCKS_GUARD = threading.Lock()
_HELD = threading.local()                         # root -> nesting depth in this thread


def _read_json(p: Path, what: str) -> dict:
    try:
        return json.loads(p.read_text())
    except FileNotFoundError as e:
        raise FileFormatError(f"{what} '{p}' does not exist") from e
    except (OSError, json.JSONDecodeError) as e:
        raise FileFormatError(f"{what} '{p}' is unreadable ({e}); learn the object again") from e
