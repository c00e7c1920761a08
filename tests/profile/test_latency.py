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
