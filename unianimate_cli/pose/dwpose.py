"""DWPose on onnxruntime: YOLOX person boxes, then RTMPose/DWPose whole-body keypoints.

Reproduces the reference's ``dwpose/onnxdet.py``, ``dwpose/onnxpose.py`` and
``dwpose/wholebody.py`` (spec/POSE.md sections 2-5, fixtures/pose/onnx_io.json): the
top-left letterbox with truncated sizes, the float32 YOLOX decode, class-aware NMS with "+1"
IoU, the aspect-fixed affine crops, ImageNet statistics applied to B, G, R, SimCC argmax
decoding, and the COCO-WholeBody -> OpenPose reordering. Images are BGR uint8 (H, W, 3), as
OpenCV reads them: both models were trained on BGR input and nothing swaps channels.

What differs from the reference, on purpose: the provider is chosen explicitly (CUDA when
torch sees a GPU and onnxruntime has the CUDA provider, else CPU) and reported; the pose model
runs on batches of crops when its batch axis is dynamic; the person is chosen by size and
centrality (or by index) instead of "highest detector score", and can be tracked through a
video; a photo without anybody raises an error instead of posing the whole image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np

from unianimate_cli.errors import InputError, WeightsError
from unianimate_cli.pose.keypoints import VISIBILITY_THRESHOLD, PoseFrame

log = logging.getLogger(__name__)

# ----- constants (spec/POSE.md section 9) -------------------------------------------------------

DETECTOR_INPUT_HW = (640, 640)
LETTERBOX_PAD_VALUE = 114
YOLOX_STRIDES = (8, 16, 32)
NMS_SCORE_THRESHOLD = 0.1
NMS_IOU_THRESHOLD = 0.45
PERSON_SCORE_THRESHOLD = 0.3
PERSON_CLASS = 0
BOX_PADDING = 1.25
POSE_MEAN = (123.675, 116.28, 103.53)  # ImageNet RGB statistics, applied to B, G, R (kept quirk)
POSE_STD = (58.395, 57.12, 57.375)
SIMCC_SPLIT_RATIO = 2.0

# Wholebody.__call__: after inserting the neck at index 17, out[OPENPOSE_IDX] = in[MMPOSE_IDX].
_MMPOSE_IDX = (17, 6, 8, 10, 7, 9, 12, 14, 16, 13, 15, 2, 1, 4, 3)
_OPENPOSE_IDX = (1, 2, 3, 4, 6, 7, 8, 9, 10, 12, 13, 14, 15, 16, 17)

Device = Literal["auto", "cuda", "cpu"]
PersonChoice = Literal["auto"] | int


# ----- detector pre/post-processing (dwpose/onnxdet.py) -----------------------------------------


def letterbox(image_bgr: np.ndarray, input_hw: tuple[int, int] = DETECTOR_INPUT_HW) -> tuple[np.ndarray, float]:
    """Resize into a 114-grey canvas at the top-left corner; return (uint8 H x W x 3, ratio r).

    The resized size is (int(W r), int(H r)), truncated like the reference (616x385 -> 639x399).
    """
    import cv2

    h, w = image_bgr.shape[:2]
    r = min(input_hw[0] / h, input_hw[1] / w)
    new_w, new_h = int(w * r), int(h * r)
    padded = np.full((input_hw[0], input_hw[1], 3), LETTERBOX_PAD_VALUE, dtype=np.uint8)
    resized = cv2.resize(image_bgr, (new_w, new_h), interpolation=cv2.INTER_LINEAR).astype(np.uint8)
    padded[:new_h, :new_w] = resized.reshape(new_h, new_w, -1)
    return padded, r


def detector_input(padded_hwc: np.ndarray) -> np.ndarray:
    """uint8 H x W x 3 -> float32 (1, 3, H, W), raw 0..255 values (no normalisation)."""
    return np.ascontiguousarray(padded_hwc.transpose(2, 0, 1), dtype=np.float32)[None]


def decode_yolox(raw: np.ndarray, input_hw: tuple[int, int] = DETECTOR_INPUT_HW) -> np.ndarray:
    """Raw YOLOX output (1, A, 85) or (A, 85) float32 -> decoded (A, 85) float32 (cx, cy, w, h, obj, cls...).

    Anchors: strides 8, 16, 32 in that order, row-major inside a level. Written back into a
    float32 array as the reference's ``demo_postprocess`` does.
    """
    out = np.array(raw, dtype=np.float32).reshape(-1, raw.shape[-1])
    grids, strides = [], []
    for s in YOLOX_STRIDES:
        hs, ws = input_hw[0] // s, input_hw[1] // s
        xv, yv = np.meshgrid(np.arange(ws), np.arange(hs))
        grids.append(np.stack((xv, yv), 2).reshape(-1, 2))
        strides.append(np.full((hs * ws, 1), s))
    grid = np.concatenate(grids, 0)
    stride = np.concatenate(strides, 0)
    if grid.shape[0] != out.shape[0]:
        raise WeightsError(
            f"detector output has {out.shape[0]} anchors, expected {grid.shape[0]} for a {input_hw} input",
            "use the YOLOX-L ONNX file DWPose ships (yolox_l.onnx)",
        )
    out[:, :2] = (out[:, :2] + grid) * stride
    out[:, 2:4] = np.exp(out[:, 2:4]) * stride
    return out


def yolox_boxes_scores(decoded: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Decoded predictions -> (boxes xyxy (A, 4) in original pixels, scores (A, 80)), float32, unclipped."""
    boxes = decoded[:, :4]
    scores = decoded[:, 4:5] * decoded[:, 5:]
    xyxy = np.ones_like(boxes)
    xyxy[:, 0] = boxes[:, 0] - boxes[:, 2] / 2.0
    xyxy[:, 1] = boxes[:, 1] - boxes[:, 3] / 2.0
    xyxy[:, 2] = boxes[:, 0] + boxes[:, 2] / 2.0
    xyxy[:, 3] = boxes[:, 1] + boxes[:, 3] / 2.0
    xyxy /= ratio
    return xyxy, scores


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy single-class NMS with the reference's "+1" pixel areas; returns kept indices."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1 + 1) * (y2 - y1 + 1)
    order = scores.argsort()[::-1]
    keep: list[int] = []
    while order.size > 0:
        i = int(order[0])
        keep.append(i)
        xx1 = np.maximum(x1[i], x1[order[1:]])
        yy1 = np.maximum(y1[i], y1[order[1:]])
        xx2 = np.minimum(x2[i], x2[order[1:]])
        yy2 = np.minimum(y2[i], y2[order[1:]])
        inter = np.maximum(0.0, xx2 - xx1 + 1) * np.maximum(0.0, yy2 - yy1 + 1)
        iou = inter / (areas[i] + areas[order[1:]] - inter)
        order = order[np.where(iou <= iou_threshold)[0] + 1]
    return keep


