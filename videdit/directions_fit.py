"""`videdit directions fit`: an edit direction from your own material, as InterFaceGAN fits its boundaries.

Two sources of labelled latents:
- examples: folders of face images or videos with (`--positive`) and without (`--negative`) the attribute;
  each face is aligned as the align stage does (68 landmarks, the FFHQ quad, the encoder's crop) and encoded
  with the run's ReStyle encoder (`face_latents`);
- scores: latents [n, num_ws, 512] (or [n, 512]) with one attribute score each (InterFaceGAN's recipe): the
  top and bottom `fraction` of the scores (0.02 as published) become the two classes (`classes_from_scores`).

A linear classifier (scikit-learn's SVC with a linear kernel, exactly InterFaceGAN's, or logistic regression) is fitted in
W (the mean over W+) or on the whole W+ code (`space="wplus"`: a [num_ws, 512] direction, one row per layer);
its unit normal, pointing to the positive class, is the direction. `conditional` projects other directions out
(InterFaceGAN's conditional manipulation). The cross-validated accuracy says how separable the classes are.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from videdit.errors import InputError, VideditError

SPACES = ("w", "wplus")
CLASSIFIERS = ("svm", "logistic")
MIN_PER_CLASS = 2  # cross-validation needs two examples of each class


@dataclass
class FitSettings:
    space: str = "w"
    classifier: str = "svm"
    fraction: float = 0.02  # InterFaceGAN's chosen_num_or_ratio
    folds: int = 5
    c: float = 1.0  # the classifier's regularisation (scikit-learn's C)
    seed: int = 0

    def __post_init__(self):
        if self.space not in SPACES:
            raise VideditError(f"--space must be one of {', '.join(SPACES)}, got {self.space!r}")
        if self.classifier not in CLASSIFIERS:
            raise VideditError(f"--classifier must be one of {', '.join(CLASSIFIERS)}, got {self.classifier!r}")
        if not 0 < self.fraction <= 0.5:
            raise VideditError(f"--fraction must be in (0, 0.5], got {self.fraction}")
        if self.folds < 2 or not np.isfinite(self.c) or self.c <= 0:
            raise VideditError("--folds must be >= 2 and the classifier's C a finite number > 0")


@dataclass
class FitResult:
    direction: np.ndarray  # float32 unit [512] (space w) or [num_ws, 512] (space wplus)
    accuracy: float  # cross-validated
    counts: dict[str, int]
    record: dict = field(default_factory=dict)


def _features(latents: np.ndarray, space: str) -> np.ndarray:
    """[n, num_ws, 512] or [n, 512] -> [n, d]: the mean over W+ (w), or the whole code flattened (wplus)."""
    latents = np.asarray(latents, dtype=np.float64)
    if latents.ndim == 2:
        if space == "wplus":
            raise InputError("--space wplus needs W+ latents [n, num_ws, 512]; these are [n, 512]")
        return latents
    if latents.ndim != 3:
        raise InputError(f"latents must be [n, num_ws, 512] or [n, 512], got shape {list(latents.shape)}")
    return latents.mean(axis=1) if space == "w" else latents.reshape(len(latents), -1)


def classes_from_scores(latents: np.ndarray, scores: np.ndarray, fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """InterFaceGAN's classes: the latents of the top and the bottom `fraction` of the scores (positive, negative)."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(scores) != len(latents):
        raise InputError(f"{len(latents)} latents but {len(scores)} scores")
    if not np.all(np.isfinite(scores)) or not np.all(np.isfinite(latents)):
        raise InputError("latents and scores must be finite numbers")
    chosen = int(len(scores) * fraction)
    if chosen < MIN_PER_CLASS:
        raise InputError(f"{len(scores)} scored latents x fraction {fraction:g} = {chosen} per class; need at least "
                         f"{MIN_PER_CLASS} (more latents or a larger --fraction)")
    order = np.argsort(-scores, kind="stable")
    return latents[order[:chosen]], latents[order[-chosen:]]


def _unit(v: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(v)
    if not np.isfinite(norm) or norm == 0:
        raise VideditError("the fitted direction is zero: the two classes cannot be told apart")
    return v / norm


def project_out(direction: np.ndarray, conditions: Sequence[np.ndarray]) -> np.ndarray:
    """The direction with the conditions' components removed, renormalised (InterFaceGAN's project_boundary,
    for any number of conditions: the primal projected on the orthogonal complement of their span)."""
    d = np.asarray(direction, np.float64).reshape(-1)
    if not conditions:
        return _unit(d)
    basis, _ = np.linalg.qr(np.stack([np.asarray(c, np.float64).reshape(-1) for c in conditions], axis=1))
    return _unit(d - basis @ (basis.T @ d))


def _classifier(settings: FitSettings):
    if settings.classifier == "svm":  # InterFaceGAN's train_boundary: svm.SVC(kernel="linear") (libsvm; exact)
        from sklearn.svm import SVC

        return SVC(kernel="linear", C=settings.c)
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=settings.c, max_iter=5000)


