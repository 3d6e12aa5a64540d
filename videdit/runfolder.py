"""Owning a run folder: it is checked to be writable and one process at a time holds it.

The lock is an OS-level `flock` on RUN/.lock: the kernel releases it when the process ends, however it
ends (kill -9 included), so a crashed run never leaves the folder stuck. The file records who holds it
(pid, host, start time, command) so a second run can say so in one line.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from videdit.errors import VideditError
from videdit.layout import LOCK as LOCK_NAME


class RunFolderError(VideditError):
    """The run folder cannot be used: not writable, a file in the way, or held by another run."""


def prepare_run_dir(run_dir: Path, what: str = "the run folder") -> Path:
    """Create the run folder (or another output folder: `what`), or one line saying why it cannot be (a file in
    the way, read-only, no space)."""
    run_dir = Path(run_dir)
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists() and not parent.is_dir():
            where = "is" if parent == run_dir else f"lies under {parent}, which is"
            raise RunFolderError(f"cannot use {run_dir} as {what}: it {where} a file, not a folder (choose another --out)")
        if parent.exists():
            break
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write-test{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        reason = {errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied",
                  errno.ENOSPC: "no space left on the device"}.get(err.errno, err.strerror or type(err).__name__)
        raise RunFolderError(f"cannot write {what} {run_dir}: {reason} (choose another --out)") from None
    return run_dir


class RunLock:
    """`with RunLock(run_dir, wait=False):` holds the run folder for this process."""

    def __init__(self, run_dir: Path, wait: bool = False, poll_seconds: float = 1.0, say=None):
        self.path = Path(run_dir) / LOCK_NAME
        self.wait = wait
        self.say = say  # one line when a --wait starts waiting (else a waiting run looks hung)
        self.poll_seconds = poll_seconds
        self._fd: int | None = None

    def holder(self) -> str:
        try:
            info = json.loads(self.path.read_text() or "{}")
        except (OSError, ValueError):
            return "another process"
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("started", 0)))
        return f"pid {info.get('pid', '?')} on {info.get('host', '?')}, started {started}"

    def __enter__(self) -> "RunLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        said = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait:
                    os.close(fd)
                    raise RunFolderError(f"{self.path.parent} is in use by another videdit run ({self.holder()}); "
                                         "wait for it to finish, or rerun with --wait") from None
                if self.say and not said:
                    self.say(f"waiting for the run using {self.path.parent} to finish ({self.holder()})")
                    said = True
                time.sleep(self.poll_seconds)
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(),
                                 "command": " ".join(sys.argv)}).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
