"""The video pipeline: align -> encode -> tune -> edit -> smooth -> render -> composite, cached per stage.

`Pipeline` holds resolved settings and where the networks come from (`ModelSource`); `run()` takes one
video through the stages with a `StageRunner` (cached, atomic, resumable); `run_many()` does a folder,
reporting and skipping failures. Stage modules do the work; this module only wires them.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from videdit import presets
from videdit import weights as W
from videdit.errors import InputError, MissingWeightsError, VideditError
from videdit.runner import Stage, StageLog, StageRunner, atomic_write_text

STAGE_ORDER = ("align", "encode", "tune", "edit", "smooth", "render", "composite")
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts", ".gif"}

# Published strengths per InterFaceGAN direction (video code). A named direction with no --strength
# renders the end that shows the edit most plainly (older, smiling, ...): one output `NAME.EDIT.mp4`.
PUBLISHED_RANGES = {"age": (-4.0, 5.0), "smile": (-2.0, 2.0), "pose": (-4.0, 5.0), "gender": (-2.0, 4.0)}


# --------------------------------------------------------------------------------------------------
# Results


@dataclass
class VideoResult:
    input: Path
    run_dir: Path
    status: str = "ok"  # ok | failed
    error: str | None = None
    frames: int | None = None
    seconds: float = 0.0
    outputs: list[Path] = field(default_factory=list)
    stages: dict[str, str] = field(default_factory=dict)  # stage -> cached | ran

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input"], d["run_dir"] = str(self.input), str(self.run_dir)
        d["outputs"] = [str(p) for p in self.outputs]
        return d


def format_summary(results: list[VideoResult]) -> str:
    rows = [("video", "status", "frames", "time", "output")]
    for r in results:
        out = str(r.outputs[0]) if r.outputs else (r.error or "")
        rows.append((r.input.name, r.status, "" if r.frames is None else str(r.frames), f"{r.seconds:.1f}s", out))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(row[i].ljust(widths[i]) for i in range(4)) + "  " + row[4] for row in rows]
    failed = sum(r.status != "ok" for r in results)
    lines.append(f"{len(results) - failed} done, {failed} failed")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------
# Where the networks come from


class ModelSource:
    """Provides the networks; `identity()` strings go into the stage cache keys."""

    name = "abstract"

    def required_weights(self, settings: dict[str, Any], stages: tuple[str, ...] = STAGE_ORDER) -> list[str]:
        """Registry names of the files the given stages need."""
        return []

    def generator_identity(self) -> str: ...

    def encoder_identity(self) -> str: ...

    def load_generator(self, device: str): ...

    def load_encoder(self, device: str):
        """-> (encoder, latent_avg [512] tensor)"""

    def edit_direction(self, name_or_path: str):
        """-> (numpy float32 [512], identity string)"""


class PretrainedModels(ModelSource):
    """The released checkpoints: ReStyle encoder file (its decoder is the generator), boundaries, LPIPS."""

    name = "pretrained"

    def __init__(self, weights_dir: Path, settings: dict[str, Any]):
        self.weights_dir = weights_dir
        enc = settings.get("encode", {})
        self.encoder_name = "restyle_psp" if enc.get("encoder", "e4e") == "psp" else "restyle_e4e"
        self.generator_path = enc.get("generator") or None  # optional override: .pkl/.pt/.safetensors
        self._ckpt = None

    def required_weights(self, settings, stages=STAGE_ORDER):
        names = []
        if set(stages) & {"encode", "tune", "render"}:  # the generator comes from the encoder's checkpoint
            names.append(self.encoder_name)
        tune = settings.get("tune", {})
        if ("tune" in stages and tune.get("tuner", "pti") == "pti" and tune.get("lpips_weight", 1.0) > 0
                and not tune.get("allow_l2_only")):
            names.append("lpips_alexnet" if tune.get("lpips_net", "alex") == "alex" else "lpips_vgg")
        direction = settings.get("edit", {}).get("direction") or ""
        if "edit" in stages and direction in W.EDIT_DIRECTIONS:
            names.append(W.EDIT_DIRECTIONS[direction])
        return names

    def _path(self, name: str) -> Path:
        return W.require([name], self.weights_dir)[name]

    def _file_identity(self, path: Path) -> str:
        st = path.stat()
        return f"{path.name}:{st.st_size}:{st.st_mtime_ns}"

    def encoder_identity(self):
        return self._file_identity(self._path(self.encoder_name))

    def generator_identity(self):
        return self._file_identity(Path(self.generator_path)) if self.generator_path else self.encoder_identity()

    def _checkpoint(self):
        if self._ckpt is None:
            from videdit.checkpoints.restyle import load_restyle_checkpoint

            self._ckpt = load_restyle_checkpoint(self._path(self.encoder_name))
        return self._ckpt

    def load_encoder(self, device):
        ckpt = self._checkpoint()
        return ckpt.encoder.to(device).eval(), ckpt.latent_avg.to(device)

    def load_generator(self, device):
        if self.generator_path:
            from videdit.checkpoints import load_generator

            return load_generator(self.generator_path, device=device)
        return self._checkpoint().generator.to(device)

    def edit_direction(self, name_or_path):
        import numpy as np

        path = Path(name_or_path)
        if name_or_path in W.EDIT_DIRECTIONS:
            path = self._path(W.EDIT_DIRECTIONS[name_or_path])
        elif not path.is_file():
            raise VideditError(f"unknown edit {name_or_path!r}: use one of {', '.join(W.EDIT_DIRECTIONS)} or a .npy file")
        d = np.load(path).astype(np.float32).reshape(-1)
        if d.shape != (512,):
            raise VideditError(f"edit direction {path} has {d.size} values; expected 512 (shape (1,512) or (512,))")
        return d, self._file_identity(path)


class StandInModels(ModelSource):
    """Small randomly initialised networks for the demo and the tests: the pipeline runs for real, the faces are meaningless."""

    name = "stand-in"

    def __init__(self, resolution: int = 64, seed: int = 0, encoder_backbone: str = "resnet34"):
        self.resolution = resolution
        self.seed = seed
        self.backbone = encoder_backbone

    def generator_identity(self):
        return f"standin-generator:{self.resolution}:{self.seed}"

    def encoder_identity(self):
        return f"standin-encoder:{self.backbone}:{self.seed}"

    def load_generator(self, device):
        import torch

        from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

        torch.manual_seed(self.seed)
        return Generator(**tiny_generator_kwargs(self.resolution)).to(device).eval()

    def load_encoder(self, device):
        import torch

        from videdit.networks.encoders import ReStyleEncoder

        torch.manual_seed(self.seed + 1)
        enc = ReStyleEncoder(kind="e4e", backbone=self.backbone)
        # Shrink the random heads' outputs so the stand-in latents stay near the generator's average.
        with torch.no_grad():
            for name, p in enc.named_parameters():
                if name.startswith("styles.") and ".linear." in name:
                    p.mul_(0.05)
        latent_avg = self.load_generator("cpu").mapping.w_avg.detach().clone()
        return enc.to(device).eval(), latent_avg.to(device)

    def edit_direction(self, name_or_path):
        import numpy as np

        path = Path(name_or_path)
        if path.is_file():
            d = np.load(path).astype(np.float32).reshape(-1)
            return d, f"{path.name}:{path.stat().st_size}"
        import zlib

        rng = np.random.default_rng(zlib.crc32(name_or_path.encode()))
        d = rng.standard_normal(512).astype(np.float32)
        return d / np.linalg.norm(d), f"standin-direction:{name_or_path}"


# --------------------------------------------------------------------------------------------------
# The pipeline


def _settings_for(cls, section: dict[str, Any], where: str, extra: dict[str, Any] | None = None):
    """Build a stage's settings dataclass from its preset section; unknown keys are a clear error."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in section.items() if k in names}
    unknown = sorted(set(section) - names - set(_PIPELINE_KEYS.get(where, ())))
    if unknown:
        raise VideditError(f"unknown option(s) {', '.join(f'{where}.{k}' for k in unknown)}; known: {', '.join(sorted(names | set(_PIPELINE_KEYS.get(where, ()))))}")
    for k, v in (extra or {}).items():
        if k in names:
            values[k] = v
    for f in dataclasses.fields(cls):  # TOML gives lists where dataclasses want tuples
        if isinstance(values.get(f.name), list) and "tuple" in str(f.type):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


