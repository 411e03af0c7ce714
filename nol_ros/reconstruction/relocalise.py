"""Re-localisation against keyframes: ORB features + PnP RANSAC on the keyframe's depth.

Dense RGB-D odometry only converges from a few centimetres / degrees away. After a loss or a
gap in the stream (dropped frames, a paused bag) the camera can be tens of centimetres and tens
of degrees from the last tracked pose, so the tracker asks this module for a coarse pose: ORB
keypoints of the new frame are matched (Hamming, Lowe ratio test) with each keyframe's, the
keyframe's depth lifts its matched keypoints to 3D, and ``cv2.solvePnPRansac`` gives the pose of
the new frame in the keyframe. The tracker then refines that pose with its dense odometry and
accepts it only when the refined alignment passes its checks (never on the PnP alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class KeyframeFeatures:
    """ORB features of one keyframe: keypoints (N, 2) float32 pixels, descriptors (N, 32)
    uint8, points (N, 3) float32 metres in the keyframe's camera frame (depth > 0 only), the
    keypoints' pyramid octaves (N,) int."""

    uv: np.ndarray
    desc: np.ndarray
    pts: np.ndarray
    octave: np.ndarray


@dataclass
class PnpResult:
    keyframe: int               # position in the candidate list given
    T_kf_camera: np.ndarray     # (4, 4) pose of the new frame in the keyframe's camera frame
    inliers: int
    matches: int


def ratio_test_matches(query: np.ndarray, train: np.ndarray, ratio: float
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force Hamming matches of the ORB descriptors ``query`` (N, 32) onto ``train``
    (M, 32) uint8 that pass Lowe's ratio test: indices (q (K,), t (K,)) int64, in query
    order. Thread-safe (a matcher per call): the bundle adjustment matches on workers."""
    knn = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(query, train, k=2)
    good = [m[0] for m in knn if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    return (np.array([m.queryIdx for m in good], np.int64),
            np.array([m.trainIdx for m in good], np.int64))


class Relocaliser:
    def __init__(self, K: np.ndarray, n_features: int = 600, ratio: float = 0.8,
                 min_inliers: int = 25, reproj_px: float = 3.0):
        self.K = np.asarray(K, np.float64)
        self.orb = cv2.ORB_create(nfeatures=n_features)
        self.ratio, self.min_inliers, self.reproj_px = ratio, min_inliers, reproj_px

    def detect(self, rgb: np.ndarray):
        """(uv (N, 2) float32, descriptors (N, 32) uint8, octaves (N,) int) of an (H, W, 3)
        uint8 RGB image."""
        grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
        kps, desc = self.orb.detectAndCompute(grey, None)
        if desc is None or not kps:
            return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8), np.zeros(0, int)
        return (np.array([k.pt for k in kps], np.float32), desc,
                np.array([k.octave for k in kps], int))

    def keyframe_features(self, rgb: np.ndarray, depth_m: np.ndarray) -> KeyframeFeatures:
        """Features of a keyframe: rgb (H, W, 3) uint8, depth_m (H, W) float32 metres."""
        uv, desc, octave = self.detect(rgb)
        if len(uv) == 0:
            return KeyframeFeatures(uv, desc, np.zeros((0, 3), np.float32), octave)
        x = np.clip(np.round(uv[:, 0]).astype(int), 0, depth_m.shape[1] - 1)
        y = np.clip(np.round(uv[:, 1]).astype(int), 0, depth_m.shape[0] - 1)
        z = depth_m[y, x]
        ok = z > 0
        K = self.K
        pts = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * z, (uv[:, 1] - K[1, 2]) / K[1, 1] * z,
                        z], 1).astype(np.float32)
        return KeyframeFeatures(uv[ok], desc[ok], pts[ok], octave[ok])

    def locate(self, rgb: np.ndarray, keyframes: list[KeyframeFeatures], max_tries: int = 3
               ) -> list[PnpResult]:
        """PnP poses of the frame in the keyframes that share the most ratio-test matches with
        it (at most ``max_tries`` PnP runs), best (most inliers) first; [] when none has
        ``min_inliers`` inliers."""
        uv, desc, _ = self.detect(rgb)
        if len(uv) < self.min_inliers:
            return []
        cands = []
        for i, kf in enumerate(keyframes):
            if len(kf.desc) < self.min_inliers:
                continue
            q, t = ratio_test_matches(desc, kf.desc, self.ratio)
            if len(q) >= self.min_inliers:
                cands.append((len(q), i, (q, t)))
        cands.sort(key=lambda c: -c[0])
        out = []
        for n, i, (q, t) in cands[:max_tries]:
            obj = keyframes[i].pts[t]
            img = uv[q]
            ok, rvec, tvec, inl = cv2.solvePnPRansac(
                obj, img, self.K, None, iterationsCount=200, reprojectionError=self.reproj_px,
                confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
            if not ok or inl is None or len(inl) < self.min_inliers:
                continue
            R, _ = cv2.Rodrigues(rvec)
            T_cam_kf = np.eye(4)
            T_cam_kf[:3, :3], T_cam_kf[:3, 3] = R, tvec.ravel()
            out.append(PnpResult(i, np.linalg.inv(T_cam_kf), int(len(inl)), n))
        out.sort(key=lambda r: -r.inliers)
        return out
