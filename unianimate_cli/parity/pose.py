"""Parity checks of the pose library against fixtures/pose (align cases, drawing, ONNX end to end).

Every size, frame count, person count, file name and tolerance source is read from the folder
given, so other folders of the same format (other poses, sizes, people) are checked the same way.
Tolerances are the fixture READMEs': alignment ``atol 1e-9`` (non-finite values in the same
places), rendered PNGs identical except, with OpenCV >= 4.13, pixels within 8 px of the canvas
border (where newer OpenCV clips thick lines differently); ONNX boxes and keypoints ``1e-3`` px,
scores ``2e-5``, letterbox exact, crops exact with OpenCV 4.x and within |d| <= 4, mean |d| < 0.05
with OpenCV 5.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable

import numpy as np

from unianimate_cli.errors import ParityError
from unianimate_cli.parity import Checker, Comparison, compare_tensors

ALIGN_ATOL = 1e-9
PX_ATOL = 1e-3
SCORE_ATOL = 2e-5
BORDER_ALLOWANCE_PX = 8
CROP_MAX_ABS_CV5 = 4
CROP_MEAN_ABS_CV5 = 0.05


# ----- helpers ----------------------------------------------------------------------------------


def _cmp(name: str, ours: Any, ref: Any, atol: float) -> Comparison:
    return compare_tensors(name, ours, ref, rtol=0.0, atol=atol, rel_l2_max=None)


def _exact(name: str, ours: Any, ref: Any) -> Comparison:
    return compare_tensors(name, ours, ref, rtol=0.0, atol=0.0, rel_l2_max=None)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ParityError(f"{path} cannot be read: {exc}", "is this a pose fixture folder?") from None


def _load_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ParityError(f"{path} cannot be read: {exc}") from None


def _read_png_canvas(path: Path) -> np.ndarray:
    """The reference's canvas array (cv2.imread of a losslessly saved canvas)."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ParityError(f"{path} cannot be read as an image")
    return np.asarray(img)


def _opencv_version() -> tuple[int, int]:
    import cv2

    major, minor = (int(v) for v in re.findall(r"\d+", cv2.__version__)[:2])
    return major, minor


def compare_render(name: str, ours_canvas: np.ndarray, ref_canvas: np.ndarray) -> Comparison:
    """0 differing pixels; with OpenCV >= 4.13, differences within 8 px of the border are allowed.

    ``max_abs`` reports the number of differing pixels that count as errors.
    """
    if ours_canvas.shape != ref_canvas.shape:
        return Comparison.failed(name, f"shape {ours_canvas.shape} != {ref_canvas.shape}")
    diff = np.any(ours_canvas != ref_canvas, axis=-1)
    total = int(diff.sum())
    if total == 0:
        return Comparison(name, 0.0, 0.0, True)
    h, w = diff.shape
    allow = _opencv_version() >= (4, 13)
    ys, xs = np.nonzero(diff)
    near = (
        (xs < BORDER_ALLOWANCE_PX)
        | (ys < BORDER_ALLOWANCE_PX)
        | (xs >= w - BORDER_ALLOWANCE_PX)
        | (ys >= h - BORDER_ALLOWANCE_PX)
    )
    bad = total - int(near.sum()) if allow else total
    detail = f"{total} px differ"
    if allow and near.any():
        detail += f", {int(near.sum())} within {BORDER_ALLOWANCE_PX} px of the border (allowed with OpenCV >= 4.13)"
    return Comparison(name, float(bad), float(bad) / diff.size, bad == 0, detail)


# ----- align -----------------------------------------------------------------------------------

_FRAME_KEY = re.compile(r"^frame(\d+)/raw_keypoints$")


def _frame_prefixes(arrays: dict[str, np.ndarray]) -> list[str]:
    found = []
    for k in arrays:
        m = _FRAME_KEY.match(k)
        if m:
            found.append((int(m.group(1)), k.split("/")[0]))
    return [p for _, p in sorted(found)]


def _num(v: Any) -> float:
    if isinstance(v, str):
        return float(v)  # "nan", "inf", "-inf" (fixtures/pose/README.md)
    return float(v)


def _is_align_case(folder: Path) -> bool:
    return (folder / "case.json").is_file() and (folder / "arrays.npz").is_file()


