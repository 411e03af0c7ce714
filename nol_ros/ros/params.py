"""A node's config dataclass as described ROS parameters, and back (one place, all nodes).

Every field of the dataclass becomes a parameter with the field's default; nested dataclasses
are flattened with dots (``tracker.voxel_size_m``). Only str/int/float/bool and tuples of them
are supported, which is what ROS parameters carry. A tuple field whose default is empty is
declared with the array type its annotation names (``tuple[str, ...]`` -> string array), since
rclpy cannot infer a type from an empty list; an unset or empty array means the default.

Each parameter is declared with a ``ParameterDescriptor``: its description is the comment that
documents it in the package's ``config/NODE.yaml`` or, for the core configs a node embeds, the
comment beside the field in its dataclass (test_launch_files checks that every parameter of
every node has one), ``ranges`` give numeric bounds, a field typed with a name set of
:mod:`nol_ros.enums` lists its names in ``additional_constraints``, and
every parameter is ``read_only`` except the node's ``dynamic`` ones: ``ros2 param set`` on any
other is refused by rclpy with the reason, instead of being accepted and ignored. A change of a
dynamic parameter is checked by building the new config (a value the config refuses is refused
with its message) and then handed to the node (:func:`watch_dynamic`).

Parameter files (``config/*.yaml``) key their parameters by node name; the package's files use
``/**/NAME`` so they apply in any namespace (a bare ``NAME`` key only matches a node in the root
namespace: measured with rclpy Kilted). :func:`load_params_file` reads either form.
"""

from __future__ import annotations

import functools
import re
import sys
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml
from rcl_interfaces.msg import (
    FloatingPointRange,
    IntegerRange,
    ParameterDescriptor,
    SetParametersResult,
)
from rclpy.exceptions import ParameterUninitializedException
from rclpy.parameter import Parameter

from nol_ros.config import flat_field_docs, flatten, from_dict, override
from nol_ros.enums import NameEnum
from nol_ros.errors import ConfigError, FileFormatError

# a documented parameter line inside ros__parameters (also the commented-out core defaults)
_PARAM = re.compile(r"^ {4}(?:# )?([A-Za-z_][\w.]*):[ \t]*(.*?)(?:[ \t]+#[ \t]?(.*))?$")
_MORE = re.compile(r"^ {4}#[ \t]{2,}(.*)$")      # its continuation: "    #     more text"


def _field_hint(cls: type, key: str) -> Any:
    """The type annotation of the field named by the dotted ``key`` (None if there is none)."""
    parts = key.split(".")
    for part in parts[:-1]:
        cls = typing.get_type_hints(cls).get(part)
        if cls is None:
            return None
    return typing.get_type_hints(cls).get(parts[-1])


def _array_kind(cls: type, key: str) -> type | None:
    """Element type (str/int/float/bool) of the tuple field named by the dotted ``key``."""
    args = typing.get_args(_field_hint(cls, key))
    return args[0] if args and args[0] in (str, int, float, bool) else None


def _names(cls: type, key: str) -> tuple[str, ...]:
    """The allowed names of a field typed with a :class:`nol_ros.enums.NameEnum` (else ())."""
    hint = _field_hint(cls, key)
    return hint.names() if isinstance(hint, type) and issubclass(hint, NameEnum) else ()


def config_dirs() -> list[Path]:
    """Where the package's config/*.yaml are: the source tree, then the install's share."""
    src = Path(__file__).resolve().parents[2] / "config"
    return [src, Path(sys.prefix) / "share" / "nol_ros" / "config"]


@functools.lru_cache(maxsize=16)
def parameter_docs(node_name: str) -> dict[str, str]:
    """Parameter -> its documentation in config/NODE_NAME.yaml ({} when the file is missing)."""
    path = next((d / f"{node_name}.yaml" for d in config_dirs()
                 if (d / f"{node_name}.yaml").is_file()), None)
    if path is None:
        return {}
    docs: dict[str, str] = {}
    last = None
    for line in path.read_text().splitlines():
        m = _PARAM.match(line)
        if m and not m.group(1).startswith("-"):
            last = m.group(1)
            docs[last] = (m.group(3) or "").strip()
            continue
        c = _MORE.match(line)
        if c and last is not None:
            docs[last] = (docs[last] + " " + c.group(1).strip()).strip()
            continue
        last = None
    return docs


def declare_and_read(node, cls: type, docs: str | None = None, dynamic: Iterable[str] = (),
                     ranges: dict[str, tuple[float, float]] | None = None) -> Any:
    """Declare one described ROS parameter per field of ``cls`` on ``node`` and return the
    filled config. docs: the config file whose comments describe them (default: the node's
    name); dynamic: parameters that may change at run time (see :func:`watch_dynamic`; all
    others are read-only); ranges: name -> (lo, hi) for numeric parameters."""
    text = {**flat_field_docs(cls), **{k: v for k, v in parameter_docs(docs or node.get_name())
                                       .items() if v}}
    dynamic, ranges = set(dynamic), dict(ranges or {})
    array_types = {str: Parameter.Type.STRING_ARRAY, int: Parameter.Type.INTEGER_ARRAY,
                   float: Parameter.Type.DOUBLE_ARRAY, bool: Parameter.Type.BOOL_ARRAY}
    flat_defaults = flatten(cls())
    unknown = (dynamic | set(ranges)) - set(flat_defaults)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no parameters {sorted(unknown)}")
    values = {}
    for key, default in flat_defaults.items():
        d = ParameterDescriptor(name=key, description=text.get(key, ""),
                                read_only=key not in dynamic)
        names = _names(cls, key)
        if names:  # a closed set of names: listed where `ros2 param describe` shows them
            d.additional_constraints = f"one of: {', '.join(names)}"
        if key in ranges:
            lo, hi = ranges[key]
            if isinstance(default, bool) or not isinstance(default, (int, float)):
                raise ConfigError(f"a range for the non-numeric parameter '{key}'")
            if isinstance(default, int):
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=0)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(lo),
                                                             to_value=float(hi), step=0.0)]
        if isinstance(default, list) and not default:
            kind = _array_kind(cls, key)
            node.declare_parameter(key, array_types.get(kind, Parameter.Type.STRING_ARRAY), d)
            try:
                values[key] = list(node.get_parameter(key).value)
            except ParameterUninitializedException:
                values[key] = []
            continue
        node.declare_parameter(key, default, d)
        values[key] = node.get_parameter(key).value
    return from_dict(cls, values, "parameters: ")


def watch_dynamic(node, get_config: Callable[[], Any], apply: Callable[[Any, set[str]], None]
                  ) -> None:
    """Run-time changes of the node's dynamic parameters (the others are read-only): the new
    value is checked by building the new config (refused with the config's message if it is
    invalid), then ``apply(new_config, changed_names)`` makes it take effect."""
    def check(params):
        try:
            override(get_config(), {p.name: p.value for p in params}, "parameter change: ")
        except ConfigError as e:
            return SetParametersResult(successful=False, reason=str(e))
        return SetParametersResult(successful=True)

    def done(params):
        new = override(get_config(), {p.name: p.value for p in params})
        apply(new, {p.name for p in params})

    node.add_on_set_parameters_callback(check)
    node.add_post_set_parameters_callback(done)


def load_params_file(path: str | Path, node_name: str) -> dict[str, Any]:
    """The ``ros__parameters`` of ``node_name`` in a ROS 2 parameter file, flattened with dots
    (nested mappings become ``a.b``). Accepts the keys ``NAME``, ``/NAME``, ``/**/NAME``,
    ``/**`` (all nodes); later matches override earlier ones, as rcl does."""
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
