"""`videdit weights fetch` and `weights add --from` against a real HTTP server on 127.0.0.1.

The server (http.server in a thread) serves fixture files built here from tiny random networks saved in
the official formats. It plays Google Drive (the confirmation page of a file too large to scan, in the
current form layout and the older cookie-and-link one; the quota page), cuts connections midway and can
ignore Range. Nothing of the downloader is replaced: the registry entries are the real ones, with only
the address moved to the local server (`drive_base`, or `url`), and every request below is real.
"""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import json
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import urllib.parse
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from videdit import weights as W
from videdit.checkpoints.fixtures import write_snapshot_pickle
from videdit.errors import CheckpointError, DownloadError, VideditError
from videdit.progress import Reporter, reporting
from videdit.weights_bundle import add_from

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# What Drive serves instead of a file whose download quota is used up (abridged from a real page).
QUOTA_PAGE = (
    "<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>"
    "<p class=\"uc-error-caption\">Sorry, you can't view or download this file at this time.</p>"
    "<p class=\"uc-error-subcaption\">Too many users have viewed or downloaded this file recently. Please try "
    "accessing the file again later.</p></body></html>"
)
UUID = "5e3c6f0e-1d2b-4a7f-9a1e-0c6d1f2b3a4c"
TOKEN = "Xq9z"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class FixtureServer:
    """Files by path, Drive files by id behind Drive's pages, Range requests, cuts on request."""

    def __init__(self):
        self.files: dict[str, bytes] = {}  # "/name" -> body
        self.drive: dict[str, bytes] = {}  # Drive id -> body
        self.drive_layout = "form"  # "form" (current Drive), "cookie" (older Drive) or "quota"
        self.scan_limit = 1 << 20  # larger Drive files come behind the confirmation page
        self.cuts: dict[str, list[int]] = {}  # path or id -> bytes sent by each next response before the connection drops
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []  # (path and query, Range header)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_port}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self):
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - http.server's name
                server.requests.append((self.path, self.headers.get("Range")))
                split = urllib.parse.urlsplit(self.path)
                query = dict(urllib.parse.parse_qsl(split.query))
                if split.path == "/uc":
                    self.drive_uc(query)
                elif split.path == "/download":  # Drive's file host: /uc redirects here, the page's form points here
                    self.drive_download(query)
                elif split.path in server.files:
                    self.send_file(server.files[split.path], split.path)
                else:
                    self.send_page(404, "<html><body>not found</body></html>")

            def drive_uc(self, query):
                file_id = query.get("id", "")
                if file_id not in server.drive:
                    return self.send_page(404, "<html><body>not found</body></html>")
                body = server.drive[file_id]
                if server.drive_layout == "quota":
                    return self.send_page(200, QUOTA_PAGE)
                if server.drive_layout == "form":  # today's Drive sends every download to its file host
                    self.send_response(303)
                    self.send_header("Location", f"{server.url}/download?id={file_id}&export=download")
                    self.send_header("Content-Length", "0")
                    return self.end_headers()
                if len(body) <= server.scan_limit:
                    return self.send_file(body, file_id)
                cookie = f"download_warning_13058876669334088843_{file_id}={TOKEN}"
                if query.get("confirm") == TOKEN and cookie in (self.headers.get("Cookie") or ""):
                    return self.send_file(body, file_id)
                return self.send_page(200, (
                    "<html><body><p>Google Drive can't scan this file for viruses.</p>"
                    f'<a id="uc-download-link" href="/uc?export=download&amp;confirm={TOKEN}&amp;id={file_id}">'
                    "Download anyway</a></body></html>"), cookie=cookie)

            def drive_download(self, query):
                file_id = query.get("id", "")
                if file_id not in server.drive:
                    return self.send_page(404, "<html><body>not found</body></html>")
                body = server.drive[file_id]
                if len(body) <= server.scan_limit or (query.get("confirm") == "t" and query.get("uuid") == UUID):
                    return self.send_file(body, file_id)
                return self.send_page(200, (
                    "<html><head><title>Google Drive - Virus scan warning</title></head><body>"
                    "<p>Google Drive can't scan this file for viruses.</p>"
                    f'<form id="download-form" action="{server.url}/download" method="get">'
                    '<input type="submit" id="uc-download-link" value="Download anyway"/>'
                    f'<input type="hidden" name="id" value="{file_id}"><input type="hidden" name="export" value="download">'
                    f'<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{UUID}">'
                    "</form></body></html>"))

            def send_page(self, code, page, cookie=None):
                data = page.encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                if cookie:
                    self.send_header("Set-Cookie", f"{cookie}; Path=/")
                self.end_headers()
                self.wfile.write(data)

            def send_file(self, body, key):
                start = 0
                wanted = self.headers.get("Range")
                if wanted and not server.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", wanted)[1])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cuts = server.cuts.get(key)
                if cuts:  # the connection drops after this many bytes
                    self.wfile.write(body[start:start + cuts.pop(0)])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body[start:])

        return Handler


