"""Object registration: find T_world_object of a (untextured) mesh in a reconstructed scene.

The robot's objects stand on a support surface (table), so the search is built around it:
1. the support plane is found by RANSAC in the scene cloud, oriented towards the cameras;
2. points above it are clustered into object candidates (optionally only near a user prior);
3. for each candidate, pose hypotheses come from FPFH + RANSAC global registration AND from
   resting-pose hypotheses (each model axis up, yaw every ``yaw_step_deg``), every hypothesis
   is refined by point-to-plane ICP;
4. hypotheses are ranked by how well they explain the data both ways: the fraction of the
   model's (non-bottom) surface that has scene points within ``inlier_dist_m`` and the fraction
   of scene points inside the model's box that lie on the model;
5. the best is then checked against what the cameras measured (:class:`FitEvidence`, in the
   sequence's depth images, :class:`SceneViews`): the model surface the cameras see must be
   measured on it (``seen_fit``), no camera may have seen through it (``free_fraction``: a mesh
   larger than, or beside, the object), the measured surface must not go on beside it
   (``beyond_ratio``: a mesh smaller than the object) and the fit must not sink the model into
   the table (``below_table_m``: a mesh taller than the object). A mesh of another object fits some
   cluster somehow -- the score alone accepted wrong meshes at 0.47-0.51 -- but cannot fake
   these: it is refused with :class:`MeshMismatchError` (MESH_MISMATCH, bad input), and a fit
   that a clearly different pose matches nearly as well with :class:`RegistrationError`
   (ambiguous); never a silently wrong pose. bench/bench_registration_refusal.py measures
   every pair of objects (BENCHMARKS.md);
6. poses geometry cannot tell apart (a box upside down puts its surface in the same place) are
   one answer to it, but not to the renders and pose labels made from it: the one standing as
   modelled (model z along the table normal, ``up_axis``) is taken.

Same input, same answer: Open3D's random draws (plane RANSAC, feature RANSAC, sampling) come
from one process-wide generator and its RANSAC loops run on OpenMP threads, so with several
threads, or two registrations in one process, the draws and thus the result depended on thread
timing (a LearnObject once failed an object that 14 re-runs fitted). They run inside
:func:`seeded_open3d`: one registration at a time per process, one OpenMP thread, the
generator seeded with ``seed``.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import minimum_filter
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from threadpoolctl import threadpool_limits

from nol_ros.errors import ConfigError, InputError, NolError
from nol_ros.geometry import fit_rigid
from nol_ros.mesh import EmptyMeshError
from nol_ros.mesh import sample_surface as _sample


class RegistrationError(NolError):
    code = "REGISTRATION_FAILED"


class MeshMismatchError(RegistrationError, InputError):
    """The mesh matches nothing in the scene: even its best fit disagrees with what the cameras
    saw (a wrong mesh, wrong units, or an object the sequence does not show). ``result``: that
    best fit (:class:`RegistrationResult`, with its :class:`FitEvidence`)."""

    code = "MESH_MISMATCH"

    def __init__(self, message: str, result: RegistrationResult | None = None):
        super().__init__(message)
        self.result = result


_OPEN3D_RANDOM = threading.Lock()


@contextlib.contextmanager
def seeded_open3d(seed: int):
    """Open3D's random generator seeded with ``seed`` and its OpenMP loops on one thread, for
    this block alone and for no other thread of the process meanwhile (see the module doc)."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    with _OPEN3D_RANDOM, threadpool_limits(limits=1, user_api="openmp"):
        o3d.utility.random.seed(int(seed))
        yield


@dataclass(frozen=True)
class RegistrationConfig:
    voxel_m: float = 0.004                # the scene cloud is downsampled to this voxel
    plane_dist_m: float = 0.008           # RANSAC inlier distance of the support plane
    max_object_height_m: float = 0.45     # objects are looked for up to this above the plane
    cluster_eps_m: float = 0.02           # DBSCAN radius of the object clusters
    cluster_min_points: int = 40          # smallest cluster taken for an object
    model_points: int = 2500              # points sampled on the mesh
    yaw_step_deg: float = 30.0            # resting-pose hypotheses every this turn
    use_fpfh: bool = True                 # also FPFH + RANSAC hypotheses
    icp_max_dist_m: float = 0.02          # ICP correspondence distance
    icp_iterations: int = 40              # ICP iterations of the final refinement
    refine_top_k: int = 8              # hypotheses per cluster refined with the full model
    rest_bonus: float = 0.02           # score bonus of a pose resting on the support plane
    # the resting pose found is then moved (x, y, turn about the plane normal) to the maximum of
    # a smooth score, the kernel correlation of model and scene points: the hard-cutoff ICP
    # stops at one of several fixed points up to ~1 deg apart, and which one changed with the
    # last bits of the reconstruction (ObjectRegistrar._polish_on_support)
    polish_sigma_m: float = 0.005         # Gaussian width of the resting pose's polish (0 = off)
    inlier_dist_m: float = 0.006          # a model point fits when the scene is this close
    min_score: float = 0.45            # refuse below this (score in [0, 1])
    ambiguity_margin: float = 0.03     # a different pose within this score margin -> ambiguous
    distinct_pose_m: float = 0.02      # poses differing by more than this (ADD/ADI) are distinct
    # geometry cannot tell a box from itself upside down: among the poses that put the surface
    # where the best one does and score within up_tie_margin of it, take the one whose model
    # axis up_axis (z: the BOP / YCB convention of standing objects) points along the support
    # normal, when the best one's does not (cos < 0.7); -1 = keep geometry's pick
    up_axis: int = 2
    up_tie_margin: float = 0.03           # scores this close count as equal for the upright choice
    seed: int = 0                         # random draws (RANSAC, sampling): same input, same answer
    # the decision: the best fit is checked against what the cameras measured (FitEvidence)
    # in up to evidence_views depth images spread over the sequence (each evidence_downscale
    # times smaller); without images, the fused cloud seen from the camera poses (a virtual
    # camera of evidence_fov_deg, evidence_pixel_rad per pixel). Accepted when the measured
    # surface lies on the model (seen_fit), no camera saw through it (free_fraction), the
    # measured surface does not go on beside it (beyond_ratio) and the model does not go into
    # the table (below_table_m); else MESH_MISMATCH. The bars: bench_registration_refusal
    evidence_views: int = 24              # depth images (or poses) the fit is checked in
    evidence_downscale: int = 2           # ... at 1/this of their size
    evidence_near_px: int = 5             # see-through test: nearest depth over this many pixels
    evidence_fov_deg: float = 36.0        # no images: virtual camera field of view
    evidence_pixel_rad: float = 0.005     # no images: virtual camera pixel (radians)
    evidence_inlier_m: float = 0.008      # a measured point this close is on the model
    min_seen_fit: float = 0.78            # accept: share of the model in view measured on it
    free_space_tolerance_m: float = 0.015  # a surface measured this far behind: seen through
    max_free_fraction: float = 0.06       # accept: share of the model the cameras saw through
    beyond_from_m: float = 0.01           # measured surface this far from the model's is beside
    beyond_to_m: float = 0.025            # ... up to this far
    max_beyond_ratio: float = 0.04        # accept: surface beside per unit on the model
    max_below_table_m: float = 0.003      # accept: the model's lowest point this far in the table

    def __post_init__(self):
        if self.up_axis not in (-1, 0, 1, 2):
            raise ConfigError(f"registration up_axis {self.up_axis} must be 0, 1, 2 (the model "
                              "axis that points up when the object stands) or -1 (off)")


