"""PNG plots of an evaluation: metrics over time, transforms raw vs smoothed, latent trajectory."""
from __future__ import annotations

from pathlib import Path

import numpy as np

# (per-frame series name, axis label) in plotting order; absent series are left out.
FRAME_PLOTS = (
    ("l2@256", "L2 @256 (lower is better)"),
    ("lpips@256", "LPIPS @256 (lower is better)"),
    ("ms_ssim@256", "MS-SSIM @256 (higher is better)"),
    ("identity_similarity", "identity similarity to input"),
    ("landmark_error", "landmark error, % of eye distance"),
    ("warp_error", "warping error (8-bit levels)"),
)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)  # files only; never a window
    import matplotlib.pyplot as plt

    return plt


def plot_metrics_over_time(per_frame: dict[str, dict[str, list]], input_warp_error: list, path: Path) -> Path | None:
    """One panel per metric, one line per output key; the input's own warping error dashed."""
    plt = _pyplot()
    panels = [(name, label) for name, label in FRAME_PLOTS if any(name in series for series in per_frame.values())]
    if not panels:
        return None
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 2.2 * len(panels)), sharex=True, squeeze=False)
    for ax, (name, label) in zip(axes[:, 0], panels):
        for key, series in per_frame.items():
            if name in series:
                values = np.asarray(series[name], dtype=float)
                frames = np.arange(len(values)) + (1 if name == "warp_error" else 0)
                ax.plot(frames, values, label=key, linewidth=1.2)
        if name == "warp_error" and input_warp_error:
            values = np.asarray(input_warp_error, dtype=float)
            ax.plot(np.arange(len(values)) + 1, values, "k--", label="input (floor)", linewidth=1.0)
        if not any(np.isfinite(np.asarray(series.get(name, []), dtype=float)).any() for series in per_frame.values()):
            ax.text(0.5, 0.5, "no values: no face found in the outputs", transform=ax.transAxes, ha="center", va="center")
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1, 0].set_xlabel("frame")
    fig.suptitle("Metrics per frame")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_transforms(raw: dict[str, np.ndarray], smoothed: dict[str, np.ndarray] | None, path: Path) -> Path:
    """Rotation and translation of the face per frame: as aligned (raw) and as rendered (smoothed)."""
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(9, 6.6), sharex=True)
    panels = (
        ("rotation (degrees)", lambda t: t["rotation_deg"]),
        ("translation x (crop widths)", lambda t: t["translation"][:, 0]),
        ("translation y (crop widths)", lambda t: t["translation"][:, 1]),
    )
    for ax, (label, pick) in zip(axes, panels):
        ax.plot(pick(raw), label="raw (align)", linewidth=1.0, alpha=0.8)
        if smoothed is not None:
            ax.plot(pick(smoothed), label="smoothed", linewidth=1.6)
        ax.set_ylabel(label, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper right")
    axes[-1].set_xlabel("frame")
    fig.suptitle("Transform parameters: raw vs smoothed")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_latent_trajectory(projections: dict[str, np.ndarray], explained: np.ndarray, path: Path) -> Path:
    """First principal components of the W+ latents over time, and the PC1/PC2 path."""
    plt = _pyplot()
    components = next(iter(projections.values())).shape[1]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    styles = ("-", "--", ":")
    for (name, proj), style in zip(projections.items(), styles * 3):
        for c in range(components):
            axes[0].plot(proj[:, c], style, color=f"C{c}", label=f"{name} PC{c + 1} ({100 * explained[c]:.0f}%)", linewidth=1.2)
        if components >= 2:
            axes[1].plot(proj[:, 0], proj[:, 1], style, marker=".", markersize=3, label=name, linewidth=1.0)
            axes[1].annotate("start", proj[0, :2], fontsize=7)
    axes[0].set_xlabel("frame")
    axes[0].set_ylabel("projection")
    axes[0].legend(fontsize=7)
    axes[0].grid(alpha=0.3)
    axes[0].set_title("principal components over time", fontsize=9)
    for ax in axes:  # latents that barely move give tiny numbers: keep the tick labels short
        ax.ticklabel_format(style="sci", scilimits=(-3, 3), useMathText=True)
    axes[1].set_xlabel("PC1")
    axes[1].set_ylabel("PC2")
    axes[1].legend(fontsize=7)
    axes[1].grid(alpha=0.3)
    axes[1].set_title("trajectory in the PC1/PC2 plane", fontsize=9)
    fig.suptitle("Latent trajectory (W+), first principal components")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
