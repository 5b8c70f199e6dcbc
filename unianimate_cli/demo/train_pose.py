"""Train the demo family's ONNX person detector and pose model: ``python -m unianimate_cli.demo.train_pose OUT``.

Writes ``OUT/demo_detector.onnx`` (the YOLOX-L signature: ``images`` float32 [batch, 3, 640,
640] raw 0..255 BGR -> ``output`` [batch, 8400, 85] raw YOLOX rows) and ``OUT/demo_pose.onnx``
(the DWPose-LL signature: ``input`` [batch, 3, 384, 288] normalised BGR -> ``simcc_x``
[batch, 133, 576], ``simcc_y`` [batch, 133, 768]), opset 17, batch axis symbolic, plus
``OUT/demo_pose_models.pt`` (state dicts) and ``OUT/metrics.json``. Both run unchanged
through ``pose/dwpose.py``; the held-out metric printed at the end is measured through it.

Data comes on the fly from ``pose_data.make_pose_sample`` (figure seeds >= 1,000,000; sample i
of run seed s uses ``default_rng([s, i])``), so a run is reproducible up to GPU arithmetic.
Preprocessing is ``pose/dwpose.py``'s own (letterbox, box padding and affine crop), so the
models see in training exactly what they see in use.

The shipped files (``unianimate_cli/demo/family``, 1.9 MB together) were trained on one H100
with ``--seed 0 --workers 14 --time-limit 225`` (torch 2.11, 2026-11-24): the 14 data workers
were the bottleneck at ~420 samples/s, so the clock ended the run at 1470 steps of 64 and the
learning-rate cosine followed the clock; a rerun reproduces the quality, not the exact weights.
Held-out result (figure seeds 0-99, through ``pose/dwpose.py`` on CPU), clean / degraded:
detection recall 1.00 / 0.99, box IoU 0.89 / 0.90, body-joint error 1.1 px (0.9% of the box
height) / 1.2 px, PCK@0.05 0.99 / 0.97, no person on 21 person-free images.

Models (both small CNNs with depthwise-separable blocks):
* detector: three levels (strides 8, 16, 32) with a top-down merge; each anchor predicts
  (dx, dy, log w, log h, objectness, person); the 79 other COCO classes are constant zero.
  Anchors near the person's centre whose level suits its size are positives (centre sampling,
  as in FCOS/YOLOX); the person score is trained towards the IoU of the predicted box, so
  NMS keeps the best-placed box.
* pose: stride-16 features -> one map per keypoint -> a shared MLP -> SimCC logits per axis
  (RTMPose's head, without the attention). The exported SimCC rows are
  ``sigmoid(visibility) * exp(logits - max(logits))``: the argmax is the location and the peak
  value, which ``decode_simcc`` reports as the score, is the visibility probability.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from unianimate_cli.demo.pose_data import (
    DETECTOR_FILE,
    NUM_COCO,
    POSE_FILE,
    TRAIN_SEED_BASE,
    empty_images,
    evaluate,
    held_out_samples,
    make_pose_sample,
)
from unianimate_cli.pose import dwpose

POSE_INPUT_HW = (384, 288)
SIMCC_BINS = (int(POSE_INPUT_HW[1] * dwpose.SIMCC_SPLIT_RATIO), int(POSE_INPUT_HW[0] * dwpose.SIMCC_SPLIT_RATIO))
OPSET = 17
EVAL_SEEDS = tuple(range(100))  # held out: below pose_data.TRAIN_SEED_BASE
NEGATIVE_FRACTION = 0.08  # samples without anybody
# object size (longest side, letterboxed pixels) each level learns: FCOS-like, overlapping
LEVEL_SIZE_RANGES = ((0.0, 160.0), (96.0, 360.0), (220.0, 1e9))
CENTRE_RADIUS = 2.5  # positives lie within this many strides of the box centre
SIMCC_SIGMA = (6.0, 6.93)  # label widths in bins (RTMPose's for a 288x384 input)
# location-loss weight per COCO-WholeBody point: body and feet first, face and hands after
KEYPOINT_WEIGHTS = np.concatenate([np.full(17, 1.0), np.full(6, 0.7), np.full(68, 0.3), np.full(42, 0.3)])


# ----- models ----------------------------------------------------------------------------------------


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act:
        layers.append(nn.SiLU())
    return nn.Sequential(*layers)


class SepBlock(nn.Module):
    """Depthwise k x k then pointwise 1 x 1 (MobileNet); residual when the shape is kept."""

    def __init__(self, cin: int, cout: int, stride: int = 1, k: int = 3) -> None:
        super().__init__()
        self.dw = _conv_bn(cin, cin, k, stride, groups=cin)
        self.pw = _conv_bn(cin, cout, 1)
        self.is_residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.pw(self.dw(x))
        return x + y if self.is_residual else y


class TinyDetector(nn.Module):
    """Person detector with YOLOX's raw output layout: b 3 640 640 (BGR 0..255) -> b 8400 85."""

    def __init__(self, width: tuple[int, int, int, int, int] = (16, 24, 40, 64, 96)) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = width
        self.stem = _conv_bn(3, c1, 3, 2)  # /2
        self.s2 = nn.Sequential(SepBlock(c1, c2, 2), SepBlock(c2, c2))  # /4
        self.s3 = nn.Sequential(SepBlock(c2, c3, 2), SepBlock(c3, c3), SepBlock(c3, c3, k=5))  # /8
        self.s4 = nn.Sequential(SepBlock(c3, c4, 2), SepBlock(c4, c4, k=5), SepBlock(c4, c4, k=5))  # /16
        self.s5 = nn.Sequential(SepBlock(c4, c5, 2), SepBlock(c5, c5, k=5), SepBlock(c5, c5, k=5))  # /32
        self.lat5 = _conv_bn(c5, c4, 1)
        self.lat4 = _conv_bn(c4, c3, 1)
        self.heads = nn.ModuleList([nn.Sequential(SepBlock(c, c, k=5), nn.Conv2d(c, 6, 1)) for c in (c3, c4, c5)])
        with torch.no_grad():
            for head in self.heads:
                conv = list(head.children())[-1]
                assert isinstance(conv, nn.Conv2d) and conv.bias is not None
                conv.weight.normal_(std=0.01)
                conv.bias.zero_()
                conv.bias[4:].fill_(-4.6)  # start with objectness and class near 0.01

    def forward_raw(self, images: torch.Tensor) -> torch.Tensor:
        """b 3 640 640 -> b 8400 6 logits (dx, dy, log w, log h, obj, person), levels s8, s16, s32."""
        x = self.stem(images / 255.0 - 0.5)
        p3 = self.s3(self.s2(x))
        p4 = self.s4(p3)
        p5 = self.s5(p4)
        p4 = p4 + nn.functional.interpolate(self.lat5(p5), scale_factor=2.0, mode="nearest")
        p3 = p3 + nn.functional.interpolate(self.lat4(p4), scale_factor=2.0, mode="nearest")
        outs = [head(p).flatten(2) for head, p in zip(self.heads, (p3, p4, p5))]  # b 6 (h w)
        return torch.cat(outs, dim=2).transpose(1, 2)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        raw = self.forward_raw(images)
        scores = torch.sigmoid(raw[..., 4:6])
        out = torch.cat([raw[..., :4], scores], dim=-1)
        return nn.functional.pad(out, (0, 85 - 6))  # classes 1..79: probability 0


