"""Distillation tasks: a method name, a student and a (frozen) teacher -> what the generic Trainer needs.

Each method is a factory in the `DISTILLERS` registry returning a `DistillTask`: the module to train (the student,
or the student plus a projection head for SEED), a `loss_fn(model, batch)` and the callbacks that carry the
method's state through checkpoints. The losses themselves are the pure functions of this package. What a job must
know before building the task is registration metadata, read by `method_traits` (never a test of the name):
`teacher` (runs a live teacher), `supervised` (default True; False: trained without labels, the teacher is an
embedding, evaluated by linear probe) and `store` (reads teacher logits from a `LogitStore`). Each method declares
its own frozen options dataclass (a `DistillOptions` subclass) next to its factory and registers it as `options`;
`method_options(method, mapping)` builds it, so the CLI's `--option KEY=VALUE` reaches exactly that method's options.

| method    | teacher  | labels | loss                                                                     |
|-----------|----------|--------|--------------------------------------------------------------------------|
| none      | -        | yes    | cross-entropy (the from-scratch baseline)                                |
| kd        | live     | yes    | Hinton KD: alpha T^2 KL(teacher_T, student_T) + (1 - alpha) CE             |
| tfkd      | -        | yes    | Tf-KD virtual teacher (a self-teacher is `kd` with a trained student)     |
| feature   | live     | yes    | FitNets-style hint on `forward_features` through a 1x1 adapter, + KD/CE   |
| proxyless | head     | yes    | student embedding through the teacher's frozen classifier (margin option) |
| seed      | live     | no     | SEED: similarity distributions over [own teacher embedding, queue]         |
| stored    | on disk  | yes    | TinyViT sparse top-k KD read from a `LogitStore`                           |
| minivit   | live     | yes    | MiniViT: logit KD + last-layer q/k/v and MLP-hidden relation KD (ViTs)   |
| simclr    | -        | no     | SimCLR NT-Xent on two random views: SEED's teacher-free baseline          |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from slimkit.config import from_dict
from slimkit.distill.feature import FeatureAdapter, feature_kd_loss
from slimkit.distill.losses import kd_loss, kd_loss_fn, tfkd_loss
from slimkit.distill.proxyless import proxyless_kd_loss, teacher_classifier
from slimkit.distill.relation import LastLayerTaps, relation_kd_loss
from slimkit.distill.seed import SeedLoss, SeedStudent
from slimkit.distill.ssl import SimCLRLoss
from slimkit.distill.store import LogitStore
from slimkit.distill.stored_kd import StoredKDLoss
from slimkit.errors import ConfigError, DistillError
from slimkit.registry import DISTILLERS
from slimkit.train.callbacks import Callback

__all__ = ["DistillOptions", "DistillTask", "FeatureOptions", "KDOptions", "MiniViTOptions", "NoOptions",
           "ProxylessOptions", "SeedOptions", "SimCLROptions", "StoredOptions", "TfKDOptions", "create_distill_task",
           "freeze", "list_distillers", "method_options", "method_traits", "needs_teacher", "option_names",
           "options_class"]


@dataclass(frozen=True)
class DistillOptions:
    """The base of every method's options (each method registers its own frozen subclass as `options=`)."""


@dataclass(frozen=True)
class NoOptions(DistillOptions):
    """A method without options (`none`)."""


@dataclass
class DistillTask:
    model: nn.Module  # what the trainer optimises
    loss_fn: Callable[[nn.Module, Any], tuple[torch.Tensor, torch.Tensor]]
    student: nn.Module  # the student network itself (saved, evaluated, exported)
    callbacks: list[Callback] = field(default_factory=list)
    supervised: bool = True  # False: trained without labels; evaluate by linear probe
    needs_index: bool = False  # batches must be (x, y, index) (`slimkit.data.with_index`)
    teacher_forwards_per_image: float = 1.0  # teacher passes per training image per epoch


