"""One-shot pruning as a registered method: score once, cut to the budget, return the checked copy
(`slimkit.prune.prune`; fine-tuning afterwards is the job's). The only method that prunes transformer dimensions
(`dims`, per-dimension `ratios`) and meets every budget kind, latency included."""

from __future__ import annotations

from torch import nn

from slimkit.prune.method import PruneJob, PruningMethod
from slimkit.prune.pruner import prune
from slimkit.registry import PRUNERS

__all__ = ["OneShot"]


@PRUNERS.register("oneshot")
class OneShot(PruningMethod):
    name = "oneshot"
    prunes_dims = True

    def run(self, job: PruneJob) -> nn.Module:
        budget = {"ratios": dict(job.ratios)} if job.ratios else job.budget.kwargs()
        return prune(job.model, job.example_inputs, importance=job.importance, ignored_layers=job.ignored_layers,
                     round_to=job.round_to, allocation=job.allocation, data=job.data, seed=job.seed, dims=job.dims,
                     token_method=job.token_method, **budget)
