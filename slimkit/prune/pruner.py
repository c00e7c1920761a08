"""One-shot structural pruning to a budget: score groups once, choose how many channels each keeps, cut.

Budgets: a channel `ratio`, or a MACs / params target (a fraction of the original when <= 1, else an absolute
count) met by bisection over the ratio on costs computed from the channel counts (`slimkit.prune.budget`; the final
model is counted for real), or a measured latency target in milliseconds (onnxruntime, this machine), or explicit
`ratios` per dimension. `dims` limits pruning to some dimensions (`slimkit.prune.dims`: heads, neurons, embed,
tokens; each loses the same share in every one of its groups, whatever the allocation), e.g. heads only, or heads +
neurons + tokens for a ViT (with tokens, a MACs budget is met on counted candidates: the channel-count costs do not
see sequence length).
Every pruned copy is run on the example inputs before it is returned; channel groups that break it are kept whole
(`slimkit.prune.safety`), with a warning and a `kept_whole` entry in the model's pruning record.

Allocation (how the cut is spread over the channel groups): "latency" (the default) cuts each group in proportion
to the time per MAC it gives back on this CPU (`slimkit.prune.latency`) and keeps channel counts in whole vector
blocks, so latency falls about as fast as MACs; "uniform" cuts the same share everywhere (slimkit's default before
0.2, unrounded); "global" removes the lowest-scored channels across groups; "global_latency" the lowest-scored per
estimated nanosecond. `kernels="int8"` (for a model that will be quantized) also keeps the channel counts
onnxruntime's fast INT8 convolutions take, and estimates time with INT8 costs (`slimkit.prune.allocation`).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal

import torch
from torch import nn

from slimkit.errors import BudgetError, ConfigError, PruneError
from slimkit.graph import DependencyGraph, Group, build_dependency_graph
from slimkit.graph.trace import empty_caches
from slimkit.profile import count_macs, count_node_macs, count_params, measure_latency
from slimkit.profile.cpu_cost import cpu_rates
from slimkit.prune.allocation import (
    _BY_LATENCY,
    ALLOCATIONS,
    INT8_KERNELS,
    Allocation,
    ChannelRule,
    channel_rules,
    keep_counts,
)
from slimkit.prune.budget import Budget, MacsModel, ParamsModel, solve_closest
from slimkit.prune.dims import (
    CHANNEL_DIMS,
    check_dims,
    check_dims_agree,
    check_ratios,
    dim_ratio_of_groups,
    group_dimension,
    require_dims,
)
from slimkit.prune.importance import ImportanceContext, create_importance
from slimkit.prune.latency import LatencyModel, latency_weighted_scores, latency_weights
from slimkit.prune.plan import module_plan
from slimkit.prune.record import next_record, record_of, with_record
from slimkit.prune.rewrite import needs_rewrite, rewrite_model
from slimkit.prune.safety import failure, find_culprits
from slimkit.prune.surgery import apply_plan
from slimkit.prune.tokens import (
    check_token_layers,
    check_token_method,
    default_token_layers,
    insert_token_reducers,
    token_position_scores,
    token_stack_or_why,
    token_step,
)
from slimkit.prune.validate import as_example_inputs, check_budget, check_model, output_shapes, reference_outputs

__all__ = ["ALLOCATIONS", "PruneConfig", "Pruner", "prune", "keep_counts", "module_plan"]

DEFAULT_IMPORTANCE = "l1"  # the criterion when none is given
_COST_AGREEMENT = 0.02  # a computed cost within 2% of the count, or a count within 2% of the target, ends the search



@dataclass(frozen=True)
class PruneConfig:
    ONE_OF: ClassVar = (("ratio", "macs_target", "params_target", "latency_target", "ratios"),)  # the budgets: a
    # budget given over a config (a command-line flag over a file) replaces the config's budget

    importance: str | None = DEFAULT_IMPORTANCE  # criterion name (see slimkit.prune.list_importances()); None:
    # not given (compress picks l1, or the ratio search's own; a Pruner takes DEFAULT_IMPORTANCE)
    ratio: float | None = None  # share of channels to remove in every group (or globally)
    macs_target: float | None = None  # MACs to keep: fraction of the original if <= 1, else absolute MACs
    params_target: float | None = None  # parameters to keep, same convention
    latency_target: float | None = None  # onnxruntime batch-1 latency to reach, milliseconds
    ignored_layers: tuple[str, ...] = ()  # modules whose output channels are never pruned
    allocation: str = "latency"  # how the cut is spread over groups: latency, uniform, global, global_latency
    round_to: int | Literal["auto"] | None = None  # counts in multiples of this (8) or "auto" (the CPU's block);
    # None: the allocation's own ("auto" for latency and global_latency, unrounded for uniform and global)
    max_group_ratio: float = 0.9  # never remove more than this share of one group
    seed: int = 0
    dims: tuple[str, ...] | None = None  # dimensions the ratio prunes (None: every channel group, no tokens)
    ratios: Mapping[str, float] | None = None  # explicit share to remove per dimension (a budget of its own)
    token_method: str = "select"  # how tokens are reduced: select (fixed positions, by HSIC), drop, merge
    token_layers: tuple[int, ...] | None = None  # reducers after these blocks (None: 1/4, 1/2, 3/4 of the depth)
    kernels: str | None = None  # the kernels the model will run on: fp32 (None: fp32 here; `slimkit compress`
    # chooses when it quantizes), int8 (counts onnxruntime's fast INT8 convolutions take, INT8 costs) or auto (int8's
    # counts where they leave a group room to shrink, fp32's where they would hold it whole)

    def __post_init__(self) -> None:
        budgets = [b for b in (self.ratio, self.macs_target, self.params_target, self.latency_target, self.ratios)
                   if b is not None]
        if len(budgets) != 1:
            raise ConfigError("give exactly one budget: ratio, macs_target, params_target, latency_target or ratios "
                              f"(got {len(budgets)})")
        if self.dims is not None:
            check_dims(self.dims)
        if self.ratios is not None:
            check_ratios(self.ratios)
        check_dims_agree(self.dims, self.ratios)
        check_token_method(self.token_method)
        if self.dims is not None or self.ratios is not None:  # (without either, a ratio search may add tokens)
            self.check_token_options()
        for name in ("ratio", "macs_target", "params_target", "latency_target"):
            check_budget(name, getattr(self, name))  # a number in range: never NaN, inf or a string
        self.spread  # noqa: B018 - validates allocation, round_to and max_group_ratio

    @property
    def prunes_tokens(self) -> bool:
        return "tokens" in (self.ratios or {}) or "tokens" in (self.dims or ())

    def check_token_options(self) -> None:
        """token_method / token_layers given while no tokens are pruned would be ignored: a ConfigError instead."""
        for name in ("token_method", "token_layers"):
            if getattr(self, name) != getattr(PruneConfig, name) and not self.prunes_tokens:
                rule = "applies to token pruning only: add tokens to dims (or ratios), or leave it out"
                raise ConfigError.for_option(name, rule)

    @property
    def channel_round(self) -> int | None:
        return self.spread.channel_round

    @property
    def spread(self) -> Allocation:
        """How the cut is spread over the groups (allocation, rounding, cap): what `keep_counts` reads."""
        return Allocation(self.allocation, self.round_to, self.max_group_ratio, self.kernels or "fp32")

    @property
    def budget(self) -> Budget | None:
        """The one budget (None when per-dimension `ratios` replace it)."""
        if self.ratios is not None:
            return None
        return Budget.of(ratio=self.ratio, macs_target=self.macs_target, params_target=self.params_target,
                         latency_target=self.latency_target)


@dataclass
class Pruner:
    """Scores a model's groups once; `step(ratio)` plans, `apply(ratio)` gives a checked pruned copy; budgets search
    the ratio. Groups whose pruning breaks the model are kept whole (listed in `kept_whole`)."""

    model: nn.Module
    example_inputs: tuple[torch.Tensor, ...]
    config: PruneConfig
    data: Any = None
    loss_fn: Callable[..., Any] | None = None
    graph: DependencyGraph = field(init=False)
    scores: dict[int, torch.Tensor] = field(init=False)

    def __post_init__(self) -> None:
        check_model(self.model)
        self.example_inputs = as_example_inputs(self.example_inputs)
        if self.config.importance is None:  # not given (a job's "its own default"): the library's
            self.config = replace(self.config, importance=DEFAULT_IMPORTANCE)
        score = create_importance(self.config.importance)  # an unknown criterion fails before any tracing
        self.rewrites: list[str] = []
        if needs_rewrite(self.model):  # a forward that cannot be pruned as written: an equivalent copy that can
            self.model = copy.deepcopy(self.model)
            self.rewrites = rewrite_model(self.model)
        ignored = set(self.config.ignored_layers)
        unknown = ignored - {n for n, _ in self.model.named_modules()}
        if unknown:
            raise ConfigError(f"ignored_layers names modules the model does not have: {sorted(unknown)}")
        self.reference = output_shapes(reference_outputs(self.model, self.example_inputs))  # ModelError if unfit
        self.graph = build_dependency_graph(self.model, self.example_inputs)
        self.groups = [g for g in self.graph.groups if not any(m.module in ignored for m in g.producers)]
        if not self.groups:
            raise PruneError(f"{type(self.model).__name__} has no prunable channel group (blocked: "
                             f"{[r for _, r in self.graph.blocked][:3]})")
        self.config.check_token_options()
        self.dimensions = tuple(d for d in CHANNEL_DIMS if d in {group_dimension(g) for g in self.groups})
        self._require_dims(self.dimensions)  # (tokens: by _init_tokens, which finds them)
        self.kept_whole: list[dict[str, Any]] = []
        self.base: dict[str, float] = {}  # the unpruned cost of the budget being searched
        self._init_tokens()
        ctx = ImportanceContext(data=self.data, loss_fn=self.loss_fn, seed=self.config.seed)
        self.scores = {g.id: score(g, self.model, ctx).detach().float() for g in self.groups}
        self.weights: dict[int, float] | None = None  # allocation="latency": each group's multiplier of the cut
        self.latency: LatencyModel | None = None
        self._rules: dict[Allocation, dict[int, ChannelRule]] = {}  # rules_for's, per allocation
        if self.config.allocation in _BY_LATENCY and self.config.dims is None and self.config.ratios is None:
            int8 = self.config.spread.kernels in INT8_KERNELS  # INT8 costs (auto: where the counts let it)
            self.latency = LatencyModel.build(self.model, self.groups, self.example_inputs,
                                              cpu_rates(kernels="int8" if int8 else "fp32"))
            rules = self.rules_for(self.config.spread)
            costs = self.latency.group_costs({g.id: rules[g.id].multiple or 1 for g in self.groups})
            if self.config.allocation == "latency":
                self.weights = latency_weights(costs, {g.id: g.size for g in self.groups})
            else:
                self.scores = latency_weighted_scores(self.scores, {g: t for g, (t, _) in costs.items()})

    def rules_for(self, spread: Allocation) -> dict[int, ChannelRule]:
        """The counts each group may keep under `spread` (`channel_rules`), computed once per allocation: the
        budget search asks at every step."""
        if spread not in self._rules:
            self._rules[spread] = channel_rules(self.groups, self.model, spread)
        return self._rules[spread]

    def _require_dims(self, have: tuple[str, ...], why_no_tokens: str = "") -> None:
        """The dimensions the config names are dimensions of the model (`have`): a ConfigError naming them before
        any scoring, not a model pruned along nothing."""
        cfg, name = self.config, type(self.model).__name__
        model = f"{name} (outside ignored_layers)" if cfg.ignored_layers else name
        for what, named in (("dims", cfg.dims), ("ratios", cfg.ratios)):
            if named is not None:
                wanted = [d for d in named if d != "tokens" or why_no_tokens]
                require_dims(wanted, have, model, what, why_no_tokens)

    def _init_tokens(self) -> None:
        """The token stack and, for "select", the position scores, when tokens are pruned."""
        cfg = self.config
        self.token_stack, self.token_scores = None, None
        if not cfg.prunes_tokens:
            return
        self.token_stack, why = token_stack_or_why(self.model, self.example_inputs)
        if self.token_stack is None:
            self._require_dims(self.dimensions, why)  # raises, naming the dimensions it has
            raise PruneError(why)
        self.dimensions = (*self.dimensions, "tokens")
        if cfg.token_layers is not None:
            check_token_layers(self.token_stack, cfg.token_layers)
        layers = cfg.token_layers or default_token_layers(len(self.token_stack.blocks))
        self.config = replace(cfg, token_layers=tuple(layers))
        if cfg.token_method == "select":
            self.token_scores = token_position_scores(self.model, self.token_stack, layers, self.data)

    def dim_ratios(self, ratio: float, ratios: Mapping[str, float] | None = None) -> dict[str, float]:
        """The share removed along each dimension: `ratios` if given, else the config's `ratios`, else `ratio` along
        each of the config's `dims`."""
        cfg = self.config
        if ratios is not None or cfg.ratios is not None:
            return {d: float(r) for d, r in (ratios if ratios is not None else cfg.ratios).items()}
        return {d: ratio for d in (cfg.dims or CHANNEL_DIMS)}

    def _counts(self, ratio: float, ratios: Mapping[str, float] | None = None) -> dict[int, int]:
        if self.config.dims is None and self.config.ratios is None and ratios is None:
            return keep_counts(self.groups, self.scores, ratio, self.config.spread, self.weights,
                               self.rules_for(self.config.spread))
        uniform = replace(self.config.spread, allocation="uniform")  # a dimension's share, cut from each group
        rules = self.rules_for(uniform) if uniform.kernels in INT8_KERNELS else None
        per = dim_ratio_of_groups(self.groups, self.dim_ratios(ratio, ratios))
        counts = {g.id: g.size for g in self.groups}
        for r in sorted(set(per.values()) - {0.0}):
            counts.update(keep_counts([g for g in self.groups if per[g.id] == r], self.scores, r, uniform,
                                      rules=rules))
        return counts

    def step(self, ratio: float, ratios: Mapping[str, float] | None = None) -> dict[int, list[int]]:
        """Kept channel indices per group id at `ratio` (or per-dimension `ratios`; the groups are `self.groups`;
        nothing is cut here)."""
        counts = self._counts(ratio, ratios)
        return {g.id: sorted(torch.argsort(self.scores[g.id], descending=True)[: counts[g.id]].tolist())
                for g in self.groups}

    def apply(self, ratio: float, ratios: Mapping[str, float] | None = None) -> nn.Module:
        """A pruned copy at `ratio`, or with per-dimension `ratios`, run and checked (the original model is left as
        it was)."""
        if ratios is not None:
            check_ratios(ratios)
            if ratios.get("tokens") and self.token_stack is None:
                raise ConfigError("this Pruner was built without the token dimension: list 'tokens' in its config's "
                                  "dims (or ratios)")
            require_dims([d for d in ratios if d != "tokens"], self.dimensions, type(self.model).__name__, "ratios")
        return self._checked(lambda: self.step(ratio, ratios), self._info(ratio, ratios))

    def _info(self, ratio: float, ratios: Mapping[str, float] | None = None) -> dict[str, Any]:
        return {"ratio": ratio, "dims": self.dim_ratios(ratio, ratios)}

    # -- building and the safety net
    def _build(self, keep: dict[int, list[int]], info: dict[str, Any]) -> nn.Module:
        """The pruned copy for `keep`, with token reducers when `info` says so, and its pruning record."""
        plan = module_plan(self.model, self.groups, keep)
        with empty_caches(self.model):  # tensors cached from parameters have the old shapes (and may not copy)
            pruned = apply_plan(copy.deepcopy(self.model), plan)
        record = next_record(self.model, plan, self.rewrites, importance=self.config.importance, **info)
        tokens = info.get("dims", {}).get("tokens", 0.0)
        if tokens > 0:
            if self.token_stack is None:
                raise ConfigError("this Pruner was built without the token dimension: list 'tokens' in dims")
            step = token_step(self.token_stack, tokens, self.config.token_layers, self.config.token_method,
                              self.token_scores)
            insert_token_reducers(pruned, step)
            record["steps"].append(step)
        if self.kept_whole:
            record["kept_whole"] = list(self.kept_whole)
        return with_record(pruned, record)

    def _try(self, keep: dict[int, list[int]], info: dict[str, Any]) -> tuple[nn.Module | None, str | None]:
        try:
            pruned = self._build(keep, info)
        except Exception as e:  # noqa: BLE001 - surgery refusing a plan is an engine failure like any other
            return None, f"surgery: {type(e).__name__}: {str(e)[:200]}"
        return pruned, failure(pruned, self.example_inputs, self.reference)

    def _checked(self, plan: Callable[[], dict[int, list[int]]], info: dict[str, Any]) -> nn.Module:
        """Build `plan()`; while the result fails on the example inputs, keep the groups that break it whole."""
        while True:
            keep = plan()
            pruned, err = self._try(keep, info)
            if err is None:
                return pruned  # type: ignore[return-value]
            self._keep_whole(keep, err)

    def _keep_whole(self, keep: dict[int, list[int]], err: str) -> None:
        cut = [g for g in self.groups if len(keep[g.id]) < g.size]
        name = type(self.model).__name__
        if not cut:
            raise PruneError(f"an unpruned copy of {name} fails on the example inputs ({err}): the model does not "
                             "survive copy.deepcopy, so slimkit cannot return a pruned copy of it")

        def breaks(subset: Sequence[Group]) -> bool:
            ids = {g.id for g in subset}
            trial = {g.id: keep[g.id] if g.id in ids else list(range(g.size)) for g in self.groups}
            return self._try(trial, {})[1] is not None

        bad = find_culprits(cut, breaks)
        ids = {g.id for g in bad}
        self.groups = [g for g in self.groups if g.id not in ids]
        modules = sorted({m.module for g in bad for m in g.producers})
        self.kept_whole.append({"modules": modules, "channels": sum(g.size for g in bad), "error": err})
        more = " ..." if len(modules) > 4 else ""
        warnings.warn(f"slimkit: pruning {len(bad)} channel group(s) of {name} broke the model ({err}); they are "
                      f"kept whole and the rest is pruned: {', '.join(modules[:4])}{more}", stacklevel=4)
        if not self.groups:
            raise PruneError(f"every prunable channel group of {name} breaks it when pruned ({err}); nothing could "
                             "be pruned correctly, so no model is returned")

    # -- budgets
    def _ratio_cap(self) -> float:
        """The ratio at which every group is cut to `max_group_ratio` (above it for allocation "latency", where a
        group's cut is the ratio times its weight, capped)."""
        cap = self.config.max_group_ratio
        return cap / min(self.weights.values()) if self.weights and self.config.allocation == "latency" else cap

    def _search(self, cost: Callable[[dict[int, int]], int], measure: Callable[[nn.Module], float], target: float,
                what: str) -> nn.Module:
        """The least pruning whose cost, computed from the channel counts, meets `target`; then built, checked and
        measured for real. If the count and the computed cost ever disagree, the search is redone with the target
        scaled by their ratio, both ways: a computed cost that is high would otherwise prune far past the target
        (the best candidate that meets it is kept; failing all, built candidates are measured as the search goes)."""
        cap, goal = self._ratio_cap(), target
        best: tuple[float, nn.Module] | None = None
        tried: set[float] = set()
        for _ in range(8):
            ratio = solve_closest(lambda r: cost(self._counts(r)), goal, cap)
            if ratio in tried and best is not None:
                break  # the correction settled on a plan already measured
            tried.add(ratio)
            n = len(self.groups)
            pruned = self._checked(lambda r=ratio: self.step(r), self._info(ratio))
            if len(self.groups) != n:
                continue  # groups were kept whole: the plan's cost changed, search again
            got, est = measure(pruned), cost(self._counts(ratio))
            record_of(pruned)["budget"] = {"what": what, "target": target, "computed": est, "counted": got}
            if got <= target:
                if best is None or got > best[0]:
                    best = (got, pruned)
                if abs(est - got) <= _COST_AGREEMENT * got or got >= (1 - _COST_AGREEMENT) * target or ratio <= 0:
                    return pruned  # on target, or the cost model agrees (the gap left is the plan's granularity)
            elif ratio >= cap:
                raise self._budget_error(what, target, got)
            goal *= target / got  # aim by the measured error: lower when the count is high, higher when it is low
        return best[1] if best is not None else self._search_measured(measure, target, what)

    def _budget_error(self, what: str, target: float, reached: float) -> BudgetError:
        base = self.base.get(what)
        share = f" ({reached / base:.2f} of the original)" if base else ""
        whole = f"; {len(self.kept_whole)} group set(s) were kept whole because pruning them broke the model" \
            if self.kept_whole else ""
        return BudgetError(f"{what} target {target:.4g} is below what pruning {self.config.max_group_ratio:.0%} of "
                           f"every prunable group of {type(self.model).__name__} reaches: {reached:.4g}{share}{whole}. "
                           "Relax the target to at least that, or list fewer ignored_layers")

    def _search_measured(self, measure: Callable[[nn.Module], float], target: float, what: str) -> nn.Module:
        """Bisection on built, checked and measured candidates (latency; the fallback for a cost model that
        does not agree with the count)."""
        lo, hi = 0.0, self._ratio_cap()
        best = self.apply(hi)
        if measure(best) > target:
            raise self._budget_error(what, target, measure(best))
        for _ in range(14):
            mid = (lo + hi) / 2
            cand = self.apply(mid)
            if measure(cand) <= target:
                best, hi = cand, mid
            else:
                lo = mid
        return best

    def _target(self, name: str, value: float, base: float) -> float:
        self.base = {{"macs_target": "MACs", "params_target": "params"}[name]: base}
        if value <= 1:
            return value * base
        if value > base:
            raise ConfigError(f"{name}={value:.4g} is read as an absolute count, and {type(self.model).__name__} has "
                              f"only {base:.4g}: give a fraction in (0, 1] (0.5 = half) or a count below {base:.4g}")
        return value

    def run(self) -> nn.Module:
        budget = self.config.budget
        if budget is None or budget.kind == "ratio":
            return self.apply(budget.value if budget is not None else 0.0)
        if budget.kind == "macs_target":
            target = self._target("macs_target", budget.value, count_macs(self.model, self.example_inputs))
            if self.token_stack is not None:  # fewer tokens: costs the channel counts do not give
                return self._search_measured(lambda m: count_macs(m, self.example_inputs), target, "MACs")
            macs = MacsModel.build(count_node_macs(self.graph.gm, self.example_inputs), self.graph.mac_dims,
                                   self.graph.groups)
            return self._search(macs, lambda m: count_macs(m, self.example_inputs), target, "MACs")
        if budget.kind == "params_target":
            target = self._target("params_target", budget.value, count_params(self.model))
            return self._search(ParamsModel.build(self.model, self.graph.groups), count_params, target, "params")
        shape = tuple(self.example_inputs[0].shape[1:])

        def latency(m: nn.Module) -> float:
            return measure_latency(m, shape, backend="onnxruntime", repeats=20, min_time_s=0.2).median_ms

        return self._search_measured(latency, budget.value, "latency (ms)")


