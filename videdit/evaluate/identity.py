"""Face observations for evaluation: box, 68 landmarks and an identity embedding per image.

dlib's face-recognition ResNet (128-D, ships offline with the `face_recognition_models` package)
is the default. When an ArcFace-family checkpoint is present (`model_ir_se50.pth`, the ArcFace
IR-SE50 used by ReStyle's identity loss, or `CurricularFace_Backbone.pth`, the IR-101 used by
stylegan3-editing), its 512-D embedding is used for the identity similarity instead; dlib still
provides the detection and the landmarks.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from videdit.errors import CheckpointError

ARCFACE_FILES = ("model_ir_se50.pth", "CurricularFace_Backbone.pth")
# dlib's own rule: descriptors of one person are closer than this (Euclidean).
DLIB_SAME_PERSON_DISTANCE = 0.6


@dataclass
class FaceObservation:
    """What the face analyser saw in one image. Unfound faces carry NaN landmarks and no embedding."""

    found: bool
    box: tuple[float, float, float, float] | None  # left, top, right, bottom in pixels
    landmarks: np.ndarray = field(default_factory=lambda: np.full((68, 2), np.nan))  # [68, 2] x, y
    embedding: np.ndarray | None = None


def cosine_similarity(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return float("nan")
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def euclidean_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return float("nan")
    return float(np.linalg.norm(a - b))


class FaceAnalyzer:
    """dlib HOG detector + 68-point shape predictor + an identity embedder.

    Detection runs on a copy scaled so that its longer side is `detect_size` (crops are large and the
    HOG detector is slow on them); landmarks and embeddings use the full image.
    """

    def __init__(self, detect_size: int = 384, embedder: "ArcFaceEmbedder | None" = None):
        import dlib

        from videdit.face.landmarks import DLIB_RECOGNITION_MODEL, DLIB_SHAPE_MODEL, dlib_model_path

        self._detector = dlib.get_frontal_face_detector()
        self._shape_predictor = dlib.shape_predictor(str(dlib_model_path(DLIB_SHAPE_MODEL)))
        self._recognizer = dlib.face_recognition_model_v1(str(dlib_model_path(DLIB_RECOGNITION_MODEL)))
        self._dlib = dlib
        self.detect_size = detect_size
        self.embedder = embedder

    @property
    def model_name(self) -> str:
        return self.embedder.name if self.embedder is not None else "dlib_resnet_v1"

    def detect(self, image: np.ndarray, near=None) -> tuple[float, float, float, float] | None:
        """A face box (left, top, right, bottom) or None.

        With `near` (a box), the detection overlapping it most wins, so the same person is followed
        when a frame holds several faces; otherwise the most confident one.
        """
        scale = min(1.0, self.detect_size / max(image.shape[:2]))
        small = image
        if scale < 1.0:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
            small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
        small = np.ascontiguousarray(small)
        # Crops hold a large face: the plain scan finds it; upsampling (4x the work) only when it does not.
        boxes, scores, _ = self._detector.run(small, 0, 0.0)
        if len(boxes) == 0:
            boxes, scores, _ = self._detector.run(small, 1, 0.0)
        if len(boxes) == 0:
            return None
        found = [(b.left() / scale, b.top() / scale, b.right() / scale, b.bottom() / scale) for b in boxes]
        if near is not None:
            overlaps = [box_iou(box, near) for box in found]
            if max(overlaps) > 0:
                return found[int(np.argmax(overlaps))]
        # Most confident; ties (the astronaut photo has a second, equally sized false face) go to the larger box.
        best = max(range(len(found)), key=lambda i: (scores[i], boxes[i].area()))
        return found[best]

    def observe(self, image: np.ndarray, fallback_box=None, near=None) -> FaceObservation:
        """Detect, landmark and embed the face of `image` (the one nearest `near` if given);
        use `fallback_box` when none is detected."""
        image = np.ascontiguousarray(image)
        box = self.detect(image, near=near)
        found = box is not None
        if box is None:
            box = fallback_box
        if box is None:
            return FaceObservation(False, None)
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        shape = self._shape_predictor(image, rect)
        landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        if self.embedder is not None:
            embedding = self.embedder.embed(image, landmarks)
        else:
            embedding = np.asarray(self._recognizer.compute_face_descriptor(image, shape), dtype=np.float64)
        return FaceObservation(found, tuple(float(v) for v in box), landmarks, embedding)


def box_iou(a, b) -> float:
    """Intersection over union of two (left, top, right, bottom) boxes."""
    width = min(a[2], b[2]) - max(a[0], b[0])
    height = min(a[3], b[3]) - max(a[1], b[1])
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def landmark_error(reference: FaceObservation, output: FaceObservation) -> float:
    """Mean landmark distance normalised by the reference's outer-eye-corner distance (NME, in %)."""
    if not (reference.found and output.found):
        return float("nan")
    interocular = np.linalg.norm(reference.landmarks[45] - reference.landmarks[36])
    if interocular <= 0:
        return float("nan")
    return float(100.0 * np.mean(np.linalg.norm(reference.landmarks - output.landmarks, axis=1)) / interocular)


