"""Where trials run: in this process, in a process pool, or as Ray tasks (`ray` extra).

Every executor turns (problem, architectures) into `Trial`s, in completion order. A trial that raises is recorded
with its error message and does not stop the search. Problems must be picklable for the process and Ray executors.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

from slimkit.errors import ConfigError, MissingDependencyError
from slimkit.nas.trial import Trial

__all__ = ["LocalExecutor", "ProcessExecutor", "RayExecutor", "create_executor", "evaluate_trial"]


def evaluate_trial(problem: Any, arch: Any, index: int) -> Trial:
    """Evaluate one architecture, never raising: failures become a trial with `error` set."""
    key = problem.space.key(arch)
    t0 = time.perf_counter()
    try:
        costs = problem.costs(arch)
        metrics = problem.evaluate(arch)
        score = metrics.get(problem.metric)
        if score is None or math.isnan(score):
            raise ValueError(f"the evaluation returned no value for metric {problem.metric!r}")
        return Trial(index, key, float(score), metrics, costs, seconds=time.perf_counter() - t0)
    except Exception as e:  # recorded, not raised: one failing trial must not stop a search
        msg = f"{type(e).__name__}: {e}"
        return Trial(index, key, None, error=msg + "\n" + traceback.format_exc(limit=3),
                     seconds=time.perf_counter() - t0)


class LocalExecutor:
    """Evaluate in this process, one after another."""

    parallelism = 1

    def evaluate(self, problem: Any, archs: Sequence[Any], start: int = 0) -> Iterator[Trial]:
        for i, arch in enumerate(archs):
            yield evaluate_trial(problem, arch, start + i)

    def close(self) -> None:
        pass


class ProcessExecutor:
    """A pool of `workers` processes; results come back as they finish."""

    def __init__(self, workers: int = 2) -> None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        self.parallelism = workers
        self._pool: ProcessPoolExecutor | None = None

    def evaluate(self, problem: Any, archs: Sequence[Any], start: int = 0) -> Iterator[Trial]:
        if self._pool is None:
            import multiprocessing as mp

            self._pool = ProcessPoolExecutor(self.parallelism, mp_context=mp.get_context("spawn"))
        futures = [self._pool.submit(evaluate_trial, problem, a, start + i) for i, a in enumerate(archs)]
        for f in as_completed(futures):
            yield f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None


class RayExecutor:
    """Each trial is a Ray task. Connects to `address` (default: a running cluster, else a local instance)."""

    def __init__(self, workers: int = 2, address: str | None = None, **init_kwargs: Any) -> None:
        try:
            import ray
        except ImportError:
            raise MissingDependencyError("the ray executor needs Ray: pip install 'slimkit[ray]'") from None
        self._ray = ray
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **init_kwargs)
        self.parallelism = workers
        self._task = ray.remote(evaluate_trial)

    def evaluate(self, problem: Any, archs: Sequence[Any], start: int = 0) -> Iterator[Trial]:
        ray = self._ray
        ref = ray.put(problem)
        pending = [self._task.remote(ref, a, start + i) for i, a in enumerate(archs)]
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield ray.get(done[0])

    def close(self) -> None:
        pass


def create_executor(name: str | Any = "local", workers: int = 2, **kwargs: Any) -> Any:
    if not isinstance(name, str):
        return name
    if name == "local":
        return LocalExecutor()
    if name == "process":
        return ProcessExecutor(workers)
    if name == "ray":
        return RayExecutor(workers, **kwargs)
    raise ConfigError(f"unknown executor {name!r}; choose local, process or ray")
