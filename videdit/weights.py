"""Every checkpoint videdit knows: where it goes, where to get it, whether it is here and intact.

The registry is data (`KNOWN_WEIGHTS`); functions locate, check, fetch and add files. Nothing here
imports torch, so `videdit weights list` and the up-front check of `videdit run` stay fast.

A file is put in place only after it passed two checks: its content (`videdit.checkpoints.content`:
format, keys and shapes, no code run) and its sha256, against the digest pinned in the registry where
one is published, else against the digest recorded in the weights folder (`.sha256.json`) when the
file was first fetched or added, trust on first use. The HTTP side (resume, progress, Google Drive's
confirmation page) is `videdit.download`.
"""
from __future__ import annotations

import fnmatch
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from videdit.cachedirs import torch_hub_checkpoints_dir, user_cache_dir
from videdit.errors import CheckpointError, DownloadError, MissingWeightsError, VideditError
from videdit.fileio import file_sha256

STYLEGAN3_EDITING = "https://github.com/yuval-alaluf/stylegan3-editing"
# Pinned to a commit rather than `main`, so a fetch always gets the files these entries describe:
# at this commit configs/paths_config.py names editing/interfacegan/boundaries/ffhq/*.npy.
STYLEGAN3_EDITING_COMMIT = "f101edafccbb6dfeb8a419b96ae655121f3ce122"
_BOUNDARIES = (
    f"https://raw.githubusercontent.com/yuval-alaluf/stylegan3-editing/{STYLEGAN3_EDITING_COMMIT}"
    "/editing/interfacegan/boundaries/ffhq"
)
_SG3_README = f"{STYLEGAN3_EDITING}#readme"
_STYLECLIP_FILES = f"{STYLEGAN3_EDITING}/blob/{STYLEGAN3_EDITING_COMMIT}/editing/styleclip_global_directions/preprocess/download_all_files.py"
# State-dict names that identify each torch weights file (see checkpoints/content.py).
_TORCHVISION_KEYS = ("features.0.weight", "classifier.6.weight")
_IR_BACKBONE_KEYS = ("input_layer.0.weight",)
DIGEST_RECORD = ".sha256.json"  # in the weights folder: registry name -> sha256, size, origin


@dataclass(frozen=True)
class WeightFile:
    name: str  # short registry name used on the command line
    filename: str  # file name on disk (a relative path for files kept in a subfolder)
    purpose: str
    url: str | None  # direct download URL (None: Google Drive, see drive_id)
    how_to_get: str  # where it is published, one phrase for humans
    sha256: str | None = None  # full digest when published
    sha256_prefix: str | None = None  # torchvision-style hash prefix embedded in the file name
    location: str = "weights"  # "weights" (videdit's folder) or "torch_hub" (torch's checkpoint cache)
    license: str = ""
    optional: bool = False
    content: str | None = None  # what it must hold: a kind of videdit.checkpoints.content.CONTENT_KINDS (None: digest only)
    keys: tuple[str, ...] = ()  # state-dict names a "torch_state_dict" must hold
    drive_id: str | None = None  # Google Drive file id, for files published only there

    @property
    def page(self) -> str | None:
        """The address a person opens to download the file by hand."""
        return f"https://drive.google.com/file/d/{self.drive_id}/view" if self.drive_id else self.url


def _drive(name, filename, purpose, drive_id, how_to_get, **kwargs) -> WeightFile:
    return WeightFile(name, filename, purpose, None, how_to_get, drive_id=drive_id, **kwargs)


