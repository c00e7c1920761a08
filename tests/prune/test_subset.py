import torch

from slimkit.models import create_model
from slimkit.prune import prune
from slimkit.prune.subset import css_scores, pivot_order


def test_pivoted_qr_prefers_independent_columns():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(200, 3, generator=g)
    # columns 3 and 4 are copies of 0 and 1 (scaled): they add nothing once 0 and 1 are kept
    a = torch.cat([base * torch.tensor([3.0, 2.0, 1.0]), base[:, :1] * 0.5, base[:, 1:2] * 0.4], 1)
    order = pivot_order(a)
    assert set(order[:3]) == {0, 1, 2}
    s = css_scores(a)
    assert s[[0, 1, 2]].min() > s[[3, 4]].max() and sorted(s.tolist()) == [1, 2, 3, 4, 5]


def test_greedy_residual_choice_matches_hand_gram_schmidt():
    g = torch.Generator().manual_seed(1)
    a = torch.randn(50, 6, generator=g).double()
    # hand version: repeatedly pick the column with the largest residual norm, then project it out
    rest, picked = a.clone(), []
    for _ in range(6):
        norms = rest.norm(dim=0)
        norms[picked] = -1
        j = int(norms.argmax())
        picked.append(j)
        q = rest[:, j] / rest[:, j].norm()
        rest = rest - q[:, None] * (q @ rest)[None]
    assert pivot_order(a) == picked


def test_css_prunes_with_calibration_data():
    torch.manual_seed(0)
    model = create_model("convnet_small", in_chans=1)
    data = [(torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,)))]
    pruned = prune(model, torch.randn(1, 1, 8, 8), ratio=0.5, importance="css", data=data, allocation="uniform")
    assert pruned.features[0].out_channels == 8 and pruned(torch.randn(2, 1, 8, 8)).shape == (2, 10)
