"""Building native extensions: the one builder every C++/CUDA extension of videdit goes through (as
NVIDIA's torch_utils.custom_ops is for theirs). Nothing here knows which kernels an extension holds.

An extension (`ExtensionSpec`: name, sources, whether it needs nvcc) is compiled by
`torch.utils.cpp_extension` with ninja at first use, in a child process (so a hung compiler can be
stopped), under a lock file in its cache folder
`<user cache>/videdit/ops/<torch, CUDA, Python, machine>/<name>-<hash of sources, headers, flags, archs>/`:
a source or header change gives a new folder, so a new build. A lock older than the build timeout is
broken. A failed build is remembered there (`failed.log`) and reported by ONE warning with the
compiler's last lines; callers then get None and use the PyTorch ops. Delete the folder, or set
VIDEDIT_OPS_REBUILD=1, to try again.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from videdit.cachedirs import user_cache_dir
from videdit.fileio import atomic_write_text

logger = logging.getLogger("videdit.ops")

SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
DEFAULT_BUILD_TIMEOUT_S = 900.0
DEFAULT_CUDA_ARCHS = "8.0;9.0"  # used when no GPU is visible to pick the arch from
LOG_TAIL_LINES = 20


class BuildError(RuntimeError):
    """A native extension could not be built or loaded; the message ends with the compiler's last lines."""


@dataclass(frozen=True)
class ExtensionSpec:
    """One extension: its module name, its source files (in `source_dir`), and whether it needs nvcc.
    Every header in `source_dir` counts as its source too (for the cache key)."""

    name: str
    sources: tuple[str, ...]
    cuda: bool
    source_dir: Path = SOURCE_DIR

    def cflags(self) -> list[str]:
        # torch's own flags pick the C++ standard (C++20 for torch >= 2.10). The CPU kernel is built
        # for this machine's vector units (the cache key includes the CPU's feature flags).
        if self.cuda:
            return ["-O3"]
        native_arch = ["-march=native"] if platform.machine().lower() in ("x86_64", "amd64") else []
        return ["-O3", "-fopenmp"] + native_arch

    def ldflags(self) -> list[str]:
        return [] if self.cuda else ["-fopenmp"]

    def cuda_cflags(self) -> list[str]:
        return ["-O3"] if self.cuda else []


def cache_root() -> Path:
    """<user cache>/videdit/ops: every build's folder is below it."""
    return user_cache_dir() / "ops"


def build_timeout_s() -> float:
    try:
        return float(os.environ.get("VIDEDIT_OPS_BUILD_TIMEOUT", DEFAULT_BUILD_TIMEOUT_S))
    except ValueError:
        return DEFAULT_BUILD_TIMEOUT_S


def cuda_arch_list() -> str:
    """Archs to compile for: TORCH_CUDA_ARCH_LIST, else the visible GPUs', else DEFAULT_CUDA_ARCHS."""
    if os.environ.get("TORCH_CUDA_ARCH_LIST"):
        return os.environ["TORCH_CUDA_ARCH_LIST"]
    if torch.cuda.is_available():
        caps = sorted({torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())})
        return ";".join(f"{major}.{minor}" for major, minor in caps)
    return DEFAULT_CUDA_ARCHS


def build_dir(spec: ExtensionSpec) -> Path:
    """Cache folder of one extension: per torch / CUDA / Python / machine, then per source hash."""
    version = (f"torch{torch.__version__}-cuda{torch.version.cuda or 'none'}-"
               f"py{sys.version_info.major}{sys.version_info.minor}-{platform.machine()}")
    archs = cuda_arch_list() if spec.cuda else ""
    return cache_root() / version.replace("+", "_") / f"{spec.name}-{_spec_digest(spec, archs)}"


@functools.lru_cache(maxsize=None)
def _spec_digest(spec: ExtensionSpec, archs: str) -> str:
    """Hash of every source and header, the flags and the archs (sources do not change while running)."""
    digest = hashlib.sha256()
    headers = (".h", ".cuh") if spec.cuda else (".h",)
    for path in sorted(spec.source_dir.iterdir()):
        if path.name in spec.sources or path.suffix in headers:
            digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    digest.update(json.dumps([spec.name, spec.sources, spec.cflags(), spec.ldflags(), spec.cuda_cflags(),
                              archs, "" if spec.cuda else _cpu_features()]).encode())
    return digest.hexdigest()[:16]


