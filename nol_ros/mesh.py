"""Triangle meshes: loading (PLY/OBJ, vertex colours or UV texture), units check, normals,
diameter, BOP models_info, surface sampling. Vertices in metres, object frame."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

import numpy as np
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import cdist

from nol_ros.errors import InputError
from nol_ros.io_utils import atomic_write_bytes, atomic_write_image, atomic_write_text


class MeshLoadError(InputError):
    """A mesh file is missing, unreadable, empty or not in metres: bad input (the CLI exits 2)."""

    code = "BAD_MESH"


class EmptyMeshError(MeshLoadError):
    code = "EMPTY_MESH"


class MeshUnitsError(MeshLoadError):
    code = "MESH_UNITS"


MAX_EXTENT_M = 5.0  # a household object larger than this is not in metres
UNIT_SCALES = {"m": 1.0, "cm": 0.01, "mm": 0.001}


def units_advice(extent: float) -> str:
    """What an object ``extent`` units across would be in centimetres and in millimetres, with
    the scale factor of each, the likelier first (a hand-held object: 2-60 cm)."""
    opts = [(u, s, extent * s) for u, s in (("cm", 0.01), ("mm", 0.001))]
    opts.sort(key=lambda o: 0 if 0.02 <= o[2] <= 0.6 else 1)
    return "; ".join(f"in {u} it is {size:.3g} m across: scale by {s} (units='{u}')"
                     for u, s, size in opts)


@dataclass
class Mesh:
    """vertices (V, 3) float64 m; faces (F, 3) int64; vertex_colors (V, 3) float32 [0, 1] or
    None; uvs (V, 2) float32 (OpenGL: v up) or None; texture (Ht, Wt, 3) uint8 or None."""

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None
    uvs: np.ndarray | None = None
    texture: np.ndarray | None = None
    name: str = ""
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.vertices = np.ascontiguousarray(self.vertices, dtype=np.float64).reshape(-1, 3)
        self.faces = np.ascontiguousarray(self.faces, dtype=np.int64).reshape(-1, 3)
        if len(self.vertices) == 0 or len(self.faces) == 0:
            raise EmptyMeshError(f"mesh '{self.name}' has {len(self.vertices)} vertices and "
                                 f"{len(self.faces)} faces; a surface mesh is needed")
        if not np.all(np.isfinite(self.vertices)):
            bad = int((~np.isfinite(self.vertices)).any(1).sum())
            raise MeshLoadError(f"mesh '{self.name}' has {bad} vertices with NaN/inf "
                                "coordinates; repair or re-export the mesh (e.g. remove those "
                                "vertices and their faces)")
        if self.faces.min() < 0 or self.faces.max() >= len(self.vertices):
            raise MeshLoadError(f"mesh '{self.name}' has face indices outside [0, "
                                f"{len(self.vertices) - 1}]; the file's faces do not match its "
                                "vertices, re-export the mesh")
        nv = len(self.vertices)
        if self.vertex_colors is not None:
            c = np.asarray(self.vertex_colors, dtype=np.float32)
            if c.ndim != 2 or c.shape[0] != nv or c.shape[1] < 3:
                raise MeshLoadError(f"mesh '{self.name}': vertex colours have shape {c.shape}, "
                                    f"expected ({nv}, 3); give one RGB colour per vertex")
            c = c[:, :3]
            self.vertex_colors = c / 255.0 if c.max() > 1.0 else c
        if self.uvs is not None:
            uv = np.asarray(self.uvs, dtype=np.float32)
            if uv.shape != (nv, 2):
                raise MeshLoadError(f"mesh '{self.name}': uvs have shape {uv.shape}, expected "
                                    f"({nv}, 2); give one texture coordinate per vertex")
            self.uvs = uv
        if self.texture is not None:
            t = np.asarray(self.texture)
            if t.ndim == 2:
                t = np.repeat(t[..., None], 3, axis=2)
            if t.ndim != 3 or t.shape[2] < 3:
                raise MeshLoadError(f"mesh '{self.name}': texture has shape {t.shape}; an "
                                    "(H, W, 3) RGB image is needed")
            self.texture = np.ascontiguousarray(t[..., :3], dtype=np.uint8)

    # -- derived ----------------------------------------------------------------------------------
    @property
    def is_textured(self) -> bool:
        return self.uvs is not None and self.texture is not None

    @cached_property
    def face_normals(self) -> np.ndarray:
        v, f = self.vertices, self.faces
        n = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-15)

    @cached_property
    def face_areas(self) -> np.ndarray:
        v, f = self.vertices, self.faces
        return 0.5 * np.linalg.norm(np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]]),
                                    axis=1)

    @cached_property
    def vertex_normals(self) -> np.ndarray:
        """Area-weighted average of the adjacent face normals, unit length."""
        v, f = self.vertices, self.faces
        raw = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])  # length = 2 area
        n = np.zeros_like(v)
        for i in range(3):
            np.add.at(n, f[:, i], raw)
        return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-15)

    @property
    def extent(self) -> np.ndarray:
        return np.ptp(self.vertices, axis=0)

    @cached_property
    def diameter(self) -> float:
        """Largest distance between two vertices, metres (exact: the farthest pair lies on the
        convex hull, so only hull vertices are compared)."""
        return max_pairwise_distance(self.vertices)

    # -- variants ---------------------------------------------------------------------------------
    def untextured(self) -> Mesh:
        return Mesh(self.vertices.copy(), self.faces.copy(), name=self.name)

    def transformed(self, T: np.ndarray) -> Mesh:
        T = np.asarray(T, dtype=np.float64)
        return replace(self, vertices=self.vertices @ T[:3, :3].T + T[:3, 3], _cache={})

    def copy(self) -> Mesh:
        return replace(self, vertices=self.vertices.copy(), faces=self.faces.copy(), _cache={})

    def albedo_at_vertices(self) -> np.ndarray | None:
        """(V, 3) float32 colours at the vertices (vertex colours, or the texture sampled)."""
        if self.vertex_colors is not None:
            return self.vertex_colors
        if self.is_textured:
            return sample_texture(self.texture, self.uvs)
        return None


def _hull_points(P: np.ndarray) -> np.ndarray:
    """Vertices of the convex hull of (N, 3) points; for flat or collinear sets the hull in
    their own plane / line (the farthest pair is always among these)."""
    P = np.unique(P, axis=0)
    if len(P) <= 4:
        return P
    try:
        return P[ConvexHull(P).vertices]
    except QhullError:
        pass
    c = P - P.mean(0)
    _, sv, Vt = np.linalg.svd(c, full_matrices=False)
    if sv[1] > 1e-12 * max(sv[0], 1e-300):
        try:
            return P[ConvexHull(c @ Vt[:2].T).vertices]
        except QhullError:
            pass
    x = c @ Vt[0]
    return P[[int(np.argmin(x)), int(np.argmax(x))]]


def max_pairwise_distance(points: np.ndarray, block: int = 512) -> float:
    """Exact max distance between any two of (N, 3) points (hull vertices, compared in
    blocks so memory stays ~block * N_hull * 8 bytes)."""
    H = _hull_points(np.asarray(points, dtype=np.float64))
    best = 0.0
    for i in range(0, len(H), block):
        best = max(best, float(cdist(H[i:i + block], H[i:], "sqeuclidean").max()))
    return float(np.sqrt(best))


def sample_texture(texture: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear texture lookup. texture (Ht, Wt, 3) uint8, uv (..., 2) OpenGL (v up, [0, 1],
    wrapped) -> (..., 3) float32 in [0, 1]."""
    tex = np.asarray(texture, dtype=np.float32) / 255.0
    Ht, Wt = tex.shape[:2]
    u = np.mod(uv[..., 0], 1.0) * Wt - 0.5
    v = (1.0 - np.mod(uv[..., 1], 1.0)) * Ht - 0.5
    u0, v0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    du, dv = (u - u0)[..., None], (v - v0)[..., None]
    u0c, u1c = np.clip(u0, 0, Wt - 1), np.clip(u0 + 1, 0, Wt - 1)
    v0c, v1c = np.clip(v0, 0, Ht - 1), np.clip(v0 + 1, 0, Ht - 1)
    return ((1 - du) * (1 - dv) * tex[v0c, u0c] + du * (1 - dv) * tex[v0c, u1c]
            + (1 - du) * dv * tex[v1c, u0c] + du * dv * tex[v1c, u1c]).astype(np.float32)


