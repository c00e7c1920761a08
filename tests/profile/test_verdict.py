from slimkit.profile.verdict import speed_verdict


def _b(compute=0.0, memory=0.0, overhead=0.0, elementwise=0.0, layers=10, partial=0):
    return {"compute": compute, "memory": memory, "overhead": overhead, "elementwise": elementwise,
            "padding": 0.0, "layers": layers, "partial_blocks": partial}


def test_faster_model_states_the_ratio_and_no_excuse():
    lines = speed_verdict(2.0, {"onnxruntime batch 1": 1.8, "onnxruntime batch 32": 1.9},
                          _b(compute=100.0), _b(compute=50.0), 8)
    assert lines == ["onnxruntime batch 1: x1.80 faster for x2.00 fewer MACs (0.90 of the MACs reduction)",
                     "onnxruntime batch 32: x1.90 faster for x2.00 fewer MACs (0.95 of the MACs reduction)"]


def test_slower_model_says_so_and_names_partial_blocks():
    lines = speed_verdict(2.0, {"onnxruntime batch 1": 0.8}, _b(compute=100.0), _b(compute=95.0, layers=20, partial=12),
                          8)
    assert lines[0].startswith("onnxruntime batch 1: NOT faster (x0.80, 25% slower)")
    assert lines[1].startswith("The pruned model did not get faster: 12 of 20 layers")
    assert "multiples of 8" in lines[1] and "overhead" not in lines[1]


def test_overhead_memory_and_elementwise_are_named_by_share():
    base = _b(compute=10.0, overhead=60.0, memory=45.0, elementwise=30.0)
    pruned = _b(compute=5.0, overhead=60.0, memory=40.0, elementwise=25.0)  # 130 ns: 46% / 31% / 19%
    why = speed_verdict(2.0, {"b1": 0.95}, base, pruned, 8)[-1]
    assert "is 46% of its estimated time" in why and "31% of its estimated time is in memory-bound" in why
    assert "unfused" not in why and "disturbed" not in why  # 19% is below the bar; x1.12 expected is near x0.95


def test_an_unexplained_slow_down_points_at_the_measurement():
    lines = speed_verdict(2.0, {"b1": 0.9}, _b(compute=100.0), _b(compute=50.0), 8)
    assert "expects x2.00" in lines[-1] and "disturbed" in lines[-1]


def test_faster_but_far_behind_the_macs_explains_too():
    lines = speed_verdict(2.0, {"b1": 1.2}, _b(compute=100.0, memory=100.0), _b(compute=50.0, memory=90.0), 8)
    assert lines[-1].startswith("Latency fell much more slowly than MACs:") and "memory-bound" in lines[-1]
