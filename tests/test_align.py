"""videdit.face and the align stage: geometry, landmarks, tracking, transforms on real photographs.

Clips are built from real portraits (scikit-image's astronaut, matplotlib's Grace Hopper) turned and
moved by known amounts (tests/clips.py); the transforms must recover those amounts.
"""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.clips import astronaut, make_image_folder, make_photo_clip, similarity
from videdit.face.alignment import (
    aligned_to_unaligned_matrix,
    apply_matrix,
    covering_box,
    crop_to_source,
    crop_to_source_matrix,
    eye_centres,
    ffhq_quad,
    fill_missing,
    frame_transform,
    make_transform_matrix,
    quad_side,
    quad_to_crop,
    signed_angle_deg,
    smooth_quads,
    source_to_crop,
)
from videdit.face.landmarks import FaceDetection, FaceTracker
from videdit.errors import InputError, MissingWeightsError, NoFaceError

pytestmark = pytest.mark.numeric

REPO = Path(__file__).resolve().parents[1]


def load_transforms(align_dir):
    """Every array of align/transforms.npz, read through the run folder's records module."""
    from videdit import records

    return records.AlignRecord.load(align_dir).arrays()


# ----------------------------------------------------------------------------------------------
# geometry (no detector needed)


def synthetic_landmarks(centre=(100.0, 120.0), eye_distance=40.0) -> np.ndarray:
    """An upright frontal face: 68 points with the eyes and mouth corners where the quad reads them."""
    rng = np.random.default_rng(1)
    points = np.asarray(centre) + rng.normal(0, 30, (68, 2))
    cx, cy = centre
    half = eye_distance / 2
    eye_offsets = np.array([[-6, 0], [-3, -2], [3, -2], [6, 0], [3, 2], [-3, 2]], dtype=float)
    points[36:42] = np.array([cx - half, cy - 20]) + eye_offsets
    points[42:48] = np.array([cx + half, cy - 20]) + eye_offsets
    points[48] = (cx - 18, cy + 25)
    points[54] = (cx + 18, cy + 25)
    return points


def move(points, matrix):
    return np.asarray(points) @ matrix[:2, :2].T + matrix[:2, 2]


def test_quad_of_upright_face_is_the_expected_square():
    lm = synthetic_landmarks()
    quad = ffhq_quad(lm)
    left, right = eye_centres(lm)
    np.testing.assert_allclose(left, (80, 100))
    np.testing.assert_allclose(right, (120, 100))
    # eye-to-mouth (0, 45) turns the x axis by nothing: square, axis-aligned, half side 2 * 40
    centre = np.array([100, 100 + 0.1 * 45])
    np.testing.assert_allclose(quad, centre + np.array([[-80, -80], [-80, 80], [80, 80], [80, -80]]), atol=1e-9)
    ffhq = ffhq_quad(lm, rule="ffhq")  # FFHQ's rule: max(2 * 40, 1.8 * 45) = 81
    np.testing.assert_allclose(ffhq, centre + np.array([[-81, -81], [-81, 81], [81, 81], [81, -81]]), atol=1e-9)


def test_quad_moves_with_the_face():
    lm = synthetic_landmarks()
    motion = similarity(1.7, 33.0, (100, 100), (250, 140))
    np.testing.assert_allclose(ffhq_quad(move(lm, motion)), move(ffhq_quad(lm), motion), atol=1e-9)


def test_crop_mapping_round_trip_and_corners():
    quad = ffhq_quad(move(synthetic_landmarks(), similarity(1.3, -50.0, (100, 100), (140, 160))))
    size = 64
    points = np.random.default_rng(0).uniform(-10, 70, (20, 2))
    np.testing.assert_allclose(source_to_crop(crop_to_source(points, quad, size), quad, size), points, atol=1e-9)
    # the crop's outer corners (pixel-centre coordinates -0.5 and size-0.5) are the quad's corners
    corners = np.array([[-0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5], [size - 0.5, -0.5]])
    np.testing.assert_allclose(crop_to_source(corners, quad, size), quad, atol=1e-9)
    # matrix form is the same map
    np.testing.assert_allclose(apply_matrix(crop_to_source_matrix(quad, size), points),
                               crop_to_source(points, quad, size))


