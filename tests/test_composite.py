"""The composite stage: crop <-> frame geometry, masks, colour matching, seams, and full-frame videos.

Real photographs (scikit-image's astronaut, matplotlib's Grace Hopper) with their 68 dlib landmarks,
computed once and stored in tests/data/composite/ so these tests need no landmark model.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from videdit.face import paste as C
from videdit.errors import InputError

pytestmark = pytest.mark.numeric

DATA = Path(__file__).resolve().parent / "data" / "composite"


def _landmarks(name: str) -> np.ndarray:
    return np.load(DATA / f"{name}_landmarks.npy").astype(np.float64)


def _photo(name: str) -> np.ndarray:
    from tests.clips import astronaut, grace_hopper

    return {"astronaut": astronaut, "grace_hopper": grace_hopper}[name]()


def _square_quad(centre, side: float, angle_deg: float) -> np.ndarray:
    """FFHQ-order quad [TL, BL, BR, TR] of a square turned by angle_deg."""
    angle = np.deg2rad(angle_deg)
    x = np.array([np.cos(angle), np.sin(angle)]) * side / 2
    y = np.array([-x[1], x[0]])
    c = np.asarray(centre, float)
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _coordinate_image(height: int, width: int) -> np.ndarray:
    """Float image whose channels are the pixel-centre coordinates x, y (and 1): bilinear sampling is exact on it."""
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([xs, ys, np.ones_like(xs)], axis=-1)


def _expanded_render_of(frame: np.ndarray, quad: np.ndarray, resolution: int, expand) -> np.ndarray:
    """What an expanded render of a perfect generator would show: the frame sampled at the render's pixel centres."""
    geometry = C.CropGeometry.from_quad(quad)
    big_quad = geometry.render_quad(resolution, expand)
    left, right, top, bottom = expand
    # The expanded canvas is not square: crop a square of its larger side and cut it to shape.
    side = max(left + resolution + right, top + resolution + bottom)
    big_geometry = C.CropGeometry(big_quad[0], (big_quad[3] - big_quad[0]) * side / (left + resolution + right),
                                  (big_quad[1] - big_quad[0]) * side / (top + resolution + bottom))
    square = np.array([big_geometry.origin, big_geometry.origin + big_geometry.axis_v,
                       big_geometry.origin + big_geometry.axis_u + big_geometry.axis_v,
                       big_geometry.origin + big_geometry.axis_u])
    return C.crop_from_frame(frame, square, side)[: top + resolution + bottom, : left + resolution + right]


