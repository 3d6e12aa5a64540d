"""Runs you can watch: stage announcements, bars with rate and ETA, plain lines off a terminal, the log."""
from __future__ import annotations

import io
import logging
import subprocess
import sys
import warnings

import pytest

from videdit import progress
from videdit.runlog import StageLog, read_log_events
from videdit.runner import Stage, StageRunner


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def _run_two_stages(reporter, tmp_path, clock):
    def slow_loop(work):
        with progress.bar(10, "frames", "frame") as bar:
            for _ in range(10):
                clock.now += 3.0
                bar.update(1)
        (work / "out.txt").write_text("x")

    runner = StageRunner(tmp_path / "run", StageLog(tmp_path / "run" / "log.txt"))
    reporter.plan(["first", "second"], {"first": 30.0, "second": 60.0})
    with progress.reporting(reporter):
        runner.run(Stage("first", slow_loop))
        runner.run(Stage("second", slow_loop))


def test_plain_lines_announce_stages_and_give_rate_and_eta(tmp_path):
    clock, out = FakeClock(), io.StringIO()
    reporter = progress.Reporter(out, clock=clock, interval=10.0)
    assert not reporter.tty
    _run_two_stages(reporter, tmp_path, clock)
    lines = out.getvalue().splitlines()
    # the stage's own estimate first, then what the stages after it add, said as such
    assert lines[0] == "[1/2] first ... (about 30s, then about 1m00s more for the stage after it)"
    # 3 s per frame: a line every 10 s of loop time at most, with the loop's rate and ETA
    assert "  frames: 4/10 frame, 3.0 s/frame, ETA 18s" in lines
    assert "[1/2] first ran in 30s" in lines
    # the first stage took its estimate, so the rest keeps its own: no whole-run line once nothing is left
    assert "[2/2] second ... (about 1m00s)" in lines
    assert lines[-1] == "[2/2] second ran in 30s"
    assert "\r" not in out.getvalue()  # no bar noise off a terminal


def test_the_run_eta_learns_from_finished_stages():
    clock = FakeClock()
    reporter = progress.Reporter(io.StringIO(), clock=clock)
    reporter.plan(["a", "b", "c"], {"a": 10.0, "b": 20.0, "c": 40.0})
    assert reporter.run_eta() == 70.0
    reporter.stage_start("a")
    reporter.stage_end("a", "ran", 30.0)  # three times slower than estimated
    assert reporter.run_eta() == pytest.approx(3 * 60.0)
    reporter.stage_end("b", "cached", 0.0)
    assert reporter.run_eta() == pytest.approx(3 * 40.0)


def test_a_terminal_gets_a_bar_with_rate_and_eta(tmp_path):
    clock, out = FakeClock(), FakeTerminal()
    reporter = progress.Reporter(out, clock=clock)
    assert reporter.tty
    with progress.reporting(reporter):
        with progress.bar(5, "render", "frame") as bar:
            for _ in range(5):
                bar.update(1)
    text = out.getvalue()
    assert "render" in text and "5/5" in text and "frame" in text  # tqdm's bar: count, unit, rate, ETA
    assert "\r" in text


def test_quiet_and_no_reporter_print_nothing(tmp_path):
    out = io.StringIO()
    reporter = progress.Reporter(out, quiet=True)
    with progress.reporting(reporter):
        for _ in progress.track(range(3), desc="x"):
            pass
    assert out.getvalue() == ""
    assert list(progress.track(range(3), desc="y")) == [0, 1, 2]  # no reporter: silent, items unchanged


def test_a_warning_inside_a_stage_lands_in_the_log_with_the_stage_name(tmp_path):
    def noisy(work):
        logging.getLogger("videdit.stages.encode").warning("LPIPS weights missing: tuning with L2 only")
        warnings.warn("frame 12 decoded with errors", RuntimeWarning)
        (work / "x").write_text("x")

    run = tmp_path / "run"
    log = StageLog(run / "log.txt")
    shown = []
    log.handler.echo = shown.append
    with log.capture():
        StageRunner(run, log).run(Stage("encode", noisy))
    text = (run / "log.txt").read_text()
    assert " encode warning LPIPS weights missing: tuning with L2 only" in text
    assert " encode warning " in text and "frame 12 decoded with errors" in text
    assert ("encode", "start") in read_log_events(run) and ("encode", "done") in read_log_events(run)
    assert any("LPIPS weights missing" in line for line in shown)  # and on the terminal
    # outside a run's capture, nothing is routed to that log any more
    logging.getLogger("videdit").warning("after the run")
    assert "after the run" not in (run / "log.txt").read_text()


def test_a_failing_single_run_prints_one_line(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x01" * 500)
    proc = subprocess.run([sys.executable, "-m", "videdit", "run", str(bad), "--until", "align"],
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("videdit: error:"), proc.stderr
    assert proc.stdout == ""


def test_face_tracks_share_one_stage_counter(tmp_path):
    """`--faces all`: every track's stages and the one composite are counted together, each named by its track."""
    clock, out = FakeClock(), io.StringIO()
    reporter = progress.Reporter(out, clock=clock)
    reporter.plan(["t1/encode", "t2/encode", "composite"], {"t1/encode": 10.0, "t2/encode": 20.0, "composite": 5.0})
    log = StageLog(tmp_path / "run" / "log.txt")
    with progress.reporting(reporter):
        for track in ("t1", "t2"):
            runner = StageRunner(tmp_path / "run" / "tracks" / track, log, label=f"{track}/")
            runner.run(Stage("encode", lambda work: (work / "x").write_text("x")))
        StageRunner(tmp_path / "run", log).run(Stage("composite", lambda work: (work / "y").write_text("y")))
    lines = out.getvalue().splitlines()
    assert [line.split(" ...")[0] for line in lines if " ..." in line] == ["[1/3] t1/encode", "[2/3] t2/encode",
                                                                         "[3/3] composite"]
    assert lines[0] == "[1/3] t1/encode ... (about 10s, then about 25s more for the 2 stages after it)"
