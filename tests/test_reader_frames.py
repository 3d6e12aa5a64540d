"""VideoReader.frames(indices): only the frames asked for, the same pixels and timestamps as a full read."""
import numpy as np


def test_frames_gives_only_the_asked_frames(tmp_path):
    from videdit.io import VideoReader
    from videdit.synthetic import make_clip

    clip = make_clip(tmp_path / "c.mp4", n_frames=8, size=(96, 64), audio=False)
    reader = VideoReader(clip.path)
    every = list(reader)
    picked = list(reader.frames([5, 2]))
    assert [f.index for f in picked] == [2, 5]
    for frame in picked:
        full = every[frame.index]
        assert frame.pts == full.pts and frame.time_s == full.time_s
        np.testing.assert_array_equal(frame.image, full.image)
    assert list(reader.frames([])) == []
    assert [f.index for f in reader.frames(range(8))] == list(range(8))


def test_frames_of_an_image_folder(tmp_path):
    from PIL import Image

    from videdit.io import VideoReader

    for i in range(4):
        Image.fromarray(np.full((16, 24, 3), 40 * i, np.uint8)).save(tmp_path / f"{i:03d}.png")
    picked = list(VideoReader(tmp_path).frames([1, 3]))
    assert [f.index for f in picked] == [1, 3] and [int(f.image[0, 0, 0]) for f in picked] == [40, 120]