def landmark_offset(reference: FaceObservation, output: FaceObservation) -> np.ndarray:
    """Mean displacement (x, y) in pixels of the output's landmarks from the reference's (NaN if either is missing)."""
    if not (reference.found and output.found):
        return np.full(2, np.nan)
    return (output.landmarks - reference.landmarks).mean(axis=0)


# ---------------------------------------------------------------------------------------------
# ArcFace-family embedders (IR / IR-SE backbones with the layout of the public checkpoints)

# The five-point template of ArcFace's 112x112 training crops (eyes, nose tip, mouth corners).
ARCFACE_TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]]
)


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """Eye centres, nose tip and mouth corners from the 68-point layout."""
    return np.stack([
        landmarks68[36:42].mean(0), landmarks68[42:48].mean(0), landmarks68[30], landmarks68[48], landmarks68[54],
    ])


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares rotation + uniform scale + translation mapping src points onto dst (2x3)."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    s, d = src - src_mean, dst - dst_mean
    # Complex-number form: dst ~ z * src, z = a + ib.
    denom = (s**2).sum()
    a = (s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum() / denom
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / denom
    rot = np.array([[a, -b], [b, a]])
    return np.concatenate([rot, (dst_mean - rot @ src_mean)[:, None]], axis=1)


def arcface_crop(image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
    """The 112x112 aligned face ArcFace models expect."""
    forward = similarity_transform(five_points(landmarks68), ARCFACE_TEMPLATE_112)
    inverse = np.linalg.inv(np.vstack([forward, [0, 0, 1]]))[:2]
    # PIL's affine takes the output->input map as a flat 6-tuple.
    return np.asarray(Image.fromarray(image).transform((112, 112), Image.AFFINE, tuple(inverse.ravel()), Image.BILINEAR))


def find_arcface_weights(weights_dir: Path | None) -> Path | None:
    if weights_dir is None:
        return None
    for name in ARCFACE_FILES:
        path = Path(weights_dir) / name
        if path.is_file() and path.stat().st_size > 0:
            return path
    return None


def _units_per_stage(state: dict) -> tuple[int, ...]:
    """Read the stage layout from the checkpoint: a stage starts where the channel count changes."""
    channels = []
    index = 0
    while f"body.{index}.res_layer.1.weight" in state:
        channels.append(int(state[f"body.{index}.res_layer.1.weight"].shape[0]))
        index += 1
    if not channels:
        raise CheckpointError("not an IR/IR-SE face-recognition checkpoint: no body.N.res_layer weights")
    counts = [sum(1 for c in channels if c == width) for width in (64, 128, 256, 512)]
    if 0 in counts or sum(counts) != len(channels):
        raise CheckpointError(f"unexpected IR backbone layout: channels per unit {sorted(set(channels))}")
    return tuple(counts)


class ArcFaceEmbedder:
    """512-D identity embeddings from an ArcFace-family checkpoint (unit norm; compare by cosine)."""

    def __init__(self, path: Path, device: str = "cpu"):
        import torch

        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # a truncated or foreign file; one line for the user
            raise CheckpointError(f"cannot read face-recognition checkpoint {path}: {type(err).__name__}") from err
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        squeeze_excite = any(".fc1.weight" in k for k in state)
        from videdit.networks.encoders import IRBackbone

        self.model = IRBackbone(_units_per_stage(state), squeeze_excite, "output_layer.4.weight" in state)
        try:
            self.model.load_state_dict(state, strict=True)
        except RuntimeError as err:
            first = str(err).strip().splitlines()[1] if "\n" in str(err) else str(err)
            raise CheckpointError(f"{path.name} does not match an IR backbone: {first.strip()}") from err
        self.model.eval().to(device)
        self.device = device
        self.name = f"arcface:{path.name}"

    def embed(self, image: np.ndarray, landmarks68: np.ndarray) -> np.ndarray:
        import torch

        crop = arcface_crop(image, landmarks68)
        x = torch.from_numpy(np.array(crop, dtype=np.float32)).permute(2, 0, 1)[None].div(127.5).sub(1.0)
        with torch.no_grad():
            return self.model(x.to(self.device))[0].double().cpu().numpy()