@pytest.mark.parametrize("angle, scale, size", [(0.0, 1.0, 48), (27.0, 1.0, 48), (-140.0, 0.8, 48), (10.0, 6.0, 40)])
def test_quad_to_crop_puts_source_points_where_the_mapping_says(angle, scale, size):
    """Bright blobs at known source points land at source_to_crop(point) (blob centroids), for turned
    quads, and for a quad much larger than the crop (shrink first) that leaves the frame (padding)."""
    height, width = 260, 300  # the blobs stay inside the frame; the scale-6 quad does not
    ys, xs = np.mgrid[0:height, 0:width]
    centre = np.array([150.0, 130.0])
    sigma = 2.0 * scale
    image = np.zeros((height, width, 3), np.uint8)
    lm = move(synthetic_landmarks(tuple(centre), 20 * scale), similarity(1.0, angle, centre, centre))
    quad = ffhq_quad(lm)
    spots = quad.mean(axis=0) + scale * np.array([[-15.3, -12.2], [14.6, 3.1], [2.5, 12.7]])
    for spot in spots:
        blob = np.exp(-((xs - spot[0]) ** 2 + (ys - spot[1]) ** 2) / (2 * sigma**2))
        image[..., 0] = np.maximum(image[..., 0], (250 * blob).astype(np.uint8))
    crop = quad_to_crop(image, quad, size).astype(float)[..., 0]
    expected = source_to_crop(spots, quad, size)
    assert expected.min() > 4 and expected.max() < size - 4
    cy, cx = np.mgrid[0:size, 0:size]
    radius = 3 * sigma * size / quad_side(quad) + 2
    for point in expected:
        weights = crop * (((cx - point[0]) ** 2 + (cy - point[1]) ** 2) < radius**2)
        centroid = np.array([(weights * cx).sum(), (weights * cy).sum()]) / weights.sum()
        assert np.linalg.norm(centroid - point) < 0.3, (centroid, point)


def test_quad_to_crop_outside_the_frame_is_padded_not_black():
    image = np.full((120, 160, 3), (200, 150, 100), np.uint8)
    image[:, :80] = (180, 140, 90)
    quad = np.array([[-100.0, -60.0], [-100.0, 100.0], [60.0, 100.0], [60.0, -60.0]])  # mostly outside
    crop = quad_to_crop(image, quad, 32)
    assert crop.shape == (32, 32, 3)
    assert crop.min() > 60  # no black border: the frame is mirrored / faded to its median colour
    entirely_outside = quad_to_crop(image, quad + 1000, 16)
    assert entirely_outside.shape == (16, 16, 3) and entirely_outside.min() > 60


