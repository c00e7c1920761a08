"""Coverage sweep: one model per timm / torchvision family, pruned to half its MACs by slimkit and Torch-Pruning.

Run through `python benchmarks/prune_vs_torch_pruning.py --coverage` (or this file directly). Every model is built
with random init at 64x64 (a model that cannot run at 64 is rebuilt for 64 with `img_size` / `image_size`, or else
run at its own input size; the size used is recorded). A worker process checks the models in turn (a crash or a
hang costs one row: the worker is restarted for the rest), and each finished row is appended to
`benchmarks/results/prune_coverage.jsonl` at once, so the sweep is resumable: rerun the same command and finished
models are skipped (`--chunk 2/4` runs a quarter of the list).

Per model and library:
- slimkit: `slimkit.prune(model, x, macs_target=0.5)`; Torch-Pruning: one `MetaPruner.step()` at the channel ratio
  1 - sqrt(0.5) (the ratio that halves a plain conv net's MACs; Torch-Pruning has no MACs target of its own).
- "fully right": the pruned model runs, keeps the output shape, has >= 1.25x fewer MACs (slimkit's counter on both
  sides), and its ONNX export agrees with PyTorch in onnxruntime to 1e-4 of the output scale (`export_onnx`).
  A model whose *unpruned* version does not export is "right, ONNX n/a" (the exporter's limit, not pruning's).
- "refused": a `SlimkitError` raised before anything was returned (the message is kept).
- The families are those of at most `--max-params` parameters (15M: 117 of the 200), smallest first.
- Each call's time is recorded; `benchmarks/prune_speed.py` times the calls at equal work (repeated, interleaved).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"
MODELS_FILE = RESULTS / "prune_coverage_models.json"
TP_RATIO = 1 - math.sqrt(0.5)  # ~0.293: a uniform channel cut that halves conv MACs
LIBS = ("slimkit", "slimkit_ratio", "torch_pruning")
FULL = 1.25  # MACs reduction a half-MACs target must at least reach to count as fully right

# timm name prefixes that are training/variant tags, not families
_TAGS = r"^(tf_|tv_|gluon_|legacy_|ssl_|swsl_|ig_|fb_)"
_SIZE_WORDS = ["atto", "femto", "pico", "nano", "xxxs", "xxs", "tiny", "ti", "xs", "t", "mini", "lite", "s0", "s1",
               "b0", "a0", "m0", "small", "s", "m1", "b1", "light", "050", "035", "075", "100", "base", "b"]
TORCHVISION_FAMILIES = {
    "alexnet": r"alexnet", "convnext": r"convnext_", "densenet": r"densenet", "efficientnet": r"efficientnet_b",
    "efficientnet_v2": r"efficientnet_v2", "googlenet": r"googlenet", "inception_v3": r"inception_v3",
    "maxvit": r"maxvit", "mnasnet": r"mnasnet", "mobilenet_v2": r"mobilenet_v2", "mobilenet_v3": r"mobilenet_v3",
    "regnet_x": r"regnet_x", "regnet_y": r"regnet_y", "resnet": r"resnet\d", "resnext": r"resnext",
    "shufflenet_v2": r"shufflenet", "squeezenet": r"squeezenet", "swin": r"swin_[tsb]$", "swin_v2": r"swin_v2",
    "vgg": r"vgg\d+$", "vit": r"vit_", "wide_resnet": r"wide_resnet",
}


def _size_key(name: str) -> tuple:
    words = [_SIZE_WORDS.index(t) for t in name.split("_") if t in _SIZE_WORDS]
    nums = [int(n) for n in re.findall(r"\d+", name)]
    return (min(words or [len(_SIZE_WORDS)]), any(r in name for r in ("384", "448", "512")), sum(nums), len(name))


def _param_count(build) -> int:
    import torch

    with torch.device("meta"):
        model = build()
    return sum(p.numel() for p in model.parameters())


def families(max_params: float) -> dict:
    """{family: spec} — timm models grouped by (module, name stem), torchvision classifiers by architecture; the
    smallest of each family's three most small-sounding names (parameters counted on the meta device)."""
    import timm
    import torchvision
    from timm.models import _registry

    out, skipped = {}, {}
    groups: dict[str, list[str]] = {}
    for n in timm.list_models():
        stem = re.match(r"[a-z]+", re.sub(_TAGS, "", n)).group(0)
        if stem != "test":  # timm's own unit-test models
            groups.setdefault(f"timm:{_registry._model_to_module[n]}/{stem}", []).append(n)
    tv_all = torchvision.models.list_models(module=torchvision.models)
    for fam, pat in TORCHVISION_FAMILIES.items():
        groups[f"torchvision:{fam}"] = [n for n in tv_all if re.match(pat, n)]
    for fam, names in sorted(groups.items()):
        lib = fam.split(":")[0]
        best = None
        for n in sorted(names, key=_size_key)[:3]:
            def build(n=n, lib=lib):
                if lib == "timm":
                    return timm.create_model(n, pretrained=False, num_classes=10)
                return torchvision.models.get_model(n, weights=None, num_classes=10)
            try:
                p = _param_count(build)
            except Exception:  # noqa: BLE001 - a model that cannot even be built is not a candidate
                continue
            if best is None or p < best[1]:
                best = (f"{lib}:{n}", p)
        if best is None:
            continue
        (out if best[1] <= max_params else skipped)[fam] = best[0]
        print(f"{fam}: {best[0]} ({best[1] / 1e6:.1f}M params)", flush=True)
    return {"models": out, "skipped_over_max_params": skipped, "max_params": max_params}


