"""Stage wiring: the Stage objects of one video (or one face track of it) for the pipeline to run.

For every stage, `StageWiring` says which settings object it gets (the resolved section, with the runtime
fields set), what goes into its cache key (the settings that change the result, the input folders and
files, the networks' identities) and what it does in its work folder (the stage module's function with
its inputs). With `tracks_composite_stage`, the one composite of several face tracks. Besides the pipeline
and the engines, this is the only module that may import stage modules (tests/test_architecture.py).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from videdit import records
from videdit import weights as W
from videdit.edits import single_edits
from videdit.layout import partial_name
from videdit.runner import Stage, digest_text
from videdit.settings import TEXT_EDIT_FILES
from videdit.shards import ShardOptions, Sharding
from videdit.strengths import FrameTimes, strength_json

# Each stage module (and the checkpoints and tuners, which load torch) is imported in the method that wires
# its stage: a run that stops after align loads no network code (start-up, benchmarks/startup.py).


class StageWiring:
    """The stages of one video into `run_dir`: stage_<name>() -> Stage, for each name of STAGE_ORDER.

    pipe: the videdit.pipeline.Pipeline (resolved settings, models, device, precision) the stages run for.
    """

    def __init__(self, pipe: Any, video: Path, run_dir: Path, track=None, video_frames: int | None = None,
                 shards: ShardOptions | None = None):
        self.pipe, self.video, self.run_dir = pipe, video, run_dir
        self.track = track  # a videdit.face.tracks.FaceTrack: align and render that track only
        self.video_frames = video_frames  # with a track: the whole video's frame count (a strength ramp's `end`)
        self.shards = shards  # cut align's crops, encode, render and composite into frame ranges (videdit.shards)
        stage = records.RunFolder(run_dir).stage
        self.align_dir, self.encode_dir, self.tune_dir = stage("align"), stage("encode"), stage("tune")
        self.edit_dir, self.smooth_dir, self.stitch_dir = stage("edit"), stage("smooth"), stage("stitch")
        self.render_dir = stage("render")
        self.keys = pipe.edit_keys()

    def _with_precision(self, params: dict[str, Any]) -> dict[str, Any]:
        """A generator stage's cache params with the run's precision when it is not fp32 (fp32 keys stay as
        they were before the setting existed, so earlier run folders remain valid)."""
        precision = self.pipe.precision
        return params if precision == "fp32" else dict(params, precision=precision)

    def _load_at_precision(self, path: Path):
        from videdit.checkpoints import load_generator

        return self.pipe.with_precision(load_generator(path, device=self.pipe.device))

    def _render_generator(self, path: Path):
        """What run_render gets for a tuned generator file: the path (render loads it; float32 layers, eager), or
        for an fp16 or compiled run the generator loaded here at the run's settings."""
        plain = self.pipe.precision != "fp16" and not self.pipe.run_options.compile
        return path if plain else self._load_at_precision(path)

    def _settings(self, section: str, runtime: dict[str, Any] | None = None):
        """The section's resolved settings (checked when the pipeline was made), with runtime fields set."""
        obj = self.pipe.sections[section]
        names = {f.name for f in dataclasses.fields(obj)}
        return dataclasses.replace(obj, **{k: v for k, v in (runtime or {}).items() if k in names})

    def _sharding(self, part, merge, batch_size: int = 1) -> Sharding | None:
        """The frame ranges of a frame-wise stage when this run shards (one face only), each holding whole
        batches of `batch_size` frames, so every batch is the unsharded run's."""
        if self.shards is None or self.track is not None:
            return None
        shards = self.shards

        def plan():
            return shards.ranges(records.AlignRecord.load(self.align_dir).n_frames, batch_size)

        return Sharding(plan, part, merge)

    def w_keys(self) -> list[str]:
        """The keys rendered from W+ latents (the reconstruction and InterFaceGAN edits)."""
        return [records.RECONSTRUCTION_KEY] + [k for s in self.pipe.sections["edit"].specs if s.in_wplus
                                               for k, _ in s.keys()]

    def stage_align(self) -> Stage:
        from videdit.stages import align as align_stage

        settings = self._settings("align", {"device": self.pipe.device_request})
        track = None
        if self.track is not None:
            t = self.track
            track = align_stage.TrackInput(t.start, t.end, t.landmarks, t.detected)

        def said(res, after: str = "") -> None:
            self.pipe.say(f"  align: {res.n_frames} frames, face in {res.n_faces_found}, landmarks by {res.backend_used}"
                          + after)

        def fn(work: Path):
            said(align_stage.run_align(self.video, work, settings, track=track))

        params = _drop(dataclasses.asdict(settings), "device", "png_compression")  # lossless either way
        if settings.encoder_input == "direct":  # how run folders made before the setting were cut: they stay cached
            del params["encoder_input"]
        if track is not None:  # the track's frames and landmarks decide the crops
            params["track"] = [track.start, track.end,
                               digest_text(track.landmarks.tobytes().hex() + track.detected.tobytes().hex())]
        shards = None
        if self.shards is not None and track is None and align_stage.shardable(settings):
            # The landmark pass (with the shots, the fill-in and the preview) runs whole, when the stage plans its
            # parts; the crops are cut in the parts. A driver killed after that pass keeps it (same work folder).
            work = self.run_dir / partial_name("align")

            def plan():
                if not align_stage.landmark_pass_kept(work):
                    said(align_stage.run_align(self.video, work, settings, cut_crops=False), "; crops in parts")
                return self.shards.ranges(records.AlignRecord.load(work).n_frames)

            shards = Sharding(plan, lambda start, end, folder: align_stage.cut_crops_part(
                self.video, work, folder, settings, (start, end)), align_stage.merge_align_parts)
        return Stage("align", fn, params, {"video": self.video}, shards=shards)

    def stage_encode(self) -> Stage:
        from videdit.stages import encode as encode_stage

        settings = self._settings("encode", {"device": self.pipe.device_request})

        def fn(work: Path, frames: tuple[int, int] | None = None):
            enc, latent_avg = self.pipe.encoder()
            encode_stage.run_encode(self.align_dir, work, enc, self.pipe.generator(), latent_avg, settings, frames=frames)

        models = self.pipe.models
        params = _drop(dataclasses.asdict(settings), "device", "batch_size", "fit_memory")
        shards = None if settings.save_preview else self._sharding(  # the preview is one H.264 stream: not cut
            lambda start, end, folder: fn(folder, (start, end)), encode_stage.merge_encode_parts, settings.batch_size)
        return Stage("encode", fn, self._with_precision(params), {"align": self.align_dir, "encoder": models.encoder_identity(),
                                                                  "generator": models.generator_identity()}, shards=shards)

    def stage_tune(self) -> Stage:
        from videdit.stages import tune as tune_stage
        from videdit.tuning import get_tuner

        tuner_name = self.pipe.resolved.tuner
        tuner = get_tuner(tuner_name)
        runtime = {"device": self.pipe.device_request, "progress": not self.pipe.quiet, "weights_dir": str(self.pipe.weights_dir)}
        settings = self._settings(tuner.section, runtime)
        settings = tuner.with_generator_file(settings, getattr(self.pipe.models, "generator_path", None))

        def fn(work: Path):
            tune_stage.run_tune(self.align_dir, self.encode_dir / records.LATENTS, self.pipe.generator(), work,
                                settings, tuner=tuner_name)

        # Settings that change speed or display, not the result, stay out of the cache key; files a
        # tuner reads (hypernetwork, discriminator) are digested by content.
        params, files = tune_stage.tune_stage_params(tuner_name, settings)
        inputs = {"align": self.align_dir, "encode": self.encode_dir, "generator": self.pipe.models.generator_identity()}
        return Stage("tune", fn, self._with_precision(params), dict(inputs, **files))

    def stage_edit(self) -> Stage:
        from videdit.stages import edit as edit_stage

        options = self.pipe.sections["edit"]
        specs = options.specs
        single = single_edits(specs)
        models = self.pipe.models
        text_files = options.text_files()
        stylespace = any(s.in_stylespace for s in specs)
        ramps = any(s.has_ramp() for s in specs)
        person = self.track.person if self.track is not None else None

        def fn(work: Path):
            edit_stage.run_edit(self.encode_dir / records.LATENTS, work, specs,
                                direction=lambda target: models.edit_direction(target)[0],
                                synthesis=self.pipe.generator().synthesis if stylespace else None,
                                text_files=text_files, weights_dir=self.pipe.weights_dir,
                                times=self._frame_times() if ramps else None, person=person)

        identities = {f"direction:{s.target}": models.edit_direction(s.target)[1] for s in single if s.kind == "w"}
        inputs: dict[str, Any] = {"encode": self.encode_dir, **identities}
        if stylespace:
            inputs["generator"] = models.generator_identity()
        if ramps:  # a ramp's value at each frame comes from the frames' times
            inputs["align"] = self.align_dir
        if any(s.kind == "text" for s in single):
            for key, name in TEXT_EDIT_FILES.items():
                inputs[key] = Path(text_files[key]) if key in text_files else W.require([name], self.pipe.weights_dir)[name]
        params: dict[str, Any] = {"edits": [s.cache_params() for s in specs],
                                  "keys": [[k, strength_json(v)] for k, v in self.keys]}
        if any(s.people() for s in specs):  # whose latents these are decides which edits apply
            params["person"] = person
        if ramps:
            params["video_frames"] = self.video_frames
        if stylespace:  # StyleSpace and text edits run the generator
            params = self._with_precision(params)
        return Stage("edit", fn, params, inputs)

    def _frame_times(self) -> FrameTimes:
        """When each aligned frame is shown, from the video's first frame (the align record's timestamps)."""
        align = records.AlignRecord.load(self.align_dir)
        info = records.load_video_info(self.align_dir)
        first = self.track.start if self.track is not None else 0
        fps = float(info.fps) if info is not None and info.fps else 25.0
        if align.time_s is None:  # a record from before timestamps were kept: the nominal rate
            times, zero = (first + np.arange(align.n_frames, dtype=np.float64)) / fps, 0.0
        else:
            times = np.asarray(align.time_s, dtype=np.float64)
            zero = float(info.start_pts * info.time_base) if info is not None else float(times[0])
        last = self.video_frames - 1 if self.video_frames else None
        return FrameTimes(times - zero, first, last, fps)

    def stage_smooth(self) -> Stage:
        from videdit.stages import smooth as smooth_stage

        settings = self._settings("smooth")

        def fn(work: Path):
            # W+ latents by key; the S edits' offsets (styles_*.safetensors) in the edit folder come along
            segments = records.AlignRecord.load(self.align_dir).segments()  # shots: no window crosses a cut
            smooth_stage.run_smooth({k: self.edit_dir / records.latents_name(k) for k in self.w_keys()},
                                    self.align_dir / records.TRANSFORMS, work, settings, segments)

        return Stage("smooth", fn, dataclasses.asdict(settings), {"edit": self.edit_dir, "align": self.align_dir})

    def stage_stitch(self) -> Stage:
        from videdit.stages import stitch as stitch_stage

        settings = self._settings("stitch", {"device": self.pipe.device, "progress": not self.pipe.quiet})

        def fn(work: Path):
            stitch_stage.run_stitch(self.align_dir, self.smooth_dir, self.tune_dir, work, settings, self.w_keys())

        return Stage("stitch", fn, dict(stitch_stage.stitch_cache_params(settings), keys=self.w_keys()),
                     {"align": self.align_dir, "smooth": self.smooth_dir, "tune": self.tune_dir})

    def stage_render(self) -> Stage:
        from videdit.stages import render as render_stage

        settings = self._settings("render")
        stitched = "stitch" in self.pipe.active_stages()
        generator = self.tune_dir / records.GENERATOR
        where = dict(source_video=self.video, align_dir=self.align_dir, device=self.pipe.device)

        def fn(work: Path):
            keys = [k for k, _ in self.keys]
            if stitched:  # each W+ key with its own stitched generator (no HyperStyle offsets: the stitch tuned past them)
                files = {k: self.stitch_dir / records.stitched_generator_name(k) for k in self.w_keys()}
                load = self._load_at_precision if self.pipe.precision == "fp16" or self.pipe.run_options.compile else None
                render_stage.run_render_per_key({k: files.get(k, generator) for k in keys}, self.smooth_dir, work,
                                                settings, load_generator=load, **where)
                return
            render_unstitched(work)

        def render_unstitched(work: Path, frames: tuple[int, int] | None = None):
            offsets = self.tune_dir / records.OFFSETS  # the HyperStyle tuner's per-frame offsets
            render_stage.run_render(self._render_generator(generator), self.smooth_dir, [k for k, _ in self.keys], work,
                                    settings, offsets=offsets if offsets.is_file() else None, frames=frames, **where)

        inputs = {"tune": self.tune_dir, "smooth": self.smooth_dir, "video": self.video}
        if stitched:
            inputs["stitch"] = self.stitch_dir
        params = dict(_drop(dataclasses.asdict(settings), "batch_size", "fit_memory"), stitched=stitched)
        shards = None if stitched else self._sharding(  # stitched: a generator per key, rendered whole
            lambda start, end, folder: render_unstitched(folder, (start, end)),
            lambda folders, work: render_stage.merge_render_parts(folders, work, settings, **where), settings.batch_size)
        return Stage("render", fn, self._with_precision(params), inputs, shards=shards)

    def stage_composite(self) -> Stage:
        from videdit.stages import composite as composite_stage

        settings = self._settings("composite")

        keys = [k for k, _ in self.keys]

        def fn(work: Path, frames: tuple[int, int] | None = None):
            composite_stage.run_composite(self.video, self.align_dir, self.render_dir, keys, work, settings,
                                          segments=records.AlignRecord.load(self.align_dir).segments(), frames=frames)

        def merge(folders: list[Path], work: Path):
            composite_stage.merge_composite_parts(self.video, self.align_dir, self.render_dir, keys, folders, work,
                                                  settings, segments=records.AlignRecord.load(self.align_dir).segments())

        shards = self._sharding(lambda start, end, folder: fn(folder, (start, end)), merge)
        return Stage("composite", fn, dataclasses.asdict(settings),
                     {"render": self.render_dir, "align": self.align_dir, "video": self.video}, shards=shards)


def tracks_composite_stage(pipe: Any, video: Path, run_dir: Path, chosen: list) -> Stage:
    """The composite of several face tracks (each rendered in RUN/<track dir>/): every chosen track pasted,
    smaller faces first, into RUN/composite/."""
    from videdit.stages import composite as composite_stage

    settings = pipe.sections["composite"]
    keys = [k for k, _ in pipe.edit_keys()]
    layers = []
    inputs: dict[str, Any] = {"video": video}
    for track in chosen:
        folder = records.RunFolder(run_dir / track.dir)
        layers.append(composite_stage.FaceLayer(folder.align, folder.render, track.start))
        inputs[f"{track.id}/align"], inputs[f"{track.id}/render"] = folder.align, folder.render
    return Stage("composite", lambda work: composite_stage.run_composite_layers(video, layers, keys, work, settings),
                 dict(dataclasses.asdict(settings), tracks=[t.id for t in chosen]), inputs)


def _drop(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}
