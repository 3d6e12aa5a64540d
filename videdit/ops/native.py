"""Native kernels for the StyleGAN3 ops: built with ninja at first use, cached, loaded, wrapped.

Two extensions, both compiled by `torch.utils.cpp_extension` from `videdit/ops/csrc/`:

* the CPU extension: a fused filtered_lrelu (OpenMP) plus test entry points that run the CUDA kernels'
  per-sample code on the CPU;
* the CUDA extension: upfirdn2d, bias_act and filtered_lrelu kernels, forward and backward.

Builds run in a child process (so a hung compiler can be stopped) under a lock file in the cache
folder `<user cache>/videdit/ops/<torch, CUDA, Python, machine>/<name>-<source hash>/`. A lock
older than the build timeout is broken. A failed build is remembered there (`failed.log`) and
reported by ONE warning with the compiler's last lines; callers then get None and use the PyTorch
ops. Delete the folder, or set VIDEDIT_OPS_REBUILD=1, to try again.

Every public callable here takes exactly the signature of the matching public op in `videdit.ops`.
Before a CUDA kernel serves a shape family on a GPU it passes a self-check against the reference
(videdit.ops.selfcheck; `cuda_self_check` holds the verdicts of one device and build).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import math
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from videdit.ops import reference
from videdit.ops._params import parse_resample
from videdit.ops.selfcheck import REFERENCES, KernelSelfCheck

logger = logging.getLogger("videdit.ops")

SOURCE_DIR = Path(__file__).resolve().parent / "csrc"
DEFAULT_BUILD_TIMEOUT_S = 900.0
DEFAULT_CUDA_ARCHS = "8.0;9.0"  # used when no GPU is visible to pick the arch from
LOG_TAIL_LINES = 20

# bias_act activation names -> the ids of `enum Activation` in csrc/resample.h.
ACTIVATION_IDS = {"linear": 0, "relu": 1, "lrelu": 2, "tanh": 3, "sigmoid": 4, "elu": 5, "selu": 6,
                  "softplus": 7, "swish": 8}


class BuildError(RuntimeError):
    """A native extension could not be built or loaded; the message ends with the compiler's last lines."""


@dataclass(frozen=True)
class ExtensionSpec:
    """One extension: its module name, its source files in csrc/, and whether it needs nvcc."""

    name: str
    sources: tuple[str, ...]
    cuda: bool

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


CPU_EXTENSION = ExtensionSpec("videdit_native_cpu", ("filtered_lrelu_cpu.cpp",), cuda=False)
CUDA_EXTENSION = ExtensionSpec("videdit_native_cuda",
                               ("cuda_ops.cpp", "upfirdn2d.cu", "bias_act.cu", "filtered_lrelu.cu"), cuda=True)


# ----------------------------------------------------------------------------------------------
# Build cache


