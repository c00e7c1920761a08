import copy
import dataclasses

import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from slimkit.distill import kd_loss, seed_loss
from slimkit.distill.tasks import (
    DistillOptions,
    FeatureOptions,
    KDOptions,
    SeedOptions,
    SimCLROptions,
    create_distill_task,
    list_distillers,
    method_options,
    options_class,
)
from slimkit.errors import ConfigError, DistillError, UnknownNameError
from slimkit.models import create_model
from slimkit.train import TrainConfig, Trainer


def _pair(student="convnet_small", teacher="convnet_small", classes=5):
    torch.manual_seed(0)
    return create_model(student, num_classes=classes, in_chans=1), create_model(teacher, num_classes=classes,
                                                                                 in_chans=1)


def _batch(n=6, classes=5):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g)


@pytest.mark.parametrize("method", list_distillers())
def test_every_method_declares_its_own_frozen_options(method):
    """The contract: each method registers a frozen DistillOptions subclass; None, its instance and a mapping of its
    fields give the same options; another method's option is refused naming its owner."""
    cls = options_class(method)
    assert issubclass(cls, DistillOptions) and cls.__dataclass_params__.frozen
    defaults = cls()
    assert method_options(method, None) == defaults and method_options(method, defaults) is defaults
    assert method_options(method, dataclasses.asdict(defaults)) == defaults
    others = {f.name: f.default for m in list_distillers() for f in dataclasses.fields(options_class(m))
              if f.name not in {g.name for g in dataclasses.fields(cls)}}
    for name, value in list(others.items())[:2]:
        with pytest.raises(ConfigError, match=f"option '{name}' belongs to method"):
            method_options(method, {name: value})
    with pytest.raises(ConfigError, match="unknown option"):
        method_options(method, {"no_such_option": 1})


def test_the_method_defaults_are_those_of_the_flat_options_before_the_split():
    """Hand-copied from the old table (temperature, alpha per method): no behaviour change."""
    old = {"kd": (4.0, 0.9), "feature": (4.0, 0.5), "tfkd": (20.0, 0.1), "stored": (1.0, 1.0), "minivit": (1.0, 1.0)}
    for method, (t, a) in old.items():
        opts = options_class(method)()
        assert (opts.temperature, opts.alpha) == (t, a)
    assert KDOptions() == method_options("kd", SeedOptions())  # another method's defaults say nothing
    with pytest.raises(ConfigError, match="SeedOptions are not the options of method 'kd'"):
        method_options("kd", SeedOptions(queue_size=8))


def test_every_method_is_registered():
    assert set(list_distillers()) >= {"none", "kd", "tfkd", "feature", "proxyless", "seed", "stored"}
    with pytest.raises(UnknownNameError, match="distillation method"):
        create_distill_task("kdd", *_pair())


def test_kd_task_loss_equals_the_pure_loss_with_a_frozen_teacher():
    student, teacher = _pair()
    task = create_distill_task("kd", student, teacher, KDOptions(temperature=3.0, alpha=0.7))
    x, y = _batch()
    loss, logits = task.loss_fn(student, (x, y))
    expected = kd_loss(student(x), teacher(x), y, temperature=3.0, alpha=0.7)
    torch.testing.assert_close(loss, expected)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_methods_without_teacher_or_with_other_classes_are_refused():
    student, _ = _pair()
    for m in ("kd", "feature", "proxyless", "seed"):
        with pytest.raises(DistillError, match="needs a teacher"):
            create_distill_task(m, student, None)
    _, other = _pair(classes=7)
    with pytest.raises(DistillError, match="5 classes and the teacher 7"):
        create_distill_task("kd", student, other)


def test_proxyless_student_inherits_the_frozen_teacher_classifier():
    student, teacher = _pair()
    task = create_distill_task("proxyless", student, teacher)
    torch.testing.assert_close(student.get_classifier().weight, teacher.get_classifier().weight)
    x, y = _batch()
    loss, logits = task.loss_fn(student, (x, y))
    torch.testing.assert_close(logits, student(x))  # the student's own head now is the teacher's
    torch.testing.assert_close(loss, F.cross_entropy(student(x), y))
    loss.backward()
    assert student.get_classifier().weight.grad is None
    narrow, wide = _pair("convnet_tiny", "convnet_small")
    with pytest.raises(DistillError, match="num_features"):
        create_distill_task("proxyless", narrow, wide)


