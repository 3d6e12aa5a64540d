"""videdit eval: metrics with known answers, identity on real photos, temporal consistency, report.

Everything here runs offline on images that ship with scikit-image and matplotlib; nothing needs
/work/shared. dlib's models come from the face_recognition_models package.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

torch = pytest.importorskip("torch")
torch.set_num_threads(1)  # the test machine is shared; one thread avoids OpenMP contention

from videdit.errors import CheckpointError, InputError  # noqa: E402
from videdit.evaluate import identity, metrics, temporal  # noqa: E402
from videdit.networks.encoders import IRBackbone  # noqa: E402
from videdit.evaluate.report import (  # noqa: E402
    EvalSettings,
    compare_runs,
    evaluate_run,
    format_summary,
    latent_pca,
    load_models,
)

pytestmark = pytest.mark.numeric

# The astronaut's face in skimage's 512x512 photo is around (220, 121).
ASTRONAUT_FACE_CENTRE = (220, 135)


def astronaut() -> np.ndarray:
    from skimage import data

    return data.astronaut()


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as f:
        return np.asarray(Image.open(f).convert("RGB"))


def face_crop(image: np.ndarray, centre, size: int, shift=(0.0, 0.0), angle: float = 0.0) -> np.ndarray:
    """A size x size window around `centre`, the content shifted by `shift` pixels and rotated by `angle`."""
    cx, cy = centre
    src = Image.fromarray(image)
    if shift != (0.0, 0.0) or angle:
        src = src.rotate(angle, center=(cx, cy), resample=Image.BICUBIC, translate=shift)
    half = size // 2
    return np.asarray(src.crop((cx - half, cy - half, cx - half + size, cy - half + size)))


def panning_video(frames: int = 5, size: int = 192) -> list[np.ndarray]:
    """The astronaut's face with a smooth camera move (1.5 px right, 0.75 px down, 0.5 degree per frame)."""
    image = astronaut()
    return [face_crop(image, ASTRONAUT_FACE_CENTRE, size, shift=(1.5 * t, 0.75 * t), angle=0.5 * t) for t in range(frames)]


def add_noise(image: np.ndarray, sigma: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(image + rng.normal(0, sigma, image.shape), 0, 255).astype(np.uint8)


def blur(image: np.ndarray, radius: float) -> np.ndarray:
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(radius)))


# LPIPS with a random AlexNet exercises the code offline; its values only need to order degradations.
FAST = dict(lpips_random_backbone=True, flow_size=None)


@pytest.fixture(scope="module")
def models():
    """dlib's models and LPIPS, loaded once for the module (they take seconds to load)."""
    return load_models(EvalSettings(**FAST))


@pytest.fixture(scope="module")
def analyzer(models):
    return models.analyzer


@pytest.fixture(scope="module")
def random_lpips(models):
    assert models.lpips is not None, models.skipped
    return models.lpips


# ---------------------------------------------------------------------------------------------
# pixel metrics


def test_identical_images_have_zero_error_and_maximal_similarity(random_lpips):
    image = face_crop(astronaut(), ASTRONAUT_FACE_CENTRE, 256)
    result = metrics.ImageMetrics(random_lpips).compare(image, image.copy())
    assert result["l2"] == 0.0
    assert result["psnr"] == metrics.PSNR_CAP_DB
    assert result["ms_ssim"] == pytest.approx(1.0, abs=1e-9)
    assert result["lpips"] == pytest.approx(0.0, abs=1e-6)


def test_l2_and_psnr_of_a_constant_offset():
    image = np.full((32, 32, 3), 100, np.uint8)
    brighter = image + np.uint8(10)
    assert metrics.l2(image, brighter) == pytest.approx((10 / 127.5) ** 2)
    assert metrics.psnr(image, brighter) == pytest.approx(10 * math.log10(255**2 / 100))


