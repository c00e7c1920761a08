"""One-shot differentiable search over the NAS-Bench-201 cell: first-order DARTS and the EoiNAS variant.

DARTS (Liu et al., ICLR 2019) relaxes every edge of the cell into a `MixedOp`, the softmax(alpha)-weighted sum of the
5 candidate ops, and trains one supernet whose cells all share the architecture parameters alpha (6 edges x 5 ops,
as in NAS-Bench-201's DARTS baseline). First-order DARTS alternates, per step, an SGD step of the weights on a train
batch and an Adam step of alpha on a validation batch; the derived cell keeps the argmax op of every edge ('none'
included, as the NAS-Bench-201 baseline does).

EoiNAS (Wang et al., "EoiNAS: Efficient one-shot NAS by operation importance", 2019) replaces "largest architecture
weight" by an operation importance indicator and prunes weak operations gradually during the search. See
`eoinas_importance` for the indicator used here.

    from slimkit.nas import OneShotConfig, OneShotSearch
    result = OneShotSearch(OneShotConfig(method="eoinas", epochs=10), run_dir="runs/oneshot").fit()
    result.cell  # '|nor_conv_3x3~0|+|...'
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader

from slimkit.config import config_changes
from slimkit.data import DataSplits, create_dataset
from slimkit.errors import CheckpointError, ConfigError, TrainError
from slimkit.fileio import commit_files, read_manifest
from slimkit.models.nb201 import ResBlock
from slimkit.models.nb201 import _op as nb201_op
from slimkit.nas.spaces.nb201 import EDGES, OPS, cell_to_str
from slimkit.train.checkpoint import optimizer_from_flat, optimizer_to_flat, rng_state, set_rng_state
from slimkit.train.seeding import seed_everything

__all__ = ["MixedOp", "SuperCell", "SuperNet", "OneShotConfig", "OneShotResult", "OneShotSearch", "derive_cell",
           "eoinas_importance", "masked_softmax", "prune_step"]

METHODS = ("darts", "eoinas")
CHECKPOINT = "checkpoint"
_NUM_EDGES, _NUM_OPS = len(EDGES), len(OPS)


# -- pure functions ------------------------------------------------------------------------------------------------
def masked_softmax(alpha: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise softmax of `alpha` over the ops still in `mask` (pruned ops get weight 0, the rest renormalise)."""
    if mask is None:
        return F.softmax(alpha, dim=-1)
    return F.softmax(alpha.masked_fill(~mask.bool(), float("-inf")), dim=-1)


def derive_cell(alpha: Any, mask: Any = None) -> str:
    """The cell string keeping, on every edge, the op with the largest score among the ops left in `mask`.

    `alpha` is any 6 x 5 score matrix (architecture parameters for DARTS, importances for EoiNAS) in `OPS` order;
    'none' competes like any other op (NAS-Bench-201's DARTS baseline does the same).
    """
    a = torch.as_tensor(np.asarray(alpha, dtype=np.float64)).reshape(_NUM_EDGES, _NUM_OPS)
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask, dtype=bool)).reshape(_NUM_EDGES, _NUM_OPS)
        if not bool(m.any(1).all()):
            raise ConfigError("every edge must keep at least one op in the mask")
        a = a.masked_fill(~m, float("-inf"))
    return cell_to_str(tuple(int(i) for i in a.argmax(1)))