def test_feature_task_trains_its_adapter_and_checkpoints_it(tmp_path):
    student, teacher = _pair("convnet_tiny", "convnet_small")
    x, y = _batch()
    task = create_distill_task("feature", student, teacher, FeatureOptions(alpha=0.0, feature_weight=2.0),
                               example=x)
    loss, logits = task.loss_fn(student, (x, y))
    s_feat, t_feat = student.forward_features(x), teacher.forward_features(x)
    hint = F.mse_loss(task.loss_fn.adapter(s_feat, tuple(t_feat.shape[-2:])), t_feat)
    torch.testing.assert_close(loss, F.cross_entropy(logits, y) + 2.0 * hint)
    loader = DataLoader(TensorDataset(x, y), batch_size=6)
    trainer = Trainer(student, TrainConfig(epochs=1, lr=0.01, progress=False), loader, loss_fn=task.loss_fn,
                      out_dir=tmp_path)
    before = copy.deepcopy(task.loss_fn.adapter.state_dict())
    trainer.fit()
    assert not torch.equal(before["proj.0.weight"], task.loss_fn.adapter.proj[0].weight)  # the adapter learns
    assert any(k.startswith("loss.adapter") for k in trainer._state_module.state_dict())
    vit = create_model("t2t_vit_7", num_classes=5, in_chans=1)
    with pytest.raises(DistillError, match="N x C x H x W"):
        create_distill_task("feature", vit, teacher, example=torch.randn(1, 1, 32, 32))


def test_seed_task_is_unsupervised_and_its_queue_survives_a_checkpoint():
    student, teacher = _pair("convnet_tiny", "convnet_small")
    task = create_distill_task("seed", student, teacher, SeedOptions(queue_size=8))
    assert not task.supervised and task.callbacks == [task.loss_fn]
    x, _ = _batch()
    task.model.train()
    task.loss_fn(task.model, (x,))
    loss, _ = task.loss_fn(task.model, (x,))
    q = task.loss_fn.queue.content().clone()
    t = task.loss_fn.teacher_embed(x)
    torch.testing.assert_close(loss, seed_loss(task.model(x), t, q[:6], 0.2, 0.07))  # queue before 2nd enqueue
    fresh = create_distill_task("seed", *_pair("convnet_tiny", "convnet_small"), SeedOptions(queue_size=8))
    fresh.loss_fn.load_state_dict(task.loss_fn.state_dict())
    torch.testing.assert_close(fresh.loss_fn.queue.content(), task.loss_fn.queue.content())
    assert len(fresh.loss_fn.queue) == 8


def test_stored_needs_a_store():
    with pytest.raises(DistillError, match="store-logits"):
        create_distill_task("stored", _pair()[0])


def test_nt_xent_equals_a_loop_over_anchors():
    from slimkit.distill import nt_xent_loss
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(4, 5, generator=g, requires_grad=True), torch.randn(4, 5, generator=g)
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    terms = []
    for i in range(8):
        j = (i + 4) % 8
        others = [k for k in range(8) if k != i]
        logits = torch.stack([z[i] @ z[k] / 0.5 for k in others])
        terms.append(-(z[i] @ z[j] / 0.5 - torch.logsumexp(logits, 0)))
    expected = torch.stack(terms).mean()
    loss = nt_xent_loss(z1, z2, 0.5)
    torch.testing.assert_close(loss, expected)
    (g1,) = torch.autograd.grad(loss, z1)
    (g2,) = torch.autograd.grad(expected, z1)
    torch.testing.assert_close(g1, g2)