# Keys a preset section may hold that the pipeline itself consumes (not the stage's settings class).
_PIPELINE_KEYS = {
    "encode": ("encoder", "generator"),
    "tune": ("tuner",),
    "edit": ("direction", "strengths"),
}


def resolve_device(device: str) -> str:
    if device != "auto":
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise VideditError("--device cuda: no CUDA device is available here (use --device cpu or auto)")
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def list_videos(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES and ".videdit" not in p.parts[-2])


class Pipeline:
    def __init__(self, settings: dict[str, Any], *, weights_dir: Path | None = None, device: str = "auto",
                 quiet: bool = False, models: ModelSource | None = None, echo: Callable[[str], None] | None = None):
        self.settings = settings
        self.weights_dir = W.resolve_weights_dir(weights_dir)
        self.device_request = device
        self.quiet = quiet
        self.models = models or PretrainedModels(self.weights_dir, settings)
        self.echo = echo or (lambda s: print(s, file=sys.stderr))
        self._loaded: dict[str, Any] = {}

    @classmethod
    def from_preset(cls, preset: str = "default", overrides: dict[str, Any] | None = None, **kwargs) -> "Pipeline":
        settings = presets.apply_overrides(presets.load_preset(preset), overrides or {})
        return cls(settings, **kwargs)

    # ---- checks before any work

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
            self._loaded["device"] = resolve_device(self.device_request)
        return self._loaded["device"]

    def generator(self):
        if "generator" not in self._loaded:
            self._loaded["generator"] = self.models.load_generator(self.device)
        return self._loaded["generator"]

    def encoder(self):
        if "encoder" not in self._loaded:
            self._loaded["encoder"] = self.models.load_encoder(self.device)
        return self._loaded["encoder"]

    def edit_keys(self) -> list[tuple[str, float]]:
        """[(key, strength)]: key names the output; ('recon', 0.0) is always rendered."""
        edit = self.settings.get("edit", {})
        direction = edit.get("direction") or ""
        keys = [("recon", 0.0)]
        if not direction:
            return keys
        label = Path(direction).stem if Path(direction).suffix == ".npy" else direction
        strengths = list(edit.get("strengths") or [])
        if not strengths:
            strengths = [PUBLISHED_RANGES.get(direction, (0.0, 3.0))[1]]
        if len(strengths) == 1:
            return keys + [(label, float(strengths[0]))]
        return keys + [(f"{label}{s:+g}", float(s)) for s in strengths]

    # ---- one video

    def stages_for(self, video: Path, run_dir: Path, until: str | None = None) -> list[Stage]:
        """The stages of one video, in order, up to `until`. Stage modules are imported only when used."""
        last = STAGE_ORDER.index(until) if until else len(STAGE_ORDER) - 1
        ctx = _VideoContext(self, Path(video), Path(run_dir))
        return [getattr(ctx, f"stage_{name}")() for name in STAGE_ORDER[: last + 1]]

    def default_run_dir(self, video: Path) -> Path:
        return video.with_name(video.name + ".videdit")

    def run(self, video: Path, out: Path | None = None, *, until: str | None = None, from_stage: str | None = None,
            force: bool | set[str] = False) -> VideoResult:
        video = Path(video)
        run_dir = Path(out) if out else self.default_run_dir(video)
        result = VideoResult(video, run_dir)
        t0 = time.perf_counter()
        try:
            from videdit.io.video import probe_video

            info = probe_video(video)  # fails fast on a bad file, before any work
            result.frames = info.n_frames
            run_dir.mkdir(parents=True, exist_ok=True)
            settings_text = presets.to_toml(dict(self.settings, models=self.models.name))
            settings_path = run_dir / "settings.toml"
            if not settings_path.exists() or settings_path.read_text() != settings_text:
                atomic_write_text(settings_path, settings_text)
            forced: bool | set[str] = force
            if from_stage:
                forced = set(STAGE_ORDER[STAGE_ORDER.index(from_stage):])
            runner = StageRunner(run_dir, StageLog(run_dir / "log.txt"), force=forced)
            self._say(f"{video.name} -> {run_dir}")
            for stage in self.stages_for(video, run_dir, until):
                outcome = runner.run(stage)
                result.stages[stage.name] = outcome.status
                self._say(f"  {stage.name:9s} {outcome.status}" + (f" ({outcome.seconds:.1f}s)" if outcome.status == "ran" else ""))
            if until is None or STAGE_ORDER.index(until) >= STAGE_ORDER.index("composite"):
                result.outputs = self._publish(video, run_dir)
        except VideditError as exc:
            result.status, result.error = "failed", str(exc)
        result.seconds = time.perf_counter() - t0
        return result

    def _publish(self, video: Path, run_dir: Path) -> list[Path]:
        """Final full-frame videos at the top of the run folder: NAME.EDIT.mp4 (edits first), NAME.recon.mp4."""
        import os
        import shutil

        outputs = []
        keys = [k for k, _ in self.edit_keys()]
        for key in [k for k in keys if k != "recon"] + ["recon"]:
            src = run_dir / "composite" / f"{key}.mp4"
            dst = run_dir / f"{video.stem}.{key}.mp4"
            if src.exists():
                tmp = dst.with_name("." + dst.name + ".tmp")
                try:
                    if tmp.exists():
                        tmp.unlink()
                    os.link(src, tmp)  # no copy of a large file where a hard link will do
                except OSError:
                    shutil.copyfile(src, tmp)
                os.replace(tmp, dst)
                outputs.append(dst)
        return outputs

    def run_many(self, input_path: Path, out: Path | None = None, *, recursive: bool = False, engine: str = "local",
                 engine_options: dict[str, Any] | None = None, **kwargs) -> list[VideoResult]:
        """A video, or every video in a folder, with the local or the Ray engine (videdit.engines).

        Failures are reported in the results and the other videos go on. A single video's run folder is
        `out` itself; in folder mode `out` holds one `NAME.videdit/` per video.
        """
        from videdit.engines import ENGINES, run_videos

        if engine not in ENGINES:
            raise VideditError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
        if engine == "ray":
            from videdit.engines.ray_engine import require_ray

            require_ray()
        input_path = Path(input_path)
        self.check_weights(kwargs.get("until"))  # every missing file listed at once, before touching any video
        options = dict(engine_options or {}, **kwargs)
        if input_path.is_dir():
            videos = list_videos(input_path, recursive)
            if not videos:
                raise InputError(f"no videos found in {input_path} (looked for {', '.join(sorted(VIDEO_SUFFIXES))})")
            return run_videos(self, videos, out, engine=engine, **options)
        if not input_path.exists():
            raise InputError(f"no such file or folder: {input_path}")
        run_dir = Path(out) if out else self.default_run_dir(input_path)
        return run_videos(self, [input_path], engine=engine, run_dirs=[run_dir], **options)