def cache_root() -> Path:
    """<XDG_CACHE_HOME or ~/.cache>/videdit/ops."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "videdit" / "ops"


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
    for path in sorted(SOURCE_DIR.iterdir()):
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
    args = dict(name=spec.name, sources=[str(SOURCE_DIR / s) for s in spec.sources], cflags=spec.cflags(),
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
    _write_json_atomic(done, {"module": module, "build_s": round(time.monotonic() - started, 1)})
    return folder / module


def _kill_group(proc: subprocess.Popen):
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _write_json_atomic(path: Path, data: dict):
    from videdit.fileio import atomic_write_text

    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


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
def _load_or_none(spec: ExtensionSpec):
    try:
        return load(spec)
    except Exception as exc:  # BuildError, or e.g. an unwritable cache folder: never break the op
        detail = exc if isinstance(exc, BuildError) else f"{type(exc).__name__}: {exc}"
        logger.warning("videdit native %s ops unavailable, using the PyTorch ops instead: %s",
                       "CUDA" if spec.cuda else "CPU", detail)
        return None


def cpu_module():
    """The CPU extension, or None (after one warning) when it cannot be built or loaded."""
    return _load_or_none(CPU_EXTENSION)


def build_state(spec: ExtensionSpec) -> str:
    """'built', 'failed' or 'missing' for the current sources, without building anything."""
    folder = build_dir(spec)
    if (folder / "built.json").exists():
        return "built"
    return "failed" if (folder / "failed.log").exists() else "missing"


def cpu_module_if_built():
    """The CPU extension if it is already built (or failed: then one warning and None).

    When it is missing, starts its build in a background process (once per process) and returns
    None, so callers use the PyTorch path meanwhile instead of waiting for the compiler.
    """
    try:
        state = build_state(CPU_EXTENSION)
    except Exception:  # no usable cache folder: let cpu_module() report it once
        return cpu_module()
    if state == "missing":
        _start_background_build(CPU_EXTENSION)
        return None
    return cpu_module()


@functools.lru_cache(maxsize=None)
def _start_background_build(spec: ExtensionSpec):
    """A detached, low-priority child process that builds `spec` into the cache (under the lock)."""
    package_parent = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")])))
    which = "CUDA_EXTENSION" if spec.cuda else "CPU_EXTENSION"
    code = (f"from videdit.ops import native\ntry:\n    native.build(native.{which})\n"
            "except native.BuildError:\n    pass\n")
    try:
        subprocess.Popen([sys.executable, "-c", code], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True, preexec_fn=lambda: os.nice(10))
        logger.info("building the native %s ops in the background", spec.name)
    except OSError as exc:
        logger.warning("could not start the background build of %s: %s", spec.name, exc)


def cuda_module():
    """The CUDA extension, or None (after one warning); None without nvcc / a CUDA build of torch."""
    if torch.version.cuda is None:
        return None
    return _load_or_none(CUDA_EXTENSION)


# ----------------------------------------------------------------------------------------------
# Argument preparation shared by the kernels


def correlation_taps(f, flip_filter: bool, gain: float, dtype, device):
    """The taps the kernels correlate with: f flipped unless flip_filter, with the gain applied
    (sqrt(gain) per axis for a 1-D separable filter). None becomes a single tap."""
    if f is None:
        f = torch.ones([1], dtype=torch.float32)
    if f.ndim not in (1, 2):
        raise ValueError(f"filter must be 1-D or 2-D, got shape {tuple(f.shape)}")
    f = f.to(device=device, dtype=dtype)
    if not flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.contiguous()


def flipped(f):
    """The taps of the transposed op."""
    return f.flip(list(range(f.ndim))).contiguous()


def taps_xy(f) -> tuple[int, int]:
    return (f.shape[0], f.shape[0]) if f.ndim == 1 else (f.shape[1], f.shape[0])


@dataclass(frozen=True)
class FusedPlan:
    """Sizes and factors of one filtered_lrelu call, in the kernels' terms."""

    up: int
    down: int
    padx0: int
    pady0: int
    mid_h: int
    mid_w: int
    out_h: int
    out_w: int
    gain: float
    slope: float
    clamp: float  # < 0: no clamp


def plan_filtered_lrelu(x, fu, fd, up, down, padding, gain, slope, clamp) -> FusedPlan:
    """fu, fd: correlation taps (see correlation_taps)."""
    rs = parse_resample(up, down, padding)
    if (rs.upx, rs.downx) != (rs.upy, rs.downy):
        raise ValueError("filtered_lrelu takes one up and one down factor for both axes")
    fu_w, fu_h = taps_xy(fu)
    fd_w, fd_h = taps_xy(fd)
    mid_w = x.shape[3] * rs.upx + rs.padx0 + rs.padx1 - fu_w + 1
    mid_h = x.shape[2] * rs.upy + rs.pady0 + rs.pady1 - fu_h + 1
    out_w = (mid_w - fd_w) // rs.downx + 1
    out_h = (mid_h - fd_h) // rs.downy + 1
    if min(mid_w, mid_h, out_w, out_h) < 1:
        raise ValueError("filtered_lrelu: the padding and filters leave no output samples")
    clamp = -1.0 if clamp is None or clamp < 0 else float(clamp)
    return FusedPlan(rs.upx, rs.downx, rs.padx0, rs.pady0, mid_h, mid_w, out_h, out_w, float(gain), float(slope),
                     clamp)


