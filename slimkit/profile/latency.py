"""Measured latency (torch eager or onnxruntime, CPU) over warmed-up repeats, and peak memory where measurable.

Peak memory is the rise of the process's peak resident set size (Linux `VmHWM`, reset through
`/proc/self/clear_refs` before the timed runs) over the resident size before them; None where that is unavailable.
"""

from __future__ import annotations

import copy
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from slimkit.errors import ConfigError, ProfileError
from slimkit.export import export_onnx, onnx_session
from slimkit.profile.counting import make_inputs

__all__ = ["LatencyReport", "measure_latency"]


@dataclass(frozen=True)
class LatencyReport:
    median_ms: float
    p10_ms: float
    p90_ms: float
    mean_ms: float
    repeats: int
    peak_memory_mb: float | None
    backend: str
    batch: int
    threads: int

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def _status_kb(field: str) -> int | None:
    try:
        m = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(m.group(1)) if m else None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _time(fn: Callable[[], Any], warmup: int, repeats: int, min_time_s: float) -> tuple[list[float], float | None]:
    for _ in range(warmup):
        fn()
    base = _status_kb("VmRSS")
    can_peak = _reset_peak() and base is not None
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time_s:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if len(times) >= 20 * repeats:
            break
    peak = _status_kb("VmHWM") if can_peak else None
    mem = max(0.0, (peak - base) / 1024.0) if peak is not None and base is not None else None
    return times, mem


def measure_latency(model: nn.Module, input_size: Any, *, backend: Literal["torch", "onnxruntime"] = "torch",
                    threads: int | None = None, batch: int = 1, warmup: int = 5, repeats: int = 30,
                    min_time_s: float = 0.5) -> LatencyReport:
    """Median / p10 / p90 latency in milliseconds of one forward pass at `batch` on the CPU.

    `input_size` is (C, H, W) (the batch dimension comes from `batch`) or example tensors. The model is copied and
    put in eval mode; torch's thread count is restored afterwards.
    """
    if backend not in ("torch", "onnxruntime"):
        raise ConfigError(f"unknown latency backend {backend!r}: use 'torch' or 'onnxruntime'")
    if batch < 1 or repeats < 1:
        raise ConfigError(f"batch and repeats must be >= 1 (got batch={batch}, repeats={repeats})")
    net = copy.deepcopy(model).eval()
    if isinstance(input_size, (tuple, list)) and all(isinstance(s, int) for s in input_size) and len(input_size) == 3:
        input_size = (batch, *input_size)
    inputs = make_inputs(net, input_size)
    n_threads = int(threads or torch.get_num_threads())
    if backend == "torch":
        old = torch.get_num_threads()
        torch.set_num_threads(n_threads)
        try:
            with torch.inference_mode():
                try:
                    net(*inputs)
                except RuntimeError as e:
                    shapes = [tuple(t.shape) for t in inputs]
                    raise ProfileError(f"{type(model).__name__} failed on input {shapes}: {e}") from None
                times, mem = _time(lambda: net(*inputs), warmup, repeats, min_time_s)
        finally:
            torch.set_num_threads(old)
    else:
        with tempfile.TemporaryDirectory() as d:
            res = export_onnx(net, Path(d) / "model.onnx", inputs, check=False)
            sess = onnx_session(res.path, threads=n_threads)
        feed = {n: t.detach().cpu().numpy() for n, t in zip(res.input_names, inputs, strict=True)}
        times, mem = _time(lambda: sess.run(None, feed), warmup, repeats, min_time_s)
    arr = np.asarray(times)
    return LatencyReport(float(np.median(arr)), float(np.percentile(arr, 10)), float(np.percentile(arr, 90)),
                         float(arr.mean()), len(times), mem, backend, int(inputs[0].shape[0]), n_threads)
