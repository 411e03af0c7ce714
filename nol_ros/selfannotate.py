"""The offline self-annotation chain: RGB-D sequence (+ meshes) -> object workspace.

    camera tracking + TSDF -> support plane + object registration (or model-free cut-out)
    -> per-frame object poses, masks, vertex visibility -> view selection -> source crops

Runs from files (a BOP/SMOT-layout sequence or a bag read into a :class:`Sequence`), writes
every artefact into the workspace so later stages (NOL) restart from there:

    WORKSPACE/
      report.json                 figures of every stage (and errors per object)
      trajectory.json             per frame: stamp, T_world_camera, ok, fitness, keyframe
      scene_mesh.ply              TSDF mesh (world frame)
      objects/NAME/
        mesh.ply                  the mesh used (given, or cut out of the scene)
        object.json               T_world_object, registration figures, symmetric flag
        frames.json               per frame: T_camera_object, visib_fract
        views.json                selected source views: frame, T_camera_object, crop K, box
        masks/%06d.png            visible mask per annotated frame (where the object is seen)
        views/%06d_rgb.png, %06d_mask.png, %06d_depth.png (crops, crop_size px; depth mm)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from nol_ros.camera import crop_image, square_crop_box
from nol_ros.errors import ConfigError, InputError, NolError
from nol_ros.io_utils import (
    atomic_write_image,
    atomic_write_json,
    atomic_write_mesh,
    atomic_write_with,
)
from nol_ros.mesh import Mesh, load_mesh
from nol_ros.metrics import ate_rmse
from nol_ros.progress import ProgressFn, noop_progress
from nol_ros.rasterizer import Scene
from nol_ros.reconstruction.annotate import AnnotateConfig, annotate_frame, observable_vertices
from nol_ros.reconstruction.model_free import cut_out_object
from nol_ros.reconstruction.registration import (
    ObjectRegistrar,
    RegistrationConfig,
    SceneViews,
)
from nol_ros.reconstruction.tracking import RgbdTracker, TrackerConfig
from nol_ros.views.selection import SequenceSelectionConfig, select_sequence_views
from nol_ros.workspace import AnnotationFiles


class TrackingLostError(NolError):
    """The camera tracking was lost over a stretch of the sequence: its poses are guesses."""

    code = "TRACKING_LOST"


def lost_stretches(result, min_len: int) -> list[tuple[int, int]]:
    """(first, last) frame positions of every run of at least ``min_len`` consecutive
    untrusted frames (tracking lost there)."""
    out, start = [], None
    ok = list(result.ok) + [True]
    for k, good in enumerate(ok):
        if not good and start is None:
            start = k
        elif good and start is not None:
            if k - start >= max(1, min_len):
                out.append((start, k - 1))
            start = None
    return out


@dataclass(frozen=True)
class ObjectSpec:
    """One object to learn: its name and mesh (metres), or model-free (no mesh: cut out of the
    reconstruction) with a prior point on the object or a box around it (world frame of the
    self-annotation = the first camera's frame, metres)."""

    name: str
    mesh_path: str = ""
    obj_id: int = 0
    symmetric: bool = False
    prior_point: tuple[float, float, float] | None = None  # world frame, metres
    model_free: bool = False
    # model-free: axis-aligned world box ((x, y, z) min, (x, y, z) max) holding the object
    prior_box: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None


@dataclass(frozen=True)
class SelfAnnotationConfig:
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    annotate: AnnotateConfig = field(default_factory=AnnotateConfig)
    selection: SequenceSelectionConfig = field(default_factory=SequenceSelectionConfig)
    annotate_step: int = 1          # annotate every n-th frame (visibility for view selection)
    crop_size: int = 256
    min_crop_half: int = 128        # NOL: half side max(h/2, w/2, 128 px)
    max_vertices: int = 4000        # vertices used for visibility bookkeeping
    use_odometry_prior: bool = True
    # refuse a sequence whose tracking was lost (runs of lost_after_failures or more untrusted
    # frames; TrackingLostError names them) instead of learning from guessed poses ...
    refuse_lost_tracking: bool = True
    max_lost_fraction: float = 0.1      # ... when more than this share of the frames was lost
    # flag an object when the sequence saw less than this fraction of the surface that a
    # camera above the table could see (a sequence too short to go around the object)
    min_observed_fraction: float = 0.8

    def __post_init__(self):
        # bounds on what a request's options_yaml can make big (a 100000 px crop would allocate
        # tens of GB per view)
        if not 16 <= self.crop_size <= MAX_CROP_SIZE or not 1 <= self.min_crop_half <= 4096:
            raise ConfigError(f"self_annotation.crop_size {self.crop_size} must be in [16, "
                              f"{MAX_CROP_SIZE}] px and min_crop_half {self.min_crop_half} in "
                              "[1, 4096] px (NOL uses 256 and 128)")
        if self.annotate_step < 1 or not 3 <= self.max_vertices <= 1_000_000:
            raise ConfigError(f"self_annotation.annotate_step {self.annotate_step} must be >= 1 "
                              f"and max_vertices {self.max_vertices} in [3, 1000000]")
        if not (0.0 <= self.max_lost_fraction <= 1.0 and 0.0 <= self.min_observed_fraction <= 1.0):
            raise ConfigError("self_annotation.max_lost_fraction and min_observed_fraction are "
                              "fractions in [0, 1]")


MAX_CROP_SIZE = 2048  # self_annotation.crop_size: the largest view crop (px) a config may ask for


def _write_ply(path: Path, V: np.ndarray, F: np.ndarray, colors: np.ndarray | None = None):
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(V),
                                  o3d.utility.Vector3iVector(np.asarray(F, np.int32)))
    if colors is not None:
        m.vertex_colors = o3d.utility.Vector3dVector(colors)
    atomic_write_mesh(path, m)


