"""A SMOT-like world: a textured table with household objects and clutter in a room, and the
camera trajectories of a robot circling it (training: elevation 38-41 deg; test: 8-42 deg)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.ndimage import gaussian_filter1d

from nol_ros.datasets.synthetic import textures as tx
from nol_ros.datasets.synthetic.objects import PROCEDURAL, Catalogue, assemble, box_parts
from nol_ros.geometry import look_at, make_T, so3_exp
from nol_ros.mesh import Mesh


@dataclass
class WorldObject:
    obj_id: int
    name: str
    mesh: Mesh                 # textured ground-truth model (object frame)
    symmetric: bool
    T_world_object: np.ndarray


@dataclass
class World:
    objects: list[WorldObject]
    static: list[tuple[Mesh, np.ndarray]] = field(default_factory=list)
    table_top_z: float = 0.7
    table_centre: np.ndarray = field(default_factory=lambda: np.zeros(2))
    light_dir_world: np.ndarray = field(default_factory=lambda: np.array([0.3, 0.2, 1.0]))

    def meshes_and_poses(self) -> tuple[list[Mesh], list[np.ndarray]]:
        """Objects first (index i = objects[i]), then the static scene."""
        ms = [o.mesh for o in self.objects] + [m for m, _ in self.static]
        Ts = [o.T_world_object for o in self.objects] + [T for _, T in self.static]
        return ms, Ts


def _quad_mesh(p0, du, dv, tex, uv_repeat=(1.0, 1.0), n=8, name="") -> Mesh:
    s, t = np.meshgrid(np.linspace(0, 1, n + 1), np.linspace(0, 1, n + 1))
    V = np.asarray(p0) + s.reshape(-1, 1) * np.asarray(du) + t.reshape(-1, 1) * np.asarray(dv)
    UV = np.stack([s.reshape(-1) * uv_repeat[0], t.reshape(-1) * uv_repeat[1]], 1)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    a, b, c, d = idx[:-1, :-1], idx[:-1, 1:], idx[1:, 1:], idx[1:, :-1]
    F = np.concatenate([np.stack([a, b, c], -1).reshape(-1, 3),
                        np.stack([a, c, d], -1).reshape(-1, 3)])
    return Mesh(V, F, uvs=UV.astype(np.float32), texture=tex, name=name)


def build_world(seed: int, object_ids: list[int], n_clutter: int = 4,
                texture_seed: int | None = None, catalogue: Catalogue = PROCEDURAL) -> World:
    """Objects ``object_ids`` (ids of ``catalogue``: the procedural objects, or scans from a
    folder, objects.scanned_catalogue) stand on a table in a room with clutter.
    ``seed`` draws the placement and room textures; object textures come from ``texture_seed``
    (the same objects keep their look across sequences). Every texture has its own random
    stream, so changing a texture generator does not move the objects or the camera."""
    rng = np.random.default_rng([seed, 7])

    def trng(k: int) -> np.random.Generator:
        return np.random.default_rng([seed, 7, 1000 + k])
    tseed = seed if texture_seed is None else texture_seed
    # a low table, as in SMOT: at 38-41 deg elevation from ~0.9 m the robot's head camera is
    # then at 1.15-1.4 m
    top = float(rng.uniform(0.42, 0.50))
    half = float(rng.uniform(0.40, 0.5))
    static: list[tuple[Mesh, np.ndarray]] = []
    # table top (textured box) and legs
    wood = tx.wood_texture(trng(0), 1024, 1024)
    top_parts = box_parts(2 * half, 2 * half, 0.03, 10)
    table = assemble(top_parts, 6, "table", np.tile(wood[:384, :384], (3, 3, 1))[:1152, :1152])
    static.append((table, make_T(np.eye(3), [0, 0, top - 0.015])))
    leg_tex = tx.wood_texture(trng(1), 256, 256)
    for sx in (-1, 1):
        for sy in (-1, 1):
            leg = assemble(box_parts(0.04, 0.04, top - 0.03, 2), 6, "leg",
                           np.tile(leg_tex, (3, 3, 1)))
            static.append((leg, make_T(np.eye(3), [sx * (half - 0.04), sy * (half - 0.04),
                                                   (top - 0.03) / 2])))
    # floor and walls
    floor = _quad_mesh([-4, -4, 0], [8, 0, 0], [0, 8, 0], tx.floor_texture(trng(2)), (4, 4),
                       name="floor")
    static.append((floor, np.eye(4)))
    d = 3.0
    for k in range(4):
        R = so3_exp([0, 0, k * np.pi / 2])
        p0 = R @ np.array([-d, d, 0.0])
        du = R @ np.array([2 * d, 0, 0.0])
        static.append((_quad_mesh(p0, du, [0, 0, 2.6], tx.wall_texture(trng(3 + k)), (2, 1),
                                  name="wall"), np.eye(4)))
    # clutter: boxes on the floor around the table (lower than the table top: anything that
    # crosses the table plane next to the table is taken for an object standing on it by the
    # self-annotation's segmentation) and a couple of small items on the table
    for c in range(n_clutter):
        sz = rng.uniform([0.15, 0.15, 0.15], [0.5, 0.5, top - 0.05])
        m = assemble(box_parts(*sz, 3), 6, "clutter",
                     np.tile(tx.poster_texture(trng(10 + c), 384, 384), (3, 3, 1)))
        a = rng.uniform(0, 2 * np.pi)
        r = rng.uniform(1.3, 2.4)
        static.append((m, make_T(so3_exp([0, 0, rng.uniform(0, np.pi)]),
                                 [r * np.cos(a), r * np.sin(a), sz[2] / 2])))
    # place the objects without overlap; mutual occlusion comes from neighbours
    objs: list[WorldObject] = []
    placed: list[tuple[np.ndarray, float]] = []
    distractors = []
    for j in range(2):
        box = box_parts(*rng.uniform([0.04, 0.04, 0.03], [0.08, 0.08, 0.07]), 2)
        tex = np.tile(tx.label_texture(trng(30 + j), 256, 256), (3, 3, 1))
        distractors.append(("distractor", assemble(box, 6, "distractor", tex)))
    items = [(oid, catalogue.build(oid, tseed)) for oid in object_ids] + distractors
    for key, mesh in items:
        foot = 0.5 * float(np.linalg.norm(mesh.extent[:2]))
        for _attempt in range(500):
            p = rng.uniform(-half + 0.08 + foot, half - 0.08 - foot, 2) * 0.75
            if all(np.linalg.norm(p - q) > foot + fq + 0.015 for q, fq in placed):
                break
        placed.append((p, foot))
        T = make_T(so3_exp([0, 0, rng.uniform(0, 2 * np.pi)]),
                   [p[0], p[1], top + mesh.extent[2] / 2 + 1e-4])
        if key == "distractor":
            static.append((mesh, T))
        else:
            od = catalogue.get(key)
            objs.append(WorldObject(key, od.name, mesh, od.symmetric, T))
    light = np.array([rng.uniform(-0.5, 0.5), rng.uniform(-0.5, 0.5), 1.0])
    return World(objs, static, top, np.zeros(2), light / np.linalg.norm(light))


def smooth_noise(rng: np.random.Generator, n: int, std: float, frames: float = 4.0
                 ) -> np.ndarray:
    """(n,) band-limited noise of standard deviation std: white noise through a Gaussian of
    ``frames`` frames (at 30 Hz the default keeps it below ~1.5 Hz). A camera on a robot or in
    a hand sways; it does not jump independently every frame (white noise of 1 cm per frame
    would be accelerations of ~20 m/s^2)."""
    pad = int(4 * frames + 0.5)   # gaussian_filter1d's default reach
    x = gaussian_filter1d(rng.normal(0.0, 1.0, n + 2 * pad), frames)[pad:pad + n]
    k = np.exp(-0.5 * (np.arange(-pad, pad + 1) / frames) ** 2)
    return std * x / float(np.linalg.norm(k / k.sum()))   # the filter's gain on unit noise


def circle_trajectory(world: World, n_frames: int, seed: int, elev_deg: tuple[float, float],
                      arc_deg: float = 360.0, radius: tuple[float, float] = (0.82, 0.95),
                      elev_mode: str = "uniform", start_deg: float | None = None
                      ) -> list[np.ndarray]:
    """T_world_camera (4, 4) per frame of a robot circling the table at 30 Hz, with speed,
    distance and gaze sway (band-limited, see :func:`smooth_noise`); radius: horizontal
    distance range (m) to the table centre. elev_mode: 'uniform' (a random elevation within
    the range, slow drift) or 'sweep' (the elevation sweeps the range back and forth, for test
    sequences)."""
    rng = np.random.default_rng([seed, 11])
    target = np.array([*world.table_centre, world.table_top_z + 0.08])
    R = float(rng.uniform(*radius))
    a0 = np.radians(rng.uniform(0, 360) if start_deg is None else start_deg)
    steps = 1.0 + 0.2 * np.sin(np.linspace(0, 6, n_frames) + rng.uniform(0, 6)) \
        + smooth_noise(rng, n_frames, 0.05)
    ang = a0 + np.radians(arc_deg) * np.cumsum(steps) / np.sum(steps)
    e_lo, e_hi = elev_deg
    if elev_mode == "sweep":
        el = e_lo + (e_hi - e_lo) * 0.5 * (1 - np.cos(np.linspace(0, 2 * np.pi, n_frames)))
    else:
        e0 = rng.uniform(e_lo, e_hi)
        el = np.clip(e0 + 0.5 * (e_hi - e_lo) * np.sin(np.linspace(0, 3, n_frames)), e_lo, e_hi)
    r = R + smooth_noise(rng, n_frames, 0.01)
    gaze = np.stack([smooth_noise(rng, n_frames, 0.01) for _ in range(3)], axis=1)
    poses = []
    for a, e, rk, g in zip(ang, el, r, gaze):
        eye = target + np.array([rk * np.cos(a), rk * np.sin(a), rk * np.tan(np.radians(e))])
        poses.append(look_at(eye, target + g))
    return poses


def elevation_deg(world: World, T_world_camera: np.ndarray) -> float:
    """Elevation of the camera above the table-top target, degrees."""
    target = np.array([*world.table_centre, world.table_top_z + 0.08])
    v = T_world_camera[:3, 3] - target
    return float(np.degrees(np.arctan2(v[2], np.linalg.norm(v[:2]))))
