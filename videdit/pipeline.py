"""The video pipeline: align -> encode -> tune -> edit -> smooth -> render -> composite, cached per stage.

`Pipeline` holds resolved settings and where the networks come from (`ModelSource`); `run()` takes one
video through the stages with a `StageRunner` (cached, atomic, resumable). A folder of videos, and where
they run, is `videdit.engines.run_many`. This module only orchestrates: the settings schema is
`videdit.settings`, each stage's wiring `videdit.wiring`, several faces `videdit.track_runs`, the up-front
estimate `videdit.estimate`, and the stage modules do the work.
"""
from __future__ import annotations

import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any, Callable

from videdit import layout, presets, records
from videdit import weights as W
from videdit.device import resolve_device
from videdit.edits import check_people
from videdit.errors import VideditError
from videdit.estimate import Estimate, estimate_run
from videdit.fileio import atomic_path, full_disk_line
from videdit.io.probe import probe_video
from videdit.models import (  # noqa: F401  (ModelSource, PretrainedModels, StandInModels: part of the pipeline's API)
    ModelSource,
    PretrainedModels,
    STAND_IN_PRESET,
    StandInModels,
    apply_compile,
    apply_precision,
    stand_in_overrides,
    run_precision,
    tf32_switches,
)
from videdit.preflight import check_encoder, check_generator_fit
from videdit.progress import Reporter, reporting
from videdit.records import STAGE_ORDER
from videdit.runfolder import RunLock, prepare_run_dir
from videdit.runlog import environment_line
from videdit.runner import MANIFEST, Stage, StageLog, StageRunner, VideoResult, canonical_json, digest_text
from videdit.settings import RUN_KEYS, EditOptions, FacesOptions, RunOptions, resolve_settings  # noqa: F401  (API)
from videdit.shards import PartExecutor, ShardOptions
from videdit.track_runs import (PlannedStage, TrackStageTasks, chosen_tracks, face_tracks, planned_stages, run_tracks,
                                side_by_side_stage)
from videdit.wiring import StageWiring


