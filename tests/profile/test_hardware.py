import pytest

from slimkit.profile import channel_multiple, cpu_capability


@pytest.mark.parametrize("cap, block", [("AVX512", 16), ("avx2", 8), ("AVX", 8), ("DEFAULT", 8), ("SVE256", 8)])
def test_channel_multiple_is_the_fp32_register_width(cap, block):
    assert channel_multiple(cap) == block


def test_this_machine():
    assert channel_multiple() == channel_multiple(cpu_capability())