def check_units(mesh: Mesh, units: str = "auto", on_millimetres: str = "error",
                source: str = "") -> Mesh:
    """Return a mesh in metres. units: auto | m | mm. With auto, an extent > 5 m is taken as
    millimetres: MeshUnitsError, or converted with a warning if on_millimetres == 'convert'."""
    if units == "m":
        return mesh
    if units in UNIT_SCALES:
        return replace(mesh, vertices=mesh.vertices * UNIT_SCALES[units], _cache={})
    if units != "auto":
        raise MeshLoadError(f"units '{units}' unknown; use auto, m, cm or mm")
    if on_millimetres not in ("error", "convert"):
        raise MeshLoadError(f"on_millimetres '{on_millimetres}' unknown; use error or convert")
    ext = float(mesh.extent.max())
    if ext > MAX_EXTENT_M:
        msg = (f"mesh {source or mesh.name} is {ext:.1f} units across: not metres, which "
               "nol_ros works in")
        if on_millimetres == "convert":
            warnings.warn(msg + "; taken as millimetres (scaled by 0.001)", stacklevel=2)
            return replace(mesh, vertices=mesh.vertices * 1e-3, _cache={})
        raise MeshUnitsError(f"{msg}: {units_advice(ext)}; convert the file (metres)")
    return mesh


