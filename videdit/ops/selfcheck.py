"""Self-check of native kernels: before a kernel serves a shape family on a device, compare it with
the PyTorch reference on a small random input of that family, forward and backward.

A *shape family* is everything about a call that changes which code paths and index arithmetic a
kernel runs (dtype, factors, filter shapes, padding, activation...), but not the batch, channel
count or image size: the check runs on a small input of the same family (a few planes, enough
output samples for more than one CUDA tile per axis). A mismatch, or any exception while launching
the kernel, fails the family: one warning on the `videdit.ops` logger, and the PyTorch path for
that family from then on. Verdicts are kept in memory and in one JSON file per (device, build),
so each family is checked once per GPU model and kernel build, not once per process.

The check is device-agnostic: it takes the candidate kernel, the reference callables and the
device of the call's own tensor, so the tests exercise it on CPU with deliberately wrong kernels.
`cuda_self_check(device)` is the one the CUDA kernels use: its verdicts live in their build's folder.
"""
from __future__ import annotations

import functools
import inspect
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping

import torch

from videdit.ops import reference
from videdit.ops._params import filter_taps, parse_resample
from videdit.ops.extensions import build_dir
from videdit.ops.kernels import CUDA_EXTENSION

logger = logging.getLogger("videdit.ops")

# Bump when the check itself changes, so verdicts of an older check are redone.
CHECK_VERSION = 1
# Largest |kernel - reference| allowed, relative to the reference's largest magnitude (forward and
# each gradient separately). float16 kernels accumulate in float32 but store float16 (~1e-3 steps).
RELATIVE_TOLERANCE = {torch.float16: 1e-2, torch.bfloat16: 4e-2, torch.float32: 1e-4, torch.float64: 1e-9}
# Output samples per axis of the check input: above the CUDA filtered_lrelu's largest tile (32), so
# tile borders are crossed.
CHECK_OUTPUT_SIZE = 40
CHECK_PLANES = (2, 3)  # at most this batch and channel count in the check input (with a random bias to match)
CHECK_SEED = 1234

# The literal definitions every kernel must reproduce.
REFERENCES: Mapping[str, Callable] = {"upfirdn2d": reference.upfirdn2d, "bias_act": reference.bias_act,
                                      "filtered_lrelu": reference.filtered_lrelu}

_SIGNATURES = {op: inspect.signature(fn) for op, fn in REFERENCES.items()}


@dataclass(frozen=True)
class Verdict:
    ok: bool
    detail: str  # the largest relative errors, or the exception the kernel raised


def call_arguments(op: str, x, args, kwargs) -> dict:
    """The call's arguments by name (defaults filled in), as the public op `op` would see them."""
    kwargs = {k: v for k, v in kwargs.items() if k != "impl"}
    bound = _SIGNATURES[op].bind(x, *args, **kwargs)
    bound.apply_defaults()
    return dict(bound.arguments)


def _shape(t) -> str:
    return "none" if t is None else "x".join(str(n) for n in t.shape)


def _resample_key(a: dict) -> str:
    rs = parse_resample(a["up"], a["down"], a["padding"])
    return (f"up{rs.upx},{rs.upy}|down{rs.downx},{rs.downy}|pad{rs.padx0},{rs.padx1},{rs.pady0},{rs.pady1}"
            f"|flip{int(bool(a['flip_filter']))}")


def family(op: str, a: dict) -> str:
    """The shape family of one call (see the module docstring); `a` from call_arguments."""
    x = a["x"]
    dtype = str(x.dtype).replace("torch.", "")
    if op == "upfirdn2d":
        return f"upfirdn2d|{dtype}|f{_shape(a['f'])}|{_resample_key(a)}"
    if op == "bias_act":
        dim = a["dim"] % x.ndim if x.ndim else 0
        clamp = a["clamp"] is not None and a["clamp"] >= 0
        return (f"bias_act|{dtype}|ndim{x.ndim}|dim{dim}|{a['act']}|bias{int(a['b'] is not None)}"
                f"|clamp{int(clamp)}")
    if op == "filtered_lrelu":
        clamp = a["clamp"] is not None and a["clamp"] >= 0
        return (f"filtered_lrelu|{dtype}|fu{_shape(a['fu'])}|fd{_shape(a['fd'])}|{_resample_key(a)}"
                f"|bias{int(a['b'] is not None)}|clamp{int(clamp)}")
    raise ValueError(f"no self-check for op {op!r}")