def track_sequence(seq, cfg: SelfAnnotationConfig, progress: ProgressFn = noop_progress,
                   T_odom_cameras: list[np.ndarray] | None = None) -> RgbdTracker:
    """Track every frame of ``seq`` (a :class:`nol_ros.datasets.sequence.Sequence`)."""
    n = len(seq.frames)
    if n < 2:
        raise InputError(f"the sequence has {n} frame(s); self-annotation needs a sequence that "
                         "moves around the objects (tens to hundreds of frames)")
    check_intrinsics(seq)
    frames = seq.frames

    def load(i: int) -> tuple[np.ndarray, np.ndarray]:
        return frames[i].load_rgb(), frames[i].load_depth()

    priors = T_odom_cameras if cfg.use_odometry_prior else None
    tracker = track_frames(seq.intrinsics, n, load, cfg.tracker, progress, priors,
                           [fr.index for fr in frames], stamps_ns=[fr.stamp_ns for fr in frames])
    lost = lost_stretches(tracker.result, cfg.tracker.lost_after_failures)
    n_lost = sum(b - a + 1 for a, b in lost)
    # a short loss the tracker recovered from (re-localised) costs only those frames, which are
    # never used (untrusted); a long one means the sequence's poses cannot be trusted
    if lost and cfg.refuse_lost_tracking and n_lost > cfg.max_lost_fraction * n:
        names = ", ".join(f"{frames[a].index}-{frames[b].index}" if b > a else
                          f"{frames[a].index}" for a, b in lost)
        raise TrackingLostError(
            f"camera tracking was lost over {n_lost} of {n} frames (frames {names}): their "
            "poses are guesses and would give wrong masks and labels. Record the stretch again "
            "moving more slowly (or with odometry), or learn from a sequence without it "
            "(e.g. export/replay only the frames before the loss)")
    return tracker


