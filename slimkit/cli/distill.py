"""`slimkit distill`: train a student from a teacher (any registered method: `slimkit.distill.list_distillers()`) and
`slimkit distill store-logits`: write a teacher's top-k logits once for stored-logit distillation."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import typer

from slimkit.cli._common import (
    CONFIG_OPTION,
    INPUT_SIZE_OPTION,
    NORM_OPTION,
    WORKERS_OPTION,
    console,
    job_config,
    one_of,
    parse_kv,
)
from slimkit.distill.tasks import list_distillers, option_names, options_class
from slimkit.jobs.distill import DistillJobConfig, StoreLogitsConfig, run, store_logits
from slimkit.report import summary_table
from slimkit.train import TrainConfig

distill_app = typer.Typer(help="Knowledge distillation: train a student from a teacher, or store teacher logits.",
                          no_args_is_help=False, invoke_without_command=True)

TEACHER = typer.Option(None, "--teacher", "-t", help="Teacher model name (default resnet56).")
TEACHER_CKPT = typer.Option(None, "--teacher-ckpt", help="Teacher: a slimkit run folder, or a weights file that "
                            "fits the data.")
TEACHER_ARG = typer.Option(None, "--teacher-arg", help="Extra teacher model argument KEY=VALUE (repeatable).")
DATA = typer.Option(None, "--data", "-d", help="Dataset name, .npz file or image folder (default digits).")
DATA_ROOT = typer.Option(None, "--data-root", help="Folder (or file) holding the dataset.")
LIMIT = typer.Option(None, "--limit", help="Use a class-balanced subset of N training images.")


def _method_options() -> str:
    """Every method's option names, from the options dataclass it registered."""
    names = {m: [f.name for f in fields(options_class(m))] for m in list_distillers()}
    return "; ".join(f"{m}: {', '.join(n)}" for m, n in names.items() if n)


@distill_app.callback()
def distill_cmd(
    ctx: typer.Context,
    student: str = typer.Option(None, "--student", help="Student model name (default resnet20), timm:<name>, "
                                "torchvision:<name>, or your own path/to/net.py:function."),
    weights: str = typer.Option(None, "--weights", "-w", help="The student starts from these weights "
                                "(.safetensors or a PyTorch state dict)."),
    teacher: str = TEACHER,
    teacher_ckpt: str = TEACHER_CKPT,
    teacher_weights: str = typer.Option(None, "--teacher-weights", help="Your trained weights for --teacher "
                                        "(instead of --teacher-ckpt); a classifier replaced for another class count "
                                        "is fine-tuned for --teacher-epochs first."),
    teacher_epochs: int = typer.Option(None, "--teacher-epochs", help="Epochs of a teacher trained here when no "
                                       "--teacher-ckpt is given (default 10)."),
    method: str = typer.Option(None, "--method", help=f"{one_of(list_distillers(), 'kd')}."),
    data: str = DATA,
    data_root: str = DATA_ROOT,
    epochs: int = typer.Option(None, "--epochs", "-e", help="Student training epochs (default 10)."),
    batch_size: int = typer.Option(None, "--batch-size", "-b", help="Batch size (default 128)."),
    lr: float = typer.Option(None, "--lr", help="Peak learning rate (default 0.1)."),
    optimizer: str = typer.Option(None, "--optimizer", help="sgd or adamw (default sgd; ViTs train with adamw)."),
    weight_decay: float = typer.Option(None, "--weight-decay", help="Weight decay (default 5e-4)."),
    seed: int = typer.Option(None, "--seed", help="Random seed (default 0)."),
    temperature: float = typer.Option(None, "--temperature", "-T", help="Softening temperature (method default)."),
    alpha: float = typer.Option(None, "--alpha", help="Weight of the distillation term (method default)."),
    store: str = typer.Option(None, "--store", help="stored: a logit store folder (default: build one here)."),
    topk: int = typer.Option(None, "--topk", help="stored: top-k logits when the store is built here (10)."),
    option: list[str] = typer.Option(None, "--option", help="Method option KEY=VALUE (repeatable), e.g. "
                                     f"--option queue_size=1024; each method's: {_method_options()}."),
    limit: int = LIMIT,
    input_size: str = INPUT_SIZE_OPTION,
    norm: str = NORM_OPTION,
    workers: int = WORKERS_OPTION,
    student_arg: list[str] = typer.Option(None, "--student-arg", help="Extra student argument KEY=VALUE."),
    teacher_arg: list[str] = TEACHER_ARG,
    out: str = typer.Option(None, "--out", "-o", help="Run folder (default runs/distill)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the run folder's checkpoints."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Train a student with a distillation method; a teacher without --teacher-ckpt is trained first."""
    if ctx.invoked_subcommand is not None:
        return
    opts = {**parse_kv(option), **{k: v for k, v in dict(temperature=temperature, alpha=alpha, store=store).items()
                                   if v is not None}}
    cli = dict(student=student, weights=weights, teacher=teacher, teacher_ckpt=teacher_ckpt,
               teacher_weights=teacher_weights, teacher_epochs=teacher_epochs,
               method=method, data=data, data_root=data_root, epochs=epochs, batch_size=batch_size, lr=lr,
               optimizer=optimizer, weight_decay=weight_decay, seed=seed,
               topk=topk, limit=limit, out=out, student_kwargs=parse_kv(student_arg) or None,
               teacher_kwargs=parse_kv(teacher_arg) or None, options=opts or None, input_size=input_size, norm=norm,
               workers=workers)
    cfg = job_config(DistillJobConfig, config, cli, {"train": TrainConfig, "options": option_names()},
                     resume=resume)
    summary = run(cfg, resume=resume)
    console.print(summary_table({k: v for k, v in summary.items() if k != "options"}, title="slimkit distill"))


@distill_app.command("store-logits")
def store_logits_cmd(
    teacher: str = TEACHER,
    teacher_ckpt: str = TEACHER_CKPT,
    teacher_arg: list[str] = TEACHER_ARG,
    data: str = DATA,
    data_root: str = DATA_ROOT,
    limit: int = LIMIT,
    input_size: str = INPUT_SIZE_OPTION,
    norm: str = NORM_OPTION,
    workers: int = WORKERS_OPTION,
    seed: int = typer.Option(None, "--seed", help="The student run's seed (fixes the replayed augmentation)."),
    epochs: int = typer.Option(None, "--epochs", "-e", help="Augmentation epochs to store (default 10)."),
    topk: int = typer.Option(None, "--topk", help="Logits kept per image (default 10)."),
    augment: bool = typer.Option(None, "--augment/--no-augment", help="Store augmented views (default; replayed "
                                 "by the student) or, with --no-augment and --epochs 1, the clean images (for "
                                 "--option store_views=clean)."),
    out: str = typer.Option(None, "--out", "-o", help="Store folder (default runs/logits)."),
    config: Path = CONFIG_OPTION,
) -> None:
    """Run the teacher once per augmentation epoch and store its top-k logits (resumable; extends a store)."""
    cli = dict(teacher=teacher, teacher_ckpt=teacher_ckpt, teacher_kwargs=parse_kv(teacher_arg) or None, data=data,
               data_root=data_root, limit=limit, seed=seed, epochs=epochs, topk=topk, augment=augment, out=out,
               input_size=input_size, norm=norm, workers=workers)
    summary = store_logits(job_config(StoreLogitsConfig, config, cli))
    console.print(summary_table(summary, title="slimkit distill store-logits"))


def register(app: typer.Typer) -> None:
    app.add_typer(distill_app, name="distill")
