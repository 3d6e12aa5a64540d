"""The encoder's 256 px input cut several ways, against the published path (stylegan3-editing).

    python -m benchmarks encoder_input [--photos astronaut,grace_hopper] [--scales 1,2,4] [--n-iters 3]
                                       [--backbone ir_se50] [--repeats 5] [--threads 2]

The published path: the aligned crop cut at 1024 (a bilinear warp of the quad: our 1024 crop equals PIL's
QUAD warp that align_face runs, for a quad inside the frame, tests/test_align.py), then the encoder's own
transform `Resize((256, 256))`, `ToTensor`, `Normalize(0.5, 0.5)` from torchvision on the PIL image. Against
it, for each shipped photo (scikit-image's astronaut, matplotlib's Grace Hopper; the face found by dlib):

- `direct`: the crop cut at 256 in one warp after an exact-factor shrink (`align.encoder_input = "direct"`);
- `published`: videdit's reproduction of the published path (`align.encoder_input = "published"`);
- `1024 + torch resize`: videdit before the direct cut, the 1024 crop resized by torch's antialiased bilinear
  interpolation in float: the size of a PIL-vs-torch resize difference alone, for scale;
- `published + its JPEGs`: the published path with the two lossy files the published video code writes on the
  way (the frame, then the 1024 crop, each saved as .jpg by PIL at its default quality 75 and read back): the
  published code's own input noise, for scale.

Printed per photo: the input's mean and max difference in 8-bit levels, its sharpness (mean absolute
difference of neighbouring pixels, in levels, against the published input's), the ReStyle codes' relative RMS
difference (RMS of the code difference / RMS of the published codes, after --n-iters iterations; a ReStyle-e4e
encoder with deterministic RANDOM weights and a random 16-channel generator at 256 px: no trained weights
ship, so this measures how far the input difference carries through the networks, not the reconstruction),
and the CPU time of cutting the crop (best of --repeats) as a ratio to cutting a 1024 px crop of the same
quad (what every frame costs anyway: the unaligned crop at the generator's size). --scales enlarges the
photo (Lanczos) so that the face spans about 2x / 4x more pixels, as in 1080p / 4K video (smooth, so with less
fine detail than a real capture of that size).
"""
from __future__ import annotations

if __package__ in (None, ""):  # run as `python benchmarks/NAME.py`: import from the repository root instead
    import sys
    from pathlib import Path

    sys.path[0] = str(Path(__file__).resolve().parents[1])

import argparse
import time

import numpy as np

from benchmarks.common import best_time, markdown_table, ratio, set_threads


def published_input(crop_1024: np.ndarray):
    """stylegan3-editing's IMAGE_TRANSFORMS on the 1024 crop as a PIL image: [3, 256, 256] in [-1, 1]."""
    from PIL import Image
    from torchvision import transforms

    to_encoder = transforms.Compose([transforms.Resize((256, 256)), transforms.ToTensor(),
                                     transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])])
    return to_encoder(Image.fromarray(crop_1024))


def as_input(crop: np.ndarray):
    """A uint8 HWC crop as the encode stage reads it: [3, H, W] in [-1, 1]."""
    import torch

    return torch.from_numpy(np.array(crop)).permute(2, 0, 1).float() / 127.5 - 1.0


