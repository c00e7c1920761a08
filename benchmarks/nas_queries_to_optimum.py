"""Queries to the optimum on NAS-Bench-201: WeakNAS vs regularized evolution, local search, BO (GP-EI) and random.

Every strategy searches the real benchmark tables (no training) until it evaluates the architecture with the best
value of the search column, or runs out of its cap. Reported per column: runs that found the optimum, mean / std /
median queries over those runs, and the reported test accuracy of the best-so-far architecture after 100 and 300
queries. Columns: CIFAR-10 (200-epoch validation, test reported), CIFAR-100 and ImageNet16-120 (12-epoch
validation), and CIFAR-10 under a Pixel 3 latency constraint.

    OMP_NUM_THREADS=1 python benchmarks/nas_queries_to_optimum.py --seeds 100 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from slimkit.nas import NB201Benchmark, parse_constraints, search
from slimkit.nas.constraints import satisfies
from slimkit.report import markdown_table, plot_bars

HERE = Path(__file__).parent
DATA = HERE.parent.parent / "shared" / "data" / "nasbench201"

COLUMNS = {  # name: (tables, search metric, reported metric, constraints); the CIFAR-10 table carries the features
    "cifar10": (["nb201_cifar10_200ep.csv"], "cifar10valid_xvalid_200ep", "cifar10_test_200ep", ()),
    "cifar100": (["nb201_all3_12ep.csv", "nb201_cifar10_200ep.csv"], "cifar100-val", "cifar100-test", ()),
    "imagenet16": (["nb201_all3_12ep.csv", "nb201_cifar10_200ep.csv"], "imagenet-val", "imagenet-test", ()),
    "cifar10_pixel3": (["nb201_cifar10_200ep.csv", "nb201_latency_ms.csv"], "cifar10valid_xvalid_200ep",
                       "cifar10_test_200ep", ("latency_ms[pixel3] <= 10",)),
}
CAPS = {"random": 15625, "bo": 300}  # BO refits a GP per batch: capped to keep the run in minutes
OPTIONS = {"bo": {"batch": 5, "pool": 3000}}
# named variants: (strategy, options). Training-free features: the NASWOT score (computed on CIFAR-10 images at
# initialisation, the only one the tables have, so also used on the CIFAR-100 / ImageNet16-120 columns) and params;
# _warm also draws the initial cells (evolution: the first population) from the 500 best by those features instead
# of uniformly, and WeakNAS then takes the predicted best (select="greedy") instead of the greedy/sampled mix.
ZC = ["naswot_score_v1", "params_M"]
VARIANTS = {"weaknas_zc": ("weaknas", {"features": ZC}),
            "weaknas_zc_warm": ("weaknas", {"features": ZC, "warm_start": 500, "select": "greedy"}),
            "evolution_zc_warm": ("evolution", {"features": ZC, "warm_start": 500}),
            # the constrained column also has the constraint's own cost as a feature (only that column has it)
            "weaknas_zc_warm_lat": ("weaknas", {"features": ZC + ["pixel3"], "warm_start": 500, "select": "greedy"}),
            "evolution_zc_warm_lat": ("evolution", {"features": ZC + ["pixel3"], "warm_start": 500})}
# _b2: refit after every 2 queries instead of 10 (evolution is sequential too: one child per query)
VARIANTS.update({f"{k}_b2": (n, {**o, "batch": 2}) for k, (n, o) in list(VARIANTS.items()) if n == "weaknas"})

_BENCH: dict[str, NB201Benchmark] = {}


def _bench(column: str) -> NB201Benchmark:
    if column not in _BENCH:
        tables, metric, _, _ = COLUMNS[column]
        _BENCH[column] = NB201Benchmark.from_csv([DATA / t for t in tables], metric=metric)
    return _BENCH[column]


def _optimum(column: str) -> list[str]:
    bench, cons = _bench(column), parse_constraints(COLUMNS[column][3])
    mask = np.array([satisfies(bench.costs(c), cons) for c in bench.architectures()]) if cons else None
    return bench.optimum(feasible=mask)[1]


def one_run(job: tuple[str, str, int, int]) -> dict:
    column, strategy, seed, cap = job
    bench, (_, _, report, cons) = _bench(column), COLUMNS[column]
    target = set(_optimum(column))
    t0 = time.perf_counter()
    name, options = VARIANTS.get(strategy, (strategy, OPTIONS.get(strategy, {})))
    res = search(bench, name, queries=cap, seed=seed, constraints=cons, stop=lambda t: t.key in target, **options)
    best_report, best, curve = [], -np.inf, []
    for t in res.history:
        if t.ok and t.feasible and t.score > best:
            best, best_report = t.score, t.metrics[report]
        curve.append(best_report)
    at = {n: (curve[min(n, len(curve)) - 1] if curve else None) for n in (100, 300)}
    return {"column": column, "strategy": strategy, "seed": seed, "queries": res.queries_to(target),
            "test_at_100": at[100], "test_at_300": at[300], "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100)
    ap.add_argument("--bo-seeds", type=int, default=10)
    ap.add_argument("--cap", type=int, default=1000, help="query cap for the guided strategies")
    ap.add_argument("--columns", nargs="+", default=list(COLUMNS))
    ap.add_argument("--strategies", nargs="+", default=["weaknas", "evolution", "local", "bo", "random"],
                    help=f"strategies, or the named variants {sorted(VARIANTS)}")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--results", default="nas_queries_to_optimum",
                    help="name of the JSON / PNG written under benchmarks/results")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    jobs = [(c, s, seed, CAPS.get(s, args.cap)) for c in args.columns for s in args.strategies
            for seed in range(args.bo_seeds if s == "bo" else args.seeds)]
    t0 = time.time()
    with ProcessPoolExecutor(args.workers) as pool:
        runs = list(pool.map(one_run, jobs, chunksize=4))
    rows = []
    for c in args.columns:
        for s in args.strategies:
            rs = [r for r in runs if r["column"] == c and r["strategy"] == s]
            q = np.array([r["queries"] for r in rs if r["queries"] is not None], float)
            rows.append({"column": c, "strategy": s, "found": f"{len(q)}/{len(rs)} (cap {CAPS.get(s, args.cap)})",
                         "queries_mean": round(q.mean(), 1) if len(q) else None,
                         "queries_std": round(q.std(), 1) if len(q) else None,
                         "queries_median": float(np.median(q)) if len(q) else None,
                         "test_at_100": round(float(np.mean([r["test_at_100"] for r in rs])), 2),
                         "test_at_300": round(float(np.mean([r["test_at_300"] for r in rs])), 2)})
    print(markdown_table(rows))
    print(f"\n{len(runs)} searches in {time.time() - t0:.0f} s")
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / f"{args.results}.json").write_text(json.dumps({"rows": rows, "runs": runs}, indent=1))
    series = {s: [next((r["queries_mean"] or 0.0 for r in rows if r["column"] == c and r["strategy"] == s), 0.0)
                  for c in args.columns] for s in args.strategies if s != "random"}
    plot_bars(args.columns, series, out / f"{args.results}.png",
              title="mean queries to the optimum (lower is better)", ylabel="queries")


if __name__ == "__main__":
    main()