def _reference_path(name: str, *args, impl="fast", **kwargs):
    """The literal PyTorch definition of op `name`: what a wrapper here computes for the calls its
    kernel does not take (this module never imports the public ops, which dispatch to it)."""
    return REFERENCES[name](*args, **kwargs)


def _accumulator_dtype(dtype):
    return torch.float64 if dtype == torch.float64 else torch.float32


# ----------------------------------------------------------------------------------------------
# CPU: fused filtered_lrelu


class _FilteredLreluCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, fu, fd, plan: FusedPlan):
        module = cpu_module()
        y = module.filtered_lrelu_forward(x, b, fu, fd, plan.up, plan.down, plan.padx0, plan.pady0, plan.mid_h,
                                          plan.mid_w, plan.out_h, plan.out_w, plan.gain, plan.slope, plan.clamp)
        ctx.save_for_backward(x, b, fu, fd)
        ctx.plan = plan
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, b, fu, fd = ctx.saved_tensors
        plan = ctx.plan
        dx = cpu_module().filtered_lrelu_backward(
            dy.contiguous(), x, b, fu, fd, flipped(fu), flipped(fd), plan.up, plan.down, plan.padx0, plan.pady0,
            plan.mid_h, plan.mid_w, plan.gain, plan.slope, plan.clamp)
        db = dx.sum(dim=[0, 2, 3]) if ctx.needs_input_grad[1] else None
        return dx, db, None, None, None


def cpu_supports(x) -> bool:
    return x.device.type == "cpu" and x.dtype in (torch.float32, torch.float64) and x.ndim == 4


def filtered_lrelu_cpu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                       clamp=None, flip_filter=False, impl="fast"):
    """filtered_lrelu by the fused C++ CPU kernel (same signature and result as videdit.ops.filtered_lrelu).

    What the kernel does not take (other dtypes or devices, impl='ref', or the extension is
    unavailable) runs the literal reference op (videdit.ops.reference).
    """
    kwargs = dict(fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp,
                  flip_filter=flip_filter, impl=impl)
    if impl != "fast" or not cpu_supports(x) or cpu_module() is None:
        return _reference_path("filtered_lrelu", x, **kwargs)
    prepared = prepare_fused(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, x.dtype)
    return _FilteredLreluCPU.apply(*prepared)


def prepare_fused(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter, acc_dtype):
    """(x, b, fu, fd, plan) as the kernels take them: contiguous, correlation taps in acc_dtype."""
    rs = parse_resample(up, down, padding)
    fu_taps = correlation_taps(fu, flip_filter, rs.upx ** 2, acc_dtype, x.device)
    fd_taps = correlation_taps(fd, flip_filter, 1, acc_dtype, x.device)
    plan = plan_filtered_lrelu(x, fu_taps, fd_taps, up, down, padding, gain, slope, clamp)
    if b is None:
        b = torch.zeros([x.shape[1]], dtype=acc_dtype, device=x.device)
    if b.shape != (x.shape[1],):
        raise ValueError(f"b must have shape [{x.shape[1]}], got {tuple(b.shape)}")
    return x.contiguous(), b.to(acc_dtype).contiguous(), fu_taps, fd_taps, plan


# ----------------------------------------------------------------------------------------------
# CUDA: upfirdn2d, bias_act, filtered_lrelu


def cuda_supports(x) -> bool:
    return x.is_cuda and x.dtype in (torch.float16, torch.float32, torch.float64)


@dataclass(frozen=True)
class UpfirdnPlan:
    upx: int
    upy: int
    downx: int
    downy: int
    padx0: int
    padx1: int
    pady0: int
    pady1: int
    in_h: int
    in_w: int
    out_h: int
    out_w: int

    def transposed(self, taps_x: int, taps_y: int) -> "UpfirdnPlan":
        """The plan of the gradient: up and down swapped, padding mirrored, output = our input."""
        padx0 = taps_x - 1 - self.padx0
        pady0 = taps_y - 1 - self.pady0
        padx1 = (self.in_w - 1) * self.upx + taps_x - self.out_w * self.downx - padx0
        pady1 = (self.in_h - 1) * self.upy + taps_y - self.out_h * self.downy - pady0
        return UpfirdnPlan(self.downx, self.downy, self.upx, self.upy, padx0, padx1, pady0, pady1,
                           self.out_h, self.out_w, self.in_h, self.in_w)


