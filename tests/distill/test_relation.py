import math

import pytest
import torch

from slimkit.distill.relation import LastLayerTaps, relation, relation_kd_loss
from slimkit.distill.tasks import MiniViTOptions, create_distill_task
from slimkit.errors import DistillError
from slimkit.models import create_model, multiplex


def test_relation_kd_equals_a_hand_computation():
    torch.manual_seed(0)
    s, t = torch.randn(2, 5, 6), torch.randn(2, 5, 6)
    total = 0.0
    for b in range(2):
        for h in range(3):  # 3 heads of width 2
            rs = torch.softmax(s[b, :, 2 * h:2 * h + 2] @ s[b, :, 2 * h:2 * h + 2].T / math.sqrt(2), -1)
            rt = torch.softmax(t[b, :, 2 * h:2 * h + 2] @ t[b, :, 2 * h:2 * h + 2].T / math.sqrt(2), -1)
            total += float((rt * (rt.log() - rs.log())).sum())  # KL summed over the rows' entries
    assert float(relation_kd_loss(s, t, 3)) == pytest.approx(total / (2 * 3 * 5), rel=1e-5)
    assert float(relation_kd_loss(t, t, 3)) == pytest.approx(0.0, abs=1e-6)
    assert relation(s, 3).exp().sum(-1).allclose(torch.ones(2, 3, 5))
    with pytest.raises(DistillError, match="divisible"):
        relation(s, 4)


def test_taps_keep_the_last_layer_of_a_multiplexed_model():
    torch.manual_seed(0)
    base = create_model("t2t_vit_7", num_classes=10, in_chans=1, small_input=True).eval()
    mini = multiplex(base, share=3)  # groups 3, 3, 1: the last layer is the third group's only one
    taps = LastLayerTaps(mini)
    seen = []
    mini.blocks[-1].attn.qkv.register_forward_hook(lambda m, i, o: seen.append(o))
    with torch.no_grad():
        mini(torch.randn(2, 1, 28, 28))
    assert taps.num_heads == 4 and len(seen) == 1 and taps.qkv is seen[-1]
    assert taps.hidden.shape == (2, 50, 512)  # 7x7 tokens + class token, MLP width 512
    with pytest.raises(DistillError, match="ViT-style"):
        LastLayerTaps(create_model("resnet20"))


@pytest.mark.parametrize("method", ["kd", "minivit"])
def test_multiplexed_student_distils_a_step_from_the_unshared_teacher(method):
    torch.manual_seed(0)
    teacher = create_model("t2t_vit_7", num_classes=10, in_chans=1, small_input=True)
    student = create_model("mini_t2t_vit_7", num_classes=10, in_chans=1, small_input=True)
    task = create_distill_task(method, student, teacher)
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    opt = torch.optim.AdamW(task.model.parameters(), 1e-3)
    loss, logits = task.loss_fn(task.model, (x, y))
    assert logits.shape == (4, 10) and torch.isfinite(loss) and loss > 0
    loss.backward()
    shared = student.blocks[0].attn.qkv.weight
    assert shared.grad is not None and shared.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # frozen
    before = shared.detach().clone()
    opt.step()
    assert not torch.equal(before, shared)
    if method == "minivit":  # the relation terms are part of the loss: a student equal to its teacher pays none
        twin = create_distill_task("minivit", multiplex(teacher, share=1), teacher,
                                   MiniViTOptions(temperature=1.0, alpha=1.0))
        twin_loss, _ = twin.loss_fn(twin.model, (x, y))
        assert twin_loss.item() == pytest.approx(0.0, abs=1e-5)