def model_list(max_params: float) -> dict:
    """The family list (built once, then read from the results folder), cut to models of at most `max_params`
    parameters and ordered smallest first (a sweep cut short has the most families)."""
    if MODELS_FILE.is_file():
        data = json.loads(MODELS_FILE.read_text())
    else:
        data = families(100e6)
        MODELS_FILE.write_text(json.dumps(data, indent=1))
    params = data.get("params", {})
    fams = sorted(data["models"].items(), key=lambda fs: (params.get(fs[1], 0), fs[0]))
    data["models"] = {f: s for f, s in fams if params.get(s, 0) <= max_params}
    return data


# ---------------------------------------------------------------- one model (runs in a child process)
def _build(spec: str):
    """(model, x, size, kwargs): 64x64 if the model runs there, else rebuilt for 64, else its own input size."""
    import torch

    import slimkit

    lib, name = spec.split(":", 1)
    size_kw = "img_size" if lib == "timm" else "image_size"
    tries = [(64, {}), (64, {size_kw: 64})]
    if lib == "timm":
        import timm
        native = timm.get_pretrained_cfg(name)
        tries.append((int(native.input_size[-1]) if native else 224, {}))
    else:
        tries.append((224, {}))
    err = None
    for size, kw in tries:
        try:
            torch.manual_seed(0)
            model = slimkit.create_model(spec, num_classes=10, **kw).eval()
            x = torch.randn(1, 3, size, size)
            with torch.no_grad():
                model(x)
            return model, x, size, kw
        except Exception as e:  # noqa: BLE001 - try the next size
            err = e
    raise RuntimeError(f"cannot run {spec} at 64 or its own size: {type(err).__name__}: {err}")


def _tp_prune(model, x, ratio):
    import torch_pruning as tp

    head = model.get_classifier() if hasattr(model, "get_classifier") else None
    pruner = tp.pruner.MetaPruner(model, x, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=ratio,
                                  ignored_layers=[head] if isinstance(head, __import__("torch").nn.Module) else [])
    pruner.step()
    return model


