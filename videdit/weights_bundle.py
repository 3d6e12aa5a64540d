"""`videdit weights add --from DIR|ZIP`: install the weights files found in a folder or a zip archive someone copied.

A file is recognised by its path's ending: its registry file name (`restyle_e4e_ffhq.pt`), or for files
kept in a subfolder the last folder and the name (`sg3-r-ffhq-1024/delta_i_c.npy`), so a copy of a
weights folder, of stylegan3-editing's `pretrained_models/` or of its `editing/...` tree all work. Each
file is checked as `weights add FILE` checks one (`videdit.weights.install`) and installed on its own.

Nothing is extracted under a name taken from the archive (each file goes to its registry place), and
an archive with a member that would leave the folder (`../`, an absolute path: "zip slip") or with a
symbolic link is refused whole, before anything is installed; symbolic links in a folder are refused
one by one and never followed.
"""
from __future__ import annotations

import os
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Callable

from videdit import weights as W
from videdit.errors import CheckpointError, VideditError


def entry_for(relative: PurePosixPath) -> W.WeightFile | None:
    """The registry entry a file at `relative` (inside a folder or archive) is, by its path's ending."""
    for w in W.KNOWN_WEIGHTS:
        key = PurePosixPath(w.filename).parts[-2:]
        if relative.parts[-len(key):] == key:
            return w
    return None


# A found file: its path inside the source, how to write it to a given path (None: refused, see note).
_Member = tuple[PurePosixPath, "Callable[[Path], object] | None", str]


def _folder_members(folder: Path) -> tuple[list[_Member], list[str]]:
    members, skipped = [], []
    for root, dirs, files in os.walk(folder):  # never descends into a linked folder
        for name in sorted(dirs):
            if (Path(root) / name).is_symlink():
                skipped.append(f"{(Path(root) / name).relative_to(folder)}/ (a symbolic link, not followed)")
        for name in sorted(files):
            path = Path(root) / name
            relative = PurePosixPath(path.relative_to(folder).as_posix())
            if path.is_symlink():
                members.append((relative, None, f"{path} is a symbolic link: refused (copy the file itself)"))
            elif path.is_file():
                members.append((relative, lambda tmp, path=path: shutil.copyfile(path, tmp), str(path)))
    return members, skipped


def _zip_members(archive: Path, zf: zipfile.ZipFile) -> list[_Member]:
    members = []
    for info in zf.infolist():
        name = info.filename
        relative = PurePosixPath(name)
        if name.startswith("/") or "\\" in name or ".." in relative.parts or (len(name) > 1 and name[1] == ":"):
            raise VideditError(f"{archive}: refused: member {name!r} would land outside the folder (zip slip); nothing installed")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise VideditError(f"{archive}: refused: member {name!r} is a symbolic link; nothing installed")
        if not info.is_dir():
            members.append((relative, lambda tmp, info=info: _extract(zf, info, tmp), f"{archive}:{name}"))
    return members


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, tmp: Path) -> None:
    with zf.open(info) as src, open(tmp, "wb") as out:  # at most info.file_size bytes: zipfile stops there
        shutil.copyfileobj(src, out, 1 << 20)


def add_from(source: Path, weights_dir: Path, *, replace: bool = False) -> tuple[list[W.Installed], list[str]]:
    """Install every registry file in folder or zip `source`, each checked on its own.

    Returns (one result per registry entry found, the files of `source` that are no registry file).
    """
    source = Path(source)
    if source.is_dir():
        members, skipped = _folder_members(source)
        results, unknown = _install(members, weights_dir, replace)
        return results, skipped + unknown
    if not source.is_file():
        raise VideditError(f"no such folder or file: {source}")
    if not zipfile.is_zipfile(source):
        raise VideditError(f"{source}: neither a folder nor a zip archive")
    with zipfile.ZipFile(source) as zf:
        return _install(_zip_members(source, zf), weights_dir, replace)


def _install(members: list[_Member], weights_dir: Path, replace: bool) -> tuple[list[W.Installed], list[str]]:
    found: dict[str, list[_Member]] = {}
    unknown = []
    for member in members:
        w = entry_for(member[0])
        if w is None:
            unknown.append(str(member[0]))
        else:
            found.setdefault(w.name, []).append(member)
    results = []
    for w in W.KNOWN_WEIGHTS:
        candidates = found.get(w.name, [])
        if len(candidates) > 1:
            names = ", ".join(str(c[0]) for c in candidates)
            err = VideditError(f"{w.filename} found {len(candidates)} times ({names}); add the one you mean with "
                               f"`videdit weights add FILE --as {w.name}`")
            results.append(W.Installed(w, None, str(err), err))
        elif candidates:
            relative, write, shown = candidates[0]
            try:
                if write is None:
                    raise CheckpointError(shown)
                path = W.install(w, weights_dir, write, shown=shown, origin=f"added from {shown}", replace=replace)
                results.append(W.Installed(w, path, f"installed from {relative}"))
            except VideditError as err:
                results.append(W.Installed(w, None, str(err), err))
    return results, unknown
