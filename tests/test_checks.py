"""Everything that can be checked before the first stage is (issue 28): every setting of every section, enumerated
from the schema itself, refused up front with one line naming it when it has the wrong type, is NaN or infinite,
or is out of its documented bounds; and the checks that need the source or the generator's header run before
any stage folder exists."""
from __future__ import annotations

import dataclasses
import importlib
import math
import types
import typing
from pathlib import Path

import pytest

from videdit.errors import VideditError
from videdit.layout import STAGE_ORDER
from videdit.setting_rules import ELEMENT_RULES, RULES, Check, Choice, Range, bounds_table
from videdit.settings import SECTIONS, RunOptions

REPO = Path(__file__).resolve().parents[1]
SMALL = {"align.crop_size": 64, "encode.n_iters": 1, "encode.batch_size": 4}

# A value each kind of string check must refuse (the checks themselves are in videdit.setting_rules).
BAD_STRINGS = {"DEVICE": "gpu7", "FILE": "/no/such/file.pt", "FOLDER": "/no/such/folder", "FRAME_RATE": "fast",
               "PEOPLE": "everybody", "ENCODER_PRESET": "warp9", "PIX_FMT": "nosuch", "EDIT": "nosuch"}
RULE_NAMES = {id(value): name for name, value in vars(importlib.import_module("videdit.setting_rules")).items()
              if isinstance(value, Check)}


def _schema():
    """(dotted key, annotation) of every setting: each field of each section's class and of the class of the keys the
    pipeline reads from it, and the run-wide keys."""
    out = [(f.name, typing.get_type_hints(RunOptions)[f.name]) for f in dataclasses.fields(RunOptions)]
    for section, (module, name, choice_class) in SECTIONS.items():
        for cls in filter(None, (getattr(importlib.import_module(module), name), choice_class)):
            hints = typing.get_type_hints(cls)
            out += [(f"{section}.{f.name}", hints[f.name]) for f in dataclasses.fields(cls) if f.init]
    return out