def track_frames(intrinsics, n: int, load_frame: Callable[[int], tuple[np.ndarray, np.ndarray]],
                 config: TrackerConfig = TrackerConfig(), progress: ProgressFn = noop_progress,
                 T_odom_cameras: list[np.ndarray | None] | None = None,
                 names: list[int] | None = None, integrate: bool = True,
                 stamps_ns: list[int] | None = None) -> RgbdTracker:
    """The offline tracking path (what the self-annotation chain, ``nol-ros track`` and
    bench/bench_tracking.py run): every frame in order, loop closure, the keyframes' bundle
    adjustment, the trajectory smoother, then the TSDF from the final poses
    (``integrate=False``: poses only). ``load_frame(i) -> (rgb (H, W, 3) uint8, depth (H, W)
    float32 m)``; T_odom_cameras: a motion prior per frame (None entries: none for that
    frame); stamps_ns: the frames' times (30 Hz without them; the smoother reads them)."""
    tracker = RgbdTracker(intrinsics, config, search_loops=True)
    try:
        for k in range(n):
            rgb, depth = load_frame(k)
            if not np.any(depth > 0):
                name = names[k] if names is not None else k
                raise InputError(f"frame {name} has no valid depth; check the depth "
                                 "files/topic (16UC1 mm or 32FC1 m) and the depth scale")
            tracker.process(rgb, depth, None if T_odom_cameras is None else T_odom_cameras[k],
                            None if stamps_ns is None else int(stamps_ns[k]))
            if k % 10 == 0 or k == n - 1:
                progress("tracking", (k + 1) / n, f"frame {k + 1}/{n}")
        if config.loop_closure:
            progress("loop_closure", 0.0, f"{len(tracker.keyframes)} keyframes")
            tracker.close_loops()
        if config.bundle_adjustment:
            progress("bundle_adjustment", 0.0, f"{len(tracker.keyframes)} keyframes")
            tracker.adjust_bundle()
        if config.smoothing:
            progress("smoothing", 0.0, f"{len(tracker.result.frames)} frames")
            tracker.smooth()
    except BaseException:
        # a bad frame, a cancelled job: the loop checks still queued would run on for
        # seconds and keep the tracker (its TSDF) alive
        tracker.cancel_loop_checks()
        raise
    if integrate and config.reference != "model":
        tracker.integrate_frames(load_frame, progress)
    return tracker


def check_intrinsics(seq) -> None:
    """Refuse intrinsics that cannot belong to the sequence's images: another image size, or a
    principal point outside the image (K of another resolution, or a transposed matrix)."""
    intr = seq.intrinsics
    fr = seq.frames[0]
    rgb, depth = fr.load_rgb(), fr.load_depth()
    if rgb.shape[:2] != (intr.height, intr.width) or depth.shape != rgb.shape[:2]:
        raise InputError(f"frame {fr.index}: rgb is {rgb.shape[1]}x{rgb.shape[0]}, depth "
                         f"{depth.shape[1]}x{depth.shape[0]}, but the intrinsics are for "
                         f"{intr.width}x{intr.height}; give the camera's intrinsics for this "
                         "resolution (and depth registered to the colour image)")
    if not (0 < intr.cx < intr.width and 0 < intr.cy < intr.height):
        raise InputError(f"principal point ({intr.cx:.1f}, {intr.cy:.1f}) lies outside the "
                         f"{intr.width}x{intr.height} image: the intrinsics belong to another "
                         "resolution or K is transposed (Open3D stores it column-major)")


def measured_views(seq, T_world_cameras: list[np.ndarray], ok, cfg: RegistrationConfig
                   ) -> SceneViews | None:
    """The depth images of up to ``cfg.evidence_views`` of the sequence's frames, spread over
    the trusted ones (``ok``), at their poses ``T_world_cameras`` (one per frame): what every
    registration is checked against (None: no trusted frame)."""
    good = [k for k, g in enumerate(ok) if g]
    if not good:
        return None
    pick = [good[i] for i in SceneViews.pick(len(good), cfg.evidence_views)]
    return SceneViews.from_frames(seq.intrinsics, np.array([T_world_cameras[k] for k in pick]),
                                  [seq.frames[k].load_depth() for k in pick],
                                  cfg.evidence_downscale, cfg.evidence_near_px)


