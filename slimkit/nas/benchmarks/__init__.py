"""Tabular benchmarks: look up an architecture's metrics instead of training it."""

from slimkit.nas.benchmarks.nb201 import NB201Benchmark

__all__ = ["NB201Benchmark"]
