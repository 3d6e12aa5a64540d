"""Every checkpoint videdit knows: where it goes, where to get it, whether it is here.

The registry is data (`KNOWN_WEIGHTS`); functions locate, check, fetch and add files. Nothing here
imports torch, so `videdit weights list` and the up-front check of `videdit run` stay fast.
"""
from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from videdit.cachedirs import torch_hub_checkpoints_dir, user_cache_dir
from videdit.errors import CheckpointError, MissingWeightsError, VideditError
from videdit.fileio import file_sha256

STYLEGAN3_EDITING = "https://github.com/yuval-alaluf/stylegan3-editing"
# Pinned to a commit rather than `main`, so a fetch always gets the files these entries describe:
# at this commit configs/paths_config.py names editing/interfacegan/boundaries/ffhq/*.npy.
STYLEGAN3_EDITING_COMMIT = "f101edafccbb6dfeb8a419b96ae655121f3ce122"
_BOUNDARIES = (
    f"https://raw.githubusercontent.com/yuval-alaluf/stylegan3-editing/{STYLEGAN3_EDITING_COMMIT}"
    "/editing/interfacegan/boundaries/ffhq"
)
# State-dict names that identify each torch weights file (see checkpoints/content.py).
_TORCHVISION_KEYS = ("features.0.weight", "classifier.6.weight")
_IR_BACKBONE_KEYS = ("input_layer.0.weight",)


@dataclass(frozen=True)
class WeightFile:
    name: str  # short registry name used on the command line
    filename: str  # file name on disk
    purpose: str
    url: str | None  # direct download URL; None when only a manual download exists
    how_to_get: str  # one phrase for humans
    sha256: str | None = None  # full digest when known
    sha256_prefix: str | None = None  # torchvision-style hash prefix embedded in the file name
    location: str = "weights"  # "weights" (videdit's folder) or "torch_hub" (torch's checkpoint cache)
    license: str = ""
    optional: bool = False
    content: str | None = None  # what it must hold: a kind of videdit.checkpoints.content.CONTENT_KINDS (None: digest only)
    keys: tuple[str, ...] = ()  # state-dict names a "torch_state_dict" must hold


