"""Benchmark: the cost per frame of shots + every-face tracking against today's single-face landmark pass.

    python benchmarks/faces.py [--size 1080] [--frames 24] [--landmarks dlib]

A clip of two people side by side (the shipped photos), with a hard cut to one of them alone half-way,
is written at the chosen size (faces scaled with the frame). Then, in this one run, each is timed:

  decode     reading the frames only (VideoReader): the floor of any pass;
  baseline   today's align-stage landmarks: one face followed with FaceTracker, searched around its
             last box and over the whole (downscaled) frame every `full_search_every` frames;
  shots      detect_shots (PySceneDetect's ContentDetector on ~256 px wide frames);
  tracks     track_faces: every face of every frame, linking, bridging, identity embeddings, people;
  embed      the identity embeddings alone (part of tracks);
  tracks/k   the same with tracks.full_search_every = k: the whole frame searched every k frames of a
             shot, only around the open tracks in between (as the baseline does for its one face);

and printed as ms per frame and as ratios to the baseline measured here (absolute times depend on the
machine and its load; the ratios are what to compare). The correctness of what is timed is checked
too: the number of shots and of people found against the clip's truth.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

SIZES = {"480": (854, 480), "720": (1280, 720), "1080": (1920, 1080)}


def make_clip(path: Path, size: tuple[int, int], frames: int):
    """Two people side by side for the first half, one of them alone (closer) after a hard cut."""
    from videdit.synthetic import FacePlacement, ShotSpec, make_scene_clip

    width, height = size
    face = 0.22 * height  # about 240 px at 1080p
    first = frames // 2
    return make_scene_clip(path, [
        ShotSpec(first, (FacePlacement("astronaut", face, (0.3 * width, 0.45 * height), drift_px=(2.0, 0.5)),
                         FacePlacement("grace_hopper", face, (0.7 * width, 0.5 * height), drift_px=(-1.5, 0.0)))),
        ShotSpec(frames - first, (FacePlacement("grace_hopper", 1.3 * face, (0.5 * width, 0.5 * height),
                                                drift_px=(1.0, 1.0)),), background=(110, 80, 60)),
    ], size=size, crf=18)


def baseline_pass(path: Path, backend, full_search_every: int = 25) -> int:
    """Today's single-face landmarks as the align stage finds them; returns the frames with a face."""
    from videdit.face.landmarks import FaceTracker, roll_deg
    from videdit.io.reader import VideoReader

    tracker = FaceTracker()
    roll = 0.0
    found = 0
    for frame in VideoReader(path):
        full = tracker.missed > 0 or frame.index % full_search_every == 0
        faces = backend.find_faces(frame.image, near=None if full else tracker.last_box, roll_deg=roll)
        chosen = tracker.choose(faces)
        if chosen is not None:
            roll = roll_deg(chosen.landmarks)
            found += 1
    return found


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return time.perf_counter() - start, result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="1080")
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--full-search-every", type=int, default=5, help="k of the tracks/k row")
    parser.add_argument("--landmarks", default="dlib", help="landmark backend (dlib, face-alignment, auto)")
    args = parser.parse_args(argv)

    from videdit.face.identity import FaceEmbedder
    from videdit.face.landmarks import make_backend
    from videdit.face.shots import detect_shots
    from videdit.face.tracks import TrackSettings, track_faces
    from videdit.io.reader import VideoReader

    class TimedEmbedder(FaceEmbedder):
        """dlib's embedding, with the time spent in it added up (its share of the tracking pass)."""

        seconds = 0.0

        def embed(self, *args_):
            start = time.perf_counter()
            try:
                return super().embed(*args_)
            finally:
                self.seconds += time.perf_counter() - start

    backend = make_backend(args.landmarks)
    embedder = TimedEmbedder()
    with tempfile.TemporaryDirectory() as folder:
        clip = make_clip(Path(folder) / "clip.mp4", SIZES[args.size], args.frames)
        n = clip.n_frames
        decode_s, _ = timed(lambda: sum(1 for _ in VideoReader(clip.path)))
        baseline_s, baseline_found = timed(baseline_pass, clip.path, backend)
        shots_s, shots = timed(detect_shots, clip.path)
        tracks_s, tracks = timed(track_faces, clip.path, shots, backend, TrackSettings(), embedder)
        embed_s = embedder.seconds
        sparse = TrackSettings(full_search_every=args.full_search_every)
        sparse_s, sparse_tracks = timed(track_faces, clip.path, shots, backend, sparse, embedder)

    truth_people = 2
    print(f"faces benchmark: {args.size}p {SIZES[args.size][0]}x{SIZES[args.size][1]}, {n} frames, "
          f"landmarks {backend.name}")
    print(f"  found: {len(shots)} shots (truth {len(clip.shots)}), {len(tracks.people())} people "
          f"(truth {truth_people}), {len(tracks.tracks)} tracks; baseline followed a face in {baseline_found}/{n} frames")
    rows = [("decode", decode_s), ("baseline (single face)", baseline_s), ("shots", shots_s),
            ("tracks (all faces)", tracks_s), ("  of which embeddings", embed_s),
            ("shots + tracks", shots_s + tracks_s),
            (f"tracks/{args.full_search_every}", sparse_s), (f"shots + tracks/{args.full_search_every}", shots_s + sparse_s)]
    print(f"  {'pass':26s} {'ms/frame':>9s} {'x baseline':>11s}")
    for name, seconds in rows:
        print(f"  {name:26s} {1000 * seconds / n:9.1f} {seconds / baseline_s:11.2f}")
    same = [(t.start, t.end, t.person) for t in tracks.tracks] == [(t.start, t.end, t.person) for t in sparse_tracks.tracks]
    print(f"  tracks/{args.full_search_every} found the same tracks and people: {same}")
    ok = len(shots) == len(clip.shots) and len(tracks.people()) == truth_people
    if not ok:
        print("  MISMATCH: the shots or people found differ from the clip's truth")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