@pytest.mark.parametrize(
    "degrade",
    [
        pytest.param(lambda im: np.roll(im, 1, axis=1), id="one-pixel-shift"),
        pytest.param(lambda im: blur(im, 1.0), id="blur"),
        pytest.param(lambda im: add_noise(im, 8.0), id="noise"),
    ],
)
def test_degradations_move_every_metric_the_right_way(degrade, random_lpips):
    image = face_crop(astronaut(), ASTRONAUT_FACE_CENTRE, 256)
    scorer = metrics.ImageMetrics(random_lpips)
    mild = scorer.compare(image, degrade(image))
    # Plausible sizes for a small degradation of a natural photo.
    assert 1e-4 < mild["l2"] < 0.05
    assert 20.0 < mild["psnr"] < 45.0
    assert 0.75 < mild["ms_ssim"] < 0.999
    assert mild["lpips"] > 1e-4
    # Twice the degradation scores worse on every metric.
    worse = scorer.compare(image, degrade(degrade(image)))
    assert worse["l2"] > mild["l2"]
    assert worse["psnr"] < mild["psnr"]
    assert worse["ms_ssim"] < mild["ms_ssim"]
    assert worse["lpips"] > mild["lpips"]


def test_ms_ssim_matches_pytorch_msssim():
    pytorch_msssim = pytest.importorskip("pytorch_msssim")
    image = astronaut()[:200, :233]
    noisy = add_noise(image, 20.0)
    to_tensor = lambda a: torch.from_numpy(a).permute(2, 0, 1)[None].double() / 255  # noqa: E731
    expected = pytorch_msssim.ms_ssim(to_tensor(image), to_tensor(noisy), data_range=1.0).item()
    assert metrics.ms_ssim(image, noisy) == pytest.approx(expected, abs=1e-4)


def test_ms_ssim_on_a_tiny_image_is_single_scale_ssim():
    from skimage.metrics import structural_similarity

    image = astronaut()[100:118, 200:218]
    noisy = add_noise(image, 15.0)
    assert metrics.ms_ssim_scales(18, 18) == 1
    expected = structural_similarity(
        image / 255.0, noisy / 255.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
        data_range=1.0, channel_axis=2,
    )
    assert metrics.ms_ssim(image, noisy) == pytest.approx(expected, abs=1e-6)


