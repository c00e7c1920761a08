"""What this machine's CPU kernels like: the channel granularity of their vector blocks.

onnxruntime (MLAS NCHWc convolutions) and oneDNN (torch) lay channels out in blocks as wide as one SIMD register
of fp32: 16 on AVX-512, 8 on AVX/AVX2. A convolution with 8 of 16 channels still runs a whole 16-wide block, so
pruning below a block boundary cuts MACs without cutting time; channel counts in multiples of the block width turn
fewer MACs into lower latency.

INT8 has rules of its own: onnxruntime's fast x86 INT8 convolution (`int8_conv_misses`) takes only some channel
counts; the others run a generic path about as slow as fp32.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["channel_multiple", "cpu_capability", "has_vnni", "int8_conv_misses", "INT8_CONV_MIN_OUT",
           "INT8_CONV_OUT_MULTIPLE", "INT8_CONV_IN_MULTIPLE", "INT8_DEPTHWISE_MULTIPLE"]

_BLOCK = {"AVX512": 16, "AVX2": 8, "AVX": 8}
_DEFAULT = 8  # other CPUs (ARM NEON/SVE, plain x86): 8 is what mobile kernels commonly prefer


def cpu_capability() -> str:
    """torch's view of the CPU's vector extension ('AVX512', 'AVX2', 'DEFAULT', 'SVE256', ...)."""
    return str(torch.backends.cpu.get_cpu_capability())


def channel_multiple(capability: str | None = None) -> int:
    """Channel count granularity for this machine (or for `capability`, a `cpu_capability()` string)."""
    cap = (capability if capability is not None else cpu_capability()).upper()
    return _BLOCK.get(cap, _DEFAULT)


def has_vnni(cpuinfo: str | None = None) -> bool:
    """Whether the CPU has an 8-bit dot-product instruction (x86 AVX-512 VNNI / AVX-VNNI / AMX, ARM dotprod):
    INT8 kernels then accumulate u8 x s8 products without int16 saturation. `cpuinfo`: /proc/cpuinfo text."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
    flags = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            flags |= set(value.split())
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp"})


# onnxruntime's (MLAS) symmetric INT8 convolution kernels on x86 (AVX2, AVX-VNNI, AVX-512): requantization fused
# into an indirect convolution; the other convolutions take the generic path (im2col, an int32 GEMM result, then a
# separate requantization pass), which at small sizes is about as slow as fp32. Rules of `MlasConvSymPackWSize`;
# the one statement of them (`slimkit.quantize.graph.int8_kernel_misses` reads graphs with it, pruning with
# `kernels="int8"` keeps channel counts that pass it).
INT8_CONV_MIN_OUT = 16  # output channels at least (one packed block)
INT8_CONV_OUT_MULTIPLE = 8
INT8_CONV_IN_MULTIPLE = 4
INT8_DEPTHWISE_MULTIPLE = 16  # channels of a depthwise convolution


def int8_conv_misses(c_in: int, c_out: int, groups: int = 1) -> list[str]:
    """Why onnxruntime's fast x86 INT8 convolution does not take a convolution of `c_in` -> `c_out` channels in
    `groups` groups (with symmetric int8 weights); empty when it does."""
    if groups == 1:
        return [r for r in (
            f"{c_out} output channels (fewer than {INT8_CONV_MIN_OUT})" if c_out < INT8_CONV_MIN_OUT else "",
            f"{c_out} output channels (not a multiple of {INT8_CONV_OUT_MULTIPLE})"
            if c_out % INT8_CONV_OUT_MULTIPLE else "",
            f"{c_in} input channels (not a multiple of {INT8_CONV_IN_MULTIPLE})"
            if c_in % INT8_CONV_IN_MULTIPLE else "",
        ) if r]
    if groups == c_in == c_out:
        return [f"depthwise over {c_out} channels (not a multiple of {INT8_DEPTHWISE_MULTIPLE})"
                ] if c_out % INT8_DEPTHWISE_MULTIPLE else []
    return [f"grouped convolution ({groups} groups)"]