@dataclass
class Candidate:
    T_world_object: np.ndarray
    score: float
    model_fitness: float
    scene_fitness: float
    rmse_m: float
    cluster: int
    source: str


@dataclass
class RegistrationResult:
    T_world_object: np.ndarray
    score: float
    model_fitness: float
    scene_fitness: float
    rmse_m: float
    runner_up_score: float
    n_hypotheses: int
    cluster: int
    candidates: list[Candidate] = field(default_factory=list, repr=False)
    evidence: FitEvidence | None = None   # None: no camera poses to check the fit from

    def to_json(self) -> dict:
        return {"T_world_object": self.T_world_object.tolist(), "score": self.score,
                "model_fitness": self.model_fitness, "scene_fitness": self.scene_fitness,
                "rmse_m": self.rmse_m, "runner_up_score": self.runner_up_score,
                "n_hypotheses": self.n_hypotheses, "cluster": self.cluster,
                "evidence": None if self.evidence is None else self.evidence.to_json()}


@dataclass
class SupportPlane:
    normal: np.ndarray        # (3,) unit, pointing to the cameras' side
    d: float                  # plane: normal . x + d = 0
    inliers: np.ndarray       # (M, 3) points on the plane

    def height(self, pts: np.ndarray) -> np.ndarray:
        return pts @ self.normal + self.d

    def axes(self) -> np.ndarray:
        """(3, 2): two unit axes in the plane, orthogonal to each other and to the normal."""
        n = self.normal
        a = np.cross(n, [1.0, 0, 0])
        if np.linalg.norm(a) < 0.1:
            a = np.cross(n, [0, 1.0, 0])
        a /= np.linalg.norm(a)
        return np.stack([a, np.cross(n, a)], 1)


def _pcd(points: np.ndarray, normals: bool = True, radius: float = 0.015):
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    p = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.asarray(points, np.float64)))
    if normals and len(points) >= 3:
        p.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=radius, max_nn=30))
    return p