def _smallest_size(full: int, out_size: Callable[[int], int]) -> int:
    """The smallest input length <= full whose output has CHECK_OUTPUT_SIZE samples (or all of full's)."""
    want = min(CHECK_OUTPUT_SIZE, out_size(full))
    for n in range(1, full + 1):
        if out_size(n) >= want:
            return n
    return full


def small_case(op: str, a: dict, generator: torch.Generator) -> dict:
    """Arguments of the same family as `a`, on a small random input on the same device."""
    x = a["x"]
    case = dict(a)

    def randn(shape, scale=1.0):
        # Drawn on the CPU from our own generator (same input on every device, global RNG untouched).
        return (torch.randn(shape, generator=generator, dtype=torch.float64) * scale).to(x.device, x.dtype)

    if op == "bias_act":
        dim = a["dim"] % x.ndim if x.ndim else 0
        shape = [min(size, CHECK_PLANES[1]) for size in x.shape]
        clamp = a["clamp"] if a["clamp"] is not None and a["clamp"] >= 0 else None
        case["x"] = randn(shape, 2.0 if clamp is None else clamp)  # so a clamp bites on some samples
        if a["b"] is not None:
            case["b"] = randn([shape[dim]]).to(a["b"].dtype)
        return case

    rs = parse_resample(a["up"], a["down"], a["padding"])
    if op == "upfirdn2d":
        taps = filter_taps(a["f"])

        def out_w(n):
            return rs.out_size(n, n, *taps)[0]

        def out_h(n):
            return rs.out_size(n, n, *taps)[1]
    else:
        fu_x, fu_y = filter_taps(a["fu"])
        fd_x, fd_y = filter_taps(a["fd"])

        def out_w(n):
            return (n * rs.upx + rs.padx0 + rs.padx1 - fu_x + 1 - fd_x) // rs.downx + 1

        def out_h(n):
            return (n * rs.upy + rs.pady0 + rs.pady1 - fu_y + 1 - fd_y) // rs.downy + 1

    n, c, h, w = x.shape
    batch, channels = min(n, CHECK_PLANES[0]), min(c, CHECK_PLANES[1])
    clamp = a.get("clamp")
    scale = clamp if clamp is not None and clamp >= 0 else 2.0
    case["x"] = randn([batch, channels, _smallest_size(h, out_h), _smallest_size(w, out_w)], scale)
    if a.get("b") is not None:
        case["b"] = randn([channels]).to(a["b"].dtype)
    return case


def _outputs(fn: Callable, case: dict, grad_out_seed: int, grad: bool):
    """fn's output and (with grad) the gradients to x and b of a fixed random weighting of it."""
    x = case["x"].detach().requires_grad_(grad)
    b = case.get("b")
    b = None if b is None else b.detach().requires_grad_(grad)
    args = dict(case, x=x, **({"b": b} if "b" in case else {}))
    with torch.enable_grad() if grad else torch.no_grad():
        y = fn(**args)
        if not grad:
            return [y]
        gen = torch.Generator().manual_seed(grad_out_seed)
        dy = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(y.device, y.dtype)
        inputs = [t for t in (x, b) if t is not None]
        return [y, *torch.autograd.grad(y, inputs, dy)]


