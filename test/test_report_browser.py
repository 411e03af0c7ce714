"""The HTML report in a real headless browser (issue 8, item 2): Debian's chromium driven by
playwright opens OUT/index.html from disk; the page loads, every <img> resolves, the console
shows no error, no page error is raised and no request fails. A second test deletes one PNG and
shows the same check reports exactly that image, so the first test can fail.

Chromium is Debian's /usr/bin/chromium (``NOL_CHROMIUM`` overrides), installed by
``make setup`` (tools/setup.sh); playwright's own browser download is never used. A missing
browser fails the test (it is not skipped)."""

from __future__ import annotations

import os
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

CHROMIUM = os.environ.get("NOL_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu"]
FIX = "run `make setup` (tools/setup.sh installs Debian chromium and playwright)"

# trajectory, scene, views_mug, renders_mug, renders_box, noise_curve, detections_00/01
EXPECTED_FIGURES = 8


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        pytest.fail(f"playwright is not installed ({e}); {FIX}", pytrace=False)
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        pytest.fail(f"headless browser {CHROMIUM} is missing; {FIX}, or set NOL_CHROMIUM to a "
                    "Chromium binary", pytrace=False)
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=60_000)
        except Exception as e:  # playwright.Error and its subclasses
            pytest.fail(f"{CHROMIUM} did not start under playwright: {e}; {FIX}", pytrace=False)
        try:
            yield b
        finally:
            b.close()


class _ImgTags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs).get("src", ""))


def img_tags(index: Path) -> list[str]:
    """The src of every <img> tag written in the HTML file."""
    p = _ImgTags()
    p.feed(index.read_text())
    return p.srcs


def check_page(browser, index: Path) -> dict:
    """Open ``index`` (file://) in a fresh page and report what a reader would see broken:
    title, every image's src with its natural width, the srcs that did not resolve (``broken``),
    console errors, page errors and failed requests."""
    ctx = browser.new_context()
    page = ctx.new_page()
    console, page_errors, failed = [], [], []
    page.on("console", lambda m: console.append((m.type, m.text)))
    page.on("pageerror", lambda e: page_errors.append(str(e)))
    page.on("requestfailed", lambda r: failed.append((r.url, r.failure)))
    try:
        page.goto(index.resolve().as_uri(), wait_until="load", timeout=30_000)
        images = page.evaluate(
            """() => Array.from(document.images).map(i => ({
                   src: i.getAttribute('src'), complete: i.complete, w: i.naturalWidth,
                   h: i.naturalHeight}))""")
        title = page.title()
    finally:
        ctx.close()
    return {
        "title": title,
        "images": images,
        "broken": [i["src"] for i in images if not (i["complete"] and i["w"] > 0 and i["h"] > 0)],
        "console_errors": [t for k, t in console if k == "error"],
        "page_errors": page_errors,
        "failed_requests": failed,
    }


def _img(seed: int, h: int = 48, w: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    a[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = (200, 60, 30)
    return a


def _fake_object_dir(d: Path) -> Path:
    """What views_png reads: views.json + views/NNNNNN_rgb.png and _mask.png."""
    import json

    import cv2

    (d / "views").mkdir(parents=True)
    frames = [0, 5, 9]
    for f in frames:
        cv2.imwrite(str(d / "views" / f"{f:06d}_rgb.png"), _img(f, 64, 64))
        m = np.zeros((64, 64), np.uint8)
        m[16:48, 12:52] = 255
        cv2.imwrite(str(d / "views" / f"{f:06d}_mask.png"), m)
    (d / "views.json").write_text(json.dumps({"views": [{"frame": f} for f in frames]}))
    return d


def _tiny_mesh(path: Path) -> Path:
    """A 10 cm vertex-coloured box as PLY (metres)."""
    import open3d as o3d

    m = o3d.geometry.TriangleMesh.create_box(0.1, 0.1, 0.1)
    m.translate((-0.05, -0.05, 0.0))
    m.vertex_colors = o3d.utility.Vector3dVector(np.asarray(m.vertices) * 5 + 0.3)
    assert o3d.io.write_triangle_mesh(str(path), m, write_ascii=True)
    return path


def _results(tmp: Path) -> dict:
    from nol_ros.geometry import look_at

    angles = np.linspace(0, np.pi, 6)
    gt = [look_at(np.array([0.6 * np.cos(a), 0.6 * np.sin(a), 0.4]), np.zeros(3))
          for a in angles]
    rng = np.random.default_rng(1)
    est = []
    for T in gt:
        E = T.copy()
        E[:3, 3] += rng.normal(0, 0.005, 3)
        est.append(E)
    rows = [[("real", _img(1)), ("nol", _img(2)), ("gt", _img(3))],
            [("real", _img(4)), ("nol", _img(5).astype(np.float32) / 255), ("gt", _img(6))]]
    return {
        "title": "browser check <report>",
        "preset": "tiny",
        "renderer": "nol",
        "times": {"reconstruct": 1.5, "train": 12.25},
        "objects": {
            "mug": {"obj_id": 1, "ate_cm": 0.4, "t_err_mm": 3.1, "r_err_deg": 0.8, "views": 3,
                    "coverage": 0.9, "psnr": 24.5, "ssim": 0.81, "render_rows": rows,
                    "object_dir": str(_fake_object_dir(tmp / "obj_mug"))},
            "box": {"obj_id": 2, "ate_cm": None, "t_err_mm": float("nan"), "views": 2,
                    "render_rows": rows[:1]},
        },
        "trajectory": {"est": est, "gt": gt},
        "scene_mesh": str(_tiny_mesh(tmp / "scene.ply")),
        "T_world_cameras": gt,
        "noise_curve": {"labels": ["0", "5mm/1deg", "10mm/2deg"],
                        "series": {"fixed": [25.0, 21.0, 18.5], "refined": [25.1, 24.0, 23.2]}},
        "recognition": {
            "map50": 0.75, "add_rgb": 0.5, "add_icp": 0.66, "frames": 2,
            "per_object": {"mug": {"ap50": 1.0, "add_rgb": 0.5, "add_icp": 1.0, "n": 2},
                           "box": {"ap50": 0.5, "add_rgb": 0.5, "add_icp": 0.33, "n": 2}},
            "overlays": [("frame 0", _img(7, 60, 80)), ("frame 1 <&>", _img(8, 60, 80))],
        },
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    from nol_ros.report import write_report

    tmp = tmp_path_factory.mktemp("report_browser")
    return write_report(tmp / "out", _results(tmp))


def test_report_in_headless_chromium(browser, report):
    srcs = img_tags(report)
    assert len(srcs) >= EXPECTED_FIGURES, srcs
    r = check_page(browser, report)
    assert r["title"] == "nol_ros report"
    assert len(r["images"]) == len(srcs), (r["images"], srcs)
    assert [i["src"] for i in r["images"]] == srcs
    assert r["broken"] == [], r["images"]
    assert all(i["w"] > 0 for i in r["images"]), r["images"]
    assert r["console_errors"] == [], r["console_errors"]
    assert r["page_errors"] == [], r["page_errors"]
    assert r["failed_requests"] == [], r["failed_requests"]


def test_check_page_reports_a_missing_image(browser, report, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(report.parent, out)
    (out / "noise_curve.png").unlink()
    r = check_page(browser, out / "index.html")
    assert r["broken"] == ["noise_curve.png"], r["images"]
    assert [u for u, _ in r["failed_requests"]] == [(out / "noise_curve.png").as_uri()]
    assert len(r["images"]) == len(img_tags(out / "index.html"))