def _base(annotation):
    """The annotation less None, and whether it is a list of it."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)] \
        if typing.get_origin(annotation) in (typing.Union, types.UnionType) else [annotation]
    if len(args) == 1 and (typing.get_origin(args[0]) in (list, tuple) or args[0] in (list, tuple)):
        return [a for a in typing.get_args(args[0]) if a is not Ellipsis][0], True
    return (args[0] if len(args) == 1 else tuple(args)), False


def _out_of_range(rule: Range, number_type) -> list:
    below = rule.low if rule.low_open else rule.low - 1
    above = rule.high + 1
    if number_type is int:
        below, above = math.floor(below), math.ceil(above)
    return [below, above]


def _bad_values(key: str, annotation) -> list:
    """Every value the key must refuse: a wrong type, NaN, +/-inf, and out of its rule (below min, above max; an
    unknown choice; a bad file, device, codec option...)."""
    base, is_list = _base(annotation)
    rule = ELEMENT_RULES.get(key) if is_list else RULES.get(key)
    wrong_type = {int: "abc", float: "abc", bool: "yes", str: 5}.get(base, [[1]])
    values = [wrong_type, math.nan, math.inf, -math.inf]
    numeric = base in (int, float) or (isinstance(base, tuple) and int in base)
    if numeric:
        assert isinstance(rule, (Range, Choice)), f"{key}: a number with no bounds in videdit.setting_rules"
        if isinstance(rule, Range):
            values += _out_of_range(rule, int if int in (base if isinstance(base, tuple) else (base,)) else float)
        else:
            values += [max(rule.values) + 1]
        if isinstance(rule, Range) and rule.words:
            values.append("nosuch")
    elif set(typing.get_args(base)) == {float, str}:  # strengths: a number or keyframes
        from videdit.strengths import DEFAULT_MAX_STRENGTH

        assert RULE_NAMES.get(id(rule)) == "STRENGTH", f"{key}: a strength setting with no check in videdit.setting_rules"
        values += [DEFAULT_MAX_STRENGTH + 1, -DEFAULT_MAX_STRENGTH - 1, f"0@0s,{DEFAULT_MAX_STRENGTH + 1:g}@1s", "0@1s,1@0s"]
    elif base is str:
        if isinstance(rule, Choice):
            values.append("nosuch")
        elif rule is not None:
            values.append(BAD_STRINGS[RULE_NAMES[id(rule)]])
        else:
            assert False, f"{key}: a string setting with no check in videdit.setting_rules"
    else:
        assert base is bool, f"{key}: a {annotation} setting the test does not know how to break"
    if is_list:
        values = [wrong_type if v is wrong_type and base is not str else [v] for v in values] + ([5] if base is str else ["abc"])
    return values


SCHEMA = _schema()


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from videdit.synthetic import make_clip

    return make_clip(tmp_path_factory.mktemp("clip") / "face.mp4", n_frames=5, size=(192, 160))


def refusal(clip_path: Path, run_dir: Path, overrides: dict) -> str:
    """The one line a run with these overrides fails with; asserts it created no stage folder."""
    from videdit.pipeline import Pipeline, StandInModels

    try:
        pipe = Pipeline.from_preset("default", overrides={**SMALL, **overrides}, quiet=True, estimate_time=False,
                                    models=StandInModels(resolution=64))
    except VideditError as err:
        message = str(err)
    else:
        result = pipe.run(clip_path, run_dir)
        assert result.status == "failed", f"{overrides} was accepted"
        message = result.error
    made = [p.name for p in run_dir.iterdir()] if run_dir.exists() else []
    assert not [n for n in made if n.split(".")[0] in STAGE_ORDER], (overrides, made)
    assert "\n" not in message.strip(), message
    return message


@pytest.mark.parametrize("key, annotation", SCHEMA, ids=[k for k, _ in SCHEMA])
def test_every_setting_refuses_bad_values_before_the_first_stage(clip, tmp_path, key, annotation):
    for i, value in enumerate(_bad_values(key, annotation)):
        message = refusal(clip.path, tmp_path / f"run{i}", {key: value})
        assert key in message, (value, message)


def test_the_schema_enumeration_reaches_every_section():
    sections = {key.partition(".")[0] for key, _ in SCHEMA if "." in key}
    assert sections == set(SECTIONS)
    assert "tune.steps" in dict(SCHEMA) and "precision" in dict(SCHEMA)


def test_docs_list_every_bound():
    """docs/settings.md holds the bounds table as the code has it."""
    assert bounds_table() in (REPO / "docs" / "settings.md").read_text()


def test_good_values_at_the_bounds_are_accepted():
    from videdit.settings import resolve_settings

    resolve_settings({"tune": {"steps": 1_000_000, "lr": 1.0}, "composite": {"crf": 51, "pix_fmt": "yuv420p10le"}})


# ---- issue 28 items 4-8: checked before the first stage, not after align, encode and tune


def _cli(*args, env=None, cwd=None):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "videdit", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env or dict(os.environ), cwd=cwd)


def _one_line_error(proc) -> str:
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and len(lines) == 1, proc.stdout + proc.stderr
    return lines[0]


@pytest.mark.parametrize("args, expected", [
    (["--set", "tune.lr=nan"], "setting tune.lr = nan: must be a finite number"),  # item 4
    (["--set", "tune.lr=inf"], "setting tune.lr = inf: must be a finite number"),
    (["--pix-fmt", "nosuch"], "setting composite.pix_fmt = 'nosuch'"),  # item 6
    (["--expand", "0,0,99999,0"], "setting render.expand = 99999: must be <= 4096"),  # item 7
    (["--set", "tune.steps=10000000000"], "setting tune.steps = 10000000000: must be <= 1000000"),  # item 8
    (["--crf", "99"], "Invalid value for '--crf': 99 is not in 0..51"),
    (["--batch-size", "0"], "Invalid value for '--batch-size': 0 is not in the range 1<=x<=4096"),
])
def test_cli_settings_are_refused_before_any_work(clip, tmp_path, args, expected):
    run_dir = tmp_path / "run"
    line = _one_line_error(_cli("run", clip.path, "--out", run_dir, *args))
    assert expected in line
    assert not run_dir.exists()


@pytest.mark.parametrize("overrides, expected", [
    ({"edit.edits": ["s:BADKEY:1"]}, "unknown StyleSpace layer 'BADKEY'"),  # item 5
    ({"edit.edits": ["s:L6_52_16:99999"]}, "channel 99999 out of range for L6_52_16 (valid: 0-15)"),
    ({"render.expand": [0, 49, 0, 0]}, "each side must be at most 48 px"),  # item 7: 64 px generator less feather 16
    ({"composite.codec": "h264", "composite.pix_fmt": "yuv440p"}, "pixel format 'yuv440p' is not one libx264 writes"),
])
def test_what_needs_the_generator_or_the_source_is_checked_before_the_first_stage(clip, tmp_path, overrides, expected):
    assert expected in refusal(clip.path, tmp_path / "run", overrides)


def test_generator_widths_come_from_the_checkpoint_header_and_match_the_network(tmp_path):
    """PretrainedModels reads the layer table off a released ReStyle file's decoder without building it."""
    import torch

    from tests.test_encoders import _released_layout
    from videdit.checkpoints.plans import generator_style_widths
    from videdit.checkpoints.restyle import load_restyle_checkpoint
    from videdit.models import PretrainedModels

    ckpt, _, _ = _released_layout("e4e", "resnet34")
    torch.save(ckpt, tmp_path / "restyle_e4e_ffhq.pt")
    kwargs = PretrainedModels(tmp_path).generator_kwargs()
    built = load_restyle_checkpoint(tmp_path / "restyle_e4e_ffhq.pt").generator
    assert generator_style_widths(kwargs) == built.synthesis.style_widths()


