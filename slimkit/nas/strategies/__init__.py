"""Search strategies (registry STRATEGIES): random, evolution, local, bo, weaknas."""

from slimkit.nas.strategies.base import Strategy
from slimkit.nas.strategies.bo import BayesOpt
from slimkit.nas.strategies.evolution import RegularizedEvolution
from slimkit.nas.strategies.local_search import LocalSearch
from slimkit.nas.strategies.random_search import RandomSearch
from slimkit.nas.strategies.weaknas import WeakNAS

__all__ = ["BayesOpt", "LocalSearch", "RandomSearch", "RegularizedEvolution", "Strategy", "WeakNAS"]
