"""Who a face is: dlib's face-recognition ResNet embedding, and grouping face tracks into people.

The embedding is dlib's 128-D descriptor (`dlib_face_recognition_resnet_model_v1.dat`, shipped offline
by face_recognition_models). It is computed from 68 landmarks of any backend (dlib's own chip
alignment uses them), so FAN landmarks work as well as dlib's. Two descriptors of one person are
closer than 0.6 (Euclidean), dlib's published rule.

People: tracks are grouped by average-linkage agglomerative clustering of their mean descriptors,
never merging two tracks seen in the same frame (one person is not twice in one picture).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from videdit.errors import MissingWeightsError

SAME_PERSON_DISTANCE = 0.6  # dlib's rule for its descriptors (Euclidean)
EMBEDDING_DIM = 128


class FaceEmbedder:
    """dlib's face-recognition ResNet: `embed(image, box, landmarks)` -> float64 [128]."""

    name = "dlib_resnet_v1"

    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise MissingWeightsError("dlib is not installed: pip install dlib-bin") from None
        from videdit.face.landmarks import DLIB_RECOGNITION_MODEL, dlib_model_path

        path = dlib_model_path(DLIB_RECOGNITION_MODEL)
        try:
            self._model = dlib.face_recognition_model_v1(str(path))
        except RuntimeError as error:
            raise MissingWeightsError(f"dlib model {path} is unreadable ({error}); "
                                      "reinstall face_recognition_models") from None
        self._dlib = dlib

    def embed(self, image: np.ndarray, box: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Descriptor of the face with `landmarks` [68, 2] (full-image pixels) in uint8 RGB `image`."""
        dlib = self._dlib
        rect = dlib.rectangle(*(int(round(v)) for v in box[:4]))
        points = dlib.points([dlib.point(int(round(x)), int(round(y))) for x, y in landmarks])
        shape = dlib.full_object_detection(rect, points)
        return np.asarray(self._model.compute_face_descriptor(np.ascontiguousarray(image), shape), dtype=np.float64)


def cluster_people(embeddings: Sequence[np.ndarray], cannot_link: set[tuple[int, int]] = frozenset(),
                   max_distance: float = SAME_PERSON_DISTANCE) -> list[int]:
    """Cluster index per item: average-linkage agglomeration of the embeddings (Euclidean), merging
    the closest pair of clusters while their average distance is below `max_distance` and no pair
    (i, j) of `cannot_link` would end up together. Deterministic: ties go to the lowest indices;
    clusters are numbered by their lowest item."""
    n = len(embeddings)
    if n == 0:
        return []
    vectors = np.stack([np.asarray(e, dtype=np.float64) for e in embeddings])
    distance = np.linalg.norm(vectors[:, None, :] - vectors[None, :, :], axis=-1)
    forbidden = np.zeros((n, n), dtype=bool)
    for i, j in cannot_link:
        forbidden[i, j] = forbidden[j, i] = True
    clusters = [[i] for i in range(n)]
    while len(clusters) > 1:
        best = None
        for a in range(len(clusters)):
            for b in range(a + 1, len(clusters)):
                if forbidden[np.ix_(clusters[a], clusters[b])].any():
                    continue
                mean = float(distance[np.ix_(clusters[a], clusters[b])].mean())
                if mean < max_distance and (best is None or mean < best[0]):
                    best = (mean, a, b)
        if best is None:
            break
        _, a, b = best
        clusters[a] = sorted(clusters[a] + clusters[b])
        del clusters[b]
    labels = [0] * n
    for number, members in enumerate(sorted(clusters, key=min)):
        for item in members:
            labels[item] = number
    return labels
