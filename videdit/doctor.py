"""`videdit doctor`: what this environment can run, in one report.

torch and CUDA, the GPUs and their free memory, the ops mode, which native kernels are built and
which shape families passed their self-check on each GPU, PyAV/FFmpeg and the encoders videdit
writes with, the landmark backends and the checkpoints. Nothing is built, downloaded or checked
unless `build=True` (then the native kernels are compiled, and on a GPU a standard set of op
calls runs through the CUDA self-check). Every probe reports its own failure as text instead of
raising, so the report always comes out.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import sys
from pathlib import Path
from typing import Any, Callable

ENCODERS = ("libx264", "libx265", "ffv1")


def _probe(fn: Callable[[], Any]) -> Any:
    """fn's result, or {"error": ...} when it raises: one broken component must not hide the rest."""
    try:
        return fn()
    except Exception as exc:  # the doctor reports problems, it does not stop at them
        return {"error": f"{type(exc).__name__}: {exc}"}


def _torch_info() -> dict:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "cuda_build": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            "cuda_available": torch.cuda.is_available(), "threads": torch.get_num_threads()}


def _gpus() -> list[dict]:
    import torch

    if not torch.cuda.is_available():
        return []
    gpus = []
    for index in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(index)
        major, minor = torch.cuda.get_device_capability(index)
        gpus.append({"index": index, "name": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}",
                     "free_gib": round(free / 2 ** 30, 2), "total_gib": round(total / 2 ** 30, 2)})
    return gpus


def _verdicts(device) -> dict:
    """Self-check verdicts of the current CUDA build on `device`, read from the cache (no check runs)."""
    import json

    from videdit.ops import selfcheck

    path = selfcheck.self_check_path(device)
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return {"passed": 0, "failed": [], "file": None}
    if saved.get("version") != selfcheck.CHECK_VERSION:
        return {"passed": 0, "failed": [], "file": str(path), "note": "verdicts of an older self-check"}
    families = saved.get("families", {})
    return {"passed": sum(1 for v in families.values() if v.get("ok")), "file": str(path),
            "failed": sorted(f"{k}: {v.get('detail')}" for k, v in families.items() if not v.get("ok"))}


def verify_standard_families(device) -> None:
    """Run a standard set of op calls (StyleGAN3-like shapes, float32 and float16, forward and backward)
    through the CUDA kernels, so their self-check verdicts exist before a real run."""
    import torch

    import videdit.ops as ops
    from videdit.ops.filters import design_lowpass_filter
    from videdit.ops.mode import use_ops

    gen = torch.Generator().manual_seed(0)
    fu = design_lowpass_filter(numtaps=12, cutoff=20, width=10, fs=128)
    radial = design_lowpass_filter(numtaps=12, cutoff=20, width=10, fs=128, radial=True)
    with use_ops("cuda"), torch.enable_grad():
        for dtype in (torch.float32, torch.float16):
            x = torch.randn([1, 8, 52, 52], generator=gen).to(device, dtype).requires_grad_(True)
            b = torch.zeros([8], device=device, requires_grad=True)
            outputs = [
                ops.filtered_lrelu(x, fu.to(device), fu.to(device), b, up=2, down=2, padding=10, clamp=256),
                ops.filtered_lrelu(x, fu.to(device), radial.to(device), b, up=2, down=2, padding=10, clamp=256),
                ops.upfirdn2d(x, fu.to(device), up=2, padding=[6, 5, 6, 5]),
                ops.upfirdn2d(x, torch.tensor([1.0, 3.0, 3.0, 1.0], device=device), down=2, padding=1),
                ops.bias_act(x, b.to(dtype), act="lrelu", clamp=256),
                ops.bias_act(x.flatten(1), None, act="linear"),
            ]
            torch.autograd.grad([y.float().sum() for y in outputs], [x])
    torch.cuda.synchronize(device)


def _native_info(build: bool, gpus: list[dict]) -> dict:
    import torch

    from videdit.ops import extensions, kernels

    cuda_home = os.environ.get("CUDA_HOME") or "/usr/local/cuda"
    nvcc = shutil.which("nvcc") or (str(Path(cuda_home) / "bin" / "nvcc")
                                    if (Path(cuda_home) / "bin" / "nvcc").exists() else None)
    info = {"cache": str(extensions.cache_root()), "compiler": shutil.which(os.environ.get("CXX", "c++")), "nvcc": nvcc}
    if build:
        kernels.cpu_module()
    info["cpu_extension"] = extensions.build_state(kernels.CPU_EXTENSION)
    if torch.version.cuda is None:
        info["cuda_extension"] = "not possible: torch is not a CUDA build"
        return info
    if build and nvcc is not None:
        kernels.cuda_module()
    info["cuda_extension"] = extensions.build_state(kernels.CUDA_EXTENSION)
    if build and info["cuda_extension"] == "built":
        for gpu in gpus:
            verify_standard_families(torch.device("cuda", gpu["index"]))
    info["verified"] = {f"cuda:{gpu['index']}": _probe(lambda: _verdicts(torch.device("cuda", gpu["index"])))
                        for gpu in gpus}
    return info


def _ops_mode() -> dict:
    from videdit.ops.mode import ENV_VAR, current_mode

    return {"mode": current_mode(), "env": os.environ.get(ENV_VAR)}


