"""One-shot differentiable search over the NAS-Bench-201 cell: first-order DARTS and the EoiNAS variant.

DARTS (Liu et al., ICLR 2019) relaxes every edge of the cell into a `MixedOp`, the softmax(alpha)-weighted sum of the
5 candidate ops, and trains one supernet whose cells all share the architecture parameters alpha (6 edges x 5 ops,
as in NAS-Bench-201's DARTS baseline). First-order DARTS alternates, per step, an SGD step of the weights on a train
batch and an Adam step of alpha on a validation batch; the derived cell keeps the argmax op of every edge ('none'
included, as the NAS-Bench-201 baseline does).

EoiNAS (Wang et al., "EoiNAS: Efficient one-shot NAS by operation importance", 2019) replaces "largest architecture
weight" by an operation importance indicator and prunes weak operations gradually during the search. See
`eoinas_importance` for the indicator used here.

The search is the one `slimkit.train.Trainer`: the supernet is the model, `weight_loss` (alpha held constant) the
loss of its SGD steps, and `ArchSearch` a callback that takes the alpha step after every weight step, prunes
(EoiNAS) and records alpha per epoch. Checkpoints, exact resume (also inside an epoch) and Ctrl-C are the Trainer's.

    from slimkit.nas import OneShotConfig, OneShotSearch
    result = OneShotSearch(OneShotConfig(method="eoinas", epochs=10), run_dir="runs/oneshot").fit()
    result.cell  # '|nor_conv_3x3~0|+|...'
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from slimkit.config import config_changes
from slimkit.data import DataSplits, create_dataset
from slimkit.errors import CheckpointError, ConfigError, TrainError
from slimkit.models.nb201 import ResBlock, make_op
from slimkit.nas.spaces.nb201 import EDGES, OPS, cell_to_str
from slimkit.train import Callback, TrainConfig, Trainer
from slimkit.train.checkpoint import optimizer_from_flat, optimizer_to_flat, tensor_from_json, tensor_to_json
from slimkit.train.seeding import seeded

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["ArchSearch", "MixedOp", "SuperCell", "SuperNet", "OneShotConfig", "OneShotResult", "OneShotSearch",
           "derive_cell", "eoinas_importance", "masked_softmax", "prune_step", "weight_loss"]

METHODS = ("darts", "eoinas")
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
        self.ops = nn.ModuleList(make_op(name, c) for name in OPS)
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

    @contextmanager
    def fixed_arch(self) -> Iterator[None]:
        """Alpha is a constant inside the block: a backward pass computes no gradient for it (the weight step)."""
        self.alpha.requires_grad_(False)
        try:
            yield
        finally:
            self.alpha.requires_grad_(True)

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


def weight_loss(net: SuperNet) -> Any:
    """The Trainer loss of the weight step: cross-entropy of `net` with alpha held constant (first-order DARTS)."""

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch[0], batch[1]
        with net.fixed_arch():
            logits = model(x)
        return F.cross_entropy(logits, y), logits

    return loss_fn


# -- config, result, search ------------------------------------------------------------------------------------------
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

    def train_config(self, progress: bool = True) -> TrainConfig:
        """The weight steps' recipe on the Trainer: SGD (the search brings its own, decaying every weight), cosine
        from lr to lr_min stepped once per epoch, gradients clipped."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                           nesterov=False, weight_decay=self.weight_decay, schedule="cosine", lr_min=self.lr_min,
                           lr_per_epoch=True, grad_clip=self.grad_clip, seed=self.seed, progress=progress)

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


class _Stream:
    """A data loader's generator that runs on across epochs (the one-shot search's data order since its first
    version), with its state at the start of the current epoch kept so that an epoch can be replayed on resume."""

    def __init__(self, seed: int) -> None:
        self.gen = torch.Generator().manual_seed(seed)
        self.epoch, self.start = 0, self.gen.get_state()

    def begin(self, epoch: int) -> torch.Generator:
        """The generator positioned at the start of `epoch` (replayed when the epoch was begun before)."""
        if epoch == self.epoch:
            self.gen.set_state(self.start)
        else:
            self.epoch, self.start = epoch, self.gen.get_state()
        return self.gen

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "start": tensor_to_json(self.start), "now": tensor_to_json(self.gen.get_state())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.start = int(state["epoch"]), tensor_from_json(state["start"])
        self.gen.set_state(tensor_from_json(state["now"]))


