"""Map a frozen config dataclass onto ROS parameters and back (one place, all nodes).

Every field of the dataclass becomes a parameter with the field's default; nested dataclasses
are flattened with dots (``tracker.voxel_size``). Only str/int/float/bool and lists of them are
supported, which is what ROS parameters carry.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from nol_ros.errors import ConfigError


def flatten_config(cfg: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(v):
            out.update(flatten_config(v, key + "."))
        elif isinstance(v, tuple):
            out[key] = list(v)
        else:
            out[key] = v
    return out


def config_from_flat(cls: type, flat: dict[str, Any], prefix: str = "") -> Any:
    """Build ``cls`` from a flat dict, keeping defaults for absent keys; types are checked."""
    kwargs: dict[str, Any] = {}
    defaults = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        default = getattr(defaults, f.name)
        if dataclasses.is_dataclass(default):
            kwargs[f.name] = config_from_flat(type(default), flat, key + ".")
            continue
        if key not in flat:
            continue
        v = flat[key]
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"parameter '{key}' must be true/false, got {v!r}")
        elif isinstance(default, int):
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"parameter '{key}' must be an integer, got {v!r}")
        elif isinstance(default, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"parameter '{key}' must be a number, got {v!r}")
            v = float(v)
        elif isinstance(default, str):
            if not isinstance(v, str):
                raise ConfigError(f"parameter '{key}' must be a string, got {v!r}")
        elif isinstance(default, tuple):
            v = tuple(v)
        kwargs[f.name] = v
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"invalid {cls.__name__}: {e}") from e


def declare_and_read(node, cls: type, prefix: str = "") -> Any:
    """Declare one ROS parameter per field of ``cls`` on ``node`` and return the filled config."""
    flat_defaults = flatten_config(cls())
    values = {}
    for key, default in flat_defaults.items():
        name = prefix + key
        node.declare_parameter(name, default)
        values[key] = node.get_parameter(name).value
    return config_from_flat(cls, values)
