"""A generic trainer: any model, any loss_fn(model, batch), callbacks, exact resume, DDP under torchrun."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from slimkit.config import config_changes
from slimkit.errors import CheckpointError, TrainError
from slimkit.fileio import append_line, atomic_write, link_or_copy
from slimkit.report import rich_table
from slimkit.train.callbacks import Callback, callbacks_needed
from slimkit.train.checkpoint import checkpoint_files, read_checkpoint, save_weights, write_checkpoint
from slimkit.train.config import TrainConfig
from slimkit.train.distributed import average_buffers, setup_distributed, shard_loader, wrap_model
from slimkit.train.evaluate import LossFn, cross_entropy_loss, evaluate
from slimkit.train.schedules import lr_at
from slimkit.train.seeding import own_rng, seed_everything

__all__ = ["Trainer", "TrainResult", "build_optimizer"]


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    best_val_acc: float | None = None
    best_epoch: int | None = None
    epochs_run: int = 0
    wall_time_s: float = 0.0


def build_optimizer(params: Sequence[tuple[str, nn.Parameter]], cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW; weight decay on weights only (not on biases or norm parameters, i.e. 1-d tensors)."""
    decay = [p for _, p in params if p.requires_grad and p.ndim > 1]
    no_decay = [p for _, p in params if p.requires_grad and p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.AdamW(groups, lr=cfg.lr)


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (tuple, list)):
        return type(batch)(_to(b, device) for b in batch)
    return batch


# options that may differ when a run resumes (everything else must match its checkpoint)
RESUMABLE = ("epochs", "eval_every", "checkpoint_every", "progress")


