"""One-shot pruning as a registered method: score once, cut to the budget, return the checked copy
(`slimkit.prune.prune`; fine-tuning afterwards is the job's). The only method that prunes transformer dimensions
(`dims`, per-dimension `ratios`) and meets every budget kind, latency included."""

from __future__ import annotations

from dataclasses import fields

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
        options = {f.name: getattr(job.config, f.name) for f in fields(job.config)}  # every option, as prune's
        return prune(job.model, job.example_inputs, data=job.data, **options)
