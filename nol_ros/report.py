"""The demo's report: ``OUT/index.html`` + PNGs, viewable from disk without a server.

:func:`write_report` takes the figures the demo measured (a plain dict, also written as
``OUT/results.json``) and the artefacts on disk (workspaces, the synthetic ground truth) and
draws: the camera trajectory against ground truth, the reconstructed scene, each object's
selected source views with their masks, NOL renders next to ground truth, the pose-noise curve,
detections and poses on test images, and the metrics tables. Every figure is a separate PNG
referenced by a relative path; nothing is fetched from the network.

``results`` keys used (all optional except ``objects``):
    title, preset, renderer, times {stage: s},
    objects {name: {obj_id, workspace, ate_cm, t_err_mm, r_err_deg, views, coverage,
             psnr, ssim, render_rows: [[(label, image (H, W, 3) uint8), ...], ...]}},
    trajectory {est: [(4, 4)], gt: [(4, 4)]}, scene_mesh (path), T_world_cameras [(4, 4)],
    noise_curve {labels: [...], series: {name: [psnr, ...]}},
    recognition {map50, per_object {name: {ap50, add_rgb, add_icp, n}}, frames,
                 overlays: [(label, image uint8)]},
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import cv2
import numpy as np

from nol_ros.camera import SMOT_XTION
from nol_ros.geometry import look_at
from nol_ros.io_utils import atomic_write_image, atomic_write_text, atomic_write_with
from nol_ros.mesh import load_mesh
from nol_ros.metrics import ate_rmse
from nol_ros.rasterizer import Scene, shade
from nol_ros.recognition.poses import bbox_centre
from nol_ros.workspace import ObjectFiles


def _plt():
    # lazy: matplotlib (~1 s) to import, loaded only when this runs
    import matplotlib

    matplotlib.use("Agg")
    # lazy: matplotlib (~1 s) to import, loaded only when this runs
    import matplotlib.pyplot as plt

    return plt


def _savefig(fig, path: Path) -> str:
    atomic_write_with(path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    _plt().close(fig)
    return path.name


def trajectory_png(est: list, gt: list | None, path: Path) -> tuple[str, float | None]:
    """Top view of the self-annotated camera centres (aligned to ground truth when given)."""
    plt = _plt()
    P = np.array([np.asarray(T)[:3, 3] for T in est])
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ate = None
    if gt is not None and len(gt) == len(est):
        ate, A = ate_rmse([np.asarray(T) for T in est], [np.asarray(T) for T in gt])
        Pa = P @ A[:3, :3].T + A[:3, 3]
        G = np.array([np.asarray(T)[:3, 3] for T in gt])
        ax.plot(G[:, 0], G[:, 1], "k-", lw=4, alpha=0.3, label="ground truth")
        ax.plot(Pa[:, 0], Pa[:, 1], "b-", lw=1.2, label="self-annotated (aligned)")
        ax.set_title(f"camera trajectory: ATE {ate * 100:.2f} cm")
    else:
        ax.plot(P[:, 0], P[:, 1], "b-", lw=1.2, label="self-annotated")
        ax.set_title("camera trajectory")
    ax.set_aspect("equal")
    ax.set_xlabel("x (m)")
    ax.set_ylabel("y (m)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return _savefig(fig, path), ate


def scene_png(mesh_path: str | Path, T_world_cameras: list, path: Path) -> str:
    """The reconstructed scene mesh (vertex colours) seen from two of the robot's cameras and
    from above."""
    mesh = load_mesh(mesh_path, units="m")
    sc = Scene([mesh], [np.eye(4)])
    intr = SMOT_XTION.scaled(0.5)
    views = [np.asarray(T_world_cameras[0]), np.asarray(T_world_cameras[len(T_world_cameras) // 2])]
    c = mesh.vertices.mean(0)
    views.append(look_at(c + np.array([0.05, -0.6, 1.4]), c))
    tiles = []
    for T in views:
        r = sc.render(intr, T, near=0.05, far=8.0)
        col = shade(r, [mesh], light_dir_cam=(0.0, 0.0, -1.0), ambient=0.6, diffuse=0.4)
        tiles.append((np.clip(col, 0, 1) * 255).astype(np.uint8))
    img = np.hstack(tiles)
    atomic_write_image(path, img)
    return path.name


def views_png(object_dir: str | Path, path: Path, max_views: int = 8) -> str:
    """The object's selected source crops with their masks (outside the mask darkened)."""
    d = ObjectFiles(Path(object_dir))
    views = json.loads(d.views_json.read_text())["views"][:max_views]
    tiles = []
    for v in views:
        rgb = cv2.imread(str(d.view(v["frame"], "rgb")))[..., ::-1]
        m = cv2.imread(str(d.view(v["frame"], "mask")), 0) > 127
        t = rgb.copy()
        t[~m] = (t[~m] * 0.3).astype(np.uint8)
        cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(t, cs, -1, (255, 230, 0), 1, cv2.LINE_AA)
        t = cv2.resize(t, (160, 160), interpolation=cv2.INTER_AREA)
        cv2.putText(t, f"frame {v['frame']}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4,
                    (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(t)
    atomic_write_image(path, np.hstack(tiles))
    return path.name


def labelled_grid(rows: list[list[tuple[str, np.ndarray]]], path: Path, tile: int = 160) -> str:
    """Rows of labelled tiles (each image (H, W, 3) uint8 or float [0, 1]) as one PNG."""
    out_rows = []
    for row in rows:
        tiles = []
        for label, img in row:
            a = np.asarray(img)
            if a.dtype != np.uint8:
                a = (np.clip(a, 0, 1) * 255).astype(np.uint8)
            a = cv2.resize(a, (tile, tile), interpolation=cv2.INTER_AREA)
            cv2.rectangle(a, (0, 0), (tile - 1, 15), (0, 0, 0), -1)
            cv2.putText(a, label, (3, 11), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1,
                        cv2.LINE_AA)
            tiles.append(a)
        out_rows.append(np.hstack(tiles))
    w = max(r.shape[1] for r in out_rows)
    out_rows = [np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0))) for r in out_rows]
    atomic_write_image(path, np.vstack(out_rows))
    return path.name


