"""`videdit weights add` / `fetch` accept a file only when it is what its registry entry says
(the downloads themselves: tests/test_weights_fetch.py)."""
from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from videdit import weights as W
from videdit.checkpoints.content import CONTENT_KINDS, sniff_text_page
from videdit.checkpoints.fixtures import write_snapshot_pickle
from videdit.errors import CheckpointError
from videdit.networks.discriminator import Discriminator
from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# What Google Drive serves instead of a large file once its download quota is used up (abridged).
DRIVE_QUOTA_PAGE = (
    b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title>"
    b'<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body>'
    b"<p>Sorry, you can't view or download this file at this time.</p>"
    b"<p>Too many users have viewed or downloaded this file recently.</p></body></html>\n"
)


def _refusal(src: Path, name: str, weights_dir: Path) -> str:
    with pytest.raises(CheckpointError) as err:
        W.add(src, weights_dir, name)
    message = str(err.value)
    assert message and "\n" not in message, message
    assert not W.expected_path(W.get(name), weights_dir).exists(), "a refused file was put in place"
    return message


@pytest.fixture(scope="module")
def tiny_g() -> Generator:
    torch.manual_seed(1)
    return Generator(**tiny_generator_kwargs(resolution=16, channels=8, w_dim=32)).eval()


@pytest.fixture()
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return tmp_path / "weights"


# ----------------------------------------------------------------------------------------------
# Pages that are not weights


@pytest.mark.parametrize("name", ["restyle_e4e", "stylegan3_r_ffhq", "edit_age", "lpips_alexnet"])
def test_html_page_is_named_as_such(tmp_path, env, name):
    src = tmp_path / W.get(name).filename
    src.write_bytes(DRIVE_QUOTA_PAGE)
    message = _refusal(src, name, env)
    assert str(src) in message and "HTML page" in message and "quota or login page" in message, message


def test_other_text_is_named_as_text(tmp_path, env):
    src = tmp_path / "restyle_e4e_ffhq.pt"
    src.write_text("Quota exceeded for quota metric 'Downloads'\n")
    message = _refusal(src, "restyle_e4e", env)
    assert "text file" in message and "Quota exceeded" in message


def test_sniffing_leaves_binary_formats_alone(tmp_path):
    torch.save({"w": torch.zeros(4)}, tmp_path / "zip.pt")
    torch.save({"w": torch.zeros(4)}, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    np.save(tmp_path / "b.npy", np.zeros((1, 512), np.float32))
    heads = [p.read_bytes()[:1024] for p in (tmp_path / "zip.pt", tmp_path / "legacy.pt", tmp_path / "b.npy")]
    heads.append(pickle.dumps({"G_ema": 1}, protocol=4))
    assert [sniff_text_page(h) for h in heads] == [None] * 4
    assert sniff_text_page(b"  \n<html><body>x</body></html>") == "HTML"
    assert sniff_text_page(b"plain words") == "text"


# ----------------------------------------------------------------------------------------------
# Pickles


def test_wrong_kind_pickle_is_named_as_such(tmp_path, env):
    for i, obj in enumerate([{"weights": [1.0, 2.0]}, [1, 2, 3]]):
        src = tmp_path / f"other{i}.pkl"
        src.write_bytes(pickle.dumps(obj, protocol=4))
        message = _refusal(src, "stylegan3_r_ffhq", env)
        assert str(src) in message and "valid pickle of the wrong kind" in message, message


class _RunsShell:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickle_is_refused_by_name_without_running(tmp_path, env):
    marker = tmp_path / "pwned"
    src = tmp_path / "stylegan3-r-ffhq-1024x1024.pkl"
    src.write_bytes(pickle.dumps(_RunsShell(marker)))
    assert src.stat().st_size < 120  # the size of the payloads seen in the wild
    message = _refusal(src, "stylegan3_r_ffhq", env)
    assert str(src) in message and "system" in message and "refused" in message
    assert "weights_only" not in message and not marker.exists()


def test_snapshot_pickle_is_accepted_and_crafted_kwargs_are_not(tmp_path, env, tiny_g):
    D = Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=128, channel_max=8).eval()
    src = write_snapshot_pickle(tmp_path / "snap.pkl", {"G_ema": tiny_g, "D": D})
    dest = W.add(src, env, "stylegan3_r_ffhq")
    assert dest.read_bytes() == src.read_bytes()

    D.init_kwargs = dict(D.init_kwargs, channel_max=64, channel_base=2**12)  # D's kwargs disagree with its tensors
    src = write_snapshot_pickle(tmp_path / "bad_d.pkl", {"G_ema": tiny_g, "D": D})
    message = _refusal(src, "stylegan3_r_ffhq", tmp_path / "other")
    assert "bad_d.pkl" in message and ("missing key" in message or "shape" in message), message


