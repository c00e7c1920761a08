import pytest

from slimkit.errors import ConfigError
from slimkit.nas.constraints import parse_constraint, parse_constraints, satisfies


def test_parse_forms():
    c = parse_constraint('latency_ms["pixel3"] <= 10')
    assert (c.name, c.key, c.op, c.value) == ("latency_ms", "pixel3", "<=", 10.0)
    assert parse_constraint("macs<50M").value == 50e6 and parse_constraint("params_M >= 0.5").op == ">="
    assert [str(x) for x in parse_constraints("params_M <= 1, latency_ms[pixel3] < 3.5")] == [
        "params_M <= 1", "latency_ms[pixel3] < 3.5"]


def test_lookup_and_check():
    costs = {"params_M": 0.8, "pixel3": 9.0}
    assert satisfies(costs, parse_constraints(["params_M <= 1.0", "latency_ms[pixel3] < 10"]))
    assert not satisfies(costs, parse_constraints(["latency_ms[pixel3] < 9"]))
    with pytest.raises(ConfigError, match="reports only"):
        parse_constraint("macs <= 5").lookup(costs)


@pytest.mark.parametrize("bad", ["params_M", "params_M <<= 1", "<= 3", "params_M <= abc"])
def test_bad_constraint_is_named(bad):
    with pytest.raises(ConfigError, match="cannot parse"):
        parse_constraint(bad)