def _subpixel_shift(image: np.ndarray, reference: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Least-squares (dx, dy) such that image(p) ~ reference(p + d) over `where`, on smooth images."""
    gy, gx = np.gradient(reference.mean(-1))
    diff = (image - reference).mean(-1)
    system = np.stack([gx[where], gy[where]], axis=1)
    return np.linalg.lstsq(system, diff[where], rcond=None)[0]


# ----------------------------------------------------------------------------------------------------
# geometry


def test_geometry_round_trip_and_checks():
    quad = _square_quad((120.3, 80.7), 90.0, 17.0)
    geometry = C.CropGeometry.from_quad(quad)
    uv = np.random.default_rng(0).uniform(-0.5, 1.5, size=(50, 2))
    np.testing.assert_allclose(geometry.to_crop(geometry.to_source(uv)), uv, atol=1e-12)
    np.testing.assert_allclose(geometry.to_source(np.array([[0, 0], [0, 1], [1, 1], [1, 0]])), quad, atol=1e-12)
    assert geometry.side_px == pytest.approx(90.0)
    bent = quad.copy()
    bent[2] += 5.0
    with pytest.raises(ValueError, match="parallelogram"):
        C.CropGeometry.from_quad(bent)
    with pytest.raises(ValueError):
        C.CropGeometry.from_quad(np.zeros((4, 2)))


def test_pixel_centre_convention_matches_alignment():
    """Crop pixel (j, i) has its centre at u = (j + 0.5) / S: the same point align's matrices give."""
    alignment = pytest.importorskip("videdit.face.alignment")
    quad = alignment.ffhq_quad(_landmarks("astronaut"))
    geometry = C.CropGeometry.from_quad(quad)
    for size in (64, 256, 1024):
        pixels = np.array([[0.0, 0.0], [size - 1.0, 0.0], [10.0, 20.0], [size / 2, size / 3]])
        np.testing.assert_allclose(alignment.crop_to_source(pixels, quad, size),
                                   geometry.to_source((pixels + 0.5) / size), atol=1e-9)


@pytest.mark.parametrize("resolution", [48, 90, 256])  # crop smaller than, equal to, larger than its footprint
@pytest.mark.parametrize("expand", [(0, 0, 0, 0), (12, 4, 0, 20)])
def test_warp_back_inverts_the_crop_to_subpixel_accuracy(resolution, expand):
    height, width = 150, 200
    frame = _coordinate_image(height, width)
    quad = _square_quad((101.2, 73.9), 90.0, 23.0)
    geometry = C.CropGeometry.from_quad(quad)
    render = _expanded_render_of(frame, quad, resolution, expand)
    footprint = geometry.render_quad(resolution, expand)
    roi = C.roi_of_polygon(footprint, (height, width))
    warped = C.warp_render_to_frame(render, geometry, resolution, roi, expand)
    # Away from the footprint's edge (the interpolation and antialias filters' reach).
    reach = 3.0 * max(1.0, geometry.side_px / resolution) + 3.0
    xs, ys = roi.pixel_centres()
    inner = C.signed_distance_convex(footprint, xs, ys) > reach
    # ... and from the frame's edge, where the render of the frame was clamped.
    inner &= (np.minimum(xs, width - 1 - xs) > reach) & (np.minimum(ys, height - 1 - ys) > reach)
    assert inner.sum() > 1000
    displacement = (warped[..., :2] - frame[roi.slices][..., :2])[inner]
    # No systematic shift; the local error is the bicubic kernel's (a = -0.75) wobble: at most 0.048
    # of a render pixel along each render axis, so under 0.1 of one per frame axis (bilinear would be
    # exact on this image, but blurs real images more).
    assert np.abs(displacement.mean(axis=0)).max() < 0.01
    render_pixel = max(1.0, geometry.side_px / resolution)
    assert np.abs(displacement).max() < 0.1 * render_pixel


def test_align_crop_then_composite_is_identity_up_to_resampling():
    """Crop with align's quad_to_crop, put the crop back: sub-pixel registration, small intensity error."""
    from scipy.ndimage import gaussian_filter

    alignment = pytest.importorskip("videdit.face.alignment")
    landmarks = _landmarks("astronaut")
    quad = alignment.ffhq_quad(landmarks)
    photo = _photo("astronaut")
    # A smooth texture registers precisely; the photo shows the error on real detail.
    rng = np.random.default_rng(1)
    texture = gaussian_filter(rng.normal(size=photo.shape), (3, 3, 0))
    texture = np.rint((texture - texture.min()) / np.ptp(texture) * 255).astype(np.uint8)
    for resolution in (128, 512):  # footprint is 175 px: the crop is shrunk, then enlarged
        mask = C.make_blend_mask(photo.shape[:2], quad, resolution, landmarks=landmarks)
        inside = mask.alpha > 0.999
        geometry = C.CropGeometry.from_quad(quad)
        warped = C.warp_render_to_frame(alignment.quad_to_crop(texture, quad, resolution), geometry, resolution,
                                        mask.roi)
        shift = _subpixel_shift(warped, texture[mask.roi.slices].astype(np.float32), inside)
        assert np.abs(shift).max() < 0.05, shift

        out = C.composite_frame(photo, alignment.quad_to_crop(photo, quad, resolution), quad, resolution, mask)
        full_alpha = mask.full(photo.shape[:2])
        assert np.array_equal(out[full_alpha == 0], photo[full_alpha == 0])
        error = np.abs(out.astype(np.float64) - photo)[full_alpha > 0]
        limit = 1.6 if resolution > geometry.side_px else 4.0  # a 128 px crop of a 175 px face loses detail
        assert error.mean() < limit, (resolution, error.mean())


# ----------------------------------------------------------------------------------------------------
# masks


def test_signed_distance_matches_brute_force():
    polygon = C.convex_hull(np.random.default_rng(2).uniform(10, 90, size=(12, 2)))
    ys, xs = np.mgrid[0:100:3, 0:100:3].astype(np.float64)
    exact = C.signed_distance_convex(polygon, xs, ys)
    # Brute force: distance to densely sampled edges; sign from the point-in-convex-polygon test.
    edges = [np.linspace(a, b, 2000) for a, b in zip(polygon, np.roll(polygon, -1, axis=0))]
    border = np.concatenate(edges)
    distance = np.sqrt(((np.stack([xs, ys], -1)[..., None, :] - border) ** 2).sum(-1)).min(-1)
    from matplotlib.path import Path as MplPath

    inside = MplPath(polygon).contains_points(np.stack([xs.ravel(), ys.ravel()], 1)).reshape(xs.shape)
    np.testing.assert_allclose(exact, np.where(inside, distance, -distance), atol=0.05)
    # The cheap form outside: never larger than the true distance, exact within the band.
    cheap = C.signed_distance_convex(polygon, xs, ys, exact_within=5.0)
    near = exact > -5.0
    np.testing.assert_allclose(cheap[near], exact[near], atol=1e-3)
    assert (cheap >= exact - 1e-3).all()


def test_convex_hull_matches_scipy():
    from scipy.spatial import ConvexHull

    points = np.random.default_rng(3).normal(size=(200, 2))
    ours = C.convex_hull(points)
    theirs = points[ConvexHull(points).vertices]
    assert sorted(map(tuple, ours)) == sorted(map(tuple, theirs))


def test_face_polygon_covers_the_face_and_forehead():
    landmarks = _landmarks("grace_hopper")
    polygon = C.face_polygon(landmarks, grow_forehead=0.5)
    distance = C.signed_distance_convex(polygon, landmarks[:, 0], landmarks[:, 1])
    assert (distance >= -1e-6).all()  # every landmark inside or on the border
    brows = landmarks[17:27].mean(0)
    chin = landmarks[8]
    forehead = brows + 0.4 * (brows - chin)  # above the brows, below the grown border
    assert C.signed_distance_convex(polygon, forehead[0], forehead[1]) > 0
    too_high = brows + 0.7 * (brows - chin)
    assert C.signed_distance_convex(polygon, too_high[0], too_high[1]) < 0
    below_chin = chin + 0.1 * (chin - brows)
    assert C.signed_distance_convex(polygon, below_chin[0], below_chin[1]) < 0


def test_feather_band():
    distance = np.linspace(-20, 20, 401)
    alpha = C.feather(distance, 10.0)
    assert (alpha[distance <= -5] == 0).all() and (alpha[distance >= 5] == 1).all()
    assert (np.diff(alpha) >= 0).all() and alpha[200] == pytest.approx(0.5)
    inward = C.feather(distance, 10.0, inward=True)
    assert (inward[distance <= 0] == 0).all() and (inward[distance >= 10] == 1).all()
    assert (C.feather(distance, 0.0) == (distance >= 0)).all()


def test_mask_stays_inside_the_render_footprint():
    landmarks = _landmarks("astronaut")
    quad = _square_quad(landmarks[27:36].mean(0), 100.0, 0.0)  # a box tighter than the face polygon
    mask = C.make_blend_mask((512, 512), quad, 64, landmarks=landmarks, feather_px=8)
    footprint = C.signed_distance_convex(C.CropGeometry.from_quad(quad).render_quad(64), *mask.roi.pixel_centres())
    assert (mask.alpha[footprint < 1.0] == 0).all()
    assert mask.alpha.max() == 1.0
    box = C.make_blend_mask((512, 512), quad, 64, mask="box", feather_px=8)
    assert (box.alpha >= mask.alpha).all()
    with pytest.raises(ValueError):
        C.make_blend_mask((512, 512), quad, 64, mask="parsing")


# ----------------------------------------------------------------------------------------------------
# compositing


def _nose_disc_render(photo: np.ndarray, quad: np.ndarray, landmarks: np.ndarray, resolution: int):
    """The crop with a known change (darker, bluer) on a disc around the nose, and the disc in the frame."""
    from videdit.face.alignment import quad_to_crop

    crop = quad_to_crop(photo, quad, resolution).astype(np.float32)
    geometry = C.CropGeometry.from_quad(quad)
    nose_uv = geometry.to_crop(landmarks[30])
    radius_uv = 0.08
    centres = (np.arange(resolution) + 0.5) / resolution
    u, v = np.meshgrid(centres, centres, indexing="xy")
    disc = np.hypot(u - nose_uv[0], v - nose_uv[1]) < radius_uv
    crop[disc] -= np.array([60.0, 30.0, 0.0])
    xs, ys = np.meshgrid(np.arange(photo.shape[1]), np.arange(photo.shape[0]), indexing="xy")
    frame_disc = np.hypot(xs - landmarks[30][0], ys - landmarks[30][1]) < 0.8 * radius_uv * geometry.side_px
    return np.clip(crop, 0, 255).astype(np.uint8), frame_disc


@pytest.mark.parametrize("color_match", [False, True])
def test_known_change_inside_the_face_only(color_match):
    alignment = pytest.importorskip("videdit.face.alignment")
    photo = _photo("grace_hopper")
    landmarks = _landmarks("grace_hopper")
    quad = alignment.ffhq_quad(landmarks)
    resolution = 256
    render, disc = _nose_disc_render(photo, quad, landmarks, resolution)
    mask = C.make_blend_mask(photo.shape[:2], quad, resolution, landmarks=landmarks)
    out = C.composite_frame(photo, render, quad, resolution, mask, color_match=color_match)
    alpha = mask.full(photo.shape[:2])
    changed = (out != photo).any(-1)
    assert not (changed & (alpha == 0)).any(), "a pixel outside the mask changed"
    assert (alpha > 0).sum() < 0.5 * alpha.size
    # The change is there, at full strength, where it was made.
    delta = out.astype(np.float64) - photo
    assert delta[disc][:, 0].mean() < -50 and abs(delta[disc][:, 2].mean()) < 8
    # Away from the disc the result is the identity composite's (the crop put back unchanged).
    identity = C.composite_frame(photo, alignment.quad_to_crop(photo, quad, resolution), quad, resolution, mask,
                                 color_match=color_match)
    xs, ys = np.meshgrid(np.arange(photo.shape[1]), np.arange(photo.shape[0]), indexing="xy")
    from_nose = np.hypot(xs - landmarks[30][0], ys - landmarks[30][1])
    far = from_nose > 0.2 * C.CropGeometry.from_quad(quad).side_px
    assert np.abs(out.astype(np.float64) - identity)[far].max() <= 1.0


@pytest.mark.parametrize("mask_kind", ["landmarks", "box"])
def test_color_matching_hides_a_colour_drift(mask_kind):
    alignment = pytest.importorskip("videdit.face.alignment")
    photo = _photo("grace_hopper")
    landmarks = _landmarks("grace_hopper")
    quad = alignment.ffhq_quad(landmarks)
    resolution = 256
    crop = alignment.quad_to_crop(photo, quad, resolution).astype(np.float32)
    drifted = np.clip(crop + np.array([30.0, -20.0, 10.0]), 0, 255).astype(np.uint8)
    mask = C.make_blend_mask(photo.shape[:2], quad, resolution, landmarks=landmarks, mask=mask_kind)
    roi = mask.roi.slices
    band = (mask.alpha > 0.02) & (mask.alpha < 0.98)
    results = {}
    for name, render, color_match in [("identity", crop.astype(np.uint8), False), ("raw", drifted, False),
                                      ("matched", drifted, True)]:
        out = C.composite_frame(photo, render, quad, resolution, mask, color_match=color_match)
        results[name] = (
            C.seam_factor(out[roi], photo[roi], mask.alpha, mask.seam_sigma),
            np.abs(out[roi].astype(np.float64) - photo[roi])[band].mean(),
        )
    # The drift shows at the border unless matched; matched, the border is as good as the identity's
    # (whose error is the resampling of a 256 px crop of a ~480 px face).
    assert results["raw"][1] > results["identity"][1] + 6
    assert results["matched"][1] < results["identity"][1] + 1
    assert results["raw"][0] > 1.1 and abs(results["matched"][0] - results["identity"][0]) < 0.05


def test_identity_seam_factor_is_one_and_no_face_region_is_copied():
    alignment = pytest.importorskip("videdit.face.alignment")
    photo = _photo("astronaut")
    landmarks = _landmarks("astronaut")
    quad = alignment.ffhq_quad(landmarks)
    mask = C.make_blend_mask(photo.shape[:2], quad, 256, landmarks=landmarks)
    out = C.composite_frame(photo, alignment.quad_to_crop(photo, quad, 256), quad, 256, mask)
    roi = mask.roi.slices
    assert C.seam_factor(out[roi], photo[roi], mask.alpha, mask.seam_sigma) == pytest.approx(1.0, abs=0.03)
    # A box entirely outside the frame leaves it untouched.
    away = _square_quad((-400.0, -400.0), 100.0, 0.0)
    far_mask = C.make_blend_mask(photo.shape[:2], away, 64, mask="box")
    assert np.array_equal(C.composite_frame(photo, np.zeros((64, 64, 3), np.uint8), away, 64, far_mask), photo)


# ----------------------------------------------------------------------------------------------------
# the stage


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, compress_level=1)


