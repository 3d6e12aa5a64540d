"""Per-image reconstruction metrics: L2, PSNR, LPIPS and MS-SSIM.

Conventions follow the published evaluation scripts of ReStyle / stylegan3-editing: images are
resized to 256x256 (bilinear, PIL) and scaled to [-1, 1]; L2 is the mean squared error on that
scale, LPIPS uses the AlexNet backbone. The same numbers are also computed at the crops' full size.
Images come in as uint8 HWC RGB numpy arrays (the on-disk convention).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

# MS-SSIM's five published scale weights (Wang et al. 2003), as used by pytorch-msssim.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
MS_SSIM_WINDOW = 11
# PSNR of identical images is infinite; cap it so that JSON stays finite and means stay meaningful.
PSNR_CAP_DB = 100.0


def resize_square(image: np.ndarray, size: int | None) -> np.ndarray:
    """Bilinear resize to size x size (None or the same size returns the image untouched)."""
    if size is None or (image.shape[0] == size and image.shape[1] == size):
        return image
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def to_signed_tensor(images: np.ndarray | list[np.ndarray]):
    """uint8 HWC (or a list/stack of them) -> float32 NCHW in [-1, 1]."""
    import torch

    batch = np.stack(images) if isinstance(images, list) else np.asarray(images)
    if batch.ndim == 3:
        batch = batch[None]
    tensor = torch.from_numpy(np.array(batch, dtype=np.float32)).permute(0, 3, 1, 2)
    return tensor / 127.5 - 1.0


def l2(reference: np.ndarray, output: np.ndarray) -> float:
    """Mean squared error on the [-1, 1] scale (the published "L2")."""
    diff = (reference.astype(np.float64) - output.astype(np.float64)) / 127.5
    return float(np.mean(diff * diff))


def psnr(reference: np.ndarray, output: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit images, capped at PSNR_CAP_DB."""
    mse = float(np.mean((reference.astype(np.float64) - output.astype(np.float64)) ** 2))
    if mse <= 0.0:
        return PSNR_CAP_DB
    return min(PSNR_CAP_DB, 10.0 * math.log10(255.0**2 / mse))


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales fit: the coarsest scale must still be larger than the window."""
    side = min(height, width)
    levels = len(MS_SSIM_WEIGHTS)
    while levels > 1 and side <= (MS_SSIM_WINDOW - 1) * 2 ** (levels - 1):
        levels -= 1
    return levels


def _gaussian_window(size: int = MS_SSIM_WINDOW, sigma: float = 1.5) -> np.ndarray:
    offsets = np.arange(size, dtype=np.float64) - size // 2
    window = np.exp(-(offsets**2) / (2 * sigma**2))
    return window / window.sum()


def _ssim_terms(x: np.ndarray, y: np.ndarray, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel SSIM and contrast-structure means of float32 HWC images in [0, 1].

    Gaussian statistics over 'valid' windows only (no padding), as pytorch-msssim computes them.
    """
    import cv2

    c1, c2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2
    margin = len(window) // 2

    def blur(image: np.ndarray) -> np.ndarray:
        filtered = cv2.sepFilter2D(image, cv2.CV_32F, window, window, borderType=cv2.BORDER_REFLECT)
        filtered = filtered.reshape(image.shape)  # cv2 drops a trailing axis of size 1
        return filtered[margin:-margin, margin:-margin]

    mu_x, mu_y = blur(x), blur(y)
    var_x = blur(x * x) - mu_x**2
    var_y = blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    cs_map = (2 * cov + c2) / (var_x + var_y + c2)
    ssim_map = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs_map
    return ssim_map.mean(axis=(0, 1), dtype=np.float64), cs_map.mean(axis=(0, 1), dtype=np.float64)