def test_directions_styleclip_lists_every_missing_file_at_once(tmp_path):
    """#12: the generator and CLIP missing together are one list, before anything is loaded (exit 3 as for run)."""
    import os

    env = dict(os.environ, VIDEDIT_WEIGHTS=str(tmp_path / "empty"))
    proc = _cli("directions", "styleclip", "--generator", tmp_path / "nosuch.pkl", "--out", tmp_path / "out", env=env)
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert "2 file(s) missing" in proc.stderr and "nosuch.pkl" in proc.stderr and "clip_vit_b32" in proc.stderr


def test_directions_styleclip_checks_the_generator_header_before_loading_clip(tmp_path):
    """A file that is not a generator is one line naming it, although CLIP is absent too... once CLIP is there:
    here CLIP is given as a file that exists, so only the generator can be at fault, and CLIP is never read."""
    bad = tmp_path / "g.pt"
    bad.write_bytes(b"not a checkpoint")
    clip = tmp_path / "clip.pt"
    clip.write_bytes(b"never read")
    line = _one_line_error(_cli("directions", "styleclip", "--generator", bad, "--clip", clip, "--out", tmp_path / "o"))
    assert "g.pt" in line and "clip.pt" not in line


def test_edits_given_replace_the_presets_direction():
    """#10: `--preset demo --edit age` is one age edit, not the preset's `direction = "age"` plus the same again."""
    from videdit.pipeline import Pipeline, StandInModels

    pipe = Pipeline.from_preset("demo", overrides={"edit.edits": ["age"]}, models=StandInModels(resolution=64))
    assert [spec.target for spec in pipe.sections["edit"].specs] == ["age"]
    smile = Pipeline.from_preset("demo", overrides={"edit.edits": ["smile"]}, models=StandInModels(resolution=64))
    assert [spec.target for spec in smile.sections["edit"].specs] == ["smile"]
    kept = Pipeline.from_preset("demo", models=StandInModels(resolution=64))
    assert [spec.target for spec in kept.sections["edit"].specs] == ["age"]


@pytest.mark.parametrize("who", ["main", "all"])
def test_faces_on_a_clip_shorter_than_min_track_frames_edits_its_track(tmp_path, who, caplog):
    """#11: an 8-frame one-face clip runs with --faces as it does without, saying so in one line."""
    import logging

    from videdit.pipeline import Pipeline, StandInModels
    from videdit.synthetic import make_clip

    clip8 = make_clip(tmp_path / "eight.mp4", n_frames=8, size=(192, 160))
    pipe = Pipeline.from_preset("default", overrides={"faces.select": who}, models=StandInModels(resolution=64),
                                quiet=True)
    with caplog.at_level(logging.WARNING):
        chosen = pipe.chosen_tracks(clip8.path, tmp_path / "run")
    assert len(chosen) == 1 and chosen[0].n_frames == 8
    notes = [r.getMessage() for r in caplog.records if "min_track_frames" in r.getMessage()]
    assert notes == ["the clip has 8 frames, fewer than faces.min_track_frames = 10: tracks of 8 frames are edited"]