def noise_curve_png(curve: dict, path: Path) -> str:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    x = range(len(curve["labels"]))
    for name, ys in curve["series"].items():
        ax.plot(x, ys, "-" if "refined" in name else "--", marker="o", label=name)
    ax.set_xticks(list(x), curve["labels"])
    ax.set_xlabel("source pose error (translation, rotation)")
    ax.set_ylabel("masked PSNR (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(curve.get("title", "rendering quality vs source pose error"))
    fig.tight_layout()
    return _savefig(fig, path)


def draw_recognitions(rgb: np.ndarray, recs: list, intr, meshes: dict, gt: dict | None = None
                      ) -> np.ndarray:
    """Boxes, names and scores of detections, the posed mesh's projected vertices (green) and
    axes, "turned by print" where the recogniser turned the pose by the learnt appearance, and
    ground-truth boxes (white, dashed look) on a copy of ``rgb`` (H, W, 3) uint8.
    recs: objects with obj_id, name, score, box_xywh, T_camera_object (and optionally turned);
    meshes: obj_id -> Mesh;
    gt: obj_id -> (x, y, w, h) ground-truth boxes."""
    img = rgb.copy()
    for x, y, w, h in (gt or {}).values():
        for i in range(0, int(w), 8):
            cv2.line(img, (int(x + i), int(y)), (int(x + min(i + 4, w)), int(y)), (255, 255, 255))
            cv2.line(img, (int(x + i), int(y + h)), (int(x + min(i + 4, w)), int(y + h)),
                     (255, 255, 255))
        for i in range(0, int(h), 8):
            cv2.line(img, (int(x), int(y + i)), (int(x), int(y + min(i + 4, h))), (255, 255, 255))
            cv2.line(img, (int(x + w), int(y + i)), (int(x + w), int(y + min(i + 4, h))),
                     (255, 255, 255))
    for r in recs:
        x, y, w, h = (int(round(v)) for v in r.box_xywh)
        col = (255, 80, 40)
        cv2.rectangle(img, (x, y), (x + w, y + h), col, 2)
        turned = " turned by print" if getattr(r, "turned", False) else ""
        cv2.putText(img, f"{r.name} {r.score:.2f}{turned}", (x, max(12, y - 4)),
                    cv2.FONT_HERSHEY_SIMPLEX, 0.45, col, 1, cv2.LINE_AA)
        if r.T_camera_object is not None and r.obj_id in meshes:
            T = np.asarray(r.T_camera_object)
            V = meshes[r.obj_id].vertices[::max(1, len(meshes[r.obj_id].vertices) // 400)]
            P = V @ T[:3, :3].T + T[:3, 3]
            uv, z = intr.project(P)
            ok = (z > 0) & np.all(np.isfinite(uv), 1)
            for u, v in uv[ok].astype(int):
                if 0 <= u < img.shape[1] and 0 <= v < img.shape[0]:
                    cv2.circle(img, (int(u), int(v)), 1, (40, 255, 40), -1)
            # the model's axes from its centre (x red, y green, z blue): a turn the outline
            # cannot show (a can about its axis) shows here
            Vall = meshes[r.obj_id].vertices
            c = bbox_centre(Vall)
            L = 0.3 * float(np.linalg.norm(np.ptp(Vall, 0)))
            ends = np.vstack([c, c + L * np.eye(3)]) @ T[:3, :3].T + T[:3, 3]
            uv, z = intr.project(ends)
            if np.all(z > 0) and np.all(np.isfinite(uv)):
                o = tuple(int(v) for v in uv[0])
                for k, axis_col in enumerate(((255, 40, 40), (40, 220, 40), (60, 90, 255))):
                    cv2.line(img, o, tuple(int(v) for v in uv[k + 1]), axis_col, 2, cv2.LINE_AA)
    return img


def _table(header: list[str], rows: list[list]) -> str:
    h = "".join(f"<th>{html.escape(str(c))}</th>" for c in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<table><thead><tr>{h}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else (f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}")
    return str(v)


_CSS = """body{font-family:sans-serif;margin:24px;max-width:1400px;color:#222}
h1{margin-bottom:4px} h2{margin-top:28px;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:8px 0} td,th{border:1px solid #bbb;padding:3px 8px;
text-align:right} th{background:#eee} img{max-width:100%;border:1px solid #ddd;margin:4px 0}
.note{color:#555;font-size:90%}"""


def write_report(out_dir: str | Path, results: dict) -> Path:
    """Draw every figure the results allow and write OUT/index.html; returns its path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    parts = [f"<h1>{html.escape(results.get('title', 'nol_ros report'))}</h1>"]
    parts.append(f"<p class='note'>preset {html.escape(str(results.get('preset', '')))}; "
                 f"renderer {html.escape(str(results.get('renderer', '')))}</p>")
    objs = results.get("objects", {})
    # summary
    rec = results.get("recognition", {})
    rows = []
    for name, o in objs.items():
        po = rec.get("per_object", {}).get(name, {})
        rows.append([name, o.get("ate_cm"), o.get("t_err_mm"), o.get("r_err_deg"),
                     o.get("views"), o.get("coverage"), o.get("psnr"), o.get("ssim"),
                     o.get("psnr_ibr"), po.get("ap50"), po.get("add_rgb"), po.get("add_icp")])
    parts.append("<h2>Summary</h2>")
    parts.append(_table(["object", "ATE (cm)", "t err (mm)", "R err (deg)", "views",
                         "coverage", "PSNR (dB)", "SSIM", "PSNR IBR (dB)", "AP@0.5",
                         "ADD(-S) RGB", "ADD(-S) RGB+ICP"], rows))
    parts.append("<p class='note'>PSNR / SSIM: the training-set renderer at test-frame poses "
                 "against the ground-truth-textured model under another light (masked), next "
                 "to the angle-weighted IBR baseline on the same sources.</p>")
    if rec:
        parts.append(f"<p>mAP@0.5 over {rec.get('frames', 0)} test frames: "
                     f"<b>{_fmt(rec.get('map50'))}</b>; ADD(-S) RGB "
                     f"<b>{_fmt(rec.get('add_rgb'))}</b>, RGB+ICP "
                     f"<b>{_fmt(rec.get('add_icp'))}</b> (in each object's learnt frame; "
                     f"{_fmt(rec.get('add_icp_model_frame'))} in the mesh files' own frames: "
                     "an untextured mesh fixes its frame only up to its symmetries)</p>")
        lv = rec.get("live")
        if lv:
            parts.append(f"<p>recognizer node on the replayed test bag: {lv.get('received')} "
                         f"frames received, {lv.get('processed')} recognised, "
                         f"{lv.get('dropped_busy')} dropped while busy, {lv.get('detections')} "
                         f"detections ({lv.get('poses')} posed, on /tf)</p>")
    if results.get("times"):
        parts.append(_table(["stage", "seconds"],
                            [[k, float(v)] for k, v in results["times"].items()]))
    # trajectory and scene
    tr = results.get("trajectory")
    if tr:
        f, _ = trajectory_png(tr["est"], tr.get("gt"), out / "trajectory.png")
        parts.append("<h2>Camera trajectory vs ground truth</h2>"
                     f"<img src='{f}' alt='trajectory'>")
    if results.get("scene_mesh") and results.get("T_world_cameras"):
        f = scene_png(results["scene_mesh"], results["T_world_cameras"], out / "scene.png")
        parts.append("<h2>Reconstructed scene (TSDF mesh)</h2>"
                     f"<img src='{f}' alt='reconstructed scene'>")
    # per object
    for name, o in objs.items():
        parts.append(f"<h2>{html.escape(name)}</h2>")
        od = o.get("object_dir")
        if od and ObjectFiles(Path(od)).views_json.exists():
            f = views_png(od, out / f"views_{name}.png")
            parts.append(f"<p>selected source views ({o.get('views')}) with masks:</p>"
                         f"<img src='{f}' alt='views {html.escape(name)}'>")
        if o.get("render_rows"):
            f = labelled_grid(o["render_rows"], out / f"renders_{name}.png")
            parts.append("<p>renders at test-frame poses: real crop | renderer | ground-truth "
                         f"texture</p><img src='{f}' alt='renders {html.escape(name)}'>")
    # noise curve
    if results.get("noise_curve"):
        f = noise_curve_png(results["noise_curve"], out / "noise_curve.png")
        parts.append("<h2>Pose-noise curve</h2>"
                     f"<img src='{f}' alt='pose noise curve'>")
    # recognition
    if rec.get("overlays"):
        parts.append("<h2>Detections and poses on test images</h2><p class='note'>boxes: "
                     "detections (name, score); green dots: the mesh at the estimated pose; "
                     "white dashes: ground-truth boxes</p>")
        for i, (label, img) in enumerate(rec["overlays"]):
            f = f"detections_{i:02d}.png"
            atomic_write_image(out / f, img)
            parts.append(f"<p>{html.escape(label)}</p><img src='{f}' alt='{html.escape(label)}'>")
    if rec.get("per_object"):
        parts.append("<h2>Recognition metrics</h2>")
        parts.append(_table(["object", "AP@0.5", "ADD(-S) RGB", "ADD(-S) RGB+ICP", "frames"],
                            [[n, v.get("ap50"), v.get("add_rgb"), v.get("add_icp"), v.get("n")]
                             for n, v in rec["per_object"].items()]))
    doc = ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>nol_ros report</title>"
           f"<style>{_CSS}</style></head><body>" + "\n".join(parts) + "</body></html>")
    atomic_write_text(out / "index.html", doc)
    clean = json.loads(json.dumps(_jsonable(results)))
    atomic_write_text(out / "results.json", json.dumps(clean, indent=1))
    return out / "index.html"


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()
                if k not in ("render_rows", "overlays", "trajectory", "T_world_cameras")}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    return x
