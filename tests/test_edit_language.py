"""The edit language (docs/edits.md): strength bounds, keyframed strengths, combined edits, per-person edits."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from videdit.edits import check_people, parse_edit, parse_edits
from videdit.errors import VideditError
from videdit.stages.edit import run_edit
from videdit.strengths import FrameTimes, Ramp, parse_strength, strength_options

pytestmark = pytest.mark.numeric


def _unit(seed, n=512):
    d = np.random.default_rng(seed).standard_normal(n).astype(np.float32)
    return d / np.linalg.norm(d)


@pytest.fixture
def latents_file(tmp_path):
    latents = np.random.default_rng(0).standard_normal((6, 16, 512)).astype(np.float32)
    np.save(tmp_path / "latents.npy", latents)
    return tmp_path / "latents.npy", latents


def _tiny_synthesis():
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Generator(**tiny_generator_kwargs(16, channels=8, num_layers=4)).synthesis


# ---- bounds (#28 item 2) and syntax, refused before any work


@pytest.mark.parametrize("overrides, words", [
    ({"edit.strengths": [1e30]}, "outside +-100"),
    ({"edit.strengths": ["nan"]}, "finite"),
    ({"edit.strengths": ["0@0s,1e30@10s"]}, "outside +-100"),
    ({"edit.edits": ["text:a face"], "edit.alpha": ["0@0s,500@end"]}, "outside +-100"),
    ({"edit.edits": ["age:1e9"]}, "outside +-100"),
    ({"edit.strengths": [50], "edit.max_strength": 10.0}, "outside +-10"),
    ({"edit.strengths": ["5@10s,0@1s"]}, "increasing time order"),
    ({"edit.strengths": ["0@0x"]}, "VALUE@SECONDSs"),
    ({"edit.edits": ["age+"]}, "empty part"),
    ({"edit.edits": ["age:3+beard:1"]}, "unknown edit 'beard'"),
    ({"edit.edits": ["p1=age"]}, "needs --faces"),
    ({"edit.edits": ["age+smile"], "edit.strengths": [1, 2]}, "one output"),
])
def test_bad_strengths_and_syntax_are_one_line_at_construction(overrides, words):
    from videdit.pipeline import Pipeline, StandInModels

    with pytest.raises(VideditError) as err:
        Pipeline.from_preset("default", overrides={"edit.edits": ["age"], **overrides}, quiet=True,
                             models=StandInModels(resolution=64))
    assert words in str(err.value) and "\n" not in str(err.value), str(err.value)


def test_cli_refuses_a_huge_strength_before_touching_the_video(tmp_path):
    video = tmp_path / "talk.mp4"
    video.write_bytes(b"not read")
    proc = subprocess.run([sys.executable, "-m", "videdit", "run", str(video), "--edit", "age", "--strength", "1e30"],
                          capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "outside +-100" in proc.stderr and "max_strength" in proc.stderr, proc.stderr
    assert not (tmp_path / "talk.mp4.videdit").exists()


def test_strength_options_and_names():
    assert strength_options("-4,5") == [-4.0, 5.0]
    assert strength_options("0@0s,5@10s") == ["0@0s,5@10s"]
    assert strength_options("0@0s,5@10s;2") == ["0@0s,5@10s", 2.0]
    assert parse_edit("age", strength_options("0@0s,5@10s")).keys()[0][0] == "age-0to5"
    assert [k for k, _ in parse_edit("age", [-4, "0@0s,5@end"]).keys()] == ["age-4", "age-0to5"]
    assert parse_edit("age:3+smile:1").keys() == [("age3+smile1", None)]
    assert parse_edit("age:3").keys() == [("age3", 3.0)]
    assert parse_edit("s:L6_148_512:501:2").keys() == [("s-L6_148_512-501_2", 2.0)]
    assert parse_edit("s:L6_148_512:501").keys() == [("s-L6_148_512-501", 5.0)]  # the channel is no strength
    mixed = parse_edit("age:0@0s,5@2s+s:L6_148_512:501:-2+text:a tanned face")
    assert mixed.kind == "combined" and [p.kind for p in mixed.parts] == ["w", "channel", "text"]
    assert mixed.keys()[0][0] == "age0to5+s-L6_148_512-501-2+text-a-tanned-face3.5"  # text: its table alpha
    assert mixed.in_wplus and mixed.in_stylespace and mixed.has_ramp()
    people = parse_edits(["p1=age:3", "p2=text:a smiling face", "smile:1"])
    assert len(people) == 1 and people[0].keys()[0][0] == "p1-age3+p2-text-a-smiling-face4+smile1"
    assert [(p.person, p.kind) for p in people[0].parts] == [("p1", "w"), ("p2", "text"), ("", "w")]


def test_docs_hold_the_defaults_table():
    from pathlib import Path

    from videdit.edits import defaults_table

    assert defaults_table() in (Path(__file__).parents[1] / "docs" / "edits.md").read_text()


def test_check_people():
    specs = parse_edits(["p1=age", "p3=smile"])
    check_people(specs, ["p1", "p3"], ["p1", "p2", "p3"])
    with pytest.raises(VideditError, match="no such person"):
        check_people(specs, ["p1"], ["p1", "p2"])
    with pytest.raises(VideditError, match="not chosen"):
        check_people(specs, ["p1"], ["p1", "p2", "p3"])
    check_people(parse_edits(["age"]), None)  # no person named: fine without --faces


# ---- keyframed strengths


def test_ramp_values_on_variable_frame_times():
    ramp = parse_strength("0@0s,5@1s,1@end")
    seconds = np.array([0.0, 0.1, 0.5, 0.55, 1.0, 1.7, 2.2])  # a variable frame rate
    values = ramp.values(FrameTimes(seconds, 0, None, 25.0))
    # end = the last frame's time (2.2 s): 5 + (1 - 5) * (1.7 - 1) / 1.2 between the last two keyframes
    np.testing.assert_allclose(values, [0, 0.5, 2.5, 2.75, 5, 5 - 4 * 0.7 / 1.2, 1], rtol=0, atol=1e-12)
    frames = parse_strength("2@2f,4@4f").values(FrameTimes(seconds, 0, None, 25.0))
    # constant outside; between, linear in time (frame 3 is 0.05 s after frame 2 of a 0.5 s step), not in frame number
    np.testing.assert_allclose(frames, [2, 2, 2, 2.2, 4, 4, 4], rtol=0, atol=1e-12)
    # a track starting at source frame 10: frame keyframes are source frames, `end` the video's last frame
    track = FrameTimes(np.array([1.0, 1.04, 1.08]), first_frame=10, last_frame=20, fps=25.0)
    np.testing.assert_allclose(parse_strength("0@10f,4@end").values(track), [0, 0.4, 0.8], atol=1e-12)
    with pytest.raises(VideditError, match="increasing time order"):
        parse_strength("0@1s,1@2f").values(FrameTimes(seconds, 0, None, 25.0))  # 2f is at 0.5 s here


def test_ramp_edit_offsets_before_smoothing_are_strength_times_direction(latents_file, tmp_path):
    path, latents = latents_file
    d = _unit(1)
    np.save(tmp_path / "dir.npy", d)
    seconds = np.array([0.0, 0.04, 0.1, 0.3, 0.31, 0.9])
    spec = parse_edit(str(tmp_path / "dir.npy"), ["1@0.05s,-3@0.5s"])
    res = run_edit(path, tmp_path / "edit", [spec], direction=lambda t: d, times=FrameTimes(seconds))
    assert list(res.latents_paths) == ["recon", "dir-1to-3"]
    offsets = np.load(res.latents_paths["dir-1to-3"]).astype(np.float64) - latents
    strength = np.interp(seconds, [0.05, 0.5], [1, -3])
    # per entry: |s d| <= 3 and |w| < 6 round once each in float32 (half an ulp of 8: 4.8e-7); 1e-5 leaves room
    expected = np.broadcast_to(strength[:, None, None] * d.astype(np.float64)[None, None], offsets.shape)
    np.testing.assert_allclose(offsets, expected, rtol=0, atol=1e-5)
    with pytest.raises(VideditError, match="times are needed"):
        run_edit(path, tmp_path / "e2", [spec], direction=lambda t: d)


# ---- combined edits


def test_combined_edit_is_the_sum_of_its_parts(latents_file, tmp_path):
    from videdit.stylespace import load_styles

    path, latents = latents_file
    dirs = {"a.npy": _unit(2), "b.npy": _unit(3)}
    for name, d in dirs.items():
        np.save(tmp_path / name, d)
    synthesis = _tiny_synthesis()
    widths = synthesis.style_widths()
    k1, k2 = list(widths)[1], list(widths)[3]
    a, b = str(tmp_path / "a.npy"), str(tmp_path / "b.npy")
    specs = parse_edits([f"{a}:2+{b}:-1.5+s:{k1}:0:3+s:{k2}:2:0@0s,4@1s", f"{a}:2", f"{b}:-1.5", f"s:{k1}:0:3",
                         f"s:{k2}:2:0@0s,4@1s"])
    times = FrameTimes.of_frames(6, fps=5.0)
    res = run_edit(path, tmp_path / "edit", specs, direction=lambda t: dirs[t.rsplit("/", 1)[-1]], synthesis=synthesis,
                   times=times)
    combined, wa, wb, sa, sb = (k for s in specs for k, _ in s.keys())
    assert res.latents_paths[combined].name.startswith("latents_")
    w = {k: np.load(tmp_path / "edit" / f"latents_{k}.npy").astype(np.float64) - latents for k in (combined, wa, wb)}
    # each part's offset and the sum are rounded once in float32 (|offset| <= 3.5, |w| < 6): 2e-6 apart at most
    np.testing.assert_allclose(w[combined], w[wa] + w[wb], atol=1e-5)
    s = {k: load_styles(tmp_path / "edit" / f"styles_{k}.safetensors", widths) for k in (combined, sa, sb)}
    for name in widths:  # S offsets of one channel each: sums of exact products, compared at float32 rounding
        torch.testing.assert_close(s[combined][name], s[sa][name] + s[sb][name], rtol=0, atol=1e-6)
    assert float(s[combined][k2][:, 2].max()) == 4.0 and float(s[combined][k1][0, 0]) == 3.0


def test_combined_edit_renders_its_wplus_latents_with_its_style_offsets(tmp_path):
    """render draws a mixed edit from its own W+ latents plus its S offsets (not the reconstruction's)."""
    from videdit import records
    from videdit.stages.render import RenderSettings, run_render
    from videdit.stylespace import save_styles
    from videdit.temporal import transform_matrices

    G = _tiny_synthesis_generator()
    n = 2
    recon = np.random.default_rng(4).standard_normal((n, G.num_ws, G.w_dim)).astype(np.float32)
    moved = recon + 0.5
    smooth = tmp_path / "smooth"
    smooth.mkdir()
    records.save_latents(smooth / records.latents_name("recon"), recon)
    records.save_latents(smooth / records.latents_name("mix"), moved)
    widths = G.synthesis.style_widths()
    save_styles(smooth / records.styles_name("mix"), {k: torch.zeros(n, w) for k, w in widths.items()})
    zeros = np.zeros(n, np.float32)
    records.TransformsRecord(rotation_deg=zeros, translation=np.zeros((n, 2), np.float32),
                             matrix=transform_matrices(np.zeros((n, 2)), zeros).astype(np.float32),
                             face_found=np.ones(n, bool)).save(smooth / records.TRANSFORMS)
    res = run_render(G, smooth, ["recon", "mix"], tmp_path / "render", RenderSettings(side_by_side=False, feather=0, fit_memory=False))
    from PIL import Image

    frame = lambda k: np.asarray(Image.open(res.frames_dirs[k] / "000000.png"))  # noqa: E731
    assert not np.array_equal(frame("recon"), frame("mix"))  # zero offsets on the moved latents: a changed image


def _tiny_synthesis_generator():
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Generator(**tiny_generator_kwargs(16, channels=8, num_layers=4)).eval()


# ---- per-person edits


def test_each_person_gets_only_their_own_edits(latents_file, tmp_path):
    path, latents = latents_file
    dirs = {"age": _unit(5), "smile": _unit(6), "pose": _unit(7)}
    specs = parse_edits(["p1=age:3", "p2=smile:-1", "pose:1"])
    (key, _), = specs[0].keys()
    for person, expected in [("p1", 3 * dirs["age"] + dirs["pose"]), ("p2", -dirs["smile"] + dirs["pose"]),
                             ("p3", dirs["pose"])]:
        res = run_edit(path, tmp_path / person, specs, direction=dirs.__getitem__, person=person)
        offset = np.load(res.latents_paths[key]).astype(np.float64) - latents
        # float64 sum rounded once to float32, then added to |w| < 6: 1e-5 as above
        np.testing.assert_allclose(offset, np.broadcast_to(expected.astype(np.float64), offset.shape), atol=1e-5)


# ---- through the pipeline


@pytest.mark.slow
def test_ramp_and_combined_edits_through_the_pipeline(tmp_path):
    """One run: a ramp (`--strength 0@0s,5@end` -> talk.age-0to5.mp4) and a combined W+ and S edit; the edit stage's
    per-frame offsets before smoothing are strength(t) x direction at the align record's timestamps, the ramp is in
    settings.toml, and another ramp reruns the edit stage but not align or encode."""
    from videdit import records
    from videdit.pipeline import Pipeline, StandInModels
    from videdit.synthetic import make_clip

    clip = make_clip(tmp_path / "talk.mp4", n_frames=5, size=(192, 160))
    models = StandInModels(resolution=64)
    key = next(k for k in models.load_generator("cpu").synthesis.style_widths() if k.startswith("L2_"))
    base = {"align.crop_size": 64, "encode.n_iters": 1, "encode.batch_size": 4, "tune.tuner": "none",
            "render.side_by_side": False}

    def run(ramp):
        pipe = Pipeline.from_preset("default", overrides={**base, "edit.edits": ["age", f"smile:1+s:{key}:1:20"],
                                                          "edit.strengths": [ramp]}, quiet=True, models=models)
        return pipe.run(clip.path, tmp_path / "run")

    result = run("0@0s,5@end")
    assert result.status == "ok", result.error
    combined = f"smile1+s-{key}-1_20"
    assert [p.name for p in result.outputs] == ["talk.age-0to5.mp4", f"talk.{combined}.mp4", "talk.recon.mp4"]
    assert '"0@0s,5@end"' in (result.run_dir / "settings.toml").read_text()
    edit = result.run_dir / "edit"
    align = records.AlignRecord.load(result.run_dir / "align")
    t = align.time_s - align.time_s[0]
    strength = 5 * t / t[-1]
    recon = np.load(edit / "latents_recon.npy").astype(np.float64)
    d_age, d_smile = (models.edit_direction(n)[0].astype(np.float64) for n in ("age", "smile"))
    # float32 rounding of s d (|s d| <= 5) and of the sum with |w| < 8: under 1.5e-6 per entry; 1e-5 leaves room
    np.testing.assert_allclose(np.load(edit / "latents_age-0to5.npy") - recon,
                               np.broadcast_to(strength[:, None, None] * d_age, recon.shape), rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.load(edit / f"latents_{combined}.npy") - recon,
                               np.broadcast_to(d_smile, recon.shape), rtol=0, atol=1e-5)
    from safetensors.torch import load_file

    offsets = load_file(str(edit / f"styles_{combined}.safetensors"))
    assert offsets[key][:, 1].eq(20.0).all() and float(sum(v.abs().sum() for v in offsets.values())) == 20.0 * 5
    again = run("0@0s,2@end")
    assert again.status == "ok", again.error
    assert again.stages["align"] == again.stages["encode"] == "cached" and again.stages["edit"] == "ran"
