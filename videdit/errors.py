"""User-facing errors: the CLI prints these as one line, never a traceback."""
from __future__ import annotations


class VideditError(Exception):
    """An error the user can act on. `str(err)` is the one line shown."""


class InputError(VideditError):
    """Bad input video or image folder (corrupt, truncated, no video stream, ...)."""


class NoFaceError(InputError):
    """No face was found in any frame of a video."""


class RefusedPathError(InputError):
    """A path `videdit app` was asked to read or serve that lies outside its --root (`..` and symlinks resolved)."""


class MissingWeightsError(VideditError):
    """One or more checkpoint files are absent. The message names each file, where it goes, how to get it."""


class CheckpointError(VideditError):
    """A checkpoint file exists but is not what it should be (wrong layout, missing or misshaped key, unsafe pickle)."""


class DownloadError(VideditError):
    """A file could not be downloaded (offline, blocked, refused, cut off). From `videdit.weights.fetch` the
    message names the address and the manual step; `videdit weights fetch` then exits with status 4."""


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread by the CLI's signal handler: handled (cleanup, the log) as Ctrl-C is."""