def plan_upfirdn2d(x, taps, up, down, padding) -> UpfirdnPlan:
    rs = parse_resample(up, down, padding)
    taps_x, taps_y = taps_xy(taps)
    out_w, out_h = rs.out_size(x.shape[3], x.shape[2], taps_x, taps_y)
    if out_w < 1 or out_h < 1:
        raise ValueError("upfirdn2d: the padding and filter leave no output samples")
    return UpfirdnPlan(rs.upx, rs.upy, rs.downx, rs.downy, rs.padx0, rs.padx1, rs.pady0, rs.pady1,
                       x.shape[2], x.shape[3], out_h, out_w)


class _Upfirdn2dCUDA(torch.autograd.Function):
    """Differentiable any number of times: the gradient is an upfirdn2d with the flipped taps."""

    @staticmethod
    def forward(ctx, x, taps, plan: UpfirdnPlan):
        ctx.save_for_backward(taps)
        ctx.plan = plan
        return cuda_module().upfirdn2d(x.contiguous(), taps, plan.upx, plan.upy, plan.downx, plan.downy,
                                       plan.padx0, plan.pady0, plan.out_h, plan.out_w)

    @staticmethod
    def backward(ctx, dy):
        (taps,) = ctx.saved_tensors
        taps_x, taps_y = taps_xy(taps)
        dx = _Upfirdn2dCUDA.apply(dy, flipped(taps), ctx.plan.transposed(taps_x, taps_y))
        return dx, None, None


def upfirdn2d_cuda(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl="fast"):
    """upfirdn2d by the CUDA kernel (same signature and result as videdit.ops.upfirdn2d; what it does not
    take runs the literal reference op)."""
    if impl != "fast" or not cuda_supports(x) or x.ndim != 4 or cuda_module() is None:
        return _reference_path("upfirdn2d", x, f, up=up, down=down, padding=padding, flip_filter=flip_filter,
                               gain=gain)
    taps = correlation_taps(f, flip_filter, gain, _accumulator_dtype(x.dtype), x.device)
    return _Upfirdn2dCUDA.apply(x, taps, plan_upfirdn2d(x, taps, up, down, padding))


class _BiasActCUDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, act_id, alpha, gain, clamp, inner):
        ctx.save_for_backward(x, b)
        ctx.params = (act_id, alpha, gain, clamp, inner)
        return cuda_module().bias_act(x, b, act_id, alpha, gain, clamp, inner)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, b = ctx.saved_tensors
        act_id, alpha, gain, clamp, inner = ctx.params
        dx = cuda_module().bias_act_backward(dy.contiguous(), x, b, act_id, alpha, gain, clamp, inner)
        db = None
        if ctx.needs_input_grad[1] and b.numel() > 0:
            channels = b.shape[0]
            db = dx.reshape(-1, channels, inner).to(b.dtype).sum(dim=[0, 2])
        return dx, db, None, None, None, None, None


def bias_act_cuda(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None, impl="fast"):
    """bias_act by the CUDA kernel (same signature and result as videdit.ops.bias_act; what it does not
    take runs the literal reference op)."""
    if impl != "fast" or not cuda_supports(x) or cuda_module() is None:
        return _reference_path("bias_act", x, b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)
    _, alpha, gain = reference.resolve_activation(act, alpha, gain)
    dim = dim % x.ndim if x.ndim else 0
    inner = math.prod(x.shape[dim + 1:])
    acc = _accumulator_dtype(x.dtype)
    if b is None:
        b = torch.zeros([0], dtype=acc, device=x.device)
    elif b.shape != (x.shape[dim],):
        raise ValueError(f"b must have shape [{x.shape[dim]}], got {tuple(b.shape)}")
    clamp = -1.0 if clamp is None or clamp < 0 else float(clamp)
    return _BiasActCUDA.apply(x.contiguous(), b.to(acc).contiguous(), ACTIVATION_IDS[act], alpha, gain, clamp,
                              inner)