def load_mesh(path: str | Path, units: str = "auto", on_millimetres: str = "error") -> Mesh:
    """Load a PLY or OBJ: vertex colours, or UVs + texture image (OBJ via its MTL ``map_Kd``,
    BOP-style PLY via ``comment TextureFile`` + ``texture_u/texture_v``).

    units: "m" (file in metres), "mm" (scaled by 1e-3), "auto" (extent > 5 m means millimetres:
    MeshUnitsError, or with on_millimetres="convert" scaled by 1e-3 with a warning).
    Raises MeshLoadError (missing/unreadable file, NaN vertices, bad faces), EmptyMeshError (no
    triangles), MeshUnitsError. Returns vertices in metres.
    """
    # lazy: trimesh (~1 s) to import, loaded only when this runs
    import trimesh

    if units != "auto" and units not in UNIT_SCALES:
        raise MeshLoadError(f"units '{units}' unknown; use auto, m, cm or mm")
    if on_millimetres not in ("error", "convert"):
        raise MeshLoadError(f"on_millimetres '{on_millimetres}' unknown; use error or convert")
    p = Path(path)
    if not p.is_file():
        raise MeshLoadError(f"mesh file '{p}' does not exist; check the path")
    try:
        tm = trimesh.load(str(p), process=False, force="mesh")
    except Exception as e:  # trimesh raises many kinds
        raise MeshLoadError(f"cannot read mesh '{p}' ({type(e).__name__}: {e}); give a valid "
                            "PLY or OBJ file") from e
    if not isinstance(tm, trimesh.Trimesh) or len(tm.faces) == 0:
        raise EmptyMeshError(f"mesh '{p}' has no triangles (a point cloud?); give a surface mesh")
    colors = uvs = tex = None
    vis = tm.visual
    if getattr(vis, "kind", None) == "texture" and getattr(vis, "uv", None) is not None:
        img = getattr(vis.material, "image", None)
        if img is None and hasattr(vis.material, "baseColorTexture"):
            img = vis.material.baseColorTexture
        if img is not None:
            uvs, tex = np.asarray(vis.uv), np.asarray(img.convert("RGB"))
        else:
            warnings.warn(f"mesh '{p}' has texture coordinates but its texture image was not "
                          "found; loaded without texture (put the image next to the mesh as "
                          "named in the MTL / PLY header)", stacklevel=2)
    elif getattr(vis, "kind", None) == "vertex":
        colors = np.asarray(vis.vertex_colors)[:, :3].astype(np.float32) / 255.0
    try:
        mesh = Mesh(np.asarray(tm.vertices), np.asarray(tm.faces), colors, uvs, tex,
                    name=p.stem)
    except MeshLoadError as e:
        raise type(e)(f"{p}: {e}") from e
    return check_units(mesh, units, on_millimetres, str(p))


