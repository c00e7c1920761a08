"""Measured latency (torch eager or onnxruntime, CPU) over warmed-up repeats, and peak memory where measurable.

Timing stops as soon as the estimate is good enough: when the median's 95% confidence interval (distribution-free,
from order statistics) is within `rel_ci` of it, or after the fixed `repeats` over `min_time_s`, and never later
than `max_time_s` — so a slow model on a busy machine costs seconds, not minutes.

Peak memory is the rise of the process's peak resident set size (Linux `VmHWM`, reset through
`/proc/self/clear_refs` before the timed runs) over the resident size before them; None where that is unavailable.
"""

from __future__ import annotations

import copy
import math
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from slimkit.errors import ConfigError, ProfileError
from slimkit.export import export_onnx, onnx_session
from slimkit.profile.counting import make_inputs

__all__ = ["LatencyReport", "measure_latency", "median_ci_rel", "compare_onnx_latency"]


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
    ci_rel: float | None = None  # half-width of the median's 95% confidence interval, relative to the median
    cpu_median_ms: float | None = None  # CPU time of the work per run (compare_onnx_latency), robust to other jobs

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


def median_ci_rel(times: Sequence[float]) -> float:
    """Half-width of the 95% confidence interval of the median of `times`, relative to the median: the order
    statistics at n/2 -+ 0.98 sqrt(n) (a binomial interval; no assumption about the distribution). inf below 3."""
    n = len(times)
    if n < 3:
        return math.inf
    xs = sorted(times)
    half = 0.98 * math.sqrt(n)
    lo, hi = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
    med = float(np.median(xs))
    return (xs[hi] - xs[lo]) / (2 * med) if med > 0 else math.inf


def _stop(times: list[float], elapsed: float, repeats: int, min_time_s: float, max_time_s: float,
          rel_ci: float) -> bool:
    n = len(times)
    if n >= 20 * repeats or (n >= 3 and elapsed >= max_time_s):
        return True
    if elapsed < min_time_s:
        return False
    return n >= repeats or (n >= 5 and median_ci_rel(times) <= rel_ci)


def _time(fn: Callable[[], Any], warmup: int, repeats: int, min_time_s: float, max_time_s: float,
          rel_ci: float) -> tuple[list[float], float | None]:
    start = time.perf_counter()
    for _ in range(warmup):  # at most a quarter of the time cap
        fn()
        if time.perf_counter() - start > max_time_s / 4:
            break
    base = _status_kb("VmRSS")
    can_peak = _reset_peak() and base is not None
    times: list[float] = []
    start = time.perf_counter()
    while not _stop(times, time.perf_counter() - start, repeats, min_time_s, max_time_s, rel_ci):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    peak = _status_kb("VmHWM") if can_peak else None
    mem = max(0.0, (peak - base) / 1024.0) if peak is not None and base is not None else None
    return times, mem


def measure_latency(model: nn.Module, input_size: Any, *, backend: Literal["torch", "onnxruntime"] = "torch",
                    threads: int | None = None, batch: int = 1, warmup: int = 5, repeats: int = 30,
                    min_time_s: float = 0.5, max_time_s: float = 10.0, rel_ci: float = 0.02) -> LatencyReport:
    """Median / p10 / p90 latency in milliseconds of one forward pass at `batch` on the CPU.

    `input_size` is (C, H, W) (the batch dimension comes from `batch`) or example tensors. The model is copied and
    put in eval mode; torch's thread count is restored afterwards. Timed runs go on for at least `min_time_s` and
    stop once `repeats` were made or the median is stable (its 95% confidence interval within +-`rel_ci`, over at
    least 5 runs), and at `max_time_s` whatever the spread (warm-up: `warmup` runs, at most a quarter of it);
    `ci_rel` in the report says how stable the median was.
    """
    if backend not in ("torch", "onnxruntime"):
        raise ConfigError(f"unknown latency backend {backend!r}: use 'torch' or 'onnxruntime'")
    if batch < 1 or repeats < 1:
        raise ConfigError(f"batch and repeats must be >= 1 (got batch={batch}, repeats={repeats})")
    if not (max_time_s > 0 and rel_ci > 0):
        raise ConfigError(f"max_time_s and rel_ci must be > 0 (got {max_time_s}, {rel_ci})")
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
                # the checking run above was the first warm-up run
                times, mem = _time(lambda: net(*inputs), warmup - 1, repeats, min_time_s, max_time_s, rel_ci)
        finally:
            torch.set_num_threads(old)
    else:
        with tempfile.TemporaryDirectory() as d:
            res = export_onnx(net, Path(d) / "model.onnx", inputs, check=False)
            sess = onnx_session(res.path, threads=n_threads)
        feed = {n: t.detach().cpu().numpy() for n, t in zip(res.input_names, inputs, strict=True)}
        times, mem = _time(lambda: sess.run(None, feed), max(warmup, 1), repeats, min_time_s, max_time_s, rel_ci)
    arr = np.asarray(times)
    ci = median_ci_rel(times)
    return LatencyReport(float(np.median(arr)), float(np.percentile(arr, 10)), float(np.percentile(arr, 90)),
                         float(arr.mean()), len(times), mem, backend, int(inputs[0].shape[0]), n_threads,
                         ci if math.isfinite(ci) else None)


def compare_onnx_latency(paths: Mapping[str, str | Path], input_size: tuple[int, ...], *, batch: int = 1,
                         threads: int | None = None, rounds: int = 15, block_s: float = 0.2, warmup: int = 3
                         ) -> dict[str, LatencyReport]:
    """Latency of several ONNX files on the same random input, timed interleaved in one process so a busy machine
    slows them alike: `rounds` rounds, each running every model in turn (the order rotates) for `block_s` seconds
    (at least 3 runs); median / p10 / p90 over all runs. `input_size` is (C, H, W).

    Two clocks: the wall clock (`median_ms`) and the CPU time of the work (`cpu_median_ms`: the calling thread's on
    one thread, where onnxruntime computes on the caller; the process's on several, with worker threads that sleep
    instead of spinning). On a machine shared with other jobs the wall clock also counts the time others hold the
    cores; CPU time does not (memory and cache contention still reach both)."""
    if batch < 1 or rounds < 1:
        raise ConfigError(f"batch and rounds must be >= 1 (got {batch}, {rounds})")
    n_threads = int(threads or torch.get_num_threads())
    x = np.random.default_rng(0).standard_normal((batch, *input_size)).astype(np.float32)
    cpu_clock = time.thread_time if n_threads == 1 else time.process_time
    runs = {}
    for name, path in paths.items():
        sess = onnx_session(path, threads=n_threads, spinning=False)
        runs[name] = (lambda s=sess, f={sess.get_inputs()[0].name: x}: s.run(None, f))
        for _ in range(warmup):
            runs[name]()
    names = list(runs)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            start, n = time.perf_counter(), 0
            while n < 3 or time.perf_counter() - start < block_s:
                t0, c0 = time.perf_counter(), cpu_clock()
                runs[name]()
                wall[name].append((time.perf_counter() - t0) * 1e3)
                cpu[name].append((cpu_clock() - c0) * 1e3)
                n += 1
    out = {}
    for name in names:
        arr = np.asarray(wall[name])
        ci = median_ci_rel(wall[name])
        out[name] = LatencyReport(float(np.median(arr)), float(np.percentile(arr, 10)),
                                  float(np.percentile(arr, 90)), float(arr.mean()), len(arr), None, "onnxruntime",
                                  batch, n_threads, ci if math.isfinite(ci) else None,
                                  cpu_median_ms=float(np.median(cpu[name])))
    return out