def compare(op: str, kernel: Callable, reference_op: Callable, case: dict) -> Verdict:
    """Run kernel and reference on `case` (forward, then backward) and compare within tolerance.

    The reference runs in float64 (float32 and float16 calls are compared with it after the
    kernel's own rounding); any exception of the kernel is a failed verdict, not an error.
    """
    dtype = case["x"].dtype
    tolerance = RELATIVE_TOLERANCE.get(dtype, 1e-4)
    wide = {k: (v.to(torch.float64) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in case.items()}
    names = ["forward", "grad x", "grad b"]
    # The reference first: arguments it rejects are the caller's error (raised as the op would),
    # not a kernel failure.
    want = _outputs(reference_op, wide, CHECK_SEED + 1, grad=True)
    try:
        got = _outputs(kernel, case, CHECK_SEED + 1, grad=True)
        if case["x"].is_cuda:
            torch.cuda.synchronize(case["x"].device)  # launch errors surface here, inside the try
    except Exception as exc:  # a kernel that cannot run fails its family, it never breaks the caller
        first_line = (str(exc).strip().splitlines() or [""])[0]
        return Verdict(False, f"{type(exc).__name__}: {first_line}")
    errors = []
    for name, g, r in zip(names, got, want):
        if g is None or g.shape != r.shape:
            return Verdict(False, f"{name}: shape {None if g is None else tuple(g.shape)}, expected {tuple(r.shape)}")
        scale = max(r.abs().max().item(), 1e-30)
        err = (g.to(torch.float64) - r).abs().max().item() / scale
        if not err <= tolerance:  # also catches NaN
            return Verdict(False, f"{name}: max error {err:.2e} of the largest value (tolerance {tolerance:.0e})")
        errors.append(f"{name} {err:.1e}")
    return Verdict(True, "max relative errors: " + ", ".join(errors))


class KernelSelfCheck:
    """Verdicts of one device and kernel build, in memory and in `cache_path` (JSON; None: memory only).

    `verdict()` runs the check for a family not seen before and warns once per failed family.
    """

    def __init__(self, cache_path: Path | None, references: Mapping[str, Callable] = REFERENCES):
        self.cache_path = cache_path
        self.references = references
        self.verdicts: dict[str, Verdict] = {}
        self.warned: set[str] = set()
        if cache_path is not None:
            try:
                saved = json.loads(cache_path.read_text())
                if saved.get("version") == CHECK_VERSION:
                    self.verdicts = {k: Verdict(**v) for k, v in saved["families"].items()}
            except (OSError, ValueError, TypeError, KeyError, AttributeError):
                pass  # no or unreadable file: check again

    def verdict(self, op: str, kernel: Callable, a: dict) -> Verdict:
        """The verdict for the family of call `a` (from call_arguments), checking it first if new."""
        key = family(op, a)
        verdict = self.verdicts.get(key)
        if verdict is None:
            verdict = self.run(op, kernel, a)
            self.verdicts[key] = verdict
            self._save(key, verdict)
            logger.info("ops self-check %s on %s: %s (%s)", key, a["x"].device, "passed" if verdict.ok else "FAILED",
                        verdict.detail)
        if not verdict.ok and key not in self.warned:
            self.warned.add(key)
            logger.warning("videdit native %s kernel failed its self-check for %s (%s); using the PyTorch path "
                           "for that shape family", op, key, verdict.detail)
        return verdict

    def run(self, op: str, kernel: Callable, a: dict) -> Verdict:
        generator = torch.Generator().manual_seed(CHECK_SEED)
        # The first call of a family may come from inside torch.inference_mode() (the encoders run
        # synthesis there), where nothing can be differentiated: the check runs outside it, on
        # ordinary copies of the call's tensors (inference tensors cannot be saved for backward),
        # and outside autocast, which would run the float64 reference in float16.
        device_type = a["x"].device.type
        with torch.inference_mode(False), torch.autocast(device_type, enabled=False):
            a = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in a.items()}
            return compare(op, kernel, self.references[op], small_case(op, a, generator))

    def _save(self, key: str, verdict: Verdict):
        if self.cache_path is None:
            return
        try:
            saved = json.loads(self.cache_path.read_text())
            if saved.get("version") != CHECK_VERSION:
                saved = {}
        except (OSError, ValueError):
            saved = {}
        families = saved.get("families", {})
        families[key] = asdict(verdict)
        try:
            from videdit.fileio import atomic_write_text

            atomic_write_text(self.cache_path, json.dumps({"version": CHECK_VERSION, "families": families},
                                                          indent=1, sort_keys=True))
        except OSError as exc:  # a read-only cache only costs a new check in the next process
            logger.info("could not save %s: %s", self.cache_path, exc)


class CheckedKernel:
    """A native kernel that serves only the shape families whose self-check passed.

    Called with the public op's signature; other families run `fallback` (the op's PyTorch path).
    The family depends on the call's arguments, not just the tensor, so the check happens at the
    first call of each family rather than when the kernel is looked up.
    """

    def __init__(self, op: str, kernel: Callable, fallback: Callable, check: KernelSelfCheck):
        self.op = op
        self.kernel = kernel
        self.fallback = fallback
        self.check = check

    def __call__(self, x, *args, **kwargs):
        a = call_arguments(self.op, x, args, kwargs)
        fn = self.kernel if self.check.verdict(self.op, self.kernel, a).ok else self.fallback
        return fn(**a)


# ----------------------------------------------------------------------------------------------
# The CUDA kernels' verdicts: one file per GPU model, in the folder of the build they were checked with


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
