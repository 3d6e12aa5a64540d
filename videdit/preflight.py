"""The checks that need more than the settings, run after the source is probed and before the first stage.

videdit.settings checks each value alone when the pipeline is made; what is left needs the source video (which
encoder `--codec auto` chooses, so which pixel formats it takes) or the generator (its StyleSpace layer table
and widths for `s:KEY:CHANNEL` edits, its resolution for `render.expand`). The generator is read from its
checkpoint's header (constructor kwargs, or the layer names of a state dict), never built. Each problem is one
VideditError line naming the setting.
"""
from __future__ import annotations

from typing import Any

from videdit.errors import VideditError
from videdit.settings import ResolvedSettings, SettingsError


def check_encoder(resolved: ResolvedSettings, info: Any) -> None:
    """composite.codec / crf / preset / pix_fmt against the encoder this source chooses."""
    from pathlib import Path

    from videdit.io.encoding import EncoderSettings, resolve_encoder
    from videdit.layout import RECONSTRUCTION_KEY, composite_video_name, output_suffix

    composite = resolved.sections["composite"]
    settings = EncoderSettings(codec=composite.codec, crf=composite.crf, preset=composite.preset,
                               pix_fmt=composite.pix_fmt)
    try:
        resolve_encoder(settings, info.size, info,
                        Path(composite_video_name(RECONSTRUCTION_KEY, output_suffix(composite.codec))).suffix)
    except VideditError as err:
        raise SettingsError(f"[composite] {err}") from None


def check_generator_fit(resolved: ResolvedSettings, generator_kwargs) -> None:
    """`s:KEY:CHANNEL` edits against the generator's layer table and widths, and render.expand against its
    resolution less render.feather. generator_kwargs: a function giving the generator's constructor kwargs
    (called only when an edit or an expansion needs them: reading a large checkpoint's header is not free)."""
    channel_specs = [spec for spec in resolved.sections["edit"].specs if spec.kind == "channel"]
    render = resolved.sections["render"]
    if not channel_specs and not any(render.expand):
        return
    from videdit.checkpoints.plans import generator_style_widths
    from videdit.stylespace import parse_channel

    kwargs = generator_kwargs()
    if channel_specs:
        widths = generator_style_widths(kwargs)
        for spec in channel_specs:
            try:
                parse_channel(spec.target, widths)
            except VideditError as err:
                raise SettingsError(f"edit s:{spec.target}: {err}") from None
    limit = int(kwargs["img_resolution"]) - int(render.feather)
    if max(render.expand) > limit:
        raise SettingsError(f"setting render.expand = {list(render.expand)}: each side must be at most {limit} px "
                            f"(the generator's resolution {kwargs['img_resolution']} less render.feather "
                            f"{render.feather})")
