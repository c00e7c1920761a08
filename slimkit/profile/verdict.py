"""Say plainly whether a pruned model got faster, by how much against its MACs reduction, and if not, why.

`speed_verdict` is pure: it reads the measured speed-ups and the CPU cost breakdowns of the model before and after
(`slimkit.profile.cpu_cost.cost_breakdown`) and names the causes the breakdowns show: channel counts in partial
vector blocks, per-operator overhead, memory-bound layers, unfused elementwise passes, or, when the cost model
expects a speed-up the measurement did not show, a disturbed measurement.
"""

from __future__ import annotations

__all__ = ["speed_verdict"]

_SLOW = 0.7  # speed-up / MACs reduction below which latency "fell much slower than MACs"


def _total(b: dict[str, float]) -> float:
    return b["compute"] + b["memory"] + b["overhead"] + b["elementwise"]


def _causes(base: dict[str, float], pruned: dict[str, float], block: int, measured: float) -> list[str]:
    total = _total(pruned)
    out = []
    if pruned["partial_blocks"]:
        out.append(f"{pruned['partial_blocks']:.0f} of {pruned['layers']:.0f} layers keep channel counts that are not "
                   f"multiples of {block} (this CPU's vector block): the kernels pad them back to whole blocks, so "
                   "cutting them saves little time; the default --allocation latency (or --round-to auto) keeps "
                   "whole blocks")
    if pruned["overhead"] > 0.3 * total:
        out.append(f"the fixed cost of its {pruned['layers']:.0f} layers and other operators is "
                   f"{pruned['overhead'] / total:.0%} of its estimated time, and pruning channels removes no "
                   "operator: the model is too small for fewer MACs to show (a shallower model would)")
    if pruned["memory"] > 0.3 * total:
        out.append(f"{pruned['memory'] / total:.0%} of its estimated time is in memory-bound layers (depthwise "
                   "convolutions at high resolution): their time follows the activations they stream, which "
                   "shrink less than the MACs")
    if pruned["elementwise"] > 0.2 * total:
        out.append(f"unfused activations and norms (SiLU, GELU, LayerNorm) are {pruned['elementwise'] / total:.0%} "
                   "of its estimated time and cost no MACs")
    expected = _total(base) / total if total else 1.0
    if not out or expected > 1.25 * measured:
        out.append(f"the CPU cost model expects x{expected:.2f} here: the measurement was probably disturbed by other "
                   "load on this machine; measure again on an idle machine (`slimkit profile`)")
    return out


def speed_verdict(macs_reduction: float, speedups: dict[str, float], base: dict[str, float],
                  pruned: dict[str, float], block: int) -> list[str]:
    """Readable lines: the measured speed-up beside the MACs reduction per setting (`speedups`: name -> base time
    over pruned time), then, where the model did not get faster or got faster much more slowly than its MACs fell,
    why (from the cost breakdowns of the model before and after, see the module docstring)."""
    lines = [f"{name}: x{s:.2f} faster for x{macs_reduction:.2f} fewer MACs ({s / macs_reduction:.2f} of the MACs "
             "reduction)" if s >= 1.0 else f"{name}: NOT faster (x{s:.2f}, {1 / s - 1:.0%} slower) for "
             f"x{macs_reduction:.2f} fewer MACs" for name, s in speedups.items()]
    worst = min(speedups.values(), default=1.0)
    if worst < 1.0:
        lines.append("The pruned model did not get faster: " + "; ".join(_causes(base, pruned, block, worst)) + ".")
    elif worst < _SLOW * macs_reduction:
        lines.append("Latency fell much more slowly than MACs: " + "; ".join(_causes(base, pruned, block, worst))
                     + ".")
    return lines