def _evaluate(pruned, model, x, base_macs, ref_shape, onnx_ok_unpruned) -> dict:
    """Checks of a returned model; `onnx_ok_unpruned()` is asked only when the pruned export fails."""
    import torch

    from slimkit.export import export_onnx
    from slimkit.profile import count_macs

    row: dict = {}
    try:
        with torch.no_grad():
            out = pruned.eval()(x)
        row["runs"] = True
        row["shape_ok"] = tuple(out.shape) == ref_shape
    except Exception as e:  # noqa: BLE001
        row.update(runs=False, shape_ok=False, error=f"{type(e).__name__}: {str(e)[:300]}")
        row["status"] = "broken"
        return row
    try:
        row["macs_red"] = base_macs / max(1, count_macs(pruned, x))
    except Exception as e:  # noqa: BLE001
        row["macs_red"] = None
        row["error"] = f"counting MACs: {type(e).__name__}: {str(e)[:300]}"
    with tempfile.TemporaryDirectory() as d:
        try:
            res = export_onnx(pruned, Path(d) / "p.onnx", x, dynamic_batch=False)
            row["onnx"] = "ok"
            row["onnx_diff"] = res.max_abs_diff
        except Exception as e:  # noqa: BLE001
            row["onnx"] = "n/a" if not onnx_ok_unpruned() else "fail"
            row["onnx_error"] = f"{type(e).__name__}: {str(e)[:300]}"
    if not row["shape_ok"]:
        row["status"] = "broken"
    elif row["macs_red"] is None or row["macs_red"] < FULL:
        row["status"] = "low_reduction"
    else:
        row["status"] = {"ok": "fully_right", "n/a": "right_onnx_na", "fail": "onnx_mismatch"}[row["onnx"]]
    return row


def check_one(spec: str, threads: int, libs: tuple[str, ...] = LIBS, partial=None, carried: dict | None = None) -> dict:
    """The row of one model; `partial(rec)` is called after each library (a later hang keeps the earlier ones).
    A library's row in `carried` (an earlier sweep's record of this model) is kept instead of being rerun."""
    import copy
    import functools

    import torch

    from slimkit.errors import SlimkitError
    from slimkit.export import export_onnx
    from slimkit.profile import count_macs, count_params

    warnings.simplefilter("ignore")
    torch.set_num_threads(threads)
    rec: dict = {"spec": spec}
    model, x, size, kw = _build(spec)
    rec.update(size=size, build_kwargs=kw, params=count_params(model))
    with torch.no_grad():
        ref_shape = tuple(model(x).shape)
    base_macs = count_macs(model, x)
    rec["macs"] = base_macs

    @functools.cache
    def onnx_ok_unpruned() -> bool:
        with tempfile.TemporaryDirectory() as d:
            try:
                export_onnx(model, Path(d) / "u.onnx", x, dynamic_batch=False)
                return True
            except Exception:  # noqa: BLE001
                return False

    import slimkit

    runs = {
        "slimkit": lambda: slimkit.prune(model, x, macs_target=0.5),
        "slimkit_ratio": lambda: slimkit.prune(model, x, ratio=TP_RATIO),
        "torch_pruning": lambda: _tp_prune(copy.deepcopy(model), x, TP_RATIO),
    }
    for lib, make in runs.items():
        if lib not in libs:
            continue
        if lib in (carried or {}):
            rec[lib] = {**carried[lib], "carried": True}
            continue
        row: dict = {}
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                pruned = make()
            row["time_s"] = round(time.perf_counter() - t0, 3)
            notes = [str(w.message)[:300] for w in caught if "slimkit" in str(w.message).lower()
                     or "kept whole" in str(w.message)]
            if notes:
                row["warnings"] = notes
            record = getattr(pruned, "slimkit_pruning", None) or {}
            if record.get("kept_whole"):
                row["kept_whole"] = len(record["kept_whole"])
            if lib == "slimkit_ratio":  # timing at equal work only (coverage is judged at the MACs target)
                row["status"] = "returned"
            else:
                row.update(_evaluate(pruned, model, x, base_macs, ref_shape, onnx_ok_unpruned))
        except SlimkitError as e:
            row.update(status="refused", time_s=round(time.perf_counter() - t0, 3),
                       error=f"{type(e).__name__}: {str(e)[:400]}")
        except Exception as e:  # noqa: BLE001 - a benchmark records every failure
            row.update(status="crashed", time_s=round(time.perf_counter() - t0, 3),
                       error=f"{type(e).__name__}: {str(e)[:400]}", where=traceback.format_exc()[-600:])
        rec[lib] = row
        if partial is not None:
            partial(rec)
    return rec


# ---------------------------------------------------------------- the sweep
def _worker(specs: list[str], args) -> subprocess.Popen:
    """A child process that checks `specs` in turn, printing one JSON line per model (imports paid once)."""
    cmd = [sys.executable, __file__, "--one", *specs, "--threads", str(args.threads), "--libs", *args.libs]
    if args.carry:
        cmd += ["--carry", *args.carry]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=tempfile.TemporaryFile("w+"), text=True,
                            env={**os.environ, "PYTHONWARNINGS": "ignore"})  # (stderr to a file: never blocks)