def freeze(teacher: nn.Module) -> nn.Module:
    """Eval mode, no gradients: how every method holds its teacher."""
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher


def _need_teacher(method: str, teacher: nn.Module | None) -> nn.Module:
    if teacher is None:
        raise DistillError(f"method {method!r} needs a teacher: give --teacher (and --teacher-ckpt)")
    return freeze(teacher)


def _check_classes(student: nn.Module, teacher: nn.Module) -> None:
    s, t = getattr(student, "num_classes", None), getattr(teacher, "num_classes", None)
    if s is not None and t is not None and s != t:
        raise DistillError(f"the student predicts {s} classes and the teacher {t}: build both for the same data")


@DISTILLERS.register("none", teacher=False, options=NoOptions)
def _scratch(student: nn.Module, teacher: nn.Module | None, opts: NoOptions,
        example: torch.Tensor | None = None) -> DistillTask:
    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(batch[0])
        return F.cross_entropy(logits, batch[1]), logits

    return DistillTask(student, loss_fn, student, teacher_forwards_per_image=0.0)


@dataclass(frozen=True)
class KDOptions(DistillOptions):
    temperature: float = 4.0  # softening temperature
    alpha: float = 0.9  # weight of the soft term vs cross-entropy

    def __post_init__(self) -> None:
        for name, ok, rule in (("temperature", self.temperature > 0, f"must be > 0, got {self.temperature}"),
                               ("alpha", 0 <= self.alpha <= 1, f"must be in [0, 1], got {self.alpha}")):
            if not ok:
                raise ConfigError.for_option(name, rule)


@DISTILLERS.register("kd", teacher=True, options=KDOptions)
def _kd(student: nn.Module, teacher: nn.Module | None, opts: KDOptions,
        example: torch.Tensor | None = None) -> DistillTask:
    teacher = _need_teacher("kd", teacher)
    _check_classes(student, teacher)
    return DistillTask(student, kd_loss_fn(teacher, opts.temperature, opts.alpha), student)  # compress's KD too


@dataclass(frozen=True)
class TfKDOptions(DistillOptions):
    temperature: float = 20.0  # softening temperature of the virtual teacher
    alpha: float = 0.1  # weight of the soft term vs cross-entropy
    correct_prob: float = 0.9  # the virtual teacher's probability on the label


@DISTILLERS.register("tfkd", teacher=False, options=TfKDOptions)
def _tfkd(student: nn.Module, teacher: nn.Module | None, opts: TfKDOptions,
        example: torch.Tensor | None = None) -> DistillTask:
    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        s = model(batch[0])
        return tfkd_loss(s, batch[1], correct_prob=opts.correct_prob, temperature=opts.temperature,
                         alpha=opts.alpha), s

    return DistillTask(student, loss_fn, student, teacher_forwards_per_image=0.0)


