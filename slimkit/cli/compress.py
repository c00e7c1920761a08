"""`slimkit compress`: train or load a baseline, prune it to a budget, fine-tune, export, report."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.markup import escape

from slimkit.cli._common import (
    CONFIG_OPTION,
    INPUT_SIZE_OPTION,
    MODEL_ARG_OPTION,
    NORM_OPTION,
    WORKERS_OPTION,
    console,
    job_config,
    one_of,
    parse_kv,
    parse_names,
    parse_numbers,
)
from slimkit.cli.quantize import print_int8
from slimkit.errors import ConfigError
from slimkit.jobs.compress import CompressConfig, run
from slimkit.prune import ALLOCATIONS, list_importances, list_pruning_methods
from slimkit.prune.tokens import TOKEN_METHODS
from slimkit.report import rich_table

# the flags that set an option of a section (the rest are CompressConfig's own): the CLI keeps the flat flags
FLAGS = {"macs": "prune.macs_target", "params": "prune.params_target", "latency_ms": "prune.latency_target",
         "ratio": "prune.ratio", "importance": "prune.importance", "allocation": "prune.allocation",
         "round_to": "prune.round_to", "kernels": "prune.kernels", "ignore": "prune.ignored_layers",
         "dims": "prune.dims", "dim_ratio": "prune.ratios", "token_method": "prune.token_method",
         "finetune_epochs": "finetune.epochs", "finetune_lr": "finetune.lr"}


def compress_cmd(
    model: str = typer.Option(None, "--model", "-m", help="Model name (default resnet20), timm:<name>, "
                              "torchvision:<name>, or your own path/to/net.py:function."),
    weights: str = typer.Option(None, "--weights", "-w", help="Your trained weights for --model (.safetensors or a "
                                "PyTorch state dict): the baseline, used as it is (a classifier replaced for another "
                                "class count is fine-tuned for --baseline-epochs first)."),
    data: str = typer.Option(None, "--data", "-d", help="Dataset name, .npz file or image folder (default digits)."),
    data_root: str = typer.Option(None, "--data-root", help="Folder (or file) holding the dataset."),
    baseline: str = typer.Option(None, "--baseline", help="A `slimkit train` run folder to start from."),
    baseline_epochs: int = typer.Option(None, "--baseline-epochs", help="Epochs when training the baseline here."),
    macs: float = typer.Option(None, "--macs", help="MACs to keep: fraction (0.5) or absolute (default 0.5)."),
    params: float = typer.Option(None, "--params", help="Parameters to keep: fraction or absolute."),
    latency_ms: float = typer.Option(None, "--latency-ms", help="onnxruntime batch-1 latency target (ms)."),
    ratio: float = typer.Option(None, "--ratio", help="Share of channels to remove instead of a budget."),
    method: str = typer.Option(None, "--method", help=f"Pruning method: {one_of(list_pruning_methods(), 'oneshot')}."),
    importance: str = typer.Option(None, "--importance", help=f"{one_of(list_importances(), 'l1')}; "
                                  "with --ratio-search default taylor (the search's own)."),
    allocation: str = typer.Option(None, "--allocation", help=f"How the cut is spread over layers: "
                                   f"{one_of(ALLOCATIONS, 'latency')}. latency: by time per MAC on this CPU, whole "
                                   "vector blocks; uniform: the same share everywhere (the old default); global: by "
                                   "importance; global_latency: importance per ns."),
    round_to: str = typer.Option(None, "--round-to", help="Channel counts in multiples of N (e.g. 8), auto (this "
                                  "CPU's vector block, 16 on AVX-512) or 1 (none); default: the allocation's."),
    kernels: str = typer.Option(None, "--kernels", help="fp32 or int8: keep the channel counts the fast kernels of "
                                "that precision take; auto: int8's where they still let a group shrink, else "
                                "fp32's (default: int8 with --quantize int8, else fp32)."),
    ignore: list[str] = typer.Option(None, "--ignore", help="Module whose outputs are kept (repeatable)."),
    dims: str = typer.Option(None, "--dims", help="Transformers: dimensions to prune, comma-separated, from heads, "
                             "neurons, embed, tokens (default: every channel group, no tokens)."),
    dim_ratio: list[str] = typer.Option(None, "--dim-ratio", help="Share to remove along one dimension, e.g. "
                                        "heads=0.3 (repeatable; replaces the budget)."),
    ratio_search: bool = typer.Option(None, "--ratio-search/--no-ratio-search", help="Find per-dimension ratios "
                                      "under --macs by Gaussian-process search with expected improvement."),
    search_queries: int = typer.Option(None, "--search-queries", help="Candidates the ratio search evaluates "
                                      "(default 24)."),
    token_method: str = typer.Option(None, "--token-method", help=f"Tokens: {one_of(TOKEN_METHODS, 'select')}. "
                                     "select: fixed positions, by HSIC; drop: EViT; merge: ToMe."),
    distill: bool = typer.Option(None, "--distill/--no-distill", help="Fine-tune with KD from the baseline."),
    finetune_epochs: int = typer.Option(None, "--finetune-epochs", help="Fine-tuning epochs (default 5)."),
    finetune_lr: float = typer.Option(None, "--finetune-lr", help="Fine-tuning learning rate (default 0.01)."),
    quantize: str = typer.Option(None, "--quantize", help="int8: also quantize the exported model (onnxruntime "
                                 "QDQ, calibrated on training images; layers that cost accuracy stay float)."),
    limit: int = typer.Option(None, "--limit", help="Use a class-balanced subset of N training images."),
    input_size: str = INPUT_SIZE_OPTION,
    norm: str = NORM_OPTION,
    workers: int = WORKERS_OPTION,
    seed: int = typer.Option(None, "--seed", help="Random seed."),
    out: str = typer.Option(None, "--out", "-o", help="Run folder (default runs/compress)."),
    resume: bool = typer.Option(False, "--resume", help="Skip finished stages; continue an interrupted one."),
    model_arg: list[str] = MODEL_ARG_OPTION,
    config: Path = CONFIG_OPTION,
) -> None:
    """Prune a model to a MACs / params / latency budget, fine-tune it, export it and report measured gains."""
    budgets = {"--macs": macs, "--params": params, "--latency-ms": latency_ms, "--ratio": ratio,
               "--dim-ratio": dim_ratio or None}
    given = [flag for flag, v in budgets.items() if v is not None]
    if len(given) > 1:
        raise ConfigError(f"give one budget: {' or '.join(given)}, not both")
    cli = dict(model=model, weights=weights, data=data, data_root=data_root, baseline=baseline,
               baseline_epochs=baseline_epochs,
               macs=macs, params=params, latency_ms=latency_ms, ratio=ratio, method=method, importance=importance,
               allocation=allocation, round_to=round_to, kernels=kernels,
               ignore=ignore or None, distill=distill if distill is None else ({} if distill else False),
               ratio_search=ratio_search,
               search_queries=search_queries,
               dims=parse_names(dims, "--dims"), token_method=token_method,
               dim_ratio=parse_numbers(dim_ratio, "--dim-ratio"),
               finetune_epochs=finetune_epochs, finetune_lr=finetune_lr, quantize=quantize, limit=limit, seed=seed,
               out=out, input_size=input_size, norm=norm, workers=workers,
               model_kwargs=parse_kv(model_arg) or None)
    cfg = job_config(CompressConfig, config, cli, resume=resume, flags=FLAGS)
    s = run(cfg, resume=resume)
    b, p = s["baseline"], s["pruned"]
    rows = [{"metric": k, "baseline": b[k], "pruned": p[k], "baseline / pruned": b[k] / p[k] if p[k] else None}
            for k in b if k != "model"]
    console.print(rich_table(rows, title=f"slimkit compress: {s['model']} on {s['data']}"))
    console.print(f"baseline: {s['baseline_source']}")
    console.print(f"MACs x{s['macs_reduction']:.2f} fewer, params x{s['params_reduction']:.2f} fewer; accuracy "
                  f"{s['baseline']['test_acc']:.4f} -> {s['pruned']['test_acc']:.4f}. Report: {s['out']}/report.html")
    for line in s["speed_verdict"]:
        console.print(escape(line))
    if "int8" in s:
        print_int8(s["int8"])


def register(app: typer.Typer) -> None:
    app.command("compress")(compress_cmd)