def test_signed_angle_convention():
    assert signed_angle_deg(np.array([1.0, 0.0]), np.array([0.0, -1.0])) == pytest.approx(90.0)  # right -> up: CCW
    assert signed_angle_deg(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(-90.0)
    assert signed_angle_deg(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == 180.0  # (-180, 180]
    assert signed_angle_deg(np.array([1.0, 0.0]), np.array([-1.0, -1e-300])) == 180.0
    assert signed_angle_deg(np.array([2.0, 0.0]), np.array([5.0, 0.0])) == 0.0  # parallel: no NaN


def test_make_transform_matrix_is_the_documented_convention():
    c, s = math.cos(math.radians(33.0)), math.sin(math.radians(33.0))
    np.testing.assert_allclose(make_transform_matrix((0.1, -0.2), 33.0), [[c, s, 0.1], [-s, c, -0.2], [0, 0, 1]])


@pytest.mark.parametrize("angle", [0.0, 12.5, -37.0, 179.0])
def test_frame_transform_recovers_a_known_motion(angle):
    """Landmarks of frame i = frame 0's moved by a known similarity (rotation about some pivot + shift).
    The box is frame 0's quad; r must equal the motion's angle and t the motion of the crop centre."""
    size = 256
    lm0 = synthetic_landmarks()
    box = ffhq_quad(lm0)
    motion = similarity(1.0, angle, (90.0, 130.0), (90.0 + 7.0, 130.0 - 11.0))
    lm = move(lm0, motion)
    result = frame_transform(lm, ffhq_quad(lm), box, size)
    assert result.rotation_deg == pytest.approx(angle, abs=1e-7)
    # independent expectation: the motion seen in the box's crop pixels, applied to the crop centre
    to_crop = np.linalg.inv(crop_to_source_matrix(box, size))
    in_crop = to_crop @ motion @ np.linalg.inv(to_crop)
    centre = np.array([(size - 1) / 2, (size - 1) / 2, 1.0])
    np.testing.assert_allclose(result.translation, ((in_crop @ centre)[:2] - centre[:2]) / size, atol=1e-9)
    np.testing.assert_allclose(result.matrix, make_transform_matrix(result.translation, result.rotation_deg))
    # and the exact aligned -> unaligned map has the same rotation block
    exact = aligned_to_unaligned_matrix(ffhq_quad(lm), box, size)
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    np.testing.assert_allclose(exact[:2, :2], [[c, s], [-s, c]], atol=1e-9)


def test_fill_missing_interpolates_and_holds_the_ends():
    values = np.array([[np.nan], [0.0], [np.nan], [np.nan], [3.0], [np.nan]])
    found = ~np.isnan(values[:, 0])
    np.testing.assert_allclose(fill_missing(values, found)[:, 0], [0, 0, 1, 2, 3, 3])
    with pytest.raises(ValueError):
        fill_missing(values, np.zeros(6, bool))


def test_smooth_quads_keeps_uniform_motion_and_cuts_jitter():
    base = ffhq_quad(synthetic_landmarks())
    steady = np.stack([base + [2.0 * i, -1.0 * i] for i in range(9)])
    np.testing.assert_allclose(smooth_quads(steady, 5), steady, atol=1e-9)
    np.testing.assert_allclose(smooth_quads(steady, 0), steady)
    jitter = steady + np.random.default_rng(0).normal(0, 2.0, steady.shape)
    assert np.abs(smooth_quads(jitter, 5) - steady)[2:-2].mean() < np.abs(jitter - steady)[2:-2].mean() * 0.75


def test_covering_box_contains_every_quad():
    lm = synthetic_landmarks()
    quads = np.stack([ffhq_quad(move(lm, similarity(1.0, a, (100, 100), (100 + 5 * a, 100)))) for a in (-8, 0, 8)])
    box = covering_box(quads, quads[1])
    inside = source_to_crop(quads.reshape(-1, 2), box, 100)
    assert inside.min() >= -0.5 - 1e-6 and inside.max() <= 99.5 + 1e-6


def face(box, score=1.0):
    return FaceDetection(box=np.asarray(box, float), score=score, landmarks=np.zeros((68, 2)))


def test_tracker_follows_one_person():
    tracker = FaceTracker()
    big, small = face([0, 0, 100, 100]), face([300, 0, 360, 60])
    assert tracker.choose([small, big]) is big  # largest at the start
    grown = face([290, 0, 420, 130])  # the other person is now the largest
    assert tracker.choose([grown, face([5, 2, 105, 102])]).box[0] == 5  # nearest, not largest
    assert tracker.choose([grown]) is None  # only the other person: not taken for the tracked face
    assert tracker.choose([face([20, 5, 120, 105])]).box[0] == 20  # back, a bit further: gate grew
    first = FaceTracker()
    false_alarm = face([0, 300, 150, 450], score=0.01)  # large, weak
    assert first.choose([false_alarm, face([200, 0, 280, 80], score=1.5)]).box[0] == 200


# ----------------------------------------------------------------------------------------------
# landmark backends


def test_dlib_model_found_without_importing_face_recognition_models():
    code = ("import sys; from videdit.face.landmarks import dlib_shape_model_path as p; "
            "path = p(); assert path.is_file(), path; "
            "assert 'face_recognition_models' not in sys.modules; print(path.name)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "shape_predictor_68_face_landmarks.dat"


def test_backend_choice_and_missing_models(tmp_path, monkeypatch):
    from videdit.face import landmarks

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty cache: FAN cannot run
    missing = landmarks.fan_missing_models()
    assert len(missing) == 2 and "s3fd-619a316812.pth" in missing[0] and "2DFAN4" in missing[1]
    with pytest.raises(MissingWeightsError) as caught:
        landmarks.make_backend("face-alignment")
    message = str(caught.value)
    assert "\n" not in message and "s3fd-619a316812.pth" in message and "videdit weights fetch fan_detector" in message
    assert not (tmp_path / "torch").exists()  # nothing was downloaded or created
    with pytest.raises(InputError):
        landmarks.make_backend("mediapipe")
    with pytest.raises(MissingWeightsError) as caught:
        landmarks.DlibBackend(model_path=tmp_path / "shape_predictor_68_face_landmarks.dat")
    assert "face_recognition_models" in str(caught.value)


@pytest.fixture(scope="module")
def dlib_backend():
    from videdit.face.landmarks import DlibBackend

    return DlibBackend()


def test_auto_picks_dlib_when_fan_is_not_cached(tmp_path, monkeypatch):
    from videdit.face import landmarks

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    # make_backend builds a DlibBackend: check the choice without paying for a second load
    monkeypatch.setattr(landmarks, "DlibBackend", lambda **kwargs: "dlib-chosen")
    assert landmarks.make_backend("auto") == "dlib-chosen"


def test_dlib_landmarks_on_real_photo(dlib_backend):
    from PIL import Image

    image = astronaut()
    faces = dlib_backend.find_faces(image)
    main = max(faces, key=lambda f: f.score)
    assert main.landmarks.shape == (68, 2)
    left, right = eye_centres(main.landmarks)
    assert 190 < left[0] < 215 and 235 < right[0] < 260 and 90 < left[1] < 115  # her eyes
    # searching near the previous box finds the same face and the same landmarks
    near = dlib_backend.find_faces(image, near=main.box)
    assert len(near) == 1
    assert np.abs(near[0].landmarks - main.landmarks).max() <= 2.0
    # detection on a downscaled copy, landmarks on full resolution: same points as a full-size search
    big = np.asarray(Image.fromarray(image).resize((1024, 1024), Image.BICUBIC))
    fast = dlib_backend.find_faces(big)
    slow_backend = type(dlib_backend).__new__(type(dlib_backend))
    slow_backend.__dict__.update(dlib_backend.__dict__, detect_max_side=4096)
    slow = slow_backend.find_faces(big)
    fast_main, slow_main = max(fast, key=lambda f: f.size), max(slow, key=lambda f: f.size)
    assert np.abs(fast_main.landmarks - slow_main.landmarks).mean() < 1.5
    np.testing.assert_allclose(fast_main.landmarks / 2, main.landmarks, atol=6)


# ----------------------------------------------------------------------------------------------
# the stage


@pytest.fixture(scope="module")
def aligned_clip(tmp_path_factory, dlib_backend):
    from videdit.stages.align import AlignSettings, run_align

    folder = tmp_path_factory.mktemp("align")
    n = 12
    rotations = 15 * np.sin(np.linspace(0, 2 * np.pi, n))
    shifts = np.stack([np.linspace(-20, 25, n), 10 * np.cos(np.linspace(0, 3, n))], axis=1)
    truth = make_photo_clip(folder / "astronaut.mp4", n_frames=n, rotations_deg=rotations, shifts_px=shifts,
                            blank_frames=(5, 6), audio=True)
    result = run_align(truth.path, folder / "align", AlignSettings(crop_size=192), backend=dlib_backend)
    return truth, result, load_transforms(result.out_dir)


def test_stage_recovers_known_rotation_and_translation(aligned_clip):
    truth, result, data = aligned_clip
    found = data["face_found"]
    np.testing.assert_array_equal(found, truth.face_visible)
    # The blank frames are a shot of their own (a cut into them and out of them; the clip's fast turns may
    # add more). Each shot with a face has its own fixed box, its first frame's quad ("first"); the blank
    # shot borrows the previous shot's.
    starts = [int(x) for x in data["shot_starts"]]
    assert {0, 5, 7} <= set(starts)
    boxes = data["box_quads"]
    np.testing.assert_array_equal(data["box_quad"], boxes[0])
    np.testing.assert_array_equal(boxes[5:7], np.broadcast_to(boxes[4], (2, 4, 2)))
    for start, end in zip(starts, starts[1:] + [truth.n_frames]):
        if start == 5:
            continue
        np.testing.assert_array_equal(boxes[start:end], np.broadcast_to(data["aligned_quads"][start], (end - start, 4, 2)))
        rotation, translation = truth.expected_transforms(boxes[start], int(data["crop_size"]), reference=start)
        assert np.abs(data["rotation_deg"][start:end] - rotation[start:end]).max() < 1.0
        assert np.abs(data["translation"][start:end] - translation[start:end]).max() < 0.01
        assert data["rotation_deg"][start] == 0.0 and np.all(data["translation"][start] == 0.0)  # box "first"
    np.testing.assert_allclose(data["matrix"], np.stack([make_transform_matrix(t, r) for t, r in
                                                         zip(data["translation"], data["rotation_deg"])]), atol=1e-6)


def test_stage_keeps_blank_frames_flagged_and_interpolated(aligned_clip):
    truth, result, data = aligned_clip
    n = truth.n_frames
    assert result.n_frames == n and result.n_faces_found == n - 2 and result.n_interpolated == 2
    for key, shape in [("rotation_deg", (n,)), ("translation", (n, 2)), ("matrix", (n, 3, 3)), ("face_found", (n,)),
                       ("landmarks", (n, 68, 2)), ("aligned_quads", (n, 4, 2)), ("box_quad", (4, 2))]:
        assert data[key].shape == shape, key
    assert data["face_found"].dtype == bool and not data["face_found"][[5, 6]].any()
    lm = data["landmarks"].astype(float)
    assert np.isfinite(lm).all()
    np.testing.assert_allclose(lm[5], lm[4] + (lm[7] - lm[4]) / 3, atol=1e-3)  # linear across the gap
    np.testing.assert_allclose(lm[6], lm[4] + 2 * (lm[7] - lm[4]) / 3, atol=1e-3)
    # the interpolated transforms lie between their neighbours'
    r = data["rotation_deg"]
    assert min(r[4], r[7]) - 1e-3 <= r[5] <= max(r[4], r[7]) + 1e-3
    # landmarks follow the true face position
    centres = truth.face_centres()
    eye_mid = lm[:, 36:48].mean(axis=1)
    assert np.linalg.norm(eye_mid - centres, axis=1)[truth.face_visible].max() < 40


def test_stage_files(aligned_clip):
    from PIL import Image

    from videdit import records
    from videdit.io import VideoReader

    truth, result, data = aligned_clip
    # aligned crops at the encoder's input size (AlignSettings.aligned_size), unaligned at crop_size
    for folder, side in ((result.aligned_dir, 256), (result.unaligned_dir, 192)):
        files = sorted(folder.glob("*.png"))
        assert [f.name for f in files] == [f"{i:06d}.png" for i in range(truth.n_frames)]
        with Image.open(files[3]) as image:
            assert image.size == (side, side) and image.mode == "RGB"
    preview = list(VideoReader(result.preview_path))
    assert len(preview) == truth.n_frames
    np.testing.assert_allclose([f.time_s for f in preview], truth.timestamps_s, atol=1e-3)
    info = records.load_video_info(result.out_dir)
    assert info.size == truth.size and info.n_frames == truth.n_frames and info.audio is not None
    # align.json says how the faces were found, as the result does
    noted = records.AlignInfo.load(result.out_dir)
    assert (noted.backend, noted.n_frames, noted.n_faces_found) == (result.backend_used, truth.n_frames, result.n_faces_found)
    # the aligned crops of different frames show the face alike (alignment undoes the motion),
    # while the unaligned crops of a turned frame differ from frame 0's
    def load(folder, i):
        with Image.open(folder / f"{i:06d}.png") as image:
            return np.asarray(image, dtype=float)

    aligned_change = np.abs(load(result.aligned_dir, 3) - load(result.aligned_dir, 0)).mean()
    unaligned_change = np.abs(load(result.unaligned_dir, 3) - load(result.unaligned_dir, 0)).mean()
    assert aligned_change < 0.5 * unaligned_change


def test_unaligned_crop_is_aligned_crop_moved_by_the_transform(aligned_clip):
    """Warp the aligned crop by (r, t) and compare with the unaligned crop: same face, same place."""
    from PIL import Image

    truth, result, data = aligned_clip
    size = int(data["crop_size"])
    i = 9
    with Image.open(result.aligned_dir / f"{i:06d}.png") as image:
        aligned = image.resize((size, size), Image.BILINEAR)  # written at the encoder's size; t is in crop widths
    with Image.open(result.unaligned_dir / f"{i:06d}.png") as image:
        unaligned = np.asarray(image, dtype=float)
    # unaligned pixel p <- aligned pixel R^-1 (p - c - t*size) + c (PIL wants output -> input, edge coords)
    angle = math.radians(float(data["rotation_deg"][i]))
    c, s = math.cos(angle), math.sin(angle)
    rotation = np.array([[c, s], [-s, c]])
    centre = np.full(2, size / 2)
    inverse = np.linalg.inv(rotation)
    offset = centre - inverse @ (centre + data["translation"][i] * size)
    warped = np.asarray(aligned.transform((size, size), Image.AFFINE, (*inverse[0], offset[0], *inverse[1], offset[1]),
                                          resample=Image.BILINEAR), dtype=float)
    middle = slice(size // 4, 3 * size // 4)
    error = np.abs(warped[middle, middle] - unaligned[middle, middle]).mean()
    baseline = np.abs(np.asarray(aligned, dtype=float)[middle, middle] - unaligned[middle, middle]).mean()
    assert error < 6.0 and error < 0.4 * baseline


def test_stage_follows_the_first_face_when_a_second_appears(tmp_path, dlib_backend):
    from videdit.stages.align import AlignSettings, run_align

    truth = make_photo_clip(tmp_path / "two.mp4", n_frames=5, size=(400, 260), rotations_deg=[0, 3, 6, 9, 12],
                            shifts_px=(-60, 0), distractor="grace_hopper", distractor_scale=0.55,
                            distractor_offset=(110, 20), distractor_from=2)
    # see every face in every frame; one shot: the second face pops in at once, which the cut detector
    # rightly calls a cut, but this test is about whom the stage follows
    settings = AlignSettings(crop_size=64, preview=False, full_search_every=1, detect_shots=False)
    result = run_align(truth.path, tmp_path / "align", settings, backend=dlib_backend)
    data = load_transforms(result.out_dir)
    assert data["face_found"].all()
    assert data["multi_face"][2:].all() and not data["multi_face"][:2].any()
    eye_mid = data["landmarks"][:, 36:48].mean(axis=1)
    assert np.linalg.norm(eye_mid - truth.face_centres(), axis=1).max() < 40  # always the astronaut
    rotation, _ = truth.expected_transforms(data["box_quad"], 64)
    assert np.abs(data["rotation_deg"] - rotation).max() < 1.0


def test_stage_grace_hopper_with_smoothing_and_cover_box(tmp_path, dlib_backend):
    from videdit.stages.align import AlignSettings, run_align

    rotations = [-8, -4, 0, 4, 8, 12]  # uniform motion: a centred moving average leaves it as it is
    truth = make_photo_clip(tmp_path / "grace.mp4", photo="grace_hopper", n_frames=6, size=(300, 240), scale=0.55,
                            rotations_deg=rotations, shifts_px=np.stack([np.arange(6) * 6.0, np.zeros(6)], 1))
    # one shot: the small clip's turns score as cuts; this test is about the cover box and quad smoothing
    settings = AlignSettings(crop_size=128, box="cover", smooth_quads=3, preview=False, detect_shots=False)
    result = run_align(truth.path, tmp_path / "align", settings, backend=dlib_backend)
    data = load_transforms(result.out_dir)
    box = data["box_quad"].astype(float)
    inside = source_to_crop(data["aligned_quads"].reshape(-1, 2).astype(float), box, 128)
    assert inside.min() >= -0.6 and inside.max() <= 127.6  # every aligned quad inside the fixed box
    # r, t still describe each frame's aligned -> unaligned map exactly (smoothed quads, other box)
    for i in range(6):
        exact = aligned_to_unaligned_matrix(data["aligned_quads"][i].astype(float), box, 128)
        angle = math.degrees(math.atan2(exact[0, 1], exact[0, 0]))
        assert abs(angle - data["rotation_deg"][i]) < 1.0
    # relative rotations follow the truth (the box's own turn cancels in differences)
    relative = data["rotation_deg"] - data["rotation_deg"][0]
    assert np.abs(relative - (np.asarray(rotations) - rotations[0])).max() < 1.0


def test_stage_follows_a_face_rolling_past_what_the_detector_sees(tmp_path, dlib_backend):
    """dlib's frontal detector finds no face rolled beyond ~45 degrees; the stage searches near the
    last face turned upright, so a head rolling to 96 degrees is followed in every frame."""
    from videdit.stages.align import AlignSettings, run_align

    angles = np.arange(0.0, 97.0, 16.0)
    truth = make_photo_clip(tmp_path / "roll.mp4", n_frames=len(angles), rotations_deg=angles, size=(320, 320))
    # one shot: 16-degree turns of the whole frame score as cuts; this test is about following the roll
    settings = AlignSettings(crop_size=96, preview=False, detect_shots=False)
    result = run_align(truth.path, tmp_path / "align", settings, backend=dlib_backend)
    data = load_transforms(result.out_dir)
    assert data["face_found"].all()
    rotation, translation = truth.expected_transforms(data["box_quad"], 96)
    assert np.abs(data["rotation_deg"] - rotation).max() < 1.0
    assert np.abs(data["translation"] - translation).max() < 0.01


def test_roll_of_landmarks():
    from videdit.face.landmarks import roll_deg

    lm = synthetic_landmarks()
    assert roll_deg(lm) == pytest.approx(0.0)
    assert roll_deg(move(lm, similarity(1.0, 70.0, (0, 0), (0, 0)))) == pytest.approx(70.0)
    assert roll_deg(move(lm, similarity(1.0, -120.0, (0, 0), (0, 0)))) == pytest.approx(-120.0)


def test_stage_on_image_folder(tmp_path, dlib_backend):
    from videdit.stages.align import AlignSettings, run_align

    truth = make_image_folder(tmp_path / "frames", n_frames=3, rotations_deg=[0, 5, 10])
    result = run_align(truth.path, tmp_path / "align", AlignSettings(crop_size=64), backend=dlib_backend)
    data = load_transforms(result.out_dir)
    assert result.n_frames == 3 and data["face_found"].all()
    rotation, translation = truth.expected_transforms(data["box_quad"], 64)
    assert np.abs(data["rotation_deg"] - rotation).max() < 1.0
    assert np.abs(data["translation"] - translation).max() < 0.01


def _published_encoder_input(photo: np.ndarray, quad: np.ndarray):
    """stylegan3-editing's steps written out: align_face's 1024 crop (PIL QUAD warp of the corners + 0.5,
    bilinear; no shrink or padding for a quad inside a small frame), then its encoder transform."""
    from PIL import Image
    from torchvision import transforms

    crop_1024 = Image.fromarray(photo).transform((1024, 1024), Image.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR)
    to_encoder = transforms.Compose([transforms.Resize((256, 256)), transforms.ToTensor(),
                                     transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])
    return to_encoder(crop_1024)


@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_published_encoder_input_is_the_published_steps(tmp_path, dlib_backend, photo):
    """align.encoder_input = "published": what the encoder reads equals the published steps computed
    literally on the same frame and quad; the default direct cut does not (the test can fail)."""
    from PIL import Image

    from videdit.face.alignment import encoder_crop
    from videdit.stages.align import AlignSettings, run_align
    from videdit.stages.encode import load_aligned_batch
    from videdit.synthetic import load_photo

    image = load_photo(photo)
    (tmp_path / "frames").mkdir()
    Image.fromarray(image).save(tmp_path / "frames" / "frame_000.png")
    settings = AlignSettings(crop_size=64, aligned_size=256, encoder_input="published", preview=False, detect_shots=False)
    result = run_align(tmp_path / "frames", tmp_path / "align", settings, backend=dlib_backend)
    quad = ffhq_quad(load_transforms(result.out_dir)["landmarks"][0])
    assert quad.min() > 2 and (quad.max(axis=0) < np.array(image.shape[1::-1]) - 3).all()  # inside: no padding

    literal = _published_encoder_input(image, quad)
    ours = load_aligned_batch([result.aligned_dir / "000000.png"], 256)[0]
    # The same sample positions written two ways (PIL's QUAD coefficients, our affine matrix) agree to
    # ~1e-12 px, and the landmarks went through float32 on disk (~1e-5 px): a pixel may round to the other
    # side of half a level where its interpolated value lies that close to it, so one level is allowed
    # (in [-1, 1] units 1/127.5, plus float32 rounding of the two normalisations, < 1e-6) at a few pixels.
    levels = (ours - literal).abs() * 127.5
    assert levels.max() <= 1 + 1e-4
    assert (levels > 0.5).float().mean() < 1e-3
    direct = encoder_crop(image, quad, 256, "direct").astype(np.float64)
    assert np.abs(direct - ((literal.numpy().transpose(1, 2, 0) + 1) * 127.5)).mean() > 0.3


@pytest.mark.parametrize("option", [{"box": "middle"}, {"quad_rule": "wide"}, {"image_folder_fps": "0"},
                                    {"crop_size": 4}, {"landmarks": "mediapipe"}, {"encoder_input": "resized"}])
def test_stage_rejects_bad_settings_in_one_line(tmp_path, option):
    from videdit.errors import VideditError
    from videdit.stages.align import AlignSettings, run_align

    truth = make_image_folder(tmp_path / "frames", n_frames=1, size=(64, 48), scale=0.2)
    with pytest.raises(VideditError) as caught:
        run_align(truth.path, tmp_path / "align", AlignSettings(**option))
    assert "\n" not in str(caught.value) and str(next(iter(option.values()))) in str(caught.value)


def test_stage_without_any_face_is_a_clear_error(tmp_path, dlib_backend):
    from videdit.stages.align import AlignSettings, run_align

    truth = make_photo_clip(tmp_path / "blank.mp4", n_frames=3, size=(96, 64), blank_frames=(0, 1, 2))
    with pytest.raises(NoFaceError) as caught:
        run_align(truth.path, tmp_path / "align", AlignSettings(crop_size=32), backend=dlib_backend)
    assert "no face found in any of its 3 frames" in str(caught.value) and "\n" not in str(caught.value)


# ----------------------------------------------------------------------------------------------
# the command line on bad input


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    from tests.clips import make_audio_clip

    folder = tmp_path_factory.mktemp("bad")
    empty = folder / "empty.mp4"
    empty.write_bytes(b"")
    text = folder / "notes.mp4"
    text.write_text("not a video\n" * 50)
    good = make_photo_clip(folder / "good.mp4", n_frames=4, size=(96, 64), scale=0.2)
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(good.path.read_bytes()[: good.path.stat().st_size // 2])
    audio = make_audio_clip(folder / "audio.m4a", seconds=0.3)
    blank = make_photo_clip(folder / "noface.mp4", n_frames=3, size=(96, 64), blank_frames=(0, 1, 2))
    return {"zero-byte": empty, "text": text, "truncated": truncated, "audio-only": audio, "no-face": blank.path}


@pytest.mark.parametrize("case", ["zero-byte", "text", "truncated", "audio-only", "no-face"])
def test_cli_bad_input_is_one_line_and_nonzero_exit(case, bad_inputs, tmp_path):
    cli = pytest.importorskip("videdit.cli")
    from click.testing import CliRunner

    path = bad_inputs[case]
    result = CliRunner().invoke(cli.cli, ["run", str(path), "--out", str(tmp_path / "run"), "--until", "align",
                                          "--set", "align.landmarks=dlib", "-q"])
    assert result.exit_code != 0
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert path.name in lines[0]


@pytest.mark.slow
def test_fan_backend_loads_from_the_cache_only(tmp_path, monkeypatch):
    """face-alignment's networks with random weights saved under the cache names: the backend must load
    them from TORCH_HOME (no download, nothing else written there) and fit 68 points in a box.
    Slow: the two files are ~180 MB and FAN on CPU takes seconds per face."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("face_alignment")
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    from videdit.face import landmarks

    torch.set_num_threads(2)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), cache / "2DFAN4-11f355bf06.pth.tar")
    torch.save(s3fd().state_dict(), cache / "s3fd-619a316812.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    backend = landmarks.make_backend("auto")
    assert backend.name == "face-alignment"
    box = np.array([179.0, 83.0, 266.0, 170.0])
    points = backend.fit_landmarks(astronaut(), box)
    assert points.shape == (68, 2) and np.isfinite(points).all()
    assert (points > box[:2] - 90).all() and (points < box[2:] + 90).all()  # FAN's crop around the box
    assert sorted(p.name for p in cache.iterdir()) == ["2DFAN4-11f355bf06.pth.tar", "s3fd-619a316812.pth"]


def test_stage_converts_each_frame_once_when_faces_are_found(tmp_path, dlib_backend, monkeypatch):
    """Crops are cut in the landmark pass: a clip with a face in every frame is converted to RGB once per
    frame; frames without a detection are converted again, and only they, in a second pass."""
    import videdit.io.reader as reader_module
    from videdit.stages.align import AlignSettings, run_align

    conversions = []
    real = reader_module.frame_to_rgb

    def counting(frame, *args, **kwargs):
        conversions.append(frame)
        return real(frame, *args, **kwargs)

    monkeypatch.setattr(reader_module, "frame_to_rgb", counting)
    settings = AlignSettings(crop_size=64, preview=False, detect_shots=False)
    truth = make_photo_clip(tmp_path / "all.mp4", n_frames=6, rotations_deg=np.linspace(0, 5, 6), shifts_px=(0, 0))
    result = run_align(truth.path, tmp_path / "all", settings, backend=dlib_backend)
    assert result.n_faces_found == 6 and len(conversions) == 6
    conversions.clear()
    truth = make_photo_clip(tmp_path / "gap.mp4", n_frames=6, rotations_deg=np.linspace(0, 5, 6), shifts_px=(0, 0),
                            blank_frames=(3,))
    result = run_align(truth.path, tmp_path / "gap", settings, backend=dlib_backend)
    assert result.n_faces_found == 5 and len(conversions) == 6 + 1
    assert len(list((tmp_path / "gap" / "unaligned").glob("*.png"))) == 6


@pytest.mark.parametrize("photo", ["astronaut", "grace_hopper"])
def test_fast_warp_is_pil_warp_up_to_fixed_point_rounding(photo):
    """quad_to_crop(fast_warp=True) (OpenCV, the unaligned crops) against PIL's warp on a turned quad: the same
    sample positions, so they differ only by OpenCV's fixed point. Bound per pixel: OpenCV rounds a position
    to 1/32 px (off by at most 1/64 on each axis, sqrt(2)/64 px in all), which moves a bilinear value by at
    most the local slope times that; both results are rounded to integers (1 step at most between them) and
    OpenCV's 15-bit weights add under 255 * 2**-15 * 4 < 0.04. The slope is bounded by the largest step to a
    neighbour in PIL's crop, doubled (a crop pixel spans about one source pixel)."""
    from videdit.synthetic import load_photo

    image = load_photo(photo)
    h, w = image.shape[:2]
    centre = np.array([w / 2, h / 2])
    lm = move(synthetic_landmarks(tuple(centre), min(h, w) / 8), similarity(1.0, 17.0, centre, centre))
    quad = ffhq_quad(lm)
    size = 256
    pil = quad_to_crop(image, quad, size).astype(float)
    fast = quad_to_crop(image, quad, size, fast_warp=True).astype(float)
    padded = np.pad(pil, ((1, 1), (1, 1), (0, 0)), mode="edge")
    slope = np.max([np.abs(padded[1 + dy:1 + dy + size, 1 + dx:1 + dx + size] - pil)
                    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1))], axis=0)
    bound = 1 + 2 * slope * 2**0.5 / 64 + 0.04
    assert (np.abs(fast - pil) <= bound).all()
    # The bound can fail: the same warp half a pixel off exceeds it (the two libraries round halves their own
    # way, so about half the values differ by one step; the bound allows that and no more).
    shifted = quad_to_crop(image, quad + 0.5, size, fast_warp=True).astype(float)
    assert not (np.abs(shifted - pil) <= bound).all()