class TinyPose(nn.Module):
    """Whole-body SimCC pose model: b 3 384 288 (normalised BGR) -> (b 133 576, b 133 768)."""

    def __init__(self, width: tuple[int, int, int, int] = (24, 48, 80, 128), hidden: int = 128) -> None:
        super().__init__()
        c1, c2, c3, c4 = width
        self.stem = nn.Sequential(_conv_bn(3, c1, 3, 2), SepBlock(c1, c1))  # /2
        self.s2 = nn.Sequential(SepBlock(c1, c2, 2), SepBlock(c2, c2))  # /4
        self.s3 = nn.Sequential(SepBlock(c2, c3, 2), SepBlock(c3, c3), SepBlock(c3, c3, k=5))  # /8
        self.s4 = nn.Sequential(SepBlock(c3, c4, 2), SepBlock(c4, c4, k=5), SepBlock(c4, c4, k=5))  # /16
        self.s5 = nn.Sequential(SepBlock(c4, c4, 2), SepBlock(c4, c4, k=5))  # /32, for context
        self.up = _conv_bn(c4, c4, 1)
        self.to_maps = nn.Conv2d(c4, NUM_COCO, 1)
        n = (POSE_INPUT_HW[0] // 16) * (POSE_INPUT_HW[1] // 16)
        self.mlp = nn.Sequential(nn.Linear(n, hidden), nn.SiLU(), nn.LayerNorm(hidden))
        self.to_x = nn.Linear(hidden, SIMCC_BINS[0])
        self.to_y = nn.Linear(hidden, SIMCC_BINS[1])
        self.to_vis = nn.Linear(hidden, 1)

    def forward_raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Logits: x (b k 576), y (b k 768), visibility (b k)."""
        f4 = self.s4(self.s3(self.s2(self.stem(x))))
        f4 = f4 + nn.functional.interpolate(self.up(self.s5(f4)), scale_factor=2.0, mode="nearest")
        h = self.mlp(self.to_maps(f4).flatten(2))  # b k hidden
        return self.to_x(h), self.to_y(h), self.to_vis(h)[..., 0]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lx, ly, lv = self.forward_raw(x)
        p = torch.sigmoid(lv)[..., None]
        sx = p * torch.exp(lx - lx.amax(dim=-1, keepdim=True))
        sy = p * torch.exp(ly - ly.amax(dim=-1, keepdim=True))
        return sx, sy


# ----- targets (numpy, in the data workers) -------------------------------------------------------------


def _anchors() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Grid (x, y) of each of the 8400 anchors, its stride and its level, in decode_yolox's order."""
    grids, strides, levels = [], [], []
    for level, s in enumerate(dwpose.YOLOX_STRIDES):
        n = dwpose.DETECTOR_INPUT_HW[0] // s
        yv, xv = np.mgrid[0:n, 0:n]
        grids.append(np.stack([xv, yv], -1).reshape(-1, 2))
        strides.append(np.full(n * n, s))
        levels.append(np.full(n * n, level))
    grid, stride = np.concatenate(grids).astype(np.float32), np.concatenate(strides).astype(np.float32)
    return grid, stride, np.concatenate(levels)


ANCHOR_GRID, ANCHOR_STRIDE, ANCHOR_LEVEL = _anchors()


def detector_targets(box_lb: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Positives (8400,) bool and encoded box targets (8400, 4) for one letterboxed box (or None)."""
    pos = np.zeros(len(ANCHOR_GRID), dtype=bool)
    reg = np.zeros((len(ANCHOR_GRID), 4), np.float32)
    if box_lb is None:
        return pos, reg
    x0, y0, x1, y1 = (float(v) for v in box_lb)
    cx, cy, w, h = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    size = max(w, h)
    centre = (ANCHOR_GRID + 0.5) * ANCHOR_STRIDE[:, None]
    near = np.all(np.abs(centre - np.array([cx, cy])) < CENTRE_RADIUS * ANCHOR_STRIDE[:, None], axis=1)
    inside = (centre[:, 0] > x0) & (centre[:, 0] < x1) & (centre[:, 1] > y0) & (centre[:, 1] < y1)
    lo = np.array([r[0] for r in LEVEL_SIZE_RANGES])[ANCHOR_LEVEL]
    hi = np.array([r[1] for r in LEVEL_SIZE_RANGES])[ANCHOR_LEVEL]
    pos = near & inside & (size >= lo) & (size <= hi)
    if not pos.any():  # a tiny box: the anchor nearest its centre on the finest level
        d = np.where(ANCHOR_LEVEL == 0, np.hypot(*(centre - np.array([cx, cy])).T), np.inf)
        pos[int(np.argmin(d))] = True
    s = ANCHOR_STRIDE
    reg[:, 0] = cx / s - ANCHOR_GRID[:, 0]
    reg[:, 1] = cy / s - ANCHOR_GRID[:, 1]
    reg[:, 2] = np.log(w / s)
    reg[:, 3] = np.log(h / s)
    reg[~pos] = 0.0
    return pos, reg


def jittered_box(box: tuple[float, float, float, float], rng: np.random.Generator) -> np.ndarray:
    """The ground-truth box moved and resized a little, as a detector would place it."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2 + rng.normal(0, 0.04) * w
    cy = (y0 + y1) / 2 + rng.normal(0, 0.04) * h
    w *= math.exp(rng.normal(0, 0.07))
    h *= math.exp(rng.normal(0, 0.07))
    return np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])