@pytest.fixture(scope="module")
def clip_run(tmp_path_factory):
    """A 6-frame clip of the astronaut turning and moving, with audio and a blank frame; align outputs built
    from the clip's ground truth; renders: the identity ('recon', expanded) and a nose change ('edit')."""
    pytest.importorskip("av")
    from tests.clips import make_photo_clip
    from videdit.face.alignment import ffhq_quad
    from videdit.io.reader import VideoReader

    root = tmp_path_factory.mktemp("composite")
    truth = make_photo_clip(root / "clip.mp4", n_frames=6, size=(240, 200), rotations_deg=[0, 3, 6, 0, 9, 12],
                            shifts_px=[[0, 0], [2, 1], [4, 2], [0, 0], [6, 3], [8, 4]], scale=0.8, audio=True,
                            blank_frames=(3,))
    photo_landmarks = _landmarks("astronaut")
    landmarks = np.stack([(np.c_[photo_landmarks, np.ones(68)] @ m.T)[:, :2] for m in truth.photo_to_frame])
    box = ffhq_quad(landmarks[0])
    # The box "first" would hold the first face; widen it so later frames stay inside.
    centre = box.mean(0)
    box = centre + 1.3 * (box - centre)
    align_dir, render_dir = root / "align", root / "render"
    align_dir.mkdir()
    found = np.asarray(truth.face_visible, bool)
    np.savez(align_dir / "transforms.npz", box_quad=box.astype(np.float32), landmarks=landmarks.astype(np.float32),
             face_found=found, crop_size=np.int64(128))
    resolution, expand = 256, (16, 0, 8, 24)  # larger than the ~180 px box, as a 1024 render usually is
    frames = [f.image for f in VideoReader(truth.path)]
    geometry = C.CropGeometry.from_quad(box)
    for i, frame in enumerate(frames):
        identity = np.clip(np.rint(_expanded_render_of(frame, box, resolution, expand)), 0, 255).astype(np.uint8)
        _write_png(render_dir / "recon" / f"{i:06d}.png", identity)
        edit = identity.astype(np.float32)
        nose = geometry.to_crop(landmarks[i][30]) * resolution + np.array([expand[0], expand[2]])
        yy, xx = np.mgrid[: edit.shape[0], : edit.shape[1]]
        edit[np.hypot(xx - nose[0], yy - nose[1]) < 24] -= np.array([70.0, 0.0, 0.0])
        _write_png(render_dir / "edit" / f"{i:06d}.png", np.clip(edit, 0, 255).astype(np.uint8))
    (render_dir / "render.json").write_text(json.dumps({"resolution": resolution, "expand": list(expand),
                                                        "keys": ["recon", "edit"]}))
    return dict(root=root, truth=truth, frames=frames, align_dir=align_dir, render_dir=render_dir,
                landmarks=landmarks, box=box, resolution=resolution, expand=expand)


