"""`videdit app`: the endpoint functions without a server (the path check, the progress feed, uploads), then the
real server (a subprocess on 127.0.0.1 on the stand-ins, tiny clips under a tmp --root) called through
gradio_client's named endpoints /faces /preview /run, its refusals (a path outside the root, traversal, a file
route outside it, a run folder another process holds), and a real browser (Debian's chromium driven by
Playwright) that previews and runs an edit and saves a screenshot."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from videdit import layout
from videdit.errors import InputError, NoFaceError, RefusedPathError

gradio = pytest.importorskip("gradio", reason="the app needs gradio: pip install 'videdit[app]'")

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
QUICK = ["--set", "encode.n_iters=1", "--set", "tune.steps=2"]  # the stand-in run in seconds
CLIP_SIZE = (224, 192)


def _clip(path: Path, **kwargs) -> Path:
    from videdit.synthetic import make_clip

    path.parent.mkdir(parents=True, exist_ok=True)
    return make_clip(path, n_frames=3, size=CLIP_SIZE, **kwargs).path


# ---------------------------------------------------------------------------------------------
# the endpoint functions, no server


@pytest.fixture
def app(tmp_path):
    from videdit.app import AppOptions, VideditApp

    (tmp_path / "root").mkdir()
    return VideditApp(AppOptions(tmp_path / "root", stand_ins=True, max_upload_mb=1))


def test_paths_outside_the_root_are_refused_traversal_and_symlinks_included(app, tmp_path):
    outside = tmp_path / "outside.mp4"
    outside.write_bytes(b"not under the root")
    (app.root / "sub").mkdir()
    (app.root / "sub" / "inside.mp4").write_bytes(b"x")
    (app.root / "link.mp4").symlink_to(outside)
    assert app.resolve("sub/inside.mp4") == app.root / "sub" / "inside.mp4"
    assert app.resolve(str(app.root / "sub" / ".." / "sub" / "inside.mp4")) == app.root / "sub" / "inside.mp4"
    for bad in (str(outside), "../outside.mp4", "sub/../../outside.mp4", "link.mp4", "/etc/passwd"):
        with pytest.raises(RefusedPathError, match="outside the app's root"):
            app.resolve(bad)
    with pytest.raises(InputError, match="no such file"):
        app.existing_video("sub/missing.mp4")
    assert app.videos() == ["sub/inside.mp4"]  # the link out of the root is not offered


def test_a_direction_file_outside_the_root_is_refused(app, tmp_path):
    with pytest.raises(RefusedPathError, match="outside the app's root"):
        app.preview(_clip(app.root / "face.mp4"), str(tmp_path / "beard.npy"), 1.0, stand_ins=True)
    with pytest.raises(RefusedPathError, match="outside the app's root"):
        app.run("face.mp4", "../beard.npy", 1.0, stand_ins=True)


def test_the_page_choices_make_the_pipeline_settings():
    from videdit.app import ONE_FACE, edit_overrides

    assert edit_overrides("age", 2.0, ONE_FACE) == {"edit.edits": ["age"], "edit.direction": "", "edit.strengths": [2.0],
                                                    "faces.select": None}
    text = edit_overrides("text:a tanned face", 4.0, "p2")
    assert text["edit.alpha"] == [4.0] and "edit.strengths" not in text and text["faces.select"] == "p2"
    with pytest.raises(InputError, match="choose an edit"):
        edit_overrides(" ", 1.0, None)


def test_the_progress_feed_counts_stages_and_bars_and_never_goes_back():
    import io

    from videdit.app import ProgressFeed

    sent = []
    feed = ProgressFeed(lambda fraction, text: sent.append((fraction, text)), stream=io.StringIO(), tty=False)
    feed.plan(["align", "encode", "tune", "render"])
    feed.stage_end("align", "cached", 0.0)
    feed.stage_start("encode")
    with feed.bar(4, "encode", "frame") as bar:
        bar.update(2)
        bar.update(2)
    feed.stage_end("encode", "ran")
    feed.stage_start("tune")
    fractions = [f for f, _ in sent]
    assert fractions == [0.25, 0.25, 0.375, 0.5, 0.5, 0.5]
    assert sent[2][1] == "encode: encode 2/4"
    assert fractions == sorted(fractions)


def test_a_run_in_the_background_hands_on_its_latest_progress_then_its_result_or_error():
    import threading

    from videdit.app import run_in_background

    go = threading.Event()

    def work(report):
        report(0.1, "one")
        report(0.2, "two")
        go.wait(60)
        report(0.5, "three")
        return "result"

    events = run_in_background(work)
    first = next(events)
    go.set()
    handed = [first, *events]
    assert handed[-1] == ("done", "result") and all(kind == "progress" for kind, _ in handed[:-1])
    fractions = [value[0] for _, value in handed[:-1]]
    # in order, each once; which ones depends on how fast the page takes them (the latest waiting one wins)
    assert fractions == sorted(set(fractions)) and set(fractions) <= {0.1, 0.2, 0.5} and fractions[0] in (0.1, 0.2)

    def failing(report):
        raise InputError("one line")

    (kind, error), = list(run_in_background(failing))
    assert kind == "error" and str(error) == "one line"


def test_a_bad_upload_is_one_line_and_a_good_one_is_kept_under_the_root(app, tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    with pytest.raises(InputError) as bad:
        app.upload(text)
    assert "\n" not in str(bad.value)
    with pytest.raises(InputError, match="not a video file name"):
        app.upload(text, name="notes.txt")
    big = tmp_path / "big.mp4"
    big.write_bytes(b"\0" * (2 * 2**20))
    with pytest.raises(InputError, match="over the upload limit of 1 MB"):
        app.upload(big)
    clip = _clip(tmp_path / "up" / "clip.mp4", audio=False)
    kept, people = app.upload(clip, stand_ins=True)
    assert kept == app.root / "uploads" / "clip.mp4" and kept.read_bytes() == clip.read_bytes()
    assert app.videos() == ["uploads/clip.mp4"] and people.labels == ["p1"] and people.sheet.is_file()
    assert app.upload(clip, stand_ins=True)[0] == kept  # the same file again: kept once


def test_an_upload_without_a_face_is_one_line(app, tmp_path):
    blank = _clip(tmp_path / "up" / "blank.mp4", audio=False, blank_frames=(0, 1, 2))
    with pytest.raises(NoFaceError) as none:
        app.upload(blank, stand_ins=True)
    assert "no face" in str(none.value) and "\n" not in str(none.value)
    assert app.videos() == [] and list((app.root / "uploads").iterdir()) == []  # nothing kept


def test_another_host_needs_auth_and_a_missing_gradio_is_one_line(tmp_path):
    code = ("import sys\nfrom videdit.cli import main\nmain(sys.argv[1:])\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-c", code, "app", "--root", str(tmp_path), "--host", "0.0.0.0", "--port", "1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 1 and done.stderr.strip().splitlines() == [
        "videdit: error: --host 0.0.0.0 opens the app beyond this machine: give --auth USER:PASS too"]
    done = subprocess.run([sys.executable, "-c", code, "app", "--root", str(tmp_path), "--auth", "no-colon"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2 and "expected USER:PASS" in done.stderr and len(done.stderr.strip().splitlines()) == 1
    # gradio absent (a None entry in sys.modules makes its import fail): one line naming the extra
    blocked = "import sys\nsys.modules['gradio'] = None\n" + code
    done = subprocess.run([sys.executable, "-c", blocked, "app", "--root", str(tmp_path)], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode == 1 and done.stderr.strip() == "videdit: error: the app needs gradio: pip install 'videdit[app]'"


def test_without_weights_the_page_says_so_and_offers_the_stand_ins(tmp_path):
    from videdit.app import AppOptions, VideditApp, build_blocks

    (tmp_path / "root").mkdir()
    (tmp_path / "weights").mkdir()
    app = VideditApp(AppOptions(tmp_path / "root", weights_dir=tmp_path / "weights"))
    missing = app.missing_weights()
    assert missing is not None and "restyle_e4e_ffhq.pt" in missing
    assert app.directions(stand_ins=False) == [] and "age" in app.directions(stand_ins=True)
    config = build_blocks(app).get_config_file()
    by_id = {c["props"].get("elem_id"): c for c in config["components"]}
    assert "restyle_e4e_ffhq.pt" in by_id["weights-missing"]["props"]["value"]
    assert by_id["stand-ins"]["props"]["value"] is False  # offered, not forced
    for elem_id in ("video", "edit", "strength", "preview-button", "preview-image", "run-button", "progress",
                    "output-video"):
        assert elem_id in by_id, elem_id


# ---------------------------------------------------------------------------------------------
# the real server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`videdit app --stand-ins` in a subprocess on a free port, up when its page answers."""

    def __init__(self, root: Path, log: Path, extra: tuple[str, ...] = ()):
        self.root, self.log = root, log
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        # gradio's cache of what the page was sent: the test's own, not the machine's /tmp/gradio
        env = dict(os.environ, PYTHONPATH=str(ROOT), GRADIO_TEMP_DIR=str(root.parent / "gradio-cache"))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "videdit", "app", "--root", str(root), "--port", str(self.port), "--stand-ins",
             "--demo-frames", "3", "--max-upload-mb", "1", *QUICK, *extra],
            stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env, start_new_session=True)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"the app exited with {self.process.returncode}:\n{log.read_text()}")
            try:
                with urllib.request.urlopen(self.url, timeout=5) as page:
                    if page.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        self.stop()
        raise AssertionError(f"the app did not answer within 180 s:\n{log.read_text()}")

    def client(self, **kwargs):
        from gradio_client import Client

        return Client(self.url, verbose=False, download_files=str(self.root.parent / "downloads"), **kwargs)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("app")
    root = base / "root"
    _clip(root / "face.mp4")
    _clip(root / "held" / "held.mp4")
    (base / "outside.mp4").write_bytes((root / "face.mp4").read_bytes())  # a real video, outside the root
    (root / "link.mp4").symlink_to(base / "outside.mp4")  # a way out of the root, for the file route
    running = Server(root, base / "server.log")
    yield running
    running.stop()