def _is_align_parent(folder: Path) -> bool:
    index = folder / "index.json"
    if not index.is_file():
        return False
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    cases = data.get("cases") if isinstance(data, dict) else None
    if not isinstance(cases, list) or not cases:
        return False
    return all(isinstance(c, dict) and _is_align_case(folder / str(c.get("case"))) for c in cases)


def run_align_case(folder: Path, prefix: str = "") -> list[Comparison]:
    """Conversion, reference alignment, robust alignment and renders of one align case folder."""
    from unianimate_cli.pose.align import align_poses
    from unianimate_cli.pose.draw import draw_canvas
    from unianimate_cli.pose.dwpose import wholebody_from_coco
    from unianimate_cli.pose.keypoints import PoseFrame

    case = _read_json(folder / "case.json")
    arrays = _load_npz(folder / "arrays.npz")
    photo_h, photo_w = (int(v) for v in case["reference_photo_hw"])
    video_h, video_w = (int(v) for v in case["video_frame_hw"])
    frames = _frame_prefixes(arrays)
    out: list[Comparison] = []
    p = prefix
    if "num_video_frames" in case and int(case["num_video_frames"]) != len(frames):
        out.append(
            Comparison.failed(
                f"{p}num_frames",
                f"case.json says {case['num_video_frames']}, arrays hold {len(frames)}",
            )
        )

    def convert(key: str, h: int, w: int) -> PoseFrame:
        raw_k, raw_s = arrays[f"{key}/raw_keypoints"], arrays[f"{key}/raw_scores"]
        if f"{key}/wholebody_keypoints" in arrays:
            wk, ws = wholebody_from_coco(raw_k, raw_s)
            out.append(_cmp(f"{p}{key}/wholebody_keypoints", wk, arrays[f"{key}/wholebody_keypoints"], ALIGN_ATOL))
            out.append(_cmp(f"{p}{key}/wholebody_scores", ws, arrays[f"{key}/wholebody_scores"], ALIGN_ATOL))
        # the reference keeps person 0 (highest detector score)
        frame = PoseFrame.from_wholebody(raw_k[0], raw_s[0], h, w)
        if f"{key}/pose_candidate" in arrays:
            out.append(_cmp(f"{p}{key}/pose_candidate", frame.body, arrays[f"{key}/pose_candidate"], ALIGN_ATOL))
            out.append(_exact(f"{p}{key}/pose_subset", frame.subset(), arrays[f"{key}/pose_subset"].reshape(-1)))
            out.append(_cmp(f"{p}{key}/pose_hands", frame.hands, arrays[f"{key}/pose_hands"], ALIGN_ATOL))
            out.append(_cmp(f"{p}{key}/pose_faces", frame.face, arrays[f"{key}/pose_faces"].reshape(-1, 2), ALIGN_ATOL))
        return frame

    ref = convert("ref", photo_h, photo_w)
    driving = [convert(f, video_h, video_w) for f in frames]

    def compare_aligned(kind: str, result_frames: Any) -> None:
        for key, fr in zip(frames, result_frames):
            if f"{key}/{kind}_candidate" not in arrays:
                continue
            out.append(_cmp(f"{p}{key}/{kind}_candidate", fr.body, arrays[f"{key}/{kind}_candidate"], ALIGN_ATOL))
            out.append(_cmp(f"{p}{key}/{kind}_hands", fr.hands, arrays[f"{key}/{kind}_hands"], ALIGN_ATOL))
            out.append(
                _cmp(f"{p}{key}/{kind}_faces", fr.face, arrays[f"{key}/{kind}_faces"].reshape(-1, 2), ALIGN_ATOL)
            )
            out.append(_exact(f"{p}{key}/{kind}_subset", fr.subset(), arrays[f"{key}/{kind}_subset"].reshape(-1)))

    def compare_renders(kind: str, names: list[str], result_frames: Any) -> None:
        for png in names:
            if png == "ref_pose.png":
                pose = ref
            else:
                m = re.search(r"(\d+)\.png$", png)
                if m is None:
                    continue
                pose = result_frames[int(m.group(1))]
            ref_canvas = _read_png_canvas(folder / png)
            ours = draw_canvas(pose.body, pose.subset(), pose.hands, None, ref_canvas.shape[0], ref_canvas.shape[1])
            out.append(compare_render(f"{p}{kind}:{png}", ours, ref_canvas))

    result = case.get("reference_result") or {}
    # --- reference mode: reproduces run_align_pose, NaN/inf included
    if driving:
        reference = align_poses(ref, driving, mode="reference")
        compare_aligned("aligned", reference.frames)
        loc = result.get("mp_main_locals") or {}
        if loc:
            ours_l = [reference.info.x_ratio, reference.info.y_ratio]
            ref_l = [_num(loc["x_ratio"]), _num(loc["y_ratio"])]
            for name, value in reference.info.ratios.items():
                if f"{name}_ratio" in loc:
                    ours_l.append(value)
                    ref_l.append(_num(loc[f"{name}_ratio"]))
            out.append(_cmp(f"{p}reference/ratios", ours_l, ref_l, ALIGN_ATOL))
            if "offset" in loc:
                out.append(
                    _cmp(
                        f"{p}reference/offset", reference.info.translation, [_num(v) for v in loc["offset"]], ALIGN_ATOL
                    )
                )
        if not result.get("exception"):
            compare_renders("reference", list(result.get("rendered_png") or []), reference.frames)

    # --- robust mode
    robust = align_poses(ref, driving, mode="robust")
    finite = all(f.is_finite() for f in robust.frames)
    out.append(Comparison(f"{p}robust/finite", 0.0 if finite else math.inf, 0.0, finite, "" if finite else "NaN/inf"))
    rec = case.get("recommended")
    if rec:
        compare_aligned("recommended", robust.frames)
        info = rec.get("info") or {}
        if "ratios" in info:
            names = list(info["ratios"])
            out.append(
                _cmp(
                    f"{p}robust/ratios",
                    [robust.info.ratios[n] for n in names],
                    [_num(info["ratios"][n]) for n in names],
                    ALIGN_ATOL,
                )
            )
        for key in ("x_ratio", "y_ratio"):
            if key in info:
                out.append(_cmp(f"{p}robust/{key}", getattr(robust.info, key), _num(info[key]), ALIGN_ATOL))
        if "offset" in info:
            out.append(
                _cmp(f"{p}robust/offset", robust.info.translation, [_num(v) for v in info["offset"]], ALIGN_ATOL)
            )
        compare_renders("robust", list(rec.get("rendered_png") or []), robust.frames)
    elif driving and case.get("recommended_equals_reference_on_visible_points"):
        ours_v, ref_v = [], []
        for key, fr in zip(frames, robust.frames):
            vis = fr.body_visible
            ours_v.append(fr.body[vis])
            ref_v.append(arrays[f"{key}/aligned_candidate"][vis])
            hv = fr.hand_visible
            ours_v.append(fr.hands[hv])
            ref_v.append(arrays[f"{key}/aligned_hands"][hv])
            fv = fr.face_visible
            ours_v.append(fr.face[fv])
            ref_v.append(arrays[f"{key}/aligned_faces"].reshape(-1, 2)[fv])
        out.append(
            _cmp(f"{p}robust/equals_reference_on_visible", np.concatenate(ours_v), np.concatenate(ref_v), ALIGN_ATOL)
        )
    return out