def prune(model: nn.Module, example_inputs: Any, *, importance: str = "l1", ratio: float | None = None,
          macs_target: float | None = None, params_target: float | None = None, latency_target: float | None = None,
          ignored_layers: Sequence[str | nn.Module] = (), allocation: str = "latency",
          round_to: int | str | None = None, data: Any = None, loss_fn: Callable[..., Any] | None = None,
          seed: int = 0, dims: Sequence[str] | None = None, ratios: Mapping[str, float] | None = None,
          token_method: str = "select", token_layers: Sequence[int] | None = None,
          max_group_ratio: float = 0.9, kernels: str | None = "fp32") -> nn.Module:
    """Structurally prune a copy of `model` to one budget and return it (the original is not changed).

    Transformers: `dims=("heads", "neurons", "tokens")` prunes those dimensions by the same ratio (met by bisection
    under a budget); `ratios={"heads": 0.3, "neurons": 0.4, "tokens": 0.2}` removes those shares (the ratio search
    `slimkit.search_prune_ratios` finds them under a MACs budget). Tokens need labelled `data` for
    `token_method="select"` (fixed positions by HSIC); "drop" (EViT) and "merge" (ToMe) need none.

    The result is an ordinary, smaller `nn.Module`; `slimkit.prune.save` writes it with its pruning record.
    By default (`allocation="latency"`) each group is cut in proportion to the time per MAC it gives back on this
    CPU and keeps whole vector blocks of channels (`slimkit.profile.channel_multiple`), so latency falls about as
    fast as MACs. `allocation="uniform"` is slimkit's earlier default (the same share of every group, unrounded);
    "global" ranks channels across groups by importance, "global_latency" by importance per estimated nanosecond.
    A `ratio` is the share of channels removed (with allocation "latency", on average over channels: groups that
    give back more time per MAC lose more). `round_to` overrides the rounding (an int, "auto", or 1 for none); when
    whole blocks cannot meet the budget
    (a small model of one-block groups), the default prunes unrounded, with a warning. `kernels="int8"`, for a
    model that will be quantized, keeps the channel counts onnxruntime's fast INT8 convolutions take (multiples of
    16 through depthwise convolutions, of 8 and at least 16 out of dense ones, of 4 into them) and allocates by
    INT8 costs; `kernels="auto"` keeps those counts only where they leave a group room to shrink (a 16-channel
    group out of a dense convolution keeps fp32's counts and takes the generic INT8 path).
    """
    check_model(model)
    inputs = as_example_inputs(example_inputs)
    names = {id(m): n for n, m in model.named_modules()}
    ignored = tuple(names.get(id(x), "<not in model>") if isinstance(x, nn.Module) else str(x) for x in ignored_layers)
    cfg = PruneConfig(importance=importance, ratio=ratio, macs_target=macs_target, params_target=params_target,
                      latency_target=latency_target, ignored_layers=ignored, allocation=allocation,
                      round_to=round_to, seed=seed, dims=dims if dims is None or isinstance(dims, str) else tuple(dims),
                      ratios=dict(ratios) if isinstance(ratios, Mapping) else ratios, token_method=token_method,
                      token_layers=tuple(token_layers) if token_layers else None, max_group_ratio=max_group_ratio,
                      kernels=kernels)
    return run_or_unrounded(Pruner(model, inputs, cfg, data=data, loss_fn=loss_fn))


def run_or_unrounded(pruner: Pruner) -> nn.Module:
    """`pruner.run()`; when the default rounding (whole vector blocks, and INT8 kernel counts) cannot meet the budget
    (a small model of one-block groups), the same budget unrounded, with a warning. A rounding the user chose, a
    non-latency allocation and transformer dims / ratios are not relaxed: their BudgetError stands. Sets
    `pruner.config` to the unrounded config when it falls back."""
    cfg = pruner.config
    try:
        return pruner.run()
    except BudgetError:
        chosen = cfg.round_to is not None or cfg.allocation not in _BY_LATENCY
        if chosen or cfg.dims is not None or cfg.ratios is not None:
            raise
    warnings.warn(f"slimkit: the budget cannot be met in whole blocks of {cfg.channel_round} channels (a group of "
                  "one block cannot shrink)" + (" and INT8 kernel counts" if cfg.kernels in INT8_KERNELS else "") +
                  "; pruning without rounding, so latency may fall more slowly than MACs", stacklevel=3)
    pruner.config = replace(cfg, round_to=1, kernels="fp32")
    return pruner.run()
