"""`videdit app`: a local web app (gradio) over the Python API, not beside it.

The page picks a video under the app's root (or takes an upload into ROOT/uploads/), shows its shots and people
(`VideditApp.faces`), previews an edit on the key frames (`VideditApp.preview`: videdit.preview.run_preview, whose
stage cache keeps the key frames' encode, so a strength change renders only) and runs the whole pipeline in a
background thread (`VideditApp.run`: Pipeline.run) with a progress bar fed by the run's own Reporter events
(`ProgressFeed`). The endpoint functions are plain methods, testable without a browser or a server; `build_blocks`
lays them out with gradio (imported only there) under the named API endpoints /faces, /preview and /run.

Safety: every path a request names goes through `VideditApp.resolve` (one helper): it must lie under the root
once resolved (symlinks and `..` included), else one line refuses it. gradio serves files only from the root
(allowed_paths) and its own cache of what the handlers returned; the run folders are beside their videos, so
under the root too. The run lock (videdit.runfolder.RunLock) refuses a second run on a run folder another
process holds, in one line; a run cut off (the server killed) resumes from its cached stages on the next click.
"""
from __future__ import annotations

import html
import queue
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from videdit.errors import InputError, MissingWeightsError, RefusedPathError, VideditError
from videdit.progress import Bar, Reporter

UPLOAD_DIR = "uploads"  # ROOT/uploads/: where an uploaded video is kept (its run folder beside it)
DEMO_DIR = "demo"  # ROOT/demo/source/astronaut.mp4: the demo clip the page can make (videdit.demo.make_demo_clip)
DEFAULT_DEMO_FRAMES = 24  # as `videdit demo`
DEFAULT_MAX_UPLOAD_MB = 500
ONE_FACE = "one face"  # the "whom" choice that follows one face (no [faces] select)
WHOM_CHOICES = (ONE_FACE, "main", "all")
STRENGTH_RANGE = (-10.0, 10.0)  # the slider's ends (edit.max_strength bounds what a run accepts)


@dataclass
class AppOptions:
    """What `videdit app` was started with. overrides: 'SECTION.KEY' -> value for every pipeline (--set)."""

    root: Path
    stand_ins: bool = False
    preset: str | None = None
    overrides: dict[str, Any] = field(default_factory=dict)
    weights_dir: Path | None = None
    device: str = "auto"
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB
    demo_frames: int = DEFAULT_DEMO_FRAMES


