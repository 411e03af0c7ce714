"""Generate the synthetic SMOT-like dataset: BOP scenes + models + bag + contact sheet.

    OUT/models/obj_%06d.ply            untextured meshes the pipeline receives (metres), the
                                       whole catalogue (9 procedural objects, or the scans of
                                       ``objects_dir``; each scene uses up to 4)
    OUT/models/models_info.json        BOP models_info (mm, symmetry flags, names)
    OUT/models_textured/obj_%06d.obj   ground-truth textured models (+ .mtl, .png)
    OUT/train/000001/                  training sequence (BOP scene, + scene_stamps.json)
    OUT/test/00000N/                   test sequences (other elevations, tables, rooms)
    OUT/bags/train_000001/             rosbag2 folder (train_000001.mcap + metadata.yaml) of the
                                       training sequence, Xtion topics, drifting odometry TF
    OUT/contact_sheet.png              frames with ground-truth masks, for a person to look at
    OUT/world.json                     preset, seed, objects, timings
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from nol_ros.camera import SMOT_XTION, Intrinsics
from nol_ros.datasets.bag import export_bag
from nol_ros.datasets.bop import BopSceneWriter, read_bop_scene, write_models_info
from nol_ros.datasets.synthetic.objects import PROCEDURAL, scanned_catalogue
from nol_ros.datasets.synthetic.sensor import SensorConfig, XtionSensor, specular_strength
from nol_ros.datasets.synthetic.world import World, build_world, circle_trajectory
from nol_ros.enums import WorldPreset
from nol_ros.errors import ConfigError, InputError
from nol_ros.io_utils import atomic_write_image, atomic_write_json
from nol_ros.mesh import models_info, save_mesh
from nol_ros.rasterizer import Scene, shade


@dataclass(frozen=True)
class Preset:
    """What to generate: the catalogue ids on the table (every sequence; with scanned objects
    the first four scans unless names are given to generate()), the training circle (frames
    at 30 Hz over arc_deg at 38-41 deg elevation) and test sequences (other table and room,
    elevation sweeping 8-42 deg)."""
    train_objects: tuple[int, ...] = (1, 3, 4, 6)
    train_frames: int = 30
    train_arc_deg: float = 120.0
    test_sequences: int = 1
    test_frames: int = 8
    test_arc_deg: float = 120.0
    write_bag: bool = True
    # the sensor model, with the real-sensor effects this preset turns on (sensor.py)
    sensor: SensorConfig = SensorConfig()

    def __post_init__(self):
        if not self.train_objects or len(set(self.train_objects)) != len(self.train_objects):
            raise ConfigError(f"Preset.train_objects {self.train_objects}: give distinct ids "
                              "from the catalogue")
        if self.train_frames < 1 or self.test_frames < 1 or self.test_sequences < 0:
            raise ConfigError(f"Preset frames ({self.train_frames}, {self.test_frames}) must be "
                              f">= 1 and test_sequences ({self.test_sequences}) >= 0")


PRESETS = {
    # seconds: for unit tests (a 120 deg arc at 4 deg per frame)
    WorldPreset.SMALL: Preset(train_frames=30, train_arc_deg=120.0, test_sequences=1,
                              test_frames=8),
    # the demo: a full circle at 3 deg per frame and one test sequence
    WorldPreset.DEMO: Preset(train_frames=120, train_arc_deg=360.0, test_sequences=1,
                             test_frames=40, test_arc_deg=360.0),
    # benchmarks: a full circle of 300 frames (1.2 deg per frame), three test sequences, with
    # the real-sensor effects on (the small/demo worlds, which the tests and the demo use, keep
    # them off: test_synthetic asserts exact 30 Hz stamps there)
    WorldPreset.FULL: Preset(train_frames=300, train_arc_deg=360.0, test_sequences=3,
                             test_frames=100, test_arc_deg=360.0,
                             sensor=SensorConfig(misregistration_px=(1.0, 0.0),
                                                 auto_exposure_jump_prob=0.02, edge_hole_px=1,
                                                 saturated_fraction=0.3, drop_frame_prob=0.01,
                                                 stamp_jitter_ms=1.0)),
}
COLORS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                   [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.uint8)


@dataclass
class FrameRender:
    """One rendered frame. rgb (H, W, 3) uint8 and depth (H, W) float32 m (0 = invalid) with
    the sensor's artefacts; raster: the perfect render (RasterResult); masks: per visible
    world object k (index into World.objects): (k, full mask, visible mask), (H, W) bool."""
    rgb: np.ndarray
    depth: np.ndarray
    raster: object
    masks: list[tuple[int, np.ndarray, np.ndarray]]


def _full_mask_roi(scene: Scene, k: int, mesh, T_world_object, intr: Intrinsics,
                   T_world_camera: np.ndarray, near: float) -> np.ndarray:
    """Unoccluded mask of mesh k, ray cast only inside the projected bounding box of its
    vertices (a pixel-aligned sub-window of ``intr``); (H, W) bool."""
    H, W = intr.height, intr.width
    T_co = np.linalg.inv(T_world_camera) @ T_world_object
    P = mesh.vertices @ T_co[:3, :3].T + T_co[:3, 3]
    if np.all(P[:, 2] <= near):
        return np.zeros((H, W), bool)
    if np.any(P[:, 2] <= near):  # straddles the near plane: no safe box, cast everything
        return scene.full_mask(k, intr, T_world_camera, near=near)
    uv, _ = intr.project(P)
    x0, y0 = np.floor(uv.min(0)).astype(int) - 2
    x1, y1 = np.ceil(uv.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
    out = np.zeros((H, W), bool)
    if x1 <= x0 or y1 <= y0:
        return out
    sub = intr.crop_resize(x0, y0, x1 - x0, y1 - y0, x1 - x0, y1 - y0)
    out[y0:y1, x0:x1] = scene.full_mask(k, sub, T_world_camera, near=near)
    return out


_RAYS: dict[Intrinsics, np.ndarray] = {}


def _pixel_rays(intr: Intrinsics) -> np.ndarray:
    """(H, W, 3) float64 camera-frame directions (z = 1) through the pixel centres."""
    if intr not in _RAYS:
        v, u = np.mgrid[0:intr.height, 0:intr.width].astype(np.float64)
        _RAYS.clear()
        _RAYS[intr] = np.stack([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy,
                                np.ones_like(u)], -1)
    return _RAYS[intr]


def render_frame(scene: Scene, meshes, world: World, intr: Intrinsics, T_world_camera,
                 sensor: XtionSensor) -> FrameRender:
    """Everything per frame (profile this): ray-cast render, textured Lambertian shading under
    the world's fixed ceiling light (so shading changes with the view), the sensor model
    (colour artefacts; depth quantisation, noise and dropouts at edges, dark pixels and
    specular highlights -- the objects are glossy, the room matte; highlights are not drawn in
    the colour image) and the objects' full and visible masks. ``scene`` holds ``meshes`` =
    world.meshes_and_poses() (objects first)."""
    near = 0.1
    res = scene.render(intr, T_world_camera, near=near, far=12.0)
    l_cam = T_world_camera[:3, :3].T @ world.light_dir_world
    col = shade(res, meshes, light_dir_cam=tuple(l_cam), ambient=0.55, diffuse=0.45)
    bright = col.mean(axis=2)
    # the household objects are glossy (printed cardboard, metal, plastic); the room is matte
    glossy = (res.mesh_id >= 0) & (res.mesh_id < len(world.objects))
    spec = np.where(glossy, specular_strength(res.normal_cam, _pixel_rays(intr), l_cam), 0.0)
    rgb = sensor.rgb(col)
    depth = sensor.depth(res.depth.astype(np.float64), bright, spec)
    masks = []
    for k, o in enumerate(world.objects):
        visib = res.mesh_id == k
        full = _full_mask_roi(scene, k, o.mesh, o.T_world_object, intr, T_world_camera, near)
        full |= visib  # identical rays; guards against float ties on silhouette pixels
        if full.any():
            masks.append((k, full, visib))
    return FrameRender(rgb, depth, res, masks)


def write_sequence(scene_dir: Path, world: World, poses: list[np.ndarray], intr: Intrinsics,
                   seed: int, t0_ns: int = 1_700_000_000_000_000_000, progress: bool = True,
                   sensor_cfg: SensorConfig | None = None) -> float:
    """Render and write one BOP scene (30 Hz RGB stamps from ``t0_ns``, depth 2-8 ms later);
    returns seconds per frame."""
    meshes, Ts = world.meshes_and_poses()
    scene = Scene(meshes, Ts)
    sensor = XtionSensor(sensor_cfg or SensorConfig(), np.random.default_rng([seed, 3]))
    t_start = time.perf_counter()
    with BopSceneWriter(scene_dir, intr) as w:
        it = tqdm(list(enumerate(poses)), desc=f"render {scene_dir.parent.name}/"
                  f"{scene_dir.name}", disable=not progress, leave=False)
        k = 0
        for i, T_wc in it:
            if i > 0 and sensor.drop_frame():  # lost by the driver: a gap in the stamps
                continue
            fr = render_frame(scene, meshes, world, intr, T_wc, sensor)
            T_cw = np.linalg.inv(T_wc)
            objs = [(world.objects[k].obj_id, T_cw @ world.objects[k].T_world_object, full, vis)
                    for k, full, vis in fr.masks]
            t_ns = t0_ns + i * 33_333_333 + sensor.jitter_ns()
            w.add_frame(k, fr.rgb, fr.depth, T_wc, objs, stamp_ns=t_ns,
                        depth_stamp_ns=t_ns + sensor.depth_delay_ns() + sensor.jitter_ns(),
                        depth_saturated=sensor.saturated_mask(fr.depth))
            k += 1
    return (time.perf_counter() - t_start) / max(1, len(poses))


def _tile(scene_dir: Path, gt: dict, i: int, label: str) -> np.ndarray:
    """Frame i of a BOP scene with the visible masks tinted and outlined per object, the
    object ids at the mask centres; (240, 320, 3) uint8 RGB."""
    img = cv2.imread(str(scene_dir / "rgb" / f"{i:06d}.png"))[..., ::-1].copy()
    over = img.copy()
    labels = []
    for k, a in enumerate(gt[str(i)]):
        m = cv2.imread(str(scene_dir / "mask_visib" / f"{i:06d}_{k:06d}.png"), 0) > 127
        if not m.any():
            continue
        c = tuple(int(x) for x in COLORS[(a["obj_id"] - 1) % len(COLORS)])
        over[m] = c
        cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        labels.append((cs, c, a["obj_id"], np.nonzero(m)))
    tile = cv2.addWeighted(img, 0.55, over, 0.45, 0)
    for cs, c, oid, (ys, xs) in labels:
        cv2.drawContours(tile, cs, -1, c, 2, cv2.LINE_AA)
        org = (int(xs.mean()) - 8, int(ys.mean()) + 8)
        cv2.putText(tile, str(oid), org, cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 4, cv2.LINE_AA)
        cv2.putText(tile, str(oid), org, cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2,
                    cv2.LINE_AA)
    return _caption(cv2.resize(tile, (320, 240), interpolation=cv2.INTER_AREA), label)


def _caption(tile: np.ndarray, label: str) -> np.ndarray:
    (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    tile[:th + 10, :tw + 10] = (tile[:th + 10, :tw + 10] * 0.3).astype(np.uint8)
    cv2.putText(tile, label, (5, th + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1,
                cv2.LINE_AA)
    return tile


def _depth_tile(scene_dir: Path, i: int, label: str) -> np.ndarray:
    """Depth of frame i (colour map 0.4-3.5 m, invalid pixels black); (240, 320, 3) uint8."""
    d = cv2.imread(str(scene_dir / "depth" / f"{i:06d}.png"), cv2.IMREAD_UNCHANGED)
    z = d.astype(np.float32) * 1e-3
    x = np.clip((z - 0.4) / 3.1, 0, 1)
    col = cv2.applyColorMap((255 * (1 - x)).astype(np.uint8), cv2.COLORMAP_TURBO)[..., ::-1]
    col = np.where((d == 0)[..., None], 0, col).astype(np.uint8)
    return _caption(cv2.resize(col, (320, 240), interpolation=cv2.INTER_NEAREST), label)


def contact_sheet(scene_dirs: list[Path], out_png: Path, per_row: int = 3) -> None:
    """A grid for a person to look at: two rows of training frames (first scene) and one row
    per further scene, visible GT masks tinted + outlined per object with the object ids, and
    one row of the training frames' sensor depth (black = invalid). Written as PNG."""
    rows = []
    depth_row = []
    for s_idx, d in enumerate(scene_dirs):
        d = Path(d)
        gt = json.loads((d / "scene_gt.json").read_text())
        ids = sorted(int(k) for k in gt)
        n = per_row * (2 if s_idx == 0 else 1)
        pick = [ids[int(round(j))] for j in np.linspace(0, len(ids) - 1, n)]
        name = f"{d.parent.name}/{d.name}"
        tiles = [_tile(d, gt, i, f"{name} frame {i}") for i in pick]
        rows += [np.hstack(tiles[r * per_row:(r + 1) * per_row]) for r in range(n // per_row)]
        if s_idx == 0:
            depth_row = [_depth_tile(d, i, f"{name} depth {i}") for i in pick[:per_row]]
    rows.append(np.hstack(depth_row))
    atomic_write_image(out_png, np.vstack(rows))


def generate(out: str | Path, preset: str | Preset = WorldPreset.SMALL, seed: int = 0,
             progress: bool = True, intr: Intrinsics = SMOT_XTION,
             objects_dir: str | Path | None = None,
             object_names: list[str] | None = None) -> dict:
    """Write the whole dataset for ``preset`` (a name in PRESETS or a Preset); returns the
    summary (also OUT/world.json). Same seed -> identical files. ``objects_dir``: scanned,
    textured objects (one subfolder per object with textured.obj, the layout of
    ../shared/realdata/ycb_real_textures) instead of the procedural catalogue; on the table
    ``object_names`` (default: the first four)."""
    if isinstance(preset, Preset):
        p, preset = preset, "custom"
    else:
        preset = WorldPreset.parse(preset, "preset", InputError)
        p = PRESETS[preset]
    cat = PROCEDURAL if objects_dir is None else scanned_catalogue(objects_dir)
    if object_names:
        p = replace(p, train_objects=cat.ids_of(list(object_names)))
    elif objects_dir is not None:
        p = replace(p, train_objects=tuple(o.obj_id for o in cat.objects[:4]))
    for obj_id in p.train_objects:
        cat.get(obj_id)  # InputError naming the catalogue's ids
    out = Path(out)
    t0 = time.perf_counter()
    # models: the whole catalogue (BOP style; the scenes use a subset), untextured for the
    # pipeline, textured as ground truth; models_info flags the symmetric ones
    info = {}
    for od in cat.objects:
        mesh = cat.build(od.obj_id, seed)
        save_mesh(mesh.untextured(), out / "models" / f"obj_{od.obj_id:06d}.ply")
        save_mesh(mesh, out / "models_textured" / f"obj_{od.obj_id:06d}.obj")
        info[od.obj_id] = models_info(mesh, od.symmetric) | {"name": od.name}
    write_models_info(out / "models" / "models_info.json", info)
    train_world = build_world(seed, list(p.train_objects), texture_seed=seed, catalogue=cat)
    summary: dict = {"preset": preset, "preset_params": asdict(p), "seed": seed,
                     "objects": {o.obj_id: o.name for o in train_world.objects},
                     "catalogue": {od.obj_id: od.name for od in cat.objects},
                     "catalogue_source": cat.source,
                     "symmetric": [od.obj_id for od in cat.objects if od.symmetric],
                     "sequences": {}}
    poses = circle_trajectory(train_world, p.train_frames, seed, (38.0, 41.0), p.train_arc_deg)
    spf = write_sequence(out / "train" / "000001", train_world, poses, intr, seed,
                         progress=progress, sensor_cfg=p.sensor)
    summary["sequences"]["train/000001"] = {"frames": len(poses), "s_per_frame": spf,
                                            "elevation_deg": [38.0, 41.0]}
    for k in range(p.test_sequences):
        tseed = seed * 1000 + 101 + k
        w = build_world(tseed, list(p.train_objects), texture_seed=seed, catalogue=cat)
        tp = circle_trajectory(w, p.test_frames, tseed, (8.0, 42.0), p.test_arc_deg,
                               elev_mode="sweep")
        spf = write_sequence(out / "test" / f"{k + 1:06d}", w, tp, intr, tseed,
                             progress=progress, sensor_cfg=p.sensor)
        summary["sequences"][f"test/{k + 1:06d}"] = {"frames": len(tp), "s_per_frame": spf,
                                                     "elevation_deg": [8.0, 42.0]}
    if p.write_bag:
        bag = out / "bags" / "train_000001"
        if bag.exists():
            shutil.rmtree(bag)
        export_bag(read_bop_scene(out / "train" / "000001"), bag, tf_mode="odom", seed=seed)
        summary["bag"] = str(bag)
    contact_sheet([out / "train" / "000001"] + [out / "test" / f"{k + 1:06d}"
                                                for k in range(p.test_sequences)],
                  out / "contact_sheet.png")
    summary["total_s"] = time.perf_counter() - t0
    atomic_write_json(out / "world.json", summary)
    return summary
