"""NOL projection (paper Sec. 3.1, step 2), in torch: source maps -> target view.

For a target pose, every target pixel covered by the mesh knows its face and barycentrics (from
the project's rasteriser; no gradient needed). Each source k gives every mesh vertex a 2D
position in its crop (projection with T_k, differentiable w.r.t. T_k) and a visibility flag
(depth test in the source view, facing the camera, inside the source mask). Interpolating the
vertex positions of the covering face with the barycentrics and bilinearly sampling the source
map there gives P_k; a pixel is valid in source k when its face's three vertices are visible.

Pixel convention as everywhere in nol_ros: integer pixel u is the centre of pixel u, so for
``grid_sample(align_corners=False)`` the normalised coordinate is (2u + 1) / S - 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from nol_ros.camera import Intrinsics
from nol_ros.errors import InputError
from nol_ros.geometry import invert_T
from nol_ros.mesh import Mesh
from nol_ros.rasterizer import Scene, _check_pose


@dataclass
class SourceView:
    """A source crop. rgb: (S, S, 3) float32 [0, 1]; mask: (S, S) bool; K: (3, 3) of the crop;
    T_camera_object: (4, 4) (self-annotated, possibly inaccurate); depth: (S, S) float32 m
    measured depth of the crop (0 = no reading) or None -- with it the mask can be re-derived
    at a refined pose exactly as the self-annotation derived it (:func:`mask_at_pose`)."""

    rgb: np.ndarray
    mask: np.ndarray
    K: np.ndarray
    T_camera_object: np.ndarray
    depth: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(self.rgb.shape[0])


def hat_torch(w: torch.Tensor) -> torch.Tensor:
    z = torch.zeros_like(w[..., 0])
    return torch.stack([torch.stack([z, -w[..., 2], w[..., 1]], -1),
                        torch.stack([w[..., 2], z, -w[..., 0]], -1),
                        torch.stack([-w[..., 1], w[..., 0], z], -1)], -2)


def so3_exp_torch(w: torch.Tensor) -> torch.Tensor:
    """(..., 3) -> (..., 3, 3), differentiable and stable at 0 (Taylor terms)."""
    th2 = (w * w).sum(-1, keepdim=True)[..., None]
    th = torch.sqrt(th2 + 1e-24)
    small = th2 < 1e-8
    a = torch.where(small, 1 - th2 / 6, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(th)) / torch.where(small, 1.0, th2))
    W = hat_torch(w)
    eye = torch.eye(3, dtype=w.dtype, device=w.device).expand(W.shape)
    return eye + a * W + b * (W @ W)


def se3_exp_torch(xi: torch.Tensor) -> torch.Tensor:
    """(..., 6) = [v, w] -> (..., 4, 4)."""
    v, w = xi[..., :3], xi[..., 3:]
    th2 = (w * w).sum(-1, keepdim=True)[..., None]
    th = torch.sqrt(th2 + 1e-24)
    small = th2 < 1e-8
    b = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(th)) / torch.where(small, 1.0, th2))
    c = torch.where(small, 1.0 / 6 - th2 / 120,
                    (th - torch.sin(th)) / torch.where(small, 1.0, th2 * th))
    W = hat_torch(w)
    eye = torch.eye(3, dtype=xi.dtype, device=xi.device).expand(W.shape)
    V = eye + b * W + c * (W @ W)
    R = so3_exp_torch(w)
    T = torch.zeros(*xi.shape[:-1], 4, 4, dtype=xi.dtype, device=xi.device)
    T[..., :3, :3] = R
    T[..., :3, 3] = (V @ v[..., None])[..., 0]
    T[..., 3, 3] = 1
    return T


def project_vertices(vertices: torch.Tensor, T_camera_object: torch.Tensor, K: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """vertices (V, 3) m, T_camera_object (K, 4, 4), K (K, 3, 3) crop intrinsics ->
    uv (K, V, 2) pixel coordinates in each crop, z (K, V) m (depth in the camera).
    Differentiable w.r.t. T_camera_object (and vertices)."""
    R, t = T_camera_object[:, :3, :3], T_camera_object[:, None, :3, 3]
    P = vertices[None] @ R.transpose(1, 2) + t
    z = P[..., 2]
    p = P @ K.transpose(1, 2)
    uv = p[..., :2] / z.clamp(min=1e-6)[..., None]
    return uv, z


def _object_scene(mesh: Mesh, scene=None):
    """A rasteriser Scene holding ``mesh`` in its object frame (built once, reused)."""
    return scene if scene is not None else Scene([mesh], [np.eye(4)])


def _outward_sign(mesh: Mesh) -> float:
    """+1, or -1 when the face winding encloses a negative volume (a mesh exported inside
    out). Cached on the mesh."""
    c = mesh._cache
    if "outward_sign" not in c:
        v = mesh.vertices - mesh.vertices.mean(0)
        f = mesh.faces
        vol = float(np.einsum("ij,ij->i", v[f[:, 0]], np.cross(v[f[:, 1]], v[f[:, 2]])).sum())
        c["outward_sign"] = -1.0 if vol < 0 else 1.0
    return c["outward_sign"]


def outward_vertex_normals(mesh: Mesh) -> np.ndarray:
    """(V, 3) float64 unit vertex normals pointing out of the object: the mesh's own (from its
    face winding), all flipped when the winding encloses a negative volume."""
    return mesh.vertex_normals * _outward_sign(mesh)


def face_cosines(mesh: Mesh, T_camera_object: np.ndarray) -> np.ndarray:
    """(F,) float64: cosine between each face's outward normal and the direction from its
    centre to the camera."""
    T = np.asarray(T_camera_object, np.float64)
    centre = (mesh.vertices[mesh.faces].mean(1)) @ T[:3, :3].T + T[:3, 3]
    fn = (mesh.face_normals * _outward_sign(mesh)) @ T[:3, :3].T
    return -np.sum(fn * centre, axis=1) / np.maximum(np.linalg.norm(centre, axis=1), 1e-12)


def source_geometry(mesh: Mesh, src: SourceView, depth_eps_m: float = 0.005,
                    max_angle_deg: float = 85.0, scene=None, crease_face_deg: float = 80.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One ray cast of the mesh in a source crop at its (possibly inaccurate) pose gives:
    visible (V,) bool (depth test within ``depth_eps_m``, inside the crop and the source mask,
    and FACING the camera: the signed cosine between the outward vertex normal and the
    direction to the camera above cos(``max_angle_deg``), or, on a crease where the smoothed
    normal turns away, the vertex bounds a face the ray cast hit inside the mask, seen within
    ``crease_face_deg`` (the bottom rim of a bottle under a camera 40 deg above: its normal
    points half down, the side wall it bounds faces the camera) -- a back face within
    ``depth_eps_m`` behind a visible surface, e.g. the inside of a thin can wall, is not
    visible), cos (V,) float32 (that vertex-normal cosine clipped to [0, 1]) and the angle map
    (S, S) float32 (cosine
    between viewing ray and surface normal per pixel, 0 off the object or the mask; the angle
    input of NolNet.encode_sources). ``scene``: a Scene of the mesh in its object frame, to
    reuse."""
    S = src.size
    intr = Intrinsics.from_K(src.K, S, S)
    res = _object_scene(mesh, scene).render(intr, invert_T(src.T_camera_object))
    T = src.T_camera_object
    Pc = mesh.vertices @ T[:3, :3].T + T[:3, 3]
    uv, z = intr.project(Pc)
    with np.errstate(invalid="ignore"):
        u, v = np.round(uv[:, 0]), np.round(uv[:, 1])
    inside = (z > 0) & (u >= 0) & (u < S) & (v >= 0) & (v < S)
    vis = np.zeros(len(Pc), bool)
    ui, vi = u[inside].astype(np.int64), v[inside].astype(np.int64)
    # A vertex on the silhouette often rounds to a background pixel (depth 0): test it against
    # the farthest surface in its 3x3 neighbourhood instead, and against the mask dilated by one
    # pixel, so silhouette faces are not lost; an occluder in front still fails the test.
    rd = res.depth[vi, ui]
    far = cv2.dilate(res.depth, np.ones((3, 3), np.uint8))[vi, ui]
    rd = np.where(rd > 0, rd, far)
    mask = cv2.dilate(src.mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    vis[inside] = (rd > 0) & (z[inside] <= rd + depth_eps_m) & mask[vi, ui]
    n = outward_vertex_normals(mesh) @ T[:3, :3].T
    view = -Pc / np.linalg.norm(Pc, axis=1, keepdims=True)
    cos = np.sum(n * view, axis=1)
    hit = np.zeros(len(mesh.faces), bool)
    hit[res.face_id[(res.face_id >= 0) & mask]] = True
    hit &= face_cosines(mesh, T) > np.cos(np.radians(crease_face_deg))
    on_hit = np.zeros(len(Pc), bool)
    on_hit[mesh.faces[hit].ravel()] = True
    vis &= (cos > np.cos(np.radians(max_angle_deg))) | on_hit
    rays = intr.ray_directions()
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    amap = np.abs(np.sum(res.normal_cam * rays, axis=-1))  # normal_cam faces the camera
    amap = np.where((res.depth > 0) & src.mask, amap, 0.0).astype(np.float32)
    return vis, np.clip(cos, 0.0, 1.0).astype(np.float32), amap


def mask_at_pose(mesh: Mesh, src: SourceView, T_camera_object: np.ndarray,
                 depth_tolerance_m: float = 0.05, scene=None) -> np.ndarray:
    """(S, S) bool: the source's object mask re-derived at another (refined) pose -- the
    silhouette of the mesh at ``T_camera_object`` in the crop, minus what hides it. With the
    crop's measured depth this is the self-annotation's rule (nol_ros.reconstruction.annotate:
    a pixel is visible where the rendered depth is within ``depth_tolerance_m`` of the measured
    one or there is no reading); without depth, the pixels of the old silhouette that the old
    mask excluded (an occluder) stay excluded."""
    S = src.size
    intr = Intrinsics.from_K(src.K, S, S)
    scene = _object_scene(mesh, scene)
    new = scene.render(intr, invert_T(np.asarray(T_camera_object, np.float64)))
    if src.depth is not None:
        d = np.asarray(src.depth, np.float32)
        ok = (d <= 0) | (np.abs(new.depth - d) <= depth_tolerance_m)
        return new.mask & ok
    old = scene.render(intr, invert_T(src.T_camera_object)).mask
    return new.mask & ~(old & ~src.mask)


def mask_edge_map(mask: np.ndarray, reach_px: float) -> np.ndarray:
    """mask (S, S) bool -> (S, S) float32: each mask pixel's Euclidean distance to the nearest
    pixel off the mask (the crop's border counts as off), divided by ``reach_px`` and clipped
    to 1; 0 off the mask. Where a source's sample lies near 0 it was taken next to the
    silhouette, where the pose error and the sensor's blur mix in the background."""
    if reach_px <= 0:
        raise InputError(f"mask_edge_map: reach_px must be > 0, got {reach_px}")
    m = np.pad(np.asarray(mask, np.uint8), 1)
    d = cv2.distanceTransform(m, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    return np.minimum(d / reach_px, 1.0).astype(np.float32)


def vertex_visibility(mesh: Mesh, src: SourceView, depth_eps_m: float = 0.005,
                      max_angle_deg: float = 85.0) -> tuple[np.ndarray, np.ndarray]:
    """(visible (V,) bool, cos of the angle between viewing ray and normal (V,)) in a source
    (see :func:`source_geometry`)."""
    vis, cos, _ = source_geometry(mesh, src, depth_eps_m, max_angle_deg)
    return vis, cos


def sample_projection(feat: torch.Tensor, uv_vertex: torch.Tensor, vis_vertex: torch.Tensor,
                      faces: torch.Tensor, face_id: torch.Tensor, bary: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """feat (K, C, S, S); uv_vertex (K, V, 2) pixels; vis_vertex (K, V) bool; faces (F, 3) long;
    face_id (H, W) long (-1 background); bary (H, W, 3) -> P (K, C, H, W), valid (K, 1, H, W).
    Differentiable w.r.t. feat and uv_vertex. Pixel centre i has coordinate i, so the
    grid_sample (align_corners=False) coordinate is x = (2u + 1) / S - 1. A pixel is valid in
    source k when its face's 3 vertices are visible in k and the UV is inside the crop; P is
    0 where invalid."""
    Kn, C, S, _ = feat.shape
    H, W = face_id.shape
    fg = face_id >= 0
    f = faces[face_id[fg]]                     # (N, 3)
    b = bary[fg]                               # (N, 3)
    uvf = uv_vertex[:, f]                      # (K, N, 3, 2)
    uv = (uvf * b[None, :, :, None]).sum(2)    # (K, N, 2)
    visf = vis_vertex[:, f].all(-1)            # (K, N)
    inside = (uv[..., 0] >= -0.5) & (uv[..., 0] <= S - 0.5) & (uv[..., 1] >= -0.5) \
        & (uv[..., 1] <= S - 0.5)
    grid = (2 * uv + 1) / S - 1                # (K, N, 2)
    samp = F.grid_sample(feat, grid[:, None], mode="bilinear", align_corners=False,
                         padding_mode="zeros")[:, :, 0]   # (K, C, N)
    P = feat.new_zeros(Kn, C, H, W)
    P[:, :, fg] = samp
    valid = torch.zeros(Kn, 1, H, W, dtype=torch.bool, device=feat.device)
    valid[:, 0, fg] = visf & inside
    return P * valid, valid


@dataclass
class Projection:
    """P: (K, C, H, W) projected source maps (C = 3 colour + extra channels, the last one the
    source viewing angle cosine); valid: (K, 1, H, W); target_mask: (H, W) bool."""

    P: torch.Tensor
    valid: torch.Tensor
    target_mask: torch.Tensor


@dataclass
class ProjectionGeometry:
    """Everything about one (target pose, K sources) pair that needs no gradient.

    vertices (V, 3) float32 m; faces (F, 3) long; face_id (H, W) long (-1 background) and
    bary (H, W, 3) float32 of the target rasterisation; vis (K, V) bool and cos (K, V) float32
    (vertex visibility and angle cosine in each source, from the initial source poses);
    K (K, 3, 3) float32 crop intrinsics; T_camera_object (K, 4, 4) float32 initial poses."""

    vertices: torch.Tensor
    faces: torch.Tensor
    face_id: torch.Tensor
    bary: torch.Tensor
    vis: torch.Tensor
    cos: torch.Tensor
    K: torch.Tensor
    T_camera_object: torch.Tensor

    @property
    def target_mask(self) -> torch.Tensor:
        return self.face_id >= 0


def _check_sources(sources: list[SourceView], T_camera_object_target: np.ndarray) -> None:
    if not sources:
        raise InputError("no source views given")
    for s in sources:
        if not np.all(np.isfinite(s.T_camera_object)):
            raise InputError("a source pose contains NaN/inf; fix the self-annotation first")
        if not s.mask.any():
            raise InputError("a source view has an empty mask: the object is not visible in it")
    if not np.all(np.isfinite(T_camera_object_target)):
        raise InputError("the target pose contains NaN/inf")


def target_raster(mesh: Mesh, target_intr: Intrinsics, T_camera_object_target: np.ndarray,
                  scene=None):
    """Rasterise the mesh in the target pose (no gradient needed): RasterResult."""
    T = _check_pose(T_camera_object_target, "the target pose T_camera_object")
    return _object_scene(mesh, scene).render(target_intr, invert_T(T))


def geometry_from(mesh: Mesh, sources: list[SourceView], raster, vis: np.ndarray,
                  cos: np.ndarray, device: str | torch.device = "cpu") -> ProjectionGeometry:
    """ProjectionGeometry from a target raster and precomputed per-source vertex visibility
    vis (K, V) bool and cos (K, V) (see :func:`source_geometry`)."""
    dev = torch.device(device)

    def t(a, dtype=torch.float32):
        return torch.as_tensor(np.asarray(a), dtype=dtype, device=dev)

    return ProjectionGeometry(
        vertices=t(mesh.vertices), faces=t(mesh.faces, torch.long),
        face_id=t(raster.face_id, torch.long), bary=t(raster.bary),
        vis=t(np.asarray(vis), torch.bool), cos=t(np.asarray(cos)),
        K=t(np.stack([s.K for s in sources])),
        T_camera_object=t(np.stack([s.T_camera_object for s in sources])))


def prepare_projection(mesh: Mesh, sources: list[SourceView], target_intr: Intrinsics,
                       T_camera_object_target: np.ndarray, device: str = "cpu", scene=None
                       ) -> ProjectionGeometry:
    """Rasterise the target and compute vertex visibility in every source."""
    _check_sources(sources, T_camera_object_target)
    scene = _object_scene(mesh, scene)
    res = target_raster(mesh, target_intr, T_camera_object_target, scene)
    geo = [source_geometry(mesh, s, scene=scene) for s in sources]
    return geometry_from(mesh, sources, res, np.stack([g[0] for g in geo]),
                         np.stack([g[1] for g in geo]), device)


def project_features(geom: ProjectionGeometry, feats: torch.Tensor,
                     T_camera_object: torch.Tensor | None = None, append_angle: bool = True
                     ) -> Projection:
    """Differentiable step: feats (K, C, S, S) source maps, T_camera_object (K, 4, 4) source
    poses (default: the initial ones; pass a tensor that requires grad for pose refinement) ->
    Projection. append_angle adds the per-vertex source angle cosine, interpolated over the
    target face, as the last channel (use False when feats already end with an angle channel,
    e.g. F_k from NolNet.encode_sources)."""
    T = geom.T_camera_object if T_camera_object is None else T_camera_object
    uv, _ = project_vertices(geom.vertices.to(T.dtype), T, geom.K.to(T.dtype))
    P, valid = sample_projection(feats, uv.to(feats.dtype), geom.vis, geom.faces, geom.face_id,
                                 geom.bary.to(feats.dtype))
    fg = geom.target_mask
    if append_angle:
        fid = geom.face_id
        ang = feats.new_zeros(feats.shape[0], 1, *fid.shape)
        ang[:, 0, fg] = (geom.cos[:, geom.faces[fid[fg]]].to(feats.dtype)
                         * geom.bary[fg][None].to(feats.dtype)).sum(-1)
        P = torch.cat([P, ang * valid], 1)
    return Projection(P, valid, fg)


def project_sources(mesh: Mesh, sources: list[SourceView], target_intr: Intrinsics,
                    T_camera_object_target: np.ndarray, feats: torch.Tensor | None = None,
                    device: str = "cpu", append_angle: bool = True) -> Projection:
    """Project sources (their RGB, or the given feature maps (K, C, S, S)) into the target.
    The angle cosine of each source is appended as the last channel unless append_angle is
    False (see :func:`project_features`)."""
    geom = prepare_projection(mesh, sources, target_intr, T_camera_object_target, device)
    if feats is None:
        feats = torch.as_tensor(np.stack([s.rgb for s in sources]), dtype=torch.float32,
                                device=geom.faces.device).permute(0, 3, 1, 2)
    return project_features(geom, feats, append_angle=append_angle)


def source_angle_map(mesh: Mesh, src: SourceView) -> np.ndarray:
    """(S, S) float32: cosine between the viewing ray and the surface normal of the object in
    the source crop (the angle input of NolNet.encode_sources); 0 off the object/mask."""
    return source_geometry(mesh, src)[2]


def blend_ibr(proj: Projection, mode: str = "angle", angle_power: float = 4.0,
              return_weights: bool = False):
    """Baselines without learning, (3, H, W): 'angle' = visibility- and angle-weighted average
    (classic image-based rendering), 'mean' = plain average of the valid projections (the
    paper's w/o-LSTM ablation), 'best' = per pixel the source seen most frontally.
    return_weights: also return the per-source weights (K, 1, H, W), summing to 1 where any
    source is valid."""
    rgb = proj.P[:, :3]
    cos = proj.P[:, -1:]
    v = proj.valid.float()
    if mode == "mean":
        w = v
    elif mode == "angle":
        # every valid source keeps a weight > 0 (1e-12: far below any frontal one), so the
        # normalised weights sum to exactly 1 wherever a source is valid, even where all of
        # them see the surface at a grazing angle (cos ~ 0)
        w = v * (cos.clamp(min=0.0) ** angle_power).clamp(min=1e-12)
    elif mode == "best":
        score = torch.where(proj.valid, cos, torch.full_like(cos, -1.0))
        w = (score == score.max(0, keepdim=True).values).float() * v
    else:
        raise InputError(f"blend mode '{mode}' unknown; use angle, mean or best")
    w = w / w.sum(0, keepdim=True).clamp(min=1e-30)
    out = (rgb * w).sum(0)
    return (out, w) if return_weights else out


def face_texture_weights(geom: ProjectionGeometry, proj: Projection) -> torch.Tensor:
    """Texture mapping (the paper's baseline, view-independent): every mesh face takes its
    colour from ONE source, the one that sees all three of its vertices most frontally (largest
    mean cosine), as a per-face view selection builds a texture atlas (mvs-texturing without its
    seam levelling). -> weights (K, 1, H, W), one-hot on the chosen source where it is valid;
    where the chosen source's projection falls outside its crop, the angle weights."""
    fg = geom.target_mask
    fid = geom.face_id[fg]
    f = geom.faces[fid]                                        # (N, 3)
    score = torch.where(geom.vis[:, f].all(-1), geom.cos[:, f].mean(-1),
                        torch.full((), -1.0))                  # (K, N)
    best = score.argmax(0)
    onehot = torch.zeros_like(score)
    onehot[best, torch.arange(len(best))] = 1.0
    w = proj.valid.new_zeros(proj.valid.shape, dtype=proj.P.dtype)
    w[:, 0, fg] = onehot.to(w.dtype)
    w = w * proj.valid
    _, wa = blend_ibr(proj, "angle", return_weights=True)
    have = w.sum(0, keepdim=True) > 0
    return torch.where(have, w, wa)
