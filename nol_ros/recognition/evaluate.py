"""Evaluation of the recognisers on BOP test scenes: mAP@IoU0.5, ADD(-S) recall, BOP CSV.

Detection (COCO-style AP at IoU 0.5, own implementation, tested against hand-computed cases):
per class, detections sorted by score are matched greedily to the unmatched ground-truth box of
highest IoU >= 0.5; a detection matching an *ignored* box (an instance visible less than
``min_visib_det``) counts neither way; AP is the 101-point interpolated area under the
precision/recall curve (as pycocotools); mAP is the mean over classes that have ground truth.

Pose: for every ground-truth instance visible at least ``min_visib_pose`` the top-scoring
detection of its class in that image is taken (one instance per object in the SMOT-like
scenes); the pose is correct when ADD (ADI for objects with symmetries in models_info) is below
10 % of the diameter. A missed detection or "no pose" counts as wrong.

Learnt frames: an object learnt from its *untextured* mesh is registered into the scene by
geometry alone, so its frame is only defined up to the rotations that map the mesh onto itself
(a box turned 180 deg about its height fits its own surface exactly; which side carries the
print is not in the mesh). A recogniser trained on that object's renders reports poses in the
frame it learnt, consistently, but the dataset's ground truth may use a twin. The recognition
benchmark therefore states the learnt frame (:func:`learnt_frame_symmetry`: the exact symmetry
of the mesh nearest to the self-annotation's error, measured on the *training* sequence) and
scores ADD against the ground truth re-expressed in it; the recall in the dataset's own frame
is reported beside it (``add_*_model_frame``). Any other registration error (a near-symmetric
bottle turned about its axis, a few degrees of tilt) stays an error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.datasets.bop import read_bop_scene, read_models_info
from nol_ros.errors import InputError
from nol_ros.geometry import look_at, quat_xyzw_from_R, rotation_error_deg
from nol_ros.io_utils import atomic_write_text
from nol_ros.mesh import Mesh, load_mesh
from nol_ros.metrics import add_s, geometric_symmetries
from nol_ros.progress import ProgressFn, noop_progress
from nol_ros.rasterizer import Scene, interpolate_vertex_attribute, shade
from nol_ros.recognition.appearance import ncc
from nol_ros.recognition.poses import bbox_centre
from nol_ros.workspace import ObjectFiles, Workspace


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def average_precision(scores: np.ndarray, tp: np.ndarray, n_gt: int) -> float:
    """101-point interpolated AP (pycocotools' recall thresholds 0, 0.01, .., 1) of detections
    with ``scores`` and true-positive flags ``tp`` against n_gt ground-truth instances."""
    if n_gt <= 0:
        raise InputError("average_precision needs at least one ground-truth instance")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, float), kind="mergesort")
    t = np.asarray(tp, bool)[order]
    ctp, cfp = np.cumsum(t), np.cumsum(~t)
    rec = ctp / n_gt
    prec = ctp / np.maximum(ctp + cfp, 1e-12)
    # precision envelope (monotone non-increasing from the right)
    for i in range(len(prec) - 2, -1, -1):
        prec[i] = max(prec[i], prec[i + 1])
    out = 0.0
    for r in np.linspace(0, 1, 101):
        k = np.searchsorted(rec, r, side="left")
        out += prec[k] if k < len(prec) else 0.0
    return float(out / 101)


@dataclass
class DetectionAccumulator:
    """Collects detections and ground truth image by image; :meth:`ap` per class, :meth:`map`."""

    iou_thresh: float = 0.5
    scores: dict = field(default_factory=dict)   # obj_id -> list of scores
    tps: dict = field(default_factory=dict)      # obj_id -> list of bool
    n_gt: dict = field(default_factory=dict)     # obj_id -> int

    def add_image(self, det_boxes: np.ndarray, det_scores: np.ndarray, det_labels: np.ndarray,
                  gt_boxes: np.ndarray, gt_labels: np.ndarray,
                  gt_ignore: np.ndarray | None = None) -> None:
        """Boxes xyxy (N, 4); labels = object ids; gt_ignore (M,) bool (do-not-care boxes)."""
        det_boxes = np.asarray(det_boxes, float).reshape(-1, 4)
        det_scores = np.asarray(det_scores, float).reshape(-1)
        det_labels = np.asarray(det_labels, int).reshape(-1)
        gt_boxes = np.asarray(gt_boxes, float).reshape(-1, 4)
        gt_labels = np.asarray(gt_labels, int).reshape(-1)
        ign = np.zeros(len(gt_labels), bool) if gt_ignore is None else \
            np.asarray(gt_ignore, bool).reshape(-1)
        if not (len(det_boxes) == len(det_scores) == len(det_labels)):
            raise InputError("detections: boxes, scores and labels differ in length")
        if not (len(gt_boxes) == len(gt_labels) == len(ign)):
            raise InputError("ground truth: boxes, labels and ignore flags differ in length")
        for c in set(gt_labels[~ign].tolist()):
            self.n_gt[c] = self.n_gt.get(c, 0) + int(np.sum((gt_labels == c) & ~ign))
        for c in set(det_labels.tolist()) | set(gt_labels.tolist()):
            di = np.flatnonzero(det_labels == c)
            gi = np.flatnonzero(gt_labels == c)
            di = di[np.argsort(-det_scores[di], kind="mergesort")]
            iou = box_iou(det_boxes[di], gt_boxes[gi]) if len(gi) else np.zeros((len(di), 0))
            used = np.zeros(len(gi), bool)
            for r, d in enumerate(di):
                best, bj = self.iou_thresh, -1
                # prefer unmatched real ground truth, then ignored boxes
                for j in range(len(gi)):
                    if used[j] or ign[gi[j]]:
                        continue
                    if iou[r, j] >= best:
                        best, bj = iou[r, j], j
                if bj >= 0:
                    used[bj] = True
                    self.scores.setdefault(c, []).append(det_scores[d])
                    self.tps.setdefault(c, []).append(True)
                    continue
                if any(ign[gi[j]] and iou[r, j] >= self.iou_thresh for j in range(len(gi))):
                    continue  # on a do-not-care instance
                self.scores.setdefault(c, []).append(det_scores[d])
                self.tps.setdefault(c, []).append(False)

    def ap(self) -> dict[int, float]:
        return {c: average_precision(np.asarray(self.scores.get(c, [])),
                                     np.asarray(self.tps.get(c, []), bool), n)
                for c, n in sorted(self.n_gt.items()) if n > 0}

    def map(self) -> float:
        aps = self.ap()
        if not aps:
            raise InputError("no ground-truth instances were added: cannot compute mAP")
        return float(np.mean(list(aps.values())))


# -- pose metrics on scenes ------------------------------------------------------------------------
@dataclass
class ObjectModel:
    """Evaluation model of one object: points (N, 3) m (mesh vertices), diameter m, symmetric;
    T_model_learnt: the frame the recogniser learnt the object in, in the model's frame (a
    symmetry of the untextured mesh, :func:`learnt_frame_symmetry`; None = the model's)."""

    obj_id: int
    name: str
    points: np.ndarray
    diameter: float
    symmetric: bool
    T_model_learnt: np.ndarray | None = None

    def in_learnt_frame(self, T_camera_model: np.ndarray) -> np.ndarray:
        """A ground-truth pose (model frame) re-expressed in the learnt frame, if there is one."""
        return T_camera_model if self.T_model_learnt is None else \
            T_camera_model @ self.T_model_learnt


def add_error(T_est: np.ndarray, T_gt: np.ndarray, model: ObjectModel,
              learnt_frame: bool = True) -> float:
    """ADD (ADI for symmetric objects) in metres, via nol_ros.metrics.add_s; T_gt is in the
    model's frame and is re-expressed in the learnt frame when the model has one (and
    learnt_frame)."""
    if learnt_frame:
        T_gt = model.in_learnt_frame(T_gt)
    return add_s(T_est[:3, :3], T_est[:3, 3], T_gt[:3, :3], T_gt[:3, 3], model.points,
                 model.symmetric)


def pose_error_parts(T_est: np.ndarray, T_gt: np.ndarray, model: ObjectModel,
                     up_axis: int = 2) -> tuple[float, float, float]:
    """(tilt deg, turn deg, translation error mm) of an estimate against the ground truth (in
    the learnt frame when the model has one): tilt = the angle between the estimated and the
    true model axis ``up_axis`` (z: the height of a standing object), turn = the rest of the
    rotation error, about that axis (swing-twist split of R_gt^T R_est), in [0, 180]. Tells a
    pose that is upright and in place but turned about its axis -- what a cylinder's texture
    alone has to fix -- from one that is off altogether."""
    T_gt = model.in_learnt_frame(T_gt)
    M = T_gt[:3, :3].T @ T_est[:3, :3]
    tilt = float(np.degrees(np.arccos(np.clip(M[up_axis, up_axis], -1.0, 1.0))))
    q = quat_xyzw_from_R(M)
    turn = abs((np.degrees(2.0 * np.arctan2(q[up_axis], q[3])) + 180.0) % 360.0 - 180.0)
    t_mm = float(np.linalg.norm(T_est[:3, 3] - T_gt[:3, 3]) * 1000.0)
    return tilt, float(turn), t_mm


def learnt_frame_symmetry(pairs: list[tuple[np.ndarray, np.ndarray]], vertices: np.ndarray,
                          faces: np.ndarray) -> tuple[np.ndarray, float, float]:
    """The frame an object was learnt in, from (T_camera_object learnt, T_camera_object ground
    truth) pairs of the same training frames: the exact symmetry S of the untextured mesh
    (nol_ros.metrics.geometric_symmetries, identity included) nearest to the mean rotation
    offset R_gt^T R_learnt. Returns (S as 4x4, the offset's angle to S in degrees -- what stays a
    registration error --, the offset's angle to the identity in degrees)."""
    if not pairs:
        raise InputError("no training frame with both a learnt and a ground-truth pose: the "
                         "learnt frame cannot be measured")
    M = sum(np.asarray(Tg)[:3, :3].T @ np.asarray(Te)[:3, :3] for Te, Tg in pairs)
    U, _, Vt = np.linalg.svd(M)
    C = U @ np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    syms = geometric_symmetries(vertices, faces)
    errs = [rotation_error_deg(C, S[:3, :3]) for S in syms]
    k = int(np.argmin(errs))
    return syms[k], float(errs[k]), float(rotation_error_deg(C, np.eye(3)))


def learnt_frames_from_views(models: dict[int, ObjectModel], object_dirs: dict[int, str | Path],
                             train_scene: str | Path, models_dir: str | Path) -> dict[int, dict]:
    """Set ``T_model_learnt`` of each model from a learnt object folder (its views.json:
    sequence frame id + learnt T_camera_object) and the BOP training scene it was learnt from
    (scene_gt.json with the same frame ids). Returns per object {"sym_deg": angle of the chosen
    symmetry, "residual_deg", "offset_deg", "frames"} for the report."""
    gt = json.loads((Path(train_scene) / "scene_gt.json").read_text())
    out = {}
    for oid, od in object_dirs.items():
        vj = ObjectFiles(Path(od)).views_json
        if not vj.is_file():
            raise InputError(f"'{vj}' does not exist: '{od}' is not a learnt object folder")
        pairs = []
        for v in json.loads(vj.read_text())["views"]:
            for a in gt.get(str(int(v["frame"])), []):
                if int(a["obj_id"]) == oid:
                    Tg = np.eye(4)
                    Tg[:3, :3] = np.asarray(a["cam_R_m2c"], float).reshape(3, 3)
                    Tg[:3, 3] = np.asarray(a["cam_t_m2c"], float) / 1000.0
                    pairs.append((np.asarray(v["T_camera_object"], float), Tg))
        m = load_mesh(Path(models_dir) / f"obj_{oid:06d}.ply")
        S, res, off = learnt_frame_symmetry(pairs, m.vertices, m.faces)
        models[oid].T_model_learnt = S
        out[oid] = {"sym_deg": rotation_error_deg(np.eye(3), S), "residual_deg": res,
                    "offset_deg": off, "frames": len(pairs)}
    return out


def learnt_frame_from_appearance(appearance: Mesh, textured: Mesh, mesh: Mesh,
                                 n_views: int = 6, size: int = 96
                                 ) -> tuple[np.ndarray, float, float]:
    """The frame an object's learnt appearance (vertex colours, learnt frame: a models folder's
    ``appearance`` mesh) is in, for a models folder whose learnt object folders are gone: the
    exact symmetry S of the untextured ``mesh`` (:func:`~nol_ros.metrics.geometric_symmetries`,
    the dataset's frame) under which the learnt colours look most like ``textured`` (the
    dataset's ground-truth texture). Both are rendered from ``n_views`` cameras around the
    object, 30 deg above it, in a ``size`` px window: the appearance at T_camera_learnt, the
    texture's albedo at T_camera_learnt @ S^-1; score = their normalised cross-correlation
    (:func:`~nol_ros.recognition.appearance.ncc`) over the pixels both cover. Returns (S (4, 4),
    its score, the best score of the symmetries more than 30 deg from S: how clearly the print
    chose)."""
    syms = geometric_symmetries(mesh.vertices, mesh.faces)
    c = bbox_centre(mesh.vertices)
    d = 1.25 * mesh.diameter
    intr = Intrinsics(float(size), float(size), (size - 1) / 2, (size - 1) / 2, size, size)
    tex_scene = Scene([textured], [np.eye(4)])
    # the cameras in the learnt frame (as the world): T_learnt_camera, and the appearance
    # rendered from all of them in one cast
    T_wcs = [look_at(c + d * np.array([np.cos(az) * np.cos(np.pi / 6),
                                       np.sin(az) * np.cos(np.pi / 6), np.sin(np.pi / 6)]), c)
             for az in 2 * np.pi * np.arange(n_views) / n_views]
    app_renders = Scene([appearance], [np.eye(4)]).render_batch(intr, T_wcs, normals=False)
    score = np.zeros(len(syms))
    for T_wc, ra in zip(T_wcs, app_renders):
        a = interpolate_vertex_attribute(ra, [appearance], [appearance.vertex_colors])
        # camera in the model frame: T_model_camera = S @ T_learnt_camera
        for j, rt in enumerate(tex_scene.render_batch(intr, [S @ T_wc for S in syms])):
            sel = ra.mask & rt.mask
            if sel.sum() < 20:
                continue
            b = shade(rt, [textured], ambient=1.0, diffuse=0.0)
            score[j] += float(ncc(a[sel], b[sel][None])[0]) / n_views
    best = int(np.argmax(score))
    far = [j for j, S in enumerate(syms)
           if rotation_error_deg(S[:3, :3], syms[best][:3, :3]) > 30.0]
    runner = float(score[far].max()) if far else float("nan")
    return syms[best], float(score[best]), runner


def learnt_frames_from_appearance(models: dict[int, ObjectModel], appearances: dict[int, Mesh],
                                  dataset_root: str | Path) -> dict[int, dict]:
    """Set ``T_model_learnt`` of each model whose learnt appearance is given, by
    :func:`learnt_frame_from_appearance` against the dataset's ground-truth textures
    (``DATASET/models_textured/obj_%06d.obj``) and untextured meshes (``DATASET/models``).
    Returns per object {"sym_deg", "score", "runner_up"} for the report."""
    root = Path(dataset_root)
    out = {}
    for oid, app in appearances.items():
        tex_path = root / "models_textured" / f"obj_{oid:06d}.obj"
        if not tex_path.is_file():
            raise InputError(f"'{tex_path}' does not exist: the learnt frames from the "
                             "appearance need the dataset's textured models")
        mesh = load_mesh(root / "models" / f"obj_{oid:06d}.ply")
        S, sc, runner = learnt_frame_from_appearance(app, load_mesh(tex_path), mesh)
        models[oid].T_model_learnt = S
        out[oid] = {"sym_deg": rotation_error_deg(np.eye(3), S[:3, :3]), "score": sc,
                    "runner_up": runner}
    return out


def load_object_models(models_dir: str | Path, obj_ids: list[int], max_points: int = 3000,
                       seed: int = 0) -> dict[int, ObjectModel]:
    """Evaluation models from a BOP models folder (obj_%06d.ply + models_info.json): vertices
    (a seeded subset of max_points when larger), diameter (models_info, mm -> m), symmetric
    (symmetries in models_info)."""
    d = Path(models_dir)
    info = read_models_info(d / "models_info.json")
    out = {}
    for o in obj_ids:
        if o not in info:
            raise InputError(f"object {o} is not in {d / 'models_info.json'}")
        m = load_mesh(d / f"obj_{o:06d}.ply")
        P = m.vertices
        if len(P) > max_points:
            P = P[np.random.default_rng(seed).choice(len(P), max_points, replace=False)]
        e = info[o]
        out[o] = ObjectModel(o, str(e.get("name", f"obj_{o:06d}")), P, float(e["diameter"]) /
                             1000.0, bool(e.get("symmetries_continuous") or
                                          e.get("symmetries_discrete")))
    return out


@dataclass
class SceneResult:
    """Everything one evaluation run measured."""

    map50: float
    ap50: dict
    add_rgb: dict            # obj_id -> recall
    add_icp: dict
    n_pose: dict             # obj_id -> number of evaluated instances
    n_images: int
    seconds_per_image: float
    rows: list               # BOP CSV rows
    per_instance: list       # dicts: scene, im_id, obj_id, visib, add_rgb, add_icp, ...
    cpu_seconds_per_image: float = float("nan")   # CPU time of recognize() (all threads)
    # the recall against the ground truth in the model's own frame (= add_rgb / add_icp unless
    # an ObjectModel has a learnt frame)
    add_rgb_model_frame: dict = field(default_factory=dict)
    add_icp_model_frame: dict = field(default_factory=dict)

    def mean(self, d: dict) -> float:
        return float(np.mean(list(d.values()))) if d else float("nan")

    def pose_errors(self, turn_limit_deg: float = 30.0) -> dict:
        """Per object, over the instances that got a pose (ICP'd; :func:`pose_error_parts`):
        {"n", "median_tilt_deg", "median_turn_deg", "turned_share" (turn > turn_limit_deg),
        "median_t_mm"}."""
        out = {}
        for o in sorted({p["obj_id"] for p in self.per_instance}):
            v = [p for p in self.per_instance if p["obj_id"] == o and np.isfinite(p["t_mm"])]
            if not v:
                continue
            turn = np.array([p["turn_deg"] for p in v])
            out[o] = {"n": len(v),
                      "median_tilt_deg": float(np.median([p["tilt_deg"] for p in v])),
                      "median_turn_deg": float(np.median(turn)),
                      "turned_share": float(np.mean(turn > turn_limit_deg)),
                      "median_t_mm": float(np.median([p["t_mm"] for p in v]))}
        return out


def evaluate_scenes(recognizer, scene_dirs: list[str | Path], models: dict[int, ObjectModel],
                    min_visib_det: float = 0.1, min_visib_pose: float = 0.5,
                    max_images: int | None = None, image_step: int = 1,
                    score_thresh: float = 0.05,
                    progress: ProgressFn = noop_progress) -> SceneResult:
    """Run ``recognizer`` (a :class:`~nol_ros.recognition.recognizer.Recognizer`) on BOP test
    scenes (rgb + depth + scene_gt + scene_gt_info) and measure mAP@0.5 and ADD(-S) recall
    with the depth (the poses refined by ICP: ``add_icp``; mAP and the time per image are this
    run's) and from the colour image alone (``add_rgb``: every image recognised again without
    its depth, as a colour-only camera sees it: PnP and the turn by the print). image_step:
    every n-th image; max_images: per scene; score_thresh: the lowest detector score kept (low,
    so the precision/recall curve is complete)."""
    acc = DetectionAccumulator()
    ok_rgb: dict[int, list] = {o: [] for o in models}
    ok_icp: dict[int, list] = {o: [] for o in models}
    ok_mf: dict[int, list] = {o: [] for o in models}   # (rgb, icp) in the model's frame
    rows, per_inst = [], []
    n_img, t_total, c_total = 0, 0.0, 0.0
    jobs = []
    for sd in scene_dirs:
        seq = read_bop_scene(sd)
        info = json.loads((Path(sd) / "scene_gt_info.json").read_text())
        gt = json.loads((Path(sd) / "scene_gt.json").read_text())
        frames = seq.frames[::max(1, image_step)]
        if max_images is not None:
            frames = frames[:max_images]
        jobs += [(Path(sd), seq, fr, info, gt) for fr in frames]
    if not jobs:
        raise InputError("no test images to evaluate")
    for n, (sd, seq, fr, info, gt) in enumerate(jobs):
        rgb, depth = fr.load_rgb(), fr.load_depth()
        t0, c0 = time.perf_counter(), time.process_time()
        dets = recognizer.recognize(rgb, seq.intrinsics, depth, score_thresh=score_thresh)
        dt = time.perf_counter() - t0
        t_total += dt
        c_total += time.process_time() - c0
        n_img += 1
        best_rgb = {}
        for d in recognizer.recognize(rgb, seq.intrinsics, None, score_thresh=score_thresh):
            if d.obj_id not in best_rgb and d.T_camera_object is not None:
                best_rgb[d.obj_id] = d
        key = str(fr.index)
        g_boxes, g_labels, g_ign = [], [], []
        for a, inf in zip(gt.get(key, []), info.get(key, [])):
            oid = int(a["obj_id"])
            if oid not in models:
                continue
            x, y, w, h = inf["bbox_visib"]
            if w <= 0 or h <= 0:
                continue
            g_boxes.append([x, y, x + w, y + h])
            g_labels.append(oid)
            g_ign.append(inf["visib_fract"] < min_visib_det)
        acc.add_image(np.array([d.box_xyxy for d in dets]).reshape(-1, 4),
                      np.array([d.score for d in dets]), np.array([d.obj_id for d in dets]),
                      np.array(g_boxes).reshape(-1, 4), np.array(g_labels), np.array(g_ign))
        best = {}
        for d in dets:
            if d.obj_id not in best and d.T_camera_object is not None:
                best[d.obj_id] = d
            if d.T_camera_object is not None:
                R = d.T_camera_object[:3, :3].reshape(-1)
                t = d.T_camera_object[:3, 3] * 1000.0
                rows.append((int(sd.name) if sd.name.isdigit() else 0, fr.index, d.obj_id,
                             d.score * max(d.pose_score, 1e-6), R, t, dt))
        for a, inf in zip(gt.get(key, []), info.get(key, [])):
            oid = int(a["obj_id"])
            if oid not in models or inf["visib_fract"] < min_visib_pose:
                continue
            T_gt = seq.frames[[f.index for f in seq.frames].index(fr.index)
                              ].T_camera_objects.get(oid)
            d = best.get(oid)
            e_rgb = e_icp = m_rgb = m_icp = float("inf")
            parts = (float("nan"),) * 3
            d_rgb = best_rgb.get(oid)
            if d_rgb is not None and T_gt is not None:
                e_rgb = add_error(d_rgb.T_camera_object, T_gt, models[oid])
                m_rgb = add_error(d_rgb.T_camera_object, T_gt, models[oid], False)
            if d is not None and T_gt is not None:
                parts = pose_error_parts(d.T_camera_object, T_gt, models[oid])
                e_icp = add_error(d.T_camera_object, T_gt, models[oid])
                m_icp = add_error(d.T_camera_object, T_gt, models[oid], False)
            thr = 0.1 * models[oid].diameter
            ok_rgb[oid].append(e_rgb < thr)
            ok_icp[oid].append(e_icp < thr)
            ok_mf[oid].append((m_rgb < thr, m_icp < thr))
            per_inst.append({"scene": sd.name, "im_id": fr.index, "obj_id": oid,
                             "visib": inf["visib_fract"], "add_rgb": e_rgb, "add_icp": e_icp,
                             "detected": d is not None, "tilt_deg": parts[0],
                             "turn_deg": parts[1], "t_mm": parts[2]})
        if n % 10 == 0 or n == len(jobs) - 1:
            progress("evaluate", (n + 1) / len(jobs), f"image {n + 1}/{len(jobs)}")
    ap = acc.ap()
    return SceneResult(map50=float(np.mean(list(ap.values()))) if ap else float("nan"),
                       ap50=ap,
                       add_rgb={o: float(np.mean(v)) for o, v in ok_rgb.items() if v},
                       add_icp={o: float(np.mean(v)) for o, v in ok_icp.items() if v},
                       n_pose={o: len(v) for o, v in ok_rgb.items()}, n_images=n_img,
                       seconds_per_image=t_total / max(1, n_img), rows=rows,
                       per_instance=per_inst, cpu_seconds_per_image=c_total / max(1, n_img),
                       add_rgb_model_frame={o: float(np.mean([a for a, _ in v]))
                                            for o, v in ok_mf.items() if v},
                       add_icp_model_frame={o: float(np.mean([b for _, b in v]))
                                            for o, v in ok_mf.items() if v})


def write_bop_csv(path: str | Path, rows) -> Path:
    """BOP results CSV: scene_id,im_id,obj_id,score,R (9 values, row-major, space-separated),
    t (3 values, mm),time (s per image)."""
    lines = ["scene_id,im_id,obj_id,score,R,t,time"]
    for scene_id, im_id, obj_id, score, R, t, dt in rows:
        lines.append(f"{int(scene_id)},{int(im_id)},{int(obj_id)},{float(score):.6f},"
                     + " ".join(f"{float(v):.8f}" for v in np.asarray(R).reshape(-1)) + ","
                     + " ".join(f"{float(v):.4f}" for v in np.asarray(t).reshape(-1))
                     + f",{float(dt):.4f}")
    return atomic_write_text(path, "\n".join(lines) + "\n")


# -- the one scorer of trained models against a BOP dataset (CLI, demo, benchmark) ---------------
class IdMapped:
    """A recogniser whose object ids are mapped to the ground truth's (a workspace numbers its
    objects 1, 2, ... in learning order; a dataset has its own ids)."""

    def __init__(self, rec, mapping: dict[int, int]):
        self.rec, self.mapping = rec, mapping
        self.objects = rec.objects

    def recognize(self, *a, **kw):
        out = self.rec.recognize(*a, **kw)
        for d in out:
            d.obj_id = self.mapping.get(d.obj_id, d.obj_id)
        return out


def id_mapping(rec_objects: dict, models_info: dict, explicit: str = "") -> dict[int, int]:
    """Recogniser id -> ground-truth id: ``explicit`` 'name=ID,...' first, then by equal names
    (models_info 'name' keys, as the synthetic world writes them), else the same id."""
    by_name = {str(v.get("name")): int(k) for k, v in models_info.items() if v.get("name")}
    for item in [x for x in explicit.split(",") if x]:
        if "=" not in item:
            raise InputError(f"id map '{item}': use NAME=ID, e.g. mug=3")
        n, i = item.split("=", 1)
        by_name[n] = int(i)
    return {int(oid): by_name.get(o.name, int(oid)) for oid, o in rec_objects.items()}


@dataclass
class Score:
    """What :func:`score_models` measured: the scene result, the dataset ids of the
    recogniser's classes, the evaluation models and the learnt frames (dataset id -> figures
    of :func:`learnt_frames_from_views`)."""

    result: SceneResult
    mapping: dict[int, int]
    models: dict[int, ObjectModel]
    learnt_frames: dict[int, dict]

    def summary(self) -> dict:
        """Plain figures: mAP, mean ADD(-S) recalls, per object (by name) AP, ADD, pose-error
        split and learnt frame; seconds per image."""
        r = self.result
        perr = r.pose_errors()
        return {"map50": r.map50, "add_rgb": r.mean(r.add_rgb), "add_icp": r.mean(r.add_icp),
                "add_rgb_model_frame": r.mean(r.add_rgb_model_frame),
                "add_icp_model_frame": r.mean(r.add_icp_model_frame), "images": r.n_images,
                "s_per_image": r.seconds_per_image, "cpu_s_per_image": r.cpu_seconds_per_image,
                "per_object": {m.name: {"obj_id": o, "ap50": r.ap50.get(o),
                                        "add_rgb": r.add_rgb.get(o), "add_icp": r.add_icp.get(o),
                                        "add_icp_model_frame": r.add_icp_model_frame.get(o),
                                        "n": r.n_pose.get(o), "pose_errors": perr.get(o),
                                        "learnt_frame_deg":
                                            self.learnt_frames.get(o, {}).get("sym_deg")}
                               for o, m in self.models.items()}}


def score_models(recognizer, scene_dirs: list[str | Path], dataset_models: str | Path,
                 learnt_root: str | Path | None = None, train_scene: str | Path | None = None,
                 id_map: str = "", image_step: int = 1, max_images: int | None = None,
                 progress: ProgressFn = noop_progress, appearance_frames: bool = False) -> Score:
    """Score a trained recogniser on BOP test scenes of a dataset (its ``models/`` folder with
    models_info.json): classes mapped to the dataset's objects by name (``id_map`` 'NAME=ID,..'
    overrides), ADD(-S) scored in each object's learnt frame when the objects were learnt into
    ``learnt_root`` from ``train_scene`` (:func:`learnt_frames_from_views`), or, with
    ``appearance_frames`` and no ``learnt_root``, in the frame of each object's learnt
    appearance in the models folder (:func:`learnt_frames_from_appearance`: for models whose
    workspace is gone; the dataset needs ``models_textured``). mAP@0.5 and BOP results as
    :func:`evaluate_scenes`."""
    info = read_models_info(Path(dataset_models) / "models_info.json")
    mapping = id_mapping(recognizer.objects, info, id_map)
    models = load_object_models(dataset_models, sorted(set(mapping.values())))
    frames: dict[int, dict] = {}
    if learnt_root is not None:
        if train_scene is None:
            raise InputError("learnt frames need the training scene the objects were learnt "
                             "from")
        ws = Workspace(learnt_root)
        dirs = {mapping[o]: ws.learnt(r.name).files.dir for o, r in recognizer.objects.items()
                if ws.learnt(r.name).files.learnt}
        frames = learnt_frames_from_views(models, dirs, train_scene, dataset_models)
    elif appearance_frames:
        apps = {mapping[o]: r.appearance for o, r in recognizer.objects.items()
                if r.appearance is not None}
        frames = learnt_frames_from_appearance(models, apps, Path(dataset_models).parent)
    res = evaluate_scenes(IdMapped(recognizer, mapping), scene_dirs, models,
                          max_images=max_images, image_step=image_step, progress=progress)
    return Score(res, mapping, models, frames)
