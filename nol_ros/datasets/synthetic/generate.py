"""Generate the synthetic SMOT-like dataset: BOP scenes + models + bag + contact sheet.

    OUT/models/obj_%06d.ply            untextured meshes the pipeline receives (metres)
    OUT/models/models_info.json        BOP models_info (mm, symmetry flags)
    OUT/models_textured/obj_%06d.obj   ground-truth textured models (+ .mtl, .png)
    OUT/train/000001/                  training sequence (BOP scene, + scene_stamps.json)
    OUT/test/00000N/                   test sequences (other elevations, tables, rooms)
    OUT/bags/train_000001/             rosbag2 (mcap) of the training sequence, Xtion topics
    OUT/contact_sheet.png              frames with ground-truth masks, for a person to look at
    OUT/world.json                     preset, seed, objects, timings
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from nol_ros.camera import SMOT_XTION, Intrinsics
from nol_ros.datasets.bop import BopSceneWriter, write_models_info
from nol_ros.datasets.synthetic.sensor import SensorConfig, XtionSensor
from nol_ros.datasets.synthetic.world import World, build_world, circle_trajectory
from nol_ros.io_utils import atomic_write_image, atomic_write_json
from nol_ros.mesh import models_info, save_mesh
from nol_ros.rasterizer import Scene, shade


@dataclass(frozen=True)
class Preset:
    train_objects: tuple[int, ...] = (1, 3, 4, 6)
    train_frames: int = 30
    train_arc_deg: float = 120.0
    test_sequences: int = 1
    test_frames: int = 8
    test_arc_deg: float = 120.0
    write_bag: bool = True


PRESETS = {
    # seconds: for unit tests (a 120 deg arc at 4 deg per frame)
    "small": Preset(train_frames=30, train_arc_deg=120.0, test_sequences=1, test_frames=8),
    # the demo: a full circle at 3 deg per frame and one test sequence
    "demo": Preset(train_frames=120, train_arc_deg=360.0, test_sequences=1, test_frames=40,
                   test_arc_deg=360.0),
    # benchmarks: a full circle of 300 frames (1.2 deg per frame), three test sequences
    "full": Preset(train_frames=300, train_arc_deg=360.0, test_sequences=3, test_frames=100,
                   test_arc_deg=360.0),
}
COLORS = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48],
                   [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.uint8)


def render_frame(scene: Scene, meshes, world: World, intr: Intrinsics, T_world_camera,
                 sensor: XtionSensor):
    """One frame: (rgb uint8, depth float32 m with sensor artefacts, raster result, perfect
    depth). Lighting is fixed in the world (a ceiling light), so shading changes with view."""
    res = scene.render(intr, T_world_camera, near=0.1, far=12.0)
    l_cam = T_world_camera[:3, :3].T @ world.light_dir_world
    col = shade(res, meshes, light_dir_cam=tuple(l_cam), ambient=0.55, diffuse=0.45)
    bright = col.mean(axis=2)
    rgb = sensor.rgb(col)
    depth = sensor.depth(res.depth.astype(np.float64), bright)
    return rgb, depth, res


def write_sequence(scene_dir: Path, world: World, poses: list[np.ndarray], intr: Intrinsics,
                   seed: int, t0_ns: int = 1_700_000_000_000_000_000, progress: bool = True
                   ) -> float:
    """Render and write one BOP scene; returns seconds per frame."""
    from tqdm import tqdm

    meshes, Ts = world.meshes_and_poses()
    scene = Scene(meshes, Ts)
    sensor = XtionSensor(SensorConfig(), np.random.default_rng([seed, 3]))
    n_obj = len(world.objects)
    t_start = time.perf_counter()
    with BopSceneWriter(scene_dir, intr) as w:
        it = tqdm(list(enumerate(poses)), desc=f"render {scene_dir.name}", disable=not progress,
                  leave=False)
        for i, T_wc in it:
            rgb, depth, res = render_frame(scene, meshes, world, intr, T_wc, sensor)
            objs = []
            T_cw = np.linalg.inv(T_wc)
            for k in range(n_obj):
                full = scene.full_mask(k, intr, T_wc)
                if not full.any():
                    continue
                objs.append((world.objects[k].obj_id, T_cw @ world.objects[k].T_world_object,
                             full, res.mesh_id == k))
            t_ns = t0_ns + i * 33_333_333
            w.add_frame(i, rgb, depth, T_wc, objs, stamp_ns=t_ns,
                        depth_stamp_ns=t_ns + sensor.depth_delay_ns())
    return (time.perf_counter() - t_start) / max(1, len(poses))


def contact_sheet(scene_dir: Path, out_png: Path, n: int = 6) -> None:
    """A 3x2 grid of frames with the ground-truth visible masks overlaid per object."""
    import json

    import cv2

    gt = json.loads((scene_dir / "scene_gt.json").read_text())
    ids = sorted(int(k) for k in gt)
    pick = [ids[int(round(j))] for j in np.linspace(0, len(ids) - 1, n)]
    tiles = []
    for i in pick:
        img = cv2.imread(str(scene_dir / "rgb" / f"{i:06d}.png"))[..., ::-1].copy()
        over = img.copy()
        for k, a in enumerate(gt[str(i)]):
            m = cv2.imread(str(scene_dir / "mask_visib" / f"{i:06d}_{k:06d}.png"), 0) > 127
            c = COLORS[(a["obj_id"] - 1) % len(COLORS)]
            over[m] = c
            if m.any():
                ys, xs = np.nonzero(m)
                cv2.putText(over, str(a["obj_id"]), (int(xs.mean()), int(ys.mean())),
                            cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255), 2, cv2.LINE_AA)
        tile = cv2.addWeighted(img, 0.5, over, 0.5, 0)
        cv2.putText(tile, f"frame {i}", (10, 25), cv2.FONT_HERSHEY_SIMPLEX, 0.8, (255, 255, 255),
                    2, cv2.LINE_AA)
        tiles.append(cv2.resize(tile, (320, 240), interpolation=cv2.INTER_AREA))
    rows = [np.hstack(tiles[r * 3:(r + 1) * 3]) for r in range(len(tiles) // 3)]
    atomic_write_image(out_png, np.vstack(rows))


def generate(out: str | Path, preset: str = "small", seed: int = 0, progress: bool = True,
             intr: Intrinsics = SMOT_XTION) -> dict:
    """Write the whole dataset; returns the summary (also OUT/world.json)."""
    from nol_ros.errors import InputError

    if preset not in PRESETS:
        raise InputError(f"preset '{preset}' unknown; use one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    out = Path(out)
    t0 = time.perf_counter()
    # models: every catalogue object used, untextured for the pipeline, textured as GT
    train_world = build_world(seed, list(p.train_objects), texture_seed=seed)
    info = {}
    for o in train_world.objects:
        save_mesh(o.mesh.untextured(), out / "models" / f"obj_{o.obj_id:06d}.ply")
        save_mesh(o.mesh, out / "models_textured" / f"obj_{o.obj_id:06d}.obj")
        info[o.obj_id] = models_info(o.mesh, o.symmetric) | {"name": o.name}
    write_models_info(out / "models" / "models_info.json", info)
    summary: dict = {"preset": preset, "preset_params": asdict(p), "seed": seed,
                     "objects": {o.obj_id: o.name for o in train_world.objects},
                     "symmetric": [o.obj_id for o in train_world.objects if o.symmetric],
                     "sequences": {}}
    poses = circle_trajectory(train_world, p.train_frames, seed, (38.0, 41.0), p.train_arc_deg)
    spf = write_sequence(out / "train" / "000001", train_world, poses, intr, seed,
                         progress=progress)
    summary["sequences"]["train/000001"] = {"frames": len(poses), "s_per_frame": spf,
                                            "elevation_deg": [38.0, 41.0]}
    for k in range(p.test_sequences):
        tseed = seed * 1000 + 101 + k
        w = build_world(tseed, list(p.train_objects), texture_seed=seed)
        tp = circle_trajectory(w, p.test_frames, tseed, (8.0, 42.0), p.test_arc_deg,
                               elev_mode="sweep")
        spf = write_sequence(out / "test" / f"{k + 1:06d}", w, tp, intr, tseed,
                             progress=progress)
        summary["sequences"][f"test/{k + 1:06d}"] = {"frames": len(tp), "s_per_frame": spf,
                                                     "elevation_deg": [8.0, 42.0]}
    if p.write_bag:
        from nol_ros.datasets.bag import export_bag
        from nol_ros.datasets.bop import read_bop_scene

        bag = out / "bags" / "train_000001"
        if bag.exists():
            import shutil

            shutil.rmtree(bag)
        export_bag(read_bop_scene(out / "train" / "000001"), bag, tf_mode="odom", seed=seed)
        summary["bag"] = str(bag)
    contact_sheet(out / "train" / "000001", out / "contact_sheet.png")
    summary["total_s"] = time.perf_counter() - t0
    atomic_write_json(out / "world.json", summary)
    return summary