KNOWN_WEIGHTS: tuple[WeightFile, ...] = (
    _drive(
        "restyle_e4e", "restyle_e4e_ffhq.pt",
        "ReStyle-e4e encoder for the aligned StyleGAN3-R FFHQ generator (its decoder is the pipeline's generator)",
        "1z_cB187QOc6aqVBdLvYvBjoc93-_EuRm", f"'ReStyle-e4e Human Faces' in {_SG3_README} (Google Drive)",
        license="MIT (stylegan3-editing); the generator inside follows NVIDIA's licence", content="restyle",
    ),
    _drive(
        "restyle_psp", "restyle_pSp_ffhq.pt", "ReStyle-pSp encoder (alternative to e4e: better reconstruction, worse edits)",
        "12WZi2a9ORVg-j6d9x4eF-CKpLaURC2W-", f"'ReStyle-pSp Human Faces' in {_SG3_README} (Google Drive)",
        license="MIT (stylegan3-editing)", optional=True, content="restyle",
    ),
    WeightFile(
        "stylegan3_r_ffhq", "stylegan3-r-ffhq-1024x1024.pkl",
        "NVIDIA StyleGAN3-R FFHQ 1024 snapshot (G, G_ema and D; D is needed by the local-tweak tuner)",
        "https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/files/stylegan3-r-ffhq-1024x1024.pkl",
        "NVIDIA NGC, stylegan3 model files", license="NVIDIA Source Code License (non-commercial)", optional=True,
        content="stylegan_pickle",
    ),
    _drive(
        "sg3_r_ffhq_pt", "sg3-r-ffhq-1024.pt", "the same generator as a plain state dict (stylegan3-editing)",
        "13q6m-bpe3Ws9en9y45JEx2PHQirStt8N", f"'FFHQ Aligned StyleGAN3' in {_SG3_README} (Google Drive), "
        "or `videdit weights convert` the .pkl",
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
    _drive(
        "styleclip_delta_i_c", "styleclip/sg3-r-ffhq-1024/delta_i_c.npy",
        "StyleCLIP global directions: CLIP image change per style channel of the FFHQ SG3-R generator",
        "1HOUGvtumLFwjbwOZrTbIloAwBBzs2NBN", f"sg3-r-ffhq-1024/delta_i_c.npy of {_STYLECLIP_FILES} (Google Drive), "
        "or make one with `videdit directions styleclip`",
        license="MIT (stylegan3-editing)", optional=True, content="delta_i_c",
    ),
    _drive(
        "styleclip_s_stats", "styleclip/sg3-r-ffhq-1024/s_stats",
        "StyleCLIP global directions: per-channel style mean/std of the FFHQ SG3-R generator (a pickle; read without running code)",
        "1FVm_Eh7qmlykpnSBN1Iy533e_A2xM78z", f"sg3-r-ffhq-1024/s_stats of {_STYLECLIP_FILES} (Google Drive), "
        "or make one with `videdit directions styleclip`",
        license="MIT (stylegan3-editing)", optional=True, content="s_stats",
    ),
    _drive(
        "arcface_ir_se50", "model_ir_se50.pth", "ArcFace IR-SE50 face recognition (identity metric of `videdit eval`)",
        "1KW7bjndL3QG3sxBbZxreGHigcCCpsDgn", f"'IR-SE50 Model' (TreB1eN's InsightFace_Pytorch) in {_SG3_README} (Google Drive)",
        license="MIT (InsightFace_Pytorch)", optional=True, content="torch_state_dict", keys=_IR_BACKBONE_KEYS,
    ),
    _drive(
        "curricularface", "CurricularFace_Backbone.pth", "CurricularFace backbone (stronger identity metric of `videdit eval`)",
        "1f4IwVa2-Bn9vWLwB-bUwm53U_MlvinAj", f"'CurricularFace Backbone' in {_SG3_README} (Google Drive)",
        license="MIT (CurricularFace)", optional=True, content="torch_state_dict", keys=_IR_BACKBONE_KEYS,
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


def recorded_digests(weights_dir: Path) -> dict[str, dict]:
    """The digests recorded in `weights_dir` when files were first fetched or added (name -> record)."""
    path = Path(weights_dir) / DIGEST_RECORD
    try:
        records = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise VideditError(f"{path} is unreadable ({err}); delete it to record the digests again") from None
    return records if isinstance(records, dict) else {}


def record_digest(weights_dir: Path, w: WeightFile, digest: str, size: int, origin: str) -> None:
    from videdit.fileio import atomic_write_text

    records = recorded_digests(weights_dir)
    records[w.name] = {"file": w.filename, "sha256": digest, "size": size, "from": origin}
    Path(weights_dir).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(weights_dir) / DIGEST_RECORD, json.dumps(records, indent=1, sort_keys=True) + "\n")


def compare_digest(w: WeightFile, digest: str, weights_dir: Path | None) -> tuple[str, str]:
    """(state, against): state 'ok', 'mismatch' or 'unknown'; against 'pinned', 'recorded' or ''."""
    if w.sha256 or w.sha256_prefix:
        ok = digest == w.sha256 if w.sha256 else digest.startswith(w.sha256_prefix)
        return ("ok" if ok else "mismatch"), "pinned"
    record = recorded_digests(weights_dir).get(w.name) if weights_dir is not None else None
    if record and record.get("sha256"):
        return ("ok" if record["sha256"] == digest else "mismatch"), "recorded"
    return "unknown", ""


def verify(w: WeightFile, path: Path, weights_dir: Path | None = None) -> str:
    """'ok (pinned)', 'ok (recorded)', 'mismatch (pinned)', 'mismatch (recorded)' or 'unknown'."""
    state, against = compare_digest(w, file_sha256(path), weights_dir)
    return f"{state} ({against})" if against else state


def fetch_command(w: WeightFile) -> str:
    if w.url or w.drive_id:
        return f"videdit weights fetch {w.name}"
    return f"{w.how_to_get}, then `videdit weights add FILE --as {w.name}`"


def missing_message(missing: list[WeightFile], weights_dir: Path) -> str:
    lines = [f"{len(missing)} weight file(s) missing:"]
    for w in missing:
        lines.append(f"  - {w.filename} ({w.purpose}) -> {expected_path(w, weights_dir)}; get it: {fetch_command(w)}")
    if len(missing) > 1:
        lines.append(f"  all at once: videdit weights fetch {' '.join(w.name for w in missing)}")
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


def manual_step(w: WeightFile, weights_dir: Path) -> str:
    """How to get the file without `fetch`: one phrase naming the address and where the file goes."""
    where = expected_path(w, weights_dir)
    get_it = f"open {w.page} in a browser and download it" if w.drive_id else "download that address on any machine that can"
    return f"by hand: {get_it}, then `videdit weights add FILE --as {w.name}` (it goes to {where})"


def check_file(w: WeightFile, path: Path, *, shown: str | None = None, weights_dir: Path | None = None,
               replace: bool = False) -> str:
    """The file's sha256, or a one-line CheckpointError unless `path` is what entry `w` says: its
    content (an HTML or text page is named as such; format, keys and shapes; no code from the file is
    run), then its digest: the pinned one, else the one recorded in `weights_dir` (`replace`: a
    recorded digest may differ; the caller records the new one)."""
    from videdit.checkpoints.content import check_weight_file
    from videdit.fileio import file_sha256

    shown = shown or str(path)
    if w.content is not None:
        check_weight_file(path, w.content, keys=w.keys, shown=shown)
    digest = file_sha256(path)
    state, against = compare_digest(w, digest, weights_dir)
    if state == "mismatch" and against == "pinned":
        raise CheckpointError(f"{shown} does not match the sha256 pinned for {w.filename} (it has {digest})")
    if state == "mismatch" and not replace:
        recorded = recorded_digests(weights_dir)[w.name]
        raise CheckpointError(
            f"{shown} has sha256 {digest[:16]}..., not the {recorded['sha256'][:16]}... recorded in "
            f"{Path(weights_dir) / DIGEST_RECORD} when {w.filename} was first installed (changed upstream, or damaged?); "
            f"to install it anyway: `videdit weights add FILE --as {w.name} --replace`")
    return digest


def fetch(w: WeightFile, weights_dir: Path, *, timeout: float = 30.0, drive_base: str | None = None) -> Path:
    """Download `w` into place: into `NAME.part` beside it (resumed where an earlier try stopped, with
    progress under the current reporter), then `check_file`, then renamed into place and its digest
    recorded. A file that fails the check is deleted. `drive_base`: Drive's endpoint (tests: a local one)."""
    from videdit.download import DRIVE_URL, download, drive_url

    if not (w.url or w.drive_id):
        raise DownloadError(f"{w.filename} has no download address; {manual_step(w, weights_dir)}")
    dest = expected_path(w, weights_dir)
    part = dest.with_name(dest.name + ".part")
    url = drive_url(w.drive_id, drive_base or DRIVE_URL) if w.drive_id else w.url
    try:
        download(url, part, drive=bool(w.drive_id), timeout=timeout, desc=w.filename)
    except DownloadError as err:
        raise DownloadError(f"could not download {w.filename} from {url}: {err}; {manual_step(w, weights_dir)}") from None
    shown = f"{w.filename} from {url}"
    try:
        digest = check_file(w, part, shown=shown, weights_dir=weights_dir)
    except CheckpointError as err:
        part.unlink(missing_ok=True)
        raise CheckpointError(f"{err}; the download was deleted") from None
    os.replace(part, dest)
    record_digest(weights_dir, w, digest, dest.stat().st_size, w.page or url)
    return dest


def check_present(w: WeightFile, path: Path, weights_dir: Path) -> str:
    """What `fetch` says of a file already in place, after comparing it with its pinned or recorded
    digest; a file with neither is checked by content and its digest recorded."""
    state, against = compare_digest(w, file_sha256(path), weights_dir)
    if state == "mismatch":
        raise CheckpointError(f"{path} does not match the sha256 {against} for {w.filename}: damaged or replaced? "
                              f"delete it and fetch again, or `videdit weights add FILE --as {w.name} --replace`")
    if state == "ok":
        return f"already present, sha256 matches the {against} one"
    digest = check_file(w, path, weights_dir=weights_dir)
    record_digest(weights_dir, w, digest, path.stat().st_size, f"found at {path}")
    return "already present, content checked, sha256 recorded"


def select(patterns: list[str] | tuple[str, ...]) -> list[WeightFile]:
    """Registry entries named by `patterns` (names, file names or shell patterns such as 'fan_*'), in registry order."""
    chosen = set()
    for pattern in patterns:
        hits = [w.name for w in KNOWN_WEIGHTS if fnmatch.fnmatchcase(w.name, pattern) or w.filename == pattern]
        if not hits:
            raise VideditError(f"unknown weights {pattern!r}; known: {', '.join(registry())}")
        chosen.update(hits)
    return [w for w in KNOWN_WEIGHTS if w.name in chosen]


@dataclass(frozen=True)
class Installed:
    """What became of one entry in `fetch_many` or `add_from`: path and message, or the error."""
    weight: WeightFile
    path: Path | None
    message: str
    error: VideditError | None = None


def fetch_many(entries: list[WeightFile], weights_dir: Path, **fetch_options) -> Iterator[Installed]:
    """`fetch` each entry that is not present and check each that is, one result at a time; a failure
    is reported in its result and the next entry still tried."""
    for w in entries:
        try:
            present = find(w, weights_dir)
            if present is not None:
                yield Installed(w, present, check_present(w, present, weights_dir))
            else:
                yield Installed(w, fetch(w, weights_dir, **fetch_options), "downloaded and checked")
        except VideditError as err:
            yield Installed(w, None, str(err), err)


def install(w: WeightFile, weights_dir: Path, write, *, shown: str, origin: str, replace: bool = False) -> Path:
    """`write(tmp)` writes the file beside its place; it is checked (`check_file`), renamed into place
    and its digest recorded, or deleted when the check fails."""
    from videdit.fileio import atomic_path

    dest = expected_path(w, weights_dir)
    with atomic_path(dest) as tmp:
        write(tmp)
        digest = check_file(w, tmp, shown=shown, weights_dir=weights_dir, replace=replace)
    record_digest(weights_dir, w, digest, dest.stat().st_size, origin)
    return dest


def add(src: Path, weights_dir: Path, name: str | None = None, *, replace: bool = False) -> Path:
    """Copy a file the user already has into place under its canonical name, checked (`install`)."""
    src = Path(src)
    if not src.is_file():
        raise VideditError(f"no such file: {src}")
    if name is None:
        matches = [w for w in KNOWN_WEIGHTS if w.filename == src.name or Path(w.filename).name == src.name]
        if len(matches) != 1:
            raise VideditError(f"cannot tell which weights {src.name} is; pass --as NAME (one of: {', '.join(registry())})")
        w = matches[0]
    else:
        w = get(name)
    dest = expected_path(w, weights_dir)
    if dest.is_file() and dest.resolve() == src.resolve():  # already in place: check and record it
        record_digest(weights_dir, w, check_file(w, src, weights_dir=weights_dir, replace=replace), src.stat().st_size,
                      f"added from {src}")
        return dest
    return install(w, weights_dir, lambda tmp: shutil.copyfile(src, tmp), shown=str(src), origin=f"added from {src}",
                   replace=replace)


@dataclass(frozen=True)
class WeightStatus:
    weight: WeightFile
    path: Path | None
    expected: Path


def status(weights_dir: Path) -> list[WeightStatus]:
    return [WeightStatus(w, find(w, weights_dir), expected_path(w, weights_dir)) for w in KNOWN_WEIGHTS]
