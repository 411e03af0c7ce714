"""An anchor-free "objects as points" detector (Zhou et al. 2019, CenterNet) with the interface
of torchvision's detection models, so :mod:`nol_ros.recognition.detector` trains, saves and runs
it exactly like its RetinaNet: ``model(images, targets)`` -> {"classification", "bbox_regression"}
losses in train mode, ``model(images)`` -> [{"boxes", "scores", "labels"}] in eval mode.

Why it is here: trained from random init on the CPU, RetinaNet's anchor matching with focal
loss learns slowly (measured: BENCHMARKS.md "Recognition"); a per-class centre heat map at
stride 4 supervises every pixel of every image and learns several times faster, which is what
the demo's few minutes of training need.

Network: the detector's residual conv backbone (strides 2..32), an FPN-style top-down path to
stride 4 (``fpn_channels``), one shared 3x3 conv + ReLU and 1x1 heads for the class heat maps,
log box size and sub-pixel centre offset. Targets: an elliptical Gaussian per box (sigma =
``heatmap_sigma`` * box size, at least 0.8 cells), peak 1 at the centre cell. Loss: the
penalty-reduced focal loss on the heat maps (alpha 2, beta 4) + L1 on log(w), log(h) and the
offset at the centre cells. Decoding: 3x3 max-pool peaks, top-k, class-wise NMS.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _cbr(i, o, s=1):
    return nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o),
                         nn.ReLU(inplace=True))


class _Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.a = _cbr(c, c)
        self.b = nn.Sequential(nn.Conv2d(c, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return F.relu(x + self.b(self.a(x)))


class CenterNet(nn.Module):
    stride = 4

    def __init__(self, cfg, n_classes: int):
        super().__init__()
        self.cfg = cfg
        self.n_classes = n_classes
        ch = cfg.channels
        self.stages = nn.ModuleList()
        c_in = 3
        for c in ch:
            self.stages.append(nn.Sequential(_cbr(c_in, c, 2), *[_Res(c) for _ in
                                                                 range(cfg.blocks)]))
            c_in = c
        C = cfg.fpn_channels
        self.lateral = nn.ModuleList([nn.Conv2d(ch[i], C, 1) for i in (1, 2, 3, 4)])
        self.smooth = _cbr(C, C)

        self.shared = nn.Sequential(nn.Conv2d(C, C, 3, 1, 1), nn.ReLU(inplace=True))
        self.heat = nn.Conv2d(C, n_classes, 1)
        nn.init.constant_(self.heat.bias, -math.log((1 - 0.1) / 0.1))
        self.size = nn.Conv2d(C, 2, 1)
        self.offset = nn.Conv2d(C, 2, 1)
        self.register_buffer("mean", torch.tensor(MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(STD).view(1, 3, 1, 1), persistent=False)

    # -- input ---------------------------------------------------------------------------------
    def _scale(self, h: int, w: int) -> float:
        s = self.cfg.min_size / min(h, w)
        if max(h, w) * s > self.cfg.max_size:
            s = self.cfg.max_size / max(h, w)
        return s

    def _batch(self, images):
        sizes, scales, resized = [], [], []
        for im in images:
            h, w = im.shape[-2:]
            s = self._scale(h, w)
            nh, nw = max(32, int(round(h * s))), max(32, int(round(w * s)))
            x = im[None] if (nh, nw) == (h, w) else F.interpolate(
                im[None], size=(nh, nw), mode="bilinear", align_corners=False)
            resized.append(x)
            sizes.append((nh, nw))
            scales.append((nw / w, nh / h))
        H = int(math.ceil(max(s[0] for s in sizes) / 32) * 32)
        W = int(math.ceil(max(s[1] for s in sizes) / 32) * 32)
        batch = resized[0].new_zeros((len(images), 3, H, W))
        for i, x in enumerate(resized):
            batch[i, :, :x.shape[-2], :x.shape[-1]] = (x[0] - self.mean[0]) / self.std[0]
        return batch, scales

    def _features(self, x):
        feats = []
        for st in self.stages:
            x = st(x)
            feats.append(x)
        y = self.lateral[3](feats[4])
        for k in (2, 1, 0):
            f = self.lateral[k](feats[k + 1])
            y = f + F.interpolate(y, size=f.shape[-2:], mode="nearest")
        return self.shared(self.smooth(y))  # stride 4

    # -- targets and loss ----------------------------------------------------------------------
    def _targets(self, targets, scales, shape, device):
        B, (h, w) = len(targets), shape
        heat = torch.zeros((B, self.n_classes, h, w), device=device)
        ind, cls_, size_t, off_t, bidx = [], [], [], [], []
        ys = torch.arange(h, device=device, dtype=torch.float32).view(h, 1)
        xs = torch.arange(w, device=device, dtype=torch.float32).view(1, w)
        for b, (t, (sx, sy)) in enumerate(zip(targets, scales)):
            boxes = t["boxes"].to(device).float()
            for box, lab in zip(boxes, t["labels"]):
                x0, y0, x1, y1 = (box * torch.tensor([sx, sy, sx, sy], device=device)
                                  / self.stride).tolist()
                bw, bh = max(x1 - x0, 1e-3), max(y1 - y0, 1e-3)
                cx, cy = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5  # cell centres at integers
                ix, iy = int(round(cx)), int(round(cy))
                if not (0 <= ix < w and 0 <= iy < h):
                    continue
                c = int(lab) - 1
                sgx = max(0.8, self.cfg.heatmap_sigma * bw)
                sgy = max(0.8, self.cfg.heatmap_sigma * bh)
                g = torch.exp(-((xs - ix) ** 2) / (2 * sgx ** 2)
                              - ((ys - iy) ** 2) / (2 * sgy ** 2))
                heat[b, c] = torch.maximum(heat[b, c], g)
                ind.append(iy * w + ix)
                bidx.append(b)
                cls_.append(c)
                size_t.append([math.log(bw), math.log(bh)])
                off_t.append([cx - ix, cy - iy])
        return heat, ind, bidx, size_t, off_t

    def _loss(self, out, targets, scales):
        heat_p, size_p, off_p = out
        B, _, h, w = heat_p.shape
        heat_t, ind, bidx, size_t, off_t = self._targets(targets, scales, (h, w), heat_p.device)
        p = torch.sigmoid(heat_p).clamp(1e-4, 1 - 1e-4)
        pos = heat_t.eq(1).float()
        neg = 1 - pos
        pos_l = -(torch.log(p) * (1 - p) ** 2 * pos).sum()
        neg_l = -(torch.log(1 - p) * p ** 2 * (1 - heat_t) ** 4 * neg).sum()
        n_pos = max(1.0, float(pos.sum()))
        l_heat = (pos_l + neg_l) / n_pos
        if ind:
            bi = torch.as_tensor(bidx, device=heat_p.device)
            ii = torch.as_tensor(ind, device=heat_p.device)
            sp = size_p.view(B, 2, -1)[bi, :, ii]
            op = off_p.view(B, 2, -1)[bi, :, ii]
            l_box = F.l1_loss(sp, torch.tensor(size_t, device=sp.device)) + \
                F.l1_loss(op, torch.tensor(off_t, device=op.device))
        else:
            l_box = heat_p.sum() * 0
        return {"classification": l_heat, "bbox_regression": l_box}

    # -- forward -------------------------------------------------------------------------------
    def forward(self, images, targets=None):
        x, scales = self._batch(images)
        f = self._features(x)
        out = (self.heat(f), self.size(f), self.offset(f))
        if self.training:
            if targets is None:
                raise ValueError("targets are needed in training mode")
            return self._loss(out, targets, scales)
        return self._decode(out, scales, [im.shape[-2:] for im in images])

    @torch.no_grad()
    def _decode(self, out, scales, orig_sizes):
        # lazy: torchvision (~6 s) to import, loaded only when this runs
        from torchvision.ops import batched_nms

        heat_p, size_p, off_p = out
        B, C, h, w = heat_p.shape
        p = torch.sigmoid(heat_p)
        peak = F.max_pool2d(p, 3, 1, 1)
        p = p * (peak == p)
        k = min(self.cfg.detections_per_img * 2, C * h * w)
        res = []
        for b in range(B):
            sc, idx = p[b].reshape(-1).topk(k)
            keep = sc >= self.cfg.score_thresh
            sc, idx = sc[keep], idx[keep]
            c = idx // (h * w)
            pix = idx % (h * w)
            yy, xx = (pix // w).float(), (pix % w).float()
            lw = size_p[b, 0].reshape(-1)[pix].clamp(max=8)
            lh = size_p[b, 1].reshape(-1)[pix].clamp(max=8)
            cx = (xx + off_p[b, 0].reshape(-1)[pix] + 0.5) * self.stride
            cy = (yy + off_p[b, 1].reshape(-1)[pix] + 0.5) * self.stride
            bw, bh = torch.exp(lw) * self.stride, torch.exp(lh) * self.stride
            sx, sy = scales[b]
            boxes = torch.stack([(cx - bw / 2) / sx, (cy - bh / 2) / sy, (cx + bw / 2) / sx,
                                 (cy + bh / 2) / sy], 1)
            H0, W0 = orig_sizes[b]
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, float(W0))
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, float(H0))
            keep = batched_nms(boxes, sc, c, self.cfg.nms_thresh)[:self.cfg.detections_per_img]
            res.append({"boxes": boxes[keep], "scores": sc[keep], "labels": c[keep] + 1})
        return res