class ProgressFeed(Reporter):
    """A run's Reporter that also sends `report(fraction, text)` as it goes: the stages done over the stages
    planned, the running stage's bar counting within its share. The fraction never goes back."""

    def __init__(self, report: Callable[[float, str], None], **kwargs):
        super().__init__(**kwargs)
        self.report = report
        self.fraction = 0.0

    def send(self, within: float, text: str) -> None:
        n = max(len(self.stages), len(self.done) + (self.current is not None), 1)
        self.fraction = max(self.fraction, min(1.0, (len(self.done) + max(0.0, min(1.0, within))) / n))
        self.report(self.fraction, text)

    def stage_start(self, name: str) -> None:
        super().stage_start(name)
        self.send(0.0, f"{name} ...")

    def stage_end(self, name: str, status: str, seconds: float | None = None) -> None:
        super().stage_end(name, status, seconds)
        self.send(0.0, f"{name} {status}")

    def bar(self, total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Bar:
        return _FedBar(super().bar(total, desc, unit, initial), self)


class _FedBar(Bar):
    """A Reporter's bar that also sends its count to the ProgressFeed."""

    def __init__(self, inner: Bar, feed: ProgressFeed):
        self.__dict__.update(inner.__dict__)
        self.wrapped, self.feed = inner, feed

    def update(self, n: int = 1) -> None:
        self.wrapped.update(n)
        self.n = self.wrapped.n
        within = self.n / self.total if self.total else 0.0
        self.feed.send(within, f"{self.feed.current or self.desc}: {self.desc} {self.n}/{self.total or '?'}")

    def set_postfix(self, values: dict | None = None, refresh: bool = True, **kwargs) -> None:
        self.wrapped.set_postfix(values, refresh, **kwargs)

    def close(self) -> None:
        self.wrapped.close()


def _reporter(report: Callable[[float, str], None] | None) -> Callable[..., Reporter]:
    """What a pipeline makes its run's Reporter with: a ProgressFeed sending to `report`, or the plain one."""
    return (lambda **kwargs: ProgressFeed(report, **kwargs)) if report is not None else Reporter


def edit_overrides(edit: str, strength: float | None, whom: str | None) -> dict[str, Any]:
    """The pipeline settings one page's choices ask for: the edit, its strength (alpha for a text edit) and whom."""
    edit = str(edit or "").strip()
    if not edit:
        raise InputError("choose an edit: a direction (age, smile, ...), text:PROMPT or s:KEY:CHANNEL")
    key = "edit.alpha" if edit.startswith("text:") or "=text:" in edit else "edit.strengths"
    # edit.direction "": the edit given replaces the preset's short form (as Pipeline.from_preset does)
    overrides: dict[str, Any] = {"edit.edits": [edit], "edit.direction": "",
                                 key: None if strength is None else [float(strength)]}
    overrides["faces.select"] = None if whom in (None, "", ONE_FACE) else str(whom)
    return overrides


@dataclass
class PeopleView:
    """A video's people sheet, its shots and people as text (videdit.face.tracks.describe), and their labels."""

    sheet: Path
    text: str
    labels: list[str]


@dataclass
class RunOutputs:
    """What a finished run gives the page: the first edit's video, the comparison, every file to download."""

    edited: Path | None
    compare: Path | None
    files: list[Path]
    summary: str


class VideditApp:
    """The app's work, one method per endpoint, over the Python API. Thread-safe where gradio calls it from
    several workers: the pipelines (and their loaded networks) are made once under a lock."""

    def __init__(self, options: AppOptions):
        self.options = options
        self.root = Path(options.root).expanduser().resolve()
        if not self.root.is_dir():
            raise InputError(f"--root {options.root}: no such folder")
        self._pipelines: dict[bool, Any] = {}
        self._lock = threading.Lock()

    # ---- the one path check

    def resolve(self, path: str | Path | None, what: str = "video") -> Path:
        """`path` (absolute, or relative to the root) resolved, symlinks and `..` included; one line refusing
        anything that is not under the root."""
        if path is None or not str(path).strip():
            raise InputError(f"choose a {what} under {self.root}")
        given = Path(str(path).strip()).expanduser()
        resolved = (given if given.is_absolute() else self.root / given).resolve()
        if not resolved.is_relative_to(self.root):
            raise RefusedPathError(f"{path}: outside the app's root {self.root}; only files under it are read")
        return resolved

    def existing_video(self, path: str | Path | None) -> Path:
        video = self.resolve(path)
        if not video.is_file():
            raise InputError(f"{path}: no such file under {self.root}")
        return video

    # ---- what the page lists

    def videos(self) -> list[str]:
        """The videos under the root (run folders, hidden folders and links out of the root skipped), as paths
        relative to it."""
        from videdit.engines import list_videos

        return [str(p.relative_to(self.root)) for p in list_videos(self.root, recursive=True)
                if not any(part.startswith(".") for part in p.relative_to(self.root).parts)
                and p.resolve().is_relative_to(self.root)]

    def missing_weights(self) -> str | None:
        """The missing-weights message of the released checkpoints' pipeline (None: all present)."""
        try:
            self.pipeline(stand_ins=False).check_weights()
        except MissingWeightsError as exc:
            return str(exc)
        return None

    def directions(self, stand_ins: bool) -> list[str]:
        """The InterFaceGAN directions a run can use now: every one on the stand-ins, else those whose file is present."""
        from videdit import weights as W
        from videdit.edits import INTERFACEGAN_NAMES

        if stand_ins:
            return list(INTERFACEGAN_NAMES)
        weights_dir = W.resolve_weights_dir(self.options.weights_dir)
        return [name for name in INTERFACEGAN_NAMES
                if W.find(W.get(W.EDIT_DIRECTIONS[name]), weights_dir) is not None]

    # ---- pipelines

    def pipeline(self, stand_ins: bool):
        """The app's pipeline on the stand-ins or the released checkpoints, made once (networks load once)."""
        from videdit.pipeline import Pipeline

        with self._lock:
            if stand_ins not in self._pipelines:
                self._pipelines[stand_ins] = Pipeline.for_command(
                    self.options.preset, dict(self.options.overrides), stand_ins=stand_ins,
                    weights_dir=self.options.weights_dir, device=self.options.device)
            return self._pipelines[stand_ins]

    def _pipeline_for(self, edit: str, strength: float | None, whom: str | None, stand_ins: bool, **kwargs):
        overrides = edit_overrides(edit, strength, whom)
        self._check_direction_files(overrides["edit.edits"])
        pipe = self.pipeline(stand_ins).derive(overrides, **kwargs)
        pipe.check_weights()
        return pipe

    def _check_direction_files(self, edits: list[str]) -> None:
        """A .npy direction is a file read by the run: under the root, as every other path."""
        from videdit.edits import parse_edits

        for spec in parse_edits(edits):
            for leaf in spec.leaves():
                if leaf.kind == "w" and (leaf.target.endswith(".npy") or "/" in leaf.target or "\\" in leaf.target):
                    # the run reads it as given (relative to the server's working folder): checked as that file
                    self.resolve(Path(leaf.target).expanduser().absolute(), "direction file")

    # ---- the endpoints

    def faces(self, video: str | Path, stand_ins: bool = False) -> "PeopleView":
        """The shots and people of a video under the root, with the people sheet RUN/people.png (no face: one line)."""
        from videdit.face.tracks import contact_sheet, describe
        from videdit.fileio import atomic_write_bytes
        from videdit.io.png import encode_png
        from videdit.records_view import ViewFolder
        from videdit.runfolder import prepare_run_dir
        from videdit.track_runs import find_and_save_tracks

        path = self.existing_video(video)
        pipe = self.pipeline(stand_ins)
        view = ViewFolder(prepare_run_dir(pipe.default_run_dir(path)))
        # saved with their key, as `videdit faces` does: a run with --faces on this video reuses them
        tracks = find_and_save_tracks(path, view.root, pipe.sections["faces"])
        sheet = atomic_write_bytes(view.people_sheet, encode_png(contact_sheet(tracks)))
        return PeopleView(sheet, describe(tracks), [person.label for person in tracks.people()])

    def preview(self, video: str | Path, edit: str, strength: float | None, stand_ins: bool = False,
                report: Callable[[float, str], None] | None = None, whom: str | None = None) -> Path:
        """The key frames' contact sheet for one edit at one strength (RUN/preview/sheet.png): the first preview
        of a video encodes its key frames, the next ones (another strength, another edit) render only.
        report(fraction, text): the key frames' run's progress. whom: as the run's (one face: the main one;
        all, p1, ...: those of each key frame, as `videdit preview --faces`)."""
        from videdit.preview import run_preview

        path = self.existing_video(video)
        pipe = self._pipeline_for(edit, strength, whom, stand_ins, quiet=True, reporter=_reporter(report))
        return run_preview(pipe, path, estimate=False).sheet

    def run(self, video: str | Path, edit: str, strength: float | None, whom: str | None = None,
            stand_ins: bool = False, report: Callable[[float, str], None] | None = None) -> RunOutputs:
        """The whole pipeline on a video under the root (its run folder beside it); report(fraction, text) gets the
        run's progress. A run folder held by another run is one line (not a wait); a run cut off resumes here."""
        path = self.existing_video(video)
        pipe = self._pipeline_for(edit, strength, whom, stand_ins, reporter=_reporter(report), wait=False)
        result = pipe.run(path)
        if result.status != "ok":
            raise VideditError(result.error or "the run failed")
        from videdit import layout

        edited = [p for p in result.outputs if layout.published_key(p.name, path.stem) != layout.RECONSTRUCTION_KEY]
        compare = next((p for p in result.views if layout.is_compare_name(p.name)), None)
        stages = ", ".join(f"{k} {v}" for k, v in result.stages.items())
        return RunOutputs(edited[0] if edited else None, compare, list(result.outputs) + list(result.views),
                          f"{path.name}: done in {result.seconds:.1f} s ({stages})")

    def demo_clip(self) -> Path:
        """`videdit demo`'s clip (a real photo moved by a known camera path, with audio), made once under the root."""
        from videdit.demo import make_demo_clip

        return make_demo_clip(self.root / DEMO_DIR, self.options.demo_frames, quiet=True)

    def upload(self, temp_path: str | Path, name: str | None = None, stand_ins: bool = False) -> tuple[Path, PeopleView]:
        """An uploaded file kept as ROOT/uploads/NAME, with its people, once it is a video within the size limit
        with a face in it; one line otherwise (and nothing kept)."""
        import filecmp

        from videdit.io.probe import is_video_name, probe_video

        temp = Path(temp_path)
        name = Path(name or temp.name).name
        size_mb = temp.stat().st_size / 2**20
        if size_mb > self.options.max_upload_mb:
            raise InputError(f"{name}: {size_mb:.0f} MB, over the upload limit of {self.options.max_upload_mb:g} MB")
        if not is_video_name(name):
            raise InputError(f"{name}: not a video file name (expected .mp4, .mov, .mkv, ...)")
        try:
            probe_video(temp)  # not a video, truncated, audio only: one line
        except InputError as exc:  # named as the user knows it, not by the server's temporary path
            raise InputError(str(exc).replace(str(temp), name)) from None
        folder = self.root / UPLOAD_DIR
        folder.mkdir(exist_ok=True)
        kept = folder / name
        stem, number = kept.stem, 1
        while kept.exists() and not filecmp.cmp(kept, temp, shallow=False):
            kept, number = folder / f"{stem}-{number}{kept.suffix}", number + 1
        if not kept.exists():
            shutil.copyfile(temp, kept)
        try:
            return kept, self.faces(kept, stand_ins)  # no face: one line now, not at the run's align
        except VideditError:
            shutil.rmtree(self.pipeline(stand_ins).default_run_dir(kept), ignore_errors=True)
            kept.unlink(missing_ok=True)
            raise


def progress_html(fraction: float, text: str) -> str:
    """The page's progress bar: an HTML <progress> element and what the run is doing."""
    return (f'<progress value="{fraction:.3f}" max="1" style="width:100%"></progress>'
            f'<div class="videdit-progress-text">{round(100 * fraction)}% · {html.escape(text)}</div>')


def run_in_background(work: Callable[[Callable[[float, str], None]], Any]) -> Iterator[tuple[str, Any]]:
    """Run work(report) in a thread; yield ("progress", (fraction, text)) as it reports (the latest only, when
    several came while the page took the last one: a bar per frame is no message per frame), then ("done", result)
    or ("error", exception)."""
    events: queue.Queue = queue.Queue()

    def target() -> None:
        try:
            events.put(("done", work(lambda fraction, text: events.put(("progress", (fraction, text))))))
        except Exception as exc:  # handed to the page's handler, which says it in one line
            events.put(("error", exc))

    threading.Thread(target=target, name="videdit-app-run", daemon=True).start()
    while True:
        kind, value = events.get()
        while kind == "progress" and not events.empty():
            kind, value = events.get_nowait()
        yield kind, value
        if kind != "progress":
            return


def build_blocks(app: VideditApp):
    """The page: gradio Blocks over `app`, with the named endpoints /faces, /preview and /run."""
    import gradio as gr

    def one_line(exc: Exception) -> Exception:
        """A videdit error as gradio's one-line message on the page (and the client's exception)."""
        return gr.Error(str(exc), print_exception=False) if isinstance(exc, VideditError) else exc

    def faces_fn(video, stand_ins):
        try:
            return people_outputs(app.faces(video, bool(stand_ins)))
        except VideditError as exc:
            raise one_line(exc) from None

    def preview_fn(video, edit, strength, stand_ins, whom, progress=gr.Progress()):
        try:
            return str(app.preview(video, edit, strength, bool(stand_ins),
                                   report=lambda fraction, text: progress(fraction, desc=text), whom=whom))
        except VideditError as exc:
            raise one_line(exc) from None

    def run_fn(video, edit, strength, whom, stand_ins, progress=gr.Progress()):
        work = lambda report: app.run(video, edit, strength, whom, bool(stand_ins), report=report)  # noqa: E731
        yield progress_html(0.0, "starting"), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
        for kind, value in run_in_background(work):
            if kind == "progress":
                progress(value[0], desc=value[1])
                yield progress_html(*value), gr.update(), gr.update(), gr.update(), gr.update(), gr.update()
            elif kind == "error":
                raise one_line(value) from None
            else:
                out: RunOutputs = value
                yield (progress_html(1.0, "done"), str(out.edited) if out.edited else None,
                       str(out.compare) if out.compare else None, [str(p) for p in out.files],
                       out.summary, gr.update(choices=app.videos()))

    def people_outputs(found: PeopleView) -> tuple:
        return str(found.sheet), f"```\n{found.text}\n```", gr.update(choices=list(WHOM_CHOICES) + found.labels)

    def upload_fn(file, stand_ins):
        if file is None:
            return (gr.update(),) * 5
        try:
            kept, found = app.upload(file, stand_ins=bool(stand_ins))
        except VideditError as exc:
            raise one_line(exc) from None
        relative = str(kept.relative_to(app.root))
        return (gr.update(choices=app.videos(), value=relative), f"uploaded {relative}", *people_outputs(found))

    def demo_fn():
        relative = str(app.demo_clip().relative_to(app.root))
        return gr.update(choices=app.videos(), value=relative)

    def show_input(video):
        if not video:  # nothing picked yet (an empty root): nothing to play, nothing to say
            return None
        try:
            return str(app.existing_video(video))
        except VideditError as exc:
            raise one_line(exc) from None

    missing = app.missing_weights() if not app.options.stand_ins else None
    with gr.Blocks(title="videdit", analytics_enabled=False) as blocks:  # a local tool: nothing sent out
        gr.Markdown("# videdit\nEdit faces in a video: pick one under the root, see who is in it, preview an edit "
                    "on its key frames, then run it.")
        if app.options.stand_ins:
            from videdit.models import STAND_IN_NOTE

            gr.Markdown(f"**{STAND_IN_NOTE}.**", elem_id="stand-ins-note")
        elif missing:
            gr.Markdown("**The released checkpoints are missing**, so runs on them fail until they are fetched "
                        "(`videdit weights fetch --all`). Tick *stand-ins* to run on random-weight networks "
                        f"instead.\n\n```\n{missing}\n```", elem_id="weights-missing")
        with gr.Row():
            with gr.Column():
                videos = app.videos()
                video = gr.Dropdown(videos, value=videos[0] if videos else None, allow_custom_value=True,
                                    label=f"video (under {app.root})", elem_id="video")
                upload = gr.File(label=f"or upload a video (at most {app.options.max_upload_mb:g} MB)",
                                 file_types=["video"], type="filepath", elem_id="upload")
                demo_button = gr.Button("make the demo clip", size="sm", elem_id="demo-button")
                stand_ins = gr.Checkbox(value=app.options.stand_ins, label="stand-ins (random-weight networks, offline)",
                                        elem_id="stand-ins")
                faces_button = gr.Button("find shots and people", elem_id="faces-button")
                people = gr.Image(label="people", type="filepath", elem_id="people", interactive=False)
                shots = gr.Markdown(elem_id="shots")
                whom = gr.Dropdown(list(WHOM_CHOICES), value=ONE_FACE, allow_custom_value=True,
                                   label="whom to edit",
                                   elem_id="whom")
            with gr.Column():
                directions = app.directions(app.options.stand_ins or bool(missing))
                edit = gr.Dropdown(directions + ["text:a smiling face", "s:L6_148_512:501"],
                                   value=directions[0] if directions else None, allow_custom_value=True,
                                   label="edit (a direction, text:PROMPT or s:KEY:CHANNEL)", elem_id="edit")
                strength = gr.Slider(*STRENGTH_RANGE, value=3.0, step=0.5, label="strength (alpha for text edits)",
                                     elem_id="strength")
                preview_button = gr.Button("preview the key frames", elem_id="preview-button")
                preview = gr.Image(label="preview: input, reconstruction, edit", type="filepath",
                                   elem_id="preview-image", interactive=False)
        with gr.Row():
            run_button = gr.Button("run the whole video", variant="primary", elem_id="run-button")
        progress = gr.HTML(progress_html(0.0, "not started"), elem_id="progress")
        summary = gr.Markdown(elem_id="run-summary")
        with gr.Row():
            input_video = gr.Video(label="input", elem_id="input-video", interactive=False)
            output_video = gr.Video(label="edit", elem_id="output-video", interactive=False)
            compare_video = gr.Video(label="comparison", elem_id="compare-video", interactive=False)
        downloads = gr.File(label="download", file_count="multiple", elem_id="downloads", interactive=False)

        # One queue for everything that works in a run folder: a run pressed while a preview of the same video is
        # still rendering waits for it instead of being refused by the folder's lock (held by this very server).
        one_at_a_time = dict(concurrency_id="videdit-pipeline", concurrency_limit=1)
        faces_button.click(faces_fn, [video, stand_ins], [people, shots, whom], api_name="faces", **one_at_a_time)
        preview_inputs = [video, edit, strength, stand_ins, whom]  # whom last: a client may leave it out
        preview_button.click(preview_fn, preview_inputs, preview, api_name="preview", **one_at_a_time)
        strength.release(preview_fn, preview_inputs, preview, api_visibility="private", **one_at_a_time)
        run_button.click(run_fn, [video, edit, strength, whom, stand_ins],
                         [progress, output_video, compare_video, downloads, summary, video], api_name="run",
                         **one_at_a_time)
        demo_button.click(demo_fn, None, video, api_visibility="private")
        upload.upload(upload_fn, [upload, stand_ins], [video, summary, people, shots, whom], api_visibility="private")
        video.change(show_input, video, input_video, api_visibility="private")
        blocks.load(show_input, video, input_video, api_visibility="private")
    return blocks


def check_host(host: str, auth: tuple[str, str] | None) -> None:
    """One line when the page would listen beyond this machine without a log-in."""
    if host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        raise InputError(f"--host {host} opens the app beyond this machine: give --auth USER:PASS too")


def serve(app: VideditApp, host: str = "127.0.0.1", port: int = 7860, auth: tuple[str, str] | None = None,
          block: bool = True):
    """Start the page on host:port (a host other than 127.0.0.1/localhost needs auth). block=False returns the
    running Blocks (close() stops it)."""
    check_host(host, auth)
    blocks = build_blocks(app)
    blocks.queue(default_concurrency_limit=1)
    blocks.launch(server_name=host, server_port=port, auth=auth, allowed_paths=[str(app.root)],
                  max_file_size=f"{app.options.max_upload_mb:g}mb", prevent_thread_lock=not block, quiet=not block,
                  show_error=True, ssr_mode=False)
    return blocks
