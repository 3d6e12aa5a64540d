"""The video pipeline: align -> encode -> tune -> edit -> smooth -> render -> composite, cached per stage.

`Pipeline` holds resolved settings and where the networks come from (`ModelSource`); `run()` takes one
video through the stages with a `StageRunner` (cached, atomic, resumable). A folder of videos, and where
they run, is `videdit.engines.run_many`. Stage modules do the work; this module only wires them.
"""
from __future__ import annotations

import dataclasses
import errno
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from videdit import presets
from videdit import weights as W
from videdit.errors import VideditError
from videdit.fileio import atomic_path, atomic_write_text
from videdit import records
from videdit.edits import edit_strings
from videdit.models import ModelSource, PretrainedModels, StandInModels  # noqa: F401  (part of the pipeline's API)
from videdit.records import STAGE_ORDER, VideoResult
from videdit.runner import MANIFEST, Stage, StageLog, StageRunner




# --------------------------------------------------------------------------------------------------
# The pipeline


@dataclass
class EditOptions:
    """The [edit] section (see videdit.edits): `edits` as on the command line (age, path.npy, text:PROMPT,
    s:KEY:CHANNEL), `direction` one more InterFaceGAN edit (the short form), `strengths` for W+ and channel
    edits, `alpha`/`beta` for text edits (empty/unset: the defaults table). clip, delta_i_c, s_stats: files
    for text edits ("" = the weights registry's)."""

    edits: list[str] = field(default_factory=list)
    direction: str = ""
    strengths: list[float] = field(default_factory=list)
    alpha: list[float] = field(default_factory=list)
    beta: float | None = None
    clip: str = ""
    delta_i_c: str = ""
    s_stats: str = ""

    def __post_init__(self):
        from videdit.edits import parse_edits

        self.specs = parse_edits(edit_strings(dataclasses.asdict(self)), self.strengths, self.alpha, self.beta)


@dataclass
class FacesOptions:
    """[faces]: whom to edit.

    select "" (default): follow one face through the video with one box, as the published code does
    (smoothing and fill-in still stop at cuts). "main" (the person present in the most frames), "all" or
    labels "p1,p3": every face is tracked within each shot and labelled by identity across shots
    (`videdit faces` lists them); each chosen (person, shot) track gets its own align, encode, tune,
    edit, smooth and render in RUN/tracks/<id>/ (tuning per track: one fixed crop box and one lighting
    per shot), and composite pastes them all. Tracks shorter than min_track_frames pass through unedited.
    """

    select: str = ""
    min_track_frames: int = 10
    landmarks: str = "dlib"
    full_search_every: int = 1


@dataclass
class RunOptions:
    """Run-wide keys, at the top of a preset (outside any section; `--set precision=fp16` or the flag).

    precision: how the generator runs (videdit.models): fp32 (default), tf32 or fp16 (NVIDIA's mixed
    precision); CUDA only, so on the CPU tf32 and fp16 run fp32 with one warning.
    """

    precision: str = "fp32"


RUN_KEYS = tuple(f.name for f in dataclasses.fields(RunOptions))

# Preset section -> (module, settings class, keys the section may hold that the pipeline itself consumes).
# The tune section's class depends on the tuner (see Pipeline._tune_section).
_SECTIONS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "align": ("videdit.stages.align", "AlignSettings", {}),
    "encode": ("videdit.stages.encode", "EncodeSettings", {"encoder": str, "generator": str}),
    "hyperstyle": ("videdit.tuning.hyperstyle", "HyperStyleSettings", {}),
    "local_tweak": ("videdit.tuning.local_tweak", "LocalTweakSettings", {}),
    "edit": ("videdit.pipeline", "EditOptions", {}),
    "faces": ("videdit.pipeline", "FacesOptions", {}),
    "stitch": ("videdit.tuning.stitch", "StitchSettings", {"enabled": bool}),
    "smooth": ("videdit.temporal", "SmoothSettings", {}),
    "render": ("videdit.stages.render", "RenderSettings", {}),
    "composite": ("videdit.stages.composite", "CompositeSettings", {}),
}
_TUNE_SECTION = ("videdit.tuning.pti", "TuneSettings", {"tuner": str})


