"""Memory that fits by itself: a probe sample's peak decides the batch, lowered in one line, forced when asked."""
from __future__ import annotations

import numpy as np
import pytest

from videdit import memory


def _sample_of_100_mib():
    """A probe that needs ~100 MiB of new resident memory (freshly mapped pages: memory from malloc may be
    freed heap pages that are still resident after earlier tests, which the peak RSS does not see)."""
    import mmap

    block = mmap.mmap(-1, 100 << 20)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    block.close()


def test_fit_batch_lowers_to_what_fits(monkeypatch):
    monkeypatch.setenv(memory.BUDGET_ENV, f"{memory.current_rss() + (300 << 20)}B")
    choice = memory.fit_batch(8, _sample_of_100_mib, what="render")
    assert choice.lowered and 1 <= choice.batch_size <= 3, choice
    assert choice.per_sample >= 90 << 20
    forced = memory.fit_batch(8, lambda: pytest.fail("a forced batch is not probed"), forced=True)
    assert forced.batch_size == 8 and not forced.lowered


def test_parse_size():
    assert memory.parse_size("6GB") == 6 << 30 and memory.parse_size("512 mb") == 512 << 20
    assert memory.parse_size("1.5G") == int(1.5 * 2**30) and memory.parse_size("1000") == 1000
    from videdit.errors import VideditError

    with pytest.raises(VideditError, match="VIDEDIT_MEMORY_BUDGET"):
        memory.parse_size("lots")


@pytest.mark.slow
def test_a_tiny_budget_lowers_the_batch_and_the_run_finishes(tmp_path, monkeypatch):
    from videdit.pipeline import Pipeline, StandInModels
    from videdit.synthetic import make_clip

    clip = make_clip(tmp_path / "face.mp4", n_frames=5, size=(192, 160))
    overrides = {"align.crop_size": 64, "encode.n_iters": 1, "encode.batch_size": 4, "render.batch_size": 4,
                 "tune.steps": 1, "tune.batch_size": 2, "tune.micro_batch": 2, "tune.lpips_weight": 0.0, "tune.allow_l2_only": True,
                 "tune.checkpoint_every": 0, "render.side_by_side": False}

    def run(name):
        pipe = Pipeline.from_preset("default", overrides=overrides, quiet=True, models=StandInModels(resolution=64))
        return pipe.run(clip.path, tmp_path / name, until="render")

    monkeypatch.setenv(memory.BUDGET_ENV, "1MB")  # less than any sample needs: batch 1
    small = run("small")
    assert small.status == "ok", small.error
    log = (small.run_dir / "log.txt").read_text()
    assert "encode warning encode: batch 4 would need" in log and "using batch 1" in log
    assert "render warning render: batch 4 would need" in log
    assert "tune warning tune (micro-batch): batch 2 would need" in log
    monkeypatch.delenv(memory.BUDGET_ENV)
    roomy = run("roomy")
    assert "would need" not in (roomy.run_dir / "log.txt").read_text()
    # The batch is a memory/speed choice only: the same latents either way.
    same = np.load(small.run_dir / "encode" / "latents.npy"), np.load(roomy.run_dir / "encode" / "latents.npy")
    np.testing.assert_allclose(*same, atol=1e-5)
