"""Object registration: find T_world_object of a (untextured) mesh in a reconstructed scene.

The robot's objects stand on a support surface (table), so the search is built around it:
1. the support plane is found by RANSAC in the scene cloud, oriented towards the cameras;
2. points above it are clustered into object candidates (optionally only near a user prior);
3. for each candidate, pose hypotheses come from FPFH + RANSAC global registration AND from
   resting-pose hypotheses (each model axis up, yaw every ``yaw_step_deg``), every hypothesis
   is refined by point-to-plane ICP;
4. hypotheses are scored by how well they explain the data both ways: the fraction of the
   model's (non-bottom) surface that has scene points within ``inlier_dist_m`` and the fraction
   of scene points inside the model's box that lie on the model;
5. the best is returned only if its score is good and no clearly different pose scores nearly as
   well; otherwise :class:`RegistrationError` says why (never a silently wrong pose);
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
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation
from threadpoolctl import threadpool_limits

from nol_ros.errors import ConfigError, NolError
from nol_ros.geometry import fit_rigid
from nol_ros.mesh import EmptyMeshError
from nol_ros.mesh import sample_surface as _sample


class RegistrationError(NolError):
    code = "REGISTRATION_FAILED"


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

    def to_json(self) -> dict:
        return {"T_world_object": self.T_world_object.tolist(), "score": self.score,
                "model_fitness": self.model_fitness, "scene_fitness": self.scene_fitness,
                "rmse_m": self.rmse_m, "runner_up_score": self.runner_up_score,
                "n_hypotheses": self.n_hypotheses, "cluster": self.cluster}


@dataclass
class SupportPlane:
    normal: np.ndarray        # (3,) unit, pointing to the cameras' side
    d: float                  # plane: normal . x + d = 0
    inliers: np.ndarray       # (M, 3) points on the plane

    def height(self, pts: np.ndarray) -> np.ndarray:
        return pts @ self.normal + self.d


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
                 config: RegistrationConfig = RegistrationConfig()):
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
        with seeded_open3d(config.seed):
            self.plane = find_support_plane(self.points, camera_poses, config)
        self.tree = cKDTree(self.points)
        self.clusters = object_clusters(self.points, self.plane, config)

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
        a = np.cross(n, [1.0, 0, 0])
        if np.linalg.norm(a) < 0.1:
            a = np.cross(n, [0, 1.0, 0])
        a /= np.linalg.norm(a)
        b = np.cross(n, a)
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
        res = RegistrationResult(best.T_world_object, best.score, best.model_fitness,
                                 best.scene_fitness, best.rmse_m, runner, n_h, best.cluster,
                                 cands[:20])
        if best.score < c.min_score:
            raise RegistrationError(
                f"{name}: best fit is poor (score {best.score:.2f} < {c.min_score}: "
                f"{best.model_fitness:.0%} of the model surface and {best.scene_fitness:.0%} of "
                "the local scene agree); check the mesh (units, right object) and coverage"
                f" [searched {len(clusters)} clusters on the support plane n="
                f"{np.round(self.plane.normal, 3).tolist()} d={self.plane.d:.3f}, {n_h} "
                "hypotheses]")
        if best.score - runner < c.ambiguity_margin:
            raise RegistrationError(
                f"{name}: ambiguous fit: two different poses score {best.score:.2f} and "
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
