"""RGB-D camera tracking + TSDF (Open3D tensor API, CPU or CUDA).

Per frame: predict the pose (TF odometry delta when given, else constant velocity), ray-cast the
TSDF model at the predicted pose (``reference="model"``) or take the last keyframe's RGB-D
(default), align the frame to it with RGB-D odometry (point-to-plane by default), check the
result. After a failure or a gap in the stream, re-localise against the keyframes (ORB + PnP,
refined and checked densely). Offline, a keyframe pose graph with loop closures runs at the
end; its loop checks run on worker threads, the first round's while the tracking goes on.
Then a feature bundle adjustment refines the keyframe poses (reconstruction/bundle.py), and
last a smoother with a motion prior every frame's (reconstruction/smoothing.py).
Tracking and ray casting run at ``1/tracking_downscale`` resolution (measured: the dominant
cost); integration uses full resolution. Frames whose alignment fails the checks are flagged
(``ok=False``), keep the predicted pose, and are not integrated: never silently used.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from nol_ros.enums import TrackerMethod, parse_field
from nol_ros.errors import ConfigError, InputError
from nol_ros.geometry import se3_exp, se3_log
from nol_ros.progress import ProgressFn, noop_progress
from nol_ros.reconstruction.bundle import (
    BundleConfig,
    BundleResult,
    bundle_adjust,
    nearest_keyframes,
)
from nol_ros.reconstruction.relocalise import KeyframeFeatures, Relocaliser
from nol_ros.reconstruction.smoothing import SmootherConfig, smooth_trajectory
from nol_ros.threads import configure_threads, worker_pool


@dataclass(frozen=True)
class TrackerConfig:
    """The tracker. Defaults chosen on REAL data (TUM fr1/desk, bench/bench_tracking.py; the
    figures are in BENCHMARKS.md "Tracking on real data") and checked on the synthetic world."""

    voxel_size_m: float = 0.006           # TSDF voxel edge
    sdf_trunc_voxels: float = 4.0       # truncation = voxels * voxel size
    block_resolution: int = 8             # voxels per TSDF block edge
    block_count: int = 60000            # hash map capacity (memory ~ blocks * res^3 * 20 B)
    depth_min_m: float = 0.2              # depth used for tracking and the TSDF: at least ...
    depth_max_m: float = 3.0              # ... and at most this
    tracking_downscale: int = 2         # 2: track at 320x240 for 640x480 input
    odometry_iterations: tuple[int, ...] = (12, 6, 4)  # coarse -> fine pyramid levels
    # geometry_then_colour: point-to-plane, then a hybrid (depth + colour) refinement kept only
    # within colour_max_shift of the geometric pose (RgbdTracker._odometry). Measured
    # (BENCHMARKS.md "Tracking on real data"): fr1/desk point-to-plane 2.3 cm ATE, this 2.65,
    # hybrid 4.3 (22.6 with the former 20 cm keyframes); the synthetic demo world
    # point-to-plane 2.5 cm / 8.6 deg drift, this 0.15 cm / 0.3 deg, hybrid 0.6 cm / 0.25 deg
    method: TrackerMethod = TrackerMethod.GEOMETRY_THEN_COLOUR  # | point_to_plane | hybrid |
    #                                     intensity
    colour_iterations: tuple[int, ...] = (4, 3, 2)  # the hybrid refinement, coarse -> fine
    colour_max_shift_m: float = 0.02    # colour may move the geometric pose this far ...
    colour_max_shift_deg: float = 2.0   # ... and turn it this much, else it is ignored;
    colour_max_shift_fraction: float = 0.1  # ... or this fraction of the views' baseline
    #                                     (tracking only; a 24 deg gap bridged by odometry)
    reference: str = "keyframe"         # keyframe: align to the last keyframe's real RGB-D;
    #                                     model: align to the TSDF ray-cast (see module doc)
    # robust loss of the odometry (Open3D OdometryLossParams): depth residuals beyond the
    # truncation are outliers, Huber below
    depth_outlier_trunc_m: float = 0.07   # odometry: depth residuals beyond this are outliers
    depth_huber_delta_m: float = 0.05     # odometry: Huber threshold of the depth residual
    intensity_huber_delta: float = 0.1    # odometry: Huber threshold of the colour residual
    min_fitness: float = 0.25           # fraction of pixels with a valid correspondence
    max_inlier_rmse_m: float = 0.03       # a frame whose alignment is worse is not trusted
    max_step_m: float = 0.20            # jump of the correction from the prediction
    max_step_deg: float = 20.0            # ... and turns it more than this
    # with an odometry prior the prediction is the odometry's motion since the last trusted
    # frame (right to ~1 % of the distance over such a gap; geometry sliding on a table is not)
    odometry_check_m: float = 0.01      # with odometry: a correction beyond this ...
    odometry_check_deg: float = 1.0     # ... or this turn, each plus ...
    odometry_check_fraction: float = 0.03  # ... this fraction of the odometry's motion: refused
    max_extrapolation_s: float = 0.1    # constant-velocity prediction over at most this long
    # keyframes: a new one after this much motion (or when the overlap with the last one, the
    # odometry's fitness, falls below keyframe_min_fitness)
    keyframe_dist_m: float = 0.10         # a new keyframe after this much motion ...
    keyframe_angle_deg: float = 10.0      # ... or this much turn ...
    keyframe_min_fitness: float = 0.4     # ... or when the overlap with the last one falls below
    max_keyframes: int = 400            # keyframes keeping images/features (memory budget)
    # loss and re-localisation
    lost_after_failures: int = 3        # consecutive untrusted frames -> lost (re-localise)
    relocalise: bool = True             # ORB + PnP against the keyframes after a failure/gap
    relocalise_after_gap_s: float = 0.25  # no frame tracked for this long: re-localise first
    relocalise_tries: int = 3             # keyframes tried per re-localisation
    relocalise_min_fitness: float = 0.3   # a re-localised pose must overlap this much
    relocalise_max_correction_m: float = 0.05  # dense refinement vs the PnP pose
    relocalise_max_correction_deg: float = 5.0   # ... and turn this little
    # without odometry, a frame tracked after a gap (frames skipped) is checked by
    # re-localisation, whose start does not depend on the motion prediction
    verify_after_gap_s: float = 0.05    # without odometry: verify after a longer gap (< 0: off)
    verify_max_m: float = 0.02          # tracked and re-localised poses further apart than ...
    verify_max_deg: float = 2.0         # ... this (or turned this much): the re-localised wins
    # keyframe pose graph at the end (offline chain): loop closures between keyframes that see
    # the same place, verified by point-to-plane odometry, Open3D global optimisation
    integrate_every: int = 2            # final TSDF: every n-th frame (+ all keyframes)
    loop_closure: bool = True             # close loops over the keyframes at the end (offline)
    loop_max_dist_m: float = 1.0        # keyframes this close (and within the angle) ...
    loop_max_angle_deg: float = 60.0    # ... are checked for a loop closure
    loop_max_candidates: int = 8        # per keyframe, the nearest n candidates (0 = all)
    loop_min_gap: int = 2               # keyframes j, i with j - i >= gap are loop candidates
    # 3 rounds: fr1/desk 2.65 -> 2.40 cm ATE against 2 (45 then 8 edges found in rounds 2
    # and 3, ~10 % more time; a 4th finds 4 more and no better poses)
    loop_rounds: int = 3                # search + optimise again around the optimised poses
    loop_min_fitness: float = 0.35        # a loop edge's alignment must overlap this much
    loop_method: TrackerMethod = TrackerMethod.GEOMETRY_THEN_COLOUR  # odometry that
    #                                     verifies a loop closure
    loop_iterations: tuple[int, ...] = ()  # odometry iterations of a loop check (() = as tracking)
    loop_workers: int = 2               # loop checks run side by side on this many threads
    # after the pose graph (offline): the keyframes' ORB features matched between overlapping
    # keyframes, keyframe poses and landmarks adjusted together with the dense constraints
    # (reconstruction/bundle.py); fr1/desk 2.40 -> 1.86 cm ATE
    bundle_adjustment: bool = True      # then a feature bundle adjustment of the keyframes
    smoothing: bool = True              # then every frame smoothed with a motion prior (offline)
    device: str = "CPU:0"               # "CUDA:0" when available

    def __post_init__(self):
        if self.loop_workers < 1:
            raise ConfigError(f"tracker loop_workers must be >= 1, got {self.loop_workers}")
        parse_field(self, "method", TrackerMethod, "tracker method")
        parse_field(self, "loop_method", TrackerMethod, "tracker loop_method")


@dataclass
class TrackResult:
    index: int
    T_world_camera: np.ndarray
    ok: bool
    fitness: float
    inlier_rmse: float
    keyframe: bool
    message: str = ""
    ref_keyframe: int = 0               # index into the tracker's keyframes
    state: str = "tracking"             # tracking | relocalised | unverified | failed | lost
    stamp_s: float = 0.0                # the frame's time (s; frame index / 30 without a stamp)


@dataclass
class ReconstructionResult:
    frames: list[TrackResult] = field(default_factory=list)

    @property
    def poses(self) -> list[np.ndarray]:
        return [f.T_world_camera for f in self.frames]

    @property
    def ok(self) -> np.ndarray:
        return np.array([f.ok for f in self.frames], dtype=bool)


def downscale_depth(depth: np.ndarray, s: int, max_spread_m: float = 0.03) -> np.ndarray:
    """Average valid depth over s x s blocks (block centre = the area-resize pixel centre, so the
    scaled intrinsics stay exact); blocks spanning a depth edge (spread > max_spread_m) or with
    fewer than half valid pixels become invalid (0). (H, W) float32 m -> (H//s, W//s)."""
    h, w = depth.shape[0] // s * s, depth.shape[1] // s * s
    d = np.asarray(depth, np.float32)[:h, :w]
    # one pass per offset in the block over (H/s, W/s) images: numpy reduces a short last
    # axis slowly (10 ms per 640 x 480 frame as a (240, 320, 4) reduction, ~1 ms this way)
    n = np.zeros((h // s, w // s), np.int32)
    total = np.zeros((h // s, w // s), np.float32)
    hi = np.full((h // s, w // s), -np.inf, np.float32)
    lo = np.full((h // s, w // s), np.inf, np.float32)
    for i in range(s):
        for j in range(s):
            x = d[i::s, j::s]
            v = x > 0
            n += v
            total += np.where(v, x, 0)
            np.maximum(hi, np.where(v, x, -np.inf), out=hi)
            np.minimum(lo, np.where(v, x, np.inf), out=lo)
    ok = (n * 2 >= s * s) & (hi - lo <= max_spread_m)
    return np.where(ok, total / np.maximum(n, 1), 0.0).astype(np.float32)


def _rot_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1, 1))))


def _step_problems(corr: np.ndarray, max_m: float, max_deg: float, why: str) -> list[str]:
    """[] when the correction ``corr`` (4, 4) stays within max_m / max_deg, else its text."""
    step_m, step_deg = float(np.linalg.norm(corr[:3, 3])), _rot_deg(corr[:3, :3])
    if step_m > max_m or step_deg > max_deg:
        return [f"correction {step_m * 100:.1f} cm / {step_deg:.1f} deg {why}"]
    return []


def _pose_gap(A: np.ndarray, B: np.ndarray) -> float:
    """How far apart two poses are: metres + 1 cm per degree."""
    D = np.linalg.inv(A) @ B
    return float(np.linalg.norm(D[:3, 3])) + 0.01 * _rot_deg(D[:3, :3])


class RgbdTracker:
    """Incremental tracker + TSDF. ``process(rgb, depth_m)`` per frame, in order."""

    def __init__(self, intrinsics, config: TrackerConfig = TrackerConfig(),
                 T_world_first: np.ndarray | None = None, max_results: int = 0,
                 search_loops: bool = False):
        """max_results: keep only the last n TrackResults in ``result`` (a live tracker that
        runs for hours; 0 = all, which the offline loop closure needs). search_loops (the
        offline chain, which calls :meth:`close_loops` at the end): each new keyframe's
        first-round loop checks start at once on the loop workers, beside the tracking (the
        front end keeps about one core busy, the checks the other)."""
        # lazy: open3d (~3 s) to import, loaded only when this runs
        import open3d as o3d
        import open3d.core as o3c

        configure_threads()  # whatever was imported first: no spinning OpenMP threads
        o3d.utility.set_verbosity_level(o3d.utility.VerbosityLevel.Error)
        self.o3d, self.o3c = o3d, o3c
        self.cfg = config
        self.intr = intrinsics
        self.dev = o3c.Device(config.device)
        c = config
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)), voxel_size=c.voxel_size_m,
            block_resolution=c.block_resolution, block_count=c.block_count, device=self.dev)
        K = np.array([[intrinsics.fx, 0, intrinsics.cx], [0, intrinsics.fy, intrinsics.cy],
                      [0, 0, 1]], dtype=np.float64)
        s = int(c.tracking_downscale)
        # pixel centres at integer coordinates: x_small = (x + 0.5) / s - 0.5
        Ks = K.copy()
        Ks[0, 0] /= s
        Ks[1, 1] /= s
        Ks[0, 2] = (K[0, 2] + 0.5) / s - 0.5
        Ks[1, 2] = (K[1, 2] + 0.5) / s - 0.5
        self.K = o3c.Tensor(K, o3c.float64)
        self.K_small = o3c.Tensor(Ks, o3c.float64)
        self.small_size = (intrinsics.width // s, intrinsics.height // s)
        methods = {TrackerMethod.HYBRID: o3d.t.pipelines.odometry.Method.Hybrid,
                   TrackerMethod.GEOMETRY_THEN_COLOUR: o3d.t.pipelines.odometry.Method.PointToPlane,
                   TrackerMethod.POINT_TO_PLANE: o3d.t.pipelines.odometry.Method.PointToPlane,
                   TrackerMethod.INTENSITY: o3d.t.pipelines.odometry.Method.Intensity}
        self.method = methods[c.method]
        self.colour_refine = [o3d.t.pipelines.odometry.OdometryConvergenceCriteria(n)
                              for n in c.colour_iterations]
        self.loop_method = methods[c.loop_method]
        self.criteria = [o3d.t.pipelines.odometry.OdometryConvergenceCriteria(n)
                         for n in c.odometry_iterations]
        self.loop_criteria = ([o3d.t.pipelines.odometry.OdometryConvergenceCriteria(n)
                               for n in c.loop_iterations] or self.criteria)[:3]
        self.loss = o3d.t.pipelines.odometry.OdometryLossParams(
            c.depth_outlier_trunc_m, c.depth_huber_delta_m, c.intensity_huber_delta)
        self.result = ReconstructionResult()
        self.T_world_first = np.eye(4) if T_world_first is None else np.asarray(T_world_first)
        self._last_block_coords = None
        self._last_kf = None
        self._kf_image = None
        self.keyframes: list[dict] = []     # frame, T, small RGB-D image, ORB features
        self._ref_kf = 0
        self._fails = 0
        self._unverified = False  # the last tracked frame could not be verified
        self._count = 0
        self.max_results = int(max_results)
        self._trusted: deque = deque(maxlen=2)  # (time s, T_world_camera, T_odom_camera)
        self._reloc = self._features = None   # re-localisation; keyframe features
        if (config.relocalise or config.bundle_adjustment) and config.reference != "model":
            self._features = Relocaliser(K)
            self._reloc = self._features if config.relocalise else None
        self.loop_closures: list[tuple[int, int]] = []
        self.loop_edges: list[tuple[int, int, np.ndarray]] = []  # keyframes i, j, T_i_j
        self.search_loops = bool(search_loops and config.loop_closure)
        self._early_checks: dict[tuple[int, int], tuple] = {}  # (i, j) -> (T_i_j, Future)
        self.bundle = BundleConfig()    # the bundle adjustment's settings (adjust_bundle)
        self.smoother = SmootherConfig()  # the trajectory smoother's settings (smooth)
        self._prev_odom = None
        self._n_integrated = 0

    # ------------------------------------------------------------------------------------------

    def _images(self, rgb: np.ndarray, depth: np.ndarray, full: bool = True,
                small: bool = True):
        """The frame as Open3D images: (full-resolution (depth, colour) images for the TSDF or
        None, the tracking RGBDImage at 1/tracking_downscale or None); each only when asked
        for (the front end of the keyframe tracker never integrates: the two full-resolution
        tensors were a fifth of its image preparation)."""
        o3d, o3c = self.o3d, self.o3c
        d = np.where((depth >= self.cfg.depth_min_m) & (depth <= self.cfg.depth_max_m), depth, 0)
        d = np.ascontiguousarray(d, dtype=np.float32)
        col = np.divide(rgb, np.float32(255.0), dtype=np.float32)  # one pass; = float32 / 255
        out_full = out_small = None
        if full:
            out_full = (o3d.t.geometry.Image(o3c.Tensor(d, device=self.dev)),
                        o3d.t.geometry.Image(o3c.Tensor(col, device=self.dev)))
        if small:
            s = self.cfg.tracking_downscale
            if s > 1:
                ds = downscale_depth(d, s)
                cs = cv2.resize(col, self.small_size, interpolation=cv2.INTER_AREA)
            else:
                ds, cs = d, col
            out_small = o3d.t.geometry.RGBDImage(
                o3d.t.geometry.Image(o3c.Tensor(cs, device=self.dev)),
                o3d.t.geometry.Image(o3c.Tensor(ds, device=self.dev)))
        return out_full, out_small

    def _integrate(self, depth_img, color_img, T_world_camera: np.ndarray) -> None:
        o3c = self.o3c
        ext = o3c.Tensor(np.linalg.inv(T_world_camera), o3c.float64)
        coords = self.vbg.compute_unique_block_coordinates(
            depth_img, self.K, ext, 1.0, self.cfg.depth_max_m,
            trunc_voxel_multiplier=self.cfg.sdf_trunc_voxels)
        self.vbg.integrate(coords, depth_img, color_img, self.K, self.K, ext, 1.0,
                           self.cfg.depth_max_m, trunc_voxel_multiplier=self.cfg.sdf_trunc_voxels)
        self._last_block_coords = coords
        self._n_integrated += 1

    def _predict(self, T_odom_camera: np.ndarray | None, t_now: float
                 ) -> tuple[np.ndarray, float]:
        """(predicted T_world_camera, time since the last trusted frame in seconds) for a
        frame at ``t_now`` s (:meth:`_t`: its stamp, or 30 Hz by index without stamps, as the
        trusted frames' times). Odometry delta when given; else constant velocity of the last
        two trusted frames, scaled by the time since the last one (capped at
        ``max_extrapolation_s``: beyond that the motion is unknown)."""
        (t1, T1, odom1) = self._trusted[-1]
        gap = max(0.0, t_now - t1)
        if T_odom_camera is not None and odom1 is not None:
            return T1 @ np.linalg.inv(odom1) @ T_odom_camera, gap
        if len(self._trusted) >= 2:
            (t0, T0, _) = self._trusted[-2]
            if t1 > t0:
                xi = se3_log(np.linalg.inv(T0) @ T1) / (t1 - t0)
                dt = min(gap, self.cfg.max_extrapolation_s)
                return T1 @ se3_exp(xi * dt), gap
        return T1.copy(), gap

    def _odometry(self, src, tgt, init: np.ndarray, criteria, method, colour: bool,
                  baseline_cap: bool = True, prefer_prediction: bool = False,
                  colour_gate: tuple[float, float] | None = None):
        """T_tgt_src by dense odometry from ``init`` -> (T, fitness, inlier rmse); raises
        RuntimeError when there is nothing to align. ``colour``: after the (geometric) method,
        a hybrid (depth + colour) refinement from its result, kept only when it stays within
        ``colour_max_shift_m`` / ``colour_max_shift_deg`` (or ``colour_max_shift_fraction`` of
        the baseline between the views, when larger) of the geometric pose -- colour
        refines where it agrees with the geometry and is ignored where exposure changes, blur
        or shading pull it away (measured on fr1/desk: hybrid alone 4.3 cm ATE, 22.6 cm with
        the former keyframe spacing, against 2.3 for point-to-plane; on the synthetic world
        point-to-plane alone drifts 1.4 deg where hybrid drifts 0.03 deg).

        ``prefer_prediction`` (``init`` is an independent estimate: odometry, or the PnP pose
        of re-localisation): when the two disagree by more than that, the one nearer ``init``
        is kept. Geometry alone can slide along a weakly constrained scene (a table top with a
        few boxes) to a false minimum with a near-zero residual: on the synthetic demo world
        tracked with drifting odometry and 1-3 frames skipped, as the live node does, geometry
        moved a 0.4 cm prediction 2.1 cm off, colour brought it back to 0.1 cm but was refused
        by the 2 cm cap, and the tracker then trusted 2-5 cm errors; with the tie-break the
        worst trusted pose was 0.7 cm. Not for a constant-velocity prediction, which is no
        referee (fr1/desk, hand-held: ATE on frames 300-595 1.96 -> 3.44 cm with it).

        ``colour_gate`` (min fitness, max inlier rmse m): a geometric result outside it gets
        no colour refinement (the caller refuses it on these figures, which colour does not
        change). -> (T, fitness, rmse, colour_used). Keeps no state: loop checks call it from
        worker threads while the front end tracks."""
        o3d, o3c, c = self.o3d, self.o3c, self.cfg
        odom = o3d.t.pipelines.odometry
        odo = odom.rgbd_odometry_multi_scale(src, tgt, self.K_small,
                                             o3c.Tensor(init, o3c.float64), 1.0, c.depth_max_m,
                                             criteria, method, self.loss)
        T = odo.transformation.cpu().numpy()
        fitness, rmse = float(odo.fitness), float(odo.inlier_rmse)
        colour_used = False
        if colour_gate is not None and (fitness < colour_gate[0] or rmse > colour_gate[1]):
            colour = False
        if colour:
            try:
                odc = odom.rgbd_odometry_multi_scale(
                    src, tgt, self.K_small, odo.transformation, 1.0, c.depth_max_m,
                    self.colour_refine, odom.Method.Hybrid, self.loss)
                Tc = odc.transformation.cpu().numpy()
                dc = np.linalg.inv(T) @ Tc
                # the geometric pose is less certain over a longer baseline: the allowed shift
                # grows with it (a fraction of the motion between the two views)
                f = c.colour_max_shift_fraction if baseline_cap else 0.0
                cap_m = max(c.colour_max_shift_m, f * float(np.linalg.norm(T[:3, 3])))
                cap_deg = max(c.colour_max_shift_deg, f * _rot_deg(T[:3, :3]))
                if np.linalg.norm(dc[:3, 3]) <= cap_m and _rot_deg(dc[:3, :3]) <= cap_deg:
                    T, colour_used = Tc, True
                elif prefer_prediction and _pose_gap(Tc, init) < _pose_gap(T, init):
                    # a conflict: the one nearer the odometry's prediction wins
                    T, colour_used = Tc, True
            except RuntimeError:
                pass
        return T, fitness, rmse, colour_used

    def _align(self, small, ref_image, T_ref: np.ndarray, T_init: np.ndarray,
               independent_init: bool = False):
        """Dense odometry of ``small`` onto the reference image (pose ``T_ref``) from the world
        pose ``T_init`` (``independent_init``: from odometry or PnP) -> (T_world_camera, fitness,
        inlier rmse, correction T_init^-1 T, error text)."""
        init = np.linalg.inv(T_ref) @ T_init
        try:
            T_ref_cam, fitness, rmse, _ = self._odometry(
                small, ref_image, init, self.criteria[:3], self.method,
                self.cfg.method == TrackerMethod.GEOMETRY_THEN_COLOUR,
                prefer_prediction=independent_init)
        except RuntimeError as e:  # Open3D raises when there are no correspondences
            return T_init, 0.0, np.inf, np.eye(4), str(e)
        T = T_ref @ T_ref_cam
        return T, fitness, rmse, np.linalg.inv(T_init) @ T, ""

    def _problems(self, fitness, rmse, corr, err, max_step_m, max_step_deg) -> list[str]:
        c = self.cfg
        problems = []
        if err:
            problems.append(f"odometry failed: {err}")
        if fitness < c.min_fitness:
            problems.append(f"fitness {fitness:.2f} < {c.min_fitness}")
        if rmse > c.max_inlier_rmse_m:
            problems.append(f"inlier rmse {rmse * 1000:.1f} mm > {c.max_inlier_rmse_m * 1000} mm")
        return problems + _step_problems(corr, max_step_m, max_step_deg, "too large")

    def _relocalise(self, rgb, small):
        """Pose of a frame the prediction could not track, from the keyframes: ORB + PnP
        RANSAC against the keyframes' features, refined by dense odometry and accepted only when
        the refinement passes the checks. -> (T, fitness, rmse, keyframe position) or None."""
        if self._reloc is None:
            return None
        c = self.cfg
        usable = [k for k, kf in enumerate(self.keyframes) if kf.get("features") is not None]
        if not usable:
            return None
        hits = self._reloc.locate(rgb, [self.keyframes[k]["features"] for k in usable],
                                  max_tries=c.relocalise_tries)
        for h in hits:
            k = usable[h.keyframe]
            kf = self.keyframes[k]
            if kf.get("packed") is None:
                continue
            image = self._kf_rgbd(k)
            T_init = kf["T"] @ h.T_kf_camera
            T, fit, rmse, corr, err = self._align(small, image, kf["T"], T_init,
                                                  independent_init=True)
            # PnP from a few hundred keypoints is good to a few cm: the dense refinement must
            # confirm it, not move far away from it
            problems = self._problems(fit, rmse, corr, err, c.relocalise_max_correction_m,
                                      c.relocalise_max_correction_deg)
            if fit < c.relocalise_min_fitness:
                problems.append(f"fitness {fit:.2f} < {c.relocalise_min_fitness}")
            if not problems:
                return T, fit, rmse, k
        return None

    def _add_keyframe(self, idx: int, T: np.ndarray, small, rgb, depth) -> int:
        kf = {"frame": idx, "T": T.copy(), "packed": self._pack(small), "features": None}
        if self._features is not None:
            kf["features"] = self._features.keyframe_features(rgb, depth)
        self.keyframes.append(kf)
        self._last_kf, self._kf_image, self._ref_kf = T, small, len(self.keyframes) - 1
        self._trim_keyframes()
        if self.search_loops:
            self._check_new_keyframe_loops()
        return len(self.keyframes) - 1

    def _use_reference(self, k: int) -> None:
        """Track the next frames against keyframe k (a re-localisation found the camera there)."""
        self._last_kf, self._kf_image, self._ref_kf = self.keyframes[k]["T"], self._kf_rgbd(k), k

    def _pack(self, small) -> tuple[np.ndarray, np.ndarray]:
        """A keyframe's tracking image, compact: colour uint8, depth uint16 mm (0.38 MB at
        320x240 instead of 1.2 MB of float tensors)."""
        col = np.round(small.color.as_tensor().cpu().numpy() * 255.0).astype(np.uint8)
        dep = np.round(small.depth.as_tensor().cpu().numpy() * 1000.0)
        return col, np.clip(dep, 0, 65535).astype(np.uint16).reshape(dep.shape[:2])

    def _kf_rgbd(self, k: int):
        """Keyframe k's tracking image as an Open3D RGBDImage (from its packed form)."""
        return self._unpack(self.keyframes[k]["packed"])

    def _unpack(self, packed):
        """A packed tracking image (:meth:`_pack`) as an Open3D RGBDImage."""
        o3d, o3c = self.o3d, self.o3c
        col, dep = packed
        return o3d.t.geometry.RGBDImage(
            o3d.t.geometry.Image(o3c.Tensor(col.astype(np.float32) / 255.0, device=self.dev)),
            o3d.t.geometry.Image(o3c.Tensor(dep.astype(np.float32) / 1000.0, device=self.dev)))

    def _trim_keyframes(self) -> None:
        """Keep the images and features of at most ``max_keyframes`` keyframes (the memory
        budget): beyond it the oldest keyframes keep their pose only (a few hundred bytes) and
        are no longer loop-closure or re-localisation candidates."""
        n = self.cfg.max_keyframes
        if n <= 0:
            return
        with_data = [k for k, kf in enumerate(self.keyframes) if kf.get("packed") is not None]
        for k in with_data[:max(0, len(with_data) - n)]:
            if k == self._ref_kf:
                continue
            self.keyframes[k]["packed"] = None
            self.keyframes[k]["features"] = None

    @property
    def lost(self) -> bool:
        """True while the tracker has lost the camera (consecutive untrusted frames)."""
        return self._fails >= max(1, self.cfg.lost_after_failures)

    def process(self, rgb: np.ndarray, depth_m: np.ndarray,
                T_odom_camera: np.ndarray | None = None, stamp_ns: int | None = None
                ) -> TrackResult:
        """Track one frame. rgb: (H, W, 3) uint8; depth_m: (H, W) float32 metres, 0 invalid;
        T_odom_camera: optional (4, 4) odometry pose of the camera (prior for the motion);
        stamp_ns: the frame's time (scales the motion prediction over skipped frames).

        A frame is trusted (``ok``) only when its alignment passed every check; otherwise it
        keeps the prediction, is flagged with the reasons, and is not used for the motion
        model, keyframes or the map. After a failure, or a gap longer than
        ``relocalise_after_gap_s``, the tracker re-localises against the keyframes. Without
        odometry, a frame tracked after a gap longer than ``verify_after_gap_s`` is checked
        against re-localisation (``_verify``); one that cannot be checked is ``unverified``:
        not trusted, but the tracking goes on from it until a frame is verified."""
        if depth_m.shape != (self.intr.height, self.intr.width) or rgb.shape[:2] != depth_m.shape:
            raise InputError(
                f"frame size rgb {rgb.shape[:2]} / depth {depth_m.shape} does not match the "
                f"intrinsics {self.intr.width}x{self.intr.height}")
        c = self.cfg
        full, small = self._images(rgb, depth_m, full=c.reference == "model")
        idx = self._count
        self._count += 1
        t_frame = self._t(stamp_ns, idx)
        odom = None if T_odom_camera is None else np.asarray(T_odom_camera, dtype=np.float64)
        if idx == 0:
            T = self.T_world_first.copy()
            if c.reference == "model":
                self._integrate(*full, T)
            self._add_keyframe(idx, T, small, rgb, depth_m)
            res = TrackResult(idx, T, True, 1.0, 0.0, True, "first frame", 0, "tracking",
                              t_frame)
            self._trusted.append((t_frame, T, odom))
            self._append(res)
            return res
        T_pred, gap = self._predict(odom, t_frame)
        problems: list[str] = []
        state = "tracking"
        fitness, rmse = 0.0, np.inf
        T = T_pred
        ref = self._ref_kf
        gap_reloc = (odom is None and c.relocalise_after_gap_s > 0
                     and gap > c.relocalise_after_gap_s)

        # vision alone over a gap: the prediction may be far off and the alignment can settle
        # in a false minimum that passes every check (synthetic demo world, 1-3 frames
        # skipped: 9-42 cm off): re-localisation checks it
        verify = (odom is None and c.relocalise and c.reference != "model"
                  and (0 <= c.verify_after_gap_s < gap or self._unverified))
        note = ""
        max_step_m, max_step_deg = c.max_step_m, c.max_step_deg
        odom1 = self._trusted[-1][2] if self._trusted else None
        # no odometry motion at all (the same transform: a static odom -> camera chain, a
        # placeholder for a camera without odometry, or a robot standing still): neither the
        # check nor the tie-break of _odometry, as without odometry
        moved = (None if odom is None or odom1 is None or np.array_equal(odom, odom1)
                 else np.linalg.inv(odom1) @ odom)
        if moved is not None:
            max_step_m = min(max_step_m, c.odometry_check_m
                             + c.odometry_check_fraction * float(np.linalg.norm(moved[:3, 3])))
            max_step_deg = min(max_step_deg, c.odometry_check_deg
                               + c.odometry_check_fraction * _rot_deg(moved[:3, :3]))

        def track_from_prediction():
            if c.reference == "model":
                T_ref, target = T_pred, self._raycast(T_pred)
            else:
                T_ref, target = self._last_kf, self._kf_image
            res = self._align(small, target, T_ref, T_pred, independent_init=moved is not None)
            return res[:3], self._problems(res[1], res[2], res[3], res[4], max_step_m,
                                           max_step_deg)

        def odometry_disagrees(T_) -> list[str]:
            """A re-localised pose is held to the odometry check too."""
            if moved is None:
                return []
            return _step_problems(np.linalg.inv(T_pred) @ T_, max_step_m, max_step_deg,
                                  "from the odometry's prediction (re-localised)")

        def relocalise():
            found = self._relocalise(rgb, small) if (c.relocalise
                                                     and c.reference != "model") else None
            if found is not None:
                self._use_reference(found[3])
            return found

        if self.lost or gap_reloc:
            # after a loss, or a gap the motion model cannot bridge (frames dropped, a slow
            # tracker): the keyframes first (a global answer), then the prediction (the camera
            # may have stood still; the usual checks decide)
            why = ("tracking lost" if self.lost
                   else f"{gap:.2f} s since the last tracked frame")
            found = relocalise()
            if found is not None:
                T, fitness, rmse, ref = found
                problems, state = odometry_disagrees(T), "relocalised"
            elif not self.lost:
                (T, fitness, rmse), problems = track_from_prediction()
                if problems:
                    problems = [f"{why}: re-localisation against the keyframes failed"] + problems
                elif verify:   # nothing to check it against
                    state, problems = "unverified", [self._unverified_text(gap)]
            else:
                problems = [f"{why}: re-localisation against the keyframes failed"]
        else:
            (T, fitness, rmse), problems = track_from_prediction()
            if problems:
                found = relocalise()
                if found is not None:
                    T, fitness, rmse, ref = found
                    problems, state = odometry_disagrees(T), "relocalised"
                elif c.relocalise and c.reference != "model":
                    problems.append("re-localisation against the keyframes failed")
            elif verify:
                (T, fitness, rmse, ref), state, problems, note = self._verify(
                    rgb, small, (T, fitness, rmse, ref), gap)
        ok = not problems
        if not ok and state == "unverified":
            # passed the tracking checks but could not be verified: not trusted (no keyframe,
            # no map, not published), not a loss either -- the motion model and the next
            # frame's alignment go on from it, and the next verification confirms or replaces it
            self._trusted.append((t_frame, T, odom))
            self._last_kf, self._kf_image, self._unverified = T, small, True
        elif not ok:
            T = T_pred
            self._fails += 1
            state = "lost" if self.lost else "failed"
        else:
            self._fails, self._unverified = 0, False
        kf = False
        if ok:
            dk = np.linalg.inv(self.keyframes[self._ref_kf]["T"]) @ T
            kf = (np.linalg.norm(dk[:3, 3]) > c.keyframe_dist_m
                  or _rot_deg(dk[:3, :3]) > c.keyframe_angle_deg
                  or fitness < c.keyframe_min_fitness)
            if kf:
                self._add_keyframe(idx, T, small, rgb, depth_m)
            ref = self._ref_kf
            if c.reference == "model":
                self._integrate(*full, T)
            if state == "relocalised":
                self._trusted.clear()  # no velocity across the gap
            self._trusted.append((t_frame, T, odom))
        res = TrackResult(idx, T, ok, fitness, rmse, kf, "; ".join(problems) or note, ref, state,
                          t_frame)
        self._append(res)
        return res

    @staticmethod
    def _unverified_text(gap: float) -> str:
        return (f"tracked over a {gap:.2f} s gap without odometry and not verified: "
                "re-localisation against the keyframes failed")

    def _verify(self, rgb, small, tracked, gap: float):
        """Check a pose tracked over a gap without odometry against re-localisation (ORB + PnP
        against the keyframes, refined densely: a start independent of the motion prediction).
        -> ((T, fitness, rmse, reference keyframe), state, problems, note). Measured: on the
        synthetic demo world with 1-3 frames skipped the two agreed within 0.2 cm on every
        good frame and differed by 7-35 cm on every false minimum, where re-localisation was
        right; on fr1/desk (real, hand-held, 1-3 frames skipped) they differ beyond 2 cm on
        ~2 % of the good frames, mostly where the map has drifted between the two keyframes
        (both locally right), and re-localisation failed on ~3 % (motion blur)."""
        c = self.cfg
        found = self._relocalise(rgb, small)
        if found is None:
            return tracked, "unverified", [self._unverified_text(gap)], ""
        diff = np.linalg.inv(found[0]) @ tracked[0]
        if not _step_problems(diff, c.verify_max_m, c.verify_max_deg, ""):
            return tracked, "tracking", [], ""
        self._use_reference(found[3])
        return (found, "relocalised", [],
                f"tracked pose {np.linalg.norm(diff[:3, 3]) * 100:.1f} cm / "
                f"{_rot_deg(diff[:3, :3]):.1f} deg from the re-localised one: re-localised "
                "pose used")

    def _append(self, res: TrackResult) -> None:
        self.result.frames.append(res)
        if self.max_results > 0 and len(self.result.frames) > self.max_results:
            del self.result.frames[: len(self.result.frames) - self.max_results]

    @staticmethod
    def _t(stamp_ns: int | None, idx: int) -> float:
        return stamp_ns * 1e-9 if stamp_ns is not None else idx / 30.0

    def _raycast(self, T_pred: np.ndarray):
        o3d, o3c, c = self.o3d, self.o3c, self.cfg
        ext = o3c.Tensor(np.linalg.inv(T_pred), o3c.float64)
        w, h = self.small_size
        rc = self.vbg.ray_cast(block_coords=self._last_block_coords, intrinsic=self.K_small,
                               extrinsic=ext, width=w, height=h,
                               render_attributes=["depth", "color"], depth_scale=1.0,
                               depth_min=c.depth_min_m, depth_max=c.depth_max_m,
                               weight_threshold=1.0, trunc_voxel_multiplier=c.sdf_trunc_voxels)
        return o3d.t.geometry.RGBDImage(o3d.t.geometry.Image(rc["color"]),
                                        o3d.t.geometry.Image(rc["depth"]))

    # ------------------------------------------------------------------------------------------

    def _loop_candidates(self, current: list[np.ndarray], j: int, accepted, rejected
                         ) -> list[tuple[int, np.ndarray]]:
        """Keyframe j's loop-closure candidates among the keyframes before it, nearest first,
        from the poses ``current``: [(i, T_i_j)]. Skips pairs already ``accepted``, keyframes
        without images (trimmed by the budget) and pairs ``rejected`` from about the same
        relative pose (they would be refused again)."""
        c, kfs = self.cfg, self.keyframes
        if kfs[j]["packed"] is None:
            return []
        eligible = [i for i in range(j - max(2, c.loop_min_gap) + 1)
                    if (i, j) not in accepted and kfs[i]["packed"] is not None]
        near = nearest_keyframes(np.array([current[i] for i in eligible]).reshape(-1, 4, 4),
                                 current[j], c.loop_max_dist_m, c.loop_max_angle_deg,
                                 c.loop_max_candidates)
        cands = [(eligible[n], np.linalg.inv(current[eligible[n]]) @ current[j]) for n in near]
        out = []
        for i, d in cands:
            prev = rejected.get((i, j))
            if prev is not None:  # tried: again only if the estimate moved
                m = np.linalg.inv(prev) @ d
                if np.linalg.norm(m[:3, 3]) < 0.02 and _rot_deg(m[:3, :3]) < 2.0:
                    continue
            out.append((i, d))
        return out

    def _submit_loop_check(self, i: int, j: int, d: np.ndarray, workers: int):
        """Keyframe j's alignment onto keyframe i from T_i_j = ``d``, on a pool of ``workers``
        threads: a Future of the loop edge or None (:meth:`_loop_edge`). The job holds the
        keyframes' packed images, not the tracker's list: trimming them later changes
        nothing."""
        pi, pj = self.keyframes[i]["packed"], self.keyframes[j]["packed"]
        return worker_pool(workers).submit(self._loop_edge, i, j, d, pi, pj)

    def _check_new_keyframe_loops(self) -> None:
        """With ``search_loops``: the newest keyframe's first-round loop checks start now, on the
        loop workers, while the front end tracks on (their poses are final for that round)."""
        j = len(self.keyframes) - 1
        current = [kf["T"] for kf in self.keyframes]
        # one worker fewer than at the end: the front end, the critical path, keeps a core
        workers = max(1, self.cfg.loop_workers - 1)
        for i, d in self._loop_candidates(current, j, {}, {}):
            self._early_checks[(i, j)] = (d, self._submit_loop_check(i, j, d, workers))

    def cancel_loop_checks(self) -> int:
        """Drop the loop checks started while tracking that have not run yet (a job given up
        before :meth:`close_loops`); returns how many were dropped."""
        early, self._early_checks = self._early_checks, {}
        return sum(fut.cancel() for _, fut in early.values())

    def _edge_info(self, src, tgt, T_t_s: np.ndarray) -> np.ndarray:
        """The pose-graph information matrix of the alignment T_t_s of RGBD image ``src`` onto
        ``tgt`` (None: trimmed by the keyframe budget, a weak prior)."""
        if src is None or tgt is None:
            return np.eye(6) * 100.0
        return self.o3d.t.pipelines.odometry.compute_odometry_information_matrix(
            src.depth, tgt.depth, self.K_small, self.o3c.Tensor(T_t_s, self.o3c.float64), 0.03,
            1.0, self.cfg.depth_max_m).cpu().numpy()

    def close_loops(self) -> int:
        """Keyframe pose graph: odometry edges between consecutive keyframes, loop-closure
        edges between keyframes that see the same place again (verified by RGB-D odometry),
        global optimisation; every frame then follows its reference keyframe. Returns the
        number of loop closures used. The checks of a round run side by side on
        ``loop_workers`` threads (each with OpenMP teams of one: the same edges for any number
        of workers); with ``search_loops`` the first round's were started while tracking."""
        o3d = self.o3d
        reg = o3d.pipelines.registration
        c = self.cfg
        frames = self.result.frames
        kfs = self.keyframes
        if len(kfs) < 4:
            self.cancel_loop_checks()
            return 0
        early = self._early_checks   # consumed below; what is left is dropped at the end
        T_kf = [frames[k["frame"]].T_world_camera for k in kfs]
        pool = worker_pool(c.loop_workers)

        def img(k: int):
            return None if kfs[k]["packed"] is None else self._kf_rgbd(k)

        def odo_edge(i: int):
            T_t_s = np.linalg.inv(T_kf[i]) @ T_kf[i + 1]
            return reg.PoseGraphEdge(i + 1, i, T_t_s, self._edge_info(img(i + 1), img(i), T_t_s),
                                     uncertain=False)
        odo_edges = list(pool.map(odo_edge, range(len(kfs) - 1)))
        # Rounds: candidates are searched around the current estimate; after an optimisation
        # the drift is smaller, so pairs that were too far apart (or converged to nothing from
        # a drifted start) are found and verified in the next round.
        current = list(T_kf)
        accepted: dict[tuple[int, int], object] = {}
        rejected: dict[tuple[int, int], np.ndarray] = {}
        for _round in range(max(1, c.loop_rounds)):
            checks = []
            for j in range(len(kfs)):
                for i, d in self._loop_candidates(current, j, accepted, rejected):
                    pre = early.pop((i, j), None)
                    fut = (pre[1] if pre is not None and np.array_equal(pre[0], d)
                           else self._submit_loop_check(i, j, d, c.loop_workers))
                    checks.append((i, j, d, fut))
            found = 0
            for i, j, d, fut in checks:   # in the order a serial search makes them
                edge = fut.result()
                if edge is not None:
                    accepted[(i, j)] = edge
                    found += 1
                else:
                    rejected[(i, j)] = d
            if not accepted or (found == 0 and _round > 0):
                break
            graph = reg.PoseGraph()
            for T in T_kf:
                graph.nodes.append(reg.PoseGraphNode(T))
            for e in odo_edges:
                graph.edges.append(e)
            for e in accepted.values():
                graph.edges.append(e)
            reg.global_optimization(
                graph, reg.GlobalOptimizationLevenbergMarquardt(),
                reg.GlobalOptimizationConvergenceCriteria(),
                reg.GlobalOptimizationOption(max_correspondence_distance=0.03,
                                             edge_prune_threshold=0.25, reference_node=0))
            current = [np.asarray(n.pose) for n in graph.nodes]
        self.cancel_loop_checks()   # any left were started for keyframes trimmed since
        self.loop_closures = [(kfs[i]["frame"], kfs[j]["frame"]) for i, j in accepted]
        self.loop_edges = [(i, j, np.asarray(e.transformation)) for (i, j), e in accepted.items()]
        if not self.loop_closures:
            return 0
        new_kf = current
        for f in frames:
            old = T_kf[f.ref_keyframe]
            f.T_world_camera = new_kf[f.ref_keyframe] @ np.linalg.inv(old) @ f.T_world_camera
        return len(self.loop_closures)

    def adjust_bundle(self) -> BundleResult | None:
        """Feature bundle adjustment of the keyframe poses with ``self.bundle`` (after
        :meth:`close_loops`; see reconstruction/bundle.py); every frame then follows its
        reference keyframe. Keyframes without features (trimmed) follow their neighbours
        through the odometry priors. Returns the result, or None when it was not run or
        refused (the poses are kept)."""
        kfs = self.keyframes
        if len(kfs) < 3 or all(k["features"] is None for k in kfs):
            return None
        frames = self.result.frames
        T_kf = np.array([frames[k["frame"]].T_world_camera for k in kfs])
        none = KeyframeFeatures(np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8),
                                np.zeros((0, 3), np.float32), np.zeros(0, int))
        feats = [none if k["features"] is None else k["features"] for k in kfs]
        res = bundle_adjust(T_kf, feats, self.K.cpu().numpy(), self.bundle,
                            pool=worker_pool(self.cfg.loop_workers), loop_edges=self.loop_edges)
        if res is None:
            return None
        for f in frames:
            r = f.ref_keyframe
            f.T_world_camera = res.T_world_kf[r] @ np.linalg.inv(T_kf[r]) @ f.T_world_camera
        return res

    def smooth(self) -> int:
        """Smooth every trusted frame's pose with a motion prior (``self.smoother``, see
        reconstruction/smoothing.py), after :meth:`close_loops` and :meth:`adjust_bundle`:
        an offline step, the frames' stamps tell it the time between them. A re-localised
        frame starts a new stretch; frames that are not trusted keep their poses. Returns the
        number of frames smoothed."""
        frames = self.result.frames
        if len(frames) < 3:
            return 0
        ok = np.array([f.ok for f in frames])
        out, used = smooth_trajectory(np.array([f.T_world_camera for f in frames]),
                                      np.array([f.stamp_s for f in frames]), ok, self.smoother,
                                      breaks=np.array([f.state == "relocalised" for f in frames]))
        for f, T in zip(frames, out):
            f.T_world_camera = T
        return used

    def _loop_edge(self, i: int, j: int, d: np.ndarray, packed_i, packed_j):
        """Verified alignment of keyframe j onto keyframe i from the relative pose ``d``
        (T_i_j) with ``loop_method``; an uncertain pose-graph edge, or None. packed_i,
        packed_j: the keyframes' packed images. Runs on a loop worker."""
        c = self.cfg
        reg = self.o3d.pipelines.registration
        src, tgt = self._unpack(packed_j), self._unpack(packed_i)
        try:
            # the fixed cap only: between keyframes far apart, colour pulled the loop edges
            # (fr1/desk 2.9 cm ATE with the baseline-scaled cap, 2.65 without)
            # 4 of 5 checks fail on the geometric fitness (fr1/desk: 1060 of 1344): no
            # colour refinement for them (loop closure 48 -> 37 s on fr1/desk, the same edges)
            T_t_s, fitness, rmse, _ = self._odometry(src, tgt, d, self.loop_criteria,
                                                     self.loop_method,
                                                     c.loop_method == "geometry_then_colour",
                                                     baseline_cap=False,
                                                     colour_gate=(c.loop_min_fitness,
                                                                  c.max_inlier_rmse_m))
        except RuntimeError:
            return None
        corr = np.linalg.inv(d) @ T_t_s
        if (fitness < c.loop_min_fitness or rmse > c.max_inlier_rmse_m
                or np.linalg.norm(corr[:3, 3]) > 0.1 or _rot_deg(corr[:3, :3]) > 10):
            return None
        return reg.PoseGraphEdge(j, i, T_t_s, self._edge_info(src, tgt, T_t_s), uncertain=True)

    def integrate_frames(self, load_frame, progress: ProgressFn = noop_progress) -> int:
        """(Re-)build the TSDF from the final poses. ``load_frame(i) -> (rgb, depth_m)``;
        integrates every ``integrate_every``-th tracked frame and all keyframes."""
        o3d, o3c, c = self.o3d, self.o3c, self.cfg
        self.vbg = o3d.t.geometry.VoxelBlockGrid(
            attr_names=("tsdf", "weight", "color"),
            attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
            attr_channels=((1), (1), (3)), voxel_size=c.voxel_size_m,
            block_resolution=c.block_resolution, block_count=c.block_count, device=self.dev)
        todo = [f for f in self.result.frames
                if f.ok and (f.index % max(1, c.integrate_every) == 0 or f.keyframe)]
        for k, f in enumerate(todo):
            rgb, depth = load_frame(f.index)
            full, _ = self._images(rgb, depth, small=False)
            self._integrate(*full, f.T_world_camera)
            if k % 10 == 0 or k == len(todo) - 1:
                progress("integration", (k + 1) / len(todo), f"frame {k + 1}/{len(todo)}")
        return len(todo)

    def extract_mesh(self, weight_threshold: float = 2.0):
        """Scene mesh as an Open3D legacy TriangleMesh (vertex colours), world frame."""
        m = self.vbg.extract_triangle_mesh(weight_threshold=weight_threshold)
        return m.to_legacy()

    def extract_point_cloud(self, weight_threshold: float = 2.0):
        """Scene points (N, 3) float64 and colours (N, 3) float32 in [0, 1], world frame, in a
        fixed order (sorted by x, then y, then z): the TSDF's hash map hands them out in an
        order that changes run to run, and the registration's voxel grid and RANSAC see the
        order (0.01-0.13 mm between two orders on the synthetic `full` world)."""
        pc = self.vbg.extract_point_cloud(weight_threshold=weight_threshold)
        pts = pc.point.positions.cpu().numpy().astype(np.float64)
        cols = (pc.point.colors.cpu().numpy().astype(np.float32) if "colors" in pc.point
                else np.zeros_like(pts, dtype=np.float32))
        order = np.lexsort((pts[:, 2], pts[:, 1], pts[:, 0]))
        return pts[order], cols[order]