KNOWN_WEIGHTS: tuple[WeightFile, ...] = (
    WeightFile(
        "restyle_e4e", "restyle_e4e_ffhq.pt",
        "ReStyle-e4e encoder for the aligned StyleGAN3-R FFHQ generator (its decoder is the pipeline's generator)",
        None, f"download 'ReStyle-e4e (FFHQ)' from the Pretrained Models table of {STYLEGAN3_EDITING}",
        license="MIT (stylegan3-editing); the generator inside follows NVIDIA's licence", content="restyle",
    ),
    WeightFile(
        "restyle_psp", "restyle_pSp_ffhq.pt", "ReStyle-pSp encoder (alternative to e4e: better reconstruction, worse edits)",
        None, f"download 'ReStyle-pSp (FFHQ)' from the Pretrained Models table of {STYLEGAN3_EDITING}",
        license="MIT (stylegan3-editing)", optional=True, content="restyle",
    ),
    WeightFile(
        "stylegan3_r_ffhq", "stylegan3-r-ffhq-1024x1024.pkl",
        "NVIDIA StyleGAN3-R FFHQ 1024 snapshot (G, G_ema and D; D is needed by the local-tweak tuner)",
        "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/stylegan3-r-ffhq-1024x1024.pkl",
        "NVIDIA NGC, stylegan3 model files", license="NVIDIA Source Code License (non-commercial)", optional=True,
        content="stylegan_pickle",
    ),
    WeightFile(
        "sg3_r_ffhq_pt", "sg3-r-ffhq-1024.pt", "the same generator as a plain state dict (stylegan3-editing)",
        None, f"download 'StyleGAN3 FFHQ (pt)' from {STYLEGAN3_EDITING}, or `videdit weights convert` the .pkl",
        license="NVIDIA Source Code License (non-commercial)", optional=True, content="generator_state_dict",
    ),
    WeightFile("edit_age", "age_boundary.npy", "InterFaceGAN age direction (aligned FFHQ SG3-R)", f"{_BOUNDARIES}/age_boundary.npy",
               f"{STYLEGAN3_EDITING} editing/interfacegan/boundaries/ffhq/", license="MIT (stylegan3-editing)", optional=True,
               content="boundary"),
    WeightFile("edit_smile", "Smiling_boundary.npy", "InterFaceGAN smile direction", f"{_BOUNDARIES}/Smiling_boundary.npy",
               f"{STYLEGAN3_EDITING} editing/interfacegan/boundaries/ffhq/", license="MIT (stylegan3-editing)", optional=True,
               content="boundary"),
    WeightFile("edit_pose", "pose_boundary.npy", "InterFaceGAN pose direction", f"{_BOUNDARIES}/pose_boundary.npy",
               f"{STYLEGAN3_EDITING} editing/interfacegan/boundaries/ffhq/", license="MIT (stylegan3-editing)", optional=True,
               content="boundary"),
    WeightFile("edit_gender", "Male_boundary.npy", "InterFaceGAN gender direction", f"{_BOUNDARIES}/Male_boundary.npy",
               f"{STYLEGAN3_EDITING} editing/interfacegan/boundaries/ffhq/", license="MIT (stylegan3-editing)", optional=True,
               content="boundary"),
    WeightFile(
        "clip_vit_b32", "ViT-B-32.pt", "OpenAI CLIP ViT-B/32 (text side of StyleCLIP edits; `videdit directions styleclip`)",
        "https://openaipublic.azureedge.net/clip/models/40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af/ViT-B-32.pt",
        "OpenAI's CLIP release (the URL open_clip and openai/CLIP use)",
        sha256="40d365715913c9da98579312b702a82c18be219cc2a73407c4526f58eba950af", license="MIT (OpenAI CLIP)", optional=True,
        content="clip",
    ),
    WeightFile(
        "styleclip_delta_i_c", "styleclip/sg3-r-ffhq-1024/delta_i_c.npy",
        "StyleCLIP global directions: CLIP image change per style channel of the FFHQ SG3-R generator",
        None, f"download sg3-r-ffhq-1024/delta_i_c.npy (Google Drive id 1HOUGvtumLFwjbwOZrTbIloAwBBzs2NBN, as "
              f"editing/styleclip_global_directions/preprocess/download_all_files.py of {STYLEGAN3_EDITING} does), "
              "or make one with `videdit directions styleclip`",
        license="MIT (stylegan3-editing)", optional=True,
        content="delta_i_c",
    ),
    WeightFile(
        "styleclip_s_stats", "styleclip/sg3-r-ffhq-1024/s_stats",
        "StyleCLIP global directions: per-channel style mean/std of the FFHQ SG3-R generator (a pickle; read without running code)",
        None, f"download sg3-r-ffhq-1024/s_stats (Google Drive id 1FVm_Eh7qmlykpnSBN1Iy533e_A2xM78z, as "
              f"editing/styleclip_global_directions/preprocess/download_all_files.py of {STYLEGAN3_EDITING} does), "
              "or make one with `videdit directions styleclip`",
        license="MIT (stylegan3-editing)", optional=True,
        content="s_stats",
    ),
    WeightFile(
        "arcface_ir_se50", "model_ir_se50.pth", "ArcFace IR-SE50 face recognition (identity metric of `videdit eval`)",
        None, f"download 'IR-SE50 Model' (TreB1eN's InsightFace_Pytorch) linked from {STYLEGAN3_EDITING}",
        license="MIT (InsightFace_Pytorch)", optional=True, content="torch_state_dict", keys=_IR_BACKBONE_KEYS,
    ),
    WeightFile(
        "curricularface", "CurricularFace_Backbone.pth", "CurricularFace backbone (stronger identity metric of `videdit eval`)",
        None, f"download 'CurricularFace Backbone' linked from {STYLEGAN3_EDITING}", license="MIT (CurricularFace)", optional=True,
        content="torch_state_dict", keys=_IR_BACKBONE_KEYS,
    ),
    WeightFile(
        "lpips_alexnet", "alexnet-owt-7be5be79.pth", "AlexNet backbone of the LPIPS loss used by PTI tuning",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "torchvision model zoo",
        sha256_prefix="7be5be79", location="torch_hub", license="BSD-3-Clause (torchvision)", content="torch_state_dict", keys=_TORCHVISION_KEYS,
    ),
    WeightFile(
        "lpips_vgg", "vgg16-397923af.pth", "VGG16 backbone of LPIPS (--set tune.lpips_net=vgg)",
        "https://download.pytorch.org/models/vgg16-397923af.pth", "torchvision model zoo",
        sha256_prefix="397923af", location="torch_hub", license="BSD-3-Clause (torchvision)", optional=True,
        content="torch_state_dict", keys=_TORCHVISION_KEYS,
    ),
    WeightFile(
        "fan_detector", "s3fd-619a316812.pth", "face-alignment's S3FD face detector (optional landmark backend)",
        "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth", "face-alignment's download location",
        sha256_prefix="619a316812", location="torch_hub", license="BSD-3-Clause (face-alignment)", optional=True,
        content="torch_state_dict", keys=("conv1_1.weight",),
    ),
    WeightFile(
        "fan_2d", "2DFAN4-11f355bf06.pth.tar", "face-alignment's 2D FAN landmark model (optional landmark backend)",
        "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar", "face-alignment's download location",
        sha256_prefix="11f355bf06", location="torch_hub", license="BSD-3-Clause (face-alignment)", optional=True,
        content="torch_state_dict", keys=("conv1.weight",),
    ),
)

