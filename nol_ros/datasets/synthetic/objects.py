"""Procedural household objects with UV-mapped detailed textures (YCB-like sizes, metres).

Object frame: origin at the bounding-box centre, z up (the object rests on z = -height/2).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from nol_ros.datasets.scanned import load_textured_objects
from nol_ros.datasets.synthetic import textures as tx
from nol_ros.errors import InputError
from nol_ros.mesh import Mesh


@dataclass
class Part:
    V: np.ndarray
    F: np.ndarray
    UV: np.ndarray   # in the part's own [0, 1]^2; placed into an atlas cell later


def grid_quad(p0, du, dv, nu: int, nv: int) -> Part:
    """A planar patch p0 + s du + t dv, s, t in [0, 1], subdivided nu x nv."""
    s, t = np.meshgrid(np.linspace(0, 1, nu + 1), np.linspace(0, 1, nv + 1))
    V = np.asarray(p0) + s.reshape(-1, 1) * np.asarray(du) + t.reshape(-1, 1) * np.asarray(dv)
    UV = np.stack([s.reshape(-1), t.reshape(-1)], 1)
    idx = np.arange((nu + 1) * (nv + 1)).reshape(nv + 1, nu + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    F = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                        np.stack([a, c, d], -1).reshape(-1, 3)])
    return Part(V, F, UV)


def box_parts(sx, sy, sz, n=6) -> list[Part]:
    hx, hy, hz = sx / 2, sy / 2, sz / 2
    return [
        grid_quad([-hx, -hy, -hz], [sx, 0, 0], [0, 0, sz], n, n),   # front (-y)
        grid_quad([hx, hy, -hz], [-sx, 0, 0], [0, 0, sz], n, n),    # back (+y)
        grid_quad([hx, -hy, -hz], [0, sy, 0], [0, 0, sz], n, n),    # right (+x)
        grid_quad([-hx, hy, -hz], [0, -sy, 0], [0, 0, sz], n, n),   # left (-x)
        grid_quad([-hx, -hy, hz], [sx, 0, 0], [0, sy, 0], n, n),    # top
        grid_quad([-hx, hy, -hz], [sx, 0, 0], [0, -sy, 0], n, n),   # bottom
    ]


def lathe(profile_rz: np.ndarray, n_seg: int = 48) -> Part:
    """Surface of revolution about z. profile (m, 2) of (radius, z), from bottom to top; a
    profile that starts and ends at radius 0 gives a closed surface. UV: u = angle, v = arc."""
    P = np.asarray(profile_rz, dtype=np.float64)
    arc = np.r_[0, np.cumsum(np.linalg.norm(np.diff(P, axis=0), axis=1))]
    v = arc / arc[-1]
    ang = np.linspace(0, 2 * np.pi, n_seg + 1)
    R, A = np.meshgrid(P[:, 0], ang, indexing="ij")
    Z, _ = np.meshgrid(P[:, 1], ang, indexing="ij")
    V = np.stack([R * np.cos(A), R * np.sin(A), Z], -1).reshape(-1, 3)
    UVu, UVv = np.meshgrid(ang / (2 * np.pi), v, indexing="xy")
    UV = np.stack([UVu.T.reshape(-1), UVv.T.reshape(-1)], 1)
    m = len(P)
    idx = np.arange(m * (n_seg + 1)).reshape(m, n_seg + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    F = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                        np.stack([a, c, d], -1).reshape(-1, 3)])
    # drop degenerate triangles at the poles (radius 0)
    Vv = V[F]
    area = np.linalg.norm(np.cross(Vv[:, 1] - Vv[:, 0], Vv[:, 2] - Vv[:, 0]), axis=1)
    return Part(V, F[area > 1e-12], UV)


def transform_part(p: Part, R=np.eye(3), t=(0, 0, 0)) -> Part:
    return Part(p.V @ np.asarray(R).T + np.asarray(t), p.F, p.UV)


def rot(axis: str, a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
            "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def assemble(parts: list[Part], atlas_cells: int, name: str, texture: np.ndarray) -> Mesh:
    """Place each part's UVs into its own cell of a square atlas grid; centre the geometry on
    its bounding box."""
    g = int(np.ceil(np.sqrt(atlas_cells)))
    Vs, Fs, UVs = [], [], []
    off = 0
    for k, p in enumerate(parts):
        cu, cv = k % g, k // g
        pad = 0.01
        uv = (np.clip(p.UV, 0, 1) * (1 - 2 * pad) + pad + [cu, cv]) / g
        Vs.append(p.V)
        Fs.append(p.F + off)
        UVs.append(uv)
        off += len(p.V)
    V = np.concatenate(Vs)
    V = V - (V.min(0) + V.max(0)) / 2
    return Mesh(V, np.concatenate(Fs), uvs=np.concatenate(UVs).astype(np.float32),
                texture=texture, name=name)


def _atlas(rng, cells: int, cell_px: int = 384, fn=tx.label_texture) -> np.ndarray:
    g = int(np.ceil(np.sqrt(cells)))
    tex = np.zeros((g * cell_px, g * cell_px, 3), np.uint8)
    for k in range(cells):
        cu, cv = k % g, k // g
        # atlas v runs up (OpenGL): cell row cv counts from the bottom of the image
        r0 = (g - 1 - cv) * cell_px
        tex[r0:r0 + cell_px, cu * cell_px:(cu + 1) * cell_px] = fn(rng, cell_px, cell_px)
    return tex


def make_box(rng, name, sx, sy, sz) -> Mesh:
    parts = box_parts(sx, sy, sz, 10)  # 1200 faces: like a scanned model, not 12 triangles
    return assemble(parts, 6, name, _atlas(rng, 6))


def make_can(rng, name, r, h, symmetric=False) -> Mesh:
    rim = 0.004
    prof = np.array([[0, 0], [r - rim, 0], [r, rim], [r, h - rim], [r - rim, h], [0, h]])
    # subdivide the side for shading
    side = np.c_[np.full(12, r), np.linspace(rim, h - rim, 12)]
    prof = np.vstack([prof[:3], side[1:-1], prof[3:]])
    fn = tx.ring_texture if symmetric else tx.label_texture
    return assemble([lathe(prof, 48)], 1, name, _atlas(rng, 1, 512, fn))


def make_bottle(rng, name, h=0.19, r=0.045) -> Mesh:
    z = np.linspace(0, 1, 24)
    radius = r * (0.92 + 0.08 * np.sin(np.pi * z * 0.9))
    neck = z > 0.72
    radius[neck] = r * (0.92 - 0.65 * (z[neck] - 0.72) / 0.28)
    prof = np.vstack([[0, 0], np.c_[radius, z * h], [[0.012, h], [0.012, h + 0.02], [0, h + 0.02]]])
    return assemble([lathe(prof, 48)], 1, name, _atlas(rng, 1, 512))


def make_bowl(rng, name, r=0.08, h=0.055) -> Mesh:
    t = np.linspace(0, 1, 14)
    outer = np.c_[0.45 * r + 0.55 * r * np.sin(t * np.pi / 2), h * (1 - np.cos(t * np.pi / 2))]
    inner = np.c_[(0.45 * r + 0.55 * r * np.sin(t[::-1] * np.pi / 2)) * 0.92,
                  0.006 + (h - 0.006) * (1 - np.cos(t[::-1] * np.pi / 2))]
    prof = np.vstack([[0, 0], outer, inner, [0, 0.006]])
    return assemble([lathe(prof, 64)], 1, name, _atlas(rng, 1, 512, tx.ring_texture))


def make_mug(rng, name, r=0.042, h=0.095) -> Mesh:
    """A cup with a handle: non-convex and not symmetric."""
    body = make_can_part(r, h)
    ang = np.linspace(-np.pi / 2, np.pi / 2, 16)
    R0, rr = 0.028, 0.007
    pts, uvs = [], []
    n_c = 10
    for i, a in enumerate(ang):
        c = np.array([r + R0 * np.cos(a) - 0.01, 0, h / 2 + R0 * np.sin(a)])
        tang = np.array([-np.sin(a), 0, np.cos(a)])
        nrm = np.cross(tang, [0, 1, 0])
        for j in range(n_c + 1):
            b = 2 * np.pi * j / n_c
            pts.append(c + rr * (np.cos(b) * nrm + np.sin(b) * np.array([0, 1, 0])))
            uvs.append([i / (len(ang) - 1), j / n_c])
    idx = np.arange(len(ang) * (n_c + 1)).reshape(len(ang), n_c + 1)
    a_, b_, c_, d_ = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    F = np.concatenate([np.stack([a_, b_, c_], -1).reshape(-1, 3),
                        np.stack([a_, c_, d_], -1).reshape(-1, 3)])
    handle = Part(np.array(pts), F, np.array(uvs))
    return assemble([body, handle], 2, name, _atlas(rng, 2, 384))


def make_can_part(r, h) -> Part:
    side = np.c_[np.full(10, r), np.linspace(0.003, h - 0.003, 10)]
    prof = np.vstack([[0, 0], [r - 0.003, 0], side, [r - 0.003, h], [0, h]])
    return lathe(prof, 40)


def make_drill(rng, name) -> Mesh:
    """Power-drill-like: horizontal motor body, chuck, tilted grip, battery pack."""
    body = transform_part(make_can_part(0.03, 0.15), rot("y", np.pi / 2), (-0.02, 0, 0.16))
    chuck = transform_part(make_can_part(0.014, 0.04), rot("y", np.pi / 2), (0.13, 0, 0.16))
    grip = [transform_part(p, rot("y", 0.25), (0.0, 0, 0.085))
            for p in box_parts(0.035, 0.045, 0.12, 4)]
    battery = box_parts(0.09, 0.07, 0.035, 4)
    battery = [transform_part(p, np.eye(3), (-0.015, 0, 0.0175)) for p in battery]
    parts = [body, chuck] + grip + battery
    return assemble(parts, len(parts), name, _atlas(rng, len(parts), 256))


@dataclass(frozen=True)
class ObjectDef:
    obj_id: int
    name: str
    symmetric: bool


CATALOGUE = [
    ObjectDef(1, "cracker_box", False),
    ObjectDef(2, "sugar_box", False),
    ObjectDef(3, "tomato_soup_can", False),
    ObjectDef(4, "mustard_bottle", False),
    ObjectDef(5, "master_chef_can", False),
    ObjectDef(6, "power_drill", False),
    ObjectDef(7, "bowl", True),
    ObjectDef(8, "striped_cup", True),
    ObjectDef(9, "mug", False),
]


def make_object(obj_id: int, seed: int) -> Mesh:
    """Build catalogue object ``obj_id`` with textures drawn from ``seed``."""
    rng = np.random.default_rng([seed, obj_id])
    name = next((o.name for o in CATALOGUE if o.obj_id == obj_id), None)
    if name is None:
        raise InputError(f"object id {obj_id} is not in the synthetic catalogue; use one of "
                         f"{[o.obj_id for o in CATALOGUE]}")
    if obj_id == 1:
        return make_box(rng, name, 0.16, 0.06, 0.21)
    if obj_id == 2:
        return make_box(rng, name, 0.09, 0.04, 0.175)
    if obj_id == 3:
        return make_can(rng, name, 0.034, 0.10)
    if obj_id == 4:
        return make_bottle(rng, name)
    if obj_id == 5:
        return make_can(rng, name, 0.051, 0.14)
    if obj_id == 6:
        return make_drill(rng, name)
    if obj_id == 7:
        return make_bowl(rng, name)
    if obj_id == 8:
        return make_can(rng, name, 0.04, 0.09, symmetric=True)
    if obj_id == 9:
        return make_mug(rng, name)
    raise InputError(f"object id {obj_id} is not in the synthetic catalogue; use one of "
                     f"{[o.obj_id for o in CATALOGUE]}")


@dataclass(frozen=True)
class Catalogue:
    """The objects a world can hold: their ids, names and symmetry flags, and
    ``build(obj_id, texture_seed)`` -> the textured Mesh (metres, centred on its bounding box,
    z up). ``source``: "procedural" or the folder the scans came from."""
    objects: tuple[ObjectDef, ...]
    build: Callable[[int, int], Mesh]
    source: str = "procedural"

    def get(self, obj_id: int) -> ObjectDef:
        for o in self.objects:
            if o.obj_id == obj_id:
                return o
        raise InputError(f"object id {obj_id} is not in the catalogue ({self.source}); use one "
                         f"of {[o.obj_id for o in self.objects]}")

    def ids_of(self, names: list[str]) -> tuple[int, ...]:
        """The ids of ``names``, in that order (InputError naming the known ones)."""
        by_name = {o.name: o.obj_id for o in self.objects}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise InputError(f"objects {unknown} are not in the catalogue ({self.source}); "
                             f"known: {sorted(by_name)}")
        return tuple(by_name[n] for n in names)


PROCEDURAL = Catalogue(tuple(CATALOGUE), make_object)


def scanned_catalogue(objects_dir: str | Path) -> Catalogue:
    """A catalogue of scanned, textured objects (nol_ros.datasets.scanned: one subfolder per
    object with textured.obj), ids 1..N in the order of their folder names. Symmetry flags are
    False: a scan's print tells its turns apart (a symmetric scan is scored as the dataset's
    models_info says, which a lab can edit)."""
    meshes = load_textured_objects(objects_dir)
    defs = tuple(ObjectDef(i + 1, name, False) for i, name in enumerate(sorted(meshes)))
    by_id = {d.obj_id: meshes[d.name] for d in defs}
    return Catalogue(defs, lambda obj_id, seed: by_id[obj_id], str(Path(objects_dir)))