def pose_crop_and_targets(
    image_bgr: np.ndarray, box: np.ndarray, keypoints: np.ndarray, visible: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """dwpose's own crop of ``box``: uint8 (384, 288, 3), keypoints in crop pixels (133, 2), in-crop visibility."""
    wh = (POSE_INPUT_HW[1], POSE_INPUT_HW[0])
    center, scale = dwpose.box_center_scale(box.tolist())
    scale = dwpose.fix_aspect(scale, wh[0] / wh[1])
    m = dwpose.warp_matrix(center, scale, wh)
    crop = dwpose.crop(image_bgr, m, wh)
    xy = keypoints @ m[:, :2].T + m[:, 2]
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < wh[0]) & (xy[:, 1] >= 0) & (xy[:, 1] < wh[1])
    return crop, xy.astype(np.float32), visible & inside


class SampleStream(torch.utils.data.IterableDataset):
    """Endless samples: letterboxed image, anchor positives, box targets, pose crop, crop keypoints, visibility."""

    def __init__(self, seed: int) -> None:
        super().__init__()
        self.seed = seed

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        info = torch.utils.data.get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        i = worker
        while True:
            yield self.sample(i)
            i += num_workers

    def sample(self, i: int) -> tuple[np.ndarray, ...]:
        """Training sample ``i`` of this run: its own figure (seed >= TRAIN_SEED_BASE) and rng."""
        rng = np.random.default_rng([self.seed, i])
        has_person = rng.random() >= NEGATIVE_FRACTION
        s = make_pose_sample(TRAIN_SEED_BASE + self.seed * 10_000_000 + i, rng, has_person=has_person)
        padded, ratio = dwpose.letterbox(s.image_bgr)
        box_lb = None if s.box_xyxy is None else np.array(s.box_xyxy) * ratio
        pos, reg = detector_targets(box_lb)
        if s.box_xyxy is not None:
            crop, xy, vis = pose_crop_and_targets(s.image_bgr, jittered_box(s.box_xyxy, rng), s.keypoints, s.visible)
        else:  # nobody: a random crop, every keypoint invisible
            h, w = s.image_bgr.shape[:2]
            crop, xy, vis = pose_crop_and_targets(
                s.image_bgr, jittered_box((0.2 * w, 0.1 * h, 0.8 * w, 0.9 * h), rng), s.keypoints, s.visible
            )
        return padded, pos, reg, crop, xy, vis


