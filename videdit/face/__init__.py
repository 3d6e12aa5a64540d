"""Face landmarks (dlib / face-alignment backends), FFHQ-style alignment quads, crops and transforms."""
from videdit.face.alignment import (
    aligned_to_unaligned_matrix,
    crop_to_source,
    crop_to_source_matrix,
    eye_centres,
    ffhq_quad,
    frame_transform,
    make_transform_matrix,
    quad_to_crop,
    source_to_crop,
    source_to_crop_matrix,
)
from videdit.face.landmarks import FaceDetection, FaceTracker, LandmarkBackend, make_backend

__all__ = [
    "FaceDetection", "FaceTracker", "LandmarkBackend", "aligned_to_unaligned_matrix", "crop_to_source",
    "crop_to_source_matrix", "eye_centres", "ffhq_quad", "frame_transform", "make_transform_matrix", "make_backend",
    "quad_to_crop", "source_to_crop", "source_to_crop_matrix",
]
