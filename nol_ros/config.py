"""Config dataclasses to and from plain data: the one path every component uses.

Every component has a frozen config dataclass. The same functions turn one into a dict (for
JSON checkpoints and reports), build one from a dict (a checkpoint, a YAML file, a request's
``options_yaml``, ROS parameters) and apply overrides to one::

    cfg = from_dict(TrackerConfig, {"voxel_size_m": 0.01})          # nested or dotted keys
    cfg = override(cfg, {"odometry_iterations": [8, 4, 2]})
    d = to_dict(cfg)                                                   # tuples become lists
    flat = flatten(d)                                                  # {"a.b": ...}

Values are checked against the field's type (bool, int, float, str, tuples of them, nested
config dataclasses, ``X | None``, the name sets of :mod:`nol_ros.enums`); lists become tuples;
an unknown key, name or a wrong type raises :class:`~nol_ros.errors.ConfigError` naming the key
and what it must be. The dataclass's own
``__post_init__`` then checks ranges.

Text from outside (a request's ``options_yaml``) goes through :func:`parse_options`, which
bounds its size, nesting and YAML aliases before anything is built from it.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import math
import re
import types
import typing
from typing import Any

import yaml

from nol_ros.enums import NameEnum
from nol_ros.errors import ConfigError

# Limits for options text that arrives in a request (a YAML alias bomb expands a few hundred
# bytes into gigabytes; nothing we configure is deeper than 4 levels).
MAX_OPTIONS_BYTES = 16384
MAX_OPTIONS_DEPTH = 6


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as a nested dict of plain values (tuples as lists)."""
    if not dataclasses.is_dataclass(cfg) or isinstance(cfg, type):
        raise TypeError(f"to_dict needs a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return to_dict(v)
    if isinstance(v, enum.Enum):  # a NameEnum member: its plain name (YAML cannot dump it)
        return v.value
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mapping (or config dataclass) -> {"a.b.c": value}; lists stay values."""
    if dataclasses.is_dataclass(d) and not isinstance(d, type):
        d = to_dict(d)
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def unflatten(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1, "c": 2} -> {"a": {"b": 1}, "c": 2}; a key that is both a value and a
    section raises ConfigError."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        parts = str(key).split(".")
        node = out
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"'{key}': '{p}' is a value, not a section")
            node = nxt
        if isinstance(node.get(parts[-1]), dict) and not isinstance(v, dict):
            raise ConfigError(f"'{key}' is a section (has keys below it), not a value")
        if isinstance(v, dict) and isinstance(node.get(parts[-1]), dict):
            node[parts[-1]].update(v)
        else:
            node[parts[-1]] = v
    return out


def from_dict(cls: type, data: dict[str, Any] | None, where: str = "") -> Any:
    """Build config dataclass ``cls`` from a mapping (nested or dotted keys); absent keys keep
    the defaults. ``where`` prefixes key names in errors (e.g. "options_yaml: ")."""
    return _build(cls, None, data or {}, where)


def override(base: Any, data: dict[str, Any] | None, where: str = "") -> Any:
    """``base`` (a config dataclass instance) with the values of ``data`` (nested or dotted)."""
    if not data:
        return base
    return _build(type(base), base, data, where)


def _build(cls: type, base: Any, data: dict[str, Any], where: str, prefix: str = "") -> Any:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls} is not a config dataclass")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}{prefix.rstrip('.') or 'the config'} must be a mapping of "
                          f"{cls.__name__} fields, got {data!r}")
    data = unflatten(data) if any("." in str(k) for k in data) else data
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(map(str, data)) - set(fields))
    if unknown:
        raise ConfigError(f"{where}unknown key(s) {[prefix + k for k in unknown]}; valid keys "
                          f"of {prefix.rstrip('.') or cls.__name__}: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = prefix + name
        current = getattr(base, name) if base is not None else _default(f)
        hint = hints.get(name, Any)
        if name not in data:
            if base is not None:
                kwargs[name] = current
            continue
        v = data[name]
        sub = _dataclass_of(hint, current)
        if sub is not None and isinstance(v, dict):
            kwargs[name] = _build(sub, current if dataclasses.is_dataclass(current) else None,
                                  v, where, key + ".")
        else:
            kwargs[name] = _coerce(v, hint, key, where)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"{where}{e}") from e
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}invalid {cls.__name__}: {e}") from e


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def _dataclass_of(hint: Any, current: Any) -> type | None:
    if dataclasses.is_dataclass(current) and not isinstance(current, type):
        return type(current)
    for h in (hint, *typing.get_args(hint)):
        if isinstance(h, type) and dataclasses.is_dataclass(h):
            return h
    return None


_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(v: Any, hint: Any, key: str, where: str) -> Any:
    """``v`` as type ``hint`` (lists -> tuples, ints -> floats), or ConfigError."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return v
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(v, a, key, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}'{key}' must not be null")
    if origin is tuple or hint is tuple:
        if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple)):
            raise ConfigError(f"{where}'{key}' must be a list, got {v!r}")
        if args and len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(x, args[0], f"{key}[{i}]", where) for i, x in enumerate(v))
        if args and len(args) != len(v):
            raise ConfigError(f"{where}'{key}' must have {len(args)} elements, got {v!r}")
        return tuple(_coerce(x, a, f"{key}[{i}]", where) for i, (x, a) in
                     enumerate(zip(args, v))) if args else tuple(v)
    if origin is dict or hint is dict:
        if not isinstance(v, dict):
            raise ConfigError(f"{where}'{key}' must be a mapping, got {v!r}")
        return dict(v)
    if hint is bool:
        if not isinstance(v, bool):
            raise ConfigError(f"{where}'{key}' must be true or false, got {v!r}")
        return v
    if hint is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise ConfigError(f"{where}'{key}' must be an integer, got {v!r}")
        return v
    if hint is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            tip = ""
            if isinstance(v, str):
                try:
                    float(v)
                    tip = (f" (YAML reads {v} as text: write the mantissa with a dot, e.g. "
                           f"{v.lower().replace('e', '.0e', 1) if '.' not in v else v})")
                except ValueError:
                    pass
            raise ConfigError(f"{where}'{key}' must be a number, got {v!r}{tip}")
        if not math.isfinite(float(v)):
            raise ConfigError(f"{where}'{key}' must be finite, got {v!r}")
        return float(v)
    if hint is str:
        if not isinstance(v, str):
            raise ConfigError(f"{where}'{key}' must be a string, got {v!r}")
        return v
    if isinstance(hint, type) and issubclass(hint, NameEnum):
        return hint.parse(v, f"{where}{key}")
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return _build(hint, None, v, where, key + ".")
    return v