# Names accepted by `--edit NAME` -> registry entry.
EDIT_DIRECTIONS = {"age": "edit_age", "smile": "edit_smile", "pose": "edit_pose", "gender": "edit_gender"}


def registry() -> dict[str, WeightFile]:
    return {w.name: w for w in KNOWN_WEIGHTS}


def get(name: str) -> WeightFile:
    reg = registry()
    if name not in reg:
        by_file = {w.filename: w for w in KNOWN_WEIGHTS}
        if name in by_file:
            return by_file[name]
        raise VideditError(f"unknown weights {name!r}; known: {', '.join(reg)}")
    return reg[name]


def resolve_weights_dir(explicit: str | os.PathLike | None = None) -> Path:
    """--weights-dir, else $VIDEDIT_WEIGHTS, else ./weights when it exists, else the user cache folder."""
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("VIDEDIT_WEIGHTS")
    if env:
        return Path(env).expanduser()
    local = Path.cwd() / "weights"
    if local.is_dir():
        return local
    return user_cache_dir() / "weights"


def expected_path(w: WeightFile, weights_dir: Path) -> Path:
    if w.location == "torch_hub":
        return torch_hub_checkpoints_dir() / w.filename
    return weights_dir / w.filename


def find(w: WeightFile, weights_dir: Path) -> Path | None:
    """Where the file is, if anywhere we look (torch-hub files may also sit in the weights folder)."""
    candidates = [expected_path(w, weights_dir), weights_dir / w.filename]
    for c in candidates:
        if c.is_file() and c.stat().st_size > 0:
            return c
    return None


def verify(w: WeightFile, path: Path) -> str:
    """'ok', 'mismatch' or 'unknown' (no digest on record)."""
    if not (w.sha256 or w.sha256_prefix):
        return "unknown"
    digest = file_sha256(path)
    if w.sha256:
        return "ok" if digest == w.sha256 else "mismatch"
    return "ok" if digest.startswith(w.sha256_prefix) else "mismatch"


def fetch_command(w: WeightFile) -> str:
    if w.url:
        return f"videdit weights fetch {w.name}"
    return f"{w.how_to_get}, then `videdit weights add FILE --as {w.name}`"