def focus_point(camera_poses: np.ndarray) -> np.ndarray:
    """Least-squares point closest to all optical axes (what the sequence looks at)."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for T in camera_poses:
        c, z = T[:3, 3], T[:3, 2]
        P = np.eye(3) - np.outer(z, z)
        A += P
        b += P @ c
    return np.linalg.lstsq(A, b, rcond=None)[0]


def find_support_plane(points: np.ndarray, camera_poses: np.ndarray | None,
                       cfg: RegistrationConfig = RegistrationConfig()) -> SupportPlane:
    """The support surface (table) the sequence looks at.

    Up to five planes are extracted by RANSAC (largest first). With camera poses, a plane
    qualifies when the cameras are above it and it has points near the foot of the point the
    cameras look at; among those, the one closest to that focus point is the table (the floor is
    usually larger but lower). Without poses the largest plane is used.
    """
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(points))
    rest = pcd
    planes: list[SupportPlane] = []
    for _ in range(5):
        if len(rest.points) < 200:
            break
        model, idx = rest.segment_plane(cfg.plane_dist_m, 3, 1000)
        if len(idx) < 200:
            break
        n, d = np.asarray(model[:3], float), float(model[3])
        s = np.linalg.norm(n)
        planes.append(SupportPlane(n / s, d / s, np.asarray(rest.points)[idx]))
        rest = rest.select_by_index(idx, invert=True)
    if not planes:
        raise RegistrationError("no plane found in the scene; the reconstruction may be empty")
    if camera_poses is None or len(camera_poses) == 0:
        return planes[0]
    centres = np.array([T[:3, 3] for T in camera_poses])
    f = focus_point(np.asarray(camera_poses))
    best, best_h = None, np.inf
    for pl in planes:
        h = centres @ pl.normal + pl.d
        if np.median(h) < 0:
            pl = SupportPlane(-pl.normal, -pl.d, pl.inliers)
            h = -h
        if np.median(h) < 0.1:
            continue  # cameras not above it: a wall
        hf = float(f @ pl.normal + pl.d)
        foot = f - hf * pl.normal
        if np.min(np.linalg.norm(pl.inliers - foot, axis=1)) > 0.3:
            continue  # the cameras do not look at this plane's area
        if abs(hf) < best_h:
            best, best_h = pl, abs(hf)
    if best is None:
        raise RegistrationError("no support plane (table) found below the point the cameras "
                                "look at; are the objects on a surface and in view?")
    return best


def object_clusters(points: np.ndarray, plane: SupportPlane, cfg: RegistrationConfig,
                    prior_point: np.ndarray | None = None, prior_radius_m: float = 0.3
                    ) -> list[np.ndarray]:
    """Clusters of scene points standing on the support plane: list of (Ni, 3) arrays."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    h = plane.height(points)
    above = points[(h > cfg.plane_dist_m * 1.5) & (h < cfg.max_object_height_m)]
    if len(above) == 0:
        return []
    # keep points whose foot lies on the table (near a plane inlier)
    foot = above - np.outer(plane.height(above), plane.normal)
    tab = plane.inliers
    if len(tab) > 20000:
        tab = tab[np.random.default_rng(0).choice(len(tab), 20000, replace=False)]
    dist, _ = cKDTree(tab).query(foot, k=1, distance_upper_bound=0.05)
    above = above[np.isfinite(dist)]
    if prior_point is not None:
        above = above[np.linalg.norm(above - prior_point, axis=1) < prior_radius_m]
    if len(above) < cfg.cluster_min_points:
        return []
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(above))
    labels = np.asarray(pcd.cluster_dbscan(cfg.cluster_eps_m, cfg.cluster_min_points))
    out = [above[labels == k] for k in range(labels.max() + 1)]
    return sorted(out, key=len, reverse=True)


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Surface samples and normals (see nol_ros.mesh.sample_surface); empty -> RegistrationError."""
    try:
        return _sample(vertices, faces, n, rng)
    except EmptyMeshError as e:
        raise RegistrationError(str(e)) from e


def _rot_a_to_b(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    v, c = np.cross(a, b), float(a @ b)
    if c < -1 + 1e-9:
        axis = np.cross(a, [1, 0, 0])
        if np.linalg.norm(axis) < 1e-6:
            axis = np.cross(a, [0, 1, 0])
        axis /= np.linalg.norm(axis)
        return 2 * np.outer(axis, axis) - np.eye(3)
    vx = np.array([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]])
    return np.eye(3) + vx + vx @ vx / (1 + c)


def _axis_angle(axis: np.ndarray, ang: float) -> np.ndarray:
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * ang).as_matrix()


class ObjectRegistrar:
    """Registers one model in a scene cloud. Build once per scene; call :meth:`register`."""

    def __init__(self, scene_points: np.ndarray, camera_poses: np.ndarray | None = None,
                 config: RegistrationConfig = RegistrationConfig(),
                 views: SceneViews | None = None):
        # lazy: open3d (~3 s) to import, loaded only when this runs
        import open3d as o3d

        if scene_points is None or len(scene_points) < 100:
            raise RegistrationError(
                f"the scene has {0 if scene_points is None else len(scene_points)} points; the "
                "reconstruction is empty (check depth, tracking and the depth range)")
        self.cfg = config
        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(scene_points))
        pcd = pcd.voxel_down_sample(config.voxel_m)
        self.points = np.asarray(pcd.points)
        self.camera_poses = None if camera_poses is None or len(camera_poses) == 0 \
            else np.asarray(camera_poses, np.float64)
        # what the fits are checked against: the measured depth images when given (the
        # self-annotation's), else the fused cloud seen from the camera poses
        self._views: SceneViews | None = views
        with seeded_open3d(config.seed):
            self.plane = find_support_plane(self.points, camera_poses, config)
        self.tree = cKDTree(self.points)
        self.clusters = object_clusters(self.points, self.plane, config)

    @property
    def views(self) -> SceneViews | None:
        """What the cameras saw (:class:`SceneViews`, built on first use); None without camera
        poses (then only the score decides)."""
        if self._views is None and self.camera_poses is not None:
            c = self.cfg
            poses = self.camera_poses[SceneViews.pick(len(self.camera_poses), c.evidence_views)]
            self._views = SceneViews.from_points(self.points, poses, c.evidence_pixel_rad,
                                                 c.evidence_fov_deg)
        return self._views

    def evidence(self, T_world_object: np.ndarray, vertices: np.ndarray, faces: np.ndarray
                 ) -> FitEvidence | None:
        """:class:`FitEvidence` of the mesh placed at ``T_world_object`` (the model points
        :meth:`register` samples); None without camera poses."""
        if self.views is None:
            return None
        pc = self._model_cloud(vertices, faces)
        return self._evidence(T_world_object, np.asarray(pc.points), np.asarray(pc.normals),
                              vertices, faces)

    def _evidence(self, T_world_object, model_pts, model_normals, vertices, faces
                  ) -> FitEvidence:
        c = self.cfg
        return fit_evidence(T_world_object, model_pts, model_normals,
                            ray_caster(vertices, faces), self.views, self.plane,
                            c.evidence_inlier_m, c.free_space_tolerance_m,
                            (c.beyond_from_m, c.beyond_to_m), vertices=vertices)

    def _mismatch(self, res: RegistrationResult) -> list[str]:
        """Why the best fit is not the object (empty: it is)."""
        c, ev = self.cfg, res.evidence
        why = []
        if res.score < c.min_score:
            why.append(f"the score is {res.score:.2f} < {c.min_score} ({res.model_fitness:.0%} "
                       f"of the model surface and {res.scene_fitness:.0%} of the local scene "
                       "agree)")
        if ev is not None:
            if ev.seen_fit < c.min_seen_fit:
                why.append(f"the cameras measured only {ev.seen_fit:.0%} of the model surface "
                           f"they see on it (needs {c.min_seen_fit:.0%})")
            if ev.free_fraction > c.max_free_fraction:
                why.append(f"the cameras saw through {ev.free_fraction:.0%} of the model surface "
                           f"(at most {c.max_free_fraction:.0%}: the mesh is larger than what is "
                           "there, or beside it)")
            if ev.beyond_ratio > c.max_beyond_ratio:
                why.append(f"the measured surface goes on beside the model ({ev.beyond_ratio:.2f}"
                           f" for each unit on it, at most {c.max_beyond_ratio}: the object is "
                           "larger than the mesh)")
            if ev.below_table_m > c.max_below_table_m:
                why.append(f"to fit, the model goes {ev.below_table_m * 1000:.0f} mm into the "
                           f"table (at most {c.max_below_table_m * 1000:.0f} mm: the mesh is "
                           "taller than the object)")
        return why

    def _model_cloud(self, vertices: np.ndarray, faces: np.ndarray):
        # lazy: open3d (~3 s) to import, loaded only when this runs
        import open3d as o3d

        m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(vertices),
                                      o3d.utility.Vector3iVector(np.asarray(faces, np.int32)))
        m.compute_vertex_normals()
        pts, nrm = sample_surface(vertices, faces, self.cfg.model_points,
                                  np.random.default_rng(self.cfg.seed))
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
        pc.normals = o3d.utility.Vector3dVector(nrm)
        return pc

    def _score(self, T: np.ndarray, model_pts: np.ndarray) -> tuple[float, float, float, float]:
        c = self.cfg
        P = model_pts @ T[:3, :3].T + T[:3, 3]
        h = self.plane.height(P)
        if np.percentile(h, 2) < -0.02:          # sinks into the table
            return 0.0, 0.0, 0.0, np.inf
        keep = h > 0.012                         # the bottom is never seen
        d, _ = self.tree.query(P[keep], k=1, distance_upper_bound=c.inlier_dist_m)
        model_fit = float(np.isfinite(d).mean()) if keep.any() else 0.0
        # scene points within the model's bounding box (in the model frame), above the table
        Ti = np.linalg.inv(T)
        lo, hi = model_pts.min(0) - 0.01, model_pts.max(0) + 0.01
        centre = T[:3, 3]
        rad = float(np.linalg.norm(hi - lo)) / 2 + 0.02
        idx = self.tree.query_ball_point(centre, rad)
        S = self.points[idx]
        S = S[self.plane.height(S) > c.plane_dist_m * 1.5]
        Sl = S @ Ti[:3, :3].T + Ti[:3, 3]
        inside = np.all((Sl > lo) & (Sl < hi), axis=1)
        if inside.sum() < 20:
            return 0.0, model_fit, 0.0, np.inf
        dm, _ = cKDTree(model_pts).query(Sl[inside], k=1)
        on = dm < c.inlier_dist_m
        scene_fit = float(on.mean())
        rmse = float(np.sqrt(np.mean(dm[on] ** 2))) if on.any() else np.inf
        return model_fit * scene_fit, model_fit, scene_fit, rmse

    def _hypotheses(self, model_pcd, model_fpfh, cluster: np.ndarray
                    ) -> list[tuple[str, np.ndarray]]:
        # lazy: open3d (~3 s) to import, loaded only when this runs
        import open3d as o3d

        c = self.cfg
        hyps: list[tuple[str, np.ndarray]] = []
        mp = np.asarray(model_pcd.points)
        centroid = cluster.mean(0)
        foot = centroid - self.plane.height(centroid[None])[0] * self.plane.normal
        n = self.plane.normal
        for axis in np.vstack([np.eye(3), -np.eye(3)]):
            R0 = _rot_a_to_b(axis, n)
            for yaw in np.arange(0, 360, c.yaw_step_deg):
                R = _axis_angle(n, np.radians(yaw)) @ R0
                P = mp @ R.T
                hmin = (P @ n).min()
                ctr = P.mean(0) - (P.mean(0) @ n) * n
                t = foot - ctr - hmin * n
                T = np.eye(4)
                T[:3, :3], T[:3, 3] = R, t
                hyps.append(("rest", T))
        if c.use_fpfh and model_fpfh is not None and len(cluster) > 50:
            # cluster neighbourhood incl. some table so partial views still match
            idx = self.tree.query_ball_point(centroid, 0.5 * np.ptp(mp, 0).max() + 0.05)
            tgt = _pcd(self.points[idx])
            tf = o3d.pipelines.registration.compute_fpfh_feature(
                tgt, o3d.geometry.KDTreeSearchParamHybrid(radius=0.025, max_nn=100))
            for _ in range(2):  # two RANSAC draws: two hypotheses
                res = o3d.pipelines.registration.registration_ransac_based_on_feature_matching(
                    model_pcd, tgt, model_fpfh, tf, True, 0.01,
                    o3d.pipelines.registration.TransformationEstimationPointToPoint(False), 3,
                    [o3d.pipelines.registration.CorrespondenceCheckerBasedOnEdgeLength(0.9),
                     o3d.pipelines.registration.CorrespondenceCheckerBasedOnDistance(0.01)],
                    o3d.pipelines.registration.RANSACConvergenceCriteria(20000, 0.999))
                hyps.append(("fpfh", np.asarray(res.transformation)))
        return hyps

    def _snap_to_support(self, T: np.ndarray, model_pts: np.ndarray, iters: int = 15
                         ) -> np.ndarray | None:
        """Make a pose physically resting: the model axis closest to the plane normal becomes
        parallel to it, the lowest point touches the plane, then ICP refines only x, y and yaw
        on the plane. None if no model axis is within 20 deg of the normal."""
        n = self.plane.normal
        R = T[:3, :3]
        axes = np.vstack([np.eye(3), -np.eye(3)])
        up = axes @ R.T
        k = int(np.argmax(up @ n))
        if up[k] @ n < np.cos(np.radians(20)):
            return None
        R = _rot_a_to_b(up[k], n) @ R
        a, b = self.plane.axes().T
        t = T[:3, 3].copy()
        for _ in range(iters):
            P = model_pts @ R.T + t
            t = t - (self.plane.height(P).min()) * n
            P = model_pts @ R.T + t
            keep = self.plane.height(P) > 0.01
            d, j = self.tree.query(P[keep], k=1, distance_upper_bound=self.cfg.icp_max_dist_m)
            ok = np.isfinite(d)
            if ok.sum() < 10:
                return None
            src = P[keep][ok]
            dst = self.points[j[ok]]
            s2 = np.stack([src @ a, src @ b], 1)
            d2 = np.stack([dst @ a, dst @ b], 1)
            ms, md = s2.mean(0), d2.mean(0)
            H = (s2 - ms).T @ (d2 - md)
            ang = np.arctan2(H[0, 1] - H[1, 0], H[0, 0] + H[1, 1])
            R2 = _axis_angle(n, ang)
            c = np.array([*ms, 0.0])
            c3 = c[0] * a + c[1] * b
            shift = (md[0] - ms[0]) * a + (md[1] - ms[1]) * b
            # rotate about the centroid (in the plane), then shift
            R = R2 @ R
            t = R2 @ (t - c3) + c3 + shift
            if abs(ang) < 1e-5 and np.linalg.norm(shift) < 1e-5:
                break
        P = model_pts @ R.T + t
        t = t - self.plane.height(P).min() * n
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = R, t
        return out

    def _polish_on_support(self, T: np.ndarray, model_pts: np.ndarray,
                           max_iterations: int = 30) -> np.ndarray:
        """The resting pose T (4, 4) moved in the plane (x, y, turn about the normal) to a
        maximum of the kernel correlation  F = sum_ij exp(-|T p_i - q_j|^2 / 2 sigma^2)  of the
        model points p_i above the table's contact band (their heights do not change in the
        plane) and the scene points q_j above the table: first at 2 sigma, then at sigma from
        there. F is a smooth function of the pose and of the scene, so its maximum moves little
        when the scene moves little and the same maximum is reached from nearby starts, unlike
        the matched set of a hard-cutoff ICP. Newton steps on (turn, x, y); a step that does not
        raise F falls back to the weighted 2-D Procrustes step, which never lowers it."""
        sigma = self.cfg.polish_sigma_m
        n, ab = self.plane.normal, self.plane.axes()
        R, t = T[:3, :3].copy(), T[:3, 3].copy()
        P = model_pts @ R.T + t
        src = model_pts[self.plane.height(P) > 0.01]
        # every scene point a model point can pair with, wherever the polish moves it
        rad = float(np.linalg.norm(np.ptp(P, 0))) / 2 + 10 * sigma
        S = self.points[self.tree.query_ball_point((P.min(0) + P.max(0)) / 2, rad)]
        S = S[self.plane.height(S) > self.cfg.plane_dist_m * 1.5]
        if len(src) < 10 or len(S) < 10:
            return T
        scene_tree = cKDTree(S)
        L = float(np.sqrt(((src - src.mean(0)) ** 2).sum(1).mean()))
        D = np.array([1.0 / L, 1.0, 1.0])                      # (turn, x, y) -> (turn * L, x, y)

        def moved(R, t, phi, pivot, shift):
            R2 = _axis_angle(n, phi) if phi != 0 else np.eye(3)
            return R2 @ R, R2 @ (t - pivot) + pivot + shift

        def terms(R, t, s):
            """F, its gradient and Hessian in (turn, x, y) about the pivot, and the pivot."""
            P = src @ R.T + t
            d = cKDTree(P).sparse_distance_matrix(scene_tree, 3 * s, output_type="coo_matrix")
            pivot = P.mean(0)
            if d.nnz < 10:
                return 0.0, None, None, pivot, None
            g = np.exp(-d.data ** 2 / (2 * s * s))
            p = (P[d.row] - pivot) @ ab                          # (m, 2) about the pivot
            r = p - (S[d.col] - pivot) @ ab                      # in-plane residual
            Jp = np.stack([-p[:, 1], p[:, 0]], 1)                # d r / d turn
            e = np.stack([(r * Jp).sum(1), r[:, 0], r[:, 1]], 1)
            grad = -(g @ e) / s ** 2
            DtD = np.zeros((len(p), 3, 3))
            DtD[:, 0, 0] = (p * p).sum(1) - (r * p).sum(1)       # incl. r . d2r/dturn2 = -r.p
            DtD[:, 0, 1] = DtD[:, 1, 0] = Jp[:, 0]
            DtD[:, 0, 2] = DtD[:, 2, 0] = Jp[:, 1]
            DtD[:, 1, 1] = DtD[:, 2, 2] = 1.0
            H = np.einsum("m,mi,mj->ij", g, e, e) / s ** 4 - np.einsum("m,mij->ij", g, DtD) / s ** 2
            # the weighted Procrustes step (minorise-maximise: F never falls)
            mp, mq = g @ p / g.sum(), g @ (p - r) / g.sum()
            Hc = (p - mp).T @ ((p - r - mq) * g[:, None])
            ang = float(np.arctan2(Hc[0, 1] - Hc[1, 0], Hc[0, 0] + Hc[1, 1]))
            em = (ang, pivot + ab @ mp, ab @ (mq - mp))
            return float(g.sum()), grad, H, pivot, em

        for s in (2 * sigma, sigma):
            F, grad, H, pivot, em = terms(R, t, s)
            for _ in range(max_iterations):
                if grad is None:
                    break
                # Newton in (turn * L, x, y), L the model's spread about the pivot; where F is
                # not concave (flat along a symmetry axis), damped until it is
                Hs = H * np.outer(D, D)
                ev = np.linalg.eigvalsh(Hs)
                lam = 0.0 if ev.max() < 0 else ev.max() + 0.1 * np.abs(ev).max()
                dx = -D * np.linalg.solve(Hs - lam * np.eye(3), grad * D)
                steps = [(dx[0] * f, pivot, ab @ dx[1:] * f) for f in (1.0, 0.5, 0.25)]
                steps.append(em)
                for phi, pv, shift in steps:
                    Rn, tn = moved(R, t, phi, pv, shift)
                    out = terms(Rn, tn, s)
                    if out[0] >= F:
                        break
                else:
                    break                                        # no step raises F
                R, t = Rn, tn
                gain, (F, grad, H, pivot, em) = out[0] - F, out
                # converged; or F flat (a turn about a symmetry axis changes nothing)
                if abs(phi) * L + np.linalg.norm(shift) < 1e-10 or gain < 1e-12 * F:
                    break
        out = np.eye(4)
        out[:3, :3], out[:3, 3] = R, t
        return out

    def register(self, vertices: np.ndarray, faces: np.ndarray,
                 prior_point: np.ndarray | None = None, prior_radius_m: float = 0.3,
                 name: str = "object") -> RegistrationResult:
        """T_world_object of the mesh (vertices (V,3) metres in the object frame)."""
        with seeded_open3d(self.cfg.seed):
            return self._register(vertices, faces, prior_point, prior_radius_m, name)

    def _register(self, vertices: np.ndarray, faces: np.ndarray,
                  prior_point: np.ndarray | None, prior_radius_m: float,
                  name: str) -> RegistrationResult:
        # lazy: open3d (~3 s) to import, loaded only when this runs
        import open3d as o3d

        c = self.cfg
        clusters = self.clusters
        if prior_point is not None:
            clusters = [cl for cl in clusters
                        if np.linalg.norm(cl.mean(0) - prior_point) < prior_radius_m]
        if not clusters:
            raise RegistrationError(
                f"{name}: no object-sized cluster of points on the support plane"
                + (" near the given prior point" if prior_point is not None else "")
                + "; is the object in the scene and seen by the sequence?")
        model_pcd = self._model_cloud(vertices, faces)
        model_pts = np.asarray(model_pcd.points)
        coarse_pcd = model_pcd.random_down_sample(min(1.0, 400 / len(model_pts)))
        coarse_pts = np.asarray(coarse_pcd.points)
        diam = float(np.linalg.norm(np.ptp(model_pts, 0)))
        model_fpfh = None
        if c.use_fpfh:
            model_fpfh = o3d.pipelines.registration.compute_fpfh_feature(
                model_pcd, o3d.geometry.KDTreeSearchParamHybrid(radius=0.025, max_nn=100))
        # point-to-point: point-to-plane is singular for surfaces of revolution (a can on a
        # table leaves the rotation about its axis free) and was measured to diverge by metres
        cands: list[Candidate] = []
        n_h = 0
        for ci, cl in enumerate(clusters):
            ext = np.ptp(cl, 0).max()
            if ext < 0.3 * diam or len(cl) < c.cluster_min_points:
                continue  # far too small to hold this object
            idx = self.tree.query_ball_point(cl.mean(0), 0.6 * diam + ext / 2 + 0.03)
            target = self.points[idx]
            target_tree = cKDTree(target)  # once per cluster, shared by all its ICP runs
            coarse = []
            for src, T0 in self._hypotheses(model_pcd, model_fpfh, cl):
                n_h += 1
                T = icp_point_to_point(coarse_pts, target, target_tree, T0,
                                       c.icp_max_dist_m * 1.5, 15)
                coarse.append((self._score(T, coarse_pts)[0], src, T))
            coarse.sort(key=lambda x: x[0], reverse=True)
            for _, src, T0 in coarse[:c.refine_top_k]:
                T = icp_point_to_point(model_pts, target, target_tree, T0, c.icp_max_dist_m,
                                       c.icp_iterations)
                sc, mf, sf, rmse = self._score(T, model_pts)
                cands.append(Candidate(T, sc, mf, sf, rmse, ci, src))
                # the same pose resting on the table (objects stand on it); preferred when it
                # explains the data about as well, since free ICP tilts on noisy partial views
                Ts = self._snap_to_support(T, model_pts)
                if Ts is not None:
                    sc2, mf2, sf2, rmse2 = self._score(Ts, model_pts)
                    cands.append(Candidate(Ts, sc2 + c.rest_bonus, mf2, sf2, rmse2, ci,
                                           src + "+rest"))
        if not cands:
            raise RegistrationError(f"{name}: no cluster is large enough for an object of "
                                    f"diameter {diam * 100:.1f} cm")
        cands.sort(key=lambda x: x.score, reverse=True)
        best = cands[0]
        if c.up_axis >= 0:
            def up(cd):
                return float(cd.T_world_object[:3, c.up_axis] @ self.plane.normal)

            if up(best) < 0.7:
                # first the best pose itself turned by 180 deg about a model axis through the
                # box centre, where that leaves the surface in place (boxes, cylinders): the
                # same fit, standing; else another candidate that fits as well, standing
                ctr = (model_pts.min(0) + model_pts.max(0)) / 2
                flips = []
                for ax in range(3):
                    F = np.eye(4)
                    F[:3, :3] = -np.eye(3)
                    F[ax, ax] = 1.0
                    F[:3, 3] = ctr - F[:3, :3] @ ctr
                    Tf = best.T_world_object @ F
                    if surface_distance(best.T_world_object, Tf, model_pts) <= \
                            c.distinct_pose_m:
                        sc, mf, sf, rmse = self._score(Tf, model_pts)
                        # only a flip that fits as well: on a scan that is nearly a box, a
                        # flip moves the surface less than distinct_pose_m and still fits
                        # badly (the YCB pudding box: 1.02 -> 0.39, then refused)
                        if sc >= best.score - c.up_tie_margin:
                            flips.append(Candidate(Tf, sc, mf, sf, rmse, best.cluster,
                                                   best.source + "+flip"))
                same = [cd for cd in cands if cd.score >= best.score - c.up_tie_margin and
                        surface_distance(best.T_world_object, cd.T_world_object,
                                         model_pts) <= c.distinct_pose_m]
                for group in (flips, same):
                    upright = [cd for cd in group if up(cd) >= 0.7]
                    if upright:
                        best = max(upright, key=lambda cd: cd.score)
                        break
        # runner-up: best candidate whose pose is clearly different
        runner = 0.0
        for cd in cands[1:]:
            # surface distance (ADI): poses that put the surface in the same place are the same
            # as far as geometry can tell (a box turned by 180 deg); they are not ambiguous
            if surface_distance(best.T_world_object, cd.T_world_object,
                                model_pts) > c.distinct_pose_m:
                runner = cd.score
                break
        chosen = best
        if c.polish_sigma_m > 0 and "+rest" in best.source:
            Tp = self._polish_on_support(best.T_world_object, model_pts)
            sc, mf, sf, rmse = self._score(Tp, model_pts)
            best = Candidate(Tp, sc + c.rest_bonus, mf, sf, rmse, best.cluster,
                             best.source + "+polish")
        ev = None
        if self.views is not None:
            ev = self._evidence(best.T_world_object, model_pts,
                                np.asarray(model_pcd.normals), vertices, faces)
        res = RegistrationResult(best.T_world_object, best.score, best.model_fitness,
                                 best.scene_fitness, best.rmse_m, runner, n_h, best.cluster,
                                 cands[:20], ev)
        why = self._mismatch(res)
        if why:
            raise MeshMismatchError(
                f"{name}: the mesh does not match anything in the scene; at its best fit "
                + "; ".join(why) + ". Check that the mesh is the object in view and in metres, "
                "and that the sequence shows that object"
                + (" (a prior point near it narrows the search)" if prior_point is None else "")
                + f" [searched {len(clusters)} clusters on the support plane n="
                f"{np.round(self.plane.normal, 3).tolist()} d={self.plane.d:.3f}, {n_h} "
                "hypotheses]", res)
        # decided on the candidates' scores (the polish moves the pose, not the decision)
        if chosen.score - runner < c.ambiguity_margin:
            raise RegistrationError(
                f"{name}: ambiguous fit: two different poses score {chosen.score:.2f} and "
                f"{runner:.2f}; give a prior point near the object")
        return res


def icp_point_to_point(src: np.ndarray, target: np.ndarray, target_tree: cKDTree,
                       T0: np.ndarray, max_dist_m: float, max_iterations: int,
                       rel_eps: float = 1e-6) -> np.ndarray:
    """Point-to-point ICP of src (N, 3) onto target (M, 3) from T0 (4, 4), as Open3D's
    ``registration_icp`` with ``TransformationEstimationPointToPoint``: nearest neighbours
    within ``max_dist_m``, closed-form rigid fit, stop when fitness and inlier RMSE change by
    less than ``rel_eps`` or after ``max_iterations``. The target's KD-tree is passed in, built
    once per target: Open3D rebuilds it on every call, which was measured here at 0.14 s of
    every call, 56 of the 67 s it took to register one object (410 ICP runs, 7 clusters)."""
    T = np.asarray(T0, dtype=np.float64).copy()
    prev = None
    for it in range(max_iterations + 1):
        P = src @ T[:3, :3].T + T[:3, 3]
        d, j = target_tree.query(P, k=1, distance_upper_bound=max_dist_m)
        ok = np.isfinite(d)
        n = int(ok.sum())
        if n < 3:
            break
        fit, rmse = n / len(P), float(np.sqrt(np.mean(d[ok] ** 2)))
        if prev is not None and abs(fit - prev[0]) < rel_eps and abs(rmse - prev[1]) < rel_eps:
            break
        prev = (fit, rmse)
        if it == max_iterations:
            break
        T = fit_rigid(P[ok], target[j[ok]]) @ T
    return T


def surface_distance(T1: np.ndarray, T2: np.ndarray, pts: np.ndarray) -> float:
    """Mean distance from the surface points placed by T1 to the nearest placed by T2 (ADI)."""
    P1 = pts @ T1[:3, :3].T + T1[:3, 3]
    P2 = pts @ T2[:3, :3].T + T2[:3, 3]
    d, _ = cKDTree(P2).query(P1, k=1)
    return float(d.mean())


class SceneViews:
    """What the cameras saw: per view a camera pose, a pinhole and the depth it measured along
    each pixel's ray, to check where a model placed in the scene agrees with the measurements,
    where the cameras saw through it and where the scene goes on beside it.

    ``depth``: (H*W,) float64 metres along the optical axis, inf where nothing was seen;
    ``near``: the same, nearer: the nearest reading over a few pixels around (invalid pixels
    count as nothing seen), for the seen-through test: a model point a few pixels off an
    object's outline (pose and calibration error) still meets that object there.
    Build with :meth:`from_frames` (measured depth images: what a self-annotation has) or
    :meth:`from_points` (a fused cloud seen from the camera poses, when no images are kept)."""

    def __init__(self, poses: np.ndarray, K: list[tuple[float, float, float, float]],
                 sizes: list[tuple[int, int]], depth: list[np.ndarray],
                 near: list[np.ndarray], xyz: list[np.ndarray] | None = None):
        self.poses = np.asarray(poses, np.float64)
        self.K, self.sizes, self.depth, self.near = K, sizes, depth, near
        self.xyz = xyz      # per view (H*W, 3) world point of each pixel (nan: none), or None

    @staticmethod
    def pick(n: int, n_views: int) -> np.ndarray:
        """Indices of up to ``n_views`` of ``n`` views, spread evenly."""
        return np.unique(np.linspace(0, n - 1, min(n_views, n)).round().astype(int))

    @classmethod
    def from_frames(cls, intrinsics, poses: np.ndarray, depths: list[np.ndarray],
                    downscale: int = 2, near_px: int = 5) -> SceneViews:
        """Views of measured depth images (H, W) float32 metres (0: no reading) taken at
        ``poses`` (T_world_camera) with ``intrinsics``, ``downscale`` times smaller: every
        ``downscale``-th reading as measured, and for ``near`` the nearest of each block."""
        s = max(1, int(downscale))
        o = s // 2
        K, sizes, depth, near = [], [], [], []
        for d in depths:
            d = np.where(np.asarray(d) > 0, np.asarray(d, np.float64), np.inf)
            h, w = d.shape[0] // s, d.shape[1] // s
            depth.append(d[o::s, o::s][:h, :w].ravel())
            block = d[:h * s, :w * s].reshape(h, s, w, s).min(axis=(1, 3))
            near.append(minimum_filter(block, near_px, mode="nearest").ravel())
            K.append((intrinsics.fx / s, intrinsics.fy / s, (intrinsics.cx - o) / s,
                      (intrinsics.cy - o) / s))
            sizes.append((w, h))
        return cls(poses, K, sizes, depth, near)

    @classmethod
    def from_points(cls, points: np.ndarray, poses: np.ndarray, pixel_rad: float = 0.005,
                    fov_deg: float = 36.0) -> SceneViews:
        """Views of a fused scene cloud (N, 3) from ``poses``: a virtual pinhole at each pose
        (a square ``fov_deg`` field of view, inside any RGB-D camera's, so that its rays were
        measured; ``pixel_rad`` per pixel, about one scene voxel at a metre) holding the
        nearest point per pixel, then the minimum over 3 x 3 pixels: a hole between points is
        the surface around it, not what lies behind."""
        f = 1.0 / pixel_rad
        size = int(2 * np.tan(np.radians(fov_deg) / 2) * f) | 1
        n = len(poses)
        K, sizes = [(f, f, size / 2 - 0.5, size / 2 - 0.5)] * n, [(size, size)] * n
        empty = [np.full(size * size, np.inf)] * n
        views = cls(poses, K, sizes, empty, empty)
        depth, xyz = [], []
        for i in range(n):
            z, pix = views.project(i, points)
            idx = np.flatnonzero(pix >= 0)
            z, pix = z[idx], pix[idx]
            order = np.argsort(pix * 1e3 + np.minimum(z, 999.0))   # by pixel, nearest first
            first = order[np.r_[True, pix[order][1:] != pix[order][:-1]]]
            buf = np.full(size * size, np.inf)
            buf[pix[first]] = z[first]
            depth.append(minimum_filter(buf.reshape(size, size), 3, mode="nearest").ravel())
            pts = np.full((size * size, 3), np.nan)
            pts[pix[first]] = points[idx[first]]          # the points themselves, not pixels
            xyz.append(pts)
        return cls(poses, K, sizes, depth, depth, xyz)

    def project(self, k: int, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Depth (N,) of world points P (N, 3) along view k's axis and their flat pixel index
        (N,) int64 (-1: not in the view)."""
        T = self.poses[k]
        fx, fy, cx, cy = self.K[k]
        w, h = self.sizes[k]
        Q = (P - T[:3, 3]) @ T[:3, :3]
        z = Q[:, 2]
        front = z > 0.05
        zs = np.where(front, z, 1.0)
        u = np.floor(Q[:, 0] / zs * fx + cx + 0.5)
        v = np.floor(Q[:, 1] / zs * fy + cy + 0.5)
        ok = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        return z, np.where(ok, v * w + u, -1).astype(np.int64)

    def points_in_box(self, k: int, lo: np.ndarray, hi: np.ndarray, T_world_box: np.ndarray
                      ) -> np.ndarray:
        """World points (M, 3) of view k's depth pixels whose rays meet the box [lo, hi] (in
        the frame of ``T_world_box``) -- measured within the pixel rectangle it projects to."""
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1])
                            for z in (lo[2], hi[2])])
        C = corners @ T_world_box[:3, :3].T + T_world_box[:3, 3]
        T = self.poses[k]
        fx, fy, cx, cy = self.K[k]
        w, h = self.sizes[k]
        Q = (C - T[:3, 3]) @ T[:3, :3]
        if np.any(Q[:, 2] <= 0.05):
            return np.zeros((0, 3))
        u = Q[:, 0] / Q[:, 2] * fx + cx
        v = Q[:, 1] / Q[:, 2] * fy + cy
        u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, w)
        v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, h)
        if u0 >= u1 or v0 >= v1:
            return np.zeros((0, 3))
        if self.xyz is not None:
            X = self.xyz[k].reshape(h, w, 3)[v0:v1, u0:u1].reshape(-1, 3)
            return X[np.isfinite(X[:, 0])]
        vv, uu = np.mgrid[v0:v1, u0:u1]
        d = self.depth[k].reshape(h, w)[v0:v1, u0:u1]
        ok = np.isfinite(d)
        z = d[ok]
        X = np.stack([(uu[ok] - cx) / fx * z, (vv[ok] - cy) / fy * z, z], 1)
        return X @ T[:3, :3].T + T[:3, 3]