def test_stage_writes_full_frame_videos(clip_run):
    from videdit.io.probe import probe_video
    from videdit.io.reader import VideoReader
    from videdit.stages.composite import CompositeSettings, run_composite

    out_dir = clip_run["root"] / "composite"
    settings = CompositeSettings(save_masks=True, crf=10, seam_every=1)
    result = run_composite(clip_run["truth"].path, clip_run["align_dir"], clip_run["render_dir"], None, out_dir,
                           settings)
    truth = clip_run["truth"]
    assert set(result.videos) == {"recon", "edit"}
    assert result.n_frames == 6 and result.n_composited == 5
    source_info = probe_video(truth.path)
    for path in [*result.videos.values(), result.masks_video]:
        info = probe_video(path)
        assert info.size == source_info.size and info.fps == source_info.fps
        assert info.audio is not None
        assert [f.pts for f in VideoReader(path)] == [f.pts for f in VideoReader(truth.path)]

    source = np.stack(clip_run["frames"]).astype(np.float64)
    recon = np.stack([f.image for f in VideoReader(result.videos["recon"])]).astype(np.float64)
    edit = np.stack([f.image for f in VideoReader(result.videos["edit"])]).astype(np.float64)
    masks = np.stack([f.image[..., 0] for f in VideoReader(result.masks_video)]).astype(np.float64) / 255
    assert len(recon) == len(edit) == len(masks) == 6
    # Identity render: the source back, up to H.264 and resampling. The codec's share: the source
    # frames encoded alone with the same settings.
    from videdit.io.writer import VideoWriter

    reencoded_path = clip_run["root"] / "reencoded.mp4"
    with VideoWriter(reencoded_path, source_info.fps, source_info.size, crf=10) as writer:
        for frame in clip_run["frames"]:
            writer.write(frame)
    reencoded = np.stack([f.image for f in VideoReader(reencoded_path)]).astype(np.float64)
    codec_error = np.abs(reencoded - source).mean()
    inside = masks > 0.5
    print("identity error: all %.3f, inside the mask %.3f; codec alone %.3f, %.3f" % (
        np.abs(recon - source).mean(), np.abs(recon - source)[inside].mean(), codec_error,
        np.abs(reencoded - source)[inside].mean()))
    assert np.abs(recon - source).mean() < codec_error + 0.3
    assert np.abs(recon - source)[inside].mean() < np.abs(reencoded - source)[inside].mean() + 1.5
    assert np.abs(recon[3] - source[3]).mean() < 1.0 and masks[3].max() < 0.02  # the blank frame: copied
    # The edit changes only the masked region (H.264 blocks blur the border by a few pixels).
    from scipy.ndimage import binary_dilation

    for i in range(6):
        near_mask = binary_dilation(masks[i] > 0.02, iterations=8)
        outside = np.abs(edit[i] - recon[i])[~near_mask]
        print(f"frame {i}: edit vs recon outside the mask (+8 px): mean {outside.mean():.3f}, max {outside.max():.0f}")
        assert outside.mean() < 0.5
        if truth.face_visible[i]:
            nose = clip_run["landmarks"][i][30].round().astype(int)
            assert recon[i][nose[1], nose[0], 0] - edit[i][nose[1], nose[0], 0] > 30
    stats = json.loads(result.stats.read_text())
    assert stats["n_composited"] == 5 and stats["seam_frames"]["recon"] == 5
    assert abs(result.seam_factor["recon"] - 1.0) < 0.05


