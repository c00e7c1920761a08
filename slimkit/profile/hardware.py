"""What this machine's CPU kernels like: the channel granularity of their vector blocks.

onnxruntime (MLAS NCHWc convolutions) and oneDNN (torch) lay channels out in blocks as wide as one SIMD register
of fp32: 16 on AVX-512, 8 on AVX/AVX2. A convolution with 8 of 16 channels still runs a whole 16-wide block, so
pruning below a block boundary cuts MACs without cutting time; channel counts in multiples of the block width turn
fewer MACs into lower latency.
"""

from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["channel_multiple", "cpu_capability", "has_vnni"]

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
