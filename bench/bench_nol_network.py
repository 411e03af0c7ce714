"""Time the NOL network on the CPU (2 threads) for the ``paper`` and ``cpu`` presets.

Per preset (each in its own process, so the peak RSS is per preset):
  encode       : NolNet.encode_sources on K=6 source crops (done once per object at inference)
  render       : one target with sources cached: sample_projection of the K=6 encoded maps
                 + NolNet forward (eval, no decoder) -- the per-image inference cost
  render+bwd   : the same plus backward to the source poses (one pose-refinement iteration)
  train step   : K=8 sources: encode (train mode) + projection + forward with decoder + loss
                 (image, DenseNet psi feature loss, smoothness) + backward
The mesh is an icosphere (2562 vertices, 5120 faces) covering ~45 % of the target crop.

Run: ``.venv/bin/python bench/bench_nol_network.py`` (about 1-2 min).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np
import torch

from nol_ros.enums import NolPreset


def _geometry(S: int, rng: np.random.Generator):
    import trimesh

    ico = trimesh.creation.icosphere(subdivisions=4, radius=0.05)
    V = torch.as_tensor(ico.vertices, dtype=torch.float32)
    faces = torch.as_tensor(ico.faces, dtype=torch.long)
    yy, xx = np.mgrid[:S, :S]
    disc = (xx - S / 2) ** 2 + (yy - S / 2) ** 2 < (0.38 * S) ** 2
    face_id = np.where(disc, rng.integers(0, len(faces), (S, S)), -1)
    bary = rng.dirichlet(np.ones(3), (S, S)).astype(np.float32)
    return V, faces, torch.as_tensor(face_id), torch.as_tensor(bary)


def _poses(K: int, rng: np.random.Generator) -> torch.Tensor:
    from nol_ros.geometry import look_at

    Ts = []
    for a in np.linspace(0, 2 * np.pi, K, endpoint=False):
        eye = 0.4 * np.array([np.cos(a), np.sin(a), 0.6])
        Ts.append(np.linalg.inv(look_at(eye, rng.normal(0, 0.002, 3))))
    return torch.as_tensor(np.stack(Ts), dtype=torch.float32)


def _timeit(fn, reps: int) -> float:
    """Minimum over ``reps`` runs after a warm-up: the machine is shared, and the minimum is
    the stable estimate of the uncontended cost (medians are reported alongside)."""
    fn()  # warm-up
    t = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        t.append(time.perf_counter() - t0)
    _MEDIANS.append(float(np.median(t)))
    return float(np.min(t))


_MEDIANS: list[float] = []


def run_preset(name: str, reps: int, cfg=None) -> dict:
    from nol_ros.nol.config import NolConfig
    from nol_ros.nol.losses import NolLoss, make_psi
    from nol_ros.nol.network import NolNet
    from nol_ros.nol.projection import project_vertices, sample_projection

    torch.set_num_threads(2)
    torch.manual_seed(0)
    rss_import = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rng = np.random.default_rng(0)
    cfg = cfg or NolConfig.preset(name)
    S = cfg.crop_size
    net = NolNet(cfg, device="cpu")
    psi = make_psi(cfg)
    loss_fn = NolLoss(cfg, psi)
    V, faces, face_id, bary = _geometry(S, rng)
    f = 300.0 * S / 128
    Kmat = torch.tensor([[f, 0, S / 2 - 0.5], [0, f, S / 2 - 0.5], [0, 0, 1]])
    out = {"preset": name, "crop": S, "params_M": sum(p.numel() for p in net.parameters()) / 1e6}

    def sources(K):
        rgb = torch.rand(K, 3, S, S)
        ang = torch.rand(K, 1, S, S)
        T = _poses(K, rng)
        vis = torch.rand(K, len(V)) < 0.6
        return rgb, ang, T, vis

    # --- inference, K = 6, sources encoded once
    rgb, ang, T6, vis6 = sources(6)
    net.eval()
    with torch.no_grad():
        out["encode_K6_s"] = _timeit(lambda: net.encode_sources(rgb, ang), max(1, reps // 2))
        F6 = net.encode_sources(rgb, ang)

    def render():
        with torch.no_grad():
            uv, _ = project_vertices(V, T6, Kmat.expand(6, 3, 3))
            P, valid = sample_projection(F6, uv, vis6, faces, face_id, bary)
            return net(P[None], valid[None])

    out["render_K6_s"] = _timeit(render, reps)

    def render_bwd():
        T = T6.clone().requires_grad_(True)
        uv, _ = project_vertices(V, T, Kmat.expand(6, 3, 3))
        P, valid = sample_projection(F6, uv, vis6, faces, face_id, bary)
        o = net(P[None], valid[None])
        (o["x_s"] - P[:, :].mean(0, keepdim=True)).abs().mean().backward()

    out["render_bwd_K6_s"] = _timeit(render_bwd, reps)

    # --- training step, K = 8
    rgb8, ang8, T8, vis8 = sources(8)
    gt = torch.rand(1, 3, S, S)
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=cfg.learning_rate)

    def step():
        opt.zero_grad(set_to_none=True)
        Fk = net.encode_sources(rgb8, ang8)
        uv, _ = project_vertices(V, T8, Kmat.expand(8, 3, 3))
        P, valid = sample_projection(Fk, uv, vis8, faces, face_id, bary)
        o = net(P[None], valid[None])
        loss = loss_fn(o, gt)["total"]
        loss.backward()
        opt.step()

    out["train_step_K8_s"] = _timeit(step, max(1, reps // 2))
    out["peak_rss_MB"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["import_rss_MB"] = rss_import
    out["medians_s"] = list(_MEDIANS)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", choices=list(NolPreset), help="run one preset (internal)")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per measurement")
    a = ap.parse_args(argv)
    if a.preset:
        reps = a.reps or (2 if a.preset == "paper" else 6)
        print(json.dumps(run_preset(a.preset, reps)))
        return 0
    rows = []
    for name in ("cpu", "paper"):
        cmd = [sys.executable, __file__, "--preset", name]
        if a.reps:
            cmd += ["--reps", str(a.reps)]
        r = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    cols = [("preset", "preset", "{}"), ("crop", "crop px", "{}"), ("params_M", "params M",
            "{:.2f}"), ("encode_K6_s", "encode K=6 s", "{:.3f}"),
            ("render_K6_s", "render K=6 s", "{:.3f}"),
            ("render_bwd_K6_s", "render+bwd K=6 s", "{:.3f}"),
            ("train_step_K8_s", "train step K=8 s", "{:.3f}"),
            ("peak_rss_MB", "peak RSS MB", "{:.0f}"), ("import_rss_MB", "RSS after import MB",
                                                         "{:.0f}")]
    print(f"torch {torch.__version__}, 2 threads; minimum of repeated runs after a warm-up "
          "(medians below: the machine may be shared)")
    print(" | ".join(h for _, h, _ in cols))
    print(" | ".join("---" for _ in cols))
    for r in rows:
        print(" | ".join(fmt.format(r[k]) for k, _, fmt in cols))
    for r in rows:
        print(f"{r['preset']} medians (encode, render, render+bwd, train) s: "
              + ", ".join(f"{m:.3f}" for m in r["medians_s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