def _next_record(p: subprocess.Popen, timeout: float) -> tuple[dict | None, bool]:
    """(the child's record of its current model, complete?). A record printed after each library stands if the
    child then exits or goes silent for `timeout` seconds (it is killed); (None, False) when it printed nothing."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    end, last = time.monotonic() + timeout, None
    try:
        while (left := end - time.monotonic()) > 0:
            if not sel.select(left):
                break
            line = p.stdout.readline()
            if not line:
                return last, False
            if line.startswith("{"):
                rec = json.loads(line)
                if not rec.pop("partial", False):
                    return rec, True
                last, end = rec, time.monotonic() + timeout  # the next library gets its own time
    finally:
        sel.close()
    p.kill()
    return last, False


def _tail(f) -> str:
    f.seek(0)
    return f.read()[-800:]


def run_sweep(args) -> list[dict]:
    data = model_list(args.max_params)
    specs = list(data["models"].items())
    if args.models:
        specs = [(f, s) for f, s in specs if s in args.models or f in args.models]
    if args.chunk:
        k, n = (int(v) for v in args.chunk.split("/"))
        specs = specs[k - 1::n]
    out = RESULTS / f"{args.coverage_results}.jsonl"
    done = {}
    if out.is_file():
        for line in out.read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[r["spec"]] = r
    todo = [(f, s) for f, s in specs if s not in done or args.redo]
    proc = None
    for i, (fam, spec) in enumerate(todo):
        if proc is None or proc.poll() is not None:  # (re)start a worker for the rest of the list
            proc = _worker([s for _, s in todo[i:]], args)
        t0 = time.perf_counter()
        rec, complete = _next_record(proc, args.timeout)
        if not complete:
            died = proc.poll() is not None and proc.returncode not in (0, -9)
            proc.kill()
            proc.wait()
            fail = {"status": "died", "error": _tail(proc.stderr)} if died else {"status": "timeout",
                                                                                "timeout_s": args.timeout}
            proc = None
            rec = rec or {"spec": spec}
            for lib in args.libs:  # the library that was running (and any after it) gets the failure
                rec.setdefault(lib, dict(fail))
        rec["family"] = fam
        rec["wall_s"] = round(time.perf_counter() - t0, 1)
        with out.open("a") as f:  # one line per finished model: a killed sweep loses at most the running model
            f.write(json.dumps(rec, default=str) + "\n")
            f.flush()
            os.fsync(f.fileno())
        done[spec] = rec
        s, t = rec.get("slimkit", {}), rec.get("torch_pruning", {})
        print(f"[{i + 1}/{len(todo)}] {spec}: slimkit {s.get('status', rec.get('status'))} "
              f"{_fmt(s.get('macs_red'))}x {s.get('time_s')}s | tp {t.get('status')} {_fmt(t.get('macs_red'))}x "
              f"{t.get('time_s')}s  ({rec['wall_s']}s)", flush=True)
    if proc is not None:
        proc.wait()
    return [done[s] for _, s in data["models"].items() if s in done]


def _fmt(v) -> str:
    return f"{v:.2f}" if isinstance(v, (int, float)) else "-"


def summarize(rows: list[dict]) -> dict:
    import statistics

    def status(r, lib):
        return r.get(lib, {}).get("status", r.get("status", "died"))

    out: dict = {"models": len(rows)}
    for lib in ("slimkit", "torch_pruning"):
        counts: dict[str, int] = {}
        for r in rows:
            counts[status(r, lib)] = counts.get(status(r, lib), 0) + 1
        out[lib] = counts
    times = {lib: [r[lib]["time_s"] for r in rows if isinstance(r.get(lib, {}).get("time_s"), (int, float))]
             for lib in ("slimkit", "slimkit_ratio", "torch_pruning")}
    out["median_time_s"] = {lib: round(statistics.median(v), 3) for lib, v in times.items() if v}
    both = [(r["slimkit"]["time_s"], r["slimkit_ratio"]["time_s"], r["torch_pruning"]["time_s"]) for r in rows
            if all(isinstance(r.get(k, {}).get("time_s"), (int, float)) for k in ("slimkit", "slimkit_ratio",
                                                                                  "torch_pruning"))]
    if both:
        out["median_ratio_budget_call_to_tp_step"] = round(statistics.median(a / c for a, _, c in both), 2)
        out["median_ratio_same_ratio_to_tp_step"] = round(statistics.median(b / c for _, b, c in both), 2)
    return out


def table(rows: list[dict]) -> list[dict]:
    def cell(r, lib):
        d = r.get(lib, {})
        st = d.get("status", r.get("status", "died"))
        return st, (round(d["macs_red"], 2) if isinstance(d.get("macs_red"), (int, float)) else None)

    out = []
    for r in rows:
        s, sr = cell(r, "slimkit")
        t, tr = cell(r, "torch_pruning")
        out.append({"model": r["spec"], "size": r.get("size"), "slimkit": s, "slimkit MACs red.": sr,
                    "slimkit s": r.get("slimkit", {}).get("time_s"), "torch-pruning": t, "torch-pruning MACs red.": tr,
                    "torch-pruning s": r.get("torch_pruning", {}).get("time_s")})
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_args(ap)
    ap.add_argument("--one", nargs="+", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        carried = _carried(args.carry)
        for spec in args.one:
            try:
                rec = check_one(spec, args.threads, tuple(args.libs), partial=lambda r: print(
                    json.dumps({**r, "partial": True}, default=str), flush=True), carried=carried.get(spec))
            except Exception as e:  # noqa: BLE001 - the model could not even be built: recorded, the next goes on
                rec = {"spec": spec, "status": "unbuildable", "error": f"{type(e).__name__}: {str(e)[:400]}"}
            print(json.dumps(rec, default=str), flush=True)
        return
    coverage(args)


def _carried(carry: list[str] | None) -> dict:
    """{spec: {lib: row}} from earlier sweeps' .jsonl files (library, results name): the libraries whose code did
    not change are not rerun (Torch-Pruning's rows do not depend on slimkit's default)."""
    out: dict = {}
    for item in carry or []:
        lib, name = item.split("=", 1)
        path = RESULTS / f"{name}.jsonl"
        for line in path.read_text().splitlines() if path.is_file() else []:
            r = json.loads(line) if line.strip() else {}
            if r.get(lib, {}).get("status") not in (None, "died"):
                out.setdefault(r["spec"], {})[lib] = r[lib]
    return out


def add_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--coverage-results", default="prune_coverage", help="name of the .jsonl / .json under results/")
    ap.add_argument("--chunk", default=None, help="k/n: run every n-th model starting at the k-th")
    ap.add_argument("--models", nargs="+", default=None, help="only these specs or families")
    ap.add_argument("--redo", action="store_true", help="rerun models already in the results file")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per model and library")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per model (the machine is shared)")
    ap.add_argument("--libs", nargs="+", default=["slimkit", "torch_pruning"], choices=LIBS,
                    help="slimkit (macs_target=0.5), torch_pruning, slimkit_ratio (timing at Torch-Pruning's ratio; "
                         "benchmarks/prune_speed.py times the calls properly)")
    ap.add_argument("--carry", nargs="+", default=None, metavar="LIB=RESULTS",
                    help="keep LIB's rows from results/RESULTS.jsonl instead of rerunning them "
                         "(e.g. torch_pruning=prune_coverage_uniform)")
    ap.add_argument("--max-params", type=float, default=15e6,
                    help="only families whose smallest model has at most this many parameters (117 of 200 at 15M)")


def coverage(args) -> dict:
    rows = run_sweep(args)
    summary = summarize(rows)
    listed = list(model_list(args.max_params)["models"].values())
    reached = {r["spec"] for r in rows}
    summary["not_reached"] = [s for s in listed if s not in reached]  # (a sweep cut short: rerun to resume)
    from slimkit.report import markdown_table

    print(markdown_table(table(rows)))
    print(json.dumps(summary, indent=1))
    data = {"summary": summary, "args": {k: v for k, v in vars(args).items() if k != "one"},
            "torch_pruning_version": __import__("torch_pruning").__version__, "rows": rows}
    (RESULTS / f"{args.coverage_results}.json").write_text(json.dumps(data, indent=1, default=str))
    return data


if __name__ == "__main__":
    main()