def _settings_class(module: str, name: str):
    import importlib

    return getattr(importlib.import_module(module), name)


class Pipeline:
    def __init__(self, settings: dict[str, Any], *, weights_dir: Path | None = None, device: str = "auto",
                 quiet: bool = False, models: ModelSource | None = None, echo: Callable[[str], None] | None = None,
                 verify: bool = False, wait: bool = False, estimate_time: bool = True, stream=None):
        self.settings = settings
        self.estimate_time = estimate_time  # probe the networks once and print an estimate before the work
        self.stream = stream  # where progress goes (default stderr)
        self.verify = verify  # re-hash every cached output (frames included) before trusting it
        self.wait = wait  # wait for a run folder another run holds instead of failing
        self.weights_dir = W.resolve_weights_dir(weights_dir)
        self.device_request = device
        self.quiet = quiet
        self.models = models or PretrainedModels(self.weights_dir, settings)
        # Every section checked now, whatever stages a run reaches: a bad value fails before any work.
        from videdit.settings import resolve_section

        self.run_options = resolve_section(RunOptions, {k: v for k, v in settings.items() if k in RUN_KEYS}, "")
        self.sections = self._resolve_sections()
        self.echo = echo or (lambda s: print(s, file=sys.stderr))
        self._loaded: dict[str, Any] = {}

    @classmethod
    def from_preset(cls, preset: str = "default", overrides: dict[str, Any] | None = None, **kwargs) -> "Pipeline":
        """overrides: 'SECTION.KEY' or a run-wide key ('precision') -> value; None values are ignored."""
        overrides = dict(overrides or {})
        run_wide = {k: overrides.pop(k) for k in list(overrides) if "." not in k}
        unknown = sorted(set(run_wide) - set(RUN_KEYS))
        if unknown:
            raise VideditError(f"bad setting {unknown[0]!r}: expected SECTION.KEY or a run-wide key ({', '.join(RUN_KEYS)})")
        settings = presets.apply_overrides(presets.load_preset(preset), overrides)
        settings.update({k: v for k, v in run_wide.items() if v is not None})
        return cls(settings, **kwargs)

    # ---- checks before any work

    def _resolve_sections(self) -> dict[str, Any]:
        from videdit.settings import resolve_section

        resolved = {}
        table = dict(_SECTIONS, tune=_TUNE_SECTION)
        for section in sorted(table, key=presets.STAGE_SECTIONS.index):
            module, cls_name, extra = table[section]
            resolved[section] = resolve_section(_settings_class(module, cls_name), self.settings.get(section, {}),
                                                section, extra_keys=extra)
        return resolved

    def resolved_settings(self) -> dict[str, Any]:
        """Every option of every section, defaults included (what RUN/settings.toml records)."""
        from videdit.settings import as_dict

        top = {k: v for k, v in self.settings.items() if not isinstance(v, dict)}
        top.update(as_dict(self.run_options))  # the default too, when the preset leaves it out
        sections = {}
        for section, obj in self.sections.items():
            extra = {k: v for k, v in self.settings.get(section, {}).items()
                     if k in dict(_SECTIONS, tune=_TUNE_SECTION)[section][2]}
            sections[section] = dict(as_dict(obj), **extra)
        for section, values in self.settings.items():  # sections without a class of their own (stitch, for now)
            if isinstance(values, dict) and section not in sections:
                sections[section] = dict(values)
        return dict(top, models=self.models.name, **sections)

    def check_weights(self, until: str | None = None) -> None:
        stages = STAGE_ORDER[: STAGE_ORDER.index(until) + 1] if until else STAGE_ORDER
        names = self.models.required_weights(self.settings, stages)
        W.require(names, self.weights_dir)  # raises one MissingWeightsError listing every missing file

    # ---- helpers

    def _say(self, text: str) -> None:
        if not self.quiet:
            self.echo(text)

    @property
    def device(self) -> str:
        if "device" not in self._loaded:
            from videdit.device import resolve_device

            self._loaded["device"] = str(resolve_device(self.device_request))
        return self._loaded["device"]

    @property
    def precision(self) -> str:
        """The precision this run uses: the setting, or fp32 where it cannot run (said once, as a warning)."""
        if "precision" not in self._loaded:
            from videdit.models import run_precision

            self._loaded["precision"] = run_precision(self.run_options.precision, self.device)
        return self._loaded["precision"]

    def with_precision(self, G):
        """G set to run at this run's precision: the one place the setting reaches a generator."""
        from videdit.models import apply_precision

        return apply_precision(G, self.precision)

    def generator(self):
        if "generator" not in self._loaded:
            self._loaded["generator"] = self.with_precision(self.models.load_generator(self.device))
        return self._loaded["generator"]

    def encoder(self):
        if "encoder" not in self._loaded:
            self._loaded["encoder"] = self.models.load_encoder(self.device)
        return self._loaded["encoder"]

    def edit_keys(self) -> list[tuple[str, float]]:
        """[(key, strength)]: key names the output; ('recon', 0.0) is always rendered first."""
        return [("recon", 0.0)] + [k for spec in self.sections["edit"].specs for k in spec.keys()]

    # ---- one video

    def stages_for(self, video: Path, run_dir: Path, until: str | None = None) -> list[Stage]:
        """The stages of one video, in order, up to `until`. Stage modules are imported only when used."""
        last = STAGE_ORDER.index(until) if until else len(STAGE_ORDER) - 1
        ctx = _VideoContext(self, Path(video), Path(run_dir))
        return [getattr(ctx, f"stage_{name}")() for name in self.active_stages() if name in STAGE_ORDER[: last + 1]]

    def active_stages(self) -> tuple[str, ...]:
        """STAGE_ORDER less the optional stages these settings leave out (stitch unless stitch.enabled)."""
        stitch = bool(self.settings.get("stitch", {}).get("enabled", False))
        return tuple(name for name in STAGE_ORDER if name != "stitch" or stitch)

    def default_run_dir(self, video: Path) -> Path:
        return video.with_name(video.name + ".videdit")

    def run(self, video: Path, out: Path | None = None, *, until: str | None = None, from_stage: str | None = None,
            force: bool | set[str] = False, wait: bool | None = None) -> VideoResult:
        """One video through the stages. Never raises for a failure of this video: the result says
        `failed` with one line, and anything unexpected leaves its traceback in RUN/log.txt."""
        from videdit.runfolder import RunLock, prepare_run_dir

        video = Path(video)
        run_dir = Path(out) if out else self.default_run_dir(video)
        result = VideoResult(video, run_dir)
        t0 = time.perf_counter()
        log = StageLog(run_dir / "log.txt")
        try:
            from videdit.io.probe import probe_video

            info = probe_video(video)  # fails fast on a bad file, before any work
            result.frames = info.n_frames
            prepare_run_dir(run_dir)
            with RunLock(run_dir, wait=self.wait if wait is None else wait):
                self._run_stages(video, run_dir, log, result, until, from_stage, force)
        except VideditError as exc:
            result.status, result.error = "failed", str(exc)
            log.failure(exc)
        except OSError as exc:
            result.status = "failed"
            if exc.errno == errno.ENOSPC:
                result.error = f"disk full while writing {exc.filename or run_dir}; free space and rerun: finished stages are kept"
            else:
                result.error = f"{type(exc).__name__}: {exc} (traceback in {run_dir / 'log.txt'})"
            log.failure(exc, with_traceback=True)
        except Exception as exc:  # not videdit's own: one line here, the whole story in the run's log
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            result.status = "failed"
            result.error = f"internal error {type(exc).__name__}{': ' + first if first else ''} (traceback in {run_dir / 'log.txt'})"
            log.failure(exc, with_traceback=True)
        result.seconds = time.perf_counter() - t0
        return result

    def _run_stages(self, video: Path, run_dir: Path, log: StageLog, result: VideoResult, until: str | None,
                    from_stage: str | None, force: bool | set[str]) -> None:
        from videdit.models import tf32_switches
        from videdit.progress import Reporter, format_duration, reporting
        from videdit.runlog import environment_line
        from videdit.runner import canonical_json, digest_text

        settings = self.resolved_settings()
        settings_text = presets.to_toml(settings)
        settings_path = run_dir / "settings.toml"
        if not settings_path.exists() or settings_path.read_text() != settings_text:
            atomic_write_text(settings_path, settings_text)
        forced: bool | set[str] = force
        if from_stage:
            forced = set(STAGE_ORDER[STAGE_ORDER.index(from_stage):])
        reporter = Reporter(quiet=self.quiet, stream=self.stream)
        runner = StageRunner(run_dir, log, force=forced, verify=self.verify, warn=reporter.say)
        log.handler.echo = None if self.quiet else reporter.say
        log.write("run", "start", f"{video} -> {run_dir}; {environment_line(self.device)}; "
                                  f"settings {digest_text(canonical_json(settings))[:16]}")
        with log.capture(), reporting(reporter), tf32_switches(self.precision):
            # Whom to edit is settled first: a person who is not there is one line, before any estimate or work.
            chosen = self.chosen_tracks(video, run_dir) if self.sections["faces"].select else None
            reporter.say(f"{video.name} -> {run_dir}")
            stages = self.stages_for(video, run_dir, until)
            # Stages already complete in the folder are most likely cached: they cost nothing, and no network
            # is loaded or probed for them (a rerun of a finished video stays quick).
            pending = [s.name for s in stages if not (run_dir / s.name / MANIFEST).is_file()]
            estimates = self.estimate(result.frames or 0, pending) if self.estimate_time and pending else {}
            estimates = {s.name: estimates.get(s.name, 0.0) for s in stages} if estimates else {}
            reporter.plan([s.name for s in stages], estimates)
            if estimates:
                total = sum(estimates.values())
                reporter.say(f"estimate ({self._estimate_note}): {result.frames} frames, "
                             + ", ".join(f"{k} ~{format_duration(v)}" for k, v in estimates.items() if v >= 1)
                             + f"; about {format_duration(total)} if nothing is cached"
                             + (f"; memory about {_size(self._sample_bytes)} per frame of a render batch, "
                                f"PTI about 3x that per sample" if self._sample_bytes else ""))
            if self.sections["faces"].select:
                self._run_tracks(video, run_dir, log, result, until, forced, reporter, chosen)
            else:
                for stage in stages:
                    outcome = runner.run(stage)
                    result.stages[stage.name] = outcome.status
            if until is None or STAGE_ORDER.index(until) >= STAGE_ORDER.index("composite"):
                result.outputs = self._publish(video, run_dir)
        align_record = records.RunFolder(run_dir).align / records.TRANSFORMS
        if align_record.is_file():  # frames actually read (the probe's count is the container's estimate)
            result.frames = records.AlignRecord.load(align_record).n_frames
        log.write("run", "done", ", ".join(f"{k} {v}" for k, v in result.stages.items()))
        if result.outputs:
            reporter.say("outputs:\n" + "\n".join(f"  {p}" for p in result.outputs)
                         + f"\nnext: videdit eval {run_dir}")

    # ---- several faces: one sub-run per chosen track, one composite

    def face_tracks(self, video: Path, run_dir: Path):
        """The video's shots and face tracks (RUN/tracks.json), found once and reused while the video and the
        tracking settings are the same."""
        from videdit.face.tracks import FaceTracks, TrackSettings, find_face_tracks
        from videdit.runner import DigestCache, canonical_json, digest_text

        opts = self.sections["faces"]
        key = digest_text(canonical_json({"video": DigestCache(run_dir / ".digests.json").file_digest(video),
                                          "min_track_frames": opts.min_track_frames, "landmarks": opts.landmarks,
                                          "full_search_every": opts.full_search_every}))
        key_path = run_dir / "tracks.key"
        if key_path.is_file() and key_path.read_text() == key and (run_dir / "tracks.json").is_file():
            return FaceTracks.load(run_dir)
        found = find_face_tracks(video, landmarks=opts.landmarks, track_settings=TrackSettings(
            min_track_frames=opts.min_track_frames, full_search_every=opts.full_search_every))
        found.save(run_dir)
        atomic_write_text(key_path, key)
        return FaceTracks.load(run_dir)  # what later runs will read, so their cache keys agree

    def chosen_tracks(self, video: Path, run_dir: Path) -> list:
        """The face tracks `[faces] select` asks for (long enough to edit); one line when there are none."""
        from videdit.errors import InputError
        from videdit.face.tracks import select_people

        tracks = self.face_tracks(video, run_dir)
        people = select_people(tracks, self.sections["faces"].select)
        chosen = tracks.editable(people)
        if not chosen:
            raise InputError(f"{video}: {', '.join(people)} {'has' if len(people) == 1 else 'have'} no track of at least "
                             f"{tracks.min_track_frames} frames; nothing to edit (see `videdit faces {video}`)")
        return chosen

    def _run_tracks(self, video: Path, run_dir: Path, log: StageLog, result: VideoResult, until: str | None,
                    forced: bool | set[str], reporter, chosen: list) -> None:
        from videdit.stages import composite as comp

        last = STAGE_ORDER.index(until) if until else len(STAGE_ORDER) - 1
        names = [n for n in self.active_stages() if n != "composite" and STAGE_ORDER.index(n) <= last]
        layers = []
        for track in chosen:
            track_dir = run_dir / track.dir
            reporter.say(f"track {track.id}: {track.person}, frames {track.start}-{track.end - 1}")
            ctx = _VideoContext(self, video, track_dir, track=track)
            runner = StageRunner(track_dir, log, force=forced, verify=self.verify, warn=reporter.say)
            for name in names:
                result.stages[f"{track.id}/{name}"] = runner.run(getattr(ctx, f"stage_{name}")()).status
            layers.append(comp.FaceLayer(track_dir / "align", track_dir / "render", track.start))
        if STAGE_ORDER.index("composite") > last:
            return
        settings = self.sections["composite"]
        keys = [k for k, _ in self.edit_keys()]
        inputs: dict[str, Any] = {"video": video}
        for track, layer in zip(chosen, layers):
            inputs[f"{track.id}/align"], inputs[f"{track.id}/render"] = layer.align_dir, layer.render_dir
        stage = Stage("composite", lambda work: comp.run_composite_layers(video, layers, keys, work, settings),
                      dict(dataclasses.asdict(settings), tracks=[t.id for t in chosen]), inputs)
        result.stages["composite"] = StageRunner(run_dir, log, force=forced, verify=self.verify,
                                                 warn=reporter.say).run(stage).status

    # ---- estimate before long work

    _estimate_note = "rough, from one probe pass per network on this device"
    _sample_bytes = 0  # peak memory of the probe synthesis pass (set by estimate)

    def estimate(self, n_frames: int, stages: list[str]) -> dict[str, float]:
        """Expected seconds per stage: passes per frame (or per step) times one pass timed here.

        Rough by design: one probe pass of the generator and of the encoder at batch 1 (after a warm-up
        call), a fixed per-frame cost for align and composite (decode, landmarks, PNGs), PTI's measured
        3.3 forward-equivalents per sample-step. Cached stages cost nothing; the reporter learns the
        true scale from the stages that finish.
        """
        import torch

        needs_networks = bool(set(stages) & {"encode", "tune", "stitch", "render"})
        t_syn = t_enc = 0.0
        if needs_networks and n_frames:
            G = self.generator()
            ws = G.mapping.w_avg.detach().reshape(1, 1, -1).repeat(1, G.num_ws, 1).to(self.device)
            with torch.no_grad():
                G.synthesis(ws)  # warm-up (first calls allocate and pick kernels)
                from videdit.memory import measure_peak

                t0 = time.perf_counter()
                self._sample_bytes = measure_peak(lambda: G.synthesis(ws), self.device)
                t_syn = time.perf_counter() - t0
                if "encode" in stages:
                    encoder, _ = self.encoder()
                    x = torch.zeros(1, 6, 256, 256, device=self.device)
                    encoder(x)
                    t0 = time.perf_counter()
                    encoder(x)
                    t_enc = time.perf_counter() - t0
        sec = self.sections
        keys = len(self.edit_keys())
        per_stage = {
            "align": 0.15 * n_frames,
            "encode": n_frames * sec["encode"].n_iters * (t_enc + t_syn),
            "tune": (0.0 if self.settings.get("tune", {}).get("tuner", "pti") == "none"
                     else sec["tune"].steps * sec["tune"].batch_size * 3.3 * t_syn),
            "edit": 0.0,
            "smooth": 0.0,
            "stitch": 100 * 3.3 * t_syn,
            "render": n_frames * keys * t_syn,
            "composite": 0.05 * n_frames * keys,
        }
        return {name: per_stage.get(name, 0.0) for name in stages}

    def _publish(self, video: Path, run_dir: Path) -> list[Path]:
        """Final full-frame videos at the top of the run folder: NAME.EDIT.mp4 (edits first), NAME.recon.mp4."""
        import os
        import shutil

        outputs = []
        keys = [k for k, _ in self.edit_keys()]
        for key in [k for k in keys if k != "recon"] + ["recon"]:
            src = records.RunFolder(run_dir).composite_video(key)
            dst = run_dir / f"{video.stem}.{key}.mp4"
            if src.exists():
                with atomic_path(dst, fsync=False) as tmp:
                    try:
                        os.link(src, tmp)  # no copy of a large file where a hard link will do
                    except OSError:
                        shutil.copyfile(src, tmp)
                outputs.append(dst)
        return outputs