def run_align_parent(folder: Path) -> list[Comparison]:
    """Every case listed in index.json (case folder names come from the index, not a fixed list)."""
    index = _read_json(folder / "index.json")
    out: list[Comparison] = []
    for entry in index["cases"]:
        name = str(entry["case"])
        out.extend(run_align_case(folder / name, prefix=f"{name}/"))
    return out


# ----- draw ------------------------------------------------------------------------------------


def _is_draw(folder: Path) -> bool:
    return (folder / "palette.json").is_file() and (folder / "index.json").is_file()


def run_draw(folder: Path) -> list[Comparison]:
    from unianimate_cli.pose.draw import COLORS, LIMBS, draw_canvas, hand_edge_colors

    index = _read_json(folder / "index.json")
    palette = _read_json(folder / "palette.json")
    out: list[Comparison] = []
    limbs = palette.get("limbs", [])
    out.append(_exact("palette/limb_colors", [COLORS[e["limb"]] for e in limbs], [e["canvas_value"] for e in limbs]))
    out.append(_exact("palette/limb_joints", [LIMBS[e["limb"]] for e in limbs], [e["joints_0based"] for e in limbs]))
    joints = palette.get("joints", [])
    out.append(
        _exact("palette/joint_colors", [COLORS[e["joint"]] for e in joints], [e["canvas_value"] for e in joints])
    )
    edges = palette.get("hand_edges", [])
    ours_edges = hand_edge_colors()
    out.append(
        _cmp(
            "palette/hand_edge_floats", [ours_edges[e["edge"]] for e in edges], [e["float_colour"] for e in edges], 1e-9
        )
    )
    h, w = (int(v) for v in index.get("canvas_hw", (768, 512)))
    arrays = _load_npz(folder / "poses.npz") if (folder / "poses.npz").is_file() else {}
    for pose in index["poses"]:
        name = str(pose["name"])
        if f"{name}/candidate" in arrays:
            cand, sub = arrays[f"{name}/candidate"], arrays[f"{name}/subset"]
            hands, faces = arrays[f"{name}/hands"], arrays[f"{name}/faces"]
        else:
            d = _read_json(folder / f"{name}.json")["pose"]
            cand, sub = np.array(d["bodies"]["candidate"]), np.array(d["bodies"]["subset"])
            hands, faces = np.array(d["hands"]), np.array(d["faces"])
        sub = np.asarray(sub).reshape(-1)
        faces = np.asarray(faces).reshape(-1, 2)
        files = set(pose.get("files", []))
        renders: list[tuple[str, Callable[[], np.ndarray]]] = [
            (f"{name}.png", lambda: draw_canvas(cand, sub, hands, None, h, w)),
            (f"{name}_with_face.png", lambda: draw_canvas(cand, sub, hands, faces, h, w)),
            (f"{name}_body_only.png", lambda: draw_canvas(cand, sub, np.full((2, 21, 2), -1.0), None, h, w)),
        ]
        for png, render in renders:
            if (folder / png).is_file() and (not files or png in files):
                out.append(compare_render(png, render(), _read_png_canvas(folder / png)))
    return out