def _cpu_features() -> str:
    """The CPU's feature flags (Linux), so a cache shared by different CPUs keeps separate builds."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _tail(text: str, lines: int = LOG_TAIL_LINES) -> str:
    """The compiler's first error lines and last lines (without the Python traceback of the build)."""
    compiler = text.split("Traceback (most recent call last)")[0].strip().splitlines()
    errors = [line for line in compiler if "error" in line.lower()][:lines // 2]
    last = [line for line in compiler[-(lines - len(errors)):] if line not in errors]
    return "\n".join(errors + last)


# The child process: compile and link with ninja (torch's cpp_extension), then import the module.
_BUILD_SCRIPT = """
import json, sys
import torch.utils.cpp_extension as cpp
a = json.loads(sys.argv[1])
cpp.load(name=a["name"], sources=a["sources"], extra_cflags=a["cflags"], extra_cuda_cflags=a["cuda_cflags"],
         extra_ldflags=a["ldflags"], build_directory=a["dir"], with_cuda=a["cuda"], verbose=True)
"""


class _BuildLock:
    """An O_EXCL lock file; one older than `stale_after_s` (a build that died) is broken.

    While another process holds it, waits until that build leaves one of the `finished` markers.
    """

    def __init__(self, path: Path, stale_after_s: float, done: Path, failed: Path | None = None):
        self.path = path
        self.stale_after_s = stale_after_s
        self.finished = [p for p in (done, failed) if p is not None]

    def acquire(self) -> bool:
        """True when we hold the lock; False when another process finished (or failed) the build meanwhile."""
        started = time.monotonic()
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if any(p.exists() for p in self.finished):
                    return False
                try:
                    age = time.time() - self.path.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age > self.stale_after_s:
                    logger.info("breaking stale build lock %s (%.0f s old)", self.path, age)
                    self.path.unlink(missing_ok=True)
                    continue
                if time.monotonic() - started > self.stale_after_s:
                    raise BuildError(f"timed out waiting for the build lock {self.path}")
                time.sleep(0.5)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(f"{os.getpid()} {time.time()}\n")
            return True

    def release(self):
        self.path.unlink(missing_ok=True)


def build(spec: ExtensionSpec, timeout_s: float | None = None, rebuild: bool = False) -> Path:
    """Compile and link `spec` (once per cache folder) and return the path of the built module.

    Raises BuildError with the compiler's last lines on failure, on timeout, or when an earlier
    build of the same sources failed (unless `rebuild` or VIDEDIT_OPS_REBUILD=1).
    """
    timeout_s = build_timeout_s() if timeout_s is None else timeout_s
    folder = build_dir(spec)
    folder.mkdir(parents=True, exist_ok=True)
    done, failed = folder / "built.json", folder / "failed.log"
    if rebuild or os.environ.get("VIDEDIT_OPS_REBUILD") == "1":
        done.unlink(missing_ok=True)
        failed.unlink(missing_ok=True)
    if not done.exists() and not failed.exists():
        lock = _BuildLock(folder / "videdit.lock", stale_after_s=timeout_s + 30, done=done, failed=failed)
        if lock.acquire():
            try:
                if not done.exists() and not failed.exists():  # nobody built it while we waited
                    (folder / "lock").unlink(missing_ok=True)  # cpp_extension's own lock: stale if we are here
                    return _run_build(spec, folder, timeout_s, done, failed)
            finally:
                lock.release()
    if done.exists():
        return folder / json.loads(done.read_text())["module"]
    raise BuildError(f"an earlier build failed (log: {failed}; set VIDEDIT_OPS_REBUILD=1 to retry):\n"
                     + _tail(failed.read_text()))


def _run_build(spec: ExtensionSpec, folder: Path, timeout_s: float, done: Path, failed: Path) -> Path:
    args = dict(name=spec.name, sources=[str(spec.source_dir / s) for s in spec.sources], cflags=spec.cflags(),
                cuda_cflags=spec.cuda_cflags(), ldflags=spec.ldflags(), dir=str(folder), cuda=spec.cuda)
    env = dict(os.environ)
    if spec.cuda:
        env["TORCH_CUDA_ARCH_LIST"] = cuda_arch_list()
        if not env.get("CUDA_HOME") and Path("/usr/local/cuda").is_dir():
            env["CUDA_HOME"] = "/usr/local/cuda"
    started = time.monotonic()
    # Its own process group, so a timeout stops ninja and the compilers too, not just the child.
    proc = subprocess.Popen([sys.executable, "-c", _BUILD_SCRIPT, json.dumps(args)], env=env, cwd=folder,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=timeout_s)
        ok = proc.returncode == 0
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        log, _ = proc.communicate()
        log, ok = (log or "") + f"\nbuild timed out after {timeout_s:.0f} s", False
    except BaseException:  # KeyboardInterrupt: do not leave compilers running
        _kill_group(proc)
        raise
    (folder / "build.log").write_text(log)
    module = next((p.name for p in folder.glob(f"{spec.name}*.so")), None) or \
        next((p.name for p in folder.glob(f"{spec.name}*.pyd")), None)
    if not ok or module is None:
        failed.write_text(log)
        raise BuildError(f"building {spec.name} failed (log: {folder / 'build.log'}):\n" + _tail(log))
    atomic_write_text(done, json.dumps({"module": module, "build_s": round(time.monotonic() - started, 1)}, indent=1,
                                       sort_keys=True))
    return folder / module


def _kill_group(proc: subprocess.Popen):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def import_module(spec: ExtensionSpec, path: Path):
    """Import a built extension module from its file."""
    module_spec = importlib.util.spec_from_file_location(spec.name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def load(spec: ExtensionSpec, timeout_s: float | None = None):
    """Build (if needed) and import; raises BuildError."""
    path = build(spec, timeout_s)
    try:
        return import_module(spec, path)
    except Exception as exc:  # a stale or incompatible binary: report like a failed build
        raise BuildError(f"loading {path} failed: {type(exc).__name__}: {exc}") from exc


@functools.lru_cache(maxsize=None)
def load_or_none(spec: ExtensionSpec):
    """The built and imported extension, or None after ONE warning (per process) when it cannot be had."""
    try:
        return load(spec)
    except Exception as exc:  # BuildError, or e.g. an unwritable cache folder: never break the op
        detail = exc if isinstance(exc, BuildError) else f"{type(exc).__name__}: {exc}"
        logger.warning("videdit native %s ops unavailable, using the PyTorch ops instead: %s",
                       "CUDA" if spec.cuda else "CPU", detail)
        return None


def build_state(spec: ExtensionSpec) -> str:
    """'built', 'failed' or 'missing' for the current sources, without building anything."""
    folder = build_dir(spec)
    if (folder / "built.json").exists():
        return "built"
    return "failed" if (folder / "failed.log").exists() else "missing"


def load_if_built(spec: ExtensionSpec):
    """The extension if it is already built (or failed: then one warning and None).

    When it is missing, starts its build in a background process (once per process) and returns
    None, so callers use the PyTorch path meanwhile instead of waiting for the compiler.
    """
    try:
        state = build_state(spec)
    except Exception:  # no usable cache folder: let load_or_none report it once
        return load_or_none(spec)
    if state == "missing":
        start_background_build(spec)
        return None
    return load_or_none(spec)


# The detached child of start_background_build: the spec comes as JSON, so any extension can be built.
_BACKGROUND_SCRIPT = """
import json, sys
from pathlib import Path
from videdit.ops.extensions import BuildError, ExtensionSpec, build
a = json.loads(sys.argv[1])
try:
    build(ExtensionSpec(a["name"], tuple(a["sources"]), a["cuda"], Path(a["source_dir"])))
except BuildError:
    pass
"""


@functools.lru_cache(maxsize=None)
def start_background_build(spec: ExtensionSpec):
    """A detached, low-priority child process that builds `spec` into the cache (under the lock)."""
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
    args = json.dumps(dict(dataclasses.asdict(spec), source_dir=str(spec.source_dir)))
    try:
        subprocess.Popen([sys.executable, "-c", _BACKGROUND_SCRIPT, args], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                         preexec_fn=lambda: os.nice(10))
        logger.info("building the native %s ops in the background", spec.name)
    except OSError as exc:
        logger.warning("could not start the background build of %s: %s", spec.name, exc)