def multiclass_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    iou_threshold: float = NMS_IOU_THRESHOLD,
    score_threshold: float = NMS_SCORE_THRESHOLD,
) -> np.ndarray:
    """Class-aware NMS over every class; returns (M, 6) float64 rows [x1, y1, x2, y2, score, class]."""
    dets = []
    for c in range(scores.shape[1]):
        cls_scores = scores[:, c]
        mask = cls_scores > score_threshold
        if not mask.any():
            continue
        valid_scores, valid_boxes = cls_scores[mask], boxes[mask]
        keep = nms(valid_boxes, valid_scores, iou_threshold)
        if keep:
            dets.append(
                np.concatenate([valid_boxes[keep], valid_scores[keep, None], np.full((len(keep), 1), float(c))], 1)
            )
    if not dets:
        return np.zeros((0, 6))
    return np.concatenate(dets, 0).astype(np.float64)


def person_boxes(dets: np.ndarray) -> np.ndarray:
    """Class-0 rows with score > 0.3, in NMS order: (N, 4) float64 xyxy (may be (0, 4))."""
    keep = (dets[:, 4] > PERSON_SCORE_THRESHOLD) & (dets[:, 5] == PERSON_CLASS)
    return dets[keep, :4].reshape(-1, 4)


# ----- pose model pre/post-processing (dwpose/onnxpose.py) --------------------------------------


def box_center_scale(box_xyxy: Sequence[float], padding: float = BOX_PADDING) -> tuple[np.ndarray, np.ndarray]:
    """Box -> (centre (2,), scale (2,) = box size x padding), float64."""
    x1, y1, x2, y2 = (np.float64(v) for v in box_xyxy)
    center = np.array([x1 + x2, y1 + y2]) * 0.5
    scale = np.array([x2 - x1, y2 - y1]) * padding
    return center, scale


