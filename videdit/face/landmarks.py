"""68-point face landmarks behind one small interface, and the tracker that keeps to one face.

Backends:
  "face-alignment" (or "fan")  face-alignment's 2D FAN with its S3FD detector; used only when both
         model files are already in torch's hub cache (this module never downloads anything).
  "dlib" dlib's HOG face detector + the 68-point shape predictor shipped by `face_recognition_models`.
  "auto" the first of face-alignment, dlib that can run.

Points are (x, y) in pixel-centre coordinates of the image given: (0, 0) is the centre of the top-left
pixel (the convention both detectors use). Detection runs on a downscaled copy of the frame (and,
once a face is tracked, on a region around it), the landmarks are fitted on the full-resolution frame.
"""
from __future__ import annotations

import importlib.util
import inspect
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from videdit.cachedirs import torch_hub_checkpoints_dir
from videdit.errors import InputError, MissingWeightsError

log = logging.getLogger(__name__)

N_LANDMARKS = 68
BACKEND_NAMES = ("auto", "face-alignment", "fan", "dlib")  # "fan" is short for face-alignment
DEFAULT_BACKEND = "auto"  # the one default of `run` (align), `faces` and [faces]: FAN when its models are cached

DLIB_SHAPE_MODEL = "shape_predictor_68_face_landmarks.dat"
DLIB_RECOGNITION_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
FAN_WEIGHTS = {"s3fd": "fan_detector", "2DFAN-4": "fan_2d"}  # face-alignment's model -> videdit.weights entry


@dataclass
class FaceDetection:
    """One face: its box (x0, y0, x1, y1), the detector's score, and 68 landmarks (x, y), all in the
    coordinates of the full image."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray

    @property
    def centre(self) -> np.ndarray:
        return (self.box[:2] + self.box[2:]) / 2

    @property
    def size(self) -> float:
        """Geometric mean of the box's width and height."""
        width, height = self.box[2:] - self.box[:2]
        return float(np.sqrt(max(width, 1.0) * max(height, 1.0)))


