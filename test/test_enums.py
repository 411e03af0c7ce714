"""The closed sets of names (nol_ros.enums): members are their strings, user input is parsed in
one place with an error naming the allowed names, configs hold members but write plain names,
and the command line offers the enum's names."""

import ast
import json
from pathlib import Path

import pytest
import yaml

from nol_ros.config import from_dict, to_dict
from nol_ros.enums import (
    NameEnum,
    PoseSolver,
    Preset,
    RenderMethod,
    RenderStageMethod,
    TrackerMethod,
    TumIntrinsics,
)
from nol_ros.errors import ConfigError, InputError

PKG = Path(__file__).resolve().parents[1] / "nol_ros"


def _all_enums():
    import nol_ros.enums as E

    return [v for v in vars(E).values()
            if isinstance(v, type) and issubclass(v, NameEnum) and v is not NameEnum]


@pytest.mark.parametrize("cls", _all_enums(), ids=lambda c: c.__name__)
def test_members_are_their_names_and_parse_refuses_others(cls):
    for m in cls:
        assert m == m.value and f"{m}" == m.value and json.dumps(m) == json.dumps(m.value)
        assert cls.parse(m.value) is m and cls.parse(m) is m
    with pytest.raises(ConfigError) as e:
        cls.parse("no_such_name")
    msg = str(e.value)
    assert "'no_such_name' unknown" in msg and all(n in msg for n in cls.names()), msg


def test_parse_names_what_and_raises_the_callers_error():
    with pytest.raises(InputError, match=r"^intrinsics 'x' unknown; use one of auto, "
                                         r"ros_default, calibrated$"):
        TumIntrinsics.parse("x", "intrinsics", InputError)
    with pytest.raises(ConfigError, match="render.preset 'huge' unknown; use one of tiny, demo, "
                                          "cpu, paper"):
        Preset.parse("huge", "render.preset")


def test_configs_hold_members_and_write_plain_names():
    from nol_ros.learn import LearnConfig, RenderStageConfig
    from nol_ros.recognition.recognizer import RecognizerConfig
    from nol_ros.reconstruction.tracking import TrackerConfig

    r = RecognizerConfig(solver="pnp")
    assert r.solver is PoseSolver.PNP and RecognizerConfig().solver is PoseSolver.RGBD
    with pytest.raises(ConfigError, match="use one of pnp, rgbd"):
        RecognizerConfig(solver="rgb")
    cfg = from_dict(LearnConfig, {"render.method": "ibr", "render.preset": "tiny",
                                  "self_annotation.tracker.method": "point_to_plane"})
    assert cfg.render.method is RenderStageMethod.IBR and cfg.render.preset is Preset.TINY
    assert cfg.self_annotation.tracker.method is TrackerMethod.POINT_TO_PLANE
    # the key that was wrong and the names that are right
    with pytest.raises(ConfigError, match=r"render\.method 'nerf' unknown; use one of auto, nol"):
        from_dict(LearnConfig, {"render": {"method": "nerf"}})
    with pytest.raises(ConfigError, match="tracker method 'icp' unknown"):
        TrackerConfig(method="icp")
    d = to_dict(cfg)
    assert type(d["render"]["method"]) is str and d["render"]["method"] == "ibr"
    text = yaml.safe_dump(d)  # YAML cannot represent an Enum member: to_dict writes the name
    assert "method: ibr" in text and "preset: tiny" in text
    assert from_dict(LearnConfig, yaml.safe_load(text)) == cfg
    # the learn-stage method resolves to a renderer method
    assert RenderStageConfig(method="ibr").object_renderer_config().render.method \
        is RenderMethod.IBR_ANGLE


def test_command_line_choices_come_from_the_enums():
    from nol_ros.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices
    opts = {o: a for a in sub["learn"]._actions for o in a.option_strings}
    assert list(opts["--preset"].choices) == list(Preset)
    assert list(opts["--method"].choices) == list(RenderStageMethod)
    track = {o: a for a in sub["track"]._actions for o in a.option_strings}
    assert list(track["--intrinsics"].choices) == list(TumIntrinsics)


def test_no_literal_choices_in_the_package():
    """A closed set of names offered on a command line is an enum (choices=list(SomeEnum)), not
    a list of string literals that can drift from what the code accepts."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            for kw in node.keywords:
                if (kw.arg == "choices" and isinstance(kw.value, (ast.List, ast.Tuple, ast.Set))
                        and any(isinstance(e, ast.Constant) and isinstance(e.value, str)
                                for e in kw.value.elts)):
                    bad.append(f"{path.relative_to(PKG.parent)}:{node.lineno}")
    assert not bad, "string-literal choices= (use a nol_ros.enums class): " + ", ".join(bad)
