"""LearnObject's render stage, RenderViews and the NOL benchmarks run ONE code path with ONE
configuration (issue 19: LearnObject refined 25 iterations with patience 4 while the benchmark
that BENCHMARKS.md presented as LearnObject's refined 50 with patience 8)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "bench" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_the_benchmarks_measure_the_configuration_learnobject_runs():
    import nol_ros.nol.renderer as R
    from nol_ros.learn import RenderStageConfig

    learn = RenderStageConfig(method="nol").object_renderer_config()
    real = _bench("bench_nol_real")
    assert real.learn_object_config() == learn
    # the rows it labels "learnobject" come from the same function LearnObject calls
    assert real.prepare_renderer is R.prepare_renderer
    assert "prepare_renderer" in real.run_level.__code__.co_names
    synth = _bench("bench_nol")
    assert synth.OBJ == learn.refine_object
    assert synth.learn_object_config() == learn
    # the stage's switches reach that configuration
    off = RenderStageConfig(method="nol", refine_sources=False,
                            finetune=False).object_renderer_config()
    assert off.refine_object.method == "none" and off.finetune.steps == 0
    assert off.render == learn.render


def test_learnobject_loads_its_renderer_through_prepare_renderer(small_workspace, monkeypatch):
    import nol_ros.nol.renderer as R
    from nol_ros.learn import RenderStageConfig, load_renderer

    ws, report, _, _ = small_workspace
    name = next(n for n, e in report["objects"].items() if "selection" in e)
    seen = []
    real = R.prepare_renderer

    def spy(mesh, sources, net, cfg, *a, **k):
        seen.append(cfg)
        return real(mesh, sources, net, cfg, *a, **k)

    monkeypatch.setattr(R, "prepare_renderer", spy)
    stage = RenderStageConfig(method="ibr", refine_sources=False)
    r, info = load_renderer(ws, name, stage)
    assert seen == [stage.object_renderer_config()]
    assert r.cfg == stage.object_renderer_config().render and info["sources"] == len(r.full)
    with pytest.raises(Exception, match="learn it first"):
        load_renderer(ws, "no_such_object", stage)