# ----- losses (torch, on the training device) -----------------------------------------------------------


def _decode_boxes(raw: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor) -> torch.Tensor:
    """b a 4 encoded -> b a 4 xyxy letterboxed pixels (decode_yolox's formula)."""
    cxy = (raw[..., :2] + grid) * stride[:, None]
    wh = torch.exp(raw[..., 2:4].clamp(max=8.0)) * stride[:, None]
    return torch.cat([cxy - wh / 2, cxy + wh / 2], dim=-1)


def _area(box: torch.Tensor) -> torch.Tensor:
    return (box[..., 2:] - box[..., :2]).clamp(min=0).prod(-1)


def _iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    return inter / (_area(a) + _area(b) - inter + 1e-6)


def detector_loss(
    raw: torch.Tensor, pos: torch.Tensor, reg: torch.Tensor, grid: torch.Tensor, stride: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """YOLOX-style loss: objectness BCE everywhere, IoU-aware person score, L1 + IoU box terms at positives."""
    bce = nn.functional.binary_cross_entropy_with_logits
    num_pos = pos.sum().clamp(min=1).float()
    obj = bce(raw[..., 4], pos.float(), reduction="sum") / num_pos
    pred = _decode_boxes(raw, grid, stride)[pos]
    target = _decode_boxes(reg, grid, stride)[pos]
    iou = _iou(pred, target)
    box = (1 - iou).sum() / num_pos
    l1 = (raw[..., :4][pos] - reg[pos]).abs().sum() / num_pos
    cls = bce(raw[..., 5][pos], iou.detach().clamp(min=0.0), reduction="sum") / num_pos
    loss = obj + 5.0 * box + l1 + cls
    return loss, {"obj": obj.item(), "iou": iou.mean().item() if len(iou) else 0.0, "l1": l1.item()}


def pose_loss(
    lx: torch.Tensor, ly: torch.Tensor, lv: torch.Tensor, xy: torch.Tensor, vis: torch.Tensor, weights: torch.Tensor
) -> tuple[torch.Tensor, dict[str, float]]:
    """SimCC cross-entropy against Gaussian labels at visible points, plus visibility BCE."""
    losses = []
    for logits, coord, sigma in ((lx, xy[..., 0], SIMCC_SIGMA[0]), (ly, xy[..., 1], SIMCC_SIGMA[1])):
        bins = torch.arange(logits.shape[-1], device=logits.device, dtype=torch.float32)
        target = torch.exp(-0.5 * ((bins - coord[..., None] * dwpose.SIMCC_SPLIT_RATIO) / sigma) ** 2)
        target = target / target.sum(-1, keepdim=True).clamp(min=1e-8)
        ce = -(target * torch.log_softmax(logits.float(), dim=-1)).sum(-1)  # b k
        losses.append(ce)
    w = vis.float() * weights
    loc = ((losses[0] + losses[1]) * w).sum() / w.sum().clamp(min=1)
    visl = nn.functional.binary_cross_entropy_with_logits(lv.float(), vis.float())
    loss = loc + 2.0 * visl
    return loss, {"loc": loc.item(), "vis": visl.item()}


# ----- training, export, evaluation ----------------------------------------------------------------------


def _quiet_worker(_: int) -> None:
    """One thread per data worker: the workers already use every core."""
    import cv2

    torch.set_num_threads(1)
    cv2.setNumThreads(1)


def train(
    seed: int,
    steps: int,
    batch_size: int,
    num_workers: int,
    device: torch.device,
    time_limit_s: float = math.inf,
    log_every: int = 100,
) -> tuple[TinyDetector, TinyPose, int]:
    """Train both models together on one sample stream; returns them and the number of steps run.

    The learning rate warms up, then follows a cosine to zero over ``steps`` or ``time_limit_s``,
    whichever runs out first (the time limit keeps a GPU run inside its lease). Logs to stderr.
    """
    torch.manual_seed(seed)
    det, pose = TinyDetector().to(device), TinyPose().to(device)
    params = list(det.parameters()) + list(pose.parameters())
    base_lr = 3e-3
    opt = torch.optim.AdamW(params, lr=base_lr, weight_decay=1e-4)
    warmup = max(min(steps // 20, 200), 1)
    loader = torch.utils.data.DataLoader(
        SampleStream(seed),
        batch_size=batch_size,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
        worker_init_fn=_quiet_worker,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
    grid = torch.from_numpy(ANCHOR_GRID).to(device)
    stride = torch.from_numpy(ANCHOR_STRIDE).to(device)
    mean = torch.tensor(dwpose.POSE_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(dwpose.POSE_STD, device=device).view(1, 3, 1, 1)
    weights = torch.from_numpy(KEYPOINT_WEIGHTS.astype(np.float32)).to(device)
    det.train()
    pose.train()
    start = time.time()
    step = 0
    for batch in loader:
        progress = max(step / steps, (time.time() - start) / time_limit_s)
        if progress >= 1.0:
            break
        for group in opt.param_groups:
            group["lr"] = base_lr * min((step + 1) / warmup, 0.5 * (1 + math.cos(math.pi * progress)))
        padded, pos, reg, crop, xy, vis = (t.to(device, non_blocking=True) for t in batch)
        images = padded.permute(0, 3, 1, 2).float()
        crops = (crop.permute(0, 3, 1, 2).float() - mean) / std
        d_loss, d_info = detector_loss(det.forward_raw(images), pos, reg, grid, stride)
        p_loss, p_info = pose_loss(*pose.forward_raw(crops), xy, vis, weights)
        opt.zero_grad(set_to_none=True)
        (d_loss + p_loss).backward()
        nn.utils.clip_grad_norm_(params, 5.0)
        opt.step()
        if step % log_every == 0:
            elapsed = time.time() - start
            info = " ".join(f"{k}={v:.3f}" for k, v in {**d_info, **p_info}.items())
            sys.stderr.write(
                f"step {step} {elapsed:.0f}s {(step + 1) * batch_size / max(elapsed, 1e-9):.0f} samples/s "
                f"det={d_loss.item():.3f} pose={p_loss.item():.3f} {info}\n"
            )
            sys.stderr.flush()
        step += 1
    sys.stderr.write(f"trained {step} steps of {batch_size} in {time.time() - start:.0f}s\n")
    return det, pose, step


def export_onnx(det: TinyDetector, pose: TinyPose, out_dir: Path) -> tuple[Path, Path]:
    """Both models as ONNX (opset 17, symbolic batch) with the official tensor names and shapes."""
    det, pose = det.cpu().eval(), pose.cpu().eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    det_path, pose_path = out_dir / DETECTOR_FILE, out_dir / POSE_FILE
    with torch.no_grad():
        torch.onnx.export(
            det, (torch.zeros(1, 3, *dwpose.DETECTOR_INPUT_HW),), str(det_path), dynamo=False,
            opset_version=OPSET, input_names=["images"], output_names=["output"],
            dynamic_axes={"images": {0: "batch"}, "output": {0: "batch"}},
        )  # fmt: skip
        torch.onnx.export(
            pose, (torch.zeros(1, 3, *POSE_INPUT_HW),), str(pose_path), dynamo=False,
            opset_version=OPSET, input_names=["input"], output_names=["simcc_x", "simcc_y"],
            dynamic_axes={"input": {0: "batch"}, "simcc_x": {0: "batch"}, "simcc_y": {0: "batch"}},
        )  # fmt: skip
    _set_output_shapes(det_path, {"output": ("batch", ANCHOR_GRID.shape[0], 85)})
    _set_output_shapes(
        pose_path, {"simcc_x": ("batch", NUM_COCO, SIMCC_BINS[0]), "simcc_y": ("batch", NUM_COCO, SIMCC_BINS[1])}
    )
    return det_path, pose_path


def _set_output_shapes(path: Path, shapes: dict[str, tuple[str | int, ...]]) -> None:
    """Write the outputs' static sizes into the graph (the exporter leaves them symbolic after Pad/Mul)."""
    import onnx

    model = onnx.load(str(path))
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        for dim, size in zip(dims, shapes[out.name], strict=True):
            if isinstance(size, str):
                dim.dim_param = size
            else:
                dim.dim_value = size
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def evaluate_files(det_path: Path, pose_path: Path, num_images: int = len(EVAL_SEEDS)) -> dict[str, Any]:
    """Held-out metrics through ``pose.dwpose.DWPose`` on CPU: clean and degraded renders."""
    model = dwpose.DWPose(det_path, pose_path, device="cpu")
    seeds = EVAL_SEEDS[:num_images]
    clean = evaluate(model, held_out_samples(seeds, is_degraded=False), empty_images(seeds[:20]))
    degraded = evaluate(model, held_out_samples(seeds, is_degraded=True))
    return {"clean": asdict(clean), "degraded": asdict(degraded), "clean_summary": clean.summary(),
            "degraded_summary": degraded.summary()}  # fmt: skip


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu() for k, v in state.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m unianimate_cli.demo.train_pose", description=__doc__.splitlines()[0]
    )
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--time-limit", type=float, default=math.inf, help="seconds of training at most")
    parser.add_argument("--eval-images", type=int, default=len(EVAL_SEEDS))
    parser.add_argument(
        "--from-checkpoint", type=Path, help="skip training: export and evaluate a saved demo_pose_models.pt"
    )
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    if args.from_checkpoint is not None:
        if not args.from_checkpoint.is_file():
            parser.error(f"checkpoint {args.from_checkpoint} does not exist")
        state = torch.load(args.from_checkpoint, map_location="cpu", weights_only=True)
        det, pose = TinyDetector(), TinyPose()
        det.load_state_dict(state["detector"])
        pose.load_state_dict(state["pose"])
        steps_run, train_s = int(state["steps"]), None
        args.seed, args.batch_size = int(state["seed"]), state.get("batch_size")
    else:
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        start = time.time()
        det, pose, steps_run = train(
            args.seed, args.steps, args.batch_size, args.workers, torch.device(args.device), args.time_limit
        )
        train_s = round(time.time() - start, 1)
        state = {"detector": _cpu(det.state_dict()), "pose": _cpu(pose.state_dict())}
        state |= {"seed": args.seed, "steps": steps_run, "batch_size": args.batch_size}
        torch.save(state, args.out_dir / "demo_pose_models.pt")
    det_path, pose_path = export_onnx(det, pose, args.out_dir)
    metrics = evaluate_files(det_path, pose_path, args.eval_images)
    metrics |= {"train_seconds": train_s, "steps": steps_run, "batch_size": args.batch_size,
                "seed": args.seed, "torch": torch.__version__,
                "trained_on": args.device if args.from_checkpoint is None else f"checkpoint {args.from_checkpoint}",
                "bytes": {p.name: p.stat().st_size for p in (det_path, pose_path)}}  # fmt: skip
    (args.out_dir / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
    sys.stdout.write(f"held-out clean:    {metrics['clean_summary']}\n")
    sys.stdout.write(f"held-out degraded: {metrics['degraded_summary']}\n")
    sys.stdout.write(f"{det_path}\n{pose_path}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