@dataclass
class FitEvidence:
    """How a model placed at a pose agrees with what the cameras saw (:class:`SceneViews`).

    Model side, over its checkable points (surface points not on the bottom that a view has in
    its field, not hidden by the model itself, not at a grazing angle, with a measurement):
    seen_fit: over the views where no measured surface is in front of a point, the share in
        which the measurement is on it (within ``inlier_dist_m``), averaged over the points;
    free_fraction: the share of the checkable points some view saw through: it measured a
        surface more than ``free_space_tolerance_m`` behind (a mesh larger than, or beside,
        what is there);
    hidden_fraction: the share behind measured surface in every view that has them (a mesh
        smaller than, or inside, what is there; also what neighbours hide).
    Scene side: beyond_ratio: measured surface above the table 1 to 2.5 cm from the model's
    surface for each unit of measured surface on it (within 1 cm): the object goes on beyond
    the mesh (a mesh smaller than what is there).
    below_table_m: how far (m) the model's lowest vertex lies below the support plane. A mesh
    taller than the object is pulled into the table by the fit, its top on the object's (the
    checks above ignore the bottom centimetre, which no camera sees; and the cameras that look
    down at a top a centimetre lower see no free space in front of it: the see-through test
    allows for the outline's blur); the right mesh stands on the table.
    n_checked: the number of checkable model points."""

    seen_fit: float
    free_fraction: float
    hidden_fraction: float
    beyond_ratio: float
    n_checked: int
    below_table_m: float = 0.0

    def to_json(self) -> dict:
        return {"seen_fit": self.seen_fit, "free_fraction": self.free_fraction,
                "hidden_fraction": self.hidden_fraction, "beyond_ratio": self.beyond_ratio,
                "below_table_m": self.below_table_m, "n_checked": self.n_checked}