def fix_aspect(scale: np.ndarray, aspect_wh: float) -> np.ndarray:
    """Grow the shorter side so that w / h = aspect_wh (the reference's ``_fix_aspect_ratio``)."""
    w, h = float(scale[0]), float(scale[1])
    if w > h * aspect_wh:
        return np.array([w, w / aspect_wh])
    return np.array([h * aspect_wh, h])


def warp_matrix(center: np.ndarray, scale: np.ndarray, out_wh: tuple[int, int]) -> np.ndarray:
    """(2, 3) affine taking ``center`` to the crop centre, scaled by out_w / scale_w, no rotation.

    Built like the reference: three float32 point pairs through ``cv2.getAffineTransform``.
    """
    import cv2

    out_w, out_h = out_wh
    src = np.zeros((3, 2), dtype=np.float32)
    src[0, :] = center + scale * 0.0
    src[1, :] = center + np.array([0.0, scale[0] * -0.5]) + scale * 0.0
    d = src[0, :] - src[1, :]
    src[2, :] = src[1, :] + np.r_[-d[1], d[0]]
    dst = np.zeros((3, 2), dtype=np.float32)
    dst[0, :] = [out_w * 0.5, out_h * 0.5]
    dst[1, :] = np.array([out_w * 0.5, out_h * 0.5]) + np.array([0.0, out_w * -0.5])
    d = dst[0, :] - dst[1, :]
    dst[2, :] = dst[1, :] + np.r_[-d[1], d[0]]
    return np.asarray(cv2.getAffineTransform(src, dst))


def crop(image_bgr: np.ndarray, matrix: np.ndarray, out_wh: tuple[int, int]) -> np.ndarray:
    """uint8 (out_h, out_w, 3) crop; black outside the image (INTER_LINEAR, constant border 0)."""
    import cv2

    return np.asarray(cv2.warpAffine(image_bgr, matrix, (int(out_wh[0]), int(out_wh[1])), flags=cv2.INTER_LINEAR))


def normalise_crop(crop_hwc: np.ndarray) -> np.ndarray:
    """uint8 crop -> float32 (3, H, W): (pixel - mean) / std in float64, then float32 as onnxruntime casts."""
    norm = (crop_hwc - np.array(POSE_MEAN)) / np.array(POSE_STD)
    return np.ascontiguousarray(norm.transpose(2, 0, 1)).astype(np.float32)


