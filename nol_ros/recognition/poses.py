"""Training poses: the upper hemisphere around an object plus image-space in-plane rotations.

Paper (Sec. 4.2): azimuth and elevation every 5 deg (72 x 18 = 1296 views) at a working
distance (reference 0.7 m), and the rendered images rotated in the image plane from -45 to 45
deg every 15 deg. A rotation of the image about the principal point by angle a is exactly a roll
of the camera about its optical axis: pixels map by the homography K R_z(a) K^-1 and the pose
becomes R_z(a) T_camera_object (the depth of every point is unchanged), so one render gives
seven training images.

The renders are object-centred square crops of the SMOT Xtion camera: the camera looks at the
centre of the object's bounding box, and the crop (side chosen so the object's bounding sphere
fits at the working distance, whatever the view and the in-plane rotation) is resized to
``crop_size`` pixels; :func:`crop_intrinsics` gives its pinhole model.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from nol_ros.camera import SMOT_XTION, Intrinsics
from nol_ros.errors import ConfigError, InputError
from nol_ros.geometry import invert_T, look_at, make_T


@dataclass(frozen=True)
class PoseGridConfig:
    """Hemisphere views: azimuth 0..360 (exclusive) every az_step_deg, elevation el_min_deg ..
    el_max_deg every el_step_deg; distance_m from the bounding-box centre; in-plane angles
    inplane_min_deg .. inplane_max_deg every inplane_step_deg (step 0 = no rotation);
    crop_size px; camera: the full-frame camera the crop is cut from (SMOT Xtion)."""

    az_step_deg: float = 5.0
    el_step_deg: float = 5.0
    el_min_deg: float = 0.0
    el_max_deg: float = 85.0
    distance_m: float = 0.7
    inplane_min_deg: float = -45.0
    inplane_max_deg: float = 45.0
    inplane_step_deg: float = 15.0
    crop_size: int = 256
    margin: float = 1.05

    def __post_init__(self):
        if not (0 < self.az_step_deg <= 360 and 0 < self.el_step_deg <= 90):
            raise ConfigError(f"pose grid steps ({self.az_step_deg}, {self.el_step_deg}) deg "
                              "must be in (0, 360] and (0, 90]")
        if not (-90 <= self.el_min_deg <= self.el_max_deg < 90):
            raise ConfigError(f"elevation range [{self.el_min_deg}, {self.el_max_deg}] must lie "
                              "in [-90, 90) (90 is straight down the up axis: ill-defined roll)")
        if self.distance_m <= 0 or self.crop_size < 8 or self.margin < 1:
            raise ConfigError("distance_m must be > 0, crop_size >= 8, margin >= 1")
        if self.inplane_step_deg < 0 or self.inplane_min_deg > self.inplane_max_deg:
            raise ConfigError("in-plane rotations: need step >= 0 and min <= max")

    @property
    def azimuths_deg(self) -> np.ndarray:
        return np.arange(0.0, 360.0 - 1e-9, self.az_step_deg)

    @property
    def elevations_deg(self) -> np.ndarray:
        return np.arange(self.el_min_deg, self.el_max_deg + 1e-9, self.el_step_deg)

    @property
    def inplane_deg(self) -> np.ndarray:
        if self.inplane_step_deg == 0:
            return np.zeros(1)
        return np.arange(self.inplane_min_deg, self.inplane_max_deg + 1e-9,
                         self.inplane_step_deg)

    @property
    def n_views(self) -> int:
        return len(self.azimuths_deg) * len(self.elevations_deg)

    @property
    def n_images(self) -> int:
        return self.n_views * len(self.inplane_deg)


def bbox_centre(vertices: np.ndarray) -> np.ndarray:
    v = np.asarray(vertices, np.float64)
    return 0.5 * (v.min(0) + v.max(0))


def bounding_radius(vertices: np.ndarray) -> float:
    """Radius of the sphere about the bounding-box centre that holds every vertex (m)."""
    v = np.asarray(vertices, np.float64)
    return float(np.linalg.norm(v - bbox_centre(v), axis=1).max())


def crop_intrinsics(radius_m: float, distance_m: float, crop_size: int,
                    camera: Intrinsics = SMOT_XTION, margin: float = 1.05) -> Intrinsics:
    """Square crop of ``camera`` centred on its principal point that holds a sphere of
    ``radius_m`` at ``distance_m`` (times ``margin``), resized to crop_size px. The principal
    point of the result is the crop centre, so in-plane rotations keep the object inside."""
    if radius_m <= 0 or distance_m <= radius_m:
        raise InputError(f"object radius {radius_m:.3f} m must be > 0 and smaller than the "
                         f"working distance {distance_m:.3f} m")
    ang = np.arcsin(radius_m / distance_m)  # half angle of the sphere's silhouette cone
    half_px = max(camera.fx, camera.fy) * np.tan(ang) * margin
    side = 2.0 * half_px
    x0 = camera.cx + 0.5 - side / 2
    y0 = camera.cy + 0.5 - side / 2
    return camera.crop_resize(x0, y0, side, side, crop_size, crop_size)


def hemisphere_poses(centre: np.ndarray, cfg: PoseGridConfig) -> np.ndarray:
    """(N, 4, 4) T_camera_object of the hemisphere views (azimuth-major), camera at
    cfg.distance_m from ``centre`` (object frame, m) looking at it, image up = object +z."""
    centre = np.asarray(centre, np.float64).reshape(3)
    out = []
    for az in np.radians(cfg.azimuths_deg):
        for el in np.radians(cfg.elevations_deg):
            eye = centre + cfg.distance_m * np.array([np.cos(el) * np.cos(az),
                                                      np.cos(el) * np.sin(az), np.sin(el)])
            out.append(invert_T(look_at(eye, centre, up=(0.0, 0.0, 1.0))))
    return np.stack(out)


def roll(angle_deg: float) -> np.ndarray:
    """(4, 4) camera roll about the optical axis: T' = roll(a) @ T_camera_object. The image of
    T' is the image of T rotated by ``angle_deg`` about the principal point (counter-clockwise on
    screen for positive angles, since image y points down)."""
    a = np.radians(angle_deg)
    c, s = np.cos(a), np.sin(a)
    return make_T(np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]), np.zeros(3))


def roll_homography(intr: Intrinsics, angle_deg: float) -> np.ndarray:
    """(3, 3) pixel homography of :func:`roll` (maps pixels of the original image to pixels of
    the rolled image)."""
    K = intr.K
    return K @ roll(angle_deg)[:3, :3] @ np.linalg.inv(K)


def warp_roll(img: np.ndarray, intr: Intrinsics, angle_deg: float, nearest: bool = False
              ) -> np.ndarray:
    """Rotate an image (H, W[, C]) in the image plane like :func:`roll`; outside = 0."""
    if angle_deg == 0:
        return np.array(img, copy=True)
    H = roll_homography(intr, angle_deg)
    flags = cv2.INTER_NEAREST if nearest else cv2.INTER_LINEAR
    return cv2.warpPerspective(np.asarray(img), H, (intr.width, intr.height), flags=flags,
                               borderMode=cv2.BORDER_CONSTANT, borderValue=0)