class ArchSearch(Callback):
    """The architecture side of the search, as a Trainer callback on a `SuperNet`: after every weight step an Adam
    step of alpha on the next validation batch; at the start of every `prune_interval`-th epoch an EoiNAS prune
    round; after every epoch alpha, the softmax weights, the importances and the derived cell are recorded.

    The train loader keeps its generator running across epochs (`_Stream`), so the search draws the same batches as
    before it ran on the Trainer."""

    def __init__(self, config: OneShotConfig, net: SuperNet, val_data: Any) -> None:
        self.config, self.net, self.val_data = config, net, val_data
        self.opt = torch.optim.Adam(net.arch_parameters(), lr=config.arch_lr, betas=(0.5, 0.999),
                                    weight_decay=config.arch_weight_decay)
        self.train_order, self.val_order = _Stream(config.seed), _Stream(config.seed + 1)
        self.val_loader = DataLoader(val_data, batch_size=min(config.batch_size, len(val_data)), shuffle=True,
                                     generator=self.val_order.gen)
        self.result = OneShotResult(config.method)
        self.pruned_at = 0  # the last epoch whose prune round ran
        self.seen = {"batches": 0, "loss": 0.0, "correct": 0, "images": 0}  # this epoch's alpha steps
        self._val: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.device = next(net.parameters()).device

    # -- one step of each kind --------------------------------------------------------------------------------------
    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One Adam step of alpha on a validation batch (weights untouched; first-order DARTS)."""
        self.net.train()
        x, y = x.to(self.device), y.to(self.device)
        logits = self.net(x)
        loss = F.cross_entropy(logits, y)
        if not torch.isfinite(loss):
            raise TrainError(f"one-shot alpha loss became {float(loss)}: lower arch_lr (now "
                             f"{self.config.arch_lr:.3g})")
        params = self.net.arch_parameters()
        grads = torch.autograd.grad(loss, params, allow_unused=True)  # only alpha gets a gradient
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return float(loss.detach()), int((logits.detach().argmax(1) == y).sum())

    def importance(self) -> torch.Tensor:
        """EoiNAS indicator (6 x 5) measured on the first `importance_batches` validation batches."""
        batches = []
        for x, _ in DataLoader(self.val_data, batch_size=self.val_loader.batch_size or 64):
            batches.append(x.to(self.device))
            if len(batches) >= self.config.importance_batches:
                break
        rms = self.net.op_output_rms(batches)
        with torch.no_grad():
            return eoinas_importance(self.net.edge_weights().cpu(), rms, self.net.mask.cpu())

    def _prune(self, epoch: int) -> int:
        """EoiNAS prune round, run at the start of epochs prune_interval, 2 * prune_interval, ... (so a run that is
        resumed with more epochs prunes exactly as an uninterrupted one)."""
        cfg = self.config
        if cfg.method != "eoinas" or epoch == 0 or epoch % cfg.prune_interval:
            return 0
        if self.pruned_at != epoch:
            new_mask, removed = prune_step(self.importance(), self.net.mask.cpu())
            self.net.mask.copy_(new_mask.to(self.net.mask.device))
            self.result.pruned += [{"after_epoch": epoch, "edge": e, "op": OPS[o]} for e, o in removed]
            self.pruned_at = epoch
        return sum(p["after_epoch"] == epoch for p in self.result.pruned)

    def _val_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        while True:
            yield from self.val_loader

    # -- the Trainer's hooks ----------------------------------------------------------------------------------------
    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        gen = self.train_order.begin(epoch)
        loader = trainer.train_loader
        loader.generator = gen
        if hasattr(loader.sampler, "generator"):
            loader.sampler.generator = gen
        resumed = trainer.batch_in_epoch > 0  # inside an epoch: replay its alpha steps' batches too
        if not resumed:
            self.seen = {"batches": 0, "loss": 0.0, "correct": 0, "images": 0}
            self.seen["pruned"] = self._prune(epoch)
        self.val_order.begin(epoch)
        self._val = self._val_batches()
        for _ in range(self.seen["batches"]):
            next(self._val)
        while self.seen["batches"] < trainer.batch_in_epoch:  # interrupted between a weight step and its alpha step
            self._alpha_step()

    def on_batch_end(self, trainer: Trainer, step: int, loss: float) -> None:
        self._alpha_step()

    def _alpha_step(self) -> None:
        assert self._val is not None
        xv, yv = next(self._val)
        vloss, vc = self.arch_step(xv, yv)
        s = self.seen
        s["loss"], s["correct"], s["images"] = s["loss"] + vloss * len(xv), s["correct"] + vc, s["images"] + len(xv)
        s["batches"] += 1

    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, Any]) -> None:
        s, res = self.seen, self.result
        n = max(s["images"], 1)
        metrics.update(val_loss=s["loss"] / n, val_acc=s["correct"] / n, pruned=s.get("pruned", 0))
        for records in (res.alphas, res.weights, res.importance, res.cells):
            del records[epoch:]  # an interrupted end of this epoch may have recorded part of it
        with torch.no_grad():
            res.alphas.append(self.net.alpha.detach().cpu().tolist())
            res.weights.append(self.net.edge_weights().detach().cpu().tolist())
        mask = self.net.mask.cpu()
        if self.config.method == "eoinas":
            imp = self.importance()
            res.importance.append(_finite(imp))
            res.cells.append(derive_cell(imp.numpy(), mask.numpy()))
        else:
            res.cells.append(derive_cell(self.net.alpha.detach().cpu().numpy(), mask.numpy()))
        res.mask = mask.tolist()
        res.cell = res.cells[-1]

    # -- state ------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        tensors, meta = optimizer_to_flat(self.opt)
        return {"config": asdict(self.config), "result": self.result.to_dict(), "pruned_at": self.pruned_at,
                "seen": dict(self.seen), "train_order": self.train_order.state_dict(),
                "val_order": self.val_order.state_dict(),
                "opt": {"tensors": {k: tensor_to_json(v) for k, v in tensors.items()}, "meta": meta}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        diff = config_changes(state["config"], self.config, _RESUMABLE)
        if diff:
            raise CheckpointError(f"the checkpoint was made with different options ({'; '.join(diff)}): resume with "
                                  "the same options (only epochs may change) or start a new run folder")
        opt = state["opt"]
        optimizer_from_flat(self.opt, {k: tensor_from_json(v) for k, v in opt["tensors"].items()}, opt["meta"])
        self.result = OneShotResult(**state["result"])
        self.pruned_at, self.seen = int(state["pruned_at"]), dict(state["seen"])
        self.train_order.load_state_dict(state["train_order"])
        self.val_order.load_state_dict(state["val_order"])


class OneShotSearch:
    """Runs a one-shot search on the Trainer; `fit()` trains the supernet and returns a `OneShotResult`.

    With `run_dir`, the Trainer checkpoints after every epoch (and on Ctrl-C, inside an epoch); `fit(resume=True)`
    continues from it exactly (same data order, optimiser and RNG states).
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
        info = self.splits.info
        with seeded(cfg.seed):  # the supernet's weights and alphas; the caller's generators are left as they were
            self.net = SuperNet(info.num_classes, info.in_chans, cfg.channels, cfg.cells_per_stage).to(device)
            self.arch = ArchSearch(cfg, self.net, self.splits.val)
        bs = min(cfg.batch_size, len(self.splits.train))
        self.train_loader = DataLoader(self.splits.train, batch_size=bs, shuffle=True,
                                       generator=self.arch.train_order.gen,
                                       drop_last=len(self.splits.train) >= 2 * bs)
        optimizer = torch.optim.SGD(self.net.weight_parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                    weight_decay=cfg.weight_decay, nesterov=False)
        self.trainer = Trainer(self.net, cfg.train_config(progress), self.train_loader, loss_fn=weight_loss(self.net),
                               callbacks=[self.arch], out_dir=self.run_dir, device=device, optimizer=optimizer)
        if console is not None:
            self.trainer.console = console

    def weight_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One SGD step of the supernet weights on a train batch (alpha untouched)."""
        self.net.train()
        loss, correct, _ = self.trainer.train_step((x, y))
        return loss, int(correct or 0)

    def arch_step(self, x: torch.Tensor, y: torch.Tensor) -> tuple[float, int]:
        """One Adam step of alpha on a validation batch (weights untouched; first-order DARTS)."""
        return self.arch.arch_step(x, y)

    def importance(self) -> torch.Tensor:
        return self.arch.importance()

    def fit(self, resume: bool = False) -> OneShotResult:
        """Search to `config.epochs`; with `resume=True` continue from the run folder's checkpoint if any."""
        train = self.trainer.fit(resume=resume)
        res = self.arch.result
        res.history, res.epochs_run, res.wall_time_s = train.history, train.epochs_run, train.wall_time_s
        return res
