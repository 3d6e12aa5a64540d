"""Atomic file writes and content digests: the one way videdit writes a file that others read.

Every writer goes through `atomic_path`: the data goes to a hidden temporary name in the same folder
(same filesystem), is flushed to disk, and is renamed over the target only once complete, so a reader
(or a resumed run after a kill) sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import hashlib
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error it is renamed to `path`.

    The temporary name keeps the target's suffix (writers such as np.save or PyAV pick the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    try:
        yield tmp
        if fsync and tmp.is_file():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def atomic_save(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """`write(tmp_path)` writes the file (np.save, torch.save, safetensors...); it lands at `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """dst as a hard link to src where the filesystem allows (no copy of a large file), else a copy; an
    existing dst is replaced (a merge that was cut off is done again)."""
    dst = Path(dst)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