@pytest.fixture()
def server():
    with FixtureServer() as s:
        yield s


@pytest.fixture()
def wdir(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "weights"


@pytest.fixture(scope="module")
def restyle_bytes() -> bytes:
    """A ReStyle-e4e checkpoint laid out like restyle_e4e_ffhq.pt (17 MB: behind Drive's confirmation page)."""
    from tests.test_encoders import _released_layout

    ckpt, _, _ = _released_layout("e4e", "resnet34")
    buffer = io.BytesIO()
    torch.save(ckpt, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def snapshot_bytes(tmp_path_factory) -> bytes:
    """An NVIDIA-format snapshot pickle (G_ema and D) of tiny random networks."""
    from videdit.networks.discriminator import Discriminator
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

    torch.manual_seed(3)
    G = Generator(**tiny_generator_kwargs(resolution=16, channels=8, w_dim=32)).eval()
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=8).eval()
    return write_snapshot_pickle(tmp_path_factory.mktemp("snap") / "snap.pkl", {"G_ema": G, "D": D}).read_bytes()


def boundary_bytes(seed: int) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(seed).standard_normal((1, 512)).astype(np.float32))
    return buffer.getvalue()


def local(name: str, server: FixtureServer, **changes) -> W.WeightFile:
    """The registry entry `name`, its file served from the local server instead of upstream."""
    w = W.get(name)
    return dataclasses.replace(w, url=f"{server.url}/{Path(w.filename).name}", drive_id=None, **changes)


# ----------------------------------------------------------------------------------------------
# Google Drive


