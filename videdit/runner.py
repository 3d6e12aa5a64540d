"""Cached, atomic, resumable execution of pipeline stages.

A stage is a function of a work folder, with declared inputs (files or folders whose content is
digested) and parameters. It runs in `RUN/<name>.partial/`, which survives a kill so the stage may
resume from what it left there (PTI does, from its checkpoints); when the function returns, a
manifest is written and the folder is renamed to `RUN/<name>/`. A stage is therefore complete or
absent. On a later run, a stage whose manifest records the same code version, parameters and input
digests (and whose files are all still there) is skipped as cached.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from videdit import progress
from videdit.errors import InputError
from videdit.fileio import atomic_write_text, file_sha256
from videdit.layout import CHECKPOINTS, DIGESTS, LOG, MANIFEST, STAGE_KEY, STAGE_ORDER, partial_name  # noqa: F401  (MANIFEST: API)
from videdit.runlog import StageLog, log_stage, read_log_events  # noqa: F401  (the log's API, re-exported)
from videdit.shards import PartExecutor, Sharding, finished_parts, part_folder, parts_folder, prune_parts, run_parts_here

# Files a stage keeps only for its own resumption; not part of its output digest.
_PRIVATE_DIRS = (CHECKPOINTS,)


def _json_default(obj: Any):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, tuple):
        return list(obj)
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_json_default)


def digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class DigestCache:
    """File digests remembered by (size, mtime_ns), so large unchanged inputs are hashed once per run folder.

    A changed mtime only triggers a re-hash: the content digest decides, so `touch` alone reruns nothing.
    """

    def __init__(self, path: Path):
        self.path = path
        try:
            self._entries: dict[str, list] = json.loads(path.read_text())
        except (OSError, ValueError):
            self._entries = {}

    def file_digest(self, p: Path) -> str:
        st = p.stat()
        key = str(p.resolve())
        hit = self._entries.get(key)
        if hit and hit[0] == st.st_size and hit[1] == st.st_mtime_ns:
            return hit[2]
        d = file_sha256(p)
        self._entries[key] = [st.st_size, st.st_mtime_ns, d]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self._entries))
        return d


def stage_output_files(folder: Path) -> list[Path]:
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if not p.is_file() or rel.parts[0] in _PRIVATE_DIRS or p.name in (MANIFEST, STAGE_KEY):
            continue
        files.append(p)
    return files


def folder_digest(folder: Path) -> tuple[str, dict[str, dict[str, Any]]]:
    """(digest of the whole folder, {relative path: {size, sha256, mtime_ns}}) of a stage's output files."""
    h = hashlib.sha256()
    files: dict[str, dict[str, Any]] = {}
    for p in stage_output_files(folder):
        rel = p.relative_to(folder).as_posix()
        st = p.stat()
        digest = file_sha256(p)
        files[rel] = {"size": st.st_size, "sha256": digest, "mtime_ns": st.st_mtime_ns}
        h.update(rel.encode() + b"\0" + digest.encode() + b"\n")
    return h.hexdigest(), files


# Files up to this size at the top of a stage folder are re-hashed at every start (latents, transforms,
# generators); the many frames in its subfolders get a size + mtime check, and a full re-hash with verify.
REHASH_MAX_BYTES = 1 << 30


def damaged_file(folder: Path, files: dict[str, Any], verify: bool = False) -> str | None:
    """The first output file that is missing or not what the manifest recorded, or None when all are intact."""
    for rel, entry in files.items():
        path = folder / rel
        if not path.is_file():
            return f"{rel} is missing"
        st = path.stat()
        if isinstance(entry, int):  # manifests of older versions recorded sizes only
            if st.st_size != entry:
                return f"{rel} changed size"
            continue
        if st.st_size != entry["size"]:
            return f"{rel} changed size"
        nested = "/" in rel
        if verify or (not nested and st.st_size <= REHASH_MAX_BYTES):
            if file_sha256(path) != entry["sha256"]:
                return f"{rel} changed content"
        elif st.st_mtime_ns != entry["mtime_ns"]:
            return f"{rel} was modified"
    return None