def save_mesh(mesh: Mesh, path: str | Path) -> Path:
    """PLY (binary, vertex colours if any) or OBJ (+ MTL + PNG texture when textured)."""
    p = Path(path)
    if p.suffix.lower() == ".ply":
        V, F = mesh.vertices.astype("<f4"), mesh.faces.astype("<i4")
        col = mesh.albedo_at_vertices()
        head = ["ply", "format binary_little_endian 1.0", f"element vertex {len(V)}",
                "property float x", "property float y", "property float z"]
        if col is not None:
            head += ["property uchar red", "property uchar green", "property uchar blue"]
        head += [f"element face {len(F)}", "property list uchar int vertex_indices",
                 "end_header"]
        if col is not None:
            vdt = np.dtype([("p", "<f4", 3), ("c", "u1", 3)])
            va = np.empty(len(V), vdt)
            va["p"], va["c"] = V, np.clip(np.round(col * 255), 0, 255).astype(np.uint8)
        else:
            va = V
        fdt = np.dtype([("n", "u1"), ("i", "<i4", 3)])
        fa = np.empty(len(F), fdt)
        fa["n"], fa["i"] = 3, F
        atomic_write_bytes(p, ("\n".join(head) + "\n").encode() + va.tobytes() + fa.tobytes())
        return p
    if p.suffix.lower() == ".obj":
        lines = [f"v {x:.7f} {y:.7f} {z:.7f}" for x, y, z in mesh.vertices]
        if mesh.is_textured:
            tex_name, mtl_name = p.stem + ".png", p.stem + ".mtl"
            atomic_write_image(p.with_name(tex_name), mesh.texture)
            atomic_write_text(p.with_name(mtl_name),
                              f"newmtl material0\nKa 1 1 1\nKd 1 1 1\nmap_Kd {tex_name}\n")
            lines = [f"mtllib {mtl_name}", "usemtl material0"] + lines
            lines += [f"vt {u:.6f} {v:.6f}" for u, v in mesh.uvs]
            lines += [f"f {a + 1}/{a + 1} {b + 1}/{b + 1} {c + 1}/{c + 1}"
                      for a, b, c in mesh.faces]
        else:
            lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
        atomic_write_text(p, "\n".join(lines) + "\n")
        return p
    raise MeshLoadError(f"cannot save '{p}': use a .ply or .obj file name")


def models_info(mesh: Mesh, symmetric: bool = False) -> dict:
    """BOP models_info entry (millimetres). symmetric=True adds a continuous symmetry about the
    model's z axis (offset 0)."""
    lo = mesh.vertices.min(0) * 1000.0
    size = np.ptp(mesh.vertices, 0) * 1000.0
    info = {"diameter": mesh.diameter * 1000.0, "min_x": float(lo[0]), "min_y": float(lo[1]),
            "min_z": float(lo[2]), "size_x": float(size[0]), "size_y": float(size[1]),
            "size_z": float(size[2])}
    if symmetric:
        info["symmetries_continuous"] = [{"axis": [0, 0, 1], "offset": [0, 0, 0]}]
    return info


def sample_surface(vertices: np.ndarray, faces: np.ndarray, n: int, rng: np.random.Generator
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Area-uniform random surface points (n, 3) and the unit normals of their faces (n, 3)."""
    v = np.asarray(vertices, np.float64)
    f = np.asarray(faces, np.int64)
    cr = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    area = np.linalg.norm(cr, axis=1)
    if len(f) == 0 or area.sum() <= 0:
        raise EmptyMeshError("the mesh has no surface area (empty or degenerate)")
    fi = rng.choice(len(f), size=n, p=area / area.sum())
    r1, r2 = rng.random(n), rng.random(n)
    s = np.sqrt(r1)
    pts = ((1 - s)[:, None] * v[f[fi, 0]] + (s * (1 - r2))[:, None] * v[f[fi, 1]]
           + (s * r2)[:, None] * v[f[fi, 2]])
    return pts, cr[fi] / np.maximum(area[fi], 1e-15)[:, None]


def sample_surface_points(mesh: Mesh, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 3) area-uniform random points on the surface."""
    return sample_surface(mesh.vertices, mesh.faces, n, rng)[0]


def sample_vertices(mesh: Mesh, max_n: int, rng: np.random.Generator) -> np.ndarray:
    """At most max_n vertices (all if fewer), as (<= max_n, 3)."""
    if len(mesh.vertices) <= max_n:
        return mesh.vertices.copy()
    return mesh.vertices[np.sort(rng.choice(len(mesh.vertices), max_n, replace=False))]
