import pytest

from slimkit.profile import channel_multiple, cpu_capability


@pytest.mark.parametrize("cap, block", [("AVX512", 16), ("avx2", 8), ("AVX", 8), ("DEFAULT", 8), ("SVE256", 8)])
def test_channel_multiple_is_the_fp32_register_width(cap, block):
    assert channel_multiple(cap) == block


def test_this_machine():
    assert channel_multiple() == channel_multiple(cpu_capability())


def test_vnni_is_read_from_the_cpu_flags():
    from slimkit.profile import has_vnni

    assert has_vnni("processor : 0\nflags : fpu sse avx2 avx512f avx512_vnni\n")
    assert has_vnni("flags\t\t: fpu avx2 avx_vnni\n")
    assert has_vnni("Features : fp asimd asimddp\n")  # ARM dot product
    assert not has_vnni("flags : fpu sse avx avx2 fma\n")
    assert not has_vnni("")
