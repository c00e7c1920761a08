import pytest

from slimkit.layers import CoordinateAttention
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