class _VideoContext:
    """Builds the Stage objects of one video: each stage's settings, cache key inputs and work function."""

    def __init__(self, pipe: Pipeline, video: Path, run_dir: Path, track=None):
        self.pipe, self.video, self.run_dir = pipe, video, run_dir
        self.track = track  # a videdit.face.tracks.FaceTrack: this context aligns and renders that track only
        self.s = pipe.settings
        self.align_dir, self.encode_dir, self.tune_dir = run_dir / "align", run_dir / "encode", run_dir / "tune"
        self.edit_dir, self.smooth_dir, self.render_dir = run_dir / "edit", run_dir / "smooth", run_dir / "render"
        self.keys = pipe.edit_keys()

    def _with_precision(self, params: dict[str, Any]) -> dict[str, Any]:
        """A generator stage's cache params with the run's precision when it is not fp32 (fp32 keys stay as
        they were before the setting existed, so earlier run folders remain valid)."""
        precision = self.pipe.precision
        return params if precision == "fp32" else dict(params, precision=precision)

    def _render_generator(self, path: Path):
        """What run_render gets for a tuned generator file: the path (render loads it; float32 layers), or for
        an fp16 run the generator loaded here at the run's precision."""
        if self.pipe.precision != "fp16":
            return path
        from videdit.checkpoints import load_generator

        return self.pipe.with_precision(load_generator(path, device=self.pipe.device))

    def _settings(self, section: str, runtime: dict[str, Any] | None = None):
        """The section's resolved settings (checked when the pipeline was made), with runtime fields set."""
        obj = self.pipe.sections[section]
        names = {f.name for f in dataclasses.fields(obj)}
        return dataclasses.replace(obj, **{k: v for k, v in (runtime or {}).items() if k in names})

    def stage_align(self) -> Stage:
        from videdit.stages import align as mod

        runtime = {"device": self.pipe.device_request}
        if "aligned_size" not in self.s.get("align", {}):  # the aligned crops are the encoder's input
            runtime["aligned_size"] = self._settings("encode").input_size
        settings = self._settings("align", runtime)

        track = None
        if self.track is not None:
            t = self.track
            track = mod.TrackInput(t.start, t.end, t.landmarks, t.detected)

        def fn(work: Path):
            res = mod.run_align(self.video, work, settings, track=track)
            self.pipe._say(f"  align: {res.n_frames} frames, face in {res.n_faces_found}, landmarks by {res.backend_used}")

        params = _drop(dataclasses.asdict(settings), "device", "png_compression")  # lossless either way
        if settings.encoder_input == "direct":  # how run folders made before the setting were cut: they stay cached
            del params["encoder_input"]
        if track is not None:  # the track's frames and landmarks decide the crops
            from videdit.runner import digest_text

            params["track"] = [track.start, track.end, digest_text(track.landmarks.tobytes().hex() + track.detected.tobytes().hex())]
        return Stage("align", fn, params, {"video": self.video})

    def stage_encode(self) -> Stage:
        from videdit.stages import encode as mod

        settings = self._settings("encode", {"device": self.pipe.device_request})

        def fn(work: Path):
            enc, latent_avg = self.pipe.encoder()
            mod.run_encode(self.align_dir, work, enc, self.pipe.generator(), latent_avg, settings)

        models = self.pipe.models
        return Stage("encode", fn, self._with_precision(_drop(dataclasses.asdict(settings), "device", "batch_size", "fit_memory")),
                     {"align": self.align_dir, "encoder": models.encoder_identity(), "generator": models.generator_identity()})

    def stage_tune(self) -> Stage:
        from videdit.stages import tune as mod
        from videdit.tuning import get_tuner

        tuner_name = self.s.get("tune", {}).get("tuner", "pti")
        tuner = get_tuner(tuner_name)  # one line naming the tuners for an unknown name
        runtime = {"device": self.pipe.device_request, "progress": not self.pipe.quiet, "weights_dir": str(self.pipe.weights_dir)}
        settings = self._settings(tuner.section, runtime)
        settings = tuner.with_generator_file(settings, getattr(self.pipe.models, "generator_path", None))

        def fn(work: Path):
            mod.run_tune(self.align_dir, self.encode_dir / "latents.npy", self.pipe.generator(), work, settings,
                         tuner=tuner_name)

        # Settings that change speed or display, not the result, stay out of the cache key; files a
        # tuner reads (hypernetwork, discriminator) are digested by content.
        params, files = mod.tune_stage_params(tuner_name, settings)
        params = self._with_precision(params)
        inputs = {"align": self.align_dir, "encode": self.encode_dir, "generator": self.pipe.models.generator_identity()}
        return Stage("tune", fn, params, dict(inputs, **files))

    def stage_edit(self) -> Stage:
        from videdit.stages import edit as mod

        options = self.pipe.sections["edit"]
        specs = options.specs
        models = self.pipe.models
        text_files = {key: Path(getattr(options, key)) for key in ("clip", "delta_i_c", "s_stats") if getattr(options, key)}

        def fn(work: Path):
            import numpy as np

            w_edits, s_edits = [], []
            widths = self.pipe.generator().synthesis.style_widths() if any(s.in_stylespace for s in specs) else {}
            for spec in specs:
                if spec.kind == "w":
                    direction = models.edit_direction(spec.target)[0]
                    w_edits += [(key, strength, direction) for key, strength in spec.keys()]
                elif spec.kind == "channel":
                    from videdit.stylespace import parse_channel

                    ref = parse_channel(spec.target, widths)
                    for key, strength in spec.keys():
                        offset = {k: np.zeros(w, np.float32) for k, w in widths.items()}
                        offset[ref.key][ref.channel] = strength
                        s_edits.append((key, offset))
                else:
                    from videdit.styleclip import text_edit_direction

                    direction = text_edit_direction(
                        spec.target, beta=spec.beta, synthesis=self.pipe.generator().synthesis,
                        weights_dir=self.pipe.weights_dir, clip_path=text_files.get("clip"),
                        delta_i_c_path=text_files.get("delta_i_c"), s_stats_path=text_files.get("s_stats"))
                    for key, alpha in spec.keys():
                        s_edits.append((key, {k: alpha * v.reshape(-1) for k, v in direction.items()}))
            mod.write_edits(records.RunFolder(self.run_dir).latents, work, w_edits, s_edits)

        identities = {f"direction:{s.target}": models.edit_direction(s.target)[1] for s in specs if s.kind == "w"}
        inputs: dict[str, Any] = {"encode": self.encode_dir, **identities}
        if any(s.in_stylespace for s in specs):
            inputs["generator"] = models.generator_identity()
        if any(s.kind == "text" for s in specs):
            for name, key in (("clip_vit_b32", "clip"), ("styleclip_delta_i_c", "delta_i_c"), ("styleclip_s_stats", "s_stats")):
                inputs[key] = text_files.get(key) or W.require([name], self.pipe.weights_dir)[name]
        params = {"edits": [dataclasses.asdict(s) for s in specs], "keys": self.keys}
        if "generator" in inputs:  # StyleSpace and text edits run the generator
            params = self._with_precision(params)
        return Stage("edit", fn, params, inputs)

    def stage_smooth(self) -> Stage:
        from videdit.stages import smooth as mod

        settings = self._settings("smooth")

        def fn(work: Path):
            # W+ latents by key; the S edits' offsets (styles_*.safetensors) in the edit folder come along
            segments = records.AlignRecord.load(self.align_dir).segments()  # shots: no window crosses a cut
            mod.run_smooth({k: self.edit_dir / records.latents_name(k) for k in self._w_keys()},
                           self.align_dir / records.TRANSFORMS, work, settings, segments)

        return Stage("smooth", fn, dataclasses.asdict(settings), {"edit": self.edit_dir, "align": self.align_dir})

    def _w_keys(self) -> list[str]:
        """The keys rendered from W+ latents (the reconstruction and InterFaceGAN edits)."""
        return ["recon"] + [k for s in self.pipe.sections["edit"].specs if s.kind == "w" for k, _ in s.keys()]

    def stage_stitch(self) -> Stage:
        from videdit.stages import stitch as mod

        settings = self._settings("stitch", {"device": self.pipe.device, "progress": not self.pipe.quiet})

        def fn(work: Path):
            mod.run_stitch(self.align_dir, self.smooth_dir, self.tune_dir, work, settings, self._w_keys())

        return Stage("stitch", fn, dict(mod.stitch_cache_params(settings), keys=self._w_keys()),
                     {"align": self.align_dir, "smooth": self.smooth_dir, "tune": self.tune_dir})

    def stage_render(self) -> Stage:
        from videdit.stages import render as mod

        settings = self._settings("render")
        stitched = "stitch" in self.pipe.active_stages()

        def fn(work: Path):
            from videdit.records import OFFSETS

            keys = [k for k, _ in self.keys]
            if stitched:  # each W+ key with its own stitched generator (no HyperStyle offsets: the stitch tuned past them)
                from videdit.stages.stitch import stitched_generator_name

                by_key = {k: self.run_dir / "stitch" / stitched_generator_name(k) for k in self._w_keys()}
                for key in keys:
                    generator = self._render_generator(by_key.get(key, self.tune_dir / "generator.safetensors"))
                    mod.run_render(generator, self.smooth_dir, [key], work,
                                   dataclasses.replace(settings, side_by_side=False), source_video=self.video,
                                   align_dir=self.align_dir, device=self.pipe.device)
                info = records.RenderInfo.load(work)
                info.keys = keys  # one render.json naming every key (each call wrote its own)
                info.save(work)
                return
            offsets = self.tune_dir / OFFSETS  # the HyperStyle tuner's per-frame offsets
            mod.run_render(self._render_generator(self.tune_dir / "generator.safetensors"), self.smooth_dir, keys, work, settings,
                           source_video=self.video, align_dir=self.align_dir,
                           offsets=offsets if offsets.is_file() else None, device=self.pipe.device)

        inputs = {"tune": self.tune_dir, "smooth": self.smooth_dir, "video": self.video}
        if stitched:
            inputs["stitch"] = self.run_dir / "stitch"
        params = dict(_drop(dataclasses.asdict(settings), "batch_size", "fit_memory"), stitched=stitched)
        return Stage("render", fn, self._with_precision(params), inputs)

    def stage_composite(self) -> Stage:
        from videdit.stages import composite as mod

        settings = self._settings("composite")

        def fn(work: Path):
            mod.run_composite(self.video, self.align_dir, self.render_dir, [k for k, _ in self.keys], work, settings,
                              segments=records.AlignRecord.load(self.align_dir).segments())

        return Stage("composite", fn, dataclasses.asdict(settings),
                     {"render": self.render_dir, "align": self.align_dir, "video": self.video})


def _size(n_bytes: float) -> str:
    return f"{n_bytes / 2**30:.1f} GB" if n_bytes >= 2**30 else f"{n_bytes / 2**20:.0f} MB"


def _drop(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}
