"""The one progress-callback type (nol_ros.progress): its helpers, the terminal bar, and that no
module defines a second one."""

import ast
import io
from pathlib import Path

from nol_ros.progress import OverallProgress, TqdmProgress, noop_progress, prefixed

PKG = Path(__file__).resolve().parents[1] / "nol_ros"


def test_prefixed_names_the_object_and_can_rename_the_stage():
    seen = []
    p = prefixed(lambda s, f, m: seen.append((s, f, m)), "mug")
    p("refine", 0.5, "3 views")
    prefixed(p, "part 2", stage="render")("anything", 1.0, "")
    assert seen == [("refine", 0.5, "mug: 3 views"), ("render", 1.0, "mug: part 2: ")]
    assert noop_progress("x", 0.3, "y") is None


def test_overall_progress_maps_stages_onto_one_monotonic_fraction():
    out = []
    p = OverallProgress(lambda s, f, m: out.append(round(f, 3)),
                        {"a": (0.0, 0.4), "b": (0.4, 1.0)})
    for stage, f in [("a", 0.5), ("a", 1.0), ("b", 0.0), ("unknown", 0.5), ("a", 0.0),
                     ("b", 1.0)]:
        p(stage, f, "")
    # "unknown" keeps b's span; going back to a's start never lowers the job's fraction
    assert out == [0.2, 0.4, 0.4, 0.7, 0.7, 1.0]


def test_tqdm_bar_shows_stage_message_and_percentage_and_filters_stages():
    buf = io.StringIO()  # not a terminal: a redraw at most every log_interval_s
    with TqdmProgress("track", stages=("tracking",), file=buf, log_interval_s=0.0) as p:
        p("tracking", 0.25, "frame 25/100")
        p("loop_closure", 0.9, "ignored")
        p("tracking", 1.0, "frame 100/100")
    text = buf.getvalue()
    assert "tracking: frame 25/100" in text and " 25.0%" in text
    assert "100.0%" in text and "tracking: frame 100/100" in text
    assert "loop_closure" not in text and "ignored" not in text
    quiet = io.StringIO()
    with TqdmProgress("x", file=quiet, disable=True) as p:
        p("tracking", 0.5, "hidden")
    assert quiet.getvalue() == ""


def test_one_definition_of_the_progress_type():
    """ProgressFn is defined in nol_ros/progress.py only (it was copied into 7 modules), and no
    module keeps its own no-op default or a hand-written carriage-return progress line."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        if path == PKG / "progress.py":
            continue
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(PKG.parent)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "ProgressFn" for t in targets):
                    bad.append(f"{rel}:{node.lineno} defines ProgressFn")
            if isinstance(node, ast.FunctionDef) and node.name == "_noop":
                bad.append(f"{rel}:{node.lineno} defines its own _noop")
            if (isinstance(node, ast.Constant) and isinstance(node.value, str)
                    and node.value.startswith("\r")):
                bad.append(f"{rel}:{node.lineno} writes a carriage-return progress line")
    assert not bad, "\n".join(bad)
