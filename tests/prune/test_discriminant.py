import pytest
import torch

from slimkit.errors import PruneError
from slimkit.models import create_model
from slimkit.prune import list_importances, prune
from slimkit.prune.discriminant import di_drop_scores, discriminant_information, scatter_matrices


def _brute_force(feats, labels, rho):
    sb, sw = scatter_matrices(feats, labels)
    full = discriminant_information(sb, sw, rho)
    out = []
    for c in range(feats.shape[1]):
        keep = [i for i in range(feats.shape[1]) if i != c]
        out.append(full - discriminant_information(sb[keep][:, keep], sw[keep][:, keep], rho))
    return torch.stack(out).float()


def test_scatter_matrices_sum_to_total_scatter():
    g = torch.Generator().manual_seed(0)
    f, y = torch.randn(60, 5, generator=g), torch.randint(0, 3, (60,), generator=g)
    sb, sw = scatter_matrices(f, y)
    centred = (f - f.mean(0)).double()
    torch.testing.assert_close(sb + sw, centred.T @ centred / 60)


def test_closed_form_drop_equals_brute_force():
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 4, (80,), generator=g)
    f = torch.randn(80, 7, generator=g) + torch.nn.functional.one_hot(y, 7)[:, :7].float() * 2
    rho = 0.05
    torch.testing.assert_close(di_drop_scores(f, y, rho), _brute_force(f, y, rho), atol=1e-5, rtol=1e-4)


def test_class_carrying_channel_beats_noise():
    g = torch.Generator().manual_seed(2)
    y = torch.randint(0, 2, (200,), generator=g)
    f = torch.randn(200, 3, generator=g)
    f[:, 1] += 3 * y  # channel 1 separates the classes
    s = di_drop_scores(f, y)
    assert s.argmax() == 1 and s[1] > 5 * s[[0, 2]].max()


def test_di_prunes_a_model_with_data():
    assert "di" in list_importances()
    torch.manual_seed(0)
    model = create_model("convnet_small", in_chans=1)
    data = [(torch.randn(32, 1, 8, 8), torch.randint(0, 10, (32,))) for _ in range(2)]
    pruned = prune(model, torch.randn(1, 1, 8, 8), ratio=0.5, importance="di", data=data, allocation="uniform")
    assert pruned.features[0].out_channels == 8 and pruned(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(PruneError, match="two classes"):
        prune(model, torch.randn(1, 1, 8, 8), ratio=0.5, importance="di",
              data=[(torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long))])