class _VideoContext:
    """Builds the Stage objects of one video: each stage's settings, cache key inputs and work function."""

    def __init__(self, pipe: Pipeline, video: Path, run_dir: Path):
        self.pipe, self.video, self.run_dir = pipe, video, run_dir
        self.s = pipe.settings
        self.align_dir, self.encode_dir, self.tune_dir = run_dir / "align", run_dir / "encode", run_dir / "tune"
        self.edit_dir, self.smooth_dir, self.render_dir = run_dir / "edit", run_dir / "smooth", run_dir / "render"
        self.keys = pipe.edit_keys()
        self.direction = self.s.get("edit", {}).get("direction") or ""

    def _settings(self, module, cls_name: str, section: str, extra: dict[str, Any] | None = None):
        return _settings_for(getattr(module, cls_name), self.s.get(section, {}), section, extra)

    def stage_align(self) -> Stage:
        from videdit.stages import align as mod

        settings = self._settings(mod, "AlignSettings", "align", {"device": self.pipe.device_request})

        def fn(work: Path):
            res = mod.run_align(self.video, work, settings)
            self.pipe._say(f"  align: {res.n_frames} frames, face in {res.n_faces_found}, landmarks by {res.backend_used}")

        params = _drop(dataclasses.asdict(settings), "device", "png_compression")  # lossless either way
        return Stage("align", fn, params, {"video": self.video})

    def stage_encode(self) -> Stage:
        from videdit.stages import encode as mod

        settings = self._settings(mod, "EncodeSettings", "encode", {"device": self.pipe.device_request})

        def fn(work: Path):
            enc, latent_avg = self.pipe.encoder()
            mod.run_encode(self.align_dir, work, enc, self.pipe.generator(), latent_avg, settings)

        models = self.pipe.models
        return Stage("encode", fn, _drop(dataclasses.asdict(settings), "device", "batch_size"),
                     {"align": self.align_dir, "encoder": models.encoder_identity(), "generator": models.generator_identity()})

    def stage_tune(self) -> Stage:
        from videdit.stages import tune as mod
        from videdit.tuning import get_tuner

        tuner_name = self.s.get("tune", {}).get("tuner", "pti")
        tuner = get_tuner(tuner_name)  # one line naming the tuners for an unknown name
        runtime = {"device": self.pipe.device_request, "progress": not self.pipe.quiet, "weights_dir": str(self.pipe.weights_dir)}
        settings = _settings_for(tuner.settings_class, self.s.get(tuner.section, {}), tuner.section, runtime)
        settings = tuner.with_generator_file(settings, getattr(self.pipe.models, "generator_path", None))

        def fn(work: Path):
            mod.run_tune(self.align_dir, self.encode_dir / "latents.npy", self.pipe.generator(), work, settings,
                         tuner=tuner_name)

        # Settings that change speed or display, not the result, stay out of the cache key; files a
        # tuner reads (hypernetwork, discriminator) are digested by content.
        params, files = mod.tune_stage_params(tuner_name, settings)
        inputs = {"align": self.align_dir, "encode": self.encode_dir, "generator": self.pipe.models.generator_identity()}
        return Stage("tune", fn, params, dict(inputs, **files))

    def stage_edit(self) -> Stage:
        from videdit.stages import edit as mod

        def fn(work: Path):
            direction = self.pipe.models.edit_direction(self.direction)[0] if self.direction else None
            mod.write_keyed_edits(self.encode_dir / "latents.npy", work, self.keys, direction)

        identity = self.pipe.models.edit_direction(self.direction)[1] if self.direction else ""
        return Stage("edit", fn, {"keys": self.keys, "direction": self.direction},
                     {"encode": self.encode_dir, "direction": identity})

    def stage_smooth(self) -> Stage:
        from videdit.stages import smooth as mod

        settings = self._settings(mod, "SmoothSettings", "smooth")

        def fn(work: Path):
            mod.run_smooth({k: self.edit_dir / f"latents_{k}.npy" for k, _ in self.keys}, self.align_dir / "transforms.npz",
                           work, settings)

        return Stage("smooth", fn, dataclasses.asdict(settings), {"edit": self.edit_dir, "align": self.align_dir})

    def stage_render(self) -> Stage:
        from videdit.stages import render as mod

        settings = self._settings(mod, "RenderSettings", "render")

        def fn(work: Path):
            from videdit.records import OFFSETS

            offsets = self.tune_dir / OFFSETS  # the HyperStyle tuner's per-frame offsets
            mod.run_render(self.tune_dir / "generator.safetensors", self.smooth_dir, [k for k, _ in self.keys], work, settings,
                           source_video=self.video, align_dir=self.align_dir,
                           offsets=offsets if offsets.is_file() else None, device=self.pipe.device)

        return Stage("render", fn, _drop(dataclasses.asdict(settings), "batch_size"),
                     {"tune": self.tune_dir, "smooth": self.smooth_dir, "video": self.video})

    def stage_composite(self) -> Stage:
        from videdit.stages import composite as mod

        settings = self._settings(mod, "CompositeSettings", "composite")

        def fn(work: Path):
            mod.run_composite(self.video, self.align_dir, self.render_dir, [k for k, _ in self.keys], work, settings,
                              generator=self.tune_dir / "generator.safetensors", smooth_dir=self.smooth_dir,
                              device=self.pipe.device)

        inputs = {"render": self.render_dir, "align": self.align_dir, "video": self.video}
        if settings.stitch:  # stitching tuning re-renders from the tuned generator and smoothed latents
            inputs.update(tune=self.tune_dir, smooth=self.smooth_dir)
        return Stage("composite", fn, dataclasses.asdict(settings), inputs)


def _drop(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k not in keys}
