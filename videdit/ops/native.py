"""Compatibility: every name `videdit.ops.native` held before it was split into one module per job.

New code imports from the homes: `videdit.ops.extensions` (building, caching, loading an extension),
`videdit.ops.kernels` (the native kernels with the public ops' signatures), `videdit.ops.cpu_autoselect`
(the "auto" mode's CPU timing) and `videdit.ops.selfcheck` (the CUDA kernels' verdicts).
"""
from videdit.ops.cpu_autoselect import CpuAutoSelect, cpu_auto_selector
from videdit.ops.extensions import (
    DEFAULT_BUILD_TIMEOUT_S,
    DEFAULT_CUDA_ARCHS,
    LOG_TAIL_LINES,
    SOURCE_DIR,
    BuildError,
    ExtensionSpec,
    build,
    build_dir,
    build_state,
    build_timeout_s,
    cache_root,
    cuda_arch_list,
    import_module,
    load,
)
from videdit.ops.kernels import (
    ACTIVATION_IDS,
    CPU_EXTENSION,
    CUDA_EXTENSION,
    CUDA_OPS,
    FusedPlan,
    bias_act_cuda,
    correlation_taps,
    cpu_module,
    cpu_module_if_built,
    cpu_supports,
    cuda_module,
    cuda_supports,
    filtered_lrelu_cpu,
    filtered_lrelu_cuda,
    flipped,
    plan_filtered_lrelu,
    prepare_fused,
    upfirdn2d_cuda,
)
from videdit.ops.selfcheck import cuda_self_check, device_name, self_check_path

__all__ = ["ACTIVATION_IDS", "CPU_EXTENSION", "CUDA_EXTENSION", "CUDA_OPS", "DEFAULT_BUILD_TIMEOUT_S",
           "DEFAULT_CUDA_ARCHS", "LOG_TAIL_LINES", "SOURCE_DIR", "BuildError", "CpuAutoSelect", "ExtensionSpec",
           "FusedPlan", "bias_act_cuda", "build", "build_dir", "build_state", "build_timeout_s", "cache_root",
           "correlation_taps", "cpu_auto_selector", "cpu_module", "cpu_module_if_built", "cpu_supports",
           "cuda_arch_list", "cuda_module", "cuda_self_check", "cuda_supports", "device_name", "filtered_lrelu_cpu",
           "filtered_lrelu_cuda", "flipped", "import_module", "load", "plan_filtered_lrelu", "prepare_fused",
           "self_check_path", "upfirdn2d_cuda"]
