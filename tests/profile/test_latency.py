import pytest
import torch

from slimkit.errors import ConfigError
from slimkit.models import create_model
from slimkit.profile import measure_latency


@pytest.mark.parametrize("backend", ["torch", "onnxruntime"])
def test_latency_report_is_ordered_and_restores_threads(backend):
    model = create_model("convnet_tiny", in_chans=1)
    model.train()
    before = torch.get_num_threads()
    r = measure_latency(model, (1, 16, 16), backend=backend, threads=1, batch=4, warmup=1, repeats=5, min_time_s=0)
    assert 0 < r.p10_ms <= r.median_ms <= r.p90_ms
    assert r.repeats >= 5 and r.batch == 4 and r.threads == 1 and r.backend == backend
    assert torch.get_num_threads() == before and model.training  # caller's model untouched
    assert r.peak_memory_mb is None or r.peak_memory_mb >= 0


def test_bigger_input_is_slower():
    model = create_model("convnet_small")
    small = measure_latency(model, (3, 8, 8), repeats=10, min_time_s=0)
    big = measure_latency(model, (3, 64, 64), batch=8, repeats=10, min_time_s=0)
    assert big.p10_ms > small.p10_ms  # the fast tail: robust to other processes stealing the CPU mid-run


def test_bad_backend():
    with pytest.raises(ConfigError, match="onnxruntime"):
        measure_latency(create_model("convnet_tiny"), (3, 8, 8), backend="tensorrt")


def test_median_ci_covers_95_percent_by_the_binomial():
    """The interval's ranks, checked against an exact binomial coverage computed here."""
    import math

    from slimkit.profile.latency import median_ci_rel

    for n in (5, 9, 20, 51, 100, 333):
        xs = list(range(1, n + 1))  # sample i has value i: the interval's ranks can be read back
        med = (n + 1) / 2
        width = median_ci_rel(xs) * 2 * med
        half = 0.98 * math.sqrt(n)
        lo, hi = max(0, math.floor(n / 2 - half)), min(n - 1, math.ceil(n / 2 + half))
        assert width == pytest.approx(hi - lo)
        # P(x_(lo+1) <= median <= x_(hi+1)) = P(lo + 1 <= B <= hi) for B ~ Binomial(n, 1/2)
        cover = sum(math.comb(n, k) for k in range(lo + 1, hi + 1)) / 2**n
        assert cover >= 0.95 or (lo == 0 and hi == n - 1)  # small n: the whole range is the best there is


def test_timing_stops_when_the_median_is_stable_or_at_the_time_cap():
    from slimkit.profile.latency import _stop

    steady = [10.0, 10.01, 9.99, 10.0, 10.02]
    noisy = [10.0, 30.0, 5.0, 50.0, 12.0]
    assert _stop(steady, elapsed=1.0, repeats=1000, min_time_s=0.5, max_time_s=10, rel_ci=0.02)
    assert not _stop(noisy, elapsed=1.0, repeats=1000, min_time_s=0.5, max_time_s=10, rel_ci=0.02)
    assert not _stop(steady, elapsed=0.1, repeats=1000, min_time_s=0.5, max_time_s=10, rel_ci=0.02)
    assert _stop(noisy, elapsed=10.5, repeats=1000, min_time_s=0.5, max_time_s=10, rel_ci=0.02)
    assert _stop(noisy * 6, elapsed=1.0, repeats=30, min_time_s=0.5, max_time_s=10, rel_ci=0.02)


def test_a_slow_model_is_timed_in_seconds_not_minutes():
    import time

    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.25)
            return x

    t0 = time.perf_counter()
    r = measure_latency(Slow(), (1, 4, 4), repeats=30, max_time_s=1.0)
    assert time.perf_counter() - t0 < 4.0 and 3 <= r.repeats < 30
    assert r.median_ms >= 250 and r.ci_rel is not None


def test_onnx_files_are_timed_interleaved(tmp_path):
    from slimkit.export import export_onnx
    from slimkit.profile import compare_onnx_latency

    small = create_model("convnet_tiny", in_chans=1)
    big = create_model("vgg11", in_chans=1)
    paths = {"small": tmp_path / "s.onnx", "big": tmp_path / "b.onnx"}
    export_onnx(small, paths["small"], torch.randn(1, 1, 32, 32))
    export_onnx(big, paths["big"], torch.randn(1, 1, 32, 32))
    lat = compare_onnx_latency(paths, (1, 32, 32), batch=2, threads=1, rounds=4, block_s=0.0)
    assert set(lat) == {"small", "big"}
    for rep in lat.values():
        assert rep.repeats == 12 and rep.batch == 2 and rep.threads == 1 and rep.p10_ms <= rep.median_ms <= rep.p90_ms
        assert 0 < rep.cpu_median_ms <= rep.p90_ms * 1.05  # one thread: CPU time cannot exceed the wall clock
    assert lat["big"].cpu_median_ms > 3 * lat["small"].cpu_median_ms  # VGG-11 has ~100x the MACs
    with pytest.raises(ConfigError):
        compare_onnx_latency(paths, (1, 32, 32), rounds=0)