def eoinas_importance(weights: torch.Tensor, output_rms: torch.Tensor, mask: torch.Tensor | None = None
                      ) -> torch.Tensor:
    """Operation importance indicator I[e, o] = w[e, o] * r[e, o] (pruned ops: -inf).

    w is the edge's (masked) softmax weight of op o and r the root-mean-square of op o's output on edge e, measured
    on validation batches and averaged over every cell of the supernet. I is therefore the magnitude of what op o
    actually adds to its node in the mixed sum, which is what the network's prediction depends on.

    Why not the softmax weight alone: the ops' outputs have very different scales (a parameter-free skip or pooling
    passes the un-normalised input, a ReLU-Conv-BN output is BN-normalised, 'none' is exactly zero), so a large
    alpha on an op with a small output can matter less than a small alpha on a large one; DARTS' "largest weight"
    rule ignores this. The exact EoiNAS formula could not be retrieved from the sources available when this was
    written, so this is a documented stand-in in its spirit (importance = weight x contribution), cheap to compute
    (one forward pass per validation batch, no extra backward). A consequence: 'none' has importance 0 and is the
    first op pruned on every edge.
    """
    imp = weights * output_rms
    if mask is not None:
        imp = imp.masked_fill(~mask.bool(), float("-inf"))
    return imp


def prune_step(importance: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """Remove the least important remaining op on every edge that keeps more than one; returns (new mask, removed
    (edge, op) pairs). Ties go to the op listed first in `OPS`."""
    mask = mask.clone().bool()
    removed = []
    for e in range(mask.shape[0]):
        if int(mask[e].sum()) <= 1:
            continue
        scores = importance[e].masked_fill(~mask[e], float("inf"))
        o = int(torch.argmin(scores))
        mask[e, o] = False
        removed.append((e, o))
    return mask, removed


# -- the supernet --------------------------------------------------------------------------------------------------
class MixedOp(nn.Module):
    """One edge: sum_o w[o] * op_o(x) over the ops left in the mask (masked ops are not run)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.ops = nn.ModuleList(nb201_op(name, c) for name in OPS)
        self.record: list[torch.Tensor] | None = None  # when a list, forward appends each op's output RMS (5,)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        out: torch.Tensor | None = None
        rms = torch.zeros(len(self.ops)) if self.record is not None else None
        for o, op in enumerate(self.ops):
            if mask is not None and not bool(mask[o]):
                continue
            y = op(x)
            if rms is not None:
                rms[o] = y.detach().float().pow(2).mean().sqrt()
            term = weights[o] * y
            out = term if out is None else out + term
        if rms is not None and self.record is not None:
            self.record.append(rms)
        assert out is not None, "a mixed op needs at least one op in its mask"
        return out


class SuperCell(nn.Module):
    """The NAS-Bench-201 cell with a `MixedOp` on each of the 6 edges (in `EDGES` order)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.edges = nn.ModuleList(MixedOp(c) for _ in EDGES)

    def forward(self, x: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        states = [x]
        for j in (1, 2, 3):
            node: torch.Tensor | None = None
            for k, (i, dst) in enumerate(EDGES):
                if dst != j:
                    continue
                y = self.edges[k](states[i], weights[k], None if mask is None else mask[k])
                node = y if node is None else node + y
            assert node is not None
            states.append(node)
        return states[-1]


class SuperNet(nn.Module):
    """NAS-Bench-201's skeleton (stem, 3 stages of cells joined by `ResBlock`s, BN-ReLU, pool, linear) with
    `SuperCell`s sharing one alpha (6 x 5). `mask` (a buffer, saved with the weights) marks the ops still alive."""

    def __init__(self, num_classes: int = 10, in_chans: int = 3, channels: int = 16, cells_per_stage: int = 5,
                 alpha_std: float = 1e-3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, channels, 3, 1, 1, bias=False), nn.BatchNorm2d(channels))
        layers: list[nn.Module] = []
        c = channels
        for stage in range(3):
            if stage:
                layers.append(ResBlock(c, 2 * c))
                c *= 2
            layers += [SuperCell(c) for _ in range(cells_per_stage)]
        self.layers = nn.ModuleList(layers)
        self.lastact = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())
        self.head = nn.Linear(c, num_classes)
        self.alpha = nn.Parameter(alpha_std * torch.randn(_NUM_EDGES, _NUM_OPS))
        self.register_buffer("mask", torch.ones(_NUM_EDGES, _NUM_OPS, dtype=torch.bool))

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if n != "alpha"]

    def edge_weights(self) -> torch.Tensor:
        """The (masked) softmax of alpha, 6 x 5."""
        return masked_softmax(self.alpha, self.mask)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.edge_weights()
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x, w, self.mask) if isinstance(layer, SuperCell) else layer(x)
        x = self.lastact(x)
        return self.head(x.mean((2, 3)))

    @torch.no_grad()
    def op_output_rms(self, batches: Sequence[torch.Tensor]) -> torch.Tensor:
        """Each op's output RMS per edge (6 x 5), averaged over cells and `batches` (eval mode, no grad)."""
        mixed = [m for m in self.modules() if isinstance(m, MixedOp)]
        was_training = self.training
        self.eval()
        sums = torch.zeros(_NUM_EDGES, _NUM_OPS)
        n = 0
        try:
            for m in mixed:
                m.record = []
            for x in batches:
                self(x)
                n += 1
            for k, m in enumerate(mixed):
                assert m.record is not None
                sums[k % _NUM_EDGES] += torch.stack(m.record).sum(0)
        finally:
            for m in mixed:
                m.record = None
            self.train(was_training)
        cells = len(mixed) // _NUM_EDGES
        return sums / max(1, n * cells)


