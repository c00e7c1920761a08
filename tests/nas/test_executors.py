"""Executors give the same trials as in-process evaluation; failures are recorded; Ray runs trials as tasks."""

import pytest

from slimkit.errors import ConfigError
from slimkit.nas import search
from slimkit.nas.executors import LocalExecutor, ProcessExecutor, create_executor
from tests.nas.test_strategies import Additive, Flaky


def _by_key(result):
    return {t.key: (t.score, t.error is None) for t in result.history}


def test_process_pool_matches_local():
    prob = Flaky(4)  # picklable; some trials fail in the workers
    local = search(prob, "random", queries=12, seed=3)
    pooled = search(prob, "random", queries=12, seed=3, executor="process", workers=2)
    assert _by_key(local) == _by_key(pooled)
    assert any(t.error and "out of memory" in t.error for t in pooled.history)


def test_executor_factory():
    assert isinstance(create_executor("local"), LocalExecutor)
    assert isinstance(create_executor("process", workers=3), ProcessExecutor)
    with pytest.raises(ConfigError, match="local, process or ray"):
        create_executor("slurm")


@pytest.mark.ray
def test_ray_executor_on_a_local_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        prob = Additive(5)
        local = search(prob, "evolution", queries=6, seed=1)
        remote = search(prob, "evolution", queries=6, seed=1, executor="ray", workers=1)
        assert [t.key for t in remote.history] == [t.key for t in local.history]
        assert [t.score for t in remote.history] == [t.score for t in local.history]
    finally:
        ray.shutdown()
