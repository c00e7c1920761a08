"""Training a student from a `LogitStore` (TinyViT-style sparse soft targets): the loss and the Trainer adapter."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.distill.store import LogitStore
from slimkit.errors import DistillError
from slimkit.train.callbacks import Callback

__all__ = ["StoredKDLoss", "sparse_kd_loss", "sparse_soft_target"]


def sparse_soft_target(topk_values: torch.Tensor, topk_indices: torch.Tensor, num_classes: int) -> torch.Tensor:
    """TinyViT's dense target from sparse labels: the stored probabilities at their classes, the remaining mass
    1 - sum(top-k) spread evenly over the other C - k classes (renormalised to absorb fp16 rounding)."""
    v = topk_values.float()
    rest = (1.0 - v.sum(1, keepdim=True)).clamp_min(0.0) / max(num_classes - v.shape[1], 1)
    target = rest.repeat(1, num_classes).scatter(1, topk_indices.long(), v)
    return target / target.sum(1, keepdim=True)


def sparse_kd_loss(student_logits: torch.Tensor, topk_values: torch.Tensor, topk_indices: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """T^2 * KL(q_T || softmax(s / T)) against TinyViT's sparse target q (`sparse_soft_target`), batch mean.

    TinyViT trains with soft-target cross-entropy at T = 1; KL differs from it only by q's entropy, a constant, so
    the gradients are the same. For T != 1, q_T is q ** (1/T) renormalised, which on the top-k classes equals the
    full teacher's softmax(t / T) up to the common normaliser (only the uniform tail is approximate).
    """
    if topk_values.shape != topk_indices.shape or topk_values.dim() != 2 or student_logits.dim() != 2 or \
            len(topk_values) != len(student_logits) or topk_values.shape[1] > student_logits.shape[1]:
        raise DistillError(f"student logits {tuple(student_logits.shape)} vs top-k values "
                           f"{tuple(topk_values.shape)} and indices {tuple(topk_indices.shape)}: need N x C logits and "
                           "N x k top-k with k <= C, for the same N images")
    if temperature <= 0:
        raise DistillError(f"temperature must be > 0, got {temperature}")
    target = sparse_soft_target(topk_values, topk_indices, student_logits.shape[1])
    if temperature != 1.0:
        target = torch.softmax(target.log() / temperature, dim=1)  # log 0 = -inf -> probability 0
    log_q = F.log_softmax(student_logits / temperature, dim=1)
    return F.kl_div(log_q, target.to(log_q.dtype), reduction="batchmean") * temperature**2


class StoredKDLoss(Callback):
    """Trainer `loss_fn(model, batch)` distilling from a `LogitStore`, and the callback that tells it the epoch.

    Pass the same object as `loss_fn=` and in `callbacks=`; batches must be `(x, y, index)`
    (`slimkit.data.with_index`). Loss: alpha * sparse_kd_loss + (1 - alpha) * CE (TinyViT: alpha = 1, T = 1).
    With `cycle=True` training may run longer than the store: epoch e reads stored epoch e mod E, so E stored
    epochs cost E/epochs of the teacher compute. `views` says what the student sees then: "replay" (TinyViT: the
    dataset is told to replay that stored epoch's augmentation, so targets match the images exactly, but a short
    store repeats the same crops every cycle) or "fresh" (the dataset keeps drawing new augmentations and each image's
    stored target comes from an earlier view of it: classic offline KD, augmentation diversity kept, targets
    approximate), or "clean" (like fresh, but the store holds the teacher on the un-augmented images, written with
    `augment=False`: one teacher pass over the data, and each new view's target comes from the centred image
    rather than from another random crop).
    """

    def __init__(self, store: LogitStore, temperature: float = 1.0, alpha: float = 1.0, cycle: bool = False,
                 views: str = "replay") -> None:
        if not 0.0 <= alpha <= 1.0:
            raise DistillError(f"alpha must be in [0, 1], got {alpha}")
        if views not in ("replay", "fresh", "clean"):
            raise DistillError(f"views must be 'replay' (the stored augmentation), 'fresh' (new ones) or 'clean' (new "
                               f"ones, targets from a store of un-augmented images), got {views!r}")
        # a clean store holds one view per image, read every epoch: cycling is implied
        self.store, self.temperature, self.alpha, self.epoch = store, temperature, alpha, 0
        self.cycle = cycle or views == "clean"
        self.views = views

    def on_train_start(self, trainer: Any) -> None:
        if self.views == "clean" and self.store.manifest["dataset"].get("augment", False):
            raise DistillError(f"views='clean' needs a store of un-augmented images, but logit store {self.store.root} "
                               "was written with augmentation: rebuild it with `slimkit distill store-logits "
                               "--no-augment`, or use views='fresh'")
        # new views are drawn either way except in replay: only the images themselves must match the store's
        self.store.check_dataset(trainer.train_loader.dataset, augmentation=self.views == "replay")
        epochs = getattr(getattr(trainer, "config", None), "epochs", None)
        if epochs is not None:  # every shard the run will read, checked before training
            self.store.check(min(epochs, self.store.epochs) if self.cycle else epochs)

    def on_epoch_start(self, trainer: Any, epoch: int) -> None:
        self.epoch = int(epoch) % self.store.epochs if self.cycle else int(epoch)
        if self.cycle and self.views == "replay":  # the trainer set `epoch` on the data; replay the stored one
            dataset = trainer.train_loader.dataset
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(self.epoch)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state.get("epoch", 0))

    def __call__(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        if not isinstance(batch, (tuple, list)) or len(batch) < 3:
            raise DistillError("stored-logit distillation needs (x, y, index) batches: wrap the training dataset "
                               "with slimkit.data.with_index(dataset)")
        x, y, idx = batch[0], batch[1], batch[2]
        values, classes = self.store.lookup(self.epoch, idx)
        logits = model(x)
        loss = sparse_kd_loss(logits, values.to(logits.device), classes.to(logits.device), self.temperature)
        if self.alpha < 1.0:
            loss = self.alpha * loss + (1.0 - self.alpha) * F.cross_entropy(logits, y)
        return loss, logits
