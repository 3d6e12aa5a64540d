"""Test clips built from real photographs that installed packages ship, with known ground truth.

Other test files import these helpers:

    from tests.clips import make_photo_clip, make_audio_clip, astronaut, grace_hopper
    truth = make_photo_clip(tmp_path / "clip.mp4", n_frames=8, rotations_deg=[0, 5, 10, ...])
    truth.n_frames, truth.rotations_deg, truth.photo_to_frame, truth.expected_transforms(box, size)

Photos: scikit-image's `data.astronaut()` (Eileen Collins, NASA, public domain) and matplotlib's
sample `grace_hopper.jpg` (US Navy, public domain). Everything here is written with PyAV directly, not
with videdit.io, so tests of videdit.io read files made independently of the code they test.

Coordinates: pixel-centre (0, 0 = centre of the top-left pixel), x right, y down; rotations are
counter-clockwise as displayed, in degrees.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Photo:
    image: np.ndarray  # uint8 HWC RGB
    face_centre: tuple[float, float]  # roughly between the eyes and the mouth, photo pixels
    face_size: float  # face box side in photo pixels (what dlib's detector reports)


def astronaut() -> np.ndarray:
    """scikit-image's astronaut portrait, 512x512 RGB uint8."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut())


def grace_hopper() -> np.ndarray:
    """matplotlib's Grace Hopper portrait, 600x512 (HxW) RGB uint8."""
    from matplotlib import cbook
    from PIL import Image

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def load_photo(name: str) -> Photo:
    """A shipped portrait with where its face is."""
    if name == "astronaut":
        return Photo(astronaut(), face_centre=(222.0, 127.0), face_size=88.0)
    if name == "grace_hopper":
        return Photo(grace_hopper(), face_centre=(268.0, 245.0), face_size=215.0)
    raise ValueError(f"unknown photo {name!r} (astronaut, grace_hopper)")


# ----------------------------------------------------------------------------------------------
# geometry (written here independently of videdit.face)


def similarity(scale: float, rotation_deg: float, pivot, target) -> np.ndarray:
    """3x3 map: scale and turn (counter-clockwise on screen) about `pivot`, then move pivot to target."""
    angle = math.radians(rotation_deg)
    c, s = math.cos(angle), math.sin(angle)
    linear = scale * np.array([[c, s], [-s, c]])  # y down: screen-CCW is [[c, s], [-s, c]]
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = np.asarray(target, float) - linear @ np.asarray(pivot, float)
    return matrix


def _quad_crop_matrix(quad: np.ndarray, size: int) -> np.ndarray:
    """crop pixel-centre coords -> source pixel-centre coords, for a quad ordered TL, BL, BR, TR whose
    outer crop corners are at quad (pixel-centre) + 0.5."""
    quad = np.asarray(quad, float)
    ex = (quad[3] - quad[0]) / size
    ey = (quad[1] - quad[0]) / size
    matrix = np.eye(3)
    matrix[:2, 0], matrix[:2, 1] = ex, ey
    # crop centre of pixel (0,0) is corner + 0.5 in crop units; source corner is quad[0] + 0.5
    matrix[:2, 2] = quad[0] + 0.5 + 0.5 * ex + 0.5 * ey - 0.5
    return matrix


