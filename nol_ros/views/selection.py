"""View selection (NOL paper Sec. 4.1 and its reference code).

Inputs are boolean visibility matrices ``vis`` (n_frames, n_vertices): vertex j is visible in
frame i (rendered depth within a tolerance of the measured depth, facing the camera, inside the
mask). All functions are pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nol_ros.errors import InputError


@dataclass(frozen=True)
class SequenceSelectionConfig:
    max_frames: int = 16
    min_gain: float = 1.0              # stop when the best frame adds less than this
    seen_weight: float = 1.5           # score = sum_v tanh(seen_weight * times_seen_v)
    dedup_dist_m: float = 0.10         # drop candidates this close to a pick ...
    dedup_angle_deg: float = 15.0      # ... and within this angle of it
    min_visible_vertices: int = 10     # frames that see fewer vertices are never picked


@dataclass
class Selection:
    frames: list[int]                  # chosen frame indices, in pick order
    gains: list[float]                 # score gain of each pick
    coverage: float                    # fraction of vertices seen in any frame of the sequence
    #                                    that the chosen frames see
    n_seen_sequence: int = 0
    n_seen_selected: int = 0
    stop_reason: str = ""
    meta: dict = field(default_factory=dict)


def _angle_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(Ra.T @ Rb) - 1) / 2, -1, 1))))


def _too_close(T_a: np.ndarray, T_b: np.ndarray, dist_m: float, angle_deg: float) -> bool:
    return (np.linalg.norm(T_a[:3, 3] - T_b[:3, 3]) < dist_m
            and _angle_deg(T_a[:3, :3], T_b[:3, :3]) < angle_deg)


def _check(vis: np.ndarray, poses: np.ndarray | None) -> np.ndarray:
    vis = np.asarray(vis, dtype=bool)
    if vis.ndim != 2:
        raise InputError(f"visibility must be (n_frames, n_vertices), got shape {vis.shape}")
    if poses is not None and len(poses) != len(vis):
        raise InputError(f"{len(poses)} poses for {len(vis)} frames of visibility")
    return vis


def select_sequence_views(vis: np.ndarray, T_camera_object: np.ndarray | None = None,
                          cfg: SequenceSelectionConfig = SequenceSelectionConfig(),
                          candidates: np.ndarray | None = None) -> Selection:
    """Greedy frame picking for a cluttered sequence.

    Each step adds the frame with the largest gain of ``sum_v tanh(w * times_seen_v)`` (new
    vertices count most, seeing a vertex again a little). Stops at ``max_frames`` or when the
    best gain is below ``min_gain``. Candidates within ``dedup_dist_m`` AND ``dedup_angle_deg``
    of a picked frame (relative object pose, camera frame) are removed.

    vis: (F, V) bool; T_camera_object: (F, 4, 4) poses for de-duplication (optional);
    candidates: optional bool (F,) mask of usable frames (e.g. tracking ok).
    """
    vis = _check(vis, T_camera_object)
    F, V = vis.shape
    usable = vis.sum(1) >= cfg.min_visible_vertices
    if candidates is not None:
        usable &= np.asarray(candidates, dtype=bool)
    seen_any = vis[usable].any(0) if usable.any() else np.zeros(V, bool)
    n_seq = int(seen_any.sum())
    if n_seq == 0:
        raise InputError("no frame sees the object (no visible vertex in any usable frame); "
                         "check the object registration, masks and tracking flags")
    counts = np.zeros(V, dtype=np.float64)
    alive = usable.copy()
    picks, gains = [], []
    reason = "max_frames"
    visf = vis.astype(np.float64)
    while len(picks) < cfg.max_frames:
        if not alive.any():
            reason = "no candidates left"
            break
        delta = np.tanh(cfg.seen_weight * (counts + 1)) - np.tanh(cfg.seen_weight * counts)
        g = visf @ delta
        g[~alive] = -np.inf
        i = int(np.argmax(g))
        if g[i] < cfg.min_gain:
            reason = f"gain {g[i]:.2f} < {cfg.min_gain}"
            break
        picks.append(i)
        gains.append(float(g[i]))
        counts += vis[i]
        alive[i] = False
        if T_camera_object is not None:
            for j in np.flatnonzero(alive):
                if _too_close(T_camera_object[i], T_camera_object[j], cfg.dedup_dist_m,
                              cfg.dedup_angle_deg):
                    alive[j] = False
    sel_seen = vis[picks].any(0) if picks else np.zeros(V, bool)
    return Selection(picks, gains, float((sel_seen & seen_any).sum() / n_seq), n_seq,
                     int(sel_seen.sum()), reason)


def select_by_pose_distance(T_camera_object: np.ndarray, min_dist_m: float = 0.3,
                            min_angle_deg: float = 45.0, max_frames: int = 16,
                            rng: np.random.Generator | None = None) -> list[int]:
    """LineMOD-like: visit frames in random order, keep one unless it is within ``min_dist_m``
    AND ``min_angle_deg`` of a kept frame."""
    rng = rng or np.random.default_rng(0)
    order = rng.permutation(len(T_camera_object))
    kept: list[int] = []
    for i in order:
        if all(not _too_close(T_camera_object[i], T_camera_object[k], min_dist_m, min_angle_deg)
               for k in kept):
            kept.append(int(i))
            if len(kept) >= max_frames:
                break
    return kept


def select_for_target(vis_sources: np.ndarray, vis_target: np.ndarray, k: int = 6,
                      seen_weight: float = 1.5, skip_unrelated: bool = False) -> list[int]:
    """Choose up to ``k`` sources (rows of ``vis_sources``, (S, V) bool) for one target pose,
    counting only the vertices visible in the target (``vis_target``, (V,) bool; see
    :func:`nol_ros.reconstruction.annotate.visible_vertices_in_pose`). Greedy on the same tanh
    score, so a source showing target vertices no pick shows yet wins over one that repeats
    them; sources that only repeat are still used (in order of overlap) until k, because several
    observations of a vertex help the blend. Sources that see none of the target's vertices
    come last (they only add invalid projections); with ``skip_unrelated`` they are never
    picked and fewer than k can come back (callers that need exactly min(k, S) sources keep
    the default)."""
    vs = np.asarray(vis_sources, dtype=bool)
    vt = np.asarray(vis_target, dtype=bool)
    if vs.ndim != 2 or vt.shape != (vs.shape[1],):
        raise InputError(f"shapes do not match: sources {vs.shape}, target {vt.shape}")
    rel = vs[:, vt].astype(np.float64)
    counts = np.zeros(rel.shape[1])
    picks: list[int] = []
    alive = np.ones(len(vs), bool)
    while len(picks) < min(k, len(vs)):
        delta = np.tanh(seen_weight * (counts + 1)) - np.tanh(seen_weight * counts)
        g = rel @ delta
        g[~alive] = -np.inf
        i = int(np.argmax(g))
        if skip_unrelated and not g[i] > 0:  # no remaining source sees any target vertex
            break
        picks.append(i)
        alive[i] = False
        counts += rel[i]
    return picks