def test_lpips_without_its_backbone_is_skipped_with_the_reason(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # an empty torch.hub cache
    monkeypatch.setenv("VIDEDIT_WEIGHTS", str(tmp_path / "weights"))
    absent = metrics.load_lpips()
    assert absent.model is None
    assert "alexnet-owt-7be5be79.pth" in absent.reason and str(tmp_path / "torch") in absent.reason
    # (Loading the real file is videdit.losses' job, tested in test_tune.py.)


# ---------------------------------------------------------------------------------------------
# identity and landmarks


def test_two_people_are_less_similar_than_one_person_moved(analyzer):
    astro = analyzer.observe(astronaut())
    grace_image = grace_hopper()
    grace = analyzer.observe(grace_image)
    assert astro.found and grace.found
    astro_moved = analyzer.observe(face_crop(astronaut(), (256, 256), 512, shift=(6, 3), angle=4))
    grace_moved = analyzer.observe(face_crop(grace_image, (256, 300), 512, shift=(-5, 4), angle=-4))
    different = identity.cosine_similarity(astro.embedding, grace.embedding)
    for original, moved in ((astro, astro_moved), (grace, grace_moved)):
        same = identity.cosine_similarity(original.embedding, moved.embedding)
        assert same > different + 0.05
        assert identity.euclidean_distance(original.embedding, moved.embedding) < identity.DLIB_SAME_PERSON_DISTANCE
    assert identity.euclidean_distance(astro.embedding, grace.embedding) > identity.DLIB_SAME_PERSON_DISTANCE


def test_landmark_error_is_zero_for_the_same_face_and_grows_with_shift(analyzer):
    image = face_crop(astronaut(), ASTRONAUT_FACE_CENTRE, 256)
    reference = analyzer.observe(image)
    assert reference.found
    assert identity.landmark_error(reference, analyzer.observe(image.copy())) == 0.0
    eye_distance = np.linalg.norm(reference.landmarks[45] - reference.landmarks[36])
    errors = []
    for shift in (3, 8):
        moved = analyzer.observe(face_crop(astronaut(), ASTRONAUT_FACE_CENTRE, 256, shift=(shift, 0)))
        errors.append(identity.landmark_error(reference, moved))
        # The landmarks follow the face: the error is about the shift, as a share of the eye distance.
        assert 0.5 * shift / eye_distance * 100 < errors[-1] < 2.0 * shift / eye_distance * 100
    assert errors[1] > errors[0]


DEGRADATIONS = {
    "one-pixel-shift": lambda im: np.roll(im, 1, axis=1),
    "blur": lambda im: blur(im, 1.0),
    "noise": lambda im: add_noise(im, 8.0),
}


@pytest.mark.parametrize("name", list(DEGRADATIONS))
def test_degradations_move_identity_and_landmarks_a_plausible_amount(name, analyzer):
    degrade = DEGRADATIONS[name]
    image = face_crop(astronaut(), ASTRONAUT_FACE_CENTRE, 256)
    reference = analyzer.observe(image)
    mild, worse = analyzer.observe(degrade(image)), analyzer.observe(degrade(degrade(image)))
    mild_distance = identity.euclidean_distance(reference.embedding, mild.embedding)
    # Still clearly the same person, but no longer a perfect match; twice the damage, further away.
    assert 0.0 < mild_distance < identity.euclidean_distance(reference.embedding, worse.embedding) < 0.5
    assert identity.cosine_similarity(reference.embedding, mild.embedding) < 1.0
    # Landmarks stay on the face: a few percent of the eye distance at most.
    assert 0.0 < identity.landmark_error(reference, mild) < 3.0


def test_temporal_metrics_tell_flicker_from_a_steady_change():
    video = panning_video(4)
    _, floor = _warp_errors(video, video)
    ratio = lambda out: _warp_errors(video, out)[0] / floor  # noqa: E731
    # The same shift in every frame is no flicker; blur smooths; independent noise per frame flickers.
    assert ratio([np.roll(f, 1, axis=1) for f in video]) == pytest.approx(1.0, abs=0.15)
    assert ratio([blur(f, 1.0) for f in video]) < 0.8
    assert ratio([add_noise(f, 8.0, seed=t) for t, f in enumerate(video)]) > 2.0


def test_with_two_faces_in_view_the_nearest_one_is_followed(analyzer):
    left = face_crop(astronaut(), ASTRONAUT_FACE_CENTRE, 256)
    right = face_crop(grace_hopper(), (270, 235), 256)
    both = np.concatenate([left, right], axis=1)  # 512 wide: the astronaut left, Grace Hopper right
    for half, crop in ((0, left), (1, right)):
        alone = analyzer.detect(crop)
        near = (alone[0] + 256 * half, alone[1], alone[2] + 256 * half, alone[3])
        chosen = analyzer.detect(both, near=near)
        assert identity.box_iou(chosen, near) > 0.5
    assert identity.box_iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert identity.box_iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_no_face_gives_nan_not_a_crash(analyzer):
    flat = np.full((128, 128, 3), 127, np.uint8)
    seen = analyzer.observe(flat)
    assert not seen.found and seen.embedding is None
    assert math.isnan(identity.cosine_similarity(seen.embedding, seen.embedding))
    assert math.isnan(identity.landmark_error(seen, seen))


def test_arcface_checkpoint_loads_and_embeds(tmp_path, analyzer):
    # A small IR-SE backbone (one unit per stage) with the module names of the released checkpoints.
    model = IRBackbone((1, 1, 1, 1), squeeze_excite=True)
    path = tmp_path / "model_ir_se50.pth"
    torch.save(model.state_dict(), path)
    assert identity.find_arcface_weights(tmp_path) == path
    embedder = identity.ArcFaceEmbedder(path)
    image = face_crop(astronaut(), ASTRONAUT_FACE_CENTRE, 256)
    landmarks = analyzer.observe(image).landmarks
    first = embedder.embed(image, landmarks)
    assert first.shape == (512,) and np.linalg.norm(first) == pytest.approx(1.0, abs=1e-5)
    assert identity.cosine_similarity(first, embedder.embed(image.copy(), landmarks)) == pytest.approx(1.0, abs=1e-6)
    # The crop puts the eyes where the ArcFace template has them.
    crop_map = identity.similarity_transform(identity.five_points(landmarks), identity.ARCFACE_TEMPLATE_112)
    eyes = np.c_[identity.five_points(landmarks)[:2], np.ones(2)] @ crop_map.T
    np.testing.assert_allclose(eyes, identity.ARCFACE_TEMPLATE_112[:2], atol=4.0)

    # CurricularFace's layout: plain IR units, an output norm without affine parameters.
    plain = IRBackbone((1, 1, 1, 1), squeeze_excite=False, affine_output=False)
    torch.save(plain.state_dict(), path)
    assert identity.ArcFaceEmbedder(path).embed(image, landmarks).shape == (512,)

    torch.save({"input_layer.0.weight": torch.zeros(64, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError):
        identity.ArcFaceEmbedder(path)


# ---------------------------------------------------------------------------------------------
# temporal consistency


def _warp_errors(reference: list[np.ndarray], output: list[np.ndarray]) -> tuple[float, float]:
    """Mean warping error of output and of the reference itself, with the reference's flow."""
    out_err, in_err = [], []
    for t in range(1, len(reference)):
        flow = temporal.backward_flow(reference[t - 1], reference[t])
        out_err.append(temporal.warping_error(output[t - 1], output[t], flow))
        in_err.append(temporal.warping_error(reference[t - 1], reference[t], flow))
    return float(np.mean(out_err)), float(np.mean(in_err))


def test_flow_warping_explains_camera_motion():
    video = panning_video(3)
    flow = temporal.backward_flow(video[0], video[1])
    assert flow.valid.mean() > 0.8
    compensated = temporal.warping_error(video[0], video[1], flow)
    assert compensated < 0.5 * temporal.frame_difference(video[0], video[1])


def test_shuffled_frames_score_far_worse_than_the_original():
    video = panning_video(6)
    same_out, same_in = _warp_errors(video, [f.copy() for f in video])
    assert same_out == pytest.approx(same_in)  # ratio 1: no flicker added
    shuffled = [video[i] for i in (3, 0, 5, 1, 4, 2)]
    shuffled_out, _ = _warp_errors(video, shuffled)
    assert shuffled_out > 3.0 * same_in
    flicker = [add_noise(f, 6.0, seed=t) for t, f in enumerate(video)]  # independent noise per frame
    flicker_out, _ = _warp_errors(video, flicker)
    assert same_in < flicker_out < shuffled_out


def test_local_and_global_spread():
    ramp = np.linspace(0, 1, 101)
    assert temporal.global_std(ramp) == pytest.approx(ramp.std())
    assert temporal.local_std(ramp) == pytest.approx(0.01 / math.sqrt(2))  # slow drift hardly counts locally
    rng = np.random.default_rng(0)
    noise = rng.normal(0, 0.1, 4000)
    assert temporal.local_std(noise) == pytest.approx(0.1, rel=0.05)  # independent noise: local = global
    assert temporal.local_std(np.full(10, 0.7)) == 0.0


def test_identity_consistency_of_a_steady_and_a_jumping_video():
    rng = np.random.default_rng(1)
    person, other = rng.normal(size=128), rng.normal(size=128)
    steady = temporal.identity_consistency([person.copy() for _ in range(6)])
    assert steady["adjacent_similarity"] == pytest.approx(1.0)
    assert steady["to_mean_std"] == pytest.approx(0.0, abs=1e-9)
    jumping = temporal.identity_consistency([person, other, person, other, person, other])
    assert jumping["adjacent_similarity"] < 0.5
    one_odd_frame = temporal.identity_consistency([person, person, person, other, person, person])
    assert one_odd_frame["adjacent_similarity"] < 0.8
    assert one_odd_frame["to_mean_std"] > 0.1 and one_odd_frame["to_mean_local_std"] > 0.1


# ---------------------------------------------------------------------------------------------
# run folders and the report


def write_run(run: Path, inputs: list[np.ndarray], outputs: dict[str, list[np.ndarray]]) -> Path:
    """A run folder in the public format, with only what eval reads."""
    def save(folder: Path, images):
        folder.mkdir(parents=True)
        for i, image in enumerate(images):
            Image.fromarray(image).save(folder / f"{i:06d}.png")

    save(run / "align" / "unaligned", inputs)
    for key, images in outputs.items():
        save(run / "render" / key, images)
    n = len(inputs)
    rng = np.random.default_rng(0)
    rotation = np.linspace(0, 2, n) + rng.normal(0, 0.5, n)
    translation = np.c_[np.linspace(0, 0.01, n), np.zeros(n)] + rng.normal(0, 0.004, (n, 2))
    np.savez(run / "align" / "transforms.npz", rotation_deg=rotation, translation=translation, crop_size=inputs[0].shape[0])
    (run / "smooth").mkdir()
    smooth = lambda v: np.apply_along_axis(lambda c: np.convolve(np.pad(c, 1, mode="edge"), np.ones(3) / 3, "valid"), 0, v)  # noqa: E731
    np.savez(run / "smooth" / "transforms.npz", rotation_deg=smooth(rotation), translation=smooth(translation))
    (run / "encode").mkdir()
    latents = np.cumsum(rng.normal(0, 0.1, (n, 16, 512)), axis=0).astype(np.float32)
    np.save(run / "encode" / "latents.npy", latents)
    np.save(run / "smooth" / "latents_reconstruction.npy", smooth(latents.reshape(n, -1)).reshape(latents.shape).astype(np.float32))
    return run


def test_evaluate_run_writes_metrics_plots_and_tables(tmp_path, models):
    video = panning_video(5)
    shuffled = [video[i] for i in (2, 4, 0, 3, 1)]
    run = write_run(tmp_path / "a.videdit", video, {"reconstruction": [f.copy() for f in video], "shuffle_+1": shuffled})
    result = evaluate_run(run, settings=EvalSettings(**FAST), models=models)

    assert result["frames"] == 5 and list(result["outputs"]) == ["reconstruction", "shuffle_+1"]
    rec = result["outputs"]["reconstruction"]
    assert rec["summary"]["l2@256"]["mean"] == pytest.approx(0.0, abs=1e-6)  # resized identically
    assert rec["summary"]["l2@full"]["mean"] == 0.0
    assert rec["summary"]["ms_ssim@full"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert rec["summary"]["lpips@256"]["mean"] == pytest.approx(0.0, abs=1e-6)
    assert rec["summary"]["identity_similarity"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert rec["summary"]["landmark_error"]["mean"] == 0.0
    assert rec["temporal"]["warp_error_ratio"] == pytest.approx(1.0)
    assert rec["temporal"]["identity_std_global"] == pytest.approx(0.0, abs=1e-9)
    assert rec["temporal"]["landmark_offset_jitter"] == 0.0
    shuffle = result["outputs"]["shuffle_+1"]
    assert "l2@256" not in shuffle["summary"]  # pixel metrics are for the reconstruction only
    assert shuffle["temporal"]["warp_error_ratio"] > 3.0
    assert shuffle["summary"]["landmark_error"]["mean"] > 1.0
    assert shuffle["temporal"]["landmark_offset_jitter"] > 1.0  # the face jumps about against the input's
    assert len(shuffle["per_frame"]["identity_vs_reconstruction"]) == 5

    # metrics.json is strict JSON and holds what was returned.
    saved = json.loads((run / "eval" / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON {c}"))
    assert saved["outputs"]["reconstruction"]["summary"]["l2@full"]["mean"] == 0.0
    assert "skipped" in saved and "arcface" in saved["skipped"]
    assert result["transforms"]["smoothed"]["rotation_jitter_deg"] < result["transforms"]["raw"]["rotation_jitter_deg"]
    assert result["latents"]["smoothed reconstruction"]["mean_step"] < result["latents"]["encoded"]["mean_step"]

    # The plots are real images with something drawn on them.
    assert sorted(saved["plots"]) == ["eval/latent_pca.png", "eval/metrics_per_frame.png", "eval/transforms.png"]
    for name in saved["plots"]:
        with Image.open(run / name) as png:
            pixels = np.asarray(png.convert("L"), dtype=float)
        assert pixels.shape[0] > 300 and pixels.shape[1] > 600 and pixels.std() > 10

    summary = format_summary(result)
    assert "reconstruction" in summary and "shuffle_+1" in summary and "random AlexNet" in summary
    assert len(summary.splitlines()) < 25 and max(map(len, summary.splitlines())) < 160

    # A second run with a blurred reconstruction, side by side with the first.
    # A second run as the render stage writes it: key "recon", crops rendered larger (256) than the
    # input crops (192), on a canvas with an extended field of view (8 px left/right, 4 px top/bottom).
    rendered = [np.asarray(Image.fromarray(blur(f, 1.5)).resize((256, 256), Image.BICUBIC)) for f in video[:3]]
    expanded = [np.pad(f, ((4, 4), (8, 8), (0, 0)), constant_values=255) for f in rendered]
    other = write_run(tmp_path / "b.videdit", video[:3], {"recon": expanded})
    (other / "render" / "render.json").write_text(json.dumps({"resolution": 256, "expand": [8, 8, 4, 4]}))
    other_result = evaluate_run(other, settings=EvalSettings(**FAST, sizes=(256,), plots=False), models=models)
    recon = other_result["outputs"]["recon"]
    assert recon["resized_from"] == [256, 256]  # the white border was cut off before resizing
    at_input_size = [temporal.resize_to(r, (192, 192)) for r in rendered]
    expected = np.mean([metrics.l2(metrics.resize_square(v, 256), metrics.resize_square(r, 256)) for v, r in zip(video, at_input_size)])
    assert recon["summary"]["l2@256"]["mean"] == pytest.approx(expected, rel=1e-9)
    table = compare_runs([run, other])
    header = next(line for line in table.splitlines() if line.startswith("reconstruction"))
    assert "a.videdit" in header and "b.videdit" in header
    l2_row = next(line for line in table.splitlines() if line.startswith("L2@256")).split()
    assert float(l2_row[1]) == 0.0 and float(l2_row[2]) > 1e-4


def test_max_frames_writes_beside_the_whole_evaluation_and_no_stale_plots_stay(tmp_path, models):
    video = panning_video(4)
    run = write_run(tmp_path / "a.videdit", video, {"reconstruction": [f.copy() for f in video]})
    evaluate_run(run, settings=EvalSettings(**FAST), models=models)
    whole = (run / "eval" / "metrics.json").read_text()
    assert (run / "eval" / "metrics_per_frame.png").is_file()
    quick = evaluate_run(run, settings=EvalSettings(**FAST, max_frames=2, plots=False), models=models)
    assert quick["frames"] == 2 and quick["eval_dir"] == "eval/first_2"
    assert json.loads((run / "eval" / "first_2" / "metrics.json").read_text())["frames"] == 2
    assert (run / "eval" / "metrics.json").read_text() == whole  # the whole run's metrics untouched
    assert not list((run / "eval" / "first_2").glob("*.png"))
    # The whole run evaluated again without plots: the plots of the earlier evaluation do not stay beside it.
    evaluate_run(run, settings=EvalSettings(**FAST, plots=False), models=models)
    assert not list((run / "eval").glob("*.png"))


def test_latent_pca_finds_the_direction_of_motion():
    rng = np.random.default_rng(0)
    direction = rng.normal(size=(16, 512))
    latents = np.linspace(-1, 1, 20)[:, None, None] * direction + rng.normal(0, 1e-3, (20, 16, 512))
    projections, explained = latent_pca({"encoded": latents})
    assert explained[0] > 0.99
    assert abs(np.corrcoef(projections["encoded"][:, 0], np.linspace(-1, 1, 20))[0, 1]) > 0.999


def test_run_folder_problems_are_one_line_input_errors(tmp_path):
    with pytest.raises(InputError, match="not a run folder"):
        evaluate_run(tmp_path / "missing")
    video = panning_video(3, size=64)
    run = write_run(tmp_path / "r", video, {})
    with pytest.raises(InputError, match="no rendered crops"):
        evaluate_run(run)
    short = write_run(tmp_path / "s", video, {"reconstruction": video[:2]})
    with pytest.raises(InputError, match="frame counts differ") as err:
        evaluate_run(short)
    assert "\n" not in str(err.value)
    with pytest.raises(InputError, match="metrics.json not found"):
        compare_runs([run])


def test_against_the_source_video_compares_full_frames(tmp_path, models):
    av = pytest.importorskip("av")
    video = panning_video(4, size=128)

    def encode(path: Path, images):
        with av.open(str(path), "w") as container:
            stream = container.add_stream("libx264rgb" if "libx264rgb" in av.codecs_available else "ffv1", rate=25)
            stream.width, stream.height = images[0].shape[1], images[0].shape[0]
            stream.pix_fmt = "rgb24" if stream.codec_context.name == "libx264rgb" else "bgr0"
            if stream.codec_context.name == "libx264rgb":
                stream.options = {"qp": "0"}  # lossless
            for image in images:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
            container.mux(stream.encode())

    source = tmp_path / "clip.mp4"
    encode(source, video)
    run = tmp_path / "clip.videdit"
    run.mkdir()
    encode(run / "clip.reconstruction.mp4", video)
    result = evaluate_run(run, against=source, settings=EvalSettings(**FAST, sizes=(None,), plots=False), models=models)
    assert result["frames"] == 4 and list(result["outputs"]) == ["reconstruction"]
    # Written beside, not over, the run's own evaluation.
    assert (run / "eval" / "against_clip" / "metrics.json").is_file() and not (run / "eval" / "metrics.json").exists()
    assert result["outputs"]["reconstruction"]["summary"]["psnr@full"]["mean"] > 45.0


def test_identity_model_choice(tmp_path):
    from videdit.errors import MissingWeightsError
    from videdit.evaluate.report import identity_embedder

    with pytest.raises(MissingWeightsError, match="model_ir_se50.pth"):
        load_models(EvalSettings(identity_model="arcface", weights_dir=tmp_path, lpips=False))
    skipped = {}
    assert identity_embedder(EvalSettings(weights_dir=tmp_path), skipped) is None and "arcface" in skipped
    torch.save(IRBackbone((1, 1, 1, 1), squeeze_excite=True).state_dict(), tmp_path / "model_ir_se50.pth")
    skipped = {}
    chosen = identity_embedder(EvalSettings(identity_model="auto", weights_dir=tmp_path), skipped)
    assert chosen.name == "arcface:model_ir_se50.pth" and not skipped
    assert identity_embedder(EvalSettings(identity_model="dlib", weights_dir=tmp_path), {}) is None


def test_eval_takes_as_a_video_every_file_a_run_takes(tmp_path):
    """`videdit run FOLDER` and `videdit eval RUN --against FILE` agree on what a video is: every file the run
    lists (any case of every suffix, .ts and .gif among them) is one eval compares against, and nothing else."""
    from videdit.engines import list_videos
    from videdit.evaluate.frames import reference_source
    from videdit.io.probe import VIDEO_SUFFIXES

    assert {".ts", ".gif", ".mpg"} <= set(VIDEO_SUFFIXES)  # what eval's own list used to miss
    folder = tmp_path / "inputs"
    folder.mkdir()
    names = [f"clip{i}{suffix}" for i, suffix in enumerate(VIDEO_SUFFIXES)]
    names += ["upper.MP4", "Mixed.Ts", "notes.txt", "frame.png", "clip.mp4.json"]
    for name in names:
        (folder / name).write_bytes(b"not decoded here")
    found = list_videos(folder)
    assert [p.name for p in found] == sorted(names[:-3])
    for path in found:
        assert reference_source(tmp_path, path).video == path
    for name in names[-3:]:
        with pytest.raises(InputError, match="neither"):
            reference_source(tmp_path, folder / name)