def fit_direction(positive: np.ndarray, negative: np.ndarray, settings: FitSettings | None = None,
                  conditional: Sequence[np.ndarray] = (), names: Sequence[str] = ("positive", "negative")) -> FitResult:
    """The unit normal of a linear classifier between the classes, pointing to the positive one; `conditional`:
    directions projected out. positive / negative: latents [n, num_ws, 512] (or [n, 512] for space w)."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    settings = settings or FitSettings()
    counts = {names[0]: len(positive), names[1]: len(negative)}
    for name, n in counts.items():
        if n < MIN_PER_CLASS:
            raise InputError(f"{name}: {n} example{'s' * (n != 1)}; need at least {MIN_PER_CLASS} of each class")
    shape = np.asarray(positive).shape[1:]
    x = np.concatenate([_features(positive, settings.space), _features(negative, settings.space)])
    y = np.concatenate([np.ones(len(positive), int), np.zeros(len(negative), int)])
    folds = min(settings.folds, *counts.values())
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=settings.seed)
    accuracy = float(cross_val_score(_classifier(settings), x, y, cv=splitter).mean())
    clf = _classifier(settings).fit(x, y)
    normal = np.asarray(clf.coef_, np.float64).reshape(-1)
    conds = [_condition(c, settings.space, shape) for c in conditional]
    direction = project_out(normal, conds)
    if settings.space == "wplus":
        direction = direction.reshape(shape)
    record = {"settings": asdict(settings), "counts": counts, "cross_validated_accuracy": accuracy, "folds": folds,
              "conditional": len(conds), "shape": list(direction.shape)}
    return FitResult(direction.astype(np.float32), accuracy, counts, record)


def _condition(c: np.ndarray, space: str, shape: tuple) -> np.ndarray:
    """A condition direction in the fit's space: [512] (a W direction: the same on every layer in wplus) or the
    fit's own W+ shape."""
    c = np.asarray(c, np.float64)
    if c.ndim == 2 and c.shape[0] == 1:
        c = c[0]
    w_dim = shape[-1]
    if space == "w" and c.shape == (w_dim,):
        return c
    if space == "wplus" and c.shape == (w_dim,):
        return np.tile(c, (shape[0], 1)).reshape(-1)
    if space == "wplus" and c.shape == tuple(shape):
        return c.reshape(-1)
    raise InputError(f"--conditional direction has shape {list(c.shape)}; expected ({w_dim},)"
                     + (f" or {list(shape)}" if space == "wplus" else ""))


def write_direction(out: str | Path, result: FitResult, how: dict) -> tuple[Path, Path]:
    """OUT.npy (the unit direction, float32) and OUT.json beside it (how it was made)."""
    from videdit.fileio import atomic_path, atomic_write_text

    out = Path(out)
    if out.suffix != ".npy":
        out = out.with_name(out.name + ".npy")
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, result.direction, allow_pickle=False)
    info = out.with_suffix(".json")
    atomic_write_text(info, json.dumps({**result.record, **how}, indent=1, default=str) + "\n")
    return out, info


# ---- faces from files


def media_files(folder: str | Path) -> list[Path]:
    """The images and videos of a folder (or the one file given), in name order."""
    from videdit.io import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    folder = Path(folder)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise InputError(f"no such file or folder: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in (*IMAGE_SUFFIXES, *VIDEO_SUFFIXES))
    if not files:
        raise InputError(f"{folder}: no images or videos")
    return files


def _frames(path: Path, per_video: int):
    """uint8 HWC RGB frames of an image (one) or a video (up to per_video, evenly spaced)."""
    from videdit.io import IMAGE_SUFFIXES, VideoReader, read_image

    if path.suffix.lower() in IMAGE_SUFFIXES:
        return [read_image(path)]
    frames = [f.image for f in VideoReader(path)]
    if len(frames) > per_video:
        frames = [frames[i] for i in np.linspace(0, len(frames) - 1, per_video).round().astype(int)]
    return frames


def face_latents(files: Sequence[Path], models, *, device: str = "cpu", landmarks: str = "dlib", n_iters: int = 3,
                 input_size: int = 256, per_video: int = 8) -> np.ndarray:
    """W+ latents [n, num_ws, 512] of the largest face of each image (and of up to per_video frames of each video),
    aligned as the align stage does and encoded with the models' ReStyle encoder. Files with no face: one line
    naming them all."""
    import torch

    from videdit.face.alignment import encoder_crop, ffhq_quad
    from videdit.face.landmarks import make_backend
    from videdit.networks.encoders import average_image, restyle_invert

    from videdit import progress

    backend = make_backend(landmarks, device=device)
    crops, faceless = [], []
    for path in progress.track(files, desc="directions: faces", unit="file"):
        found = 0
        for frame in _frames(path, per_video):
            faces = backend.find_faces(frame)
            if faces:
                face = max(faces, key=lambda f: f.size)
                crops.append(encoder_crop(frame, ffhq_quad(face.landmarks), input_size, "published"))
                found += 1
        if not found:
            faceless.append(path.name)
    if faceless:
        raise InputError(f"no face found in {len(faceless)} file{'s' * (len(faceless) != 1)}: {', '.join(faceless)}")
    G = models.load_generator(device)
    encoder, latent_avg = models.load_encoder(device)
    avg = average_image(G, latent_avg, input_size)
    out = []
    with torch.inference_mode():
        for lo in progress.track(range(0, len(crops), 8), desc="directions: encode", unit="batch of 8"):
            batch = torch.from_numpy(np.stack(crops[lo:lo + 8])).permute(0, 3, 1, 2).float().to(device) / 127.5 - 1.0
            codes = restyle_invert(encoder, G, batch, latent_avg, n_iters=n_iters, avg_image=avg, input_size=input_size,
                                   render_final=False).codes
            out.append(codes.float().cpu().numpy())
    return np.concatenate(out)
