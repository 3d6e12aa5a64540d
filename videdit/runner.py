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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from videdit.fileio import atomic_write_text, file_sha256

MANIFEST = "manifest.json"
STAGE_KEY = ".stage_key.json"
# Files a stage keeps only for its own resumption; not part of its output digest.
_PRIVATE_DIRS = ("checkpoints",)


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


def folder_digest(folder: Path) -> tuple[str, dict[str, int]]:
    h = hashlib.sha256()
    sizes: dict[str, int] = {}
    for p in stage_output_files(folder):
        rel = p.relative_to(folder).as_posix()
        sizes[rel] = p.stat().st_size
        h.update(rel.encode() + b"\0" + file_sha256(p).encode() + b"\n")
    return h.hexdigest(), sizes


@dataclass
class Stage:
    """One stage: `fn(work_dir)` computes the outputs into `work_dir`."""

    name: str
    fn: Callable[[Path], Any]
    params: dict[str, Any] = field(default_factory=dict)
    # name -> file path, stage folder path (digested via its manifest), or a literal string identity
    inputs: dict[str, Any] = field(default_factory=dict)
    version: str = "1"


@dataclass
class StageOutcome:
    name: str
    status: str  # "cached" | "ran"
    folder: Path
    seconds: float


class StageLog:
    """Append-only log of stage events in RUN/log.txt (the evidence tests and users read)."""

    def __init__(self, path: Path, echo: Callable[[str], None] | None = None):
        self.path = path
        self.echo = echo

    def write(self, stage: str, event: str, detail: str = "") -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {stage} {event}{(' ' + detail) if detail else ''}"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(line + "\n")
        if self.echo:
            self.echo(line)


def read_log_events(run_dir: Path) -> list[tuple[str, str]]:
    """[(stage, event), ...] from RUN/log.txt."""
    path = run_dir / "log.txt"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            out.append((parts[1], parts[2]))
    return out


class StageRunner:
    def __init__(self, run_dir: Path, log: StageLog | None = None, force: bool | set[str] = False):
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log = log or StageLog(self.run_dir / "log.txt")
        self.force = force
        self.digests = DigestCache(self.run_dir / ".digests.json")

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
        manifest_path = self.run_dir / stage.name / MANIFEST
        if not manifest_path.exists():
            return False
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            return False
        key = key or self.stage_key(stage)
        if any(manifest.get(k) != v for k, v in key.items()):
            return False
        folder = manifest_path.parent
        return all((folder / rel).is_file() and (folder / rel).stat().st_size == size for rel, size in manifest["files"].items())

    def _forced(self, name: str) -> bool:
        return self.force is True or (isinstance(self.force, set) and name in self.force)

    def run(self, stage: Stage) -> StageOutcome:
        final = self.run_dir / stage.name
        key = self.stage_key(stage)
        if not self._forced(stage.name) and self.is_cached(stage, key):
            self.log.write(stage.name, "cached")
            return StageOutcome(stage.name, "cached", final, 0.0)

        work = self.run_dir / f"{stage.name}.partial"
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
        t0 = time.perf_counter()
        stage.fn(work)
        seconds = time.perf_counter() - t0

        output_digest, files = folder_digest(work)
        manifest = dict(key, params=stage.params, output_digest=output_digest, files=files,
                        finished=time.strftime("%Y-%m-%dT%H:%M:%S"), seconds=round(seconds, 3))
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
        return StageOutcome(stage.name, "ran", final, seconds)
