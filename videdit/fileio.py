"""Atomic file writes and content digests: the one way videdit writes a file that others read.

Every writer goes through `atomic_path`: the data goes to a hidden temporary name in the same folder
(same filesystem), is flushed to disk, and is renamed over the target only once complete, so a reader
(or a resumed run after a kill) sees the old file or the new one, never half of one.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator


# A write that failed for want of room: no space, over quota, over the file-size limit (RLIMIT_FSIZE).
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)


def write_failure_errno(err: BaseException) -> int | None:
    """The errno behind a failed write, whoever reports it: an OSError; torch.save's "[enforce fail at
    inline_container.cc] PytorchStreamWriter failed writing" (which drops the errno: a failed write of a
    zip archive is taken as a full disk); safetensors' Rust io error ("Os { code: 28, ... }")."""
    if isinstance(err, OSError):
        return err.errno
    text = str(err)
    rust = re.search(r"Os \{ code: (\d+)", text)
    if rust:
        return int(rust.group(1))
    if "inline_container" in text and ("write" in text or "enforce fail" in text):
        return errno.ENOSPC
    return None


def full_disk_line(err: OSError, where: object) -> str | None:
    """The one line for a write that failed for want of room (FULL_ERRNOS), naming the file; None otherwise."""
    if err.errno not in FULL_ERRNOS:
        return None
    why = {errno.EFBIG: "file size limit reached", errno.EDQUOT: "disk quota full"}.get(err.errno, "disk full")
    return f"{why} while writing {err.filename or where}; free space and rerun: finished stages are kept"


def temporary_name(path: Path, pid: int) -> Path:
    """The hidden name `atomic_path` writes `path` under in process `pid`."""
    return path.with_name(f".{path.stem}.tmp{pid}{path.suffix}")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove what an `atomic_path` write of `path` left when its process was killed (kill -9: no cleanup ran):
    temporary names of processes that no longer run. Returns the removed paths."""
    path = Path(path)
    pattern = re.compile(re.escape(f".{path.stem}.tmp") + r"(\d+)" + re.escape(path.suffix) + "$")
    removed = []
    for candidate in path.parent.glob(f".{path.stem}.tmp*"):
        match = pattern.match(candidate.name)
        if match and not _process_runs(int(match.group(1))):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_runs(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block ends without error it is renamed to `path`.

    The temporary name keeps the target's suffix (writers such as np.save or PyAV pick the format from it).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_name(path, os.getpid())
    try:
        try:
            yield tmp
        except Exception as err:  # noqa: BLE001  (re-raised: as it was, or as the OSError it stands for)
            code = write_failure_errno(err)
            if code in FULL_ERRNOS:
                raise OSError(code, os.strerror(code), str(path)) from err
            raise
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


def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """A .safetensors file written atomically, its bytes a function of the tensors and metadata only.

    safetensors writes the metadata map in hash order (it differs from save to save, even in one process); the
    header is rewritten in place with the metadata keys sorted: same JSON, same length, same offsets."""
    from safetensors.torch import save_file

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "r+b") as handle:
            size = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(size).decode("utf-8"), object_pairs_hook=dict)
            if "__metadata__" in header:
                header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
            text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            if len(text) > size:  # never: same content, same compact form
                raise RuntimeError(f"safetensors header grew when sorted: {tmp}")
            handle.seek(8)
            handle.write(text + b" " * (size - len(text)))  # safetensors pads its header with spaces

    return atomic_save(path, write)


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