@dataclass
class Stage:
    """One stage: `fn(work_dir)` computes the outputs into `work_dir`."""

    name: str
    fn: Callable[[Path], Any]
    params: dict[str, Any] = field(default_factory=dict)
    # name -> file path, stage folder path (digested via its manifest), or a literal string identity
    inputs: dict[str, Any] = field(default_factory=dict)
    version: str = "1"
    # Set when the run shards its frame-wise stages (--shard-frames, --engine ray): then the stage runs as
    # parts and a merge instead of fn; the outputs are the same either way, so it stays out of the key.
    shards: Sharding | None = None


@dataclass
class VideoResult:
    """What happened to one video: the record `Pipeline.run` returns and the engines collect."""

    input: Path
    run_dir: Path
    status: str = "ok"  # ok | failed
    error: str | None = None
    frames: int | None = None
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    stages: dict[str, str] = field(default_factory=dict)  # stage -> cached | ran
    views: list[Path] = field(default_factory=list)  # NAME.compare.mp4 and RUN/index.html

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["input"], d["run_dir"] = str(self.input), str(self.run_dir)
        d["outputs"] = [str(p) for p in self.outputs]
        d["views"] = [str(p) for p in self.views]
        return d


@dataclass
class StageOutcome:
    name: str
    status: str  # "cached" | "ran"
    folder: Path
    seconds: float