def test_a_garbage_cached_frame_with_its_mtime_kept_says_how_to_fix_it(clip, tmp_path):
    """#13: damage the fast check cannot see (same size, same mtime) fails in one line that names --verify and
    --from align."""
    import os

    from videdit.pipeline import Pipeline, StandInModels

    def pipe():
        return Pipeline.from_preset("default", overrides={**SMALL, "tune.steps": 1}, quiet=True, estimate_time=False,
                                    models=StandInModels(resolution=64))

    run_dir = tmp_path / "run"
    assert pipe().run(clip.path, run_dir, until="align").status == "ok"
    frame = run_dir / "align" / "aligned" / "000002.png"
    times = frame.stat()
    frame.write_bytes(os.urandom(times.st_size))
    os.utime(frame, ns=(times.st_atime_ns, times.st_mtime_ns))
    result = pipe().run(clip.path, run_dir, until="encode")
    assert result.status == "failed"
    assert "000002.png" in result.error and "--verify" in result.error and "--from align" in result.error
    assert "\n" not in result.error
    # log.txt keeps the traceback of an error raised on purpose too, indented, under the stage it came from
    lines = (run_dir / "log.txt").read_text().splitlines()
    [failed] = [i for i, line in enumerate(lines) if " failed " in line]
    assert lines[failed].split()[1:4] == ["encode", "failed", "InputError:"]
    assert lines[failed + 1] == "    Traceback (most recent call last):"
    assert pipe().run(clip.path, run_dir, until="encode", from_stage="align").status == "ok"


def test_saved_networks_are_byte_identical(tmp_path):
    """#14: safetensors writes its metadata map in hash order; the same network saved twice gives the same bytes
    (so a repaired tune/generator.safetensors does not make tune and render recompute)."""
    from videdit.checkpoints import load_generator, save_generator
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

    G = Generator(**tiny_generator_kwargs(16, channels=8, w_dim=32))
    saved = [save_generator(G, tmp_path / f"g{i}.safetensors").read_bytes() for i in range(6)]
    assert len(set(saved)) == 1
    again = load_generator(tmp_path / "g0.safetensors")
    assert all((a == b).all() for a, b in zip(again.state_dict().values(), G.state_dict().values()))


@pytest.mark.slow
def test_two_identical_runs_write_identical_tuned_generators(clip, tmp_path):
    """#14 end to end: tune/generator.safetensors of two identical runs compared byte for byte."""
    from videdit.pipeline import Pipeline, StandInModels

    files = []
    for name in ("a", "b"):
        pipe = Pipeline.from_preset("default", overrides={**SMALL, "tune.steps": 2, "tune.allow_l2_only": True,
                                                          "tune.lpips_weight": 0.0},
                                    quiet=True, estimate_time=False, models=StandInModels(resolution=64))
        result = pipe.run(clip.path, tmp_path / name, until="tune")
        assert result.status == "ok", result.error
        files.append((tmp_path / name / "tune" / "generator.safetensors").read_bytes())
    assert files[0] == files[1]


_FULL_DISK_SCRIPT = """
import resource, signal, sys
from pathlib import Path
from videdit.pipeline import Pipeline, StandInModels
clip, run_dir = sys.argv[1:3]
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))  # 1 MiB: frames and latents fit, tune's files do not
pipe = Pipeline.from_preset("default", overrides={"align.crop_size": 64, "encode.n_iters": 1, "encode.batch_size": 4,
                            "tune.steps": 2, "tune.checkpoint_every": 1, "tune.allow_l2_only": True,
                            "tune.lpips_weight": 0.0}, quiet=True, estimate_time=False, models=StandInModels(resolution=64))
result = pipe.run(Path(clip), Path(run_dir), until="tune")
print(result.status, result.stages, file=sys.stderr)
print(result.error)
"""