# -- config, result, search ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OneShotConfig:
    method: str = "darts"  # darts (argmax of alpha) or eoinas (importance indicator + gradual pruning)
    epochs: int = 10
    batch_size: int = 64
    lr: float = 0.025  # weights: SGD, momentum 0.9, cosine from lr to lr_min over the epochs
    lr_min: float = 0.001
    momentum: float = 0.9
    weight_decay: float = 3e-4
    grad_clip: float = 5.0
    arch_lr: float = 3e-4  # alpha: Adam, betas (0.5, 0.999)
    arch_weight_decay: float = 1e-3
    channels: int = 16
    cells_per_stage: int = 2  # the benchmark uses 5; fewer keeps the CPU supernet fast
    data: str = "fashion-mnist"
    data_root: str | None = None
    limit: int | None = 2000  # class-balanced subset of the training set, split into weight / alpha halves
    val_fraction: float = 0.5  # share of `limit` used for the alpha steps (DARTS uses half)
    seed: int = 0
    prune_every: int | None = None  # eoinas: epochs between prune rounds (default: spread 4 rounds over the run)
    importance_batches: int = 4  # eoinas: validation batches to measure op outputs on

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown one-shot method {self.method!r}; choose one of {list(METHODS)}")
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError(f"epochs and batch_size must be >= 1, got {self.epochs} and {self.batch_size}")
        if self.channels < 1 or self.cells_per_stage < 1:
            raise ConfigError(f"channels and cells_per_stage must be >= 1, got {self.channels}, "
                              f"{self.cells_per_stage}")
        if self.lr <= 0 or self.arch_lr <= 0:
            raise ConfigError(f"lr and arch_lr must be > 0, got {self.lr} and {self.arch_lr}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"val_fraction must be in (0, 1): the alpha steps need validation images, got "
                              f"{self.val_fraction}")
        if self.prune_every is not None and self.prune_every < 1:
            raise ConfigError(f"prune_every must be >= 1, got {self.prune_every}")
        if self.limit is not None and self.limit < 20:
            raise ConfigError(f"limit must be >= 20 images (both train and validation halves need some), got "
                              f"{self.limit}")

    @property
    def prune_interval(self) -> int:
        """Epochs between EoiNAS prune rounds: `prune_every`, or epochs // 5 (at least 1) so that the 4 rounds
        that leave one op per edge fit in the run."""
        return self.prune_every or max(1, self.epochs // _NUM_OPS)


# options that may change on resume (everything else must match the checkpoint)
_RESUMABLE = ("epochs", "data_root")


@dataclass
class OneShotResult:
    method: str
    cell: str | None = None  # derived after the last epoch
    epochs_run: int = 0
    wall_time_s: float = 0.0
    alphas: list[list[list[float]]] = field(default_factory=list)  # alpha (6 x 5) after every epoch
    weights: list[list[list[float]]] = field(default_factory=list)  # masked softmax of alpha after every epoch
    importance: list[list[list[float]]] = field(default_factory=list)  # eoinas: indicator after every epoch
    cells: list[str] = field(default_factory=list)  # the cell derived after every epoch
    mask: list[list[bool]] = field(default_factory=lambda: [[True] * _NUM_OPS for _ in EDGES])
    pruned: list[dict[str, Any]] = field(default_factory=list)  # {"after_epoch", "edge", "op"} per removed op
    history: list[dict[str, Any]] = field(default_factory=list)  # per epoch: losses, accuracies, lr, time

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _finite(m: torch.Tensor) -> list[list[float]]:
    return [[float(v) if math.isfinite(float(v)) else None for v in row] for row in m.tolist()]  # type: ignore


class OneShotSearch:
    """Runs a one-shot search; `fit()` trains the supernet and returns a `OneShotResult`.

    With `run_dir`, a checkpoint (safetensors for tensors, JSON for the rest) is written after every epoch (and
    before the first); `fit(resume=True)` continues from it exactly (same data order, optimiser and RNG states).
    Ctrl-C keeps the last epoch's checkpoint and re-raises.
    """

    def __init__(self, config: OneShotConfig, splits: DataSplits | None = None, run_dir: str | Path | None = None,
                 progress: bool = True, device: str | torch.device = "cpu", console: Console | None = None) -> None:
        self.config = cfg = config
        self.splits = splits if splits is not None else create_dataset(
            cfg.data, cfg.data_root, seed=cfg.seed, limit=cfg.limit, val_fraction=cfg.val_fraction, augment=False)
        if len(self.splits.train) == 0 or len(self.splits.val) == 0:
            raise ConfigError("the one-shot search needs non-empty train and validation splits; raise limit or "
                              "val_fraction")
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress, self.device = progress, torch.device(device)
        self.console = console or Console()
        info = self.splits.info
        seed_everything(cfg.seed)
        self.net = SuperNet(info.num_classes, info.in_chans, cfg.channels, cfg.cells_per_stage).to(self.device)
        self.w_opt = torch.optim.SGD(self.net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                     weight_decay=cfg.weight_decay, nesterov=False)
        self.a_opt = torch.optim.Adam(self.net.arch_parameters(), lr=cfg.arch_lr, betas=(0.5, 0.999),
                                      weight_decay=cfg.arch_weight_decay)
        self.train_gen = torch.Generator().manual_seed(cfg.seed)
        self.val_gen = torch.Generator().manual_seed(cfg.seed + 1)
        bs = min(cfg.batch_size, len(self.splits.train))
        self.train_loader = DataLoader(self.splits.train, batch_size=bs, shuffle=True, generator=self.train_gen,
                                       drop_last=len(self.splits.train) >= 2 * bs)
        self.val_loader = DataLoader(self.splits.val, batch_size=min(cfg.batch_size, len(self.splits.val)),
                                     shuffle=True, generator=self.val_gen)
        self.epoch = 0
        self.result = OneShotResult(cfg.method)

    # -- one step of each kind (public so they can be tested) ---------------------------------------------------
    def _grad_step(self, params: list[nn.Parameter], opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                   clip: float | None) -> tuple[float, int]:
        logits = self.net(x.to(self.device))
        loss = F.cross_entropy(logits, y.to(self.device))
        if not torch.isfinite(loss):
            raise TrainError(f"one-shot loss became {float(loss)} at epoch {self.epoch}: lower lr (now "
                             f"{self.w_opt.param_groups[0]['lr']:.3g}) or arch_lr")
        grads = torch.autograd.grad(loss, params, allow_unused=True)  # only these parameters get gradients
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        if clip:
            nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach()), int((logits.detach().argmax(1) == y.to(self.device)).sum())

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One SGD step of the supernet weights on a train batch (alpha untouched)."""
        self.net.train()
        return self._grad_step(self.net.weight_parameters(), self.w_opt, x, y, self.config.grad_clip)

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One Adam step of alpha on a validation batch (weights untouched; first-order DARTS)."""
        self.net.train()
        return self._grad_step(self.net.arch_parameters(), self.a_opt, x, y, None)

    def importance(self) -> torch.Tensor:
        """EoiNAS indicator (6 x 5) measured on the first `importance_batches` validation batches."""
        batches = []
        for x, _ in DataLoader(self.splits.val, batch_size=self.val_loader.batch_size or 64):
            batches.append(x.to(self.device))
            if len(batches) >= self.config.importance_batches:
                break
        rms = self.net.op_output_rms(batches)
        with torch.no_grad():
            return eoinas_importance(self.net.edge_weights().cpu(), rms, self.net.mask.cpu())

    def _lr(self, epoch: int) -> float:
        cfg = self.config
        return cfg.lr_min + 0.5 * (cfg.lr - cfg.lr_min) * (1 + math.cos(math.pi * epoch / cfg.epochs))

    def _val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.val_loader

    def _prune(self) -> int:
        """EoiNAS prune round, run at the start of epochs prune_interval, 2 * prune_interval, ... (so a run that is
        resumed with more epochs prunes exactly as an uninterrupted one)."""
        if self.config.method != "eoinas" or self.epoch == 0 or self.epoch % self.config.prune_interval:
            return 0
        new_mask, removed = prune_step(self.importance(), self.net.mask.cpu())
        self.net.mask.copy_(new_mask.to(self.net.mask.device))
        self.result.pruned += [{"after_epoch": self.epoch, "edge": e, "op": OPS[o]} for e, o in removed]
        return len(removed)

    def _run_epoch(self, progress: Progress) -> dict[str, Any]:
        cfg = self.config
        pruned = self._prune()
        lr = self._lr(self.epoch)
        for g in self.w_opt.param_groups:
            g["lr"] = lr
        task = progress.add_task(f"{cfg.method} epoch {self.epoch + 1}/{cfg.epochs}", total=len(self.train_loader),
                                 stats="")
        t0 = time.perf_counter()
        val = self._val_batches()
        loss_sum = vloss_sum = 0.0
        correct = vcorrect = n = nv = 0
        for i, (x, y) in enumerate(self.train_loader):
            loss, c = self.weight_step(x, y)
            xv, yv = next(val)
            vloss, vc = self.arch_step(xv, yv)
            loss_sum, correct, n = loss_sum + loss * len(x), correct + c, n + len(x)
            vloss_sum, vcorrect, nv = vloss_sum + vloss * len(xv), vcorrect + vc, nv + len(xv)
            progress.update(task, completed=i + 1, stats=f"loss {loss_sum / n:.3f} val acc {vcorrect / nv:.3f}")
        n, nv = max(n, 1), max(nv, 1)
        return {"epoch": self.epoch + 1, "lr": lr, "train_loss": loss_sum / n, "train_acc": correct / n,
                "val_loss": vloss_sum / nv, "val_acc": vcorrect / nv, "pruned": pruned,
                "time_s": round(time.perf_counter() - t0, 2)}

    def _end_epoch(self, row: dict[str, Any]) -> None:
        cfg, res = self.config, self.result
        self.epoch += 1
        with torch.no_grad():
            res.alphas.append(self.net.alpha.detach().cpu().tolist())
            res.weights.append(self.net.edge_weights().detach().cpu().tolist())
        mask = self.net.mask.cpu()
        if cfg.method == "eoinas":
            imp = self.importance()
            res.importance.append(_finite(imp))
            res.cells.append(derive_cell(imp.numpy(), self.net.mask.cpu().numpy()))
        else:
            res.cells.append(derive_cell(self.net.alpha.detach().cpu().numpy(), mask.numpy()))
        res.mask = self.net.mask.cpu().tolist()
        res.cell = res.cells[-1]
        res.history.append(row)
        res.epochs_run = self.epoch

    # -- state -------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{"tensors": name -> tensor, "meta": JSON-able state} (everything `load_state_dict` needs)."""
        tensors = {f"net.{k}": v.detach().cpu().contiguous() for k, v in self.net.state_dict().items()}
        meta: dict[str, Any] = {"config": asdict(self.config), "epoch": self.epoch, "result": self.result.to_dict(),
                                "rng": rng_state(), "train_gen": self.train_gen.get_state().tolist(),
                                "val_gen": self.val_gen.get_state().tolist()}
        for name, opt in (("w_opt", self.w_opt), ("a_opt", self.a_opt)):
            t, m = optimizer_to_flat(opt)
            tensors.update({f"{name}.{k}": v.cpu() for k, v in t.items()})
            meta[name] = m
        return {"tensors": tensors, "meta": meta}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        tensors, meta = state["tensors"], state["meta"]
        saved = meta["config"]
        diff = config_changes(saved, self.config, _RESUMABLE)
        if diff:
            raise CheckpointError(f"the checkpoint was made with different options ({'; '.join(diff)}): resume with "
                                  "the same options (only epochs may change) or start a new run folder")
        self.net.load_state_dict({k[4:]: v.to(self.device) for k, v in tensors.items() if k.startswith("net.")})
        for name, opt in (("w_opt", self.w_opt), ("a_opt", self.a_opt)):
            p = name + "."
            optimizer_from_flat(opt, {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}, meta[name])
        set_rng_state(meta["rng"])
        self.train_gen.set_state(torch.tensor(meta["train_gen"], dtype=torch.uint8))
        self.val_gen.set_state(torch.tensor(meta["val_gen"], dtype=torch.uint8))
        self.epoch = int(meta["epoch"])
        r = dict(meta["result"])
        self.result = OneShotResult(**r)

    def save_checkpoint(self) -> Path | None:
        if self.run_dir is None:
            return None
        state = self.state_dict()  # one unit: state.json, written last, names its tensors file
        return commit_files(self.run_dir / CHECKPOINT, {"state.safetensors": lambda tmp: save_file(
            state["tensors"], str(tmp))}, state["meta"])

    def load_checkpoint(self) -> bool:
        """Restore the run folder's checkpoint; False when there is none."""
        if self.run_dir is None or not (self.run_dir / CHECKPOINT / "state.json").is_file():
            return False
        d = self.run_dir / CHECKPOINT
        try:
            meta, files = read_manifest(d)
            meta.pop("files", None)
            tensors = load_file(str(files.get("state.safetensors", d / "state.safetensors")))
        except (ValueError, OSError) as e:
            raise CheckpointError(f"the checkpoint in {d} is unreadable ({e}); delete it to restart") from None
        self.load_state_dict({"tensors": tensors, "meta": meta})
        return True

    def fit(self, resume: bool = False) -> OneShotResult:
        """Search to `config.epochs`; with `resume=True` continue from the run folder's checkpoint if any."""
        cfg = self.config
        if resume:
            self.load_checkpoint()
        if self.epoch >= cfg.epochs:
            return self.result
        if self.epoch == 0:
            self.save_checkpoint()  # an interrupted first epoch resumes from here
        start = time.perf_counter()
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), TextColumn("{task.fields[stats]}"), console=self.console,
                            disable=not self.progress)
        try:
            with progress:
                while self.epoch < cfg.epochs:
                    row = self._run_epoch(progress)
                    self._end_epoch(row)
                    self.result.wall_time_s += time.perf_counter() - start
                    start = time.perf_counter()
                    self.save_checkpoint()
        except KeyboardInterrupt:
            if self.run_dir is not None:
                self.console.print(f"[yellow]interrupted: epochs 1..{self.epoch} are saved in "
                                   f"{self.run_dir / CHECKPOINT} (the partial epoch is dropped); continue with "
                                   "resume[/]")
            raise
        return self.result
