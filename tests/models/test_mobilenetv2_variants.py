import pytest

from slimkit.layers import CoordinateAttention, DynamicConv2d, DynamicReLU
from slimkit.models import create_model

from .helpers import flop_counter_macs


@pytest.mark.slow
def test_mobilenetv2_coordinate_attention_matches_the_paper():
    # Hou et al. 2021, Table 5 (MobileNetV2 1.0 + CA): 3.95M params, 310M MAdds. The paper's MAdds also count the
    # pooling and gating (elementwise) work; conv/linear MACs alone come to ~307M, 1% below.
    m = create_model("mobilenetv2_100_ca", num_classes=1000)
    assert sum(p.numel() for p in m.parameters()) / 1e6 == pytest.approx(3.95, rel=0.01)
    assert flop_counter_macs(m, (3, 224, 224)) / 1e6 == pytest.approx(310, rel=0.02)
    assert sum(isinstance(x, CoordinateAttention) for x in m.modules()) == 17


@pytest.mark.slow
def test_mobilenetv2_dynamic_conv_matches_the_paper():
    # Chen et al. 2020 (Dynamic Convolution), Table: DY-MobileNetV2 x1.0, K = 4: 11.1M params, 312.9M MAdds. Counted
    # here: the convs (one aggregated kernel per image), the K-kernel aggregation (K x weights multiply-adds) and the
    # attention FCs; the paper also counts the elementwise softmax / pooling work, hence ~1% fewer here.
    m = create_model("mobilenetv2_100_dyconv", num_classes=1000)
    assert sum(p.numel() for p in m.parameters()) / 1e6 == pytest.approx(11.1, rel=0.01)
    assert flop_counter_macs(m, (3, 224, 224)) / 1e6 == pytest.approx(312.9, rel=0.02)
    assert sum(isinstance(x, DynamicConv2d) for x in m.modules()) == 17 * 3 - 1  # no expansion conv in block 1


@pytest.mark.slow
def test_mobilenetv2_dynamic_relu_costs_about_five_percent_more():
    # Chen et al. 2020 (Dynamic ReLU): DY-ReLU-B in MobileNetV2 x1.0 for "5% additional FLOPs". The hyper-functions'
    # FCs (reduction 4, K = 2) are counted; the elementwise max / multiply-adds over the maps are not, which the
    # paper's figure includes: +3.8% counted here.
    base = flop_counter_macs(create_model("mobilenetv2_100", num_classes=1000), (3, 224, 224))
    m = create_model("mobilenetv2_100_dyrelu", num_classes=1000)
    assert 1.02 < flop_counter_macs(m, (3, 224, 224)) / base < 1.06
    assert sum(isinstance(x, DynamicReLU) for x in m.modules()) == 17 * 2 - 1  # two per block, one in block 1
    assert all(x.mode == "B" and x.k == 2 for x in m.modules() if isinstance(x, DynamicReLU))


def test_training_anneals_the_dynamic_conv_temperature():
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from slimkit.train import TrainConfig, Trainer

    model = create_model("mobilenetv2_050_dyconv", num_classes=3, in_chans=1, small_input=True)
    seen = []
    first = next(m for m in model.modules() if isinstance(m, DynamicConv2d))
    orig = first.forward

    def spy(x):
        seen.append(float(first.temperature))
        return orig(x)

    first.forward = spy
    data = TensorDataset(torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,)))
    Trainer(model, TrainConfig(epochs=8, batch_size=8, progress=False), DataLoader(data, batch_size=8)).fit()
    # a quarter of 8 epochs: 30 at epoch 0, 15.5 at epoch 1, then 1; left at 1 for inference
    assert seen[:3] == [30.0, 15.5, 1.0] and first.temperature == 1.0
