"""StyleCLIP global directions (text-driven StyleSpace edits), as stylegan3-editing computes them.

Text side: delta_i = the normalised difference of CLIP ViT-B/32 text embeddings of the target and the
neutral prompt, each the renormalised mean of the normalised embeddings of the prompt in every template.
Image side (`delta_i_c`, one row per StyleSpace channel): how CLIP's image embedding moves when that channel
is pushed from mean - k*std to mean + k*std. The direction for a prompt: r_c = delta_i_c @ delta_i, channels
with |r_c| < beta zeroed, divided by max |r_c|, times each channel's std, split into S keys. An edit is
S + alpha * direction (`videdit.stylespace.apply_styleclip`).

CLIP is open_clip's implementation; weights are read from a local file only (never downloaded here).
`compute_styleclip_directions` makes `delta_i_c.npy` and `s_stats` for any generator (resumable).
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from videdit import progress
from videdit.checkpoints.styleclip_files import SStats, SStatsUnpickler, clip_state_dict, read_s_stats  # noqa: F401
from videdit.errors import CheckpointError, MissingWeightsError, VideditError

__all__ = [
    "SStats", "styleclip_direction", "prompt_templates", "text_direction", "load_clip", "clip_tokenizer",
    "load_s_stats", "save_s_stats", "load_delta_i_c", "check_s_layout", "text_edit_direction",
    "channel_clip_deltas", "sample_styles", "compute_s_stats", "compute_styleclip_directions", "DirectionsResult",
]

# CLIP's image normalisation (OpenAI's preprocessing), applied after resizing renders to CLIP's input size.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
NEUTRAL = "a face"


def _as_tensor(value: Any) -> torch.Tensor:
    return value.detach().to("cpu", torch.float32) if isinstance(value, torch.Tensor) else torch.as_tensor(np.asarray(value, np.float32))


def _widths(s_std: Mapping[str, Any]) -> dict[str, int]:
    return {key: int(np.shape(value)[-1]) for key, value in s_std.items()}


def styleclip_direction(delta_i_c, s_std: Mapping[str, Any], delta_i, beta: float) -> dict[str, torch.Tensor]:
    """The published get_delta_s arithmetic: a StyleSpace direction ({key: [C]}, in s_std's key order).

    delta_i_c [sum C, D] (rows in s_std key order), s_std {key: [C]}, delta_i [D] (normalised text direction).
    """
    delta_i_c, delta_i = _as_tensor(delta_i_c), _as_tensor(delta_i).reshape(-1)
    widths = _widths(s_std)
    total = sum(widths.values())
    if delta_i_c.ndim != 2 or delta_i_c.shape[0] != total:
        raise VideditError(f"delta_i_c has shape {list(delta_i_c.shape)}; expected [{total}, D] (one row per style channel)")
    if delta_i_c.shape[1] != delta_i.shape[0]:
        raise VideditError(f"delta_i_c rows have {delta_i_c.shape[1]} entries but the text direction has {delta_i.shape[0]} (another CLIP?)")
    r_c = delta_i_c @ delta_i
    r_c = torch.where(r_c.abs() < beta, torch.zeros_like(r_c), r_c)
    peak = r_c.abs().max()
    if peak > 0:  # no channel over beta: a zero direction, as published
        r_c = r_c / peak
    direction, start = {}, 0
    for key, width in widths.items():
        direction[key] = r_c[start:start + width] * _as_tensor(s_std[key])
        start += width
    return direction


# StyleCLIP's global-direction code comments this one out of OpenAI's list ("many a face" is not a face).
_NOT_IN_STYLECLIP = ("a photo of many {}.",)


def prompt_templates() -> list[str]:
    """OpenAI's ImageNet prompt templates as open_clip ships them (80), less the one StyleCLIP drops: 79,
    in open_clip's order: stylegan3-editing's templates.txt, template for template (docs/stylespace.md)."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    templates = [template("{}") for template in OPENAI_IMAGENET_TEMPLATES]
    return [t for t in templates if t not in _NOT_IN_STYLECLIP]


def _read_templates(templates: Sequence[str] | str | os.PathLike | None) -> list[str]:
    if templates is None:
        return prompt_templates()
    if isinstance(templates, (str, os.PathLike)):  # a templates.txt, one per line, as the published code reads it
        path = Path(templates)
        if not path.is_file():
            raise VideditError(f"templates file not found: {path}")
        templates = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    templates = list(templates)
    bad = [t for t in templates if "{}" not in t]
    if not templates or bad:
        raise VideditError(f"prompt templates must each contain '{{}}'; got {bad[:3] or 'none'}")
    return templates


def _unit(x: torch.Tensor) -> torch.Tensor:
    """x / |x| along the last axis; an all-zero vector stays zero instead of becoming NaN."""
    norm = x.norm(dim=-1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


@torch.no_grad()
def _prompt_embedding(model, tokenizer, prompt: str, templates: list[str]) -> torch.Tensor:
    device = next(model.parameters()).device
    tokens = tokenizer([template.format(prompt) for template in templates]).to(device)
    embeddings = _unit(model.encode_text(tokens).float())
    return _unit(embeddings.mean(dim=0))


def text_direction(model, tokenizer, target: str, neutral: str = NEUTRAL, templates=None) -> torch.Tensor:
    """delta_i [D]: normalised (t_target - t_neutral), each t averaged over the prompt templates (CPU float32)."""
    if not str(target).strip():
        raise VideditError("the target text of a StyleCLIP edit is empty")
    templates = _read_templates(templates)
    target_emb = _prompt_embedding(model, tokenizer, target, templates)
    neutral_emb = _prompt_embedding(model, tokenizer, neutral, templates)
    return _unit(target_emb - neutral_emb).cpu()


def _missing(name: str, path: Path) -> MissingWeightsError:
    """The one-line message for a registry file given by path that is not there."""
    from videdit import weights as W

    w = W.get(name)
    return MissingWeightsError(f"{w.filename} not found at {path} ({w.purpose}); get it: {W.fetch_command(w)}")


def load_clip(path: str | os.PathLike, device: str | torch.device = "cpu"):
    """An open_clip CLIP (eval, float32) from a local OpenAI-layout checkpoint: OpenAI's ViT-B-32.pt
    (TorchScript), or its state dict as .pt/.safetensors. The architecture is read off the tensor shapes."""
    from open_clip.model import build_model_from_openai_state_dict

    path = Path(path)
    if not path.is_file():
        raise _missing("clip_vit_b32", path)
    state = clip_state_dict(path)
    needed = ("visual.proj", "visual.conv1.weight", "text_projection", "token_embedding.weight", "positional_embedding")
    absent = [k for k in needed if k not in state]
    if absent:
        raise CheckpointError(f"{path}: not an OpenAI-layout CLIP ViT checkpoint (missing {', '.join(absent)})")
    state.pop("attn_mask", None)  # a buffer open_clip rebuilds itself (present in traced archives)
    try:
        # open_clip builds the architecture from the shapes and loads the weights through float16 (OpenAI's
        # storage type); loading them again in float32 keeps float32 checkpoints exact.
        model = build_model_from_openai_state_dict(dict(state), cast_dtype=None).float()
        model.load_state_dict({k: v for k, v in state.items() if k not in ("input_resolution", "context_length", "vocab_size")})
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(f"{path}: CLIP weights do not fit the architecture read off their shapes ({str(err).splitlines()[0]})") from None
    return model.eval().requires_grad_(False).to(device)


def clip_tokenizer(model):
    """open_clip's BPE tokenizer (the one OpenAI's CLIP uses; its vocabulary ships with open_clip)."""
    from open_clip.tokenizer import SimpleTokenizer

    return SimpleTokenizer(context_length=model.context_length)


# ---- released files: s_stats (pickle) and delta_i_c.npy ------------------------------------------------------

def load_s_stats(path: str | os.PathLike) -> SStats:
    """The `s_stats` file (registry-named one-line error when absent), read without running any code."""
    path = Path(path)
    if not path.is_file():
        raise _missing("styleclip_s_stats", path)
    return read_s_stats(path)


def save_s_stats(path: str | os.PathLike, stats: SStats) -> Path:
    """Write `s_stats` in the released layout (plain floats and float32 arrays only), atomically."""
    path = Path(path)
    payload = [{k: float(v) for k, v in stats.transform.items()},
               {k: np.asarray(v, np.float32) for k, v in stats.mean.items()},
               {k: np.asarray(v, np.float32) for k, v in stats.std.items()}]
    _atomic_write(path, lambda handle: pickle.dump(payload, handle, protocol=4))
    return path


def check_s_layout(widths_have: Mapping[str, int], widths_want: Mapping[str, int], what: str) -> None:
    """One-line error unless two StyleSpace layouts (key -> channels) agree, key order included."""
    if list(widths_have.items()) != list(widths_want.items()):
        total_have, total_want = sum(widths_have.values()), sum(widths_want.values())
        diff = [k for k in widths_want if widths_have.get(k) != widths_want[k]] or [k for k in widths_have if k not in widths_want]
        raise VideditError(f"{what} has {total_have} style channels but the generator has {total_want} "
                           f"(first differing key: {diff[0] if diff else 'key order'}); it was made for another generator")


def load_delta_i_c(path: str | os.PathLike, s_std: Mapping[str, Any]) -> torch.Tensor:
    """delta_i_c.npy as float32 [sum C, D], checked to have one row per channel of s_std."""
    path = Path(path)
    if not path.is_file():
        raise _missing("styleclip_delta_i_c", path)
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise CheckpointError(f"{path}: not a readable .npy array ({str(err).splitlines()[0] if str(err) else type(err).__name__})") from None
    total = sum(_widths(s_std).values())
    if array.ndim != 2 or array.dtype.kind != "f":
        raise CheckpointError(f"{path}: delta_i_c must be a 2-D float array, found {array.dtype} {list(array.shape)}")
    if array.shape[0] != total:
        raise VideditError(f"{path}: delta_i_c has {array.shape[0]} rows but the generator has {total} style channels "
                           "(it was made for another generator; make one with `videdit directions styleclip`)")
    return torch.from_numpy(array.astype(np.float32))


def text_edit_direction(target: str, *, beta: float, synthesis=None, neutral: str = NEUTRAL, weights_dir=None,
                        clip_path=None, delta_i_c_path=None, s_stats_path=None, templates=None) -> dict[str, torch.Tensor]:
    """The StyleSpace direction of a text edit, from the registry's (or the given) CLIP, delta_i_c and s_stats.

    Every missing file is named in one MissingWeightsError. With `synthesis`, the files must match its layout.
    """
    from videdit import weights as W

    wdir = W.resolve_weights_dir(weights_dir)
    given = {"clip_vit_b32": clip_path, "styleclip_delta_i_c": delta_i_c_path, "styleclip_s_stats": s_stats_path}
    missing = [W.get(name) for name, p in given.items() if p is None and W.find(W.get(name), wdir) is None]
    missing += [W.get(name) for name, p in given.items() if p is not None and not Path(p).is_file()]
    if missing:
        raise MissingWeightsError(W.missing_message(missing, wdir))
    paths = {name: Path(p) if p is not None else W.find(W.get(name), wdir) for name, p in given.items()}
    stats = load_s_stats(paths["styleclip_s_stats"])
    if synthesis is not None:
        check_s_layout(_widths(stats.std), synthesis.style_widths(), f"s_stats {paths['styleclip_s_stats']}")
    delta_i_c = load_delta_i_c(paths["styleclip_delta_i_c"], stats.std)
    model = load_clip(paths["clip_vit_b32"])
    delta_i = text_direction(model, clip_tokenizer(model), target, neutral, templates)
    return styleclip_direction(delta_i_c, stats.std, delta_i, beta)


# ---- making delta_i_c and s_stats for a generator --------------------------------------------------------------

def _atomic_write(path: Path, write: Callable) -> None:
    """write(handle) fills the file; it lands at `path` complete or not at all."""
    from videdit.fileio import atomic_path

    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)


def _z_batches(seed: int, count: int, z_dim: int, batch: int):
    """The published sampling (numpy RandomState(seed).randn(count, z_dim)), produced batch by batch."""
    rng = np.random.RandomState(seed)
    for start in range(0, count, batch):
        yield torch.from_numpy(rng.randn(min(batch, count - start), z_dim).astype(np.float32))


@torch.no_grad()
def sample_styles(G, count: int, *, truncation_psi: float = 0.7, seed: int = 0, batch_size: int = 1024):
    """S codes of the first `count` latents of the seed's stream, batch by batch: {key: [count, C]} (CPU)."""
    device = next(G.parameters()).device
    for z in _z_batches(seed, count, G.z_dim, batch_size):
        yield G.synthesis.w_to_s(G.mapping(z.to(device), None, truncation_psi=truncation_psi), per_sample=False)


@torch.no_grad()
def compute_s_stats(G, num_samples: int, *, truncation_psi: float = 0.7, seed: int = 0, batch_size: int = 1024) -> SStats:
    """S mean/std over `num_samples` latents (float64 sums) and the mean input pose (published: 100,000 latents)."""
    sums: dict[str, torch.Tensor] = {}
    squares: dict[str, torch.Tensor] = {}
    theta = x = y = 0.0
    seen = 0
    bar = progress.bar(num_samples, "s_stats", "sample")
    for styles in sample_styles(G, num_samples, truncation_psi=truncation_psi, seed=seed, batch_size=batch_size):
        bar.update(styles["input"].shape[0])
        for key, value in styles.items():
            value64 = value.double()
            sums[key] = sums.get(key, 0) + value64.sum(0)
            squares[key] = squares.get(key, 0) + value64.square().sum(0)
        pose = styles["input"].double()
        theta += torch.arccos(pose[:, 0].clamp(-1, 1)).sum().item()
        x += pose[:, 2].sum().item()
        y += pose[:, 3].sum().item()
        seen += pose.shape[0]
    bar.close()
    mean = {k: (v / seen) for k, v in sums.items()}
    std = {k: (squares[k] / seen - mean[k].square()).clamp_min(0).sqrt() for k in sums}
    return SStats({"theta": theta / seen, "x": x / seen, "y": y / seen},
                  {k: v.float().cpu().numpy() for k, v in mean.items()},
                  {k: v.float().cpu().numpy() for k, v in std.items()})


@torch.no_grad()
def _clip_image_features(G, clip_model, styles: Mapping[str, torch.Tensor], batch_size: int) -> torch.Tensor:
    """Render S at the identity transform, resize to CLIP's input (bicubic), CLIP-normalise, encode: [N, D]."""
    import torch.nn.functional as F

    device = next(G.parameters()).device
    size = clip_model.visual.image_size
    size = size if isinstance(size, (tuple, list)) else (size, size)
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
    identity = torch.eye(3, device=device)
    count = styles["input"].shape[0]
    features = []
    for start in range(0, count, batch_size):
        chunk = {k: v[start:start + batch_size].to(device) for k, v in styles.items()}
        images = G.synthesis(None, transform=identity, styles=chunk)
        images = F.interpolate(images, size=tuple(size), mode="bicubic", align_corners=True)
        images = ((images + 1) / 2).clamp(0, 1)
        features.append(clip_model.encode_image((images - mean) / std).float())
    return torch.cat(features)


@torch.no_grad()
def channel_clip_deltas(G, clip_model, samples: Mapping[str, torch.Tensor], stats: SStats, key: str,
                        channels: Sequence[int], strength: float = 5.0, batch_size: int = 8) -> np.ndarray:
    """delta_i_c rows [len(channels), D] for channels of `key`, from the S codes `samples` ([n, C] each).

    Each channel is set to mean -/+ strength*std in every sample (the others keep the sample's values; unlike
    the published script, the previous channel is not left pushed), rendered and CLIP-encoded; the row is the
    renormalised mean over samples of unit(unit(f+) - unit(f-)).
    """
    count = samples["input"].shape[0]
    rows = []
    for channel in channels:
        pushed = {k: v.repeat(2, 1) for k, v in samples.items()}
        column = pushed[key].clone()
        centre, spread = float(stats.mean[key][channel]), float(stats.std[key][channel])
        column[:count, channel] = centre - strength * spread
        column[count:, channel] = centre + strength * spread
        pushed[key] = column
        features = _unit(_clip_image_features(G, clip_model, pushed, batch_size).double())
        deltas = _unit(features[count:] - features[:count])
        rows.append(_unit(deltas.mean(0)).float().cpu())
    return torch.stack(rows).numpy()


def _state_digest(module: torch.nn.Module) -> str:
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().to("cpu").contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class DirectionsResult:
    delta_i_c: Path
    s_stats: Path
    chunks_computed: int
    chunks_reused: int


def compute_styleclip_directions(G, clip_model, out_dir: str | os.PathLike, num_samples: int = 300, *,
                                 stats_samples: int = 100_000, strength: float = 5.0, truncation_psi: float = 0.7,
                                 seed: int = 0, batch_size: int = 8, chunk_channels: int = 64,
                                 quiet: bool = False) -> DirectionsResult:
    """Make `s_stats` and `delta_i_c.npy` for generator G in out_dir (the published preprocessing).

    s_stats: S mean/std over `stats_samples` latents at `truncation_psi`. delta_i_c: `channel_clip_deltas` for
    every channel of every S key, on the first `num_samples` of those latents (strength 5 for faces, 10 for
    other domains in the published runs). Resumable: each chunk of `chunk_channels` channels of a layer is
    saved (atomically) under out_dir/partial/ and reused by a rerun with the same settings.
    """
    if not 1 <= num_samples <= stats_samples:
        raise VideditError(f"--samples must be between 1 and the statistics sample count ({stats_samples}); got {num_samples}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    widths = G.synthesis.style_widths()
    settings = {"num_samples": num_samples, "stats_samples": stats_samples, "strength": strength,
                "truncation_psi": truncation_psi, "seed": seed, "generator": _state_digest(G),
                "clip": _state_digest(clip_model), "widths": widths}
    settings_path = out / "settings.json"
    if settings_path.is_file() and json.loads(settings_path.read_text()) != settings:
        raise VideditError(f"{out} holds results made with other settings or models; use another --out or delete it")
    _atomic_write(settings_path, lambda h: h.write(json.dumps(settings, indent=1).encode()))

    was_training = G.training
    G.eval()
    try:
        return _compute_directions(G, clip_model, out, widths, num_samples, stats_samples, strength, truncation_psi,
                                   seed, batch_size, chunk_channels, quiet)
    finally:
        G.train(was_training)


def _compute_directions(G, clip_model, out: Path, widths: dict[str, int], num_samples: int, stats_samples: int,
                        strength: float, truncation_psi: float, seed: int, batch_size: int, chunk_channels: int,
                        quiet: bool) -> DirectionsResult:
    stats_path = out / "s_stats"
    if stats_path.is_file():  # a resumed run
        stats = load_s_stats(stats_path)
    else:
        stats = compute_s_stats(G, stats_samples, truncation_psi=truncation_psi, seed=seed)
        save_s_stats(stats_path, stats)
    # The pushed samples are the first latents of the statistics' stream (as published), mapped in one batch so
    # that a resumed run gets the same bits.
    samples = next(sample_styles(G, num_samples, truncation_psi=truncation_psi, seed=seed, batch_size=num_samples))
    samples = {k: v.cpu() for k, v in samples.items()}
    partial_dir = out / "partial"
    partial_dir.mkdir(exist_ok=True)
    chunks = [(key, start, min(start + chunk_channels, width)) for key, width in widths.items()
              for start in range(0, width, chunk_channels)]
    chunk_path = {c: partial_dir / f"{c[0]}.{c[1]:05d}-{c[2]:05d}.npy" for c in chunks}
    done = [c for c in chunks if chunk_path[c].is_file()]
    computed = 0
    with progress.bar(sum(widths.values()), "delta_i_c", "ch", initial=sum(e - s for _, s, e in done),
                      enabled=not quiet) as bar:
        for chunk in chunks:
            if chunk in done:
                continue
            key, start, end = chunk
            rows = channel_clip_deltas(G, clip_model, samples, stats, key, range(start, end), strength, batch_size)
            _atomic_write(chunk_path[chunk], lambda h, rows=rows: np.save(h, rows))
            computed += 1
            bar.update(end - start)
    delta_i_c = np.concatenate([np.load(chunk_path[c]) for c in chunks]).astype(np.float32)
    result_path = out / "delta_i_c.npy"
    _atomic_write(result_path, lambda h: np.save(h, delta_i_c))
    return DirectionsResult(result_path, stats_path, computed, len(done))