class StageRunner:
    def __init__(self, run_dir: Path, log: StageLog | None = None, force: bool | set[str] = False,
                 verify: bool = False, warn: Callable[[str], None] | None = None,
                 parts: PartExecutor | None = None, label: str = ""):
        self.parts = parts or run_parts_here  # where a sharded stage's parts run
        self.label = label  # what the progress reporter calls its stages: "t2/" + name for a face track's
        self.verify = verify  # re-hash every output file of every cached stage, frames included
        self.warn = warn
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log or StageLog(self.run_dir / LOG)
        self.force = force
        self.digests = DigestCache(self.run_dir / DIGESTS)

    def _input_digest(self, value: Any) -> str:
        if isinstance(value, Path):
            if value.is_dir():
                manifest = value / MANIFEST
                if manifest.exists():
                    return json.loads(manifest.read_text())["output_digest"]
                return folder_digest(value)[0]
            if value.is_file():
                return self.digests.file_digest(value)
            raise FileNotFoundError(f"stage input not found: {value}")
        return digest_text(canonical_json(value))

    def stage_key(self, stage: Stage) -> dict[str, Any]:
        return {
            "stage": stage.name,
            "version": stage.version,
            "params_digest": digest_text(canonical_json(stage.params)),
            "inputs": {k: self._input_digest(v) for k, v in sorted(stage.inputs.items())},
        }

    def is_cached(self, stage: Stage, key: dict[str, Any] | None = None) -> bool:
        """True when the stage's folder holds the outputs its manifest describes for this key.

        A folder whose files no longer match the manifest is damaged: said once (log and echo) and
        recomputed, and the stages after it are then checked against the new outputs.
        """
        manifest_path = self.run_dir / stage.name / MANIFEST
        if not manifest_path.exists():
            return False
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            self.log.write(stage.name, "damaged", f"{MANIFEST} is unreadable; recomputing")
            return False
        key = key or self.stage_key(stage)
        if any(manifest.get(k) != v for k, v in key.items()):
            return False
        problem = damaged_file(manifest_path.parent, manifest.get("files", {}), self.verify)
        if problem:
            self.log.write(stage.name, "damaged", f"{problem} since it was written; recomputing {stage.name} and checking what follows")
            if self.warn:
                self.warn(f"{stage.name}: {problem} since it was written; recomputing it")
            return False
        return True

    def _forced(self, name: str) -> bool:
        return self.force is True or (isinstance(self.force, set) and name in self.force)

    def _run_parts(self, name: str, shards: Sharding, work: Path) -> float:
        """The missing parts (finished ones from an earlier attempt are kept), then the merge into `work`;
        -> the merge's seconds (the serial end of a sharded stage)."""
        plan = shards.plan()
        prune_parts(work, plan)
        done = finished_parts(work)
        todo = [(frames, part_folder(work, frames)) for frames in plan if frames not in done]
        if done:
            self.log.write(name, "parts", f"{len(plan) - len(todo)} of {len(plan)} parts kept")
        n_frames = plan[-1][1] if plan else 0
        with progress.bar(n_frames, name, "frame", initial=sum(e - s for s, e in done)) as bar:
            self.parts(name, todo, shards.part, bar.update)
        # The merge links or copies out of the parts, so a merge cut off is simply done again.
        t0 = time.perf_counter()
        shards.merge([part_folder(work, frames) for frames in plan], work)
        shutil.rmtree(parts_folder(work))
        return time.perf_counter() - t0

    def run(self, stage: Stage) -> StageOutcome:
        started = self.begin(stage)
        if isinstance(started, StageOutcome):
            return started
        reporter = progress.current()
        if reporter:
            reporter.stage_start(self.label + stage.name)
        t0 = time.perf_counter()
        merge_seconds = None
        with log_stage(stage.name):
            try:
                if stage.shards is None:
                    stage.fn(started)
                else:
                    merge_seconds = round(self._run_parts(stage.name, stage.shards, started), 3)
            except InputError as err:
                hinted = _with_repair_hint(err, self.run_dir)
                if hinted is err:
                    raise
                raise hinted from err
        return self.finish(stage, started, time.perf_counter() - t0, merge_seconds)

    def begin(self, stage: Stage) -> StageOutcome | Path:
        """The first half of `run`: the cached outcome, or the work folder `stage.fn` is to fill (made, or kept
        from a cut-off attempt with the same key so the stage can resume). Where the function runs is the
        caller's (`run` here; the Ray engine runs face tracks' tuning side by side), then `finish`."""
        key = self.stage_key(stage)
        if not self._forced(stage.name) and self.is_cached(stage, key):
            self.log.write(stage.name, "cached")
            reporter = progress.current()
            if reporter:
                reporter.stage_end(self.label + stage.name, "cached", 0.0)
            return StageOutcome(stage.name, "cached", self.run_dir / stage.name, 0.0)

        work = self.run_dir / partial_name(stage.name)
        key_text = canonical_json(key)
        if work.exists():
            previous = (work / STAGE_KEY).read_text() if (work / STAGE_KEY).exists() else None
            if previous != key_text or self._forced(stage.name):
                shutil.rmtree(work)
            else:
                self.log.write(stage.name, "resume")
        work.mkdir(parents=True, exist_ok=True)
        atomic_write_text(work / STAGE_KEY, key_text)
        self.log.write(stage.name, "start")
        return work

    def finish(self, stage: Stage, work: Path, seconds: float, merge_seconds: float | None = None) -> StageOutcome:
        """The second half of `run`, once `stage.fn(work)` has returned: the manifest, then the rename into place."""
        final = self.run_dir / stage.name
        key_text = (work / STAGE_KEY).read_text()
        output_digest, files = folder_digest(work)
        manifest = dict(json.loads(key_text), params=stage.params, output_digest=output_digest, files=files,
                        finished=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=round(seconds, 3))
        if merge_seconds is not None:
            manifest["merge_seconds"] = merge_seconds
        atomic_write_text(work / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True, default=_json_default))
        (work / STAGE_KEY).unlink()
        if final.exists():
            old = self.run_dir / f"{stage.name}.old{os.getpid()}"
            os.replace(final, old)
            os.replace(work, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(work, final)
        self.log.write(stage.name, "done", f"{seconds:.2f}s")
        reporter = progress.current()
        if reporter:  # timed on the reporter's clock where it saw the stage start (`run`), else as measured
            label = self.label + stage.name
            reporter.stage_end(label, "ran", None if reporter.current == label else seconds)
        return StageOutcome(stage.name, "ran", final, seconds)


def _with_repair_hint(err: InputError, run_dir: Path) -> InputError:
    """A stage that cannot read an earlier stage's output met damage the cache check did not see (same size and
    mtime; only --verify re-hashes): the one line says how to repair it. Other input errors are left as they are."""
    message = str(err)
    prefix = f"{run_dir}{os.sep}"
    if prefix not in message:
        return err
    stage = message.split(prefix, 1)[1].split(os.sep, 1)[0]
    if stage not in STAGE_ORDER:
        return err
    return InputError(f"{message}: a cached {stage} file is damaged; rerun with --verify (re-hashes every cached "
                      f"file) or --from {stage}")