def test_random_views_crop_flip_are_real_crops_of_the_padded_image():
    from slimkit.distill import random_views
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6)
    v = random_views(x, torch.Generator().manual_seed(0), pad=2, flip=True, jitter=0.0)
    padded = F.pad(x, (2,) * 4)
    for n in range(2):
        windows = [padded[n, :, a:a + 6, b:b + 6] for a in range(5) for b in range(5)]
        assert any(torch.equal(v[n], w) or torch.equal(v[n], w.flip(-1)) for w in windows)
    a = random_views(x, torch.Generator().manual_seed(5))
    b = random_views(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_simclr_task_needs_no_teacher_and_learns():
    student, _ = _pair("convnet_tiny")
    task = create_distill_task("simclr", student, None, SimCLROptions(proj_dim=16))
    assert not task.supervised and task.teacher_forwards_per_image == 0
    x, _ = _batch(8)
    loss, scores = task.loss_fn(task.model, (x,))
    assert scores is None and task.model(x).shape == (8, 16) and loss > 0  # no class scores: no training accuracy
    loss.backward()
    head = {id(p) for p in student.get_classifier().parameters()}  # SimCLR trains the backbone, not the classifier
    assert all(p.grad is not None for p in student.parameters() if id(p) not in head)


@pytest.mark.parametrize("method", list_distillers())
def test_every_registered_method_trains_a_step_and_its_traits_match_its_task(method, tmp_path):
    """The registry contract: a new method appears here (and in the CLI help and the job's dispatch) by registering."""
    from slimkit.data import with_index
    from slimkit.distill.store import write_logit_store
    from slimkit.distill.tasks import method_traits

    traits = method_traits(method)
    if traits["vit"]:  # a tiny timm DeiT pair for methods that read transformer internals
        pytest.importorskip("timm")
        vit = dict(img_size=8, patch_size=2, embed_dim=16, depth=2, num_heads=2)
        torch.manual_seed(0)
        student, teacher = (create_model("timm:deit_tiny_patch16_224", num_classes=5, in_chans=1, **vit)
                            for _ in range(2))
    else:
        student, teacher = _pair()
    x, y = _batch()
    small = {"queue_size": 8}  # tiny batches: whatever option of the method needs shrinking
    opts = {k: v for k, v in small.items() if k in {f.name for f in dataclasses.fields(options_class(method))}}
    if traits["store"]:
        write_logit_store(teacher, TensorDataset(x, y), tmp_path / "store", 1, 3, progress=False)
        opts["store"] = str(tmp_path / "store")
    if traits["teacher"]:
        with pytest.raises(DistillError, match="needs a teacher"):
            create_distill_task(method, copy.deepcopy(student), None, opts, example=x[:2])
    task = create_distill_task(method, student, teacher if traits["teacher"] else None, opts, example=x[:2])
    assert task.supervised == traits["supervised"] and task.needs_index == traits["store"]
    batch = (x, y, torch.arange(len(x))) if task.needs_index else (x, y)
    if task.needs_index:
        assert isinstance(with_index(TensorDataset(x, y))[0], tuple)
    for cb in task.callbacks:
        cb.on_epoch_start(None, 0)
    before = [p.detach().clone() for p in task.student.parameters() if p.requires_grad]
    opt = torch.optim.SGD([p for p in task.model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # SEED's first step has an empty queue (one candidate: no gradient yet)
        loss, _ = task.loss_fn(task.model, batch)
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = [p for p in task.student.parameters() if p.requires_grad]
    assert any(not torch.equal(a, b) for a, b in zip(before, after, strict=True))
    assert teacher is None or all(p.grad is None for p in teacher.parameters())


def test_distill_kd_and_compress_kd_are_one_loss():
    """`slimkit distill --method kd` and `slimkit compress --distill` fine-tune with the same loss function."""
    from slimkit.distill import kd_loss_fn

    student, teacher = _pair()
    x, y = _batch()
    task = create_distill_task("kd", student, teacher, KDOptions(temperature=2.0, alpha=0.6))
    a, _ = task.loss_fn(student, (x, y))
    b, _ = kd_loss_fn(teacher, 2.0, 0.6)(student, (x, y))
    assert torch.equal(a, b)
    torch.testing.assert_close(a, 0.6 * 4.0 * F.kl_div(F.log_softmax(student(x) / 2, 1), F.softmax(teacher(x) / 2, 1),
                                                       reduction="batchmean") + 0.4 * F.cross_entropy(student(x), y))