def _app_error(call) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as refused:
        call()
    return str(refused.value)


def test_client_faces_preview_and_run(server):
    from videdit.io.probe import probe_video

    client = server.client()
    assert {"/faces", "/preview", "/run"} <= set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    sheet, shots, whom = client.predict("face.mp4", True, api_name="/faces")
    run_dir = server.root / layout.run_folder_name("face.mp4")
    assert Path(sheet).read_bytes() == (run_dir / layout.PEOPLE_SHEET).read_bytes()
    assert "p1" in shots and ["p1", "p1"] in whom["choices"]
    assert (run_dir / layout.TRACKS_KEY).is_file()  # saved with their key: a --faces run reuses them

    first = client.predict("face.mp4", "age", 3.0, True, api_name="/preview")
    encode_manifest = run_dir / layout.PREVIEW_DIR / layout.PREVIEW_RUN_DIR / "encode" / layout.MANIFEST
    encoded_at = encode_manifest.stat().st_mtime_ns
    second = client.predict("face.mp4", "age", -2.0, True, api_name="/preview")
    assert Path(second).read_bytes() == (run_dir / layout.PREVIEW_DIR / layout.PREVIEW_SHEET).read_bytes()
    assert Path(first).read_bytes() != Path(second).read_bytes()  # the edit row moved with the strength
    assert encode_manifest.stat().st_mtime_ns == encoded_at  # the key frames' encode was reused: render only
    # whom (last, optional): every face of each key frame, each a track of the key frames' run
    client.predict("face.mp4", "age", 3.0, True, "all", api_name="/preview")
    assert (run_dir / layout.PREVIEW_DIR / layout.PREVIEW_RUN_DIR / layout.TRACKS_DIR / "t1" / "render").is_dir()

    progress, edited, compare, files, summary, _ = client.predict("face.mp4", "age", 2.0, "one face", True,
                                                                  api_name="/run")
    assert 'value="1.000"' in progress and summary.startswith("face.mp4: done")
    published = run_dir / layout.published_name("face", "age+2")
    assert Path(edited).name == published.name and Path(edited).read_bytes() == published.read_bytes()
    assert Path(compare).name == layout.compare_name("face")
    assert sorted(Path(f).name for f in files) == sorted([published.name, layout.published_name("face", "recon"),
                                                          layout.compare_name("face"), layout.INDEX_PAGE])
    assert probe_video(edited).n_frames == 3