def run_self_annotation(seq, objects: list[ObjectSpec], workspace: str | Path,
                        cfg: SelfAnnotationConfig = SelfAnnotationConfig(),
                        progress: ProgressFn = noop_progress,
                        T_odom_cameras: list[np.ndarray] | None = None) -> dict:
    """Run the whole chain and write the workspace; returns the report (also report.json).

    A failing object (not found, ambiguous, not covered) is reported with its error code and
    message and the other objects go on; an unusable sequence raises.
    """
    ws = Path(workspace)
    run = AnnotationFiles(ws)
    ws.mkdir(parents=True, exist_ok=True)
    if not objects:
        raise InputError("no objects given; name at least one object with its mesh")
    report: dict = {"sequence": getattr(seq, "name", ""), "n_frames": len(seq.frames),
                    "config": _jsonable(asdict(cfg)), "objects": {}, "timing_s": {},
                    "cpu_s": {}}
    t0, c0 = time.perf_counter(), time.process_time()
    tracker = track_sequence(seq, cfg, progress, T_odom_cameras)
    res = tracker.result
    report["timing_s"]["tracking"] = time.perf_counter() - t0
    report["cpu_s"]["tracking"] = time.process_time() - c0
    report["tracking"] = {"frames_ok": int(res.ok.sum()), "frames_failed": int((~res.ok).sum()),
                          "keyframes": int(sum(f.keyframe for f in res.frames)),
                          "loop_closures": len(tracker.loop_closures),
                          "fps": len(res.frames) / max(report["timing_s"]["tracking"], 1e-9)}
    traj = [{"index": fr.index, "stamp_ns": fr.stamp_ns,
             "T_world_camera": r.T_world_camera.tolist(),
             "ok": r.ok, "fitness": r.fitness, "inlier_rmse_m": r.inlier_rmse,
             "keyframe": r.keyframe, "message": r.message}
            for fr, r in zip(seq.frames, res.frames)]
    atomic_write_json(run.trajectory, traj)

    t1, c1 = time.perf_counter(), time.process_time()
    progress("scene", 0.0, "extracting the scene")
    scene_mesh = tracker.extract_mesh()
    _write_ply(run.scene_mesh, np.asarray(scene_mesh.vertices),
               np.asarray(scene_mesh.triangles), np.asarray(scene_mesh.vertex_colors))
    pts, _ = tracker.extract_point_cloud()
    poses_ok = np.array([r.T_world_camera for r in res.frames if r.ok])
    registrar = ObjectRegistrar(pts, poses_ok, cfg.registration,
                                measured_views(seq, [r.T_world_camera for r in res.frames],
                                               res.ok, cfg.registration))
    report["timing_s"]["scene"] = time.perf_counter() - t1
    report["cpu_s"]["scene"] = time.process_time() - c1

    # -- register every object ------------------------------------------------------------------
    t2, c2 = time.perf_counter(), time.process_time()
    meshes, T_wos, specs = [], [], []
    for oi, spec in enumerate(objects):
        entry: dict = {"obj_id": spec.obj_id, "symmetric": spec.symmetric}
        report["objects"][spec.name] = entry
        progress("registration", oi / len(objects), spec.name)
        try:
            if spec.model_free:
                if spec.prior_point is None and spec.prior_box is None:
                    raise InputError(f"{spec.name}: model-free needs a prior_point on the object "
                                     "or a prior_box around it")
                box = (None, None) if spec.prior_box is None else (
                    np.asarray(spec.prior_box[0], float), np.asarray(spec.prior_box[1], float))
                cm = cut_out_object(registrar.points, registrar.plane,
                                    None if spec.prior_point is None
                                    else np.asarray(spec.prior_point, float), box[0], box[1])
                mesh = Mesh(vertices=cm.vertices, faces=cm.faces, name=spec.name)
                T_wo = cm.T_world_object
                entry["registration"] = {"model_free": True, "n_points": cm.n_points,
                                         "closed": cm.closed, "n_faces": len(cm.faces),
                                         "T_world_object": T_wo.tolist()}
            else:
                mesh = load_mesh(spec.mesh_path)
                prior = None if spec.prior_point is None else np.asarray(spec.prior_point, float)
                r = registrar.register(mesh.vertices, mesh.faces, prior_point=prior,
                                       name=spec.name)
                T_wo = r.T_world_object
                entry["registration"] = r.to_json()
        except NolError as e:
            entry.update(error_code=e.code, error=str(e))
            continue
        odir = run.object(spec.name)
        _write_ply(odir.mesh, mesh.vertices, mesh.faces)
        atomic_write_json(odir.object_json, {"name": spec.name, "obj_id": spec.obj_id,
                                                 "symmetric": spec.symmetric,
                                                 "T_world_object": T_wo.tolist(),
                                                 "registration": entry["registration"]})
        meshes.append(mesh)
        T_wos.append(T_wo)
        specs.append(spec)
    report["timing_s"]["registration"] = time.perf_counter() - t2
    report["cpu_s"]["registration"] = time.process_time() - c2
    if not meshes:
        atomic_write_json(run.report, report)
        return report

    # -- annotate frames: poses, masks, vertex visibility ----------------------------------------
    t3, c3 = time.perf_counter(), time.process_time()
    scene = Scene(meshes, T_wos)
    rng = np.random.default_rng(0)
    vsub = [np.sort(rng.choice(len(m.vertices), min(cfg.max_vertices, len(m.vertices)),
                               replace=False)) for m in meshes]
    n = len(seq.frames)
    step = max(1, cfg.annotate_step)
    idxs = [k for k in range(0, n, step) if res.frames[k].ok]
    vis = [np.zeros((len(idxs), len(v)), bool) for v in vsub]
    per_obj_frames: list[list[dict]] = [[] for _ in meshes]
    T_co_all = [np.zeros((len(idxs), 4, 4)) for _ in meshes]
    for j, k in enumerate(idxs):
        fr = seq.frames[k]
        anns = annotate_frame(scene, meshes, T_wos, seq.intrinsics, res.frames[k].T_world_camera,
                              fr.load_depth(), cfg.annotate)
        for i, a in enumerate(anns):
            if a.mask_visib.any():
                atomic_write_image(run.object(specs[i].name).mask(fr.index),
                                   a.mask_visib.astype(np.uint8) * 255)
            vis[i][j] = a.visible_vertices[vsub[i]]
            T_co_all[i][j] = a.T_camera_object
            per_obj_frames[i].append({"index": fr.index, "T_camera_object":
                                      a.T_camera_object.tolist(), "visib_fract": a.visib_fract,
                                      "px_count_visib": int(a.mask_visib.sum())})
        if j % 10 == 0 or j == len(idxs) - 1:
            progress("annotation", (j + 1) / len(idxs), f"frame {j + 1}/{len(idxs)}")
    report["timing_s"]["annotation"] = time.perf_counter() - t3
    report["cpu_s"]["annotation"] = time.process_time() - c3

    # -- view selection and source crops -----------------------------------------------------------
    t4, c4 = time.perf_counter(), time.process_time()
    for i, spec in enumerate(specs):
        entry = report["objects"][spec.name]
        odir = run.object(spec.name)
        atomic_write_json(odir.frames_json, per_obj_frames[i])
        try:
            sel = select_sequence_views(vis[i], T_co_all[i], cfg.selection)
        except NolError as e:
            entry.update(error_code=e.code, error=str(e))
            continue
        # how much of the object the sequence saw at all (coverage above is relative to it)
        obs = observable_vertices(meshes[i], T_wos[i], registrar.plane.normal,
                                  cfg=cfg.annotate)[vsub[i]]
        seen_seq = vis[i].any(0) & obs
        seen_sel = vis[i][sel.frames].any(0) & obs
        n_obs = max(int(obs.sum()), 1)
        observed = float(seen_seq.sum() / n_obs)
        if observed < cfg.min_observed_fraction:
            entry.setdefault("flags", []).append("INSUFFICIENT_COVERAGE")
            entry["warning"] = (f"{spec.name}: the sequence saw only {observed:.0%} of the "
                                "object's surface that a camera above the table could see "
                                f"(< {cfg.min_observed_fraction:.0%}); the selected views "
                                "cannot show the rest: record a sequence that goes around "
                                "the object")
        views = []
        for j in sel.frames:
            k = idxs[j]
            fr = seq.frames[k]
            ann = annotate_frame(scene, meshes, T_wos, seq.intrinsics,
                                 res.frames[k].T_world_camera, fr.load_depth(), cfg.annotate)[i]
            x0, y0, side = square_crop_box(ann.mask_visib, min_half=cfg.min_crop_half)
            S = cfg.crop_size
            rgb_c = crop_image(fr.load_rgb(), (x0, y0, side), S, "linear")
            mask_c = crop_image(ann.mask_visib.astype(np.uint8) * 255, (x0, y0, side), S,
                                "nearest")
            depth_c = crop_image(fr.load_depth(), (x0, y0, side), S, "nearest")
            K_crop = seq.intrinsics.crop_resize(x0, y0, side, side, S, S).K
            atomic_write_image(odir.view(fr.index, "rgb"), rgb_c)
            atomic_write_image(odir.view(fr.index, "mask"), mask_c)
            atomic_write_image(odir.view(fr.index, "depth"),
                               np.clip(np.round(depth_c * 1000), 0, 65535).astype(np.uint16))
            views.append({"frame": fr.index, "T_camera_object": ann.T_camera_object.tolist(),
                          "K_crop": K_crop.tolist(), "box_xy_side": [int(x0), int(y0), int(side)],
                          "visib_fract": ann.visib_fract})
        atomic_write_json(odir.views_json, {"crop_size": cfg.crop_size, "views": views,
                                               "coverage": sel.coverage,
                                               "stop_reason": sel.stop_reason})
        entry["selection"] = {"frames": [idxs[j] for j in sel.frames], "coverage": sel.coverage,
                              "n_seen_sequence": sel.n_seen_sequence,
                              "observed_fraction": observed,
                              "coverage_of_object": float(seen_sel.sum() / n_obs),
                              "stop_reason": sel.stop_reason}
        progress("view_selection", (i + 1) / len(specs), spec.name)
    report["timing_s"]["view_selection"] = time.perf_counter() - t4
    report["cpu_s"]["view_selection"] = time.process_time() - c4
    report["timing_s"]["total"] = time.perf_counter() - t0
    report["cpu_s"]["total"] = time.process_time() - c0
    try:
        write_report_png(ws, seq, res, [s.name for s in specs])
    except Exception as e:  # a picture must never fail the run
        report["report_png_error"] = str(e)
    atomic_write_json(run.report, report)
    return report