def test_a_full_disk_during_tune_is_the_one_full_disk_line_naming_the_file(clip, tmp_path):
    """#9: torch.save's "[enforce fail at inline_container.cc]" is the same one line as a full disk elsewhere
    (a file-size rlimit in a subprocess stands in for the full disk; it fails writes as a full disk does)."""
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", _FULL_DISK_SCRIPT, str(clip.path), str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=600)
    line = proc.stdout.strip()
    # torch drops the errno (EFBIG here): a failed write of its archive reads as a full disk
    assert line.startswith("disk full while writing "), proc.stdout + proc.stderr
    assert str(tmp_path / "run" / "tune.partial") in line and line.endswith("finished stages are kept")
    assert "enforce fail" not in line and "\n" not in line
    assert (tmp_path / "run" / "encode").is_dir()  # the finished stages are kept


def test_write_failures_are_told_apart_by_their_errno():
    import errno

    from videdit.fileio import write_failure_errno

    torch_text = ("[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed writing file data/0: "
                  "file write failed")
    assert write_failure_errno(RuntimeError(torch_text)) == errno.ENOSPC
    assert write_failure_errno(Exception("Error while serializing: IoError(Os { code: 28, kind: StorageFull })")) == 28
    assert write_failure_errno(OSError(errno.EFBIG, "File too large")) == errno.EFBIG
    assert write_failure_errno(RuntimeError("size mismatch")) is None


def test_recursive_skips_run_folders_whatever_their_name(tmp_path):
    """#1: an earlier run's folder is recognised by what is in it (a manifest, settings.toml with the log or the
    lock), not by its name, and skipped with one line."""
    from videdit.engines import list_videos

    (tmp_path / "a.mp4").write_bytes(b"x")
    old = tmp_path / "oldrun"
    for name in ("align/preview.mp4", "render/recon.mp4", "a.age.mp4"):
        (old / name).parent.mkdir(parents=True, exist_ok=True)
        (old / name).write_bytes(b"x")
    (old / "align" / "manifest.json").write_text("{}")
    other = tmp_path / "sub" / "second"
    (other / "composite").mkdir(parents=True)
    (other / "composite" / "recon.mp4").write_bytes(b"x")
    (other / "settings.toml").write_text("")
    (other / "log.txt").write_text("")
    (tmp_path / "sub" / "b.mov").write_bytes(b"x")
    skipped = []
    assert list_videos(tmp_path, recursive=True, skipped=skipped) == [tmp_path / "a.mp4", tmp_path / "sub" / "b.mov"]
    assert sorted(skipped) == [old, other]


def test_run_on_a_folder_of_png_frames_runs_it_as_one_video(tmp_path):
    from tests.clips import make_image_folder
    from videdit.engines import run_many
    from videdit.pipeline import Pipeline, StandInModels

    truth = make_image_folder(tmp_path / "frames", n_frames=3, size=(160, 128), scale=0.35)
    pipe = Pipeline.from_preset("default", overrides=SMALL, quiet=True, estimate_time=False,
                                models=StandInModels(resolution=64))
    [result] = run_many(pipe, truth.path, until="align")
    assert result.status == "ok", result.error
    assert result.run_dir == tmp_path / "frames.videdit" and result.frames == 3


def test_a_symlink_loop_is_named_as_such(tmp_path):
    (tmp_path / "loop.mp4").symlink_to(tmp_path / "loop.mp4")
    line = _one_line_error(_cli("run", tmp_path / "loop.mp4"))
    assert "loop.mp4 is a symbolic link" in line and "symbolic link loop" in line


@pytest.fixture
def read_only_run(tmp_path):
    """A run folder on a read-only tmpfs (skipped where mounting is not allowed)."""
    import subprocess

    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here")
    (mount / "align").mkdir()
    (mount / "settings.toml").write_text("")
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", str(mount)], capture_output=True)


def test_eval_on_a_read_only_run_folder_is_one_line_and_out_writes_elsewhere(read_only_run, tmp_path):
    """#3: one line before any model is loaded, naming --out; with --out the evaluation goes past that check."""
    line = _one_line_error(_cli("eval", read_only_run, "--no-plots"))
    assert f"cannot write the evaluation folder {read_only_run / 'eval'}: read-only file system" in line
    assert "--out" in line
    elsewhere = _cli("eval", read_only_run, "--no-plots", "--out", tmp_path / "evaluation")
    assert "cannot write" not in elsewhere.stderr and "Traceback" not in elsewhere.stderr, elsewhere.stderr
    assert (tmp_path / "evaluation").is_dir()


# ---- the run's log and stopping (issue 27 item 2, issue 28 smalls)