def test_stage_errors_are_one_line(clip_run, tmp_path):
    import shutil

    from videdit.stages.composite import CompositeSettings, run_composite

    with pytest.raises(InputError, match="mask"):
        CompositeSettings(mask="parsing")
    render_dir = tmp_path / "render"
    shutil.copytree(clip_run["render_dir"], render_dir)
    (render_dir / "recon" / "000004.png").unlink()
    with pytest.raises(InputError, match="000004.png") as info:
        run_composite(clip_run["truth"].path, clip_run["align_dir"], render_dir, ["recon"], tmp_path / "out")
    assert "\n" not in str(info.value)
    with pytest.raises(InputError, match="no rendered frames"):
        run_composite(clip_run["truth"].path, clip_run["align_dir"], render_dir, ["smile"], tmp_path / "out")
    align_dir = tmp_path / "align"
    align_dir.mkdir()
    with np.load(clip_run["align_dir"] / "transforms.npz") as t:
        data = dict(t)
    np.savez(align_dir / "transforms.npz", **{k: (v[:4] if k in ("landmarks", "face_found") else v)
                                             for k, v in data.items()})
    with pytest.raises(InputError, match="frames"):
        run_composite(clip_run["truth"].path, align_dir, clip_run["render_dir"], ["recon"], tmp_path / "out2")