class Pipeline:
    def __init__(self, settings: dict[str, Any], *, weights_dir: Path | None = None, device: str = "auto",
                 quiet: bool = False, models: ModelSource | None = None, echo: Callable[[str], None] | None = None,
                 verify: bool = False, wait: bool = False, estimate_time: bool = True, stream=None,
                 views: bool = True, reporter: Callable[..., Reporter] = Reporter):
        self.settings = settings  # the preset as given (what a Ray worker rebuilds the pipeline from)
        # Every section checked and typed now, whatever stages a run reaches: a bad value fails before any work.
        self.resolved = resolve_settings(settings)
        self.sections = self.resolved.sections
        if not self.sections["faces"].select:  # an edit for one person (p1=age) needs the people found
            check_people(self.sections["edit"].specs, None)
        self.run_options = self.resolved.run
        self.estimate_time = estimate_time  # probe the networks once and print an estimate before the work
        self.stream = stream  # where progress goes (default stderr)
        self.reporter = reporter  # makes a run's Reporter (quiet=, stream=); a subclass feeds a UI (videdit.app)
        self.verify = verify  # re-hash every cached output (frames included) before trusting it
        self.wait = wait  # wait for a run folder another run holds instead of failing
        self.views = views  # write NAME.compare.mp4 and RUN/index.html with the outputs
        self.weights_dir = W.resolve_weights_dir(weights_dir)
        self.device_request = device
        self.quiet = quiet
        self.models = models or PretrainedModels(self.weights_dir, self.resolved.networks)
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
        if overrides.get("edit.edits") is not None:  # edits given replace the preset's, its short form included
            overrides.setdefault("edit.direction", "")
        settings = presets.apply_overrides(presets.load_preset(preset), overrides)
        settings.update({k: v for k, v in run_wide.items() if v is not None})
        return cls(settings, **kwargs)

    @classmethod
    def for_command(cls, preset: str | None = None, overrides: dict[str, Any] | None = None, *, stand_ins: bool = False,
                    **kwargs) -> "Pipeline":
        """The pipeline a command asks for: `preset` (default: "default"; with stand_ins, the stand-ins' own) with
        overrides. stand_ins: StandInModels (random weights, offline) instead of the released checkpoints, with the
        settings they need (crops at their size, tuning without LPIPS weights) over any preset."""
        if not stand_ins:
            return cls.from_preset(preset or "default", overrides, **kwargs)
        overrides = dict(overrides or {}, **stand_in_overrides())
        return cls.from_preset(preset or STAND_IN_PRESET, overrides, models=StandInModels(), **kwargs)

    def derive(self, overrides: dict[str, Any], **kwargs) -> "Pipeline":
        """This pipeline with some settings changed ('SECTION.KEY' -> value, None ignored) and the same networks:
        the ones already loaded are shared, not loaded again (the preview re-runs with another strength this way).
        kwargs: constructor arguments to change (quiet, estimate_time, views...)."""
        options = dict(weights_dir=self.weights_dir, device=self.device_request, quiet=self.quiet, models=self.models,
                       echo=self.echo, verify=self.verify, wait=self.wait, estimate_time=self.estimate_time,
                       stream=self.stream, views=self.views, reporter=self.reporter)
        other = Pipeline(presets.apply_overrides(self.settings, overrides), **dict(options, **kwargs))
        if other.run_options == self.run_options:  # same precision: the loaded networks fit as they are
            other._loaded = self._loaded
        return other

    # ---- checks before any work

    def resolved_settings(self) -> dict[str, Any]:
        """Every option of every section, defaults included (what RUN/settings.toml records)."""
        return self.resolved.as_dict(self.models.name)

    def recorded_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """What RUN/settings.toml says: the settings with the precision this run actually uses (fp32 on a CPU),
        and the one asked for beside it when they differ."""
        recorded = dict(settings, precision=self.precision)
        if self.precision != settings["precision"]:
            recorded["precision_requested"] = settings["precision"]
        return recorded

    def check_weights(self, until: str | None = None) -> None:
        stages = STAGE_ORDER[: STAGE_ORDER.index(until) + 1] if until else STAGE_ORDER
        names = self.models.required_weights(self.resolved, stages)
        W.require(names, self.weights_dir)  # raises one MissingWeightsError listing every missing file

    def check_before_work(self, info) -> None:
        """What needs the probed source or the generator's header (videdit.preflight): one line, no stage run."""
        check_encoder(self.resolved, info)
        check_generator_fit(self.resolved, self.models.generator_kwargs)

    # ---- what the stages share

    def say(self, text: str) -> None:
        if not self.quiet:
            self.echo(text)

    @property
    def device(self) -> str:
        if "device" not in self._loaded:
            self._loaded["device"] = str(resolve_device(self.device_request))
        return self._loaded["device"]

    @property
    def precision(self) -> str:
        """The precision this run uses: the setting, or fp32 where it cannot run (said once, as a warning)."""
        if "precision" not in self._loaded:
            self._loaded["precision"] = run_precision(self.run_options.precision, self.device)
        return self._loaded["precision"]

    def with_precision(self, G):
        """G set to run at this run's precision, and compiled if the run says so: the one place these
        run-wide settings reach a generator."""
        return apply_compile(apply_precision(G, self.precision), self.run_options.compile)

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
        return [(records.RECONSTRUCTION_KEY, 0.0)] + [k for spec in self.sections["edit"].specs for k in spec.keys()]

    # ---- one video

    def stages_for(self, video: Path, run_dir: Path, until: str | None = None,
                   shards: ShardOptions | None = None) -> list[Stage]:
        """The stages of one video, in order, up to `until`. Stage modules are imported only when used.
        shards: align's crops, encode, render and composite run as frame-range parts (videdit.shards)."""
        last = STAGE_ORDER.index(until) if until else len(STAGE_ORDER) - 1
        wiring = StageWiring(self, Path(video), Path(run_dir), shards=shards)
        return [getattr(wiring, f"stage_{name}")() for name in self.active_stages() if name in STAGE_ORDER[: last + 1]]

    def active_stages(self) -> tuple[str, ...]:
        """STAGE_ORDER less the optional stages these settings leave out (stitch unless stitch.enabled)."""
        return tuple(name for name in STAGE_ORDER if name != "stitch" or self.resolved.stitch)

    def default_run_dir(self, video: Path) -> Path:
        return video.with_name(layout.run_folder_name(video.name))

    def face_tracks(self, video: Path, run_dir: Path):
        """The video's shots and face tracks (RUN/tracks.json), found once (see videdit.track_runs)."""
        return face_tracks(Path(video), Path(run_dir), self.sections["faces"])

    def chosen_tracks(self, video: Path, run_dir: Path) -> list:
        """The face tracks `[faces] select` asks for; one line when there are none."""
        return chosen_tracks(Path(video), Path(run_dir), self.sections["faces"])

    def estimate(self, n_frames: int, stages: list[str], video: Path | None = None) -> Estimate:
        """Expected seconds per stage and memory per frame (see videdit.estimate); video: the source, whose
        first frame times align."""
        return estimate_run(self.resolved, n_frames, stages, len(self.edit_keys()), self.device_request, self.generator,
                            self.encoder, video, self.weights_dir)

    def run(self, video: Path, out: Path | None = None, *, until: str | None = None, from_stage: str | None = None,
            force: bool | set[str] = False, wait: bool | None = None, shards: ShardOptions | None = None,
            parts: PartExecutor | None = None, track_tasks: TrackStageTasks | None = None) -> VideoResult:
        """One video through the stages. Never raises for a failure of this video: the result says
        `failed` with one line, and anything unexpected leaves its traceback in RUN/log.txt.

        shards: run align's crops, encode, render and composite in frame ranges (the same outputs; finished ranges survive
        a kill); parts: where those ranges run (default: here, one after another; the Ray engine's).
        track_tasks: with several face tracks, where their tuning runs side by side (the Ray engine's; default:
        here, one track after another). The outputs are the same either way."""
        video = Path(video)
        run_dir = Path(out) if out else self.default_run_dir(video)
        result = VideoResult(video, run_dir)
        t0 = time.perf_counter()
        log_path = run_dir / layout.LOG
        log = StageLog(log_path)
        try:
            info = probe_video(video)  # fails fast on a bad file, before any work
            result.frames = info.n_frames
            self.check_before_work(info)
            prepare_run_dir(run_dir)
            with RunLock(run_dir, wait=self.wait if wait is None else wait, say=self.say):
                self._run_stages(video, run_dir, log, result, until, from_stage, force, shards, parts, track_tasks)
        except VideditError as exc:
            result.status, result.error = "failed", str(exc)
            log.failure(exc)
        except OSError as exc:
            result.status = "failed"
            result.error = full_disk_line(exc, run_dir) or f"{type(exc).__name__}: {exc} (traceback in {log_path})"
            log.failure(exc)
        except Exception as exc:  # not videdit's own: one line here, the whole story in the run's log
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            result.status = "failed"
            result.error = f"internal error {type(exc).__name__}{': ' + first if first else ''} (traceback in {log_path})"
            log.failure(exc)
        except KeyboardInterrupt as exc:  # Ctrl-C, or SIGTERM (videdit.errors.Terminated): logged, then stops the batch
            log.interrupted(exc)
            raise
        result.seconds = time.perf_counter() - t0
        return result

    def _run_stages(self, video: Path, run_dir: Path, log: StageLog, result: VideoResult, until: str | None,
                    from_stage: str | None, force: bool | set[str], shards: ShardOptions | None = None,
                    parts: PartExecutor | None = None, track_tasks: TrackStageTasks | None = None) -> None:
        settings = self.resolved_settings()
        forced: bool | set[str] = set(STAGE_ORDER[STAGE_ORDER.index(from_stage):]) if from_stage else force
        reporter = self.reporter(quiet=self.quiet, stream=self.stream)
        runner = StageRunner(run_dir, log, force=forced, verify=self.verify, warn=reporter.say, parts=parts)
        log.handler.echo = None if self.quiet else reporter.say
        # Only align runs without torch: a run that stops there neither resolves the device nor loads torch
        # (unless a precision other than fp32 was asked for: whether it can run is said once, whatever the stages).
        last_index = STAGE_ORDER.index(until) if until else len(STAGE_ORDER) - 1
        with_torch = (any(name != "align" for name in self.active_stages() if name in STAGE_ORDER[: last_index + 1])
                      or self.run_options.precision != "fp32")
        log.write("run", "start", f"{video} -> {run_dir}; "
                                  f"{environment_line(self.device if with_torch else self.device_request, with_torch)}; "
                                  f"settings {digest_text(canonical_json(settings))[:16]}")
        with log.capture(), reporting(reporter), tf32_switches(self.precision) if with_torch else nullcontext():
            # Inside the log's capture: choosing the precision may warn (fp16 asked for on a CPU).
            records.save_settings_text(run_dir, presets.to_toml(self.recorded_settings(settings)))
            # Whom to edit is settled first: a person who is not there is one line, before any estimate or work.
            chosen = self.chosen_tracks(video, run_dir) if self.sections["faces"].select else None
            if chosen is not None:
                check_people(self.sections["edit"].specs, sorted({t.person for t in chosen}),
                             records.TracksRecord.load(run_dir).people())
            reporter.say(f"{video.name} -> {run_dir}")
            stages = self.stages_for(video, run_dir, until, shards)
            last = until or STAGE_ORDER[-1]
            side_by_side = side_by_side_stage(track_tasks, chosen) if chosen is not None else None
            planned = (planned_stages(self, run_dir, chosen, last, result.frames or 0, side_by_side) if chosen is not None else
                       [PlannedStage(s.name, s.name, run_dir, result.frames or 0) for s in stages])
            # Stages already complete in the folder are most likely cached: they cost nothing, and no network
            # is loaded or probed for them (a rerun of a finished video stays quick).
            pending = [p for p in planned if not (p.folder / p.stage / MANIFEST).is_file()]
            kinds = [name for name in STAGE_ORDER if any(p.stage == name for p in pending)]
            estimate = self.estimate(result.frames or 0, kinds, video) if self.estimate_time and pending else None
            # A face track's stage (label "t1/encode") is estimated on its own frames, its align without a search.
            expected = {p.label: estimate.for_frames(p.stage, p.n_frames, track=p.label != p.stage)
                        if p in pending else 0.0 for p in planned} if estimate else {}
            reporter.plan([p.label for p in planned], expected)
            if estimate:
                per_stage = {name: sum(expected[p.label] for p in planned if p.stage == name) for name in kinds}
                reporter.say(estimate.describe(result.frames, per_stage))
                # Beside each stage's "done" line in log.txt, so estimate and actual can be compared afterwards.
                log.write("run", "estimate", f"probe {estimate.probe_seconds:.1f}s; "
                          + ", ".join(f"{label} {seconds:.1f}s" for label, seconds in expected.items()))
            if chosen is not None:
                result.stages.update(run_tracks(self, video, run_dir, chosen, runner, last, say=reporter.say,
                                                tasks=track_tasks))
            else:
                for stage in stages:
                    result.stages[stage.name] = runner.run(stage).status
            if until is None or STAGE_ORDER.index(until) >= STAGE_ORDER.index("composite"):
                result.outputs = self._publish(video, run_dir)
                if self.views and result.outputs:
                    result.views = self._views(video, run_dir, result.outputs)
        align = records.RunFolder(run_dir).align
        if (align / records.TRANSFORMS).is_file():  # frames actually read (the probe's count is the container's estimate)
            result.frames = records.AlignRecord.load(align).n_frames
        log.write("run", "done", ", ".join(f"{k} {v}" for k, v in result.stages.items()))
        if result.outputs:
            reporter.say("outputs:\n" + "\n".join(f"  {p}" for p in result.outputs + result.views)
                         + f"\nnext: videdit eval {run_dir}")

    def _publish(self, video: Path, run_dir: Path) -> list[Path]:
        """Final full-frame videos at the top of the run folder: NAME.EDIT.mp4 (edits first), NAME.recon.mp4
        (.mkv for the lossless codec ffv1)."""
        folder = records.RunFolder(run_dir)
        codec = self.sections["composite"].codec
        outputs = []
        keys = [k for k, _ in self.edit_keys() if k != records.RECONSTRUCTION_KEY] + [records.RECONSTRUCTION_KEY]
        for key in keys:
            src, dst = folder.composite_video(key, codec), folder.published_video(video.stem, key, codec)
            if src.exists():
                with atomic_path(dst, fsync=False) as tmp:
                    try:
                        os.link(src, tmp)  # no copy of a large file where a hard link will do
                    except OSError:
                        shutil.copyfile(src, tmp)
                outputs.append(dst)
                other = folder.published_video(video.stem, key, "auto" if codec == "ffv1" else "ffv1")
                other.unlink(missing_ok=True)  # the output of an earlier run with the other container is stale now
        return outputs

    def _views(self, video: Path, run_dir: Path, outputs: list[Path]) -> list[Path]:
        """NAME.compare.mp4 (the input beside the edits) and RUN/index.html (a page of the run): for looking."""
        from videdit.compare import write_run_compare
        from videdit.records_view import ViewFolder
        from videdit.report_html import write_run_page

        view = ViewFolder(run_dir)
        published = {layout.published_key(p.name, video.stem): p for p in outputs}
        compare = write_run_compare(video, published, view.compare_video(video.stem), records.RECONSTRUCTION_KEY)
        page = write_run_page(run_dir)
        return [p for p in (compare, page) if p is not None]
