import pytest

from slimkit.errors import ConfigError, SlimkitError, UnknownNameError
from slimkit.registry import Registry


def test_register_create_list_and_meta():
    reg = Registry("widget")

    @reg.register("Tiny_A", size=3)
    def tiny_a(x=1):
        return ("a", x)

    @reg.register()
    def tiny_b(x=2):
        return ("b", x)

    assert reg.list() == ["tiny_a", "tiny_b"]
    assert reg.list("*_b") == ["tiny_b"]
    assert reg.create("TINY_A", x=5) == ("a", 5)
    assert reg.meta("tiny_a") == {"size": 3}
    assert "tiny_b" in reg and "nope" not in reg and len(reg) == 2


def test_unknown_name_lists_close_matches():
    reg = Registry("widget")
    reg.register("resnet20")(lambda: None)
    with pytest.raises(UnknownNameError) as e:
        reg.get("resnet2")
    msg = str(e.value)
    assert "resnet20" in msg and "unknown widget" in msg
    assert isinstance(e.value, SlimkitError)


def test_duplicate_registration_is_an_error():
    reg = Registry("widget")
    reg.register("x")(lambda: 1)
    with pytest.raises(ConfigError):
        reg.register("x")(lambda: 2)