# ----- onnx ------------------------------------------------------------------------------------


def _is_onnx(folder: Path) -> bool:
    return (folder / "expected.json").is_file() and (folder / "e2e_arrays.npz").is_file() and any(folder.glob("*.onnx"))


def _find_models(folder: Path) -> tuple[Path, Path]:
    """(detector, pose) by signature: the detector has one output, the pose model two."""
    import onnxruntime as ort

    det = pose = None
    for path in sorted(folder.glob("*.onnx")):
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        n_out = len(sess.get_outputs())
        if n_out == 1:
            det = path
        elif n_out == 2:
            pose = path
    if det is None or pose is None:
        raise ParityError(f"{folder} lacks a detector (1 output) or a pose model (2 outputs) .onnx file")
    return det, pose


def run_onnx(folder: Path) -> list[Comparison]:
    from unianimate_cli.pose.draw import draw_canvas
    from unianimate_cli.pose.dwpose import DWPose, wholebody_from_coco

    import cv2

    expected = _read_json(folder / "expected.json")
    arrays = _load_npz(folder / "e2e_arrays.npz")
    det_path, pose_path = _find_models(folder)
    model = DWPose(det_path, pose_path, device="auto")
    cv5 = _opencv_version() >= (5, 0)
    out: list[Comparison] = []
    for name, exp in expected["images"].items():
        image = cv2.imread(str(folder / exp["file"]), cv2.IMREAD_COLOR)
        if image is None:
            raise ParityError(f"{folder / exp['file']} cannot be read")
        a = lambda key: arrays[f"{name}/{key}"]  # noqa: E731
        det = model.detect(image)
        lb = exp.get("letterbox", {})
        if "file" in lb:
            out.append(_exact(f"{name}/letterbox", det.letterboxed, _read_png_canvas(folder / lb["file"])))
        if "ratio" in lb:
            out.append(_cmp(f"{name}/letterbox_ratio", det.ratio, lb["ratio"], 1e-12))
        if f"{name}/det_decoded" in arrays:
            # decoded boxes: pixels (1e-3); objectness and class probabilities: scores (2e-5)
            out.append(_cmp(f"{name}/det_decoded_boxes", det.decoded[:, :4], a("det_decoded")[:, :4], PX_ATOL))
            out.append(_cmp(f"{name}/det_decoded_scores", det.decoded[:, 4:], a("det_decoded")[:, 4:], SCORE_ATOL))
        ref_dets = a("nms_dets").reshape(-1, 6)
        if det.nms_dets.shape != ref_dets.shape:
            out.append(
                Comparison.failed(
                    f"{name}/nms_dets",
                    f"{det.nms_dets.shape[0]} rows, expected {ref_dets.shape[0]}",
                )
            )
        else:
            out.append(_cmp(f"{name}/nms_boxes", det.nms_dets[:, :4], ref_dets[:, :4], PX_ATOL))
            out.append(_cmp(f"{name}/nms_scores", det.nms_dets[:, 4], ref_dets[:, 4], SCORE_ATOL))
            out.append(_exact(f"{name}/nms_classes", det.nms_dets[:, 5], ref_dets[:, 5]))
        ref_boxes = a("det_final_boxes").reshape(-1, 4)
        if det.boxes.shape != ref_boxes.shape:
            out.append(
                Comparison.failed(
                    f"{name}/person_boxes",
                    f"{det.boxes.shape[0]} boxes, expected {ref_boxes.shape[0]}",
                )
            )
            continue
        out.append(_cmp(f"{name}/person_boxes", det.boxes, ref_boxes, PX_ATOL))
        est = model.estimate(image, det.boxes)
        out.append(_cmp(f"{name}/centers", est.centers, a("centers"), PX_ATOL))
        out.append(_cmp(f"{name}/scales", est.scales, a("scales_after_aspect_fix"), PX_ATOL))
        out.append(_cmp(f"{name}/warp_matrices", est.matrices, a("warp_matrices"), 1e-6))
        for i, crop_file in enumerate(exp.get("crops", [])):
            ref_crop = _read_png_canvas(folder / crop_file).astype(np.int64)
            d = np.abs(est.crops[i].astype(np.int64) - ref_crop)
            if cv5:
                ok = int(d.max()) <= CROP_MAX_ABS_CV5 and float(d.mean()) < CROP_MEAN_ABS_CV5
                detail = f"OpenCV 5 warpAffine: max |d| {int(d.max())}, mean |d| {float(d.mean()):.4f}"
            else:
                ok, detail = int(d.max()) == 0, ""
            out.append(Comparison(f"{name}/crop{i}", float(d.max()), float(d.mean()), ok, detail))
        out.append(_cmp(f"{name}/simcc_x", est.simcc_x, a("simcc_x").reshape(est.simcc_x.shape), SCORE_ATOL))
        out.append(_cmp(f"{name}/simcc_y", est.simcc_y, a("simcc_y").reshape(est.simcc_y.shape), SCORE_ATOL))
        out.append(_cmp(f"{name}/raw_keypoints", est.keypoints, a("raw_keypoints"), PX_ATOL))
        out.append(_cmp(f"{name}/raw_scores", est.scores, a("raw_scores"), SCORE_ATOL))
        wk, ws = wholebody_from_coco(est.keypoints, est.scores)
        out.append(_cmp(f"{name}/wholebody_keypoints", wk, a("wholebody_keypoints"), PX_ATOL))
        out.append(_cmp(f"{name}/wholebody_scores", ws, a("wholebody_scores"), SCORE_ATOL))
        people = model.people(image)
        person = people[0]  # the reference keeps the highest-score person
        h, w = image.shape[:2]
        # normalised coordinates: 1e-3 px in image pixels; visibility (the -1 points) exact
        ref_cand = a("pose_candidate")
        out.append(_cmp(f"{name}/pose_candidate", person.body * [w, h], ref_cand * [w, h], PX_ATOL))
        out.append(
            _exact(f"{name}/pose_visibility", np.all(person.body == -1, axis=-1), np.all(ref_cand == -1, axis=-1))
        )
        out.append(_exact(f"{name}/pose_subset", person.subset(), a("pose_subset").reshape(-1)))
        out.append(_cmp(f"{name}/pose_hands", person.hands * [w, h], a("pose_hands") * [w, h], PX_ATOL))
        out.append(_cmp(f"{name}/pose_faces", person.face * [w, h], a("pose_faces").reshape(-1, 2) * [w, h], PX_ATOL))
        if exp.get("rendered_pose"):
            ref_canvas = _read_png_canvas(folder / exp["rendered_pose"])
            ours = draw_canvas(
                person.body, person.subset(), person.hands, None, ref_canvas.shape[0], ref_canvas.shape[1]
            )
            out.append(compare_render(f"{name}/rendered_pose", ours, ref_canvas))
    return out


