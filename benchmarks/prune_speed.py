"""How long one prune call takes: slimkit (this tree, and optionally an older revision) vs Torch-Pruning.

Per model (random init, 64x64), each in a fresh child process, the versions interleaved model by model so they see
the same machine load:
- `slimkit.prune(model, x, macs_target=0.5)`: the budget call (trace, score, search, build, check, count);
- `slimkit.prune(model, x, ratio=r)` and Torch-Pruning's `MetaPruner(...).step()` at the same r = 1 - sqrt(0.5):
  equal work (one plan, one pruned copy each);
- with `--compare-rev REV`, the budget call of slimkit at git revision REV (extracted to a temporary folder).
Each call is timed `--repeats` times, the calls interleaved, after one warm-up forward pass; medians are reported.

    python benchmarks/prune_speed.py --compare-rev 4bdbe7d
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
MODELS = ["timm:resnet50", "timm:densenet201", "timm:efficientnetv2_rw_m", "timm:mobilenetv3_large_100",
          "timm:convnext_tiny", "timm:regnety_016", "timm:skresnet18", "timm:res2next50", "timm:inception_next_atto",
          "timm:nf_regnet_b0", "torchvision:efficientnet_v2_m", "torchvision:densenet201"]
RATIO = 1 - math.sqrt(0.5)


def _one(spec: str, repeats: int, what: list[str]) -> dict:
    import copy
    import warnings

    import torch

    import slimkit

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = slimkit.create_model(spec, num_classes=10).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        model(x)

    def tp_step():
        import torch_pruning as tp

        m = copy.deepcopy(model)
        head = m.get_classifier() if hasattr(m, "get_classifier") else None
        tp.pruner.MetaPruner(m, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=RATIO,
                             ignored_layers=[head] if isinstance(head, torch.nn.Module) else []).step()

    calls = {"slimkit_budget": lambda: slimkit.prune(model, x, macs_target=0.5),
             "slimkit_ratio": lambda: slimkit.prune(model, x, ratio=RATIO), "torch_pruning_ratio": tp_step}
    out: dict = {}
    times: dict[str, list[float]] = {name: [] for name in what}
    for _ in range(repeats):  # interleaved (A B C A B C ...): the calls see the same machine load
        for name in what:
            if f"{name}_error" in out:
                continue
            t0 = time.perf_counter()
            try:
                calls[name]()
            except Exception as e:  # noqa: BLE001 - recorded, the benchmark goes on
                out[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
                continue
            times[name].append(time.perf_counter() - t0)
    out.update({name: statistics.median(v) for name, v in times.items() if v})
    return out


def _child(spec: str, repeats: int, what: list[str], path: str | None) -> dict:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if path:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, __file__, "--one", spec, "--repeats", str(repeats), "--what", *what]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=path or None, timeout=3600)
    line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith("{")), None)
    return json.loads(line) if line else {"error": p.stderr[-400:]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=MODELS)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--compare-rev", default=None, help="also time the budget call of slimkit at this git revision")
    ap.add_argument("--results", default="prune_speed")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--what", nargs="+", default=["slimkit_budget", "slimkit_ratio", "torch_pruning_ratio"])
    args = ap.parse_args()
    if args.one:
        print(json.dumps(_one(args.one, args.repeats, args.what)), flush=True)
        return
    old_dir = None
    if args.compare_rev:
        old_dir = tempfile.mkdtemp(prefix="slimkit_rev_")
        archive = subprocess.run(["git", "-C", str(HERE.parent), "archive", args.compare_rev, "slimkit"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", old_dir], input=archive, check=True)
    rows = []
    for spec in args.models:
        row = {"model": spec, **_child(spec, args.repeats, args.what, str(HERE.parent))}
        if old_dir:
            old = _child(spec, args.repeats, ["slimkit_budget"], old_dir)
            row["slimkit_budget_before"] = old.get("slimkit_budget", old.get("slimkit_budget_error", old.get("error")))
        rows.append(row)
        print({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    summary = {}
    for key in ("slimkit_budget", "slimkit_ratio", "torch_pruning_ratio", "slimkit_budget_before"):
        vals = [r[key] for r in rows if isinstance(r.get(key), float)]
        if vals:
            summary[f"median_{key}_s"] = round(statistics.median(vals), 3)
    pairs = [(r["slimkit_ratio"], r["torch_pruning_ratio"]) for r in rows
             if isinstance(r.get("slimkit_ratio"), float) and isinstance(r.get("torch_pruning_ratio"), float)]
    if pairs:
        summary["median_slimkit_ratio_over_tp"] = round(statistics.median(a / b for a, b in pairs), 2)
    pairs = [(r["slimkit_budget"], r["torch_pruning_ratio"]) for r in rows
             if isinstance(r.get("slimkit_budget"), float) and isinstance(r.get("torch_pruning_ratio"), float)]
    if pairs:
        summary["median_slimkit_budget_over_tp"] = round(statistics.median(a / b for a, b in pairs), 2)
    pairs = [(r["slimkit_budget_before"], r["slimkit_budget"]) for r in rows
             if isinstance(r.get("slimkit_budget_before"), float) and isinstance(r.get("slimkit_budget"), float)]
    if pairs:
        summary["median_speedup_budget_call_vs_before"] = round(statistics.median(a / b for a, b in pairs), 2)
    print(json.dumps(summary, indent=1))
    out = HERE / "results" / f"{args.results}.json"
    out.write_text(json.dumps({"args": vars(args), "summary": summary, "rows": rows}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
