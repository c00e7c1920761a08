"""CHEX — channel exploration (Hou et al., arXiv 2203.15794): prune *and regrow* channels during one training.

A trainer callback keeps a channel mask per dependency group and re-zeroes masked channels after every optimizer
step. Every `interval` steps it (1) raises the sparsity along a pure ramp schedule, (2) re-allocates how many
channels each group keeps by ranking all channels globally, (3) picks the kept channels within each group by
importance (magnitude, or column subset selection on calibration outputs), and (4) regrows a decaying share of
pruned channels, re-initialised, so early mistakes can be undone. `finalize()` cuts the masked channels out.
`round_to` (an int, or "auto" for this CPU's channel block) keeps every group's count at multiples of it.

The budget is a global channel `sparsity`, or a `macs_target` (the fraction of the model's MACs to keep): then the
ramp is over MACs and every re-allocation picks the channel sparsity whose kept structure meets the ramped MACs
(bisection on the MACs of the would-be pruned model, computed from its channel counts: `slimkit.prune.budget`), so
the final model meets the budget as allocated, block multiples included, instead of being trimmed uniformly
afterwards.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from slimkit.errors import ConfigError
from slimkit.graph import Group, build_dependency_graph
from slimkit.graph.params import parse_param_role
from slimkit.profile import count_macs, count_node_macs, count_params
from slimkit.prune.allocation import Allocation, keep_counts
from slimkit.prune.budget import MacsModel, solve_closest
from slimkit.prune.importance import ImportanceContext, create_importance
from slimkit.prune.method import PruneJob, PruningMethod
from slimkit.prune.plan import module_plan
from slimkit.prune.pruner import prune
from slimkit.prune.record import next_record, with_record
from slimkit.prune.surgery import apply_plan
from slimkit.prune.validate import as_example_inputs
from slimkit.registry import PRUNERS
from slimkit.train import Callback

__all__ = ["Chex", "ChexCallback", "ramp"]


def ramp(step: int, ramp_steps: int, target: float) -> float:
    """Sparsity at `step`: cubic ramp from 0 to `target` over `ramp_steps` (fast early, gentle near the end)."""
    t = min(1.0, max(0.0, step / max(1, ramp_steps)))
    return target * (1.0 - (1.0 - t) ** 3)


class ChexCallback(Callback):
    def __init__(self, model: nn.Module, example_inputs: Any, *, sparsity: float | None = None,
                 macs_target: float | None = None, ramp_steps: int, interval: int = 50, regrow: float = 0.3,
                 importance: str = "l2", data: Any = None, seed: int = 0, round_to: int | str | None = None) -> None:
        if (sparsity is None) == (macs_target is None):
            raise ConfigError("CHEX needs exactly one budget: sparsity (share of channels removed) or macs_target "
                              f"(fraction of MACs kept); got sparsity={sparsity}, macs_target={macs_target}")
        budget = sparsity if sparsity is not None else macs_target
        if not 0.0 < budget < 1.0 or interval < 1 or not 0.0 <= regrow < 1.0:  # type: ignore[operator]
            raise ConfigError(f"CHEX needs a budget in (0, 1), interval >= 1, 0 <= regrow < 1 (got {budget}, "
                              f"{interval}, {regrow})")
        inputs = as_example_inputs(example_inputs)
        self.model, self.inputs = model, inputs
        graph = build_dependency_graph(model, inputs)
        self.groups: list[Group] = graph.groups
        self.sparsity, self.macs_target = sparsity, macs_target
        self.ramp_steps, self.interval, self.regrow = ramp_steps, interval, regrow
        if macs_target is not None:  # MACs of any allocation, computed from the channel counts (no copy is cut)
            self._macs = MacsModel.build(count_node_macs(graph.gm, inputs), graph.mac_dims, self.groups)
            self._base_macs = self._macs.total
        self.alloc = Allocation("global", round_to)  # validates round_to
        self.score = create_importance(importance)
        self.ctx = ImportanceContext(data=data, seed=seed)
        self.gen = torch.Generator().manual_seed(seed)
        self.masks = {g.id: torch.ones(g.size, dtype=torch.bool) for g in self.groups}
        self.mods = dict(model.named_modules())
        self.history: list[dict[str, float]] = []

    # ---- masking
    @torch.no_grad()
    def _apply_masks(self) -> None:
        for g in self.groups:
            drop = (~self.masks[g.id]).nonzero().flatten()
            if not len(drop):
                continue
            for m in g.members:
                mod = self.mods[m.module]
                idx = m.index(g.size)[drop].flatten()
                param = parse_param_role(m.role)
                if m.role == "heads" or m.role.startswith(("attr:", "sizes:")):  # counts, no tensor of their own
                    continue
                if param is not None:  # a layer scale / embedding along the channels
                    getattr(mod, param[0]).index_fill_(param[1], idx, 0.0)
                    continue
                for name in ("weight", "bias"):
                    p = getattr(mod, name, None)
                    if isinstance(p, torch.Tensor) and p.dim() >= 1:
                        if m.role == "in":
                            if name == "weight":
                                p[:, idx] = 0
                        else:
                            p[idx] = 0

    @torch.no_grad()
    def _reinit(self, g: Group, channels: torch.Tensor) -> None:
        for m in g.members:
            mod = self.mods[m.module]
            idx = m.index(g.size)[channels].flatten()
            if m.role in ("out", "dw") and getattr(mod, "weight", None) is not None:
                w = torch.empty_like(mod.weight[idx])
                nn.init.kaiming_normal_(w, generator=self.gen) if w.dim() > 1 else w.normal_(generator=self.gen)
                mod.weight[idx] = w
            elif (param := parse_param_role(m.role)) is not None:  # regrown at the mean of the channels' values
                p = getattr(mod, param[0])
                p.index_copy_(param[1], idx, p.mean(param[1], keepdim=True).expand_as(p.index_select(param[1], idx)))
            elif m.role == "norm" and getattr(mod, "weight", None) is not None:
                mod.weight[idx] = 1.0
                if getattr(mod, "bias", None) is not None:
                    mod.bias[idx] = 0.0

    # ---- allocation under a MACs budget
    def _sparsity_for(self, fraction: float, scores: dict[int, torch.Tensor]) -> float:
        """The channel sparsity whose global allocation keeps the most MACs up to `fraction` of them (`solve_closest`);
        the largest allowed sparsity if none does."""
        if fraction >= 1.0:
            return 0.0
        target = fraction * self._base_macs
        return solve_closest(lambda r: self._macs(keep_counts(self.groups, scores, r, self.alloc)), target,
                             self.alloc.max_group_ratio, steps=12)

    # ---- exploration step
    def update(self, step: int) -> None:
        self.ctx.cache.clear()
        scores = {g.id: self.score(g, self.model, self.ctx).detach().float() for g in self.groups}
        record: dict[str, float] = {}
        if self.macs_target is not None:  # the kept MACs ramp from 1 down to the target
            record["macs_fraction"] = 1.0 - ramp(step, self.ramp_steps, 1.0 - self.macs_target)
            s = self._sparsity_for(record["macs_fraction"], scores)
        else:
            s = ramp(step, self.ramp_steps, self.sparsity)  # type: ignore[arg-type]
        counts = keep_counts(self.groups, scores, s, self.alloc)
        explore = self.regrow * (1.0 - min(1.0, step / max(1, self.ramp_steps)))
        for g in self.groups:
            k = counts[g.id]
            order = torch.argsort(scores[g.id], descending=True)
            n_regrow = min(int(explore * (g.size - k)), k - 1)
            keep = set(order[: k - n_regrow].tolist())
            pruned_before = (~self.masks[g.id]).nonzero().flatten().tolist()
            pool = [c for c in order.tolist() if c not in keep]
            candidates = [c for c in pool if c in pruned_before] or pool
            pick = torch.randperm(len(candidates), generator=self.gen)[:n_regrow].tolist()
            regrown = [candidates[i] for i in pick]
            keep.update(regrown)
            for c in pool:  # fill up to k with the best remaining if regrowth found too few candidates
                if len(keep) >= k:
                    break
                keep.add(c)
            new = torch.zeros(g.size, dtype=torch.bool)
            new[list(keep)] = True
            back = [c for c in regrown if not self.masks[g.id][c]]
            if back:
                self._reinit(g, torch.tensor(back))
            self.masks[g.id] = new
        self._apply_masks()
        self.history.append({"step": step, "sparsity": s, "kept": sum(int(m.sum()) for m in self.masks.values()),
                             **record})

    # ---- callback hooks
    def on_train_start(self, trainer: Any) -> None:
        if not self.history:
            self.update(0)

    def on_batch_end(self, trainer: Any, step: int, loss: float) -> None:
        if step % self.interval == 0:
            self.update(step)
        else:
            self._apply_masks()

    def finalize(self) -> nn.Module:
        """A physically pruned copy of the model keeping exactly the unmasked channels."""
        keep = {g.id: self.masks[g.id].nonzero().flatten().tolist() for g in self.groups}
        plan = module_plan(self.model, self.groups, keep)
        pruned = apply_plan(copy.deepcopy(self.model), plan)
        return with_record(pruned, next_record(self.model, plan, importance="chex"))

    def state_dict(self) -> dict[str, Any]:
        return {"masks": {str(k): v.tolist() for k, v in self.masks.items()}, "history": self.history,
                "gen": self.gen.get_state().tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.masks = {int(k): torch.tensor(v, dtype=torch.bool) for k, v in state["masks"].items()}
        self.history = list(state["history"])
        self.gen.set_state(torch.tensor(state["gen"], dtype=torch.uint8))


@PRUNERS.register("chex")
class Chex(PruningMethod):
    """CHEX as a method: trains the job's fresh model (`fresh_model`, `train`) for `train_steps` with the callback,
    then cuts the masked channels. A MACs fraction is CHEX's own budget (each re-allocation meets the ramped MACs); a
    params fraction f becomes a channel sparsity of 1 - sqrt(f) (params scale with channels squared) and what is left
    over (or a MACs target CHEX could not reach within max_group_ratio) is trimmed one-shot at the end."""

    name = "chex"
    budgets = ("ratio", "macs_target", "params_target")
    fractions_only = True
    allocates = False  # globally, by importance, at every re-allocation

    def run(self, job: PruneJob) -> nn.Module:
        if job.fresh_model is None or job.train is None:
            raise ConfigError("CHEX trains while it prunes: the job must give fresh_model and train")
        c, b = job.config, job.budget
        amount = {"ratio": {"sparsity": b.value}, "macs_target": {"macs_target": b.value}}.get(
            b.kind, {"sparsity": 1.0 - b.value**0.5})
        model = job.fresh_model()
        chex = ChexCallback(model, job.example_inputs, **amount, ramp_steps=int(0.75 * job.train_steps),
                            interval=max(1, job.steps_per_epoch // 4), importance=c.importance, data=job.data,
                            seed=c.seed, round_to=c.round_to)
        job.train(model, [chex])
        pruned = chex.finalize()
        if b.kind == "ratio":
            return pruned
        measure = (lambda m: count_macs(m, job.example_inputs)) if b.kind == "macs_target" else count_params
        target = b.value * measure(job.model)
        if measure(pruned) <= target:
            return pruned
        return prune(pruned, job.example_inputs, importance=c.importance, data=job.data, round_to=c.round_to,
                     ignored_layers=c.ignored_layers, **{b.kind: target})