def test_client_refusals_outside_the_root(server):
    client = server.client()
    outside = server.root.parent / "outside.mp4"
    for path in (str(outside), "../outside.mp4", "held/../../outside.mp4", "link.mp4"):
        for call in (lambda: client.predict(path, "age", 1.0, True, api_name="/preview"),
                     lambda: client.predict(path, "age", 1.0, "one face", True, api_name="/run"),
                     lambda: client.predict(path, True, api_name="/faces")):
            message = _app_error(call)
            assert "outside the app's root" in message, message
    assert not (server.root.parent / layout.run_folder_name("outside.mp4")).exists()
    # the file route serves nothing outside the root and its cache: by name, by `..`, by a link under the root
    for path in (outside, Path("/etc/passwd"), f"{server.root}/../outside.mp4", server.root / "link.mp4"):
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{server.url}gradio_api/file={path}", timeout=30)
        assert denied.value.code in (403, 404)
    with urllib.request.urlopen(f"{server.url}gradio_api/file={server.root / 'face.mp4'}", timeout=30) as served:
        assert served.read() == (server.root / "face.mp4").read_bytes()


def test_an_upload_over_the_limit_is_refused_before_it_is_stored(server):
    import httpx

    small = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("small.mp4", b"\0" * 1000)}, timeout=60)
    assert small.status_code == 200  # the same request, within the limit
    big = httpx.post(f"{server.url}gradio_api/upload", files={"files": ("big.mp4", b"\0" * (2 * 2**20))}, timeout=60)
    assert big.status_code == 413, big.text


