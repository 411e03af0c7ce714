"""Registration refuses a wrong object: every scene object against every candidate mesh.

Scenes (each fused by the self-annotation's own path, ``track_sequence``, then searched by
``ObjectRegistrar`` with the default ``RegistrationConfig`` and the sequence's depth images,
``measured_views`` -- what LearnObject and ``nol-ros learn`` run):

  synthetic_a   the small synthetic world of the tests (objects 1, 3, 4, 6: cracker box, tomato
                soup can, mustard bottle, power drill; 30 frames over a 120 deg arc), tracked
  synthetic_b   the same world and trajectory with the other five catalogue objects (2, 5, 7,
                8, 9: sugar box, master chef can, bowl, striped cup, mug), tracked
  real_a/b      REAL scanned YCB objects (``--objects``, default ../shared/realdata/
                ycb_real_textures) standing on the table of a synthetic room (clutter, two
                distractor boxes, the Xtion sensor model), 60 frames on a full circle, fused at
                the true camera poses (see SCENES): a = tuna can, pudding box, potted meat can,
                banana; b = scissors, marker, clamp

Candidates: the meshes of the scene's set -- the 9 catalogue meshes for a synthetic scene, the
7 scans (as they are, in the scanner's frame) for a real one; ``--all-candidates``: all 16 at
every object. For every scene object, every candidate is registered with a prior point at the
object's true centre (mapped into the tracked world; radius 0.1 m: that object's cluster only):
the right mesh must be accepted at its true place, every other one refused. Unless
``--no-prior-runs``, every candidate is then registered without a prior (what LearnObject does
by default): a mesh not in the scene must be refused, a mesh in the scene found at its object.

Per registration: the decision (accepted / the error code), the fit evidence
(``RegistrationResult.evidence``), the ranking score and the time. The summary gives, per
figure the decision uses, the worst right value and, among the wrong fits that figure alone
refuses, the one closest to its bar, and the margin between the two; for all scenes, the
synthetic ones and the real ones apart. The cost of the check: each right mesh registered with
and without it (same registrar, alternately, best of 2).

    .venv/bin/python bench/bench_registration_refusal.py --out build/registration_refusal \\
        [--objects ../shared/realdata/ycb_real_textures] [--scenes synthetic_a,real_a] \\
        [--no-prior-runs] [--all-candidates]
    .venv/bin/python bench/bench_registration_refusal.py --out OUT --merge RUN1,RUN2

writes OUT/results.json (every row, the command, machine, load, date) and OUT/table.md; scene
data are generated into OUT/data once and reused. ``--merge`` summarises runs of scene groups
made side by side (RUN1, RUN2: their results.json files).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OLD_MIN_SCORE = 0.45
CATALOGUE_NAMES = ("cracker_box", "sugar_box", "tomato_soup_can", "mustard_bottle",
                   "master_chef_can", "power_drill", "bowl", "striped_cup", "mug")
DEFAULT_OBJECTS = ROOT.parent / "shared" / "realdata" / "ycb_real_textures"


@dataclass(frozen=True)
class SceneDef:
    name: str
    kind: str               # synthetic | real
    objects: tuple          # catalogue ids (synthetic) or scan folder names (real)
    seed: int
    frames: int
    arc_deg: float
    poses: str = "tracked"  # tracked (the self-annotation's) | truth (fused at the true poses)


SCENES = [
    SceneDef("synthetic_a", "synthetic", (1, 3, 4, 6), 0, 30, 120.0),
    SceneDef("synthetic_b", "synthetic", (2, 5, 7, 8, 9), 0, 30, 120.0),
    # the real-scan rooms are fused at the true camera poses: tracked, their trajectories are
    # off by 0.6 to 34 cm (ATE; real_a 0.6 cm in one run and 10.7 cm in another of the same
    # data, real_b 18 and 34 cm; 6 and 34 cm in the rooms of seeds 7 and 6): a tracking problem
    # no registration survives, and not what this bench measures
    SceneDef("real_a", "real", ("007_tuna_fish_can", "008_pudding_box", "010_potted_meat_can",
                                "011_banana"), 5, 60, 360.0, "truth"),
    SceneDef("real_b", "real", ("037_scissors", "040_large_marker", "051_large_clamp"), 5, 60,
             360.0, "truth"),
]


def synthetic_scene(sd: SceneDef, out: Path):
    """The training sequence of a synthetic world with catalogue objects ``sd.objects``: the
    generator's own path (``generate`` with a Preset), so synthetic_a is the tests' small
    world. Returns (sequence, [(object name, T_world_object ground truth)])."""
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.datasets.synthetic.generate import Preset, generate
    from nol_ros.datasets.synthetic.objects import CATALOGUE

    if not (out / "train" / "000001" / "scene_gt.json").exists():
        generate(out, Preset(train_objects=tuple(sd.objects), train_frames=sd.frames,
                             train_arc_deg=sd.arc_deg, test_sequences=0, write_bag=False),
                 seed=sd.seed, progress=False)
    seq = read_bop_scene(out / "train" / "000001", out / "models")
    names = {o.obj_id: o.name for o in CATALOGUE}
    return seq, [(names[o.obj_id], o.T_world_object) for o in seq.objects]


def real_scene(sd: SceneDef, out: Path, objects_dir: Path):
    """The scans ``sd.objects`` standing on the table of synthetic world ``sd.seed`` (apart
    from each other and from its two distractor boxes), rendered with the Xtion model on a
    circle around the table and written as a BOP scene. Returns as :func:`synthetic_scene`."""
    from nol_ros.camera import SMOT_XTION
    from nol_ros.datasets.bop import read_bop_scene
    from nol_ros.datasets.scanned import load_textured_objects
    from nol_ros.datasets.synthetic.generate import write_sequence
    from nol_ros.datasets.synthetic.world import WorldObject, build_world, circle_trajectory
    from nol_ros.geometry import make_T, so3_exp

    meta = out / "objects.json"
    if not meta.exists():
        scans = load_textured_objects(objects_dir)   # re-centred on their boxes, textured
        world = build_world(sd.seed, [], n_clutter=4)
        rng = np.random.default_rng([sd.seed, 99])
        placed = [(T[:3, 3][:2], 0.5 * float(np.linalg.norm(m.extent[:2])))
                  for m, T in world.static if m.name == "distractor"]
        poses = {}
        for k, name in enumerate(sd.objects):
            m = scans[name]
            foot = 0.5 * float(np.linalg.norm(m.extent[:2]))
            for _ in range(5000):
                p = rng.uniform(-0.35 + foot, 0.35 - foot, 2)
                if all(np.linalg.norm(p - q) > foot + f + 0.03 for q, f in placed):
                    break
            else:
                raise RuntimeError(f"{sd.name}: no free place on the table for {name}")
            placed.append((p, foot))
            T = make_T(so3_exp([0, 0, rng.uniform(0, 2 * np.pi)]),
                       [p[0], p[1], world.table_top_z - float(m.vertices[:, 2].min()) + 1e-4])
            world.objects.append(WorldObject(101 + k, name, m, False, T))
            poses[name] = T.tolist()
        cams = circle_trajectory(world, sd.frames, sd.seed, (38.0, 41.0), sd.arc_deg)
        write_sequence(out / "train" / "000001", world, cams, SMOT_XTION, sd.seed,
                       progress=False)
        meta.write_text(json.dumps(poses))
    seq = read_bop_scene(out / "train" / "000001")
    return seq, [(n, np.array(T)) for n, T in json.loads(meta.read_text()).items()]


def candidate_meshes(catalogue_models: Path, objects_dir: Path | None) -> dict:
    """name -> Mesh: the 9 catalogue meshes (as the pipeline receives them) and the scans
    (textured.obj as it is: the scanner's frame, metres)."""
    from nol_ros.datasets.synthetic.objects import CATALOGUE
    from nol_ros.mesh import load_mesh

    out = {o.name: load_mesh(catalogue_models / f"obj_{o.obj_id:06d}.ply") for o in CATALOGUE}
    if objects_dir is not None:
        for d in sorted(p for p in objects_dir.iterdir() if (p / "textured.obj").is_file()):
            out[d.name] = load_mesh(d / "textured.obj", units="m").untextured()
    return out


def scan_centre(mesh) -> np.ndarray:
    """A mesh's box centre in its own frame (the scenes place the scans re-centred on it; the
    catalogue meshes are centred already)."""
    return (mesh.vertices.min(0) + mesh.vertices.max(0)) / 2


def shape_gap(true_mesh, T_true: np.ndarray, cand_mesh, T_cand: np.ndarray, plane) -> float:
    """How different the candidate placed at its fit is from the object where it stands: the
    90th percentile (m) of the distances between the two surfaces above the table, both
    ways (a right mesh at a right pose: its pose error; a wrong mesh of nearly the same shape,
    a few mm)."""
    import open3d as o3d

    from nol_ros.mesh import sample_surface
    from nol_ros.reconstruction.registration import ray_caster

    gaps = []
    for (ma, Ta), (mb, Tb) in (((true_mesh, T_true), (cand_mesh, T_cand)),
                               ((cand_mesh, T_cand), (true_mesh, T_true))):
        P = sample_surface(ma.vertices, ma.faces, 4000, np.random.default_rng(0))[0]
        P = P @ Ta[:3, :3].T + Ta[:3, 3]
        P = P[plane.height(P) > 0.012]
        Q = (P - Tb[:3, 3]) @ Tb[:3, :3]
        d = ray_caster(mb.vertices, mb.faces).compute_distance(
            o3d.core.Tensor(Q.astype(np.float32))).numpy()
        gaps.append(float(np.percentile(d, 90)) if len(d) else float("nan"))
    return max(gaps)


def register(reg, mesh, prior, name: str) -> dict:
    """One registration with the default decision: accepted or refused, with its figures."""
    from nol_ros.reconstruction.registration import RegistrationError

    t0 = time.perf_counter()
    res, code, msg = None, "", ""
    try:
        res = reg.register(mesh.vertices, mesh.faces, prior_point=prior,
                           prior_radius_m=0.1, name=name)
    except RegistrationError as e:
        code, msg = e.code, str(e)
        res = getattr(e, "result", None)
    row = {"accepted": not code, "code": code, "message": msg,
           "s": time.perf_counter() - t0}
    if res is not None:
        row.update(res.to_json())
        # the rule before issue 21: the ranking score alone, accepted at 0.45 and above
        row["accepted_by_score"] = bool(res.score >= OLD_MIN_SCORE)
    return row


def run_scene(sd: SceneDef, out: Path, objects_dir: Path | None, all_cands: dict,
              no_prior: bool, same_set: bool) -> dict:
    from nol_ros.metrics import ate_rmse
    from nol_ros.reconstruction.registration import ObjectRegistrar, RegistrationError
    from nol_ros.selfannotate import SelfAnnotationConfig, measured_views, track_sequence

    # the candidates: every mesh, or (same_set) the meshes of the scene's own set (the
    # catalogue for a synthetic scene, the scans for a real one)
    cands = {k: m for k, m in all_cands.items()
             if not same_set or (k in CATALOGUE_NAMES) == (sd.kind == "synthetic")}
    t0 = time.perf_counter()
    if sd.kind == "synthetic":
        seq, objs = synthetic_scene(sd, out / "data" / sd.name)
    else:
        seq, objs = real_scene(sd, out / "data" / sd.name, objects_dir)
    t_data = time.perf_counter() - t0
    cfg = SelfAnnotationConfig()
    t0 = time.perf_counter()
    if sd.poses == "truth":
        tracker = fused_at(seq, [f.T_world_camera for f in seq.frames], cfg)
    else:
        tracker = track_sequence(seq, cfg)
    pts, _ = tracker.extract_point_cloud()
    res = tracker.result
    poses = np.array([f.T_world_camera for f in res.frames if f.ok])
    t1 = time.perf_counter()
    views = measured_views(seq, [f.T_world_camera for f in res.frames], res.ok,
                           cfg.registration)
    t_views = time.perf_counter() - t1
    reg = ObjectRegistrar(pts, poses, cfg.registration, views)
    t_track = time.perf_counter() - t0
    ate, A = ate_rmse([f.T_world_camera for f in res.frames],
                      [f.T_world_camera for f in seq.frames])
    A_inv = np.linalg.inv(A)
    truth = {}
    for name, T_gt in objs:
        # the object in the tracked world (its centre is the prior), for its candidate mesh's
        # own frame (the scans were placed re-centred on their boxes)
        T = A_inv @ T_gt
        T[:3, 3] -= T[:3, :3] @ scan_centre(cands[name])
        truth[name] = T
    print(f"{sd.name}: {len(seq.frames)} frames, ATE {ate * 100:.2f} cm, "
          f"{len(reg.clusters)} clusters; data {t_data:.0f} s, tracking {t_track:.0f} s",
          flush=True)
    rows = []
    for obj, T in truth.items():
        centre = T[:3, :3] @ scan_centre(cands[obj]) + T[:3, 3]
        for cand, mesh in cands.items():
            row = register(reg, mesh, centre, cand)
            row.update(scene=sd.name, object=obj, candidate=cand, right=cand == obj,
                       prior=True)
            if "T_world_object" in row:
                row["t_err_m"] = _centre_error(row, mesh, T, cands[obj])
                row["shape_gap_m"] = shape_gap(cands[obj], T, mesh,
                                               np.array(row["T_world_object"]), reg.plane)
            rows.append(row)
            _print(row)
    # the cost of the check: each right mesh registered with it and without it (the same
    # registrar, its views taken away: the decision on the score alone), alternately, 2 times
    timing = []
    bare = copy.copy(reg)
    bare._views, bare.camera_poses = None, None
    for obj, T in truth.items():
        centre = T[:3, :3] @ scan_centre(cands[obj]) + T[:3, 3]
        t = {"with": [], "without": []}
        for _ in range(2):
            for key, r in (("without", bare), ("with", reg)):
                t0 = time.perf_counter()
                try:
                    r.register(cands[obj].vertices, cands[obj].faces, prior_point=centre,
                               prior_radius_m=0.1, name=obj)
                except RegistrationError:
                    pass
                t[key].append(time.perf_counter() - t0)
        timing.append({"object": obj, "with_s": min(t["with"]),
                       "without_s": min(t["without"])})
        print(f"  {sd.name} {obj}: registration {timing[-1]['without_s']:.2f} s without the "
              f"check, {timing[-1]['with_s']:.2f} s with it", flush=True)
    if no_prior:
        for cand, mesh in cands.items():
            row = register(reg, mesh, None, cand)
            row.update(scene=sd.name, object="", candidate=cand, right=cand in truth,
                       prior=False)
            if "T_world_object" in row and cand in truth:
                row["t_err_m"] = _centre_error(row, mesh, truth[cand], mesh)
                row["right"] = row["t_err_m"] < 0.02   # found at its own object
            rows.append(row)
            _print(row)
    return {"scene": sd.name, "frames": len(seq.frames), "poses": sd.poses, "ate_m": ate,
            "clusters": len(reg.clusters), "data_s": t_data, "tracking_s": t_track,
            "views_s": t_views, "timing": timing, "objects": list(truth), "rows": rows}


def fused_at(seq, poses: list[np.ndarray], cfg):
    """The self-annotation's TSDF of ``seq`` integrated at the given camera poses instead of
    tracked ones (a tracker whose result holds them)."""
    from nol_ros.reconstruction.tracking import ReconstructionResult, RgbdTracker, TrackResult

    tracker = RgbdTracker(seq.intrinsics, cfg.tracker)
    tracker.result = ReconstructionResult([TrackResult(k, np.asarray(T), True, 1.0, 0.0, True)
                                           for k, T in enumerate(poses)])
    tracker.integrate_frames(lambda k: (seq.frames[k].load_rgb(), seq.frames[k].load_depth()))
    return tracker


def _centre_error(row: dict, mesh, T_true: np.ndarray, true_mesh) -> float:
    """Distance (m) between the centre of the candidate's box at its fit and the object's."""
    T = np.array(row["T_world_object"])
    a = T[:3, :3] @ scan_centre(mesh) + T[:3, 3]
    return float(np.linalg.norm(a - (T_true[:3, :3] @ scan_centre(true_mesh) + T_true[:3, 3])))


def _print(row: dict) -> None:
    ev = row.get("evidence") or {}
    figs = " ".join(f"{k} {v:.2f}" for k, v in ev.items() if isinstance(v, float))
    print(f"  {row['scene']} {row['object'] or '(no prior)'} <- {row['candidate']}: "
          f"{'accepted' if row['accepted'] else row['code']}"
          f"{' (right)' if row['right'] else ''} score {row.get('score', float('nan')):.2f} "
          f"{figs} [{row['s']:.1f} s]", flush=True)


def _value(row: dict, f: str) -> float:
    """A figure of the decision: the ranking score, or one of the fit evidence."""
    return row["score"] if f == "score" else row["evidence"][f]


def _refuses(row: dict, f: str, bars: dict) -> bool:
    kind, bar = bars[f]
    return _value(row, f) < bar if kind == "min" else _value(row, f) > bar


def summary(rows: list[dict], bars: dict) -> dict:
    """Per figure of the decision (bars: name -> ("min" | "max", bar)): the worst value of a
    right registration; among the wrong ones this figure alone refuses (they pass every other
    bar) the one closest to acceptance, and the margin between the two (the room the bar has:
    positive = the two sides are apart). Then the counts (wrong meshes by error code, and by how
    many figures refuse each), and the rule before issue 21 (score >= 0.45) on the same fits."""
    out: dict = {"figures": {}}
    right = [r for r in rows if r["right"] and r.get("evidence")]
    wrong = [r for r in rows if not r["right"] and r.get("evidence")]
    for f, (kind, bar) in bars.items():
        rv = [_value(r, f) for r in right]
        only = [r for r in wrong if _refuses(r, f, bars)
                and not any(_refuses(r, g, bars) for g in bars if g != f)]
        worst = (min(rv) if kind == "min" else max(rv)) if rv else None
        best, closest = None, None
        if only:
            c = max(only, key=lambda r: _value(r, f) * (1 if kind == "min" else -1))
            best = _value(c, f)
            closest = f"{c['scene']}: {c['object'] or '(no prior)'} <- {c['candidate']}"
        out["figures"][f] = {
            "kind": kind, "bar": bar, "worst_right": worst, "wrong_only_this_refuses":
            len(only), "closest_wrong": best, "closest_wrong_pair": closest,
            "margin": None if worst is None or best is None else
            (worst - best if kind == "min" else best - worst)}
    n_r = sum(1 for r in rows if r["right"])
    n_w = sum(1 for r in rows if not r["right"])
    out["right_accepted"] = f"{sum(r['accepted'] for r in rows if r['right'])}/{n_r}"
    out["wrong_refused"] = f"{sum(not r['accepted'] for r in rows if not r['right'])}/{n_w}"
    codes: dict = {}
    for r in rows:
        if not r["right"]:
            codes[r["code"] or "accepted"] = codes.get(r["code"] or "accepted", 0) + 1
    out["wrong_by_code"] = codes
    n_by: dict = {}
    for r in wrong:
        k = sum(_refuses(r, f, bars) for f in bars)
        n_by[k] = n_by.get(k, 0) + 1
    out["wrong_by_number_of_refusing_figures"] = dict(sorted(n_by.items()))
    out["wrong_accepted"] = [f"{r['scene']}: {r['object'] or '(no prior)'} <- {r['candidate']}"
                             for r in rows if not r["right"] and r["accepted"]]
    out["right_refused"] = [f"{r['scene']}: {r['object'] or '(no prior)'} ({r['code']})"
                            for r in rows if r["right"] and not r["accepted"]]
    sr = [r["score"] for r in rows if r["right"] and "score" in r]
    sw = [r["score"] for r in rows if not r["right"] and "score" in r]
    out["old_rule"] = {
        "right_accepted": f"{sum(bool(r.get('accepted_by_score')) for r in rows if r['right'])}"
                          f"/{n_r}",
        "wrong_refused": f"{sum(not r.get('accepted_by_score') for r in rows if not r['right'])}"
                         f"/{n_w}",
        "min_right_score": min(sr) if sr else None, "max_wrong_score": max(sw) if sw else None}
    return out


def _summary_lines(s: dict, title: str) -> list[str]:
    def g(x):
        return "-" if x is None else f"{x:.3f}"
    lines = ["", f"{title}: right accepted {s['right_accepted']}, wrong refused "
             f"{s['wrong_refused']} ({', '.join(f'{k} {v}' for k, v in s['wrong_by_code'].items())}"
             f"; refused by 0/1/2/.. figures: {s['wrong_by_number_of_refusing_figures']})"
             + (f"; wrong accepted: {s['wrong_accepted']}" if s["wrong_accepted"] else "")
             + (f"; right refused: {s['right_refused']}" if s["right_refused"] else ""),
             "", "| figure | bar | worst right | wrong refused by it alone | closest of those "
             "| margin |", "|---|---|---|---|---|---|"]
    for k, v in s["figures"].items():
        lines.append(f"| {k} | {v['kind']} {v['bar']} | {g(v['worst_right'])} | "
                     f"{v['wrong_only_this_refuses']} | {g(v['closest_wrong'])} "
                     f"({v['closest_wrong_pair'] or '-'}) | {g(v['margin'])} |")
    o = s["old_rule"]
    lines += ["", f"Before (score >= {OLD_MIN_SCORE}) on the same fits: right accepted "
              f"{o['right_accepted']}, wrong refused {o['wrong_refused']}; lowest right score "
              f"{g(o['min_right_score'])}, highest wrong score {g(o['max_wrong_score'])}."]
    return lines


def table(res: dict) -> str:
    """Markdown: per scene object the right mesh's decision and figures, the wrong meshes
    refused; then the summaries (all, synthetic, real) and the cost of the check."""
    lines = ["| scene | object | right mesh | seen_fit | free | beyond | in table (mm) | score "
             "| wrong refused | old rule: wrong accepted (max score) |", "|" + "---|" * 10]
    for sc in res["scenes"]:
        for obj in sc["objects"] + [""]:
            rs = [r for r in sc["rows"] if r["object"] == obj]
            if not rs:
                continue
            r = next((r for r in rs if r["candidate"] == obj), None)
            wrong = [x for x in rs if not x["right"]]
            ev = (r or {}).get("evidence") or {}
            old = [x for x in wrong if x.get("accepted_by_score")]
            mx = max((x.get("score", 0.0) for x in wrong), default=float("nan"))

            def f(k, ev=ev, scale=1.0, fmt=".2f"):
                return f"{ev[k] * scale:{fmt}}" if k in ev else "-"
            lines.append(
                f"| {sc['scene']} | {obj or '(no prior, all meshes)'} | "
                f"{('accepted' if r['accepted'] else r['code']) if r else '-'} | "
                f"{f('seen_fit')} | {f('free_fraction')} | {f('beyond_ratio')} | "
                f"{f('below_table_m', scale=1000, fmt='.1f')} | "
                f"{(r or {}).get('score', float('nan')):.2f} | "
                f"{sum(not x['accepted'] for x in wrong)}/{len(wrong)} | "
                f"{len(old)} ({mx:.2f}) |")
    for key, title in (("all", "All scenes"), ("synthetic", "Synthetic scenes"),
                       ("real", "Real scans")):
        if res["summary"].get(key):
            lines += _summary_lines(res["summary"][key], title)
    lines += ["", "| scene | SceneViews (depth images read) s | object | registration without "
              "the check s | with it s | ratio |", "|---|---|---|---|---|---|"]
    for sc in res["scenes"]:
        for t in sc.get("timing", []):
            lines.append(f"| {sc['scene']} | {sc['views_s']:.2f} | {t['object']} | "
                         f"{t['without_s']:.2f} | {t['with_s']:.2f} | "
                         f"{t['with_s'] / t['without_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="build/registration_refusal")
    ap.add_argument("--objects", default=str(DEFAULT_OBJECTS),
                    help="folder of scanned objects (NAME/textured.obj); '' = synthetic only")
    ap.add_argument("--scenes", default=",".join(s.name for s in SCENES))
    ap.add_argument("--no-prior-runs", action="store_true",
                    help="skip the registrations without a prior point")
    ap.add_argument("--all-candidates", action="store_true",
                    help="every mesh at every object (default: the meshes of the scene's set)")
    ap.add_argument("--merge", default="",
                    help="only summarise: results.json files of runs, comma-separated")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.merge:   # runs of scene groups side by side, summarised together
        runs = [json.loads(Path(p).read_text()) for p in a.merge.split(",")]
        res = {k: [r[k] for r in runs] for k in ("command", "date", "machine", "load_start",
                                                 "load_end")}
        res.update(bars=runs[0]["bars"], scenes=[sc for r in runs for sc in r["scenes"]])
        finish(res, out)
        return
    objects_dir = Path(a.objects) if a.objects else None
    by_name = {s.name: s for s in SCENES}
    todo = [by_name[n] for n in a.scenes.split(",")]   # in the order given
    if objects_dir is None:
        todo = [s for s in todo if s.kind == "synthetic"]
    # the catalogue meshes as the pipeline receives them: from the first synthetic world
    first = next(s for s in SCENES if s.kind == "synthetic")
    synthetic_scene(first, out / "data" / first.name)
    cands = candidate_meshes(out / "data" / first.name / "models", objects_dir)
    res = {"command": "python " + " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"),
           "machine": platform.node(), "cpus": os.cpu_count(),
           "load_start": os.getloadavg()[0], "bars": decision_bars(), "scenes": []}
    for sd in todo:
        res["scenes"].append(run_scene(sd, out, objects_dir, cands, not a.no_prior_runs,
                                       not a.all_candidates))
        res["load_end"] = os.getloadavg()[0]
        (out / "results.json").write_text(json.dumps(res, indent=1))
    finish(res, out)


def finish(res: dict, out: Path) -> None:
    """The summaries (all, synthetic, real), results.json and table.md."""
    kind = {s.name: s.kind for s in SCENES}
    res["summary"] = {}
    for key in ("all", "synthetic", "real"):
        rows = [r for s in res["scenes"] for r in s["rows"]
                if key == "all" or kind[s["scene"]] == key]
        if rows:
            res["summary"][key] = summary(rows, res["bars"])
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "table.md").write_text(table(res))
    print(table(res))


def decision_bars() -> dict:
    """The bars of the default decision: figure -> ("min" | "max", bar)."""
    from nol_ros.reconstruction.registration import RegistrationConfig

    c = RegistrationConfig()
    return {"score": ("min", c.min_score), "seen_fit": ("min", c.min_seen_fit),
            "free_fraction": ("max", c.max_free_fraction),
            "beyond_ratio": ("max", c.max_beyond_ratio),
            "below_table_m": ("max", c.max_below_table_m)}


if __name__ == "__main__":
    main()
