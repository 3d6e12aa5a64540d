"""`--stand-ins` on the verbs that need networks, said in one line; `videdit demo VIDEO` is `videdit run VIDEO
--stand-ins` (the same function): the same files, byte for byte, and the same options taken."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest
from click.testing import CliRunner

from videdit import layout
from videdit.cli import cli

QUICK = ["--steps", "2", "--set", "encode.n_iters=1", "-q"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    from videdit.synthetic import make_clip

    return make_clip(tmp_path_factory.mktemp("standins") / "face.mp4", n_frames=3, size=(224, 192), audio=True).path


def _invoke(args):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return result


def test_every_network_verb_takes_stand_ins():
    for verb in ("run", "demo", "preview", "faces", "eval"):
        result = _invoke([verb, "--help"])
        assert result.exit_code == 0 and "--stand-ins" in result.output, verb


def test_faces_with_stand_ins_says_what_it_uses(clip, tmp_path):
    result = _invoke(["faces", clip, "--stand-ins", "--out", tmp_path / "run-folder", "--json"])
    assert result.exit_code == 0, result.output
    assert result.stderr.count("\n") == 1 and "stand-ins" in result.stderr and "dlib" in result.stderr
    assert (tmp_path / "run-folder" / layout.TRACKS).is_file()


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = set()

    def handle_starttag(self, tag, attrs):
        self.links |= {value for name, value in attrs if name in ("src", "href")}


@pytest.mark.slow
def test_demo_is_run_with_stand_ins(clip, tmp_path):
    demo = _invoke(["demo", clip, "--out", tmp_path / "demo-folder", "--strength", "-2,2", *QUICK])
    run = _invoke(["run", clip, "--stand-ins", "--out", tmp_path / "run-folder", "--strength", "-2,2", *QUICK])
    assert demo.exit_code == run.exit_code == 0, demo.output + run.output
    for result in (demo, run):
        assert result.stderr.splitlines()[0].startswith("videdit: stand-ins: ")
    names = ["face.age-2.mp4", "face.age+2.mp4", "face.recon.mp4", layout.compare_name("face")]
    for name in names:  # the same run: the same bytes
        assert (tmp_path / "demo-folder" / name).read_bytes() == (tmp_path / "run-folder" / name).read_bytes(), name
    pages = [(tmp_path / folder / layout.INDEX_PAGE).read_text().replace(folder, "RUN") for folder in ("demo-folder", "run-folder")]
    assert pages[0] == pages[1]
    links = _Links()
    links.feed(pages[1])
    assert set(names) <= links.links and all((tmp_path / "run-folder" / link).is_file() for link in links.links)

    # eval on the stand-ins too: the metrics land on the run's page (a whole evaluation: one of the first frames
    # only goes to eval/first_N/ and is not the run's)
    result = _invoke(["eval", tmp_path / "run-folder", "--stand-ins", "--no-plots"])
    assert result.exit_code == 0, result.output
    assert "meaningless" in result.stderr
    page = (tmp_path / "run-folder" / layout.INDEX_PAGE).read_text()
    assert "Not evaluated yet" not in page and f"{layout.EVAL_DIR}/{layout.METRICS}" in page