class _FilteredLreluCUDA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, fu, fd, plan: FusedPlan):
        ctx.save_for_backward(x, b, fu, fd)
        ctx.plan = plan
        return cuda_module().filtered_lrelu(x, b, fu, fd, plan.up, plan.down, plan.padx0, plan.pady0, plan.mid_h,
                                            plan.mid_w, plan.out_h, plan.out_w, plan.gain, plan.slope, plan.clamp)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy):
        x, b, fu, fd = ctx.saved_tensors
        plan = ctx.plan
        dx = cuda_module().filtered_lrelu_backward(
            dy.contiguous(), x, b, fu, fd, flipped(fu), flipped(fd), plan.up, plan.down, plan.padx0, plan.pady0,
            plan.mid_h, plan.mid_w, plan.gain, plan.slope, plan.clamp)
        db = dx.to(b.dtype).sum(dim=[0, 2, 3]) if ctx.needs_input_grad[1] else None
        return dx, db, None, None, None


def filtered_lrelu_cuda(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                        clamp=None, flip_filter=False, impl="fast"):
    """filtered_lrelu by the fused CUDA kernel (same signature and result as videdit.ops.filtered_lrelu; what it
    does not take runs the literal reference op)."""
    if impl != "fast" or not cuda_supports(x) or x.ndim != 4 or cuda_module() is None:
        return _reference_path("filtered_lrelu", x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding,
                               gain=gain, slope=slope, clamp=clamp, flip_filter=flip_filter)
    prepared = prepare_fused(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter,
                             _accumulator_dtype(x.dtype))
    return _FilteredLreluCUDA.apply(*prepared)


CUDA_OPS = {"upfirdn2d": upfirdn2d_cuda, "bias_act": bias_act_cuda, "filtered_lrelu": filtered_lrelu_cuda}


# ----------------------------------------------------------------------------------------------
# "auto" on CPU: use the fused kernel only where it is measured faster


