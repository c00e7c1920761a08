"""Architecture search: spaces, tabular benchmarks, strategies (random, evolution, local, BO, WeakNAS), executors,
training-free proxies (NASWOT) as predictor features.

    from slimkit.nas import NB201Benchmark, search
    bench = NB201Benchmark.from_csv("nb201_cifar10_200ep.csv", metric="cifar10valid_xvalid_200ep")
    result = search(bench, strategy="weaknas", queries=150, seed=0)
"""

from slimkit.nas.benchmarks import NB201Benchmark
from slimkit.nas.constraints import Constraint, parse_constraint, parse_constraints
from slimkit.nas.oneshot import OneShotConfig, OneShotSearch, derive_cell
from slimkit.nas.predictors import create_predictor, list_predictors
from slimkit.nas.problem import Problem
from slimkit.nas.proxies import compute_proxy, list_proxies
from slimkit.nas.search import SearchResult, create_strategy, list_strategies, search
from slimkit.nas.spaces import NB201Space, SearchSpace
from slimkit.nas.strategies import Strategy
from slimkit.nas.trial import Trial

__all__ = ["Constraint", "NB201Benchmark", "NB201Space", "OneShotConfig", "OneShotSearch", "Problem", "SearchResult",
           "SearchSpace", "Strategy", "Trial", "compute_proxy", "create_predictor", "create_strategy", "derive_cell",
           "list_predictors", "list_proxies", "list_strategies", "parse_constraint", "parse_constraints", "search"]
