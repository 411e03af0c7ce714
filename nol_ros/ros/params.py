"""Map a frozen config dataclass onto ROS parameters and back (one place, all nodes).

Every field of the dataclass becomes a parameter with the field's default; nested dataclasses
are flattened with dots (``tracker.voxel_size_m``). Only str/int/float/bool and tuples of them
are supported, which is what ROS parameters carry. A tuple field whose default is empty is
declared with the array type its annotation names (``tuple[str, ...]`` -> string array), since
rclpy cannot infer a type from an empty list; an unset or empty array means the default.

Parameter files (``config/*.yaml``) key their parameters by node name; the package's files use
``/**/NAME`` so they apply in any namespace (a bare ``NAME`` key only matches a node in the root
namespace: measured with rclpy Kilted). :func:`load_params_file` reads either form.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from nol_ros.config import flatten, from_dict
from nol_ros.errors import FileFormatError


def _array_kind(cls: type, key: str) -> type | None:
    """Element type (str/int/float/bool) of the tuple field named by the dotted ``key``."""
    parts = key.split(".")
    for i, part in enumerate(parts):
        hints = typing.get_type_hints(cls)
        if part not in hints:
            return None
        hint = hints[part]
        if i < len(parts) - 1:
            cls = hint
            continue
        args = typing.get_args(hint)
        return args[0] if args and args[0] in (str, int, float, bool) else None
    return None


def declare_and_read(node, cls: type, prefix: str = "") -> Any:
    """Declare one ROS parameter per field of ``cls`` on ``node`` and return the filled config."""
    from rclpy.exceptions import ParameterUninitializedException
    from rclpy.parameter import Parameter

    array_types = {str: Parameter.Type.STRING_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                   float: Parameter.Type.DOUBLE_ARRAY, bool: Parameter.Type.BOOL_ARRAY}
    flat_defaults = flatten(cls())
    values = {}
    for key, default in flat_defaults.items():
        name = prefix + key
        if isinstance(default, list) and not default:
            kind = _array_kind(cls, key)
            node.declare_parameter(name, array_types.get(kind, Parameter.Type.STRING_ARRAY))
            try:
                values[key] = list(node.get_parameter(name).value)
            except ParameterUninitializedException:
                values[key] = []
            continue
        node.declare_parameter(name, default)
        values[key] = node.get_parameter(name).value
    return from_dict(cls, values, "parameters: ")


def load_params_file(path: str | Path, node_name: str) -> dict[str, Any]:
    """The ``ros__parameters`` of ``node_name`` in a ROS 2 parameter file, flattened with dots
    (nested mappings become ``a.b``). Accepts the keys ``NAME``, ``/NAME``, ``/**/NAME``,
    ``/**`` (all nodes); later matches override earlier ones, as rcl does."""
    import yaml

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise FileFormatError(f"cannot read parameter file '{p}': {e}") from e
    except yaml.YAMLError as e:
        raise FileFormatError(f"parameter file '{p}' is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise FileFormatError(f"parameter file '{p}' must map node names to ros__parameters")
    out: dict[str, Any] = {}
    for key, body in data.items():
        k = str(key)
        if k in ("/**", node_name, f"/{node_name}", f"/**/{node_name}") or (
                k.endswith(f"/{node_name}") and k.startswith("/")):
            if not isinstance(body, dict) or "ros__parameters" not in body:
                raise FileFormatError(f"'{p}': '{k}' has no ros__parameters mapping")
            out.update(flatten(body["ros__parameters"] or {}))
    return out