def write_report_png(ws: Path, seq, result, names: list[str]) -> Path:
    """report.png: camera trajectory (top view; ground truth aligned when the sequence has it)
    and, per object, the selected source views with their masks."""
    # lazy: matplotlib (~1 s) to import, loaded only when this runs
    import matplotlib

    matplotlib.use("Agg")
    # lazy: matplotlib (~1 s) to import, loaded only when this runs
    import matplotlib.pyplot as plt

    est = [f.T_world_camera for f in result.frames]
    P = np.array([T[:3, 3] for T in est])
    n_obj = len(names)
    fig = plt.figure(figsize=(14, 4 + 2.2 * n_obj))
    ax = fig.add_subplot(1 + n_obj, 1, 1) if n_obj else fig.add_subplot(111)
    gt = [f.T_world_camera for f in seq.frames]
    title = "camera trajectory (self-annotated)"
    if all(g is not None for g in gt) and len(gt) == len(est):
        ate, A = ate_rmse(est, gt)
        Pa = P @ A[:3, :3].T + A[:3, 3]
        G = np.array([g[:3, 3] for g in gt])
        ax.plot(G[:, 0], G[:, 1], "k-", lw=3, alpha=0.35, label="ground truth")
        ax.plot(Pa[:, 0], Pa[:, 1], "b-", lw=1, label="estimated (aligned)")
        title += f" vs ground truth: ATE {ate * 100:.2f} cm"
    else:
        ax.plot(P[:, 0], P[:, 1], "b-", lw=1, label="estimated")
    bad = np.array([not f.ok for f in result.frames])
    if bad.any():
        ax.plot(P[bad, 0], P[bad, 1], "rx", label="tracking failed")
    ax.set_aspect("equal")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=8)
    for i, name in enumerate(names):
        vdir = AnnotationFiles(ws).object(name)
        views = []
        if vdir.views_json.exists():
            views = json.loads(vdir.views_json.read_text())["views"]
        tiles = []
        for v in views[:8]:
            rgb = cv2.imread(str(vdir.view(v["frame"], "rgb")))[..., ::-1]
            m = cv2.imread(str(vdir.view(v["frame"], "mask")), 0) > 127
            t = rgb.copy()
            t[~m] = (t[~m] * 0.35).astype(np.uint8)
            tiles.append(cv2.resize(t, (128, 128), interpolation=cv2.INTER_AREA))
        axv = fig.add_subplot(1 + n_obj, 1, 2 + i)
        if tiles:
            axv.imshow(np.hstack(tiles))
        axv.set_title(f"{name}: {len(views)} selected views (masks shown)", fontsize=9)
        axv.axis("off")
    fig.tight_layout()
    out = AnnotationFiles(ws).report_png
    atomic_write_with(out, lambda tmp: fig.savefig(tmp, dpi=80))
    plt.close(fig)
    return out


def _jsonable(x):
    if isinstance(x, dict):
        return {k: _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def load_report(workspace: str | Path) -> dict:
    return json.loads(AnnotationFiles(Path(workspace)).report.read_text())
