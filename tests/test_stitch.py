"""Stitching tuning (videdit/tuning/stitch.py) and the optional stitch stage (videdit/stages/stitch.py).

Moved from test_composite.py with the code; the stage test renders the stitched generator itself
(stitch no longer renders) and still composites through the composite stage's interim stitch option.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from videdit.face import paste as C

from test_composite import _square_quad, _write_png

pytestmark = pytest.mark.numeric


def _template_face(resolution: int) -> np.ndarray:
    """68 landmarks of a face filling a crop, in its pixel-centre coordinates."""
    uv = np.zeros((68, 2))
    t = np.linspace(0.08 * np.pi, 0.92 * np.pi, 17)
    uv[0:17] = np.stack([0.5 - 0.3 * np.cos(t), 0.42 + 0.38 * np.sin(t)], -1)
    uv[17:27] = np.stack([np.linspace(0.26, 0.74, 10), np.full(10, 0.36)], -1)
    uv[27:36] = [0.5, 0.5]
    uv[36:42], uv[42:48] = [0.38, 0.43], [0.62, 0.43]
    uv[48:68] = [0.5, 0.66]
    uv[48], uv[54] = [0.41, 0.66], [0.59, 0.66]
    return uv * resolution - 0.5


def _stitch_case(steps: int, lr: float):
    import torch

    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs
    from videdit.tuning.stitch import StitchSettings, stitch_masks, stitch_tune

    torch.manual_seed(0)
    resolution, n = 16, 4
    G = Generator(**tiny_generator_kwargs(resolution=resolution, channels=8, w_dim=32)).eval()
    before = {k: v.clone() for k, v in G.state_dict().items()}
    with torch.no_grad():
        ws = G.mapping(torch.randn(n, G.z_dim), None)
        inv = torch.eye(3).repeat(n, 1, 1)
        edit = G.synthesis(ws, transform=inv)
    landmarks = np.stack([_template_face(resolution)] * n)
    # The "frame" is the edit made brighter: only the ring outside the face should follow it.
    frame = edit + 0.5
    result = stitch_tune(G, ws, inv, lambda idx: frame[torch.as_tensor(idx)], landmarks,
                         StitchSettings(steps=steps, lr=lr, batch_size=2))
    with torch.no_grad():
        stitched = result.generator.synthesis(ws, transform=inv)
    boundary, inside = (torch.from_numpy(m)[None, None] for m in stitch_masks(landmarks[0], resolution))
    return G, before, result, edit, frame, stitched, boundary, inside


def test_stitch_tuning_leaves_the_input_and_the_frozen_layers():
    from videdit.tuning.data import frozen_parameter_names

    G, before, result, edit, frame, stitched, boundary, inside = _stitch_case(steps=1, lr=1e-2)
    assert boundary.sum() > 0 and inside.sum() > 0 and not (boundary * inside).any()
    for key, value in G.state_dict().items():
        assert (value == before[key]).all(), key
    tuned = dict(result.generator.named_parameters())
    for name in frozen_parameter_names(G):
        assert (tuned[name] == before[name]).all(), name
    assert any(not (tuned[k] == before[k]).all() for k in tuned if k.startswith("synthesis.L"))
    assert len(result.losses) == 1 and result.losses[0]["boundary"] == pytest.approx(0.25, rel=1e-4)


@pytest.mark.slow
def test_stitch_tuning_pulls_the_border_to_the_frame_and_keeps_the_inside():
    G, before, result, edit, frame, stitched, boundary, inside = _stitch_case(steps=12, lr=1e-2)

    def masked_mse(a, b, mask):
        return float((((a - b) ** 2) * mask).sum() / (mask.sum() * a.shape[0] * 3))

    boundary_before = masked_mse(edit, frame, boundary)  # 0.25
    boundary_after = masked_mse(stitched, frame, boundary)
    inside_change = masked_mse(stitched, edit, inside)
    assert boundary_after < 0.7 * boundary_before
    assert inside_change < 0.5 * (boundary_before - boundary_after)


@pytest.mark.slow
def test_run_stitch_writes_generators_that_render_a_folder_for_the_composite(tmp_path):
    import torch

    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs
    from videdit.stages.composite import read_render_layout
    from videdit.stages.render import RenderSettings, run_render
    from videdit.stages.stitch import StitchSettings, run_stitch

    torch.manual_seed(0)
    resolution, n = 16, 3
    G = Generator(**tiny_generator_kwargs(resolution=resolution, channels=8, w_dim=32)).eval()
    with torch.no_grad():
        ws = G.mapping(torch.randn(n, G.z_dim), None)
        renders = G.synthesis(ws, transform=torch.eye(3))
    box = _square_quad((40.0, 30.0), 32.0, 0.0)
    geometry = C.CropGeometry.from_quad(box)
    landmarks = geometry.to_source((_template_face(resolution) + 0.5) / resolution)
    align_dir, smooth_dir, render_dir = tmp_path / "align", tmp_path / "smooth", tmp_path / "render"
    for folder in (align_dir / "unaligned", smooth_dir, render_dir):
        folder.mkdir(parents=True)
    # Identity transforms, as full records (align and smooth both write rotation, translation and matrix).
    identity = dict(rotation_deg=np.zeros(n, np.float32), translation=np.zeros((n, 2), np.float32),
                    matrix=np.repeat(np.eye(3, dtype=np.float32)[None], n, axis=0))
    np.savez(align_dir / "transforms.npz", landmarks=np.stack([landmarks] * n), box_quad=box,
             face_found=np.array([True, False, True]), **identity)
    crops = ((renders.permute(0, 2, 3, 1).numpy() + 0.5 + 1) * 127.5).clip(0, 255).astype(np.uint8)
    for i, crop in enumerate(crops):
        _write_png(align_dir / "unaligned" / f"{i:06d}.png", crop)
    np.save(smooth_dir / "latents_recon.npy", ws.numpy())
    np.savez(smooth_dir / "transforms.npz", **identity)
    (render_dir / "render.json").write_text(json.dumps({"resolution": resolution, "expand": [0, 0, 0, 0],
                                                        "feather": 0, "keys": ["recon"]}))
    result = run_stitch(align_dir, smooth_dir, None, tmp_path / "stitched", StitchSettings(steps=3, lr=1e-2, batch_size=2),
                        ["recon"], generator=G)
    assert len(result.losses["recon"]) == 3
    assert sorted(p.name for p in (tmp_path / "stitched").iterdir()) == ["generator_recon.safetensors", "stitch.json"]
    # The stitched generator is what render uses for the key (stitch itself renders nothing).
    from videdit.checkpoints import load_generator

    stitched = load_generator(result.generators["recon"])
    before, after = G.state_dict(), stitched.state_dict()
    assert any(not torch.equal(after[k], before[k]) for k in before if k.startswith("synthesis.L"))
    assert all(torch.equal(after[k], before[k]) for k in before if k.startswith(("mapping.", "synthesis.input.")))
    assert json.loads((tmp_path / "stitched" / "stitch.json").read_text())["frames_tuned_on"] == 2
    run_render(result.generators["recon"], smooth_dir, ["recon"], tmp_path / "stitched_render",
                          RenderSettings(expand=(0, 0, 0, 0), feather=0, side_by_side=False))
    layout = read_render_layout(tmp_path / "stitched_render")
    assert layout.resolution == resolution and layout.keys == ["recon"]
    assert sorted(p.name for p in (tmp_path / "stitched_render" / "recon").glob("*.png")) == [f"{i:06d}.png" for i in range(n)]


@pytest.mark.slow
def test_the_pipeline_runs_stitch_as_its_own_stage(tmp_path):
    """[stitch] enabled: stitch runs between smooth and render, render draws each W+ key with its stitched
    generator, composite only composites; a second run finds every stage cached."""
    from videdit.pipeline import Pipeline, StandInModels
    from videdit.synthetic import make_clip

    clip = make_clip(tmp_path / "face.mp4", n_frames=4, size=(192, 160), audio=False)
    overrides = {"align.crop_size": 64, "encode.n_iters": 1, "tune.tuner": "none", "edit.direction": "age",
                 "edit.strengths": [3.0], "stitch.enabled": True, "stitch.steps": 2, "stitch.batch_size": 2,
                 "render.side_by_side": False}

    def run(**more):
        pipe = Pipeline.from_preset("default", overrides={**overrides, **more}, quiet=True,
                                    models=StandInModels(resolution=64))
        return pipe.run(clip.path, tmp_path / "run")

    first = run()
    assert first.status == "ok", first.error
    assert list(first.stages) == ["align", "encode", "tune", "edit", "smooth", "stitch", "render", "composite"]
    assert (first.run_dir / "stitch" / "generator_recon.safetensors").is_file()
    assert (first.run_dir / "stitch" / "generator_age+3.safetensors").is_file()  # strength 3 is in the key
    assert set(run().stages.values()) == {"cached"}
    # More stitching steps: stitch and what follows it rerun, nothing before it.
    more = run(**{"stitch.steps": 3})
    assert [s for s, v in more.stages.items() if v == "ran"] == ["stitch", "render", "composite"]