@dataclass
class ClipTruth:
    """What a test clip contains: where the photo is in every frame, and what is blank."""

    path: Path
    n_frames: int
    fps: Fraction
    size: tuple[int, int]  # (W, H) as displayed
    rotations_deg: np.ndarray  # [N] photo rotation per frame, screen counter-clockwise
    shifts_px: np.ndarray  # [N, 2] face centre offset from the frame centre
    scale: float
    photo_to_frame: np.ndarray  # [N, 3, 3] photo pixel-centre coords -> frame coords
    blank_frames: tuple[int, ...]
    face_visible: np.ndarray  # [N] bool
    timestamps_s: np.ndarray  # [N] presentation times
    has_audio: bool
    audio_path: Path | None = None  # the audio-only file muxed in, when has_audio
    distractor_to_frame: np.ndarray | None = None  # [N, 3, 3] for the second face, NaN where absent
    face_centre: np.ndarray = field(default_factory=lambda: np.zeros(2))  # in the photo

    def face_centres(self) -> np.ndarray:
        """[N, 2] where the main face's centre is in every frame."""
        point = np.array([*self.face_centre, 1.0])
        return (self.photo_to_frame @ point)[:, :2]

    def expected_transforms(self, box_quad: np.ndarray, crop_size: int, reference: int | None = None):
        """True (rotation_deg [N], translation [N, 2]) for a fixed box whose aligned crop is the
        face as in frame `reference` (default: the first visible frame), i.e. box "first".

        The aligned crop of frame i shows the face as it is in the reference frame's box; the
        unaligned crop shows it moved by photo_to_frame[i] @ inv(photo_to_frame[reference]). In crop
        pixels that motion is conjugated by the box's crop mapping, and r, t are its angle and the
        displacement of the crop centre over the crop size.
        """
        if reference is None:
            reference = int(np.flatnonzero(self.face_visible)[0])
        crop = _quad_crop_matrix(box_quad, crop_size)
        rotations, translations = [], []
        centre = np.array([(crop_size - 1) / 2, (crop_size - 1) / 2, 1.0])
        for i in range(self.n_frames):
            motion = self.photo_to_frame[i] @ np.linalg.inv(self.photo_to_frame[reference])
            in_crop = np.linalg.inv(crop) @ motion @ crop
            # screen-CCW angle of [[c, s], [-s, c]]: atan2(s, c) with s = m[0, 1]
            rotations.append(math.degrees(math.atan2(in_crop[0, 1], in_crop[0, 0])))
            translations.append(((in_crop @ centre)[:2] - centre[:2]) / crop_size)
        return np.array(rotations), np.array(translations)


# ----------------------------------------------------------------------------------------------
# writing


def _as_per_frame(value, n: int, width: int) -> np.ndarray:
    array = np.asarray(0.0 if value is None else value, dtype=np.float64)
    if array.ndim == 0 or (width > 1 and array.ndim == 1 and array.shape[0] == width):
        array = np.broadcast_to(array, (n,) if width == 1 else (n, width))
    if array.shape[0] != n:
        raise ValueError(f"need one value per frame ({n}), got {array.shape}")
    return np.array(array, dtype=np.float64)


def _warp(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], fill=(128, 128, 128)) -> np.ndarray:
    """Render `image` moved by matrix (image pixel-centre -> output pixel-centre) on a size canvas."""
    from PIL import Image

    inverse = np.linalg.inv(matrix)
    # PIL wants output -> input in corner-based coordinates: shift by 0.5 on both sides.
    shift = np.array([[1, 0, 0.5], [0, 1, 0.5], [0, 0, 1.0]])
    edge = shift @ inverse @ np.linalg.inv(shift)
    out = Image.fromarray(image).transform(size, Image.AFFINE, tuple(edge[:2].reshape(-1)),
                                           resample=Image.BILINEAR, fillcolor=fill)
    return np.asarray(out)


