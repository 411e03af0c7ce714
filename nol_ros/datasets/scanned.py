"""Scanned, textured objects from a folder: one subfolder per object holding ``textured.obj``,
its ``.mtl`` and texture image (the layout of ../shared/realdata/ycb_real_textures), so a lab
can put its own scans in the synthetic world and the benchmarks."""

from __future__ import annotations

from pathlib import Path

import cv2

from nol_ros.errors import FileFormatError
from nol_ros.mesh import Mesh, load_mesh


def load_textured_objects(objects_dir, texture_px: int = 1024) -> dict[str, Mesh]:
    """Every ``NAME/textured.obj`` (with its .mtl and texture image) under ``objects_dir`` ->
    {NAME: textured Mesh}, metres, re-centred on its bounding box (scans keep the scanner's
    origin, often at the base: pose errors should turn the object about its centre, and the
    world stands objects on the table by their box). The texture is area-downsampled to at
    most ``texture_px`` (a mip level: a 4096 px atlas is ~30 texels per pixel at the distances
    rendered here, and point-sampling it aliases)."""
    root = Path(objects_dir)
    if not root.is_dir():
        raise FileFormatError(f"objects folder '{root}' does not exist; give a folder with one "
                              "subfolder per object holding textured.obj, its .mtl and texture "
                              "(e.g. ../shared/realdata/ycb_real_textures)")
    out = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        obj = d / "textured.obj"
        if not obj.is_file():
            continue
        m = load_mesh(obj, units="m")
        if not m.is_textured:
            raise FileFormatError(f"{obj} loaded without a texture: its .mtl must name the "
                                  "texture image (map_Kd) next to it")
        tex = m.texture
        if max(tex.shape[:2]) > texture_px:
            s = texture_px / max(tex.shape[:2])
            tex = cv2.resize(tex, (round(tex.shape[1] * s), round(tex.shape[0] * s)),
                             interpolation=cv2.INTER_AREA)
        c = (m.vertices.min(0) + m.vertices.max(0)) / 2
        out[d.name] = Mesh(m.vertices - c, m.faces, uvs=m.uvs, texture=tex, name=d.name)
    if not out:
        raise FileFormatError(f"'{root}' holds no NAME/textured.obj; give the folder of the "
                              "scanned objects (layout of ../shared/realdata/ycb_real_textures)")
    return out
