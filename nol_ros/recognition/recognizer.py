"""The inference API: an RGB(-D) image -> detected objects with 6D poses.

    from nol_ros.recognition.recognizer import Recognizer

    rec = Recognizer.load("MODELS")             # a models folder (see below); device optional
    for r in rec.recognize(rgb, intr, depth):   # rgb (H, W, 3) uint8 RGB; intr: Intrinsics of
        ...                                     # that image (H, W must match); depth (H, W)
                                                # float32 metres, 0/NaN = invalid, optional
    r.obj_id, r.name        BOP object id and name
    r.score                 detector confidence in [0, 1]
    r.box_xywh              (x, y, w, h) pixels, float (the pose network's visible-mask box
                            when refine_boxes; the detector's own box is r.det_box_xywh)
    r.T_camera_object       (4, 4) float64 metres, optical frame; ICP-refined when depth was
                            given and refinement succeeded; None = "no pose" (too few
                            consistent correspondences -- never a guessed pose)
    r.pose_score            0..1 (PnP inlier fraction, or ICP fitness when refined); 0 = no pose
    r.solver                what gave the pose ICP started from: "pnp" (colour) or "rgbd"
                            (3D-3D fit to the depth, with RecognizerConfig.solver "rgbd")
    r.appearance_score      how well the learnt appearance fits the image at the pose (NCC,
                            -1..1; nan without an appearance in the models folder)
    r.turned                the pose was turned about a near-symmetry to where the print fits
    r.refined, r.n_inliers, r.reason  diagnostics

``recognize(rgb, intr, depth=None, score_thresh=None, max_per_class=None, appearance=None)``
returns detections above score_thresh (default: the folder's config, 0.3), best first; poses
are estimated for the ``max_per_class`` best detections of every object (default 1: one
instance per object, as in the SMOT scenes), the others carry T_camera_object = None and reason
"not posed"; ``appearance`` (default: the folder's config, on) turns a pose to where the learnt
print fits (RecognizerConfig). Wrong image
size/dtype or intrinsics raise :class:`~nol_ros.errors.InputError`.

Models folder (written by :func:`write_models_folder`)::

    MODELS/recognition.json   classes [{obj_id, name, mesh, diameter_m, symmetric}], the
                              detector and pose-net files, recognizer defaults, provenance
    MODELS/detector.pt        RetinaNet checkpoint (weights_only loadable)
    MODELS/posenet.pt         pose network checkpoint
    MODELS/meshes/obj_%06d.ply
    MODELS/meshes/obj_%06d_appearance.ply   the learnt appearance (vertex colours), optional
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from nol_ros.camera import Intrinsics
from nol_ros.enums import PoseSolver, parse_field
from nol_ros.errors import ConfigError, FileFormatError, InputError
from nol_ros.geometry import invert_T
from nol_ros.io_utils import atomic_write_json
from nol_ros.mesh import load_mesh, save_mesh
from nol_ros.recognition.appearance import (
    choose_by_appearance,
    fit_range_by_appearance,
    pose_hypotheses,
    turn_axes,
)
from nol_ros.recognition.detector import CKPT_KIND as DK
from nol_ros.recognition.detector import Detector, check_classes, load_checkpoint
from nol_ros.recognition.pnp import IcpConfig, refine_icp
from nol_ros.recognition.posenet import CKPT_KIND as PK
from nol_ros.recognition.posenet import PoseNet, pose_from_prediction
from nol_ros.recognition.trainset import crop_image_box, square_box
from nol_ros.threads import worker_pool

MODELS_JSON = "recognition.json"


@dataclass
class Recognition:
    obj_id: int
    name: str
    score: float
    box_xywh: tuple[float, float, float, float]
    T_camera_object: np.ndarray | None = None
    pose_score: float = 0.0
    refined: bool = False
    n_inliers: int = 0
    reason: str = ""
    solver: PoseSolver = PoseSolver.PNP  # what gave the pose before ICP: pnp (colour) or rgbd
    det_box_xywh: tuple[float, float, float, float] | None = None  # the detector's box
    appearance_score: float = float("nan")  # the learnt print's fit at the pose (NCC, -1..1)
    turned: bool = False   # the pose was turned to where the print fits (RecognizerConfig)
    ranged: bool = False   # colour only: moved along the line of sight to where the print's
    #                        size fits (RecognizerConfig.appearance_range)

    @property
    def box_xyxy(self) -> np.ndarray:
        x, y, w, h = self.box_xywh
        return np.array([x, y, x + w, y + h], np.float64)


@dataclass(frozen=True)
class RecognizerConfig:
    """score_thresh, max_per_class: see :meth:`Recognizer.recognize`. solver: "rgbd" = with a
    depth image, the pose is a rigid 3D-3D RANSAC fit of the predicted object coordinates to the
    depth points at the same pixels (inlier distance rgbd_thresh_m), PnP on the colour image
    when that finds no pose or there is no depth; "pnp" = always PnP (the name the result's
    ``solver`` reports too). icp: refine with the depth image (ICP on the visible mask,
    :class:`~nol_ros.recognition.pnp.IcpConfig`). "rgbd" is the default: it measured 1.04-2.4x
    the ADD+ICP of PnP on the demo world; it uses only the pixels the pose net sees as visible
    and refuses a fit whose inliers cover a patch of the object (the poor coordinates of an
    undertrained net: the tiny test models posed 10-21 cm off without that). refine_boxes: the
    ``refine_top`` best detections of every object get the box of the pose network's visible
    mask (its crop is the detector's box, padded); the detector's own box stays in
    ``det_box_xywh``. Off by default: with the pose labels unique about an object's axis the
    mask boxes cost 0-9 mAP points (3 `cpu` trainings: mAP@0.5 86.9 with them, 91.6 without;
    ADD(-S) identical; BENCHMARKS.md "Recogniser options"). appearance: when the models
    folder holds an object's learnt appearance, the pose's turns that fit the depth as well
    (a can about its axis, a box flipped; :mod:`nol_ros.recognition.appearance`) are rendered
    with it and compared with the image; a turn that beats the pose by ``appearance_margin``
    (normalised cross-correlation) replaces it, ICP then runs again from it (not after a turn
    about an axis the surface is one of revolution about: no surface point moves; on the demo
    models that kept 0.8 points more ADD(-S)+ICP than fitting again, in less time). The turns are
    tried every ``appearance_step_deg`` about the mesh's axes (measured on the demo world's
    test sequence: 15 deg gave 1-5 points more ADD(-S)+ICP than 30 on three `cpu` trainings, 10
    deg no more than 15; BENCHMARKS.md "Recognition"). Objects declared symmetric (shape and
    print) are left as they are. appearance_range: without depth, the pose (PnP, then the turn)
    is moved along the line of sight to where the learnt print's size fits the image
    (:func:`~nol_ros.recognition.appearance.fit_range_by_appearance`, small turns of the pose
    searched with the size; three `cpu` trainings: ADD(-S) from the colour image alone 30.0 ->
    48.0 %, 0.12 s more per frame). pose_workers:
    the detections of a frame are posed (fit, ICP, turn by the print) on up to this many
    threads at once: each is a string of short native
    calls (Open3D's ICP, Embree's ray casts, OpenCV, numpy) that release the GIL, and the
    others fill the gaps between them (3 `cpu` trainings on 2 cores, all ~4 objects posed:
    0.30-0.31 s per frame with 1, 0.27-0.28 with 4; BENCHMARKS.md "Recogniser speed"). Each
    worker runs its OpenMP teams with one thread, so the poses are the same for any number of
    workers and run after run."""

    score_thresh: float = 0.3
    max_per_class: int = 1
    icp: bool = True
    solver: PoseSolver = PoseSolver.RGBD
    rgbd_thresh_m: float = 0.015
    refine_boxes: bool = False
    refine_top: int = 3
    appearance: bool = True        # choose among the pose's near-symmetric turns by the print
    appearance_margin: float = 0.05  # NCC a turn must gain over the pose to replace it
    appearance_step_deg: float = 15.0  # the turns tried: every this many degrees about the
    #                                    mesh's axes (30: 3 points less ADD(-S)+ICP)
    icp_plane_kernel_m: float = 0.01   # ICP's finest stage, IcpConfig.plane_kernel_m (0: point
    #                                    to point: 7-12 points less ADD(-S)+ICP)
    appearance_range: bool = True  # colour only: move the pose along the line of sight to
    #                                where the learnt print fits the image's size of it
    pose_workers: int = 4   # detections posed side by side (threads; 1: one after another)

    def __post_init__(self):
        parse_field(self, "solver", PoseSolver)
        if self.refine_top < 0:
            raise ConfigError(f"refine_top must be >= 0, got {self.refine_top}")
        if self.pose_workers < 1:
            raise ConfigError(f"pose_workers must be >= 1, got {self.pose_workers}")
        if not self.rgbd_thresh_m > 0:
            raise ConfigError(f"rgbd_thresh_m must be > 0 m, got {self.rgbd_thresh_m}")
        if self.icp_plane_kernel_m < 0:
            raise ConfigError(f"icp_plane_kernel_m must be >= 0 m (0 = point to point), got "
                              f"{self.icp_plane_kernel_m}")
        if not 0 < self.appearance_step_deg <= 180:
            raise ConfigError(f"appearance_step_deg must be in (0, 180] degrees, got "
                              f"{self.appearance_step_deg}")


@dataclass
class _Obj:
    obj_id: int
    name: str
    mesh: object
    diameter: float
    symmetric: bool
    appearance: object = None      # Mesh with vertex colours, or None


def write_models_folder(out_dir: str | Path, detector_ckpt: str | Path, posenet_ckpt: str | Path,
                        objects: list[dict], config: RecognizerConfig = RecognizerConfig(),
                        extra: dict | None = None) -> Path:
    """Assemble a models folder. objects: [{obj_id, name, mesh (a Mesh in metres), symmetric,
    appearance (optional: the mesh with vertex colours, :func:`nol_ros.recognition.appearance
    .bake_vertex_colors`)}] in the detector's class order. Checks that both checkpoints were
    trained for exactly these objects (ConfigError otherwise)."""
    if not objects:
        raise InputError("no objects for the models folder")
    ids = [int(o["obj_id"]) for o in objects]
    check_classes(load_checkpoint(detector_ckpt, DK)["classes"], ids,
                  f"detector '{detector_ckpt}'")
    check_classes(load_checkpoint(posenet_ckpt, PK)["classes"], ids, f"pose net '{posenet_ckpt}'")
    out = Path(out_dir)
    (out / "meshes").mkdir(parents=True, exist_ok=True)
    for src, name in ((detector_ckpt, "detector.pt"), (posenet_ckpt, "posenet.pt")):
        tmp = out / f".{name}.tmp"
        shutil.copyfile(src, tmp)
        tmp.replace(out / name)
    classes = []
    for o in objects:
        rel = f"meshes/obj_{int(o['obj_id']):06d}.ply"
        save_mesh(o["mesh"].untextured(), out / rel)
        c = {"obj_id": int(o["obj_id"]), "name": str(o["name"]), "mesh": rel,
             "diameter_m": float(o["mesh"].diameter), "symmetric": bool(o.get("symmetric", False))}
        if o.get("appearance") is not None:
            c["appearance"] = f"meshes/obj_{int(o['obj_id']):06d}_appearance.ply"
            save_mesh(o["appearance"], out / c["appearance"])
        classes.append(c)
    atomic_write_json(out / MODELS_JSON, {"version": 1, "classes": classes,
                                          "detector": "detector.pt", "posenet": "posenet.pt",
                                          "recognizer": dataclasses.asdict(config),
                                          **(extra or {})})
    return out


class Recognizer:
    """Detector + pose network + meshes; see the module docstring for the API."""

    def __init__(self, detector, posenet, objects: list[_Obj],
                 config: RecognizerConfig = RecognizerConfig()):
        self.detector = detector
        self.posenet = posenet
        self.objects = {o.obj_id: o for o in objects}
        self.config = config
        self.timing: dict[str, float] = {}
        self._pts: dict[int, np.ndarray] = {}
        self._turns: dict[int, list[np.ndarray]] = {}

    @classmethod
    def load(cls, models_dir: str | Path, device: str | None = None,
             config: RecognizerConfig | None = None) -> Recognizer:
        d = Path(models_dir)
        p = d / MODELS_JSON
        if not p.is_file():
            raise FileFormatError(f"'{d}' is not a recognition models folder (no {MODELS_JSON}); "
                                  "train one with nol_ros.recognition.pipeline")
        try:
            meta = json.loads(p.read_text())
            classes = meta.get("classes") or []
            ids = [int(c["obj_id"]) for c in classes]
            names = [str(c["name"]) for c in classes] + [str(c["mesh"]) for c in classes]
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as e:
            raise FileFormatError(f"'{p}' is damaged ({type(e).__name__}: {str(e)[:120]}); "
                                  "train the models again (TrainDetector + TrainPoseEstimator) "
                                  "or point models_dir at an intact models folder") from e
        if not classes or not all(names):
            raise FileFormatError(f"'{p}' lists no classes")
        det = Detector.load(d / meta.get("detector", "detector.pt"), ids, device)
        pn = PoseNet.load(d / meta.get("posenet", "posenet.pt"), ids, device)
        objs = [_Obj(int(c["obj_id"]), str(c["name"]), load_mesh(d / c["mesh"], units="m"),
                     float(c["diameter_m"]), bool(c.get("symmetric", False)),
                     load_mesh(d / c["appearance"], units="m") if c.get("appearance") else None)
                for c in classes]
        if config is None:
            config = RecognizerConfig(**meta.get("recognizer", {}))
        return cls(det, pn, objs, config)

    @property
    def _icp(self) -> IcpConfig:
        return IcpConfig(plane_kernel_m=self.config.icp_plane_kernel_m)

    def _points(self, obj_id: int) -> np.ndarray:
        """Up to 500 mesh vertices (m) of an object, for the pose/box consistency check."""
        pts = self._pts.get(obj_id)
        if pts is None:
            V = self.objects[obj_id].mesh.vertices
            pts = V[np.random.default_rng(0).choice(len(V), min(500, len(V)), replace=False)]
            self._pts[obj_id] = pts
        return pts

    def _hypotheses(self, obj_id: int) -> list[np.ndarray]:
        """The object's near-symmetric turns (identity first), detected once from its mesh."""
        h = self._turns.get(obj_id)
        if h is None:
            h = self._turns[obj_id] = pose_hypotheses(
                self.objects[obj_id].mesh, step_deg=self.config.appearance_step_deg)
        return h

    def _axes(self, obj_id: int) -> list[int]:
        """The model axes the object's near-symmetric turns are a surface of revolution about."""
        return [a for a, _, _ in turn_axes(self._hypotheses(obj_id))]

    def _by_appearance(self, r: Recognition, img, dep, intr, vis) -> None:
        """Replace r's pose by the turn its learnt appearance fits best (see RecognizerConfig)."""
        o = self.objects[r.obj_id]
        if o.appearance is None or o.symmetric:
            return
        hyps = self._hypotheses(r.obj_id)
        if len(hyps) < 2:
            return
        ch = choose_by_appearance(img, intr, r.T_camera_object, o.appearance, hyps, depth=dep,
                                  margin=self.config.appearance_margin)
        r.appearance_score = ch.score
        if ch.index == 0:
            return
        H = invert_T(r.T_camera_object) @ ch.T_camera_object   # the turn, model frame
        r.T_camera_object, r.turned = ch.T_camera_object, True
        if any(abs(H[a, a] - 1) < 1e-6 for a in self._axes(r.obj_id)):
            return   # a turn about an axis of revolution: the surface ICP fitted is in place
        if dep is not None and self.config.icp and vis is not None:
            ir = refine_icp(r.T_camera_object, o.mesh, dep, intr, vis, self._icp)
            if ir.refined:
                r.T_camera_object, r.refined, r.pose_score = ir.T_camera_object, True, ir.fitness

    def _range_by_appearance(self, r: Recognition, img, intr) -> None:
        """Move r's colour-only pose along the line of sight to where its learnt print fits
        the image best (:func:`~nol_ros.recognition.appearance.fit_range_by_appearance`)."""
        o = self.objects[r.obj_id]
        if o.appearance is None or not self.config.appearance_range:
            return
        fit = fit_range_by_appearance(img, intr, r.T_camera_object, o.appearance)
        if fit.refined:
            r.T_camera_object, r.ranged = fit.T_camera_object, True

    def _check(self, rgb, intr, depth):
        if not isinstance(intr, Intrinsics):
            raise InputError(f"intr must be nol_ros.camera.Intrinsics, got {type(intr).__name__}")
        a = np.asarray(rgb)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise InputError(f"rgb must be (H, W, 3) uint8 RGB, got {a.shape} {a.dtype}; convert "
                             "16-bit or float images to 8 bits and BGR to RGB first")
        if a.shape[:2] != (intr.height, intr.width):
            raise InputError(f"rgb is {a.shape[1]}x{a.shape[0]} but the intrinsics are "
                             f"{intr.width}x{intr.height}; give the CameraInfo of this image")
        d = None
        if depth is not None:
            d = np.asarray(depth)
            if d.shape != a.shape[:2]:
                raise InputError(f"depth is {d.shape} but rgb is {a.shape[:2]}; register the "
                                 "depth to the colour camera first")
            if d.dtype != np.float32:
                raise InputError(f"depth must be float32 metres, got {d.dtype} (uint16 "
                                 "millimetres: multiply by 0.001 and convert)")
            d = np.where(np.isfinite(d), d, 0).astype(np.float32)
        return a, d

    def _pose_one(self, r: Recognition, pose_it: bool, b, pr, img, dep, intr, n_ref: int,
                  by_print: bool) -> None:
        """The pose of one detection r from its pose-net prediction pr on crop box b."""
        cfg = self.posenet.cfg
        S = cfg.input_size
        if n_ref:
            mb = _mask_box(pr.visib > 0.5, b, S)
            if mb is not None:
                r.box_xywh = mb
        if not pose_it:
            return
        res = None
        if dep is not None and self.config.solver == PoseSolver.RGBD:
            rd = pose_from_prediction(pr, b, intr.K, cfg, det_box_xywh=r.box_xywh,
                                      model_points=self._points(r.obj_id), depth=dep,
                                      rgbd_thresh_m=self.config.rgbd_thresh_m)
            if rd.T_camera_object is not None:
                res, r.solver = rd, PoseSolver.RGBD
        if res is None:   # PnP on the colour image: no depth, or no fit to it
            res = pose_from_prediction(pr, b, intr.K, cfg, det_box_xywh=r.box_xywh,
                                       model_points=self._points(r.obj_id))
        r.n_inliers = res.n_inliers
        if res.T_camera_object is None:
            r.reason = f"no pose: {res.reason}"
            return
        r.T_camera_object = res.T_camera_object
        r.pose_score = res.score
        r.reason = ""
        vis = None
        if dep is not None and self.config.icp:
            vis = _visible_in_image(pr.visib, b, S, intr)
            ir = refine_icp(res.T_camera_object, self.objects[r.obj_id].mesh, dep, intr,
                            vis, self._icp)
            if ir.refined:
                r.T_camera_object, r.refined = ir.T_camera_object, True
                r.pose_score = ir.fitness
            else:
                r.reason = f"not refined: {ir.reason}"
        if by_print:
            self._by_appearance(r, img, dep, intr, vis)
            if dep is None:
                self._range_by_appearance(r, img, intr)

    def recognize(self, rgb: np.ndarray, intr: Intrinsics, depth: np.ndarray | None = None,
                  score_thresh: float | None = None, max_per_class: int | None = None,
                  appearance: bool | None = None) -> list[Recognition]:
        img, dep = self._check(rgb, intr, depth)
        thr = self.config.score_thresh if score_thresh is None else float(score_thresh)
        k_max = self.config.max_per_class if max_per_class is None else int(max_per_class)
        by_print = self.config.appearance if appearance is None else bool(appearance)
        t0 = time.perf_counter()
        dets = self.detector.detect(img, score_thresh=thr)
        t1 = time.perf_counter()
        out: list[Recognition] = []
        to_refine, seen = [], {}
        n_ref = self.config.refine_top if self.config.refine_boxes else 0
        for d in dets:
            x0, y0, x1, y1 = d.box_xyxy
            o = self.objects[d.obj_id]
            r = Recognition(d.obj_id, o.name, d.score, (float(x0), float(y0), float(x1 - x0),
                                                         float(y1 - y0)), reason="not posed")
            r.det_box_xywh = r.box_xywh
            out.append(r)
            k = seen.get(d.obj_id, 0)
            if x1 - x0 >= 2 and y1 - y0 >= 2 and k < max(k_max, n_ref):
                seen[d.obj_id] = k + 1
                to_refine.append((r, k < k_max))
        cfg = self.posenet.cfg
        S = cfg.input_size
        if to_refine:
            boxes = [square_box(r.box_xywh, cfg.pad) for r, _ in to_refine]
            crops = np.stack([crop_image_box(img, b, S) for b in boxes])
            preds = self.posenet.predict(crops, [r.obj_id for r, _ in to_refine])
            jobs = [(r, pose_it, b, pr, img, dep, intr, n_ref, by_print)
                    for (r, pose_it), b, pr in zip(to_refine, boxes, preds)]
            # on the pool even with one worker: its OpenMP teams of one thread give the same
            # poses run after run and for any number of workers (the caller's team of two
            # sums Open3D's reductions in a varying order: measured, a pose of 40 frames
            # changed between two runs). list(): a worker's exception is raised here.
            list(pose_pool(self.config.pose_workers).map(lambda a: self._pose_one(*a), jobs))
        t2 = time.perf_counter()
        self.timing = {"detect_s": t1 - t0, "pose_s": t2 - t1, "total_s": t2 - t0}
        return out


