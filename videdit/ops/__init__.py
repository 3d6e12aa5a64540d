"""Neural-network ops of StyleGAN3 in plain PyTorch (CPU friendly, differentiable).

Every op takes `impl="fast"` (default, polyphase / strided / separable) or `impl="ref"` (the literal
version in `videdit.ops.reference`); both give the same result up to float32 round-off.
"""
from videdit.ops.bias_act import bias_act
from videdit.ops.filtered_lrelu import filtered_lrelu
from videdit.ops.modconv import conv2d_resample, modulated_conv2d
from videdit.ops.upfirdn2d import upfirdn2d
from videdit.ops.filters import design_lowpass_filter, setup_filter

__all__ = ["bias_act", "filtered_lrelu", "conv2d_resample", "modulated_conv2d", "upfirdn2d",
           "design_lowpass_filter", "setup_filter"]
