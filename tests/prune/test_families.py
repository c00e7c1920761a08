"""A broad set of timm / torchvision families, random init, small inputs, half the MACs: the returned model runs,
keeps its output shape and has fewer MACs; a model slimkit cannot bring to the budget is refused with a clear
SlimkitError before anything is returned. (The full sweep, one model per family, is
`benchmarks/prune_vs_torch_pruning.py --coverage`.)"""

import re
import warnings

import pytest
import torch

from slimkit.errors import BudgetError
from slimkit.models import create_model
from slimkit.profile import count_macs
from slimkit.prune import prune

pytest.importorskip("timm")

# spec, input size, build kwargs. timm's test_* models are the real architectures at tiny widths: fast
FAST = [
    ("timm:test_resnet", 32, {}), ("timm:test_vit", 32, {"img_size": 32}), ("timm:test_convnext", 32, {}),
    ("timm:test_efficientnet_gn", 32, {}), ("timm:test_nfnet", 32, {}), ("timm:test_byobnet", 32, {}),
    ("torchvision:shufflenet_v2_x0_5", 32, {}),
]
# the models the issue found broken or unprunable, and layouts of their kind
SLOW = [
    ("timm:skresnet18", 64, {}), ("timm:res2net50_14w_8s", 64, {}), ("timm:inception_next_atto", 64, {}),
    ("timm:nf_regnet_b0", 64, {}), ("timm:coat_lite_tiny", 64, {"img_size": 64}),
    ("timm:vit_srelpos_small_patch16_224", 64, {"img_size": 64}), ("timm:volo_d1_224", 64, {"img_size": 64}),
    ("timm:cs3darknet_focus_s", 64, {}), ("timm:cait_xxs24_224", 64, {"img_size": 64}),
    ("timm:pit_ti_224", 64, {"img_size": 64}), ("timm:poolformerv2_s12", 64, {}),
    ("timm:hiera_tiny_224", 64, {"img_size": 64}), ("timm:crossvit_tiny_240", 240, {}),
    ("timm:test_mambaout", 32, {}), ("timm:efficientvit_b0", 64, {}),
    ("timm:repvit_m0_9", 64, {}), ("timm:fastvit_t8", 64, {}), ("timm:edgenext_xx_small", 64, {}),
    ("torchvision:squeezenet1_1", 64, {}), ("torchvision:mobilenet_v3_small", 64, {}),
    ("torchvision:regnet_x_400mf", 64, {}), ("timm:mixnet_s", 64, {}), ("timm:ghostnetv2_100", 64, {}),
]
# the most slimkit prunes correctly here is short of half the MACs (relative position tables kept whole): a
# BudgetError saying how far it gets, before anything is returned (or, once slimkit covers the layout, a model that
# passes every check above)
REFUSED = {"timm:nest_tiny": (64, {"img_size": 64}), "timm:csatv2": (64, {}),
           "timm:test_vit_relpos": (32, {"img_size": 32}),
           "torchvision:swin_t": (64, {})}


def _check(spec, size, kw):
    warnings.simplefilter("ignore")
    torch.manual_seed(0)
    model = create_model(spec, num_classes=10, **kw).eval()
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        want = model(x).shape
    pruned = prune(model, x, macs_target=0.5).eval()
    with torch.no_grad():
        assert pruned(x).shape == want
    macs = count_macs(pruned, x)
    assert macs <= 0.5 * count_macs(model, x)
    assert pruned.slimkit_pruning["budget"]["counted"] == macs


@pytest.mark.parametrize("spec, size, kw", FAST, ids=[s for s, _, _ in FAST])
def test_family_prunes_to_half_the_macs_and_runs(spec, size, kw):
    _check(spec, size, kw)


@pytest.mark.slow
@pytest.mark.parametrize("spec, size, kw", SLOW, ids=[s for s, _, _ in SLOW])
def test_more_families_prune_to_half_the_macs_and_run(spec, size, kw):
    _check(spec, size, kw)


@pytest.mark.slow
@pytest.mark.parametrize("spec", list(REFUSED))
def test_out_of_reach_budget_is_refused_with_the_reachable_share(spec):
    size, kw = REFUSED[spec]
    try:
        _check(spec, size, kw)
    except BudgetError as e:
        assert re.search(r"reaches: \S+ \(0\.\d\d of the original\).*Relax the target", str(e)), str(e)