# ----- the pose/ parent: onnx_io.json tables + every sub-folder ---------------------------------


def _is_pose_parent(folder: Path) -> bool:
    return (folder / "onnx_io.json").is_file()


def run_onnx_io(path: Path) -> list[Comparison]:
    """Our index tables and constants against onnx_io.json, on index-coded input as it was measured."""
    from unianimate_cli.pose import dwpose
    from unianimate_cli.pose.keypoints import PoseFrame

    io = _read_json(path)
    out: list[Comparison] = []
    coco = np.stack([np.arange(133, dtype=np.float64), np.zeros(133)], axis=-1)[None]
    wk, _ = dwpose.wholebody_from_coco(coco, np.ones((1, 133)))
    table = io["wholebody_conversion"]["table_measured"]
    rows = [e for e in table if isinstance(e.get("from_coco"), int)]
    out.append(_exact("onnx_io/wholebody_table", [wk[0, e["index"], 0] for e in rows], [e["from_coco"] for e in rows]))
    det = io["dwpose_detector"]
    # normalise by width 1, height 1 so the coordinates stay the COCO index codes
    frame = PoseFrame.from_wholebody(coco[0], np.ones(133), 1, 1)
    ours, ref = [], []
    for e in det["body20_measured"]:
        if isinstance(e.get("from_coco"), int):
            ours.append(frame.body[e["index"], 0])
            ref.append(e["from_coco"])
        elif "measured_source" in e:
            ours.append(frame.body[e["index"], 0])
            ref.append(e["measured_source"])
    out.append(_exact("onnx_io/body20_table", ours, ref))
    hands = det.get("hands_measured_coco_indices")
    if hands:
        out.append(_exact("onnx_io/hands_table", frame.hands[..., 0], hands))
    faces = det.get("faces_measured_coco_indices")
    if faces:
        out.append(_exact("onnx_io/faces_range", [frame.face[0, 0], frame.face[-1, 0]], faces))
    post = io["detector"]["postprocess"]
    out.append(
        _exact(
            "onnx_io/detector_constants",
            [
                *dwpose.YOLOX_STRIDES,
                dwpose.NMS_SCORE_THRESHOLD,
                dwpose.NMS_IOU_THRESHOLD,
                dwpose.PERSON_SCORE_THRESHOLD,
                dwpose.PERSON_CLASS,
            ],
            [
                *post["strides"],
                post["score_threshold"],
                post["nms_iou_threshold"],
                post["person_score_threshold"],
                post["person_class"],
            ],
        )
    )
    out.append(_exact("onnx_io/simcc_split_ratio", dwpose.SIMCC_SPLIT_RATIO, io["pose"]["postprocess"]["split_ratio"]))
    return out


def run_pose_parent(folder: Path) -> list[Comparison]:
    out = run_onnx_io(folder / "onnx_io.json")
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        for checker in _SUB_CHECKERS:
            if checker.detect(sub):
                out.extend(
                    Comparison(f"{sub.name}/{c.name}", c.max_abs, c.rel_l2, c.ok, c.detail) for c in checker.run(sub)
                )
                break
    return out


_SUB_CHECKERS: tuple[Checker, ...] = (
    Checker("pose-align", _is_align_parent, run_align_parent),
    Checker("pose-align-case", _is_align_case, run_align_case),
    Checker("pose-draw", _is_draw, run_draw),
    Checker("pose-onnx", _is_onnx, run_onnx),
)

CHECKERS: tuple[Checker, ...] = (Checker("pose", _is_pose_parent, run_pose_parent), *_SUB_CHECKERS)