def _resize(image: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """image (HxW or HxWx3 uint8) scaled by about `scale`, and the exact (x, y) scale factors.
    Scales 1/k use PIL's integer box reduction (several times faster than a bilinear resize)."""
    from PIL import Image

    height, width = image.shape[:2]
    if scale < 1 and abs(1 / scale - round(1 / scale)) < 1e-6:
        factor = int(round(1 / scale))
        small = np.asarray(Image.fromarray(image).reduce(factor))
        return small, np.array([1 / factor, 1 / factor])  # reduce averages k x k blocks: exactly 1/k
    size = (max(1, int(round(width * scale))), max(1, int(round(height * scale))))
    if size == (width, height):
        return image, np.ones(2)
    resized = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    return resized, np.array([size[0] / width, size[1] / height])


class LandmarkBackend:
    """Base class: subclasses find face boxes on an image and fit 68 landmarks inside a box.

    `find_faces` adds the speed policy shared by the backends: boxes are searched on a copy whose
    longest side is `detect_max_side` (faces too small there get a second try at twice the scale),
    or, given the previous face box, on a region around it scaled so the face is about
    `track_face_px` wide; the landmarks are always fitted on the full-resolution image. A face whose
    last known roll exceeds `upright_above_deg` is searched in a region turned upright.
    """

    name = "base"

    def __init__(self, detect_max_side: int = 640, track_face_px: int = 100, upright_above_deg: float = 15.0):
        self.detect_max_side = detect_max_side
        self.track_face_px = track_face_px
        self.upright_above_deg = upright_above_deg

    # to implement --------------------------------------------------------------------------
    def detect_boxes(self, image: np.ndarray) -> list[tuple[np.ndarray, float]]:
        """Face boxes (x0, y0, x1, y1) with scores on `image` as given (no rescaling)."""
        raise NotImplementedError

    def fit_landmarks(self, image: np.ndarray, box: np.ndarray) -> np.ndarray:
        """float [68, 2] landmarks of the face in `box`, on the full-resolution image."""
        raise NotImplementedError

    def detection_image(self, image: np.ndarray) -> np.ndarray:
        """What detect_boxes looks at (before scaling); a backend may drop the colour here."""
        return image

    # shared policy -----------------------------------------------------------------------------
    def _boxes_at_scale(self, image: np.ndarray, scale: float, origin=(0.0, 0.0)):
        """Boxes found on `image` scaled by `scale`, in the coordinates of `image` + origin."""
        small, factors = _resize(self.detection_image(image), scale)
        factors = np.tile(factors, 2)
        offset = np.array([*origin, *origin], dtype=np.float64)
        # pixel-centre coordinates: x_small + 0.5 = (x + 0.5) * factor
        return [((np.asarray(box, dtype=np.float64) + 0.5) / factors - 0.5 + offset, float(score))
                for box, score in self.detect_boxes(small)]

    def _boxes_full(self, image: np.ndarray):
        # An integer reduction (fast) to a longest side in [detect_max_side, 2 * detect_max_side).
        factor = max(1, int(max(image.shape[:2]) // self.detect_max_side))
        boxes = self._boxes_at_scale(image, 1.0 / factor)
        if not boxes:  # faces too small at that scale: once more at twice the resolution
            boxes = self._boxes_at_scale(image, 2.0 / factor)
        return boxes

    def _boxes_near(self, image: np.ndarray, near: np.ndarray):
        height, width = image.shape[:2]
        size = float(np.sqrt(np.prod(np.maximum(near[2:] - near[:2], 1.0))))
        margin = 0.75 * size
        x0, y0 = int(max(0, near[0] - margin)), int(max(0, near[1] - margin))
        x1, y1 = int(min(width, near[2] + margin)), int(min(height, near[3] + margin))
        if x1 - x0 < 8 or y1 - y0 < 8:
            return []
        scale = min(2.0, self.track_face_px / size)
        return self._boxes_at_scale(image[y0:y1, x0:x1], scale, origin=(x0, y0))

    def faces_upright(self, image: np.ndarray, near: np.ndarray, roll_deg: float) -> list[FaceDetection]:
        """Faces around `near` in a region turned by -roll_deg, so a face rolled by roll_deg (screen
        counter-clockwise) is upright there: frontal detectors and the landmark fit work best on
        upright faces and dlib's finds none beyond about 45 degrees. Results in image coordinates."""
        from videdit.face.alignment import crop_to_source_matrix, quad_to_crop

        size_px = float(np.sqrt(np.prod(np.maximum(near[2:] - near[:2], 1.0))))
        half = 1.25 * size_px  # the same reach as _boxes_near's margin
        angle = np.radians(roll_deg)
        # `near` bounds a turned face, so it is larger than the face by up to sqrt(2)
        face_px = size_px / (abs(np.cos(angle)) + abs(np.sin(angle)))
        x_axis = half * np.array([np.cos(angle), -np.sin(angle)])  # the face's eye line, on screen
        y_axis = np.array([-x_axis[1], x_axis[0]])  # a quarter turn clockwise: down the face
        centre = (near[:2] + near[2:]) / 2
        quad = np.stack([centre - x_axis - y_axis, centre - x_axis + y_axis, centre + x_axis + y_axis,
                         centre + x_axis - y_axis])
        side = int(min(max(round(2 * half), 16), 1024))  # about full resolution: the landmarks are fitted here
        region = quad_to_crop(image, quad, side)
        to_image = crop_to_source_matrix(quad, side)
        faces = []
        for box, score in self._boxes_at_scale(region, min(2.0, self.track_face_px / (face_px * side / (2 * half)))):
            points = self.fit_landmarks(region, box)
            points = points @ to_image[:2, :2].T + to_image[:2, 2]
            corners = np.array([[box[0], box[1]], [box[0], box[3]], [box[2], box[3]], [box[2], box[1]]])
            corners = corners @ to_image[:2, :2].T + to_image[:2, 2]
            faces.append(FaceDetection(box=np.concatenate([corners.min(axis=0), corners.max(axis=0)]), score=score,
                                       landmarks=points))
        return faces

    def find_faces(self, image: np.ndarray, near: np.ndarray | None = None,
                   roll_deg: float = 0.0) -> list[FaceDetection]:
        """All faces of a uint8 HWC RGB image with their landmarks; only those around `near` (a
        previous box) when a face is found there. roll_deg: the previous face's eye-line angle (screen
        counter-clockwise); beyond `upright_above_deg` the region around `near` is searched turned
        upright."""
        image = np.ascontiguousarray(image)
        if near is not None and abs(roll_deg) > self.upright_above_deg:
            faces = self.faces_upright(image, near, roll_deg)
            if faces:
                return faces
        boxes = self._boxes_near(image, near) if near is not None else []
        if not boxes:
            boxes = self._boxes_full(image)
        return [FaceDetection(box=box, score=score, landmarks=self.fit_landmarks(image, box))
                for box, score in boxes]


# ----------------------------------------------------------------------------------------------
# dlib


def dlib_model_dir() -> Path | None:
    """Folder holding face_recognition_models' .dat files, found without importing the package
    (its __init__ imports pkg_resources, which recent setuptools no longer has)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = Path(location) / "models"
        if folder.is_dir():
            return folder
    return None


def dlib_model_path(filename: str) -> Path:
    """Path of one of dlib's models (68-point landmarks, face-recognition ResNet); MissingWeightsError
    naming the file and how to get it."""
    folder = dlib_model_dir()
    path = folder / filename if folder is not None else None
    if path is None or not path.is_file():
        raise MissingWeightsError(
            f"dlib model {filename} not found; it ships with the face_recognition_models "
            "package: pip install face_recognition_models")
    return path


def dlib_shape_model_path() -> Path:
    return dlib_model_path(DLIB_SHAPE_MODEL)


class DlibBackend(LandmarkBackend):
    """dlib's HOG frontal face detector and its 68-point shape predictor (iBUG 300-W layout)."""

    name = "dlib"

    def __init__(self, model_path: Path | None = None, **kwargs):
        super().__init__(**kwargs)
        try:
            import dlib
        except ImportError:
            raise MissingWeightsError("dlib is not installed: pip install dlib-bin") from None
        path = Path(model_path) if model_path is not None else dlib_shape_model_path()
        if not path.is_file():
            raise MissingWeightsError(f"dlib landmark model {path} not found: pip install face_recognition_models")
        self._dlib = dlib
        self._detector = dlib.get_frontal_face_detector()
        try:
            self._predictor = dlib.shape_predictor(str(path))
        except RuntimeError as error:
            raise MissingWeightsError(f"dlib landmark model {path} is unreadable ({error}); "
                                      "reinstall face_recognition_models") from None

    def detection_image(self, image):
        # Grey: the HOG features need no colour; detection is faster and so is the scaling before it.
        from PIL import Image

        return image if image.ndim == 2 else np.asarray(Image.fromarray(image).convert("L"))

    def detect_boxes(self, image):
        rects, scores, _ = self._detector.run(np.ascontiguousarray(image), 0, 0.0)
        return [(np.array([r.left(), r.top(), r.right(), r.bottom()], dtype=np.float64), s)
                for r, s in zip(rects, scores)]

    def fit_landmarks(self, image, box):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        shape = self._predictor(image, self._dlib.rectangle(x0, y0, x1, y1))
        return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# face-alignment (FAN)


def fan_model_paths(checkpoint_dir: Path | None = None) -> dict[str, Path]:
    from videdit import weights

    folder = Path(checkpoint_dir) if checkpoint_dir is not None else torch_hub_checkpoints_dir()
    return {key: folder / weights.get(name).filename for key, name in FAN_WEIGHTS.items()}


def fan_missing_models(checkpoint_dir: Path | None = None) -> list[str]:
    """One line per face-alignment model file that is not in the cache (empty: FAN can run)."""
    if importlib.util.find_spec("face_alignment") is None:
        return ["the face-alignment package is not installed: pip install face-alignment"]
    return [f"face-alignment model {path.name} not in {path.parent}; get it with `videdit weights fetch {FAN_WEIGHTS[key]}`"
            for key, path in fan_model_paths(checkpoint_dir).items() if not path.is_file()]


class FanBackend(LandmarkBackend):
    """face-alignment's S3FD detector and 2D FAN-4, loaded from torch.hub's cache only.

    face-alignment downloads any model missing from that cache; this class checks both files first
    (in the folder torch itself reports) and raises MissingWeightsError instead.
    """

    name = "face-alignment"

    def __init__(self, device: str = "auto", **kwargs):
        super().__init__(**kwargs)
        missing = fan_missing_models()
        if not missing:
            import torch
            import torch.hub

            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"

            missing = fan_missing_models(Path(torch.hub.get_dir()) / "checkpoints")
        if missing:
            raise MissingWeightsError(missing[0] + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        import face_alignment

        options = dict(device=device, flip_input=False, face_detector="sfd",
                       face_detector_kwargs={"path_to_detector": str(fan_model_paths()["s3fd"])})
        # face-alignment >= 1.5 would torch.compile the network (minutes on first use); older has no option
        if "compile" in inspect.signature(face_alignment.FaceAlignment.__init__).parameters:
            options["compile"] = False
        self._model = face_alignment.FaceAlignment(face_alignment.LandmarksType.TWO_D, **options)

    def detect_boxes(self, image):
        found = self._model.face_detector.detect_from_image(image.copy())
        return [(np.asarray(b[:4], dtype=np.float64), float(b[4])) for b in found]

    def fit_landmarks(self, image, box):
        # Python floats: face-alignment mixes box values into torch tensors, which rejects numpy float32.
        result = self._model.get_landmarks_from_image(image, detected_faces=[[float(v) for v in box[:4]]])
        return np.asarray(result[0][:, :2], dtype=np.float64)


def roll_deg(landmarks: np.ndarray) -> float:
    """Eye-line angle of 68 landmarks, degrees, screen counter-clockwise positive (0: level eyes)."""
    left = np.asarray(landmarks, dtype=np.float64)[36:42].mean(axis=0)
    right = np.asarray(landmarks, dtype=np.float64)[42:48].mean(axis=0)
    return float(np.degrees(np.arctan2(-(right[1] - left[1]), right[0] - left[0])))


def make_backend(name: str = "auto", *, device: str = "auto", detect_max_side: int = 640) -> LandmarkBackend:
    """Build the named landmark backend; "auto" takes FAN when its models are cached, else dlib.

    device: where FAN runs ("auto": CUDA when available); dlib always runs on the CPU.

    Raises MissingWeightsError (one line naming the file and how to get it) when the chosen backend
    cannot run, and InputError for an unknown name.
    """
    name = name.lower()
    if name not in BACKEND_NAMES:
        raise InputError(f"unknown landmark backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if name in ("fan", "face-alignment") or (name == "auto" and not fan_missing_models()):
        return FanBackend(device=device, detect_max_side=detect_max_side)
    if name == "auto":
        log.info("%s; using dlib", fan_missing_models()[0])
    return DlibBackend(detect_max_side=detect_max_side)


# ----------------------------------------------------------------------------------------------
# following one face


@dataclass
class FaceTracker:
    """Picks one face per frame so that a video follows one person.

    At the start (and after losing the face for long), the largest face among the confident ones
    (score at least `acquire_score_ratio` of the best, so a large weak false detection cannot win
    over a real face). Afterwards the face nearest
    the last box, but only within a gate that grows with the number of frames since it was last seen:
    someone else at the other side of the frame is not taken for the tracked face. Frames where the
    tracked face is not found return None.
    """

    gate: float = 1.0  # allowed centre distance, in face sizes, one frame after the last sighting
    gate_growth: float = 0.5  # added per further missed frame
    forget_after: int = 50  # missed frames after which the largest face is taken again
    acquire_score_ratio: float = 0.5
    last_box: np.ndarray | None = None
    missed: int = 0

    def choose(self, faces: list[FaceDetection]) -> FaceDetection | None:
        chosen = None
        if faces and (self.last_box is None or self.missed >= self.forget_after):
            best_score = max(f.score for f in faces)
            confident = [f for f in faces if f.score >= self.acquire_score_ratio * best_score] or faces
            chosen = max(confident, key=lambda f: f.size)
        elif faces:
            last_centre = (self.last_box[:2] + self.last_box[2:]) / 2
            last_size = float(np.sqrt(np.prod(np.maximum(self.last_box[2:] - self.last_box[:2], 1.0))))
            nearest = min(faces, key=lambda f: float(np.linalg.norm(f.centre - last_centre)))
            allowed = (self.gate + self.gate_growth * self.missed) * last_size
            if np.linalg.norm(nearest.centre - last_centre) <= allowed:
                chosen = nearest
        if chosen is None:
            self.missed += 1
        else:
            self.last_box = chosen.box.copy()
            self.missed = 0
        return chosen