def _paste(canvas: np.ndarray, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Paste a moved image onto canvas (where the moved image has pixels)."""
    size = (canvas.shape[1], canvas.shape[0])
    moved = _warp(image, matrix, size, fill=(0, 0, 0))
    mask = _warp(np.full(image.shape, 255, np.uint8), matrix, size, fill=(0, 0, 0))[..., :1] / 255.0
    return np.rint(canvas * (1 - mask) + moved * mask).astype(np.uint8)


def _sine(seconds: float, sample_rate: int, channels: int, frequency: float = 440.0) -> np.ndarray:
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    wave = 0.2 * np.sin(2 * np.pi * frequency * t)
    return np.stack([wave * (1 + 0.1 * c) for c in range(channels)]).astype(np.float32)


def _add_audio_stream(container, sample_rate: int, channels: int, codec: str):
    stream = container.add_stream(codec, rate=sample_rate)
    stream.layout = "mono" if channels == 1 else "stereo"
    return stream


def _encode_audio(container, stream, samples: np.ndarray, sample_rate: int, start_s: float = 0.0) -> None:
    import av

    fmt = "fltp" if stream.codec_context.name != "pcm_s16le" else "s16p"
    frame_size = stream.codec_context.frame_size or 1024
    layout = "mono" if samples.shape[0] == 1 else "stereo"
    for start in range(0, samples.shape[1], frame_size):
        chunk = samples[:, start:start + frame_size]
        if fmt == "s16p":
            chunk = (chunk * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk), format=fmt, layout=layout)
        frame.sample_rate = sample_rate
        frame.pts = start + int(round(start_s * sample_rate))
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode(None):
        container.mux(packet)


def make_audio_clip(path: str | Path, seconds: float = 1.0, sample_rate: int = 44100, channels: int = 1,
                    codec: str = "aac", cover_picture: bool = False) -> Path:
    """An audio-only file (e.g. .m4a with AAC): a sine tone. cover_picture adds album art, which
    containers store as a one-frame video stream marked "attached picture": still no video."""
    import av

    path = Path(path)
    # .m4a means FFmpeg's "ipod" muxer, which takes no picture stream; the "mp4" one does.
    with av.open(str(path), "w", format="mp4" if cover_picture else None) as container:
        stream = _add_audio_stream(container, sample_rate, channels, codec)
        cover_packets = []
        if cover_picture:
            cover = container.add_stream("mjpeg", rate=1)
            cover.width, cover.height, cover.pix_fmt = 64, 64, "yuvj420p"
            cover.disposition = av.stream.Disposition.attached_pic
            picture = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 90, np.uint8), format="rgb24")
            picture = picture.reformat(format="yuvj420p")
            picture.pts = 0
            cover_packets = list(cover.encode(picture)) + list(cover.encode(None))
        _encode_audio(container, stream, _sine(seconds, sample_rate, channels), sample_rate)
        for packet in cover_packets:
            container.mux(packet)
    return path


def make_photo_clip(path: str | Path, photo: str = "astronaut", n_frames: int = 12,
                    size: tuple[int, int] = (320, 240), fps: Fraction | int = 25,
                    rotations_deg=None, shifts_px=None, scale: float = 1.0, audio: bool = False,
                    blank_frames: Sequence[int] = (), timestamps_s: Sequence[float] | None = None,
                    display_rotation: int = 0, crf: int = 12, distractor: str | None = None,
                    distractor_scale: float = 0.5, distractor_offset=(110.0, 40.0),
                    distractor_from: int = 0) -> ClipTruth:
    """Write a short H.264 clip of a photo turned and moved by known amounts; return the truth.

    rotations_deg: one angle (screen-CCW, degrees, about the face centre) for all frames or one per
    frame. shifts_px: (dx, dy) of the face centre from the frame centre, one or one per frame.
    scale: photo scale. blank_frames: frames replaced by flat grey (no face). timestamps_s: explicit
    (variable) frame times. display_rotation: the file stores frames turned and carries rotation
    metadata (90, 180, 270) so that a correct reader shows them upright. distractor: a second photo
    pasted at distractor_offset from the frame centre (from frame distractor_from on).
    audio: mux an AAC sine track as long as the video (written to <path>.audio.m4a first, then
    copied packet for packet, so tests can compare packets with that file).
    """
    import av

    path = Path(path)
    main = load_photo(photo)
    width, height = int(size[0]), int(size[1])
    rotations = _as_per_frame(rotations_deg, n_frames, 1)
    shifts = _as_per_frame(shifts_px, n_frames, 2)
    fps = Fraction(fps)
    blank = tuple(int(i) for i in blank_frames)
    if timestamps_s is None:
        times = np.arange(n_frames) / float(fps)
    else:
        times = np.asarray(timestamps_s, dtype=np.float64)
        if times.shape != (n_frames,):
            raise ValueError("need one timestamp per frame")

    centre = np.array([(width - 1) / 2, (height - 1) / 2])
    matrices = np.stack([similarity(scale, rotations[i], main.face_centre, centre + shifts[i])
                         for i in range(n_frames)])
    other = load_photo(distractor) if distractor else None
    distractor_matrices = None
    if other is not None:
        distractor_matrices = np.full((n_frames, 3, 3), np.nan)
        target = centre + np.asarray(distractor_offset, float)
        for i in range(distractor_from, n_frames):
            distractor_matrices[i] = similarity(distractor_scale, 0.0, other.face_centre, target)

    audio_path = None
    if audio:
        duration = float(times[-1]) + (1.0 / float(fps))
        audio_path = make_audio_clip(path.with_name(path.name + ".audio.m4a"), seconds=duration)

    time_base = Fraction(1, 1000) if timestamps_s is not None else 1 / fps
    turns = (display_rotation // 90) % 4
    stored = (width, height) if turns % 2 == 0 else (height, width)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height = stored
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        # mbtree=0: x264's macroblock tree reads uninitialised memory, so the same clip would differ
        # between runs (docs/video-io.md)
        stream.options = {"crf": str(crf), "preset": "veryfast", "x264-params": "mbtree=0"}
        if turns:
            stream.set_display_rotation(display_rotation)
        audio_in = audio_stream = None
        if audio_path is not None:
            audio_in = av.open(str(audio_path))
            audio_stream = container.add_stream_from_template(audio_in.streams.audio[0])
        for i in range(n_frames):
            if i in blank:
                image = np.full((height, width, 3), 128, np.uint8)
            else:
                image = _warp(main.image, matrices[i], (width, height))
                if distractor_matrices is not None and i >= distractor_from:
                    image = _paste(image, other.image, distractor_matrices[i])
            # Stored frames are the displayed ones turned back (clockwise by display_rotation).
            stored_image = np.ascontiguousarray(np.rot90(image, -turns)) if turns else image
            frame = av.VideoFrame.from_ndarray(stored_image, format="rgb24")
            frame.pts = int(round(times[i] / time_base))
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
        if audio_in is not None:
            for packet in audio_in.demux(audio_in.streams.audio[0]):
                if packet.dts is None:
                    continue
                packet.stream = audio_stream
                container.mux(packet)
            audio_in.close()

    visible = np.ones(n_frames, dtype=bool)
    visible[list(blank)] = False
    return ClipTruth(path=path, n_frames=n_frames, fps=fps, size=(width, height), rotations_deg=rotations,
                     shifts_px=shifts, scale=scale, photo_to_frame=matrices, blank_frames=blank,
                     face_visible=visible, timestamps_s=times, has_audio=audio, audio_path=audio_path,
                     distractor_to_frame=distractor_matrices, face_centre=np.array(main.face_centre))


def make_image_folder(folder: str | Path, n_frames: int = 4, **kwargs) -> ClipTruth:
    """Like make_photo_clip, but frames saved as PNG files frame_000.png, ... in `folder` (lossless)."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    photo_name = kwargs.pop("photo", "astronaut")
    size = kwargs.pop("size", (320, 240))
    rotations = _as_per_frame(kwargs.pop("rotations_deg", None), n_frames, 1)
    shifts = _as_per_frame(kwargs.pop("shifts_px", None), n_frames, 2)
    scale = kwargs.pop("scale", 1.0)
    if kwargs:
        raise TypeError(f"unsupported options for image folders: {sorted(kwargs)}")
    main = load_photo(photo_name)
    centre = np.array([(size[0] - 1) / 2, (size[1] - 1) / 2])
    matrices = np.stack([similarity(scale, rotations[i], main.face_centre, centre + shifts[i])
                         for i in range(n_frames)])
    for i in range(n_frames):
        Image.fromarray(_warp(main.image, matrices[i], tuple(size))).save(folder / f"frame_{i:03d}.png")
    return ClipTruth(path=folder, n_frames=n_frames, fps=Fraction(25), size=tuple(size), rotations_deg=rotations,
                     shifts_px=shifts, scale=scale, photo_to_frame=matrices, blank_frames=(),
                     face_visible=np.ones(n_frames, bool), timestamps_s=np.arange(n_frames) / 25.0,
                     has_audio=False, face_centre=np.array(main.face_centre))