def jpeg_round_trip(image: np.ndarray) -> np.ndarray:
    """image saved as JPEG by PIL with its defaults (quality 75, 4:2:0), as the published video code saves
    its frames and crops (`.save(path)` on a .jpg name), and decoded again."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG")
    return np.asarray(Image.open(buffer).convert("RGB"))


def sharpness(image) -> float:
    """Mean absolute difference of neighbouring pixels, in 8-bit levels."""
    levels = image * 127.5
    return float(((levels[:, 1:] - levels[:, :-1]).abs().mean() + (levels[:, :, 1:] - levels[:, :, :-1]).abs().mean()) / 2)


def photo_at_scale(name: str, scale: int) -> np.ndarray:
    from PIL import Image

    from videdit.synthetic import load_photo

    photo = load_photo(name)
    if scale == 1:
        return photo
    return np.asarray(Image.fromarray(photo).resize((photo.shape[1] * scale, photo.shape[0] * scale), Image.LANCZOS))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks encoder_input", description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", default="astronaut,grace_hopper")
    parser.add_argument("--scales", default="1,2,4", help="comma-separated photo enlargements")
    parser.add_argument("--n-iters", type=int, default=3, help="ReStyle iterations")
    parser.add_argument("--backbone", choices=("ir_se50", "resnet34"), default="ir_se50")
    parser.add_argument("--repeats", type=int, default=5, help="timed crops per way (the fastest counts)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = parser.parse_args(argv)

    import torch
    import torch.nn.functional as F

    from videdit.face.alignment import PUBLISHED_ALIGNED_SIZE, encoder_crop, ffhq_quad, quad_side, quad_to_crop
    from videdit.face.landmarks import DlibBackend
    from videdit.networks.encoders import average_image, build_encoder_on_meta, reference_state_dict, restyle_invert
    from videdit.networks.stylegan3 import Generator, tiny_generator_kwargs

    set_threads(args.threads)
    encoder = build_encoder_on_meta("e4e", args.backbone)
    encoder.load_state_dict(reference_state_dict(encoder), strict=True, assign=True)
    encoder.eval()
    torch.manual_seed(0)
    generator = Generator(**tiny_generator_kwargs(256)).eval()
    latent_avg = generator.mapping.w_avg.clone()
    avg_image = average_image(generator, latent_avg)
    backend = DlibBackend()
    print(f"encoder input benchmark: ReStyle-e4e/{args.backbone} (random weights), random tiny generator at 256, "
          f"{args.n_iters} iterations, torch {torch.__version__}, {args.threads} threads; differences against the "
          "published path (1024 crop, torchvision Resize on PIL)")

    def codes(image) -> torch.Tensor:
        return restyle_invert(encoder, generator, image[None], latent_avg, n_iters=args.n_iters, avg_image=avg_image,
                              render_final=False).codes[0].double()

    rows = []
    for name in [p for p in args.photos.split(",") if p]:
        for scale in [int(s) for s in args.scales.split(",") if s]:
            frame = photo_at_scale(name, scale)
            face = max(backend.find_faces(frame), key=lambda f: f.size)
            quad = ffhq_quad(face.landmarks)
            published = published_input(quad_to_crop(frame, quad, PUBLISHED_ALIGNED_SIZE))
            big = as_input(quad_to_crop(frame, quad, PUBLISHED_ALIGNED_SIZE))[None]
            ways = {
                "direct": as_input(encoder_crop(frame, quad, 256, "direct")),
                "published": as_input(encoder_crop(frame, quad, 256, "published")),
                "1024 + torch resize": F.interpolate(big, size=(256, 256), mode="bilinear", align_corners=False,
                                                     antialias=True)[0],
                "published + its JPEGs": published_input(jpeg_round_trip(quad_to_crop(
                    jpeg_round_trip(frame), quad, PUBLISHED_ALIGNED_SIZE))),
            }
            cut_s = {way: best_time(lambda way=way: encoder_crop(frame, quad, 256, way), args.repeats, warmup=True,
                                    clock=time.process_time) for way in ("direct", "published")}
            # the crop every frame gets anyway (the unaligned one, at the generator's 1024): the scale of the cost
            unaligned_s = best_time(lambda: quad_to_crop(frame, quad, 1024), args.repeats, warmup=True,
                                    clock=time.process_time)
            reference = codes(published)
            for way, image in ways.items():
                levels = (image - published).abs() * 127.5
                code_rms = float((codes(image) - reference).pow(2).mean().sqrt() / reference.pow(2).mean().sqrt())
                rows.append([f"{name} x{scale}", f"{quad_side(quad):.0f}", way, f"{levels.mean():.3f}",
                             f"{levels.max():.1f}", f"{ratio(sharpness(image), sharpness(published)):.3f}",
                             f"{100 * code_rms:.3f} %",
                             f"{ratio(cut_s[way], unaligned_s):.2f}" if way in cut_s else "-"])
    print(markdown_table(["photo", "face quad px", "way", "mean abs diff (levels)", "max abs diff (levels)",
                          "sharpness / published's", "codes rel. RMS diff", "crop CPU time / a 1024 crop's"], rows))
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main(sys.argv[1:]))
