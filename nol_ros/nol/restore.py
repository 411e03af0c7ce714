"""Training the restorer, the last step of a NOL render (:class:`~nol_ros.nol.network.Restorer`).

    python -m nol_ros.nol.restore --checkpoint nol_ros/models/nol_cpu.pt --out build/restore \\
        --cases 160 --material-cases 80 --workers 2 --steps 4000 --filters 16 --layers 4 --cues 2

(the defaults: the recipe of the shipped model's restorer)

Why: X_D is a convex blend of the source colours, so a render is never sharper than the
sources (Xtion blur, sources farther away than the targets, bilinear resampling), and its
silhouette edge carries whatever the sources saw next to the object; with the same refinement
NOL can therefore only tie the blends. BENCHMARKS.md ("A learnt restorer after the blend")
gives what it gains and loses on the real scans.

Pairs: each case is a random textured object of the NOL training generator
(:func:`nol_ros.nol.data.random_object`, never a real scan) on the table of a cluttered
synthetic scene seen in 6 Xtion frames (:func:`nol_ros.nol.evaluate.make_scene_case`, seeds
from 20000 + case, apart from the benchmarks' seeds), its source poses moved by one of the
benchmark's noise levels (case mod 4), the renderer prepared exactly as LearnObject prepares
it (:func:`nol_ros.nol.renderer.prepare_renderer` with
``learn.RenderStageConfig(method="nol").object_renderer_config()``, the restorer off), and
its ``render`` of 6 target crops against the clean render. ``--material-cases`` more cases
(seeds from 30000 + case) give the objects :func:`material_texture`'s textures instead:
photographs and flat black, white or saturated materials, which the procedural textures lack
and real objects have. Pairs are cached in PAIRS/pairs/ and PAIRS/pairs_material/
(``--pairs``, default OUT) as case_NNNNN.npz, so a second run (more cases, more steps) reuses
them; the cache does not record the checkpoint, so another ``--checkpoint`` needs another
folder.

With ``--cues 2`` the restorer also sees the blend's per-pixel cues
(:data:`~nol_ros.nol.network.RESTORE_CUES`: how far the sources' colours spread around the
blend, and how close to its own silhouette edge each source's sample was), which the pairs
store beside the colour (``render_detailed(cues=True)``, then :func:`~nol_ros.nol.renderer.
composite`, which is what ``render`` does before the restorer).

Training: 96 px patches around object pixels, each scaled by one random gain in
``gain_range`` (input, colour-spread cue and target alike) with its colour channels
permuted, batch 16, Adam (lr 1e-3, 3e-4 for the last 30 % of the steps), mean squared error
on the target silhouette; the last 10 % of the cases of each kind are held out and their
masked PSNR before / after is reported.
Writes OUT/model.pt (the given network with the restorer; what nol_ros.nol.renderer loads)
and OUT/restore.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import io
import multiprocessing as mp
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import torch

from nol_ros.errors import ConfigError, NolError
from nol_ros.io_utils import atomic_write_bytes, atomic_write_json
from nol_ros.learn import RenderStageConfig
from nol_ros.metrics import masked_psnr
from nol_ros.nol.data import random_object
from nol_ros.nol.evaluate import NOISE_LEVELS, annotated_sources, make_scene_case
from nol_ros.nol.network import NolNet, Restorer, load_checkpoint, save_checkpoint
from nol_ros.nol.renderer import composite, prepare_renderer

CASE_SEED0 = 20000
MATERIAL_SEED0 = 30000   # the "material" cases' scenes, apart from the procedural ones
# Photographs that ship with scikit-image (no download): real-image statistics the procedural
# textures lack
PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "colorwheel", "stereo_motorcycle", "brick", "grass",
          "gravel", "camera", "text", "page", "moon", "clock", "coins")
KINDS = ("procedural", "material")


@functools.cache
def _photo(name: str) -> np.ndarray:
    img = getattr(skimage.data, name)()
    img = img[0] if isinstance(img, tuple) else img
    img = np.repeat(img[..., None], 3, 2) if img.ndim == 2 else img[..., :3]
    return np.ascontiguousarray(img)


def material_texture(rng: np.random.Generator, px: int) -> np.ndarray:
    """A texture of the kinds real objects show and the procedural generator lacks -> (px, px,
    3) uint8: half photographs (scikit-image's sample images: a random crop, tint, channel
    order, gamma and brightness down to 15 %), half flat materials (black, white or saturated
    plastic or paint with faint multi-scale grain); a third of them carry a printed photo
    patch (a label or sticker)."""
    def photo(side: int) -> np.ndarray:
        img = _photo(PHOTOS[int(rng.integers(len(PHOTOS)))]).astype(np.float32) / 255
        h, w = img.shape[:2]
        c = int(rng.uniform(0.25, 1.0) * min(h, w))
        y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        img = cv2.resize(img[y0:y0 + c, x0:x0 + c], (side, side), interpolation=cv2.INTER_AREA)
        img = np.clip(img[..., rng.permutation(3)] * rng.uniform(0.6, 1.2, 3), 0, 1)
        return img ** rng.uniform(0.6, 1.8) * rng.uniform(0.15, 1.1)

    def flat() -> np.ndarray:
        kind = int(rng.integers(3))
        if kind == 0:    # black
            base = rng.uniform(0.02, 0.15) * rng.uniform(0.8, 1.2, 3)
        elif kind == 1:  # white
            base = rng.uniform(0.75, 0.97) * rng.uniform(0.93, 1.0, 3)
        else:            # saturated: one or two strong channels
            base = rng.uniform(0.0, 0.25, 3)
            base[rng.choice(3, int(rng.integers(1, 3)), replace=False)] = rng.uniform(0.5, 0.95)
        img = np.broadcast_to(base.astype(np.float32), (px, px, 3)).copy()
        amp = rng.uniform(0.003, 0.03)
        for scale in (2, 8, 32):
            small = rng.normal(0, amp, (max(2, px // scale), max(2, px // scale), 3))
            img += cv2.resize(small.astype(np.float32), (px, px), interpolation=cv2.INTER_CUBIC)
        return img

    img = photo(px) if rng.random() < 0.5 else flat()
    if rng.random() < 0.35:
        s = int(px * rng.uniform(0.2, 0.6))
        y0, x0 = (int(v) for v in rng.integers(0, px - s + 1, 2))
        img[y0:y0 + s, x0:x0 + s] = photo(s)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class RestoreTrainConfig:
    """cases: scenes (6 targets each); filters / layers: the restorer's size; steps: Adam
    steps of ``batch`` patches of ``patch`` px; lr: first learning rate (x0.3 for the last
    30 %); val_fraction: cases held out for the reported PSNR; gain_range: the brightness
    augmentation (see the module docstring)."""

    cases: int = 160
    material_cases: int = 80  # cases with material_texture's textures (photos, flat plastic)
    filters: int = 16
    layers: int = 4
    cues: int = 2             # 2: the restorer also sees the blend's cues (NolConfig.restore_cues)
    steps: int = 4000
    batch: int = 16
    patch: int = 96
    lr: float = 1e-3
    val_fraction: float = 0.1
    gain_range: tuple[float, float] = (0.15, 1.3)
    seed: int = 0

    def __post_init__(self):
        if self.cases < 2 or self.material_cases < 0 or self.material_cases == 1 \
                or self.filters < 1 or self.layers < 2 or self.cues not in (0, 2) \
                or self.steps < 1 \
                or self.batch < 1 or self.patch < 16 or self.lr <= 0 \
                or not 0 < self.val_fraction < 1:
            raise ConfigError("restore training: cases >= 2, material_cases 0 or >= 2, "
                              "filters >= 1, layers >= 2, cues 0 or 2, "
                              "steps >= 1, batch >= 1, patch >= 16, lr > 0, "
                              "0 < val_fraction < 1")


def make_case_pairs(net: NolNet, case: int, kind: str = "procedural"
                    ) -> dict[str, np.ndarray]:
    """The pairs of one case (see the module docstring) of ``kind`` ("procedural": the NOL
    training generator's textures; "material": :func:`material_texture`) -> {rgb (T, H, W, 3)
    uint8 as ``render`` returns it without the restorer, cues (T, 2, H, W) float16 (the
    blend's cues, RenderResult.cues), gt (T, H, W, 3) uint8, gt_mask, mask (T, H, W) bool}."""
    if kind == "procedural":
        mesh = random_object(np.random.default_rng([case, 7]), name=f"restore_{case}")
        seed = CASE_SEED0 + case
    elif kind == "material":
        mesh = random_object(np.random.default_rng([case, 8]), name=f"restore_m{case}",
                             texture_fn=material_texture)
        seed = MATERIAL_SEED0 + case
    else:
        raise ConfigError(f"pair kind {kind!r}: use one of {', '.join(KINDS)}")
    sc = make_scene_case(mesh, seed=seed, n_targets=6)
    tm, rd = NOISE_LEVELS[case % len(NOISE_LEVELS)]
    src = annotated_sources(sc, tm, rd, seed=seed)
    cfg = RenderStageConfig(method="nol").object_renderer_config()
    cfg = dataclasses.replace(cfg, render=dataclasses.replace(cfg.render, restore=False))
    r, _ = prepare_renderer(sc.mesh, src, net, cfg)
    rgb, mask, cues = [], [], []
    for T, intr in zip(sc.T_targets, sc.intr_targets):
        res = r.render_detailed(T[None], intr, cues=True)
        rgb.append(composite(res)[0])
        mask.append(res.object_mask[0])
        cues.append(res.cues[0].astype(np.float16))
    return {"rgb": np.stack(rgb), "cues": np.stack(cues),
            "gt": np.round(sc.gt_rgb * 255).astype(np.uint8), "gt_mask": sc.gt_mask,
            "mask": np.stack(mask)}


def _worker(args: tuple[str, list[int], str, str]) -> int:
    checkpoint, cases, folder, kind = args
    torch.set_num_threads(1)
    net, _ = load_checkpoint(checkpoint, "cpu")
    for c in cases:
        buf = io.BytesIO()
        np.savez_compressed(buf, **make_case_pairs(net, c, kind))
        atomic_write_bytes(Path(folder) / f"case_{c:05d}.npz", buf.getvalue())
    return len(cases)


def generate_pairs(checkpoint: str, folder: Path, cases: int, workers: int = 2,
                   log=print, kind: str = "procedural") -> list[Path]:
    """Cases 0..cases-1 of ``kind`` as FOLDER/case_NNNNN.npz (existing files are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [c for c in range(cases) if not (folder / f"case_{c:05d}.npz").is_file()]
    if todo:
        log(f"rendering {len(todo)} {kind} cases with {workers} workers")
        t0 = time.perf_counter()
        chunks = [todo[i::workers] for i in range(workers)]
        if workers == 1:
            _worker((checkpoint, todo, str(folder), kind))
        else:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
                list(ex.map(_worker, [(checkpoint, ch, str(folder), kind)
                                      for ch in chunks if ch]))
        log(f"rendered in {time.perf_counter() - t0:.0f} s")
    return [folder / f"case_{c:05d}.npz" for c in range(cases)]


def _load(paths: list[Path], cues: bool = True) -> list[tuple[torch.Tensor, ...]]:
    """The pairs of the case files -> [(rgb (3, H, W), gt (3, H, W), gt_mask (1, H, W), mask
    (1, H, W), cues (2, H, W) or None)] float tensors."""
    out = []
    for p in paths:
        with np.load(p) as z:
            if cues and "cues" not in z:
                raise NolError(f"pair file {p} has no cues (cached by an older version); give "
                               "a new --pairs folder, or train with --cues 0")
            cs = z["cues"] if cues else [None] * len(z["rgb"])
            for rgb, gt, gm, m, c in zip(z["rgb"], z["gt"], z["gt_mask"], z["mask"], cs):
                if m.any() and gm.any():
                    out.append((torch.as_tensor(rgb).permute(2, 0, 1).float() / 255,
                                torch.as_tensor(gt).permute(2, 0, 1).float() / 255,
                                torch.as_tensor(gm)[None].float(),
                                torch.as_tensor(m)[None].float(),
                                None if c is None else torch.as_tensor(c).float()))
    return out


def evaluate_restorer(restorer: Restorer, pairs) -> tuple[float, float]:
    """Mean masked PSNR of the pairs' renders without / with the restorer (uint8 output)."""
    before, after = [], []
    with torch.no_grad():
        for rgb, gt, gm, m, c in pairs:
            c = c[None] if restorer.cues else None
            y = torch.round(restorer(rgb[None], m[None], c) * 255) / 255
            sil, ref = gm[0].bool().numpy(), gt.permute(1, 2, 0).numpy()
            before.append(masked_psnr(rgb.permute(1, 2, 0).numpy(), ref, sil))
            after.append(masked_psnr(y[0].permute(1, 2, 0).numpy(), ref, sil))
    return float(np.mean(before)), float(np.mean(after))


def train_restorer(pairs, cfg: RestoreTrainConfig, val=(), log=print) -> tuple[Restorer, dict]:
    """Fit a Restorer to the pairs (see the module docstring) -> (restorer, history)."""
    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    net = Restorer(cfg.filters, cfg.layers, cfg.cues)
    opt = torch.optim.Adam(net.parameters(), cfg.lr)
    P, hist = cfg.patch, []
    t0 = time.perf_counter()
    for it in range(cfg.steps):
        if it == int(0.7 * cfg.steps):
            for g in opt.param_groups:
                g["lr"] = 0.3 * cfg.lr
        xs, ys, ms, gs, cs = [], [], [], [], []
        for _ in range(cfg.batch):
            rgb, gt, gm, m, c = pairs[int(rng.integers(len(pairs)))]
            yy, xx = torch.nonzero(m[0], as_tuple=True)
            k = int(torch.randint(len(yy), (1,), generator=gen))
            H, W = m.shape[1:]
            y0 = int(np.clip(int(yy[k]) - P // 2, 0, max(0, H - P)))
            x0 = int(np.clip(int(xx[k]) - P // 2, 0, max(0, W - P)))
            sl = (slice(None), slice(y0, y0 + P), slice(x0, x0 + P))
            # the same brightness and channel order for input and target: the random objects
            # are mid-grey on average; real ones can be black or saturated
            gain = float(rng.uniform(*cfg.gain_range))
            perm = torch.as_tensor(rng.permutation(3))
            xs.append((rgb[sl][perm] * gain).clamp(0, 1))
            ys.append((gt[sl][perm] * gain).clamp(0, 1))
            ms.append(m[sl])
            gs.append(gm[sl])
            if cfg.cues:   # the colour spread scales with the gain; the edge cue does not
                cs.append(c[sl] * torch.tensor([gain, 1.0])[:, None, None])
        x, y, m, g = map(torch.stack, (xs, ys, ms, gs))
        c = torch.stack(cs) if cfg.cues else None
        loss = (((net(x, m, c) - y) ** 2) * g).sum() / (3 * g.sum()).clamp(min=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (it + 1) % 500 == 0 or it + 1 == cfg.steps:
            row = {"step": it + 1, "loss": float(loss.detach()), "s": time.perf_counter() - t0}
            if val:
                row["val_before"], row["val_after"] = evaluate_restorer(net.eval(), val)
                net.train()
            hist.append(row)
            log(" ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                         for k, v in row.items()))
    return net.eval(), {"history": hist, "train_s": time.perf_counter() - t0}


def attach(net: NolNet, restorer: Restorer) -> NolNet:
    """The network with ``restorer`` as its restorer (config fields set to its size)."""
    n_layers = sum(isinstance(m, torch.nn.Conv2d) for m in restorer.body)
    filters = restorer.body[0].out_channels
    cfg = dataclasses.replace(net.config, restore_filters=filters, restore_layers=n_layers,
                              restore_cues=restorer.cues)
    out = NolNet(cfg, device="cpu")
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("restorer.")}
    state.update({f"restorer.{k}": v for k, v in restorer.state_dict().items()})
    out.load_state_dict(state)
    return out.eval()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m nol_ros.nol.restore",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, help="the NOL network to add a restorer to")
    ap.add_argument("--out", required=True, help="run folder (pairs/, model.pt, restore.json)")
    ap.add_argument("--pairs", default="",
                    help="folder of the pair caches (pairs/, pairs_material/; default OUT)")
    d = RestoreTrainConfig()
    ap.add_argument("--cases", type=int, default=d.cases)
    ap.add_argument("--material-cases", type=int, default=d.material_cases)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--filters", type=int, default=d.filters)
    ap.add_argument("--layers", type=int, default=d.layers)
    ap.add_argument("--cues", type=int, default=d.cues,
                    help="2: the restorer sees the blend's cues too; 0: colour and mask only")
    ap.add_argument("--steps", type=int, default=d.steps)
    ap.add_argument("--threads", type=int, default=2, help="torch threads while training")
    ap.add_argument("--seed", type=int, default=d.seed)
    a = ap.parse_args(argv)
    try:
        cfg = RestoreTrainConfig(cases=a.cases, material_cases=a.material_cases,
                                 filters=a.filters, layers=a.layers, cues=a.cues,
                                 steps=a.steps, seed=a.seed)
        net, extra = load_checkpoint(a.checkpoint, "cpu")
        out = Path(a.out)
        cache = Path(a.pairs) if a.pairs else out
        train, val = [], []
        for kind, n, sub in (("procedural", cfg.cases, "pairs"),
                             ("material", cfg.material_cases, "pairs_material")):
            if n == 0:
                continue
            paths = generate_pairs(a.checkpoint, cache / sub, n, a.workers, kind=kind)
            n_val = max(1, int(round(cfg.val_fraction * len(paths))))
            train += _load(paths[:-n_val], cfg.cues > 0)
            val += _load(paths[-n_val:], cfg.cues > 0)
        torch.set_num_threads(a.threads)   # for training (a 1-worker run set 1 in-process)
        print(f"{len(train)} training pairs, {len(val)} held out")
        restorer, info = train_restorer(train, cfg, val)
        before, after = evaluate_restorer(restorer, val)
        info.update(config=dataclasses.asdict(cfg), checkpoint=a.checkpoint,
                    command="python -m nol_ros.nol.restore " + " ".join(argv or sys.argv[1:]),
                    val_psnr_before=before, val_psnr_after=after,
                    date=time.strftime("%Y-%m-%d %H:%M"))
        extra["restorer_training"] = info
        save_checkpoint(attach(net, restorer), out / "model.pt", **extra)
        atomic_write_json(out / "restore.json", info)
    except NolError as e:
        print(f"error [{e.code}]: {e}", file=sys.stderr)
        return 2
    print(f"held-out cases: {before:.2f} -> {after:.2f} dB; model {out / 'model.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
