"""NAME.compare.mp4 and RUN/index.html: the comparison fits 1920 px, keeps the frame count, the frame times and
the source's audio packets, shows the input's left half beside an edit's right half for one edit; every link of
the page points at a file of the run folder."""
from __future__ import annotations

from fractions import Fraction
from html.parser import HTMLParser

import numpy as np
import pytest

av = pytest.importorskip("av")


@pytest.fixture(scope="module")
def wide_clip(tmp_path_factory):
    """3 frames 1280x720 with audio."""
    from videdit.synthetic import make_clip

    root = tmp_path_factory.mktemp("compare")
    return make_clip(root / "wide.mp4", n_frames=3, size=(1280, 720), audio=True).path


def _describe(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = list(container.decode(video))
        times = [Fraction(f.pts) * video.time_base for f in frames]
        size = (frames[0].width, frames[0].height)
    with av.open(str(path)) as container:
        audio = [bytes(p) for p in container.demux(container.streams.audio[0]) if p.size]
    return size, times, audio


def _inverted(source, path):
    """`source` with every pixel inverted: an 'edit' that differs from the input everywhere."""
    from videdit.io.probe import probe_video
    from videdit.io.reader import VideoReader
    from videdit.io.writer import VideoWriter

    info = probe_video(source)
    with VideoWriter(path, info.fps, info.size, time_base=info.time_base, crf=10) as writer:
        for frame in VideoReader(source):
            writer.write(255 - frame.image, pts=frame.pts)
    return path


def test_three_panels_fit_1920_with_the_source_frames_and_audio(wide_clip, tmp_path):
    from videdit.compare import MAX_WIDTH, write_compare

    out = write_compare(wide_clip, {"age-2": wide_clip, "age+4": wide_clip}, tmp_path / "wide.compare.mp4")
    (width, height), times, audio = _describe(out)
    _, source_times, source_audio = _describe(wide_clip)
    assert width <= MAX_WIDTH and width > MAX_WIDTH - 3 * 2  # three 1280 px panels scaled down to fill 1920
    assert height < 720 and height % 2 == 0
    assert times == source_times  # frame count and times
    assert audio == source_audio and audio  # the source's packets, copied


def test_one_edit_is_split_screen(wide_clip, tmp_path):
    from videdit.compare import write_compare
    from videdit.io.reader import VideoReader

    edit = _inverted(wide_clip, tmp_path / "wide.edit.mp4")
    out = write_compare(wide_clip, {"inverted": edit}, tmp_path / "wide.compare.mp4")
    compared = [f.image for f in VideoReader(out)]
    source = [f.image for f in VideoReader(wide_clip)]
    assert compared[0].shape[1] == 1280  # one source width: under 1920, not scaled
    strip = compared[0].shape[0] - 720
    assert 0 < strip < 40  # the label strip on top
    for got, want in zip(compared, source):
        body = got[strip:].astype(float)
        left, right = body[:, :600], body[:, 680:]
        # H.264 at crf 20 (4:2:0) twice: a few code values on average; the other side differs by ~100
        assert np.abs(left - want[:, :600]).mean() < 4
        assert np.abs(right - (255 - want[:, 680:].astype(float))).mean() < 4


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        self.links += [value for name, value in attrs if name in ("src", "href")]


def test_run_page_links_every_view_and_they_exist(wide_clip, tmp_path):
    import shutil

    from videdit import layout
    from videdit.records_view import ViewFolder
    from videdit.report_html import write_run_page

    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(wide_clip, run / "wide.age.mp4")
    shutil.copy(wide_clip, run / layout.compare_name("wide"))
    (run / layout.PEOPLE_SHEET).write_bytes(b"png")
    (run / layout.SETTINGS).write_text('preset = "x<y"\n')
    page = write_run_page(run)
    assert page == ViewFolder(run).page
    parser = _Links()
    parser.feed(page.read_text())
    assert set(parser.links) == {"wide.age.mp4", layout.compare_name("wide"), layout.PEOPLE_SHEET}
    assert all((run / link).is_file() for link in parser.links)
    assert "x&lt;y" in page.read_text() and "Not evaluated yet" in page.read_text()

    (run / layout.EVAL_DIR).mkdir()
    (run / layout.EVAL_DIR / layout.METRICS).write_text('{"recon": {"psnr": 31.5}}')
    (run / layout.EVAL_DIR / layout.METRICS_PLOT).write_bytes(b"png")
    text = write_run_page(run).read_text()
    assert "recon.psnr" in text and "31.5" in text
    parser = _Links()
    parser.feed(text)
    assert all((run / link).is_file() for link in parser.links)
    assert set(parser.links) == {"wide.age.mp4", layout.compare_name("wide"), layout.PEOPLE_SHEET,
                                 f"{layout.EVAL_DIR}/{layout.METRICS}", f"{layout.EVAL_DIR}/{layout.METRICS_PLOT}"}
    assert write_run_page(run).read_text() == text  # same folder, same bytes