# ----------------------------------------------------------------------------------------------
# torch files


def test_generator_state_dict(tmp_path, env, tiny_g):
    torch.save(tiny_g.state_dict(), tmp_path / "g.pt")
    W.add(tmp_path / "g.pt", env, "sg3_r_ffhq_pt")
    state = dict(tiny_g.state_dict())
    del state["mapping.w_avg"]
    torch.save(state, tmp_path / "g_missing.pt")
    message = _refusal(tmp_path / "g_missing.pt", "sg3_r_ffhq_pt", tmp_path / "other")
    assert "'mapping.w_avg'" in message


def test_restyle_checkpoint(tmp_path, env):
    from tests.test_encoders import _released_layout

    ckpt, _, _ = _released_layout("psp", "resnet34")
    torch.save(ckpt, tmp_path / "restyle.pt")
    W.add(tmp_path / "restyle.pt", env, "restyle_psp")

    state = dict(ckpt["state_dict"])
    state["encoder.styles.3.linear.weight"] = torch.zeros(512, 256)
    torch.save({**ckpt, "state_dict": state}, tmp_path / "misshaped.pt")
    assert "encoder.styles.3.linear.weight" in _refusal(tmp_path / "misshaped.pt", "restyle_psp", tmp_path / "o")

    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "other.pt")  # a torch file of another kind
    assert "not a ReStyle checkpoint" in _refusal(tmp_path / "other.pt", "restyle_psp", tmp_path / "o")


def test_torch_weights_need_their_keys_and_digest(tmp_path, env):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    message = _refusal(tmp_path / "other.pth", "lpips_alexnet", env)
    assert "wrong kind" in message and "'features.0.weight'" in message

    torch.save({"features.0.weight": torch.zeros(2), "classifier.6.weight": torch.zeros(2)}, tmp_path / "alex.pth")
    assert "does not match the sha256" in _refusal(tmp_path / "alex.pth", "lpips_alexnet", env)

    marker = tmp_path / "pwned"
    torch.save({"features.0.weight": _RunsShell(marker)}, tmp_path / "evil.pth")
    message = _refusal(tmp_path / "evil.pth", "lpips_alexnet", env)
    assert "evil.pth" in message and "system" in message and "weights_only" not in message
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# Boundaries


def test_boundaries(tmp_path, env):
    good = np.random.default_rng(0).standard_normal((1, 512)).astype(np.float32)
    np.save(tmp_path / "age.npy", good)
    assert np.array_equal(np.load(W.add(tmp_path / "age.npy", env, "edit_age")), good)

    cases = {
        "shape": (np.zeros((1, 256), np.float32), "shape [1, 256]"),
        "dtype": (np.zeros((1, 512), np.int64), "dtype int64"),
        "nan": (np.full((512,), np.nan, np.float32), "NaN"),
        "object": (np.array([{"a": 1}], dtype=object), "unreadable"),
    }
    for label, (value, expected) in cases.items():
        np.save(tmp_path / f"{label}.npy", value, allow_pickle=True)
        message = _refusal(tmp_path / f"{label}.npy", "edit_smile", env)
        assert expected in message, message


# ----------------------------------------------------------------------------------------------
# The registry


def test_every_entry_names_a_content_check_and_fixed_urls_are_pinned():
    for w in W.KNOWN_WEIGHTS:
        assert w.content in CONTENT_KINDS, w.name
        if w.content == "boundary":
            assert re.search(r"/stylegan3-editing/[0-9a-f]{40}/", w.url), w.url
