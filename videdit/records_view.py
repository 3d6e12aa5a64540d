"""The run folder's viewing files in code: where the preview, the comparison video and the pages go, and the one
reader/writer of RUN/preview/keyframes.json. Beside videdit.records (which holds the stages' files) so that no
module grows past its limit; names from videdit.layout, as everywhere."""
from __future__ import annotations

from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import ClassVar

from videdit import layout
from videdit.records import _JsonRecord


class ViewFolder:
    """Paths of a run folder's viewing files (pure path arithmetic over videdit.layout's names)."""

    def __init__(self, root: str | PathLike):
        self.root = Path(root)

    @property
    def page(self) -> Path:
        """RUN/index.html: the run's outputs, metrics, people and settings."""
        return self.root / layout.INDEX_PAGE

    def compare_video(self, video_stem: str) -> Path:
        return self.root / layout.compare_name(video_stem)

    @property
    def preview(self) -> Path:
        return self.root / layout.PREVIEW_DIR

    @property
    def keyframes(self) -> Path:
        return self.preview / layout.KEYFRAMES_DIR

    @property
    def preview_run(self) -> Path:
        return self.preview / layout.PREVIEW_RUN_DIR

    @property
    def sheet(self) -> Path:
        return self.preview / layout.PREVIEW_SHEET

    @property
    def preview_page(self) -> Path:
        return self.preview / layout.INDEX_PAGE

    @property
    def people_sheet(self) -> Path:
        return self.root / layout.PEOPLE_SHEET

    @property
    def settings(self) -> Path:
        return self.root / layout.SETTINGS

    @property
    def eval_dir(self) -> Path:
        return self.root / layout.EVAL_DIR

    def eval_plots(self) -> list[Path]:
        """The plots `videdit eval` wrote that exist, in a fixed order."""
        names = (layout.METRICS_PLOT, layout.TRANSFORMS_PLOT, layout.LATENT_PLOT)
        return [self.eval_dir / n for n in names if (self.eval_dir / n).is_file()]


@dataclass
class KeyFrames(_JsonRecord):
    """preview/keyframes.json: which frames the preview shows and what they were picked from. `video_sha256`
    and `request` say when it is stale (another video, other frames asked for)."""

    FILE: ClassVar[str] = layout.KEYFRAMES_INFO
    END: ClassVar[str] = "\n"

    video_sha256: str
    request: str  # "auto" or the frames asked for, as given ("12,40")
    n_frames: int
    shots: list[list[int]]  # [start, end) of every shot of the video
    frames: list[int]  # the key frames, ascending
    time_s: list[float] = field(default_factory=list)  # each key frame's time in the video