def parse_options(text: str, what: str = "options_yaml",
                  max_bytes: int = MAX_OPTIONS_BYTES) -> dict[str, Any]:
    """A request's options text (YAML mapping, nested or dotted keys) -> flat dict, bounded:
    at most ``max_bytes``, no YAML aliases/anchors, at most MAX_OPTIONS_DEPTH levels. Empty
    text -> {}."""
    if not text or not text.strip():
        return {}
    size = len(text.encode("utf-8", "replace"))
    if size > max_bytes:
        raise ConfigError(f"{what} is {size} bytes; at most {max_bytes}: send only the keys to "
                          "change")

    class _NoAliases(yaml.SafeLoader):
        def compose_node(self, parent, index):  # noqa: D401 - a loader hook
            if self.check_event(yaml.events.AliasEvent):
                raise ConfigError(f"{what} uses a YAML alias (*name); write the values out")
            return super().compose_node(parent, index)

    try:
        data = yaml.load(text, Loader=_NoAliases)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise ConfigError(f"{what} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{what} must be a mapping, e.g. 'detector.epochs: 4'")

    def depth(x, d=1):
        if d > MAX_OPTIONS_DEPTH:
            raise ConfigError(f"{what} nests deeper than {MAX_OPTIONS_DEPTH} levels")
        if isinstance(x, dict):
            for v in x.values():
                depth(v, d + 1)
        elif isinstance(x, list):
            for v in x:
                depth(v, d + 1)

    depth(data)
    return flatten(data)


def field_docs(cls: type) -> dict[str, str]:
    """The documentation of each field of config dataclass ``cls``: the comment after it on its
    line (and comment lines right below it that are indented further than the field), as the
    configs in this package are written::

        voxel_size_m: float = 0.006        # TSDF voxel edge
        max_backlog: int = 15              # frames waiting for the tracker; more ->
        #                                    the oldest is skipped
    """
    if cls not in _FIELD_DOCS:
        _FIELD_DOCS[cls] = _parse_field_docs(cls)
    return _FIELD_DOCS[cls]


_FIELD_DOCS: dict[type, dict[str, str]] = {}


def flat_field_docs(cls: type, prefix: str = "") -> dict[str, str]:
    """:func:`field_docs` of ``cls`` and of its nested config dataclasses, dotted keys as
    :func:`flatten` names them."""
    out: dict[str, str] = {}
    hints = typing.get_type_hints(cls)
    own = field_docs(cls)
    for f in dataclasses.fields(cls):
        sub = _dataclass_of(hints.get(f.name, Any), _default(f))
        if sub is not None:
            out.update(flat_field_docs(sub, f"{prefix}{f.name}."))
        elif f.name in own:
            out[f"{prefix}{f.name}"] = own[f.name]
    return out


def _parse_field_docs(cls) -> dict[str, str]:
    try:
        src = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    names = {f.name for f in dataclasses.fields(cls)}
    field_re = re.compile(r"^( +)([A-Za-z_]\w*)\s*:[^=#]*(?:=.*?)?(?:  #\s?(.*))?$")
    more_re = re.compile(r"^( +)#\s*(.*)$")
    docs: dict[str, str] = {}
    current, indent = None, 0
    for line in src.splitlines():
        m = field_re.match(line)
        if m and m.group(2) in names:
            current, indent = m.group(2), len(m.group(1))
            docs[current] = (m.group(3) or "").strip()
            continue
        c = more_re.match(line)
        if c and current is not None and len(c.group(1)) == indent and \
                line.index("#") + 1 < len(line) and line[line.index("#") + 1:].startswith("  "):
            docs[current] = (docs[current] + " " + c.group(2).strip()).strip()
            continue
        current = None
    return {k: v for k, v in docs.items() if v}