class Trainer:
    """Train `model` with `config` on `train_loader`, evaluating on `val_loader`.

    Checkpoints (under `out_dir/checkpoint`) hold everything needed to continue exactly: weights, optimizer state,
    RNG states, epoch and position within it, callback states, the best weights so far. Each commits as one unit,
    so a kill at any instant resumes from the last whole checkpoint; `metrics.jsonl` and `best.safetensors` are
    restored from it on resume. Ctrl-C writes one before stopping. Resuming with other options than the checkpoint's
    is refused, except for `RESUMABLE` ones (a longer run stretches the learning-rate schedule from there).
    """

    def __init__(self, model: nn.Module, config: TrainConfig, train_loader: DataLoader, val_loader: Any = None, *,
                 loss_fn: LossFn | None = None, callbacks: Sequence[Callback] = (), out_dir: str | Path | None = None,
                 device: str | torch.device | None = None, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.config = config
        self.dist = setup_distributed()
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if self.device.type == "cuda" and self.dist.enabled:
            self.device = torch.device("cuda", self.dist.local_rank)
        self.model = model.to(self.device)
        self.loss_fn = loss_fn or cross_entropy_loss(config.label_smoothing)
        if isinstance(self.loss_fn, nn.Module):
            self.loss_fn.to(self.device)
        self.net = wrap_model(self.model, self.dist, self.device)
        self.train_loader = shard_loader(train_loader, self.dist, config.seed)
        self.val_loader = val_loader
        self.callbacks = list(callbacks)
        self.callbacks += callbacks_needed(model, self.callbacks)  # e.g. dynamic convs anneal their temperature
        self.out_dir = Path(out_dir) if out_dir is not None else None
        # what a checkpoint saves: the model, plus a trainable loss module (e.g. a distillation adapter)
        self._state_module: nn.Module = self.model
        if isinstance(self.loss_fn, nn.Module) and any(True for _ in self.loss_fn.parameters()):
            self._state_module = nn.ModuleDict({"model": self.model, "loss": self.loss_fn})
        # the optimizer: `build_optimizer(config)` unless the caller brings one (e.g. a supernet's weights only)
        self.optimizer = optimizer or build_optimizer(list(self._state_module.named_parameters()), config)
        optimized = {id(p) for g in self.optimizer.param_groups for p in g["params"]}
        self._clipped = [p for p in self._state_module.parameters() if id(p) in optimized]  # in module order
        self.epoch = 0
        self.global_step = 0
        self.batch_in_epoch = 0
        self.result = TrainResult()
        self.console = Console(stderr=True)
        self._best_file: Path | None = None  # the best weights so far (inside the checkpoint folder)
        if self.dist.enabled and self.dist.is_main and config.progress:
            per = self.train_loader.batch_size or 0
            self.console.print(f"data-parallel: {self.dist.world_size} processes x {per} images = global batch "
                               f"{per * self.dist.world_size} (the batch size is the global batch, so the learning "
                               f"rate {config.lr:g} applies unchanged)")

    # ----------------------------------------------------------------- state
    @property
    def checkpoint_dir(self) -> Path | None:
        return self.out_dir / "checkpoint" if self.out_dir is not None else None

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "global_step": self.global_step, "batch_in_epoch": self.batch_in_epoch,
                "result": asdict(self.result), "config": asdict(self.config),
                "callbacks": [cb.state_dict() for cb in self.callbacks], "callback_names": self._callback_names()}

    def _callback_names(self) -> list[str]:
        """Each callback's key in a checkpoint: its class name, numbered from the second of a class on."""
        names: list[str] = []
        for cb in self.callbacks:
            name = type(cb).__name__
            names.append(name if name not in names else f"{name}#{sum(n.split('#')[0] == name for n in names)}")
        return names

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the loop position, the result and each callback's state, matched by name (`_callback_names`).

        A checkpoint holding a callback state this run has no callback for, or this run having a stateful callback
        the checkpoint has no state for, is refused: either would silently continue with the wrong state."""
        states = state.get("callbacks", [])
        names = state.get("callback_names", self._callback_names()[:len(states)])  # older checkpoints: by position
        saved = dict(zip(names, states, strict=False))
        current = dict(zip(self._callback_names(), self.callbacks, strict=True))
        dropped = [n for n, st in saved.items() if st and n not in current]
        fresh = [n for n, cb in current.items() if n not in saved and cb.state_dict()]
        if dropped or fresh or len(names) != len(states):
            raise CheckpointError(
                f"the checkpoint was written with callbacks {names} but this run has {list(current)} "
                f"({'no callback for the saved state of ' + ', '.join(dropped) if dropped else ''}"
                f"{'; ' if dropped and fresh else ''}{'no saved state for ' + ', '.join(fresh) if fresh else ''}): "
                "resume with the callbacks the run was started with, or start a new run in another folder")
        self.epoch, self.global_step = state["epoch"], state["global_step"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.result = TrainResult(**state["result"])
        for name, st in saved.items():
            if name in current:
                current[name].load_state_dict(st)

    def save_checkpoint(self) -> Path | None:
        if self.checkpoint_dir is None or not self.dist.is_main:
            return None
        files = {"best.safetensors": self._best_file} if self._best_file is not None else {}
        d = write_checkpoint(self.checkpoint_dir, self._state_module, self.optimizer, self.state_dict(), files)
        self._publish(d)
        return d

    def _publish(self, checkpoint: Path) -> None:
        """Point `out_dir/best.safetensors` at the committed checkpoint's best weights."""
        assert self.out_dir is not None
        best = checkpoint_files(checkpoint)[1].get("best.safetensors")
        self._best_file = best
        target = self.out_dir / "best.safetensors"
        if best is not None and not (target.is_file() and os.path.samefile(best, target)):
            atomic_write(target, lambda tmp: link_or_copy(best, tmp))

    def _resume(self) -> bool:
        d = self.checkpoint_dir
        if d is None or not (d / "state.json").is_file():
            return False
        saved = checkpoint_files(d)[0].get("config", {})
        changes = config_changes(saved, self.config, allowed=RESUMABLE)
        if changes:
            raise CheckpointError(
                f"the checkpoint in {d} was written with different options ({'; '.join(changes)}): resume "
                f"with the options it was started with, or start a new run in another folder (only "
                f"{', '.join(RESUMABLE)} may change on resume)")
        self.load_state_dict(read_checkpoint(d, self._state_module, self.optimizer))
        if self.dist.is_main and self.out_dir is not None:  # what a kill after the checkpoint may have left
            self._write_metrics()
            self._publish(d)
        if saved.get("epochs") not in (None, self.config.epochs) and self.epoch < self.config.epochs \
                and self.dist.is_main:
            self.console.print(f"resuming at epoch {self.epoch} with epochs {saved['epochs']} -> "
                               f"{self.config.epochs}: the learning-rate schedule is stretched from here")
        return True

    def _fresh_start(self) -> None:
        """A new run in `out_dir`: nothing of an earlier run there can be resumed or read as this run's."""
        if self.out_dir is None or not self.dist.is_main:
            return
        if self.checkpoint_dir is not None and self.checkpoint_dir.is_dir():
            shutil.rmtree(self.checkpoint_dir)
        (self.out_dir / "best.safetensors").unlink(missing_ok=True)
        self._write_metrics()

    def _write_metrics(self) -> None:
        assert self.out_dir is not None
        atomic_write(self.out_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in self.result.history))

    # ----------------------------------------------------------------- loop
    def _set_epoch(self, epoch: int) -> None:
        """Make this epoch's data order and augmentation a function of (seed, epoch) only."""
        loader = self.train_loader
        sampler = loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        gen = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        if isinstance(sampler, RandomSampler):
            sampler.generator = gen
        loader.generator = gen
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)

    def lr(self) -> float:
        """The learning rate of the next step (the schedule is a function of the step)."""
        return lr_at(self.global_step, self.config.epochs * len(self.train_loader), len(self.train_loader),
                     self.config)

    def train_step(self, batch: Any, lr: float | None = None) -> tuple[float, int | None, int]:
        """One optimizer step on `batch` (at `lr`, default the schedule's); returns (loss, correct, images)."""
        lr = self.lr() if lr is None else lr
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss, logits = self.loss_fn(self.net, batch)
        if not torch.isfinite(loss):
            raise TrainError(f"loss became {float(loss.detach())} at epoch {self.epoch}, step {self.global_step}: "
                             f"lower the learning rate (now {lr:.3g}) or set grad_clip")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.grad_clip:
            nn.utils.clip_grad_norm_(self._clipped, self.config.grad_clip)
        self.optimizer.step()
        labelled = isinstance(batch, (tuple, list)) and len(batch) > 1
        correct = int((logits.detach().argmax(1) == batch[1]).sum()) if labelled and logits is not None and \
            logits.dim() == 2 and len(logits) == len(batch[1]) else None  # None: no class scores (self-supervised)
        return float(loss.detach()), correct, len(batch[0]) if isinstance(batch, (tuple, list)) else len(batch)

    def _run_epoch(self, progress: Progress | None) -> dict[str, Any]:
        cfg, n_batches = self.config, len(self.train_loader)
        self._set_epoch(self.epoch)
        for cb in self.callbacks:
            cb.on_epoch_start(self, self.epoch)
        desc = f"epoch {self.epoch + 1}/{cfg.epochs}"
        task = progress.add_task(desc, total=n_batches, stats="") if progress is not None else None
        self.net.train()
        loss_sum = correct = seen = scored = 0
        t0 = time.perf_counter()
        for i, batch in enumerate(self.train_loader):
            if i < self.batch_in_epoch:  # resuming inside an epoch: replay the data order, skip done batches
                continue
            batch = _to(batch, self.device)
            loss, c, n = self.train_step(batch)
            loss_sum, seen = loss_sum + loss * n, seen + n
            if c is not None:
                correct, scored = correct + c, scored + n
            self.global_step += 1
            self.batch_in_epoch = i + 1
            for cb in self.callbacks:
                cb.on_batch_end(self, self.global_step, loss)
            if progress is not None and task is not None:
                acc = f" acc {correct / scored:.3f}" if scored else ""
                progress.update(task, completed=i + 1, stats=f"loss {loss_sum / seen:.3f}{acc}")
        return {"epoch": self.epoch + 1, "train_loss": loss_sum / max(seen, 1),
                "train_acc": correct / scored if scored else None,
                "lr": self.optimizer.param_groups[0]["lr"], "time_s": round(time.perf_counter() - t0, 2)}

    def _end_epoch(self, row: dict[str, Any]) -> None:
        cfg = self.config
        average_buffers(self.model, self.dist)
        if self.val_loader is not None and ((self.epoch + 1) % cfg.eval_every == 0 or self.epoch + 1 == cfg.epochs):
            val = evaluate(self.model, (_to(b, self.device) for b in self.val_loader))
            row.update(val_loss=val["loss"], val_acc=val["acc"])
            if self.result.best_val_acc is None or val["acc"] > self.result.best_val_acc:
                self.result.best_val_acc, self.result.best_epoch = val["acc"], self.epoch + 1
                if self.checkpoint_dir is not None and self.dist.is_main:  # committed with the next checkpoint
                    pending = self.checkpoint_dir / f"best-e{self.epoch + 1}.safetensors"
                    self._best_file = save_weights(self.model, pending)
        del self.result.history[self.epoch:]  # an interrupted end of this epoch may have recorded it already
        self.result.history.append(row)
        for cb in self.callbacks:
            cb.on_epoch_end(self, self.epoch, row)
        if self.out_dir is not None and self.dist.is_main:  # rewritten from the checkpoint on resume
            append_line(self.out_dir / "metrics.jsonl", json.dumps(row))
        self.epoch += 1
        self.batch_in_epoch = 0
        self.result.epochs_run = self.epoch
        now = time.perf_counter()  # time so far goes into the checkpoint: a resumed run reports its whole time
        self.result.wall_time_s += now - self._clock
        self._clock = now
        if self.epoch % cfg.checkpoint_every == 0 or self.epoch == cfg.epochs:
            self.save_checkpoint()

    def fit(self, resume: bool = False) -> TrainResult:
        """Train to `config.epochs`; with `resume=True` continue from `out_dir/checkpoint` when there is one.

        Training draws (dropout, random layers, callbacks) from the process's generators, seeded from
        `config.seed` or restored from the checkpoint, under `own_rng`: the caller's generator states are as they
        were when `fit` returns, so what runs after it does not depend on how long it trained or whether it resumed.
        """
        with own_rng():
            return self._fit(resume)

    def _fit(self, resume: bool) -> TrainResult:
        cfg = self.config
        if self.out_dir is not None and self.dist.is_main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        if not (resume and self._resume()):
            self._fresh_start()
            seed_everything(cfg.seed)
        if self.epoch >= cfg.epochs:
            return self.result
        self._clock = time.perf_counter()
        for cb in self.callbacks:
            cb.on_train_start(self)
        show = cfg.progress and self.dist.is_main
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=self.console,
                            disable=not show)
        try:
            with progress:
                while self.epoch < cfg.epochs:
                    self._end_epoch(self._run_epoch(progress))
        except KeyboardInterrupt:
            path = self.save_checkpoint()
            if path is not None:
                self.console.print(f"[yellow]interrupted: checkpoint written to {path}; continue with resume[/]")
            raise
        finally:
            self.result.wall_time_s += time.perf_counter() - self._clock
        for cb in self.callbacks:
            cb.on_train_end(self)
        if show:
            self.console.print(rich_table(self.result.history[-5:], title="training (last epochs)"))
        return self.result