def test_mask_landmark_smoothing():
    from videdit.stages.composite import smooth_landmarks

    rng = np.random.default_rng(4)
    landmarks = rng.normal(size=(7, 68, 2))
    found = np.array([True, True, True, False, True, True, True])
    smoothed = smooth_landmarks(landmarks, found, 3)
    np.testing.assert_allclose(smoothed[1], landmarks[0:3].mean(0))
    for anchored in (0, 2, 3, 4, 6):  # run ends, and the frame without a face
        np.testing.assert_array_equal(smoothed[anchored], landmarks[anchored])
    np.testing.assert_allclose(smoothed[5], landmarks[4:7].mean(0))
    np.testing.assert_array_equal(smooth_landmarks(landmarks, found, 1), landmarks)
    wide = smooth_landmarks(landmarks, np.ones(7, bool), 5)
    np.testing.assert_allclose(wide[3], landmarks[1:6].mean(0))
    np.testing.assert_allclose(wide[1], landmarks[0:3].mean(0))


def test_stage_rejects_renders_of_the_wrong_size(clip_run, tmp_path):
    import shutil

    from videdit.stages.composite import run_composite

    render_dir = tmp_path / "render"
    shutil.copytree(clip_run["render_dir"], render_dir)
    info = json.loads((render_dir / "render.json").read_text())
    info["expand"] = [0, 0, 0, 0]  # the PNGs are expanded; the record now says they are not
    (render_dir / "render.json").write_text(json.dumps(info))
    with pytest.raises(InputError, match="expected"):
        run_composite(clip_run["truth"].path, clip_run["align_dir"], render_dir, ["recon"], tmp_path / "out")


