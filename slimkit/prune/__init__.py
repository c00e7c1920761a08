"""Structural pruning: importance criteria, surgery (the only mutating code), one-shot pruner, token reduction,
pruning methods (oneshot, iterative, chex: one interface, registered in PRUNERS), save/load."""

from slimkit._callable import make_callable
from slimkit.prune import discriminant as _discriminant  # noqa: F401  (registers the "di" criterion)
from slimkit.prune import hsic as _hsic  # noqa: F401  (registers the "hsic" criterion)
from slimkit.prune import subset as _subset  # noqa: F401  (registers the "css" criterion)
from slimkit.prune.allocation import Allocation
from slimkit.prune.budget import Budget
from slimkit.prune.chex import Chex, ChexCallback, ramp
from slimkit.prune.dims import DIMENSIONS, group_dimension
from slimkit.prune.importance import ImportanceContext, create_importance, list_importances
from slimkit.prune.io import load, replay, save
from slimkit.prune.iterative import Iterative, iterative_prune, keep_schedule
from slimkit.prune.method import PruneJob, PruningMethod, create_pruning_method, list_pruning_methods
from slimkit.prune.oneshot import OneShot
from slimkit.prune.pruner import ALLOCATIONS, PruneConfig, Pruner, keep_counts, module_plan, prune
from slimkit.prune.surgery import SURGERY, apply_plan
from slimkit.prune.tokens import find_token_stack, insert_token_reducers, reduce_tokens

__all__ = [
    "ALLOCATIONS", "Allocation", "Budget", "Chex", "ChexCallback", "DIMENSIONS", "ImportanceContext", "Iterative",
    "OneShot", "PruneConfig", "PruneJob", "Pruner", "PruningMethod", "SURGERY", "apply_plan", "create_importance",
    "create_pruning_method", "find_token_stack", "group_dimension", "insert_token_reducers", "iterative_prune",
    "keep_counts", "keep_schedule", "list_importances", "list_pruning_methods", "load", "module_plan", "prune", "ramp",
    "reduce_tokens", "replay", "save",
]

make_callable(__name__, prune)  # `slimkit.prune(model, x, ...)` calls `slimkit.prune.prune`