class CpuAutoSelect:
    """Chooses, per shape family, between the fused CPU kernel and `torch_path` (the public op's
    PyTorch path, handed in by the caller) by timing both.

    The first call of a family (dtype, factors, filter shapes, log2 of the plane size and of the
    plane count, thread count, whether autograd is recording) runs both implementations a few times
    on its own input and keeps the faster: forward only at inference, forward + backward when the
    call will be differentiated (tuning), since the two paths' backward passes differ more than
    their forwards; the decision is stored in `decisions_path` (beside the built
    extension), so each family is measured once per machine and thread count. Later calls only
    look the decision up.
    """

    REPEATS = 3

    def __init__(self, decisions_path: Path, torch_path):
        self.decisions_path = decisions_path
        self.torch_path = torch_path
        self.decisions: dict[str, dict] = {}
        try:
            self.decisions = json.loads(decisions_path.read_text())
        except (OSError, ValueError):
            pass

    @staticmethod
    def family(x, fu, fd, up, down, grad: bool = False) -> str:
        def shape(f):
            return "none" if f is None else "x".join(str(n) for n in f.shape)

        n, c, h, w = x.shape
        return (f"{str(x.dtype).replace('torch.', '')}|up{up}|down{down}|fu{shape(fu)}|fd{shape(fd)}"
                f"|hw2^{round(math.log2(h * w))}|nc2^{round(math.log2(n * c))}|threads{torch.get_num_threads()}"
                + ("|grad" if grad else ""))

    def filtered_lrelu(self, x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=math.sqrt(2), slope=0.2,
                       clamp=None, flip_filter=False, impl="fast"):
        """videdit.ops.filtered_lrelu by whichever implementation is faster for this shape family."""
        kwargs = dict(fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope, clamp=clamp,
                      flip_filter=flip_filter)
        if impl != "fast":
            return _reference_path("filtered_lrelu", x, **kwargs)
        if not cpu_supports(x):
            return self.torch_path(x, **kwargs)
        grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, b))
        key = self.family(x, fu, fd, up, down, grad)
        decision = self.decisions.get(key)
        if decision is None:
            decision = self.measure(key, x, kwargs, grad)
        if decision["native"]:
            return filtered_lrelu_cpu(x, **kwargs)
        return self.torch_path(x, **kwargs)

    def measure(self, key: str, x, kwargs, grad: bool = False) -> dict:
        x = x.detach()
        detached = {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in kwargs.items()}
        if grad:  # what a training step pays: forward, then backward to x and b
            b = detached.get("b")
            kw = dict(detached, b=None if b is None else b.clone().requires_grad_(True))
            xg = x.clone().requires_grad_(True)
            with torch.no_grad():
                grad_out = torch.ones_like(filtered_lrelu_cpu(x, **detached))

            def call(fn):
                def forward_backward():
                    fn(xg, **kw).backward(grad_out)
                    xg.grad = None
                return forward_backward
        else:
            def call(fn):
                return lambda: fn(x, **detached)

        native_s, torch_s = [], []
        with torch.enable_grad() if grad else torch.no_grad():
            for _ in range(self.REPEATS):
                native_s.append(_time_call(call(filtered_lrelu_cpu)))
                torch_s.append(_time_call(call(self.torch_path)))
        decision = {"native": min(native_s) < min(torch_s), "native_s": min(native_s), "torch_s": min(torch_s)}
        self.decisions[key] = decision
        logger.info("ops auto (CPU filtered_lrelu, %s): fused %.4f s, PyTorch %.4f s -> %s", key, min(native_s),
                    min(torch_s), "fused" if decision["native"] else "PyTorch")
        self._save(key, decision)
        return decision

    def _save(self, key: str, decision: dict):
        try:
            on_disk = json.loads(self.decisions_path.read_text()) if self.decisions_path.exists() else {}
        except (OSError, ValueError):
            on_disk = {}
        on_disk[key] = decision
        try:
            _write_json_atomic(self.decisions_path, on_disk)
        except OSError as exc:  # a read-only cache only costs a new measurement next time
            logger.info("could not save %s: %s", self.decisions_path, exc)


def _time_call(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@functools.lru_cache(maxsize=None)
def cpu_auto_selector(torch_path) -> CpuAutoSelect:
    """The selector against `torch_path` (one per process: the public op always hands in the same one)."""
    return CpuAutoSelect(build_dir(CPU_EXTENSION) / "auto_decisions.json", torch_path)


# ----------------------------------------------------------------------------------------------
# CUDA self-check: verdicts per GPU model and kernel build


def device_name(device) -> str:
    """A file-name-safe name of the device model: GPU name and compute capability, or 'cpu'."""
    device = torch.device(device)
    if device.type != "cuda":
        return device.type
    major, minor = torch.cuda.get_device_capability(device)
    name = f"{torch.cuda.get_device_name(device)}-sm{major}{minor}"
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)


def self_check_path(device) -> Path:
    """Where the verdicts of the current CUDA build on this device model are kept: in the build's folder,
    so a new build (other sources, flags, archs, torch) starts with no verdicts."""
    return build_dir(CUDA_EXTENSION) / f"selfcheck-{device_name(device)}.json"


# The environment variables the verdict file's location depends on (cache folder, build archs).
_SELF_CHECK_ENV = ("XDG_CACHE_HOME", "HOME", "TORCH_CUDA_ARCH_LIST")


def cuda_self_check(device) -> KernelSelfCheck:
    """The self-check of the CUDA kernels on `device`: one per device and process (asked at every op
    call, so the verdict file's path, which hashes the sources, is not recomputed each time)."""
    return _self_check_for(str(torch.device(device)), tuple(os.environ.get(k) for k in _SELF_CHECK_ENV))


@functools.lru_cache(maxsize=None)
def _self_check_for(device: str, env: tuple) -> KernelSelfCheck:
    return KernelSelfCheck(self_check_path(device))