def _stop_a_demo(tmp_path, signum):
    """A demo stopped by `signum` once encode has started: (exit code, stderr, its log.txt)."""
    import os
    import subprocess
    import sys
    import time

    out = tmp_path / "demo"
    env = dict(os.environ, VIDEDIT_WEIGHTS=str(tmp_path / "no-weights"), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "videdit", "demo", "--out", str(out), "--frames", "6"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = out / "log.txt"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (log.is_file() and " encode start" in log.read_text()):
        time.sleep(0.2)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    return proc.returncode, stderr, log.read_text()


@pytest.mark.parametrize("signame, code, said, logged", [
    ("SIGTERM", 143, "terminated (SIGTERM)", "encode interrupted by SIGTERM"),
    ("SIGINT", 130, "interrupted;", "encode interrupted by Ctrl-C"),
])
def test_sigterm_and_ctrl_c_stop_with_a_message_and_are_logged_with_their_stage(tmp_path, signame, code, said, logged):
    import signal

    returncode, stderr, log = _stop_a_demo(tmp_path, getattr(signal, signame))
    assert returncode == code
    assert said in stderr.strip().splitlines()[-1] and "Traceback" not in stderr
    assert logged in log
    assert not list((tmp_path / "demo" / "source").glob(".*tmp*"))


def test_a_killed_writers_temporary_file_is_removed_by_the_next_demo(tmp_path):
    import subprocess

    from videdit.fileio import remove_stale_temporaries, temporary_name

    target = tmp_path / "astronaut.mp4"
    dead = subprocess.Popen(["true"])
    dead.wait()  # a process id that no longer runs
    left = temporary_name(target, dead.pid)
    left.write_bytes(b"half a clip")
    mine = temporary_name(target, __import__("os").getpid())
    mine.write_bytes(b"being written")
    assert remove_stale_temporaries(target) == [left]
    assert not left.exists() and mine.exists()


@pytest.mark.parametrize("verb", [["run", "x.mp4"], ["demo"]])
def test_crf_is_the_same_type_on_every_verb(verb):
    """#27: `--crf` is auto or a whole number in 0..51 on run and demo alike, refused in one line otherwise."""
    from click.testing import CliRunner

    from videdit.cli import cli

    for value, expected in [("best", "expected auto or a whole number, got 'best'"), ("52", "52 is not in 0..51"),
                            ("-1", "-1 is not in 0..51")]:
        result = CliRunner().invoke(cli, [*verb, "--crf", value])
        assert result.exit_code == 2 and expected in result.output, (verb, value, result.output)
    for command in (cli.commands["run"], cli.commands["demo"]):
        [crf] = [p for p in command.params if p.name == "crf"]
        assert crf.type.convert("auto", None, None) == "auto" and crf.type.convert("7", None, None) == 7


def test_wait_says_what_it_waits_for(tmp_path):
    """--wait prints one line when it starts waiting for another run's lock, then takes the folder."""
    import threading

    from videdit.runfolder import RunLock

    said = []
    held = RunLock(tmp_path, poll_seconds=0.05).__enter__()
    threading.Timer(0.3, held.__exit__, (None, None, None)).start()
    with RunLock(tmp_path, wait=True, poll_seconds=0.05, say=said.append):
        pass
    assert len(said) == 1 and said[0].startswith(f"waiting for the run using {tmp_path} to finish (pid ")


def test_the_estimate_line_reads_well_when_every_stage_is_quick():
    from videdit.estimate import Estimate

    quick = Estimate()
    quick.seconds, quick.sample_bytes = {"align": 0.2, "encode": 0.4}, 300 * 1024
    line = quick.describe(8)
    assert "8 frames; about" in line and ", ;" not in line and "frames, ;" not in line
    assert "about 300 KB per frame" in line and "0 MB" not in line


def test_prompts_in_other_scripts_get_distinct_readable_names():
    from videdit.edits import slug

    names = [slug(p) for p in ("улыбающееся лицо", "грустное лицо", "笑顔", "悲しい顔", "😀")]
    assert len(set(names)) == len(names) and "edit" not in names
    assert names[0].startswith("улыбающееся-лицо-") and names[2].startswith("笑顔-")
    assert slug("a smiling face") == "a-smiling-face" and slug("A  Smiling_Face!") == "a-smiling-face"
