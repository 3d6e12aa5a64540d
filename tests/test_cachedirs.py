"""The cache folders are looked up in one place (videdit.cachedirs), by the rules of XDG and torch.hub."""
from __future__ import annotations

from pathlib import Path

import pytest

from videdit import cachedirs


@pytest.mark.parametrize("torch_home", [None, "th", "~/th"])
@pytest.mark.parametrize("xdg", [None, "xdg"])
def test_torch_hub_folder_is_torch_hubs_own(tmp_path, monkeypatch, torch_home, xdg):
    """Computed without importing torch, it must still be the folder torch.hub (so face-alignment) uses."""
    hub = pytest.importorskip("torch.hub")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name, value in (("TORCH_HOME", torch_home), ("XDG_CACHE_HOME", xdg)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value if value.startswith("~") else str(tmp_path / value))
    assert cachedirs.torch_hub_checkpoints_dir() == Path(hub.get_dir()) / "checkpoints"


def test_every_cache_user_follows_the_one_lookup(tmp_path, monkeypatch):
    from videdit import weights
    from videdit.face.landmarks import fan_model_paths
    from videdit.ops import extensions

    monkeypatch.chdir(tmp_path)  # no ./weights folder here
    monkeypatch.delenv("VIDEDIT_WEIGHTS", raising=False)
    monkeypatch.delenv("TORCH_HOME", raising=False)
    for cache in (tmp_path / "one", tmp_path / "two"):
        monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
        assert cachedirs.user_cache_dir() == cache / "videdit"
        assert weights.resolve_weights_dir() == cache / "videdit" / "weights"
        assert extensions.cache_root() == cache / "videdit" / "ops"
        assert {p.parent for p in fan_model_paths().values()} == {cache / "torch" / "hub" / "checkpoints"}
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cachedirs.user_cache_dir() == tmp_path / "home" / ".cache" / "videdit"