def decode_simcc(simcc_x: np.ndarray, simcc_y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """SimCC (n, k, Wx), (n, k, Wy) -> bins (n, k, 2) float32 (-1 where score <= 0), scores (n, k) float32.

    Score = min(max_x, max_y), raw (no sigmoid); first index wins argmax ties.
    """
    n, k, _ = simcc_x.shape
    sx = simcc_x.reshape(n * k, -1)
    sy = simcc_y.reshape(n * k, -1)
    locs = np.stack((np.argmax(sx, axis=1), np.argmax(sy, axis=1)), axis=-1).astype(np.float32)
    max_x, max_y = np.amax(sx, axis=1), np.amax(sy, axis=1)
    vals = np.where(max_x > max_y, max_y, max_x)
    locs[vals <= 0.0] = -1
    return locs.reshape(n, k, 2), vals.reshape(n, k)


def simcc_to_image(locs: np.ndarray, input_wh: tuple[int, int], center: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Bins (k, 2) float32 of one crop -> image pixels (k, 2) float64, using the aspect-fixed scale."""
    crop_xy = locs / SIMCC_SPLIT_RATIO
    return np.asarray(crop_xy / np.array(input_wh) * scale + center - scale / 2)


def wholebody_from_coco(keypoints: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """COCO-WholeBody (n, 133, 2), (n, 133) -> OpenPose-ordered (n, 134, 2), (n, 134) float64 with the neck.

    The reference's ``Wholebody.__call__``: neck = mean of the shoulders with score 1.0 if both
    shoulder scores > 0.3 else 0.0, inserted at 17, then body joints reordered to OpenPose.
    """
    info = np.concatenate((np.asarray(keypoints, np.float64), np.asarray(scores)[..., None]), axis=-1)
    neck = np.mean(info[:, [5, 6]], axis=1)
    neck[:, 2] = np.logical_and(info[:, 5, 2] > VISIBILITY_THRESHOLD, info[:, 6, 2] > VISIBILITY_THRESHOLD)
    out = np.insert(info, 17, neck, axis=1)
    out[:, list(_OPENPOSE_IDX)] = out[:, list(_MMPOSE_IDX)]
    return out[..., :2], out[..., 2]


# ----- sessions ------------------------------------------------------------------------------------


def _cuda_usable() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def choose_providers(device: Device) -> list[str]:
    """onnxruntime providers for ``device``: CUDA (then CPU) only if a GPU is really usable."""
    import onnxruntime as ort

    if device not in ("auto", "cuda", "cpu"):
        raise InputError(f"device {device!r} is not one of auto, cuda, cpu")
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if "CUDAExecutionProvider" in ort.get_available_providers() and _cuda_usable():
        # onnxruntime-gpu finds the CUDA/cuDNN libraries of the pip nvidia-* wheels torch uses
        # only when they are preloaded (onnxruntime docs, "Compatibility with PyTorch").
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            try:
                preload()
            except Exception as exc:  # best effort: without it the CPU fallback is reported
                log.debug("onnxruntime.preload_dlls failed: %s", exc)
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def _open_session(path: Path, providers: list[str], what: str) -> Any:
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise WeightsError(
            f"{what} model {path} does not exist", "download the DWPose ONNX files (yolox_l.onnx, dw-ll_ucoco_384.onnx)"
        )
    options = ort.SessionOptions()
    options.log_severity_level = 3  # our own notice reports the provider; hide onnxruntime's
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=providers)
    except Exception as exc:  # onnxruntime raises several undocumented types for a bad file
        raise WeightsError(
            f"{what} model {path} cannot be loaded: {str(exc).splitlines()[0]}", "re-download the file"
        ) from None


@dataclass(frozen=True)
class Detection:
    """Detector result for one image, with the intermediates the parity check compares."""

    boxes: np.ndarray  # (N, 4) float64 person boxes, detector (score) order
    letterboxed: np.ndarray  # (640, 640, 3) uint8
    ratio: float
    raw_output: np.ndarray  # (A, 85) float32
    decoded: np.ndarray  # (A, 85) float32
    nms_dets: np.ndarray  # (M, 6) float64, every class


@dataclass(frozen=True)
class PoseEstimate:
    """Pose model result for the boxes of one image (n = boxes, or 1 whole-image box)."""

    keypoints: np.ndarray  # (n, 133, 2) float64 image pixels, COCO-WholeBody order
    scores: np.ndarray  # (n, 133) float32
    boxes: np.ndarray  # (n, 4) boxes used (the whole image when the detector found nobody)
    centers: np.ndarray  # (n, 2)
    scales: np.ndarray  # (n, 2) aspect-fixed
    matrices: np.ndarray  # (n, 2, 3)
    crops: np.ndarray  # (n, H, W, 3) uint8
    simcc_x: np.ndarray  # (n, 133, Wx) float32
    simcc_y: np.ndarray  # (n, 133, Wy) float32
    is_whole_image: bool


class DWPose:
    """The two DWPose ONNX models: ``detect`` + ``estimate``, or ``people(image)`` for both.

    ``provider`` is the onnxruntime provider actually running; ``notice`` a one-line message
    when it is not what was asked for (CUDA requested or available to torch, CPU running).
    """

    def __init__(self, detector_onnx: Path, pose_onnx: Path, device: Device = "auto", batch_size: int = 16) -> None:
        providers = choose_providers(device)
        self.det_session = _open_session(detector_onnx, providers, "person detector")
        self.pose_session = _open_session(pose_onnx, providers, "pose")
        self.provider: str = self.pose_session.get_providers()[0]
        wanted_cuda = providers[0] == "CUDAExecutionProvider" or device == "cuda"
        self.notice: str | None = None
        if wanted_cuda and self.provider != "CUDAExecutionProvider":
            why = (
                "the CUDA provider could not start"
                if providers[0] == "CUDAExecutionProvider"
                else "no usable CUDA device"
            )
            self.notice = f"DWPose runs on {self.provider}: {why}"
            log.warning(self.notice)
        if self.notice is not None:
            self.provider_message: str = self.notice
        elif self.provider == "CUDAExecutionProvider" or device == "cpu":
            self.provider_message = f"DWPose runs on {self.provider}"
        else:
            self.provider_message = f"DWPose runs on {self.provider} (no CUDA device visible to torch)"
        log.info(self.provider_message)

        det_in = self.det_session.get_inputs()[0]
        self._det_input_name = det_in.name
        shape = det_in.shape
        self.detector_input_hw = (
            (int(shape[2]), int(shape[3])) if all(isinstance(s, int) for s in shape[2:4]) else DETECTOR_INPUT_HW
        )
        pose_in = self.pose_session.get_inputs()[0]
        self._pose_input_name = pose_in.name
        h, w = pose_in.shape[2:4]
        if not (isinstance(h, int) and isinstance(w, int)):
            raise WeightsError(f"pose model {pose_onnx} has no fixed input size", "use dw-ll_ucoco_384.onnx")
        self.pose_input_wh = (w, h)
        self.pose_batch_dynamic = not isinstance(pose_in.shape[0], int)
        self.batch_size = max(1, int(batch_size)) if self.pose_batch_dynamic else 1

    # -- detector --

    def detect(self, image_bgr: np.ndarray) -> Detection:
        """Person boxes of one BGR uint8 image (reference ``inference_detector``)."""
        padded, ratio = letterbox(image_bgr, self.detector_input_hw)
        raw = self.det_session.run(None, {self._det_input_name: detector_input(padded)})[0]
        decoded = decode_yolox(raw[0], self.detector_input_hw)
        boxes, scores = yolox_boxes_scores(decoded, ratio)
        dets = multiclass_nms(boxes, scores)
        return Detection(person_boxes(dets), padded, ratio, np.asarray(raw[0]), decoded, dets)

    # -- pose model --

    def _prepare(self, image_bgr: np.ndarray, boxes: np.ndarray) -> dict[str, Any]:
        h, w = image_bgr.shape[:2]
        whole = len(boxes) == 0
        use = np.array([[0, 0, w, h]], dtype=np.float64) if whole else np.asarray(boxes, np.float64).reshape(-1, 4)
        aspect = self.pose_input_wh[0] / self.pose_input_wh[1]
        centers, scales, mats, crops, inputs = [], [], [], [], []
        for box in use:
            center, scale = box_center_scale(box)
            scale = fix_aspect(scale, aspect)
            m = warp_matrix(center, scale, self.pose_input_wh)
            c = crop(image_bgr, m, self.pose_input_wh)
            centers.append(center)
            scales.append(scale)
            mats.append(m)
            crops.append(c)
            inputs.append(normalise_crop(c))
        return dict(boxes=use, whole=whole, centers=centers, scales=scales, mats=mats, crops=crops, inputs=inputs)

    def _run_pose(self, inputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        xs, ys = [], []
        for start in range(0, len(inputs), self.batch_size):
            batch = np.stack(inputs[start : start + self.batch_size])
            sx, sy = self.pose_session.run(None, {self._pose_input_name: batch})[:2]
            xs.append(np.asarray(sx))
            ys.append(np.asarray(sy))
        return np.concatenate(xs), np.concatenate(ys)

    def _finish(self, prep: dict[str, Any], sx: np.ndarray, sy: np.ndarray) -> PoseEstimate:
        locs, vals = decode_simcc(sx, sy)
        kps = np.stack(
            [
                simcc_to_image(locs[i], self.pose_input_wh, prep["centers"][i], prep["scales"][i])
                for i in range(len(locs))
            ]
        )
        return PoseEstimate(
            keypoints=kps,
            scores=vals,
            boxes=prep["boxes"],
            centers=np.stack(prep["centers"]),
            scales=np.stack(prep["scales"]),
            matrices=np.stack(prep["mats"]),
            crops=np.stack(prep["crops"]),
            simcc_x=sx,
            simcc_y=sy,
            is_whole_image=prep["whole"],
        )

    def estimate(self, image_bgr: np.ndarray, boxes: np.ndarray) -> PoseEstimate:
        """Whole-body keypoints for each box (reference ``inference_pose``); no box -> the whole image."""
        prep = self._prepare(image_bgr, boxes)
        sx, sy = self._run_pose(prep["inputs"])
        return self._finish(prep, sx, sy)

    # -- high level --

    def __call__(self, image_bgr: np.ndarray) -> list[PoseFrame]:
        """``people(image_bgr)`` with the reference's whole-image fallback."""
        return self.people(image_bgr)

    def people(self, image_bgr: np.ndarray, whole_image_fallback: bool = True) -> list[PoseFrame]:
        """Every detected person of one image as PoseFrames, detector order.

        With no detection the reference poses the whole image (``box_xyxy`` None); with
        ``whole_image_fallback=False`` an empty list is returned instead.
        """
        return next(iter(self.people_batched([image_bgr], whole_image_fallback)))

    def people_batched(
        self, images_bgr: Iterable[np.ndarray], whole_image_fallback: bool = True
    ) -> Iterator[list[PoseFrame]]:
        """``people`` for a stream of images, running the pose model on crops of several images at once."""
        pending: list[tuple[np.ndarray, dict[str, Any]]] = []
        num_crops = 0

        def flush() -> Iterator[list[PoseFrame]]:
            all_inputs = [x for _, p in pending for x in p["inputs"]]
            if all_inputs:
                sx, sy = self._run_pose(all_inputs)
            at = 0
            for image, prep in pending:
                n = len(prep["inputs"])
                if n == 0:
                    yield []
                    continue
                est = self._finish(prep, sx[at : at + n], sy[at : at + n])
                at += n
                yield _frames_of(est, image.shape[0], image.shape[1])

        for image in images_bgr:
            det = self.detect(image)
            if len(det.boxes) == 0 and not whole_image_fallback:
                prep: dict[str, Any] = dict(inputs=[])
            else:
                prep = self._prepare(image, det.boxes)
            pending.append((image, prep))
            num_crops += len(prep["inputs"])
            if num_crops >= self.batch_size:
                yield from flush()
                pending, num_crops = [], 0
        if pending:
            yield from flush()


def _frames_of(est: PoseEstimate, height_px: int, width_px: int) -> list[PoseFrame]:
    return [
        PoseFrame.from_wholebody(
            est.keypoints[i],
            est.scores[i],
            height_px,
            width_px,
            box_xyxy=None if est.is_whole_image else tuple(est.boxes[i]),
        )
        for i in range(len(est.keypoints))
    ]


# ----- person choice ------------------------------------------------------------------------------


def person_box(frame: PoseFrame) -> tuple[float, float, float, float] | None:
    """Detector box in pixels, else the bounding box of the visible body joints, else None."""
    if frame.box_xyxy is not None:
        return frame.box_xyxy
    vis = frame.body_visible
    if not vis.any():
        return None
    pts = frame.body[vis] * np.array([frame.width_px, frame.height_px])
    x1, y1 = pts.min(axis=0)
    x2, y2 = pts.max(axis=0)
    return (float(x1), float(y1), float(x2), float(y2))


def prominence(frame: PoseFrame) -> float:
    """How likely this is the main subject: box area inside the image x (1 - d / 2).

    d is the distance from the box centre to the image centre over the half diagonal, in [0, 1],
    so a central person beats an off-centre one unless the latter is about twice as large.
    """
    box = person_box(frame)
    if box is None:
        return 0.0
    w, h = frame.width_px, frame.height_px
    x1, y1, x2, y2 = max(box[0], 0.0), max(box[1], 0.0), min(box[2], w), min(box[3], h)
    area = max(x2 - x1, 0.0) * max(y2 - y1, 0.0) / float(w * h)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    d = min(float(np.hypot(cx - w / 2, cy - h / 2) / np.hypot(w / 2, h / 2)), 1.0)
    return area * (1.0 - 0.5 * d)


def select_person(people: Sequence[PoseFrame], choice: PersonChoice = "auto", name: str = "the image") -> PoseFrame:
    """One person: ``"auto"`` = the most prominent (largest, most central), or an index in detector order.

    Raises InputError naming ``name`` when there is nobody or the index is out of range; logs a
    warning when several people were found and ``"auto"`` chose.
    """
    if not people:
        raise InputError(f"no person found in {name}", "use a photo where one whole body is visible")
    if choice == "auto":
        scores = [prominence(p) for p in people]
        best = int(np.argmax(scores))
        if len(people) > 1:
            log.warning("%d people found in %s; using person %d (largest and most central)", len(people), name, best)
        return people[best]
    if isinstance(choice, bool) or not isinstance(choice, int):
        raise InputError(f"person choice {choice!r} is not 'auto' or an index")
    if not 0 <= choice < len(people):
        raise InputError(
            f"person {choice} does not exist in {name}: {len(people)} found",
            f"choose an index from 0 to {len(people) - 1}, or 'auto'",
        )
    return people[choice]


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def track_person(
    people_per_frame: Iterable[Sequence[PoseFrame]],
    choice: PersonChoice = "auto",
    name: str = "the video",
) -> Iterator[PoseFrame]:
    """The same person through a video: chosen in the first frame with anybody, then followed.

    Each later frame takes the person whose box overlaps the previous choice most (IoU), else
    the one with the nearest box centre. Frames must hold at least one pose each (the
    whole-image fallback of ``DWPose.people`` guarantees it); a frame whose only pose has no
    box (nobody detected) passes that pose through and keeps tracking the last box.
    """
    prev: tuple[float, float, float, float] | None = None
    has_detector_boxes = False
    warned = False
    for i, people in enumerate(people_per_frame):
        if not people:
            raise InputError(f"frame {i} of {name} has no pose", "extract with the whole-image fallback on")
        boxes = [person_box(p) for p in people]
        with_box = [(p, b) for p, b in zip(people, boxes) if b is not None]
        if not with_box:
            chosen = people[0]
        elif prev is None:
            chosen = select_person([p for p, _ in with_box], choice, f"frame {i} of {name}")
        else:
            chosen = _follow(prev, with_box)
        if len(people) > 1 and not warned:
            log.warning("several people in %s; following one person from frame %d", name, i)
            warned = True
        # a whole-image pose (nobody detected) must not move the track once real boxes exist
        if chosen.box_xyxy is not None:
            prev, has_detector_boxes = chosen.box_xyxy, True
        elif not has_detector_boxes:
            prev = person_box(chosen) or prev
        yield chosen


def _follow(
    prev: tuple[float, float, float, float], candidates: list[tuple[PoseFrame, tuple[float, float, float, float]]]
) -> PoseFrame:
    ious = [_iou(prev, b) for _, b in candidates]
    if max(ious) > 0.0:
        return candidates[int(np.argmax(ious))][0]
    pcx, pcy = (prev[0] + prev[2]) / 2, (prev[1] + prev[3]) / 2
    dists = [np.hypot((b[0] + b[2]) / 2 - pcx, (b[1] + b[3]) / 2 - pcy) for _, b in candidates]
    return candidates[int(np.argmin(dists))][0]


def _has_box(people: Sequence[PoseFrame]) -> bool:
    return any(person_box(p) is not None for p in people)


ProgressCallback = Callable[[int], None]


# ----- what the extract-pose stage calls ----------------------------------------------------------


def extract_photo_pose(model: DWPose, image_rgb: np.ndarray, name: str, person: PersonChoice = "auto") -> PoseFrame:
    """The pose of the person in a photo (RGB uint8 H x W x 3, as ``media.image.load_image`` gives).

    The models get BGR, as in the reference. Unlike the reference, a photo where the detector
    finds nobody raises InputError naming ``name`` instead of posing the whole image.
    """
    people = model.people(_to_bgr(image_rgb), whole_image_fallback=False)
    return select_person(people, person, name)


def extract_video_poses(
    model: DWPose,
    frames_rgb: Iterable[np.ndarray],
    name: str,
    person: PersonChoice = "auto",
    progress: ProgressCallback | None = None,
) -> Iterator[PoseFrame]:
    """One pose per video frame (RGB uint8), the chosen person tracked through the video.

    Frames without a detection get the reference's whole-image pose (usually all invisible, so
    a black pose frame). ``progress`` is called with the number of frames done so far. The pose
    model runs on crops of several frames at once when it allows a dynamic batch.
    """
    done = 0

    def counted(people_stream: Iterator[list[PoseFrame]]) -> Iterator[list[PoseFrame]]:
        nonlocal done
        for people in people_stream:
            yield people
            done += 1
            if progress is not None:
                progress(done)

    bgr = (_to_bgr(f) for f in frames_rgb)
    yield from track_person(counted(model.people_batched(bgr)), person, name)


def _to_bgr(image_rgb: np.ndarray) -> np.ndarray:
    if image_rgb.ndim != 3 or image_rgb.shape[2] != 3 or image_rgb.dtype != np.uint8:
        raise InputError(f"expected an RGB uint8 image of shape (H, W, 3), got {image_rgb.dtype} {image_rgb.shape}")
    return np.ascontiguousarray(image_rgb[..., ::-1])