def test_a_run_folder_another_run_holds_is_refused_in_one_line(server):
    from videdit.runfolder import RunLock, prepare_run_dir

    client = server.client()
    run_dir = prepare_run_dir(server.root / "held" / layout.run_folder_name("held.mp4"))
    with RunLock(run_dir):  # this process holds it, as a `videdit run` of the same video would
        message = _app_error(lambda: client.predict("held/held.mp4", "age", 1.0, "one face", True, api_name="/run"))
    assert "is in use by another videdit run" in message and "\n" not in message.strip()


@pytest.mark.slow  # two server starts and a run: about 30 s on an idle machine
def test_a_server_killed_mid_run_resumes_the_run_on_the_next_click(tmp_path):
    from videdit.layout import MANIFEST, STAGE_ORDER

    root = tmp_path / "root"
    _clip(root / "face.mp4")
    run_dir = root / layout.run_folder_name("face.mp4")
    first = Server(root, tmp_path / "first.log")
    try:
        first.client().submit("face.mp4", "age", 1.0, "one face", True, api_name="/run")
        deadline = time.monotonic() + 180
        while not (run_dir / "align" / MANIFEST).is_file() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        first.stop(signal.SIGKILL)
    finished = [stage for stage in STAGE_ORDER if (run_dir / stage / MANIFEST).is_file()]
    assert "align" in finished and "composite" not in finished, finished  # cut off mid-run
    second = Server(root, tmp_path / "second.log")
    try:
        *_, summary, _ = second.client().predict("face.mp4", "age", 1.0, "one face", True, api_name="/run")
    finally:
        second.stop()
    assert summary.startswith("face.mp4: done") and "composite ran" in summary, summary
    for stage in finished:
        assert f"{stage} cached" in summary, (stage, summary)