def _file_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("seam_every", [1, 2])
def test_parts_merge_to_the_whole_stage_bytes(clip_run, tmp_path, seam_every):
    """Composite in frame ranges (a sharded run's parts: lossless frames, timestamps, seam measurements) and
    their merge write the same files as the whole stage: one encode from the same pixels, the seams of the
    same frames (counted from the video's start) summed in the same order. Frame 3 has no face."""
    from videdit.stages.composite import CompositeSettings, merge_composite_parts, run_composite

    settings = CompositeSettings(save_masks=True, crf=10, seam_every=seam_every)
    args = (clip_run["truth"].path, clip_run["align_dir"], clip_run["render_dir"], None)
    whole = tmp_path / "whole"
    run_composite(*args, whole, settings)
    parts = []
    for start, end in [(0, 2), (2, 5), (5, 6)]:
        parts.append(tmp_path / f"part{start}")
        assert run_composite(*args, parts[-1], settings, frames=(start, end)) is None
    merged = tmp_path / "merged"
    result = merge_composite_parts(*args, parts, merged, settings)
    assert result.n_frames == 6 and result.n_composited == 5
    assert _file_bytes(merged) == _file_bytes(whole)
    with pytest.raises(InputError, match="frames 4-7 outside the video's 6"):
        run_composite(*args, tmp_path / "bad", settings, frames=(4, 7))