def _halve(image: np.ndarray) -> np.ndarray:
    """2x2 average pooling; odd sides get a zero border first (avg_pool2d with padding, as the reference)."""
    height, width = image.shape[:2]
    pad_h, pad_w = height % 2, width % 2
    if pad_h or pad_w:
        image = np.pad(image, ((pad_h, pad_h), (pad_w, pad_w), (0, 0)))
        height, width = image.shape[:2]
    height, width = height // 2 * 2, width // 2 * 2
    image = image[:height, :width]
    return image.reshape(height // 2, 2, width // 2, 2, -1).mean(axis=(1, 3))


def ms_ssim(reference: np.ndarray, output: np.ndarray) -> float:
    """Multi-scale SSIM in [0, 1] (1 = identical), averaged over RGB channels.

    The definition of Wang et al. (2003) with the conventions of pytorch-msssim (11-tap Gaussian,
    sigma 1.5, valid windows, the five published scale weights); the tests check agreement with it.
    Computed with OpenCV's separable filter: torch's grouped 1-D convolutions made pytorch-msssim
    take seconds per 256 px image on CPU. Images of 161 px or less cannot hold five scales: the
    coarsest scales are dropped and the remaining weights renormalised (one scale is plain SSIM).
    """
    if reference.shape != output.shape:
        raise ValueError(f"shapes differ: {reference.shape} vs {output.shape}")
    window = _gaussian_window(min(MS_SSIM_WINDOW, _odd_at_most(min(reference.shape[:2])))).astype(np.float32)
    levels = ms_ssim_scales(*reference.shape[:2])
    weights = np.array(MS_SSIM_WEIGHTS[:levels]) / sum(MS_SSIM_WEIGHTS[:levels])
    # float32 halves the time; the statistics stay within 1e-5 of a float64 computation (tested).
    x = reference.astype(np.float32).reshape(*reference.shape[:2], -1) / np.float32(255.0)
    y = output.astype(np.float32).reshape(*output.shape[:2], -1) / np.float32(255.0)
    factors = []
    for level in range(levels):
        ssim, cs = _ssim_terms(x, y, window)
        if level < levels - 1:
            factors.append(np.maximum(cs, 0.0))
            x, y = _halve(x), _halve(y)
        else:
            factors.append(np.maximum(ssim, 0.0))
    per_channel = np.prod(np.stack(factors) ** weights[:, None], axis=0)
    return float(per_channel.mean())


def _odd_at_most(n: int) -> int:
    return n if n % 2 == 1 else n - 1


@dataclass
class LpipsStatus:
    model: object | None  # an lpips.LPIPS module, or None when LPIPS is skipped
    reason: str  # why it is skipped, or what was loaded


def load_lpips(weights_dir: Path | None = None, random_backbone: bool = False, device: str = "cpu") -> LpipsStatus:
    """LPIPS (AlexNet) when its backbone weights are on this machine; otherwise a reason to skip.

    The weights are located and loaded by `videdit.losses` (torch.hub's checkpoint folder or the
    weights folder; never downloaded). `random_backbone` exercises the code path without weights
    (tests only: the numbers are meaningless).
    """
    from videdit import losses, weights

    if random_backbone:
        return LpipsStatus(losses.build_lpips("alex", random_backbone=True).to(device),
                           "random AlexNet backbone (testing only, values meaningless)")
    path = losses.find_lpips_backbone("alex", weights_dir)
    if path is None:
        entry = weights.get(losses.LPIPS_BACKBONES["alex"])
        where = weights.expected_path(entry, weights.resolve_weights_dir(weights_dir)).parent
        return LpipsStatus(None, f"{entry.filename} not found in {where} (`{weights.fetch_command(entry)}`); LPIPS skipped")
    return LpipsStatus(losses.build_lpips("alex", weights_dir=weights_dir).to(device), f"AlexNet from {path}")


class ImageMetrics:
    """Computes the reconstruction metrics of one image pair at one size."""

    def __init__(self, lpips_model=None, device: str = "cpu"):
        self.lpips_model = lpips_model
        self.device = device

    def lpips(self, reference: np.ndarray, output: np.ndarray) -> float | None:
        if self.lpips_model is None:
            return None
        import torch

        with torch.no_grad():
            x = to_signed_tensor(reference).to(self.device)
            y = to_signed_tensor(output).to(self.device)
            return float(self.lpips_model(x, y).mean())

    def compare(self, reference: np.ndarray, output: np.ndarray, size: int | None = None) -> dict[str, float | None]:
        """All metrics of one pair, after resizing both to `size` (None: as they are)."""
        if reference.shape != output.shape:
            from videdit.errors import InputError

            raise InputError(f"image sizes differ: {reference.shape[1]}x{reference.shape[0]} vs {output.shape[1]}x{output.shape[0]}")
        reference = resize_square(reference, size)
        output = resize_square(output, size)
        return {
            "l2": l2(reference, output),
            "psnr": psnr(reference, output),
            "ms_ssim": ms_ssim(reference, output),
            "lpips": self.lpips(reference, output),
        }