def missing_message(missing: list[WeightFile], weights_dir: Path) -> str:
    lines = [f"{len(missing)} weight file(s) missing:"]
    for w in missing:
        lines.append(f"  - {w.filename} ({w.purpose}) -> {expected_path(w, weights_dir)}; get it: {fetch_command(w)}")
    return "\n".join(lines)


def require(names: list[str], weights_dir: Path) -> dict[str, Path]:
    """Paths of all named files, or one MissingWeightsError listing every missing file at once."""
    found: dict[str, Path] = {}
    missing: list[WeightFile] = []
    for name in names:
        w = get(name)
        p = find(w, weights_dir)
        if p is None:
            missing.append(w)
        else:
            found[name] = p
    if missing:
        raise MissingWeightsError(missing_message(missing, weights_dir))
    return found


def fetch(w: WeightFile, weights_dir: Path, *, timeout: float = 30.0, quiet: bool = False) -> Path:
    """Download with a progress bar; resumes a `.part` file with an HTTP Range request; `check_file`
    before renaming into place (a failed check deletes the download)."""
    import urllib.error
    import urllib.request

    if not w.url:
        raise VideditError(f"{w.filename} has no direct download: {w.how_to_get}, then `videdit weights add FILE --as {w.name}`")
    dest = expected_path(w, weights_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(w.url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VideditError(f"could not download {w.filename} from {w.url}: {reason} (offline? copy the file to {dest} or use `videdit weights add`)") from None
    with resp:
        if have and getattr(resp, "status", 200) != 206:  # server ignored Range: start over
            have = 0
        total = resp.headers.get("Content-Length")
        total = int(total) + have if total else None
        from tqdm import tqdm

        with open(part, "ab" if have else "wb") as out, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, desc=w.filename, disable=quiet, file=sys.stderr
        ) as bar:
            while block := resp.read(1 << 20):
                out.write(block)
                bar.update(len(block))
    got = part.stat().st_size
    if total is not None and got < total:  # the connection dropped: keep the .part for the next try
        raise VideditError(f"download of {w.filename} interrupted at {got} of {total} bytes; run the same command again to resume")
    try:
        check_file(w, part, shown=f"{w.filename} from {w.url}")
    except CheckpointError as err:
        part.unlink()
        raise CheckpointError(f"{err}; the download was deleted") from None
    os.replace(part, dest)
    return dest


def check_file(w: WeightFile, path: Path, *, shown: str | None = None) -> None:
    """Raise a one-line CheckpointError unless `path` is what entry `w` says: its content (an HTML or
    text page is named as such; format, keys and shapes; no code from the file is run), then its
    digest where one is recorded."""
    from videdit.checkpoints.content import check_weight_file

    shown = shown or str(path)
    if w.content is not None:
        check_weight_file(path, w.content, keys=w.keys, shown=shown)
    if verify(w, path) == "mismatch":
        raise CheckpointError(f"{shown} does not match the sha256 recorded for {w.filename}")


def add(src: Path, weights_dir: Path, name: str | None = None) -> Path:
    """Copy a file the user already has into place under its canonical name, after `check_file`."""
    src = Path(src)
    if not src.is_file():
        raise VideditError(f"no such file: {src}")
    if name is None:
        matches = [w for w in KNOWN_WEIGHTS if w.filename == src.name]
        if not matches:
            raise VideditError(f"cannot tell which weights {src.name} is; pass --as NAME (one of: {', '.join(registry())})")
        w = matches[0]
    else:
        w = get(name)
    check_file(w, src)
    dest = expected_path(w, weights_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.resolve() != src.resolve():
        from videdit.fileio import atomic_save

        atomic_save(dest, lambda tmp: shutil.copyfile(src, tmp))
    return dest


@dataclass(frozen=True)
class WeightStatus:
    weight: WeightFile
    path: Path | None
    expected: Path


def status(weights_dir: Path) -> list[WeightStatus]:
    return [WeightStatus(w, find(w, weights_dir), expected_path(w, weights_dir)) for w in KNOWN_WEIGHTS]