def _video_info() -> dict:
    import av

    encoders = {}
    for name in ENCODERS:
        try:
            av.codec.Codec(name, "w")
            encoders[name] = True
        except Exception:  # PyAV raises UnknownCodecError (a ValueError) or others by version
            encoders[name] = False
    versions = {lib: ".".join(map(str, v)) for lib, v in av.library_versions.items()}
    return {"pyav": av.__version__, "ffmpeg": str(getattr(av, "ffmpeg_version_info", "unknown")),
            "libavcodec": versions.get("libavcodec"), "encoders": encoders}


def _landmark_info() -> dict:
    from videdit.face import landmarks

    dlib_dir = landmarks.dlib_model_dir()
    dlib_model = dlib_dir / landmarks.DLIB_SHAPE_MODEL if dlib_dir is not None else None
    dlib_missing = []
    if importlib.util.find_spec("dlib") is None:
        dlib_missing.append("the dlib package is not installed: pip install dlib-bin")
    if dlib_model is None or not dlib_model.is_file():
        dlib_missing.append(f"{landmarks.DLIB_SHAPE_MODEL} not found: pip install face_recognition_models")
    fan_missing = landmarks.fan_missing_models()
    return {"dlib": {"available": not dlib_missing, "missing": dlib_missing,
                     "model": str(dlib_model) if dlib_model else None},
            "face-alignment": {"available": not fan_missing, "missing": fan_missing}}


def _weights_info(weights_dir) -> dict:
    from videdit import weights as W

    folder = W.resolve_weights_dir(weights_dir)
    files = [{"name": st.weight.name, "file": st.weight.filename, "present": st.path is not None,
              "optional": st.weight.optional, "path": str(st.path or st.expected)} for st in W.status(folder)]
    return {"folder": str(folder), "files": files}


def collect(build: bool = False, weights_dir: str | os.PathLike | None = None) -> dict:
    """The whole report as plain data (what `videdit doctor --json` prints)."""
    report = {"platform": f"{platform.system()} {platform.machine()}", "executable": sys.executable}
    report["torch"] = _probe(_torch_info)
    gpus = _probe(_gpus)
    report["gpus"] = gpus
    report["ops"] = _probe(_ops_mode)
    report["native"] = _probe(lambda: _native_info(build, gpus if isinstance(gpus, list) else []))
    report["video"] = _probe(_video_info)
    report["landmarks"] = _probe(_landmark_info)
    report["weights"] = _probe(lambda: _weights_info(weights_dir))
    return report


def _section(report: dict, key: str, lines: Callable[[dict], list[str]]) -> list[str]:
    value = report.get(key)
    if isinstance(value, dict) and "error" in value:
        return [f"  error: {value['error']}"]
    return lines(value)


def format_report(report: dict) -> str:
    """The report as text, one section per component."""
    out = [f"videdit doctor ({report['platform']}, {report['executable']})"]

    def torch_lines(t):
        cuda = f"CUDA {t['cuda_build']}" if t["cuda_build"] else "CPU-only build"
        return [f"  python {t['python']}, torch {t['torch']} ({cuda}, cuDNN {t['cudnn'] or '-'}), "
                f"{t['threads']} threads, CUDA available: {'yes' if t['cuda_available'] else 'no'}"]

    def gpu_lines(gpus):
        if not gpus:
            return ["  none visible"]
        return [f"  cuda:{g['index']} {g['name']} (sm {g['capability']}): {g['free_gib']:.1f} of "
                f"{g['total_gib']:.1f} GiB free" for g in gpus]

    def ops_lines(o):
        source = f"from $VIDEDIT_OPS={o['env']}" if o["env"] else "default"
        return [f"  mode: {o['mode']} ({source}; change with --ops or $VIDEDIT_OPS)"]

    def native_lines(n):
        lines = [f"  cache: {n['cache']}",
                 f"  C++ compiler: {n['compiler'] or 'none'}; nvcc: {n['nvcc'] or 'none'}",
                 f"  CPU fused filtered_lrelu: {n['cpu_extension']}",
                 f"  CUDA kernels: {n['cuda_extension']}"]
        for device, v in n.get("verified", {}).items():
            if "error" in v:
                lines.append(f"  self-check on {device}: error: {v['error']}")
                continue
            lines.append(f"  self-check on {device}: {v['passed']} shape families passed, {len(v['failed'])} failed"
                         + ("" if v["passed"] or v["failed"] else " (none checked yet; `videdit doctor --build`)"))
            lines.extend(f"    FAILED {line}" for line in v["failed"])
        return lines

    def video_lines(v):
        encoders = ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in v["encoders"].items())
        return [f"  PyAV {v['pyav']}, FFmpeg {v['ffmpeg']} (libavcodec {v['libavcodec']})", f"  encoders: {encoders}"]

    def landmark_lines(lm):
        lines = []
        for name, b in lm.items():
            lines.append(f"  {name}: {'available' if b['available'] else 'unavailable'}")
            lines.extend(f"    {m}" for m in b["missing"])
        return lines

    def weight_lines(w):
        lines = [f"  folder: {w['folder']}"]
        for f in w["files"]:
            state = "present" if f["present"] else "missing" + (" (optional)" if f["optional"] else "")
            lines.append(f"  {f['name']:17s} {state}")
        return lines

    for title, key, fn in (("torch", "torch", torch_lines), ("GPUs", "gpus", gpu_lines), ("ops", "ops", ops_lines),
                           ("native kernels", "native", native_lines), ("video", "video", video_lines),
                           ("landmarks", "landmarks", landmark_lines), ("weights", "weights", weight_lines)):
        out.append(f"{title}:")
        out.extend(_section(report, key, fn))
    return "\n".join(out)