def test_a_login_guards_the_page_when_asked(tmp_path):
    from gradio_client import Client
    from gradio_client.exceptions import AuthenticationError

    root = tmp_path / "root"
    root.mkdir()
    guarded = Server(root, tmp_path / "server.log", ("--auth", "someone:a-secret"))
    try:
        with pytest.raises(AuthenticationError):  # the client cannot even read the endpoints without the log-in
            Client(guarded.url, verbose=False)
        client = guarded.client(auth=("someone", "a-secret"))
        assert "/run" in client.view_api(print_info=False, return_format="dict")["named_endpoints"]
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{guarded.url}config", timeout=30)
        assert denied.value.code == 401
    finally:
        guarded.stop()


# ---------------------------------------------------------------------------------------------
# a real browser


def _browser():
    if not CHROMIUM.exists():
        pytest.skip(f"no chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright: pip install 'videdit[app]'")
    return sync_api


def test_browser_previews_and_runs_an_edit(server, tmp_path):
    sync_api = _browser()
    shot = tmp_path / "app.png"
    keep = os.environ.get("VIDEDIT_APP_SCREENSHOT")  # where a person wants to look at it
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1600})
        try:
            page.goto(server.url)
            page.click("#demo-button")  # videdit demo's clip, made under the root and picked
            page.wait_for_function("() => document.querySelector('#video input').value === 'demo/source/astronaut.mp4'",
                                   timeout=120_000)
            page.wait_for_selector("#input-video video[src]", timeout=60_000)
            page.fill("#edit input", "smile")
            page.keyboard.press("Enter")
            # letting go of the slider previews by itself
            track = page.locator("#strength input[type=range]").bounding_box()
            middle = track["y"] + track["height"] / 2
            page.mouse.move(track["x"] + track["width"] * 0.8, middle)
            page.mouse.down()
            page.mouse.move(track["x"] + track["width"] * 0.3, middle, steps=5)
            page.mouse.up()
            image = page.wait_for_selector("#preview-image img", timeout=180_000)
            # non-blank: the image loaded and has a size
            page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image, timeout=60_000)
            slid = image.get_attribute("src")
            assert "sheet.png" in slid
            # then a strength typed in and the button: another sheet
            page.fill("#strength input[type=number]", "-2")
            page.keyboard.press("Enter")
            page.click("#preview-button")
            page.wait_for_function("old => { const img = document.querySelector('#preview-image img');"
                                   " return img && img.getAttribute('src') !== old && img.complete && img.naturalWidth > 0; }",
                                   arg=slid, timeout=180_000)
            page.click("#run-button")
            values = set()
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline and not page.query_selector("#output-video video[src]"):
                assert not page.query_selector(".toast-item"), page.inner_text(".toast-item")  # an error said on the page
                value = page.get_attribute("#progress progress", "value")
                values.add(float(value))
                page.wait_for_timeout(100)
            source = page.get_attribute("#output-video video", "src", timeout=5_000)
            page.screenshot(path=str(shot), full_page=True)
            # a bad upload: one line on the page, naming the file as the user knows it
            notes = tmp_path / "notes.mp4"
            notes.write_text("not a video")
            page.set_input_files("#upload input[type=file]", str(notes))
            said = page.get_by_text("notes.mp4: not a readable video").first
            said.wait_for(timeout=60_000)
            line = said.inner_text()
        except Exception as exc:  # what the page and the server showed, to see why
            failed = tmp_path / "failed.png"
            page.screenshot(path=str(failed), full_page=True)
            if keep:
                shutil.copyfile(failed, keep)
            raise AssertionError(f"{exc}\npage: {failed}\nserver log (end):\n{server.log.read_text()[-4000:]}") from exc
        finally:
            browser.close()
    assert source and source.endswith(layout.published_name("astronaut", "smile-2"))
    assert any(0 < v < 1 for v in values), values  # the bar moved between the start and the end
    assert shot.stat().st_size > 0
    assert "\n" not in line.strip() and "is the file complete and really a video?" in line
    assert not (server.root / "uploads" / "notes.mp4").exists()
    if keep:
        shutil.copyfile(shot, keep)