def ray_caster(vertices: np.ndarray, faces: np.ndarray):
    """An Open3D ray-casting scene of the mesh (its own frame): self-occlusion and distances."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    sc = o3d.t.geometry.RaycastingScene()
    sc.add_triangles(o3d.core.Tensor(np.asarray(vertices, np.float32)),
                     o3d.core.Tensor(np.asarray(faces, np.uint32)))
    return sc


def fit_evidence(T_world_object: np.ndarray, model_pts: np.ndarray, model_normals: np.ndarray,
                 caster, views: SceneViews, plane: SupportPlane, inlier_dist_m: float,
                 free_tol_m: float, beyond_m: tuple[float, float] = (0.01, 0.025),
                 min_through_views: int = 1, vertices: np.ndarray | None = None
                 ) -> FitEvidence:
    """:class:`FitEvidence` of the model points (N, 3) with normals (N, 3) (object frame, on
    the mesh behind ``caster``, whose ``vertices`` (M, 3) it is: else the points are) placed
    at ``T_world_object``, against ``views``."""
    # lazy: open3d (~3 s) to import, loaded only when this runs
    import open3d as o3d

    T = np.asarray(T_world_object, np.float64)
    P = model_pts @ T[:3, :3].T + T[:3, 3]
    N = model_normals @ T[:3, :3].T
    upper = plane.height(P) > 0.012          # the bottom is never seen
    T_inv = np.linalg.inv(T)
    lo, hi = beyond_m
    box_lo, box_hi = model_pts.min(0) - hi, model_pts.max(0) + hi
    n_free = np.zeros(len(P), int)           # views that saw through the point
    n_open = np.zeros(len(P), int)           # views with nothing measured in front of it
    n_on = np.zeros(len(P), int)             # ... that measured a surface point on it
    checkable = np.zeros(len(P), bool)
    n_near = n_beyond = 0
    cos_graze = np.cos(np.radians(80.0))
    for k in range(len(views.poses)):
        c = views.poses[k][:3, 3]
        c_o = T_inv[:3, :3] @ c + T_inv[:3, 3]
        ray = model_pts - c_o
        dist = np.linalg.norm(ray, axis=1)
        rays = np.hstack([np.broadcast_to(c_o, ray.shape), ray / dist[:, None]])
        hit = caster.cast_rays(o3d.core.Tensor(rays.astype(np.float32)))["t_hit"].numpy()
        # the model's first surface along the ray, not at a grazing angle (the normals' sign
        # is ignored: meshes' winding is not always consistent)
        own = (hit >= dist - 0.003) & (np.abs(np.sum(N * (P - c), 1)) > cos_graze * dist)
        z, pix = views.project(k, P)
        ok = own & (pix >= 0)
        seen = np.full(len(P), np.inf)
        near = np.full(len(P), np.inf)
        seen[ok] = views.depth[k][pix[ok]]
        near[ok] = views.near[k][pix[ok]]
        has = ok & np.isfinite(seen)
        checkable |= has
        open_ = has & (seen > z - free_tol_m)
        n_open += open_
        n_free += has & np.isfinite(near) & (near > z + free_tol_m)
        # the measured points around the model (above the table): on the model's surface, or
        # beside it; and the open model points with a measured point on them
        S = views.points_in_box(k, box_lo, box_hi, T)
        S = S[plane.height(S) > 0.012] if len(S) else S
        if not len(S):
            continue
        So = (S - T[:3, 3]) @ T[:3, :3]
        ds = caster.compute_distance(o3d.core.Tensor(So.astype(np.float32))).numpy()
        n_near += int((ds <= lo).sum())
        n_beyond += int(((ds > lo) & (ds <= hi)).sum())
        if open_.any():
            d, _ = cKDTree(S).query(P[open_], k=1, distance_upper_bound=inlier_dist_m)
            n_on[np.flatnonzero(open_)[np.isfinite(d)]] += 1
    checkable &= upper
    n = int(checkable.sum())
    beyond = float(n_beyond / max(n_near, 1))
    V = model_pts if vertices is None else np.asarray(vertices, np.float64)
    below = max(0.0, -float(plane.height(V @ T[:3, :3].T + T[:3, 3]).min()))
    if n == 0:
        return FitEvidence(0.0, 0.0, 0.0, beyond, 0, below)
    vis = checkable & (n_open > 0)
    return FitEvidence(
        seen_fit=float(np.mean(n_on[vis] / n_open[vis])) if vis.any() else 0.0,
        free_fraction=float((checkable & (n_free >= min_through_views)).sum() / n),
        hidden_fraction=float((checkable & (n_open == 0)).sum() / n),
        beyond_ratio=beyond, n_checked=n, below_table_m=below)
