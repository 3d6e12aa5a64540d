"""Reconstruction losses for tuning: L2 and LPIPS, with an offline check for LPIPS's backbone.

The `lpips` package builds its backbone from torchvision, which would try to download the ImageNet
weights (e.g. `alexnet-owt-7be5be79.pth`) when they are not in torch.hub's cache. Here the backbone is
always built randomly initialised and then given the weights from a file we located ourselves
(torch.hub's checkpoint folder or videdit's weights folder), so no download is ever attempted. The
small linear heads of LPIPS ship inside the `lpips` package.
"""
from __future__ import annotations

import logging
import warnings
from os import PathLike
from pathlib import Path

import torch
from torch import nn

from videdit.errors import CheckpointError, InputError, MissingWeightsError

log = logging.getLogger("videdit")

# LPIPS backbone name -> videdit weights-registry entry of its torchvision ImageNet weights.
LPIPS_BACKBONES = {"alex": "lpips_alexnet", "vgg": "lpips_vgg"}


def find_lpips_backbone(net: str = "alex", weights_dir: str | PathLike | None = None) -> Path | None:
    """Path of the torchvision weights LPIPS(net) needs, or None when they are not on this machine."""
    from videdit import weights

    if net not in LPIPS_BACKBONES:
        raise InputError(f"unknown LPIPS network {net!r}; use one of {', '.join(LPIPS_BACKBONES)}")
    entry = weights.get(LPIPS_BACKBONES[net])
    return weights.find(entry, weights.resolve_weights_dir(weights_dir))


def missing_backbone_message(net: str = "alex", weights_dir: str | PathLike | None = None) -> str:
    from videdit import weights

    entry = weights.get(LPIPS_BACKBONES[net])
    where = weights.expected_path(entry, weights.resolve_weights_dir(weights_dir)).parent
    return (f"LPIPS ({net}) needs {entry.filename} in {where}: get it with `{weights.fetch_command(entry)}` "
            f"(or download {entry.url} there), or allow L2-only tuning (tune.allow_l2_only = true)")


def _load_backbone(model: nn.Module, net: str, path: Path) -> None:
    """Copy torchvision's `features.<i>.*` weights from `path` into LPIPS's backbone slices.

    lpips names each layer of its slices by its index in torchvision's `features`, so the keys map 1:1.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # a truncated or foreign file: say which one
        raise CheckpointError(f"{path} is not a readable torchvision checkpoint ({type(err).__name__}); fetch it again") from None
    for i in range(1, model.net.N_slices + 1):
        for index, layer in getattr(model.net, f"slice{i}").named_children():
            wanted = {name: f"features.{index}.{name}" for name, _ in layer.named_parameters()}
            missing = [key for key in wanted.values() if key not in state]
            if missing:
                raise CheckpointError(f"{path} is not torchvision's {net} checkpoint: no {missing[0]}")
            try:
                layer.load_state_dict({name: state[key] for name, key in wanted.items()})
            except RuntimeError:
                raise CheckpointError(f"{path}: {wanted['weight']} has the wrong shape for {net}") from None


def build_lpips(net: str = "alex", *, weights_dir: str | PathLike | None = None, random_backbone: bool = False) -> nn.Module:
    """An LPIPS module in eval mode with frozen parameters; inputs NCHW in [-1, 1].

    random_backbone: keep the backbone randomly initialised (tests, demos: not a perceptual metric).
    Raises MissingWeightsError when the backbone weights are absent and random_backbone is False.
    """
    path = None
    if not random_backbone:
        path = find_lpips_backbone(net, weights_dir)
        if path is None:
            raise MissingWeightsError(missing_backbone_message(net, weights_dir))
    import lpips

    # A fixed seed for the random initialisation, so a random backbone is the same in every process
    # (a resumed tuning must see the same loss); fork_rng leaves the caller's RNG as it was.
    with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
        warnings.simplefilter("ignore", UserWarning)  # lpips uses torchvision's deprecated `pretrained=`
        torch.manual_seed(0)
        model = lpips.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    if path is not None:
        _load_backbone(model, net, path)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class ReconstructionLoss(nn.Module):
    """l2_weight * mean squared error + lpips_weight * mean LPIPS; images NCHW in [-1, 1].

    `lpips_model` None means L2 only. `forward` returns (total, {"l2": ..., "lpips": ...}) with the
    parts detached for logging.
    """

    def __init__(self, l2_weight: float = 1.0, lpips_weight: float = 1.0, lpips_model: nn.Module | None = None):
        super().__init__()
        self.l2_weight = float(l2_weight)
        self.lpips_weight = float(lpips_weight) if lpips_model is not None else 0.0
        self.lpips = lpips_model

    def forward(self, pred: torch.Tensor, target: torch.Tensor):
        l2 = torch.mean((pred - target) ** 2)
        total = self.l2_weight * l2
        parts = {"l2": l2.detach()}
        if self.lpips is not None and self.lpips_weight != 0:
            perceptual = self.lpips(pred, target).mean()
            total = total + self.lpips_weight * perceptual
            parts["lpips"] = perceptual.detach()
        return total, parts


def make_reconstruction_loss(
    l2_weight: float = 1.0,
    lpips_weight: float = 1.0,
    lpips_net: str = "alex",
    *,
    allow_l2_only: bool = False,
    weights_dir: str | PathLike | None = None,
    random_backbone: bool = False,
) -> ReconstructionLoss:
    """The tuning loss. Without LPIPS weights: MissingWeightsError, or (allow_l2_only) one warning and L2 only."""
    lpips_model = None
    if lpips_weight != 0:
        try:
            lpips_model = build_lpips(lpips_net, weights_dir=weights_dir, random_backbone=random_backbone)
        except MissingWeightsError as err:
            if not allow_l2_only:
                raise
            log.warning("%s. Continuing with L2 only, as allowed.", err)  # said once, here
    return ReconstructionLoss(l2_weight, lpips_weight, lpips_model)