class _FeatureKD(nn.Module):
    """Holds the adapter (trained with the student, saved in checkpoints) and computes hint + KD/CE."""

    def __init__(self, teacher: nn.Module, adapter: FeatureAdapter, temperature: float, alpha: float,
                 weight: float, normalize: bool) -> None:
        super().__init__()
        self.adapter = adapter
        self.teacher = [teacher]  # a list keeps the frozen teacher out of this module's parameters and state
        self.temperature, self.alpha, self.weight, self.normalize = temperature, alpha, weight, normalize

    def forward(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch[0], batch[1]
        teacher = self.teacher[0]
        with torch.no_grad():
            t_feat = teacher.forward_features(x)
            t_logits = teacher.forward_head(t_feat)
        s_feat = model.forward_features(x)
        logits = model.forward_head(s_feat)
        hint = feature_kd_loss(self.adapter(s_feat, tuple(t_feat.shape[-2:])), t_feat, self.normalize)
        task = kd_loss(logits, t_logits, y, temperature=self.temperature, alpha=self.alpha) if self.alpha > 0 \
            else F.cross_entropy(logits, y)
        return task + self.weight * hint, logits


def _feature_channels(model: nn.Module, x: torch.Tensor, who: str) -> tuple[int, torch.Tensor]:
    if not hasattr(model, "forward_features") or not hasattr(model, "forward_head"):
        raise DistillError(f"feature distillation needs forward_features / forward_head on the {who} (slimkit and "
                           f"timm models have them); {type(model).__name__} does not")
    was = model.training
    model.eval()
    with torch.no_grad():
        f = model.forward_features(x)
    model.train(was)
    if f.dim() != 4:
        raise DistillError(f"feature distillation matches N x C x H x W maps, but the {who}'s forward_features gives "
                           f"{tuple(f.shape)} (a transformer?); use --method kd or stored")
    return f.shape[1], f


@dataclass(frozen=True)
class FeatureOptions(DistillOptions):
    temperature: float = 4.0  # softening temperature of the logit term
    alpha: float = 0.5  # weight of the soft logit term vs cross-entropy (0: cross-entropy only)
    feature_weight: float = 1.0  # weight of the hint (MSE) term
    feature_normalize: bool = False  # compare L2-normalised maps (scale-free)


@DISTILLERS.register("feature", teacher=True, options=FeatureOptions)
def _feature(student: nn.Module, teacher: nn.Module | None, opts: FeatureOptions,
             example: torch.Tensor | None = None) -> DistillTask:
    teacher = _need_teacher("feature", teacher)
    _check_classes(student, teacher)
    if example is None:
        raise DistillError("feature distillation needs an example input to size its adapter")
    cs, _ = _feature_channels(student, example, "student")
    ct, _ = _feature_channels(teacher, example, "teacher")
    loss = _FeatureKD(teacher, FeatureAdapter(cs, ct), opts.temperature, opts.alpha, opts.feature_weight,
                      opts.feature_normalize)
    return DistillTask(student, loss, student)


@dataclass(frozen=True)
class ProxylessOptions(DistillOptions):
    margin_kind: str = "softmax"  # softmax, arcface or cosface
    margin: float = 0.0  # the angular / cosine margin
    scale: float = 30.0  # logit scale of the margin variants


@DISTILLERS.register("proxyless", teacher=True, options=ProxylessOptions)
def _proxyless(student: nn.Module, teacher: nn.Module | None, opts: ProxylessOptions,
        example: torch.Tensor | None = None) -> DistillTask:
    """The student's classifier becomes a frozen copy of the teacher's; its embedding learns to fit it."""
    teacher = _need_teacher("proxyless", teacher)
    weight, bias = teacher_classifier(teacher)
    head = student.get_classifier() if hasattr(student, "get_classifier") else None
    if not isinstance(head, nn.Linear) or head.weight.shape != weight.shape:
        got = tuple(head.weight.shape) if isinstance(head, nn.Linear) else type(head).__name__
        raise DistillError(f"ProxylessKD gives the student the teacher's classifier {tuple(weight.shape)}, but the "
                           f"student's is {got}: choose a student whose num_features equals the teacher's "
                           f"({weight.shape[1]}) or add a projection")
    with torch.no_grad():
        head.weight.copy_(weight)
        if head.bias is not None:
            head.bias.copy_(bias if bias is not None else torch.zeros_like(head.bias))
    for p in head.parameters():
        p.requires_grad_(False)

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        emb = model.forward_head(model.forward_features(batch[0]), pre_logits=True)
        h = model.get_classifier()
        loss = proxyless_kd_loss(emb, h.weight, batch[1], h.bias, kind=opts.margin_kind, margin=opts.margin,
                                 scale=opts.scale)
        return loss, F.linear(emb, h.weight, h.bias)

    return DistillTask(student, loss_fn, student, teacher_forwards_per_image=0.0)


@dataclass(frozen=True)
class SeedOptions(DistillOptions):
    queue_size: int = 4096  # teacher embeddings kept as negatives
    t_student: float = 0.2  # student temperature
    t_teacher: float = 0.07  # teacher temperature (sharper)


@DISTILLERS.register("seed", teacher=True, supervised=False, options=SeedOptions)
def _seed(student: nn.Module, teacher: nn.Module | None, opts: SeedOptions,
        example: torch.Tensor | None = None) -> DistillTask:
    teacher = _need_teacher("seed", teacher)
    dim = getattr(teacher, "num_features", None)
    if not isinstance(dim, int) or not hasattr(student, "num_features"):
        raise DistillError("SEED needs a teacher and a student with `num_features` and forward_head(pre_logits=True)"
                           " (slimkit and timm models have them)")
    loss = SeedLoss(teacher, opts.queue_size, opts.t_student, opts.t_teacher)
    return DistillTask(SeedStudent(student, dim), loss, student, callbacks=[loss], supervised=False)


@dataclass(frozen=True)
class SimCLROptions(DistillOptions):
    proj_dim: int = 128  # projection head width
    ssl_temperature: float = 0.2  # NT-Xent temperature


@DISTILLERS.register("simclr", teacher=False, supervised=False, options=SimCLROptions)
def _simclr(student: nn.Module, teacher: nn.Module | None, opts: SimCLROptions,
            example: torch.Tensor | None = None) -> DistillTask:
    if not hasattr(student, "num_features"):
        raise DistillError("SimCLR needs a student with `num_features` and forward_head(pre_logits=True)")
    loss = SimCLRLoss(opts.ssl_temperature)
    return DistillTask(SeedStudent(student, opts.proj_dim), loss, student, callbacks=[loss], supervised=False,
                       teacher_forwards_per_image=0.0)


@dataclass(frozen=True)
class StoredOptions(DistillOptions):
    temperature: float = 1.0  # softening temperature of the stored logits
    alpha: float = 1.0  # weight of the soft term vs cross-entropy
    store: str | None = None  # the LogitStore folder
    cycle_store: bool = False  # train longer than the store, replaying its epochs in turn (epoch mod E)
    store_views: str = "replay"  # replay the stored augmentation, "fresh" ones (targets approx.) or "clean"


@DISTILLERS.register("stored", teacher=False, store=True, options=StoredOptions)
def _stored(student: nn.Module, teacher: nn.Module | None, opts: StoredOptions,
        example: torch.Tensor | None = None) -> DistillTask:
    if opts.store is None:
        raise DistillError("method 'stored' reads teacher logits from a store: give its folder (store=...), built by "
                           "`slimkit distill store-logits`")
    loss = StoredKDLoss(LogitStore(opts.store), temperature=opts.temperature, alpha=opts.alpha, cycle=opts.cycle_store,
                        views=opts.store_views)
    return DistillTask(student, loss, student, callbacks=[loss], needs_index=True, teacher_forwards_per_image=0.0)


@dataclass(frozen=True)
class MiniViTOptions(DistillOptions):
    temperature: float = 1.0  # softening temperature of the logit term
    alpha: float = 1.0  # weight of the soft logit term vs cross-entropy
    attn_relation_weight: float = 1.0  # weight of the last layer's q/k/v relation KD
    hidden_relation_weight: float = 1.0  # weight of the last layer's MLP hidden-state relation KD


@DISTILLERS.register("minivit", teacher=True, vit=True, options=MiniViTOptions)
def _minivit(student: nn.Module, teacher: nn.Module | None, opts: MiniViTOptions,
             example: torch.Tensor | None = None) -> DistillTask:
    """MiniViT's distillation (soft logits at T=1 by default, plus relations of the last layer's q, k, v and MLP
    hidden states, `slimkit.distill.relation`), for a (multiplexed) ViT student of a ViT teacher."""
    teacher = _need_teacher("minivit", teacher)
    _check_classes(student, teacher)
    s_taps, t_taps = LastLayerTaps(student), LastLayerTaps(teacher)
    heads = t_taps.num_heads

    def loss_fn(model: nn.Module, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            t = teacher(batch[0])
        s = model(batch[0])
        loss = kd_loss(s, t, batch[1], temperature=opts.temperature, alpha=opts.alpha)
        if opts.attn_relation_weight:
            pairs = zip(s_taps.qkv_parts(), t_taps.qkv_parts(), strict=True)
            loss = loss + opts.attn_relation_weight * sum(relation_kd_loss(a, b, heads) for a, b in pairs) / 3
        if opts.hidden_relation_weight:
            loss = loss + opts.hidden_relation_weight * relation_kd_loss(s_taps.hidden, t_taps.hidden, heads)
        return loss, s

    return DistillTask(student, loss_fn, student)


def create_distill_task(method: str, student: nn.Module, teacher: nn.Module | None = None,
                        options: DistillOptions | Mapping[str, Any] | None = None,
                        example: torch.Tensor | None = None) -> DistillTask:
    """Build the task for `method` (see `list_distillers()`); `options` are the method's options (its dataclass, a
    mapping of them, or None for the defaults); `example` is one input batch (feature sizes)."""
    return DISTILLERS.get(method)(student, teacher, method_options(method, options), example)


def options_class(method: str) -> type[DistillOptions]:
    """The options dataclass `method` registered."""
    return DISTILLERS.meta(method).get("options", NoOptions)


def method_options(method: str, options: DistillOptions | Mapping[str, Any] | None = None) -> DistillOptions:
    """`method`'s options from its dataclass, a mapping (CLI / YAML values, read with `slimkit.config.from_dict`) or
    None (its defaults). An option of another method is refused naming the method it belongs to; another method's
    options object at its defaults counts as none given."""
    cls = options_class(method)
    if options is None:
        return cls()
    if isinstance(options, DistillOptions):
        if not isinstance(options, cls) and options == type(options)():
            return cls()  # another method's defaults say nothing (e.g. replace(job_config, method=...))
        if not isinstance(options, cls):
            raise ConfigError(f"{type(options).__name__} are not the options of method {method!r}: give "
                              f"{cls.__name__} (or a mapping of its fields)")
        return options
    if not isinstance(options, Mapping):
        raise ConfigError(f"options of method {method!r} must be {cls.__name__} or a mapping of its fields, got "
                          f"{type(options).__name__}")
    mine = {f.name for f in fields(cls)}
    for key in options:
        name = str(key).replace("-", "_")
        owners = [m for m in list_distillers() if name in {f.name for f in fields(options_class(m))}]
        if name not in mine and owners:
            takes = ", ".join(sorted(mine)) or "no options"
            raise ConfigError(f"option {name!r} belongs to method {' / '.join(owners)}, not {method!r} ({method} "
                              f"takes: {takes})", option=f"options.{name}",
                              detail=f"is an option of {' / '.join(owners)}, not of {method} ({takes})")
    return from_dict(cls, options, where="options")


def option_names() -> list[str]:
    """Every registered method's option names (what a flat config key may route to)."""
    return sorted({f.name for m in list_distillers() for f in fields(options_class(m))})


def list_distillers() -> list[str]:
    return DISTILLERS.list()


def needs_teacher(method: str) -> bool:
    """Does `method` run a teacher network while the student trains? ('stored' reads its store instead.)"""
    return method_traits(method)["teacher"]


def method_traits(method: str) -> dict[str, bool]:
    """What a job needs to know of `method` before building its task, from its registration: `teacher` (runs a live
    teacher), `supervised` (trained with labels), `store` (reads teacher logits from a `LogitStore`) and `vit` (its
    student and teacher must be ViT-style models)."""
    meta = DISTILLERS.meta(method)
    return {"teacher": bool(meta.get("teacher", False)), "supervised": bool(meta.get("supervised", True)),
            "store": bool(meta.get("store", False)), "vit": bool(meta.get("vit", False))}