@pytest.mark.parametrize("layout", ["form", "cookie", "no page"])
def test_drive_file_with_and_without_the_confirmation_page(server, wdir, restyle_bytes, layout):
    w = W.get("restyle_e4e")  # the real entry: its real Drive id, asked of the local "Drive"
    server.drive[w.drive_id] = restyle_bytes
    server.drive_layout = "cookie" if layout == "cookie" else "form"
    if layout == "no page":  # a file small enough to be scanned comes without a confirmation page
        server.scan_limit = len(restyle_bytes)
    stream = io.StringIO()
    with reporting(Reporter(stream, tty=False, interval=0)):
        path = W.fetch(w, wdir, drive_base=f"{server.url}/uc")

    assert path == wdir / "restyle_e4e_ffhq.pt" and path.read_bytes() == restyle_bytes
    assert not path.with_name(path.name + ".part").exists()
    asked = [p for p, _ in server.requests]
    if layout == "no page":
        assert asked == [f"/uc?export=download&id={w.drive_id}", f"/download?id={w.drive_id}&export=download"]
    elif layout == "form":  # redirected to the file host's page, then its form's action with the hidden inputs as the query
        assert asked == [f"/uc?export=download&id={w.drive_id}", f"/download?id={w.drive_id}&export=download",
                         f"/download?id={w.drive_id}&export=download&confirm=t&uuid={UUID}"]
    else:  # the page's link, sent with the download_warning cookie (the server checks it)
        assert asked == [f"/uc?export=download&id={w.drive_id}", f"/uc?export=download&confirm={TOKEN}&id={w.drive_id}"]
    megabytes = -(-len(restyle_bytes) // (1 << 20))
    assert f"restyle_e4e_ffhq.pt: {megabytes}/{megabytes} MiB" in stream.getvalue()  # the progress reached the end
    record = W.recorded_digests(wdir)["restyle_e4e"]  # no digest is published: the first fetch records one
    assert record == {"file": "restyle_e4e_ffhq.pt", "sha256": sha256(restyle_bytes), "size": len(restyle_bytes),
                      "from": f"https://drive.google.com/file/d/{w.drive_id}/view"}


def test_drive_quota_page_is_one_line_with_the_manual_step(server, wdir, restyle_bytes):
    w = W.get("restyle_e4e")
    server.drive[w.drive_id] = restyle_bytes
    server.drive_layout = "quota"
    with pytest.raises(DownloadError) as err:
        W.fetch(w, wdir, drive_base=f"{server.url}/uc")
    message = str(err.value)
    assert "\n" not in message and "quota" in message
    assert f"open https://drive.google.com/file/d/{w.drive_id}/view in a browser" in message
    assert "`videdit weights add FILE --as restyle_e4e`" in message and str(wdir / "restyle_e4e_ffhq.pt") in message
    assert not wdir.exists() or list(wdir.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# Resuming


def test_a_cut_transfer_resumes_where_it_stopped(server, wdir, snapshot_bytes):
    w = local("stylegan3_r_ffhq", server)
    cut = len(snapshot_bytes) // 3
    server.files["/stylegan3-r-ffhq-1024x1024.pkl"] = snapshot_bytes
    server.cuts["/stylegan3-r-ffhq-1024x1024.pkl"] = [cut]
    path = W.fetch(w, wdir)
    assert path.read_bytes() == snapshot_bytes
    assert [r for _, r in server.requests] == [None, f"bytes={cut}-"]  # the second asked only for the rest


def test_a_part_file_left_by_an_earlier_call_is_resumed(server, wdir, snapshot_bytes):
    w = local("stylegan3_r_ffhq", server)
    server.files["/stylegan3-r-ffhq-1024x1024.pkl"] = snapshot_bytes
    server.cuts["/stylegan3-r-ffhq-1024x1024.pkl"] = [1000, 0]  # a cut, then a resume that brings nothing
    with pytest.raises(DownloadError) as err:
        W.fetch(w, wdir)
    message = str(err.value)
    assert "\n" not in message and "run the same command again to resume" in message
    part = wdir / "stylegan3-r-ffhq-1024x1024.pkl.part"
    assert part.read_bytes() == snapshot_bytes[:1000] and not (wdir / "stylegan3-r-ffhq-1024x1024.pkl").exists()

    server.requests.clear()
    assert W.fetch(w, wdir).read_bytes() == snapshot_bytes  # the next call goes on from the .part
    assert [r for _, r in server.requests] == ["bytes=1000-"] and not part.exists()


def test_a_server_that_ignores_range_makes_the_file_start_over(server, wdir):
    w = local("edit_age", server)
    body = boundary_bytes(0)
    server.files["/age_boundary.npy"] = body
    server.ignore_range = True
    part = wdir / "age_boundary.npy.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"\x93NUMPY stale bytes of another file")
    assert W.fetch(w, wdir).read_bytes() == body  # not the stale bytes followed by the whole file


# ----------------------------------------------------------------------------------------------
# Verification


@pytest.mark.parametrize("served", ["truncated", "login page"])
def test_a_corrupt_file_is_refused_and_not_installed(server, wdir, snapshot_bytes, served):
    w = local("stylegan3_r_ffhq", server)  # no digest published: the structural check decides
    server.files["/stylegan3-r-ffhq-1024x1024.pkl"] = (snapshot_bytes[: len(snapshot_bytes) // 2] if served == "truncated"
                                                      else QUOTA_PAGE.encode())
    with pytest.raises(CheckpointError) as err:
        W.fetch(w, wdir)
    message = str(err.value)
    assert "\n" not in message and "stylegan3-r-ffhq-1024x1024.pkl from http://127.0.0.1" in message
    assert "the download was deleted" in message and (served == "truncated" or "HTML page" in message)
    assert list(wdir.iterdir()) == []  # neither the file, nor its .part, nor a recorded digest


def test_a_pinned_digest_catches_what_loads_fine(server, wdir):
    weight = torch.randn(4, 3, 3, 3, generator=torch.Generator().manual_seed(1))
    good = io.BytesIO()
    torch.save({"conv1_1.weight": weight}, good)
    good = good.getvalue()
    bad = bytearray(good)
    bad[good.index(weight.numpy().tobytes()) + 5] ^= 1  # one bit of a weight: the file still loads as the right network
    w = local("fan_detector", server, sha256=sha256(good), sha256_prefix=None)
    server.files["/s3fd-619a316812.pth"] = bytes(bad)
    with pytest.raises(CheckpointError, match="does not match the sha256 pinned for s3fd-619a316812.pth"):
        W.fetch(w, wdir)
    hub = W.expected_path(w, wdir).parent
    assert not hub.exists() or list(hub.iterdir()) == []
    server.files["/s3fd-619a316812.pth"] = good
    assert W.fetch(w, wdir).read_bytes() == good and W.expected_path(w, wdir).parent == hub


def test_the_recorded_digest_is_compared_on_every_later_fetch(server, wdir):
    w = local("edit_age", server)
    first = boundary_bytes(1)
    server.files["/age_boundary.npy"] = first
    path = W.fetch(w, wdir)
    assert W.verify(w, path, wdir) == "ok (recorded)"
    [present] = W.fetch_many([w], wdir)
    assert present.error is None and present.message == "already present, sha256 matches the recorded one"

    path.unlink()
    server.files["/age_boundary.npy"] = boundary_bytes(2)  # upstream changed: still a valid boundary
    with pytest.raises(CheckpointError, match="recorded in .*sha256.json when age_boundary.npy was first installed"):
        W.fetch(w, wdir)
    assert not path.exists()

    path.write_bytes(boundary_bytes(3))  # a different file put in place by hand
    [changed] = W.fetch_many([w], wdir)
    assert changed.path is None and "does not match the sha256 recorded" in str(changed.error)
    assert W.verify(w, path, wdir) == "mismatch (recorded)"


# ----------------------------------------------------------------------------------------------
# Offline: the command line, with every address behind a proxy that refuses connections


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_is_one_line_per_file_with_the_manual_step(tmp_path):
    proxy = f"http://127.0.0.1:{_closed_port()}"
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(https_proxy=proxy, http_proxy=proxy, TORCH_HOME=str(tmp_path / "torch"))
    run = [sys.executable, "-m", "videdit", "weights", "fetch", "--weights-dir", str(tmp_path / "w")]

    one = subprocess.run(run + ["restyle_e4e"], capture_output=True, text=True, env=env, timeout=120)
    assert one.returncode == 4, one.stderr
    [line] = one.stderr.splitlines()
    drive_id = W.get("restyle_e4e").drive_id
    assert line.startswith("videdit: error: could not download restyle_e4e_ffhq.pt from https://drive.google.com/")
    assert "connection refused" in line and f"https://drive.google.com/file/d/{drive_id}/view" in line
    assert "`videdit weights add FILE --as restyle_e4e`" in line and str(tmp_path / "w" / "restyle_e4e_ffhq.pt") in line

    every = subprocess.run(run + ["--all"], capture_output=True, text=True, env=env, timeout=300)
    assert every.returncode == 4
    lines = every.stderr.splitlines()
    assert len(lines) == len(W.KNOWN_WEIGHTS) + 1, every.stderr  # one per file, then the count
    for w, line in zip(W.KNOWN_WEIGHTS, lines):
        assert f"could not download {w.filename} from " in line and f"--as {w.name}`" in line
    assert lines[-1] == f"videdit: error: {len(W.KNOWN_WEIGHTS)} of {len(W.KNOWN_WEIGHTS)} files not fetched (see above)"
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []  # nothing written, not even a .part


# ----------------------------------------------------------------------------------------------
# weights add --from DIR|ZIP


def _delta_i_c_bytes() -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.random.default_rng(4).standard_normal((40, 512)).astype(np.float32))
    return buffer.getvalue()


def test_add_from_a_folder(tmp_path, restyle_bytes):
    """A folder laid out like stylegan3-editing's: files found by their names, each checked; a symbolic
    link and a wrong file refused; other files left alone."""
    src = tmp_path / "copied"
    files = {
        "pretrained_models/restyle_e4e_ffhq.pt": restyle_bytes,
        "editing/interfacegan/boundaries/ffhq/age_boundary.npy": boundary_bytes(5),
        "editing/styleclip_global_directions/sg3-r-ffhq-1024/delta_i_c.npy": _delta_i_c_bytes(),
        "editing/interfacegan/boundaries/ffhq/Smiling_boundary.npy": b"\x93NUMPY broken",
        "notes.txt": b"from the lab server",
    }
    for name, data in files.items():
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(data)
    (tmp_path / "elsewhere.pth").write_bytes(b"x")
    (src / "pretrained_models" / "model_ir_se50.pth").symlink_to(tmp_path / "elsewhere.pth")
    env = dict(os.environ, TORCH_HOME=str(tmp_path / "torch"))

    out = subprocess.run([sys.executable, "-m", "videdit", "weights", "add", "--from", str(src), "--weights-dir",
                          str(tmp_path / "w")], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 1, out.stderr  # some files refused
    errors = out.stderr.splitlines()
    assert len(errors) == 3 and errors[-1].endswith("2 of 5 files not added (see above)")  # in registry order:
    assert "Smiling_boundary.npy" in errors[0] and "model_ir_se50.pth is a symbolic link: refused" in errors[1]
    assert "not registry files, left alone: notes.txt" in out.stdout
    w = tmp_path / "w"
    assert (w / "restyle_e4e_ffhq.pt").read_bytes() == restyle_bytes
    assert (w / "age_boundary.npy").read_bytes() == files["editing/interfacegan/boundaries/ffhq/age_boundary.npy"]
    assert (w / "styleclip/sg3-r-ffhq-1024/delta_i_c.npy").read_bytes() == _delta_i_c_bytes()
    assert not (w / "Smiling_boundary.npy").exists() and not (w / "model_ir_se50.pth").exists()
    records = json.loads((w / W.DIGEST_RECORD).read_text())
    assert sorted(records) == ["edit_age", "restyle_e4e", "styleclip_delta_i_c"]
    assert records["restyle_e4e"]["sha256"] == sha256(restyle_bytes)


def test_add_from_a_zip(tmp_path, wdir, snapshot_bytes):
    archive = tmp_path / "weights.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("weights/stylegan3-r-ffhq-1024x1024.pkl", snapshot_bytes)
        zf.writestr("weights/age_boundary.npy", boundary_bytes(6))
        zf.writestr("weights/README.md", "copied from the lab")
    results, skipped = add_from(archive, wdir)
    assert [(r.weight.name, r.error) for r in results] == [("stylegan3_r_ffhq", None), ("edit_age", None)]
    assert skipped == ["weights/README.md"]
    assert (wdir / "stylegan3-r-ffhq-1024x1024.pkl").read_bytes() == snapshot_bytes
    assert sorted(W.recorded_digests(wdir)) == ["edit_age", "stylegan3_r_ffhq"]
    assert sorted(p.name for p in wdir.iterdir()) == [".sha256.json", "age_boundary.npy", "stylegan3-r-ffhq-1024x1024.pkl"]


@pytest.mark.parametrize("kind", ["parent", "absolute", "symlink"])
def test_a_zip_that_reaches_outside_or_holds_a_link_is_refused_whole(tmp_path, wdir, kind):
    archive = tmp_path / f"{kind}.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("age_boundary.npy", boundary_bytes(7))  # a good file, which must not be installed either
        if kind == "symlink":
            link = zipfile.ZipInfo("Smiling_boundary.npy")
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(link, "/etc/passwd")
        else:
            zf.writestr("../../Smiling_boundary.npy" if kind == "parent" else "/tmp/Smiling_boundary.npy", boundary_bytes(8))
    with pytest.raises(VideditError) as err:
        add_from(archive, wdir)
    message = str(err.value)
    assert "\n" not in message and "nothing installed" in message
    assert ("symbolic link" if kind == "symlink" else "zip slip") in message
    assert not wdir.exists()
    assert not (tmp_path / "Smiling_boundary.npy").exists() and not Path("/tmp/Smiling_boundary.npy").exists()


# ----------------------------------------------------------------------------------------------
# The registry


def test_every_entry_has_an_address_and_a_manual_step(tmp_path):
    for w in W.KNOWN_WEIGHTS:
        assert (w.url is None) != (w.drive_id is None), w.name  # one source each
        if w.drive_id:
            assert re.fullmatch(r"[-\w]{25,}", w.drive_id), w.name
        else:
            assert w.url.startswith("https://"), w.name
        assert W.fetch_command(w) == f"videdit weights fetch {w.name}"
        step = W.manual_step(w, tmp_path)
        assert (f"open {w.page} in a browser" if w.drive_id else "download that address") in step, step
    message = W.missing_message([W.get("restyle_e4e"), W.get("edit_age")], tmp_path)  # what `videdit run` says
    assert message.splitlines()[-1] == "  all at once: videdit weights fetch restyle_e4e edit_age"
    assert [w.name for w in W.select(["fan_*"])] == ["fan_detector", "fan_2d"]
    assert [w.name for w in W.select(["edit_smile", "restyle_e4e"])] == ["restyle_e4e", "edit_smile"]
    with pytest.raises(VideditError, match="unknown weights 'nope'"):
        W.select(["nope"])