def _visible_in_image(visib: np.ndarray, crop_box, S: int, intr: Intrinsics) -> np.ndarray:
    """The pose network's visible mask (S, S) of crop box (x0, y0, side) in the whole image
    (H, W) bool."""
    x0, y0, side = crop_box
    s = side / S
    inv = np.array([[1 / s, 0, (0.5 - x0) / s - 0.5], [0, 1 / s, (0.5 - y0) / s - 0.5]])
    return cv2.warpAffine(visib.astype(np.float32), inv, (intr.width, intr.height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderValue=0) > 0.5


def pose_pool(n: int):
    """The worker pool that poses a frame's detections side by side
    (:func:`nol_ros.threads.worker_pool`), Open3D loaded first so that its OpenMP teams in
    the workers have one thread too."""
    # lazy: open3d (~3 s) to import; ICP needs it anyway
    import open3d  # noqa: F401

    return worker_pool(n)


def _mask_box(mask: np.ndarray, crop_box, S: int, min_pixels: int = 12):
    """(x, y, w, h) in image pixels of a crop's (S, S) mask, or None when it has fewer than
    min_pixels pixels. crop_box (x0, y0, side): the crop in the image."""
    v, u = np.nonzero(mask)
    if len(u) < min_pixels:
        return None
    x0, y0, side = crop_box
    s = side / S
    return (float(x0 + u.min() * s), float(y0 + v.min() * s),
            float((u.max() + 1 - u.min()) * s), float((v.max() + 1 - v.min()) * s))


def check_models_classes(models_dir: str | Path, obj_ids: list[int]) -> None:
    """ConfigError unless the models folder was trained for exactly ``obj_ids`` (in order)."""
    p = Path(models_dir) / MODELS_JSON
    if not p.is_file():
        raise FileFormatError(f"'{models_dir}' is not a recognition models folder")
    have = [int(c["obj_id"]) for c in json.loads(p.read_text())["classes"]]
    if have != [int(o) for o in obj_ids]:
        raise ConfigError(f"models folder '{models_dir}' is for objects {have}, not {obj_ids}")
