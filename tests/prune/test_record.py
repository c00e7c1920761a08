"""The pruning record: one reader / writer of what a pruned model carries; replaying it rebuilds the structure."""

import torch

from slimkit.models import create_model
from slimkit.prune import load, prune, save
from slimkit.prune.io import read_record
from slimkit.prune.record import next_record, record_of, with_record


def test_next_record_grows_the_originals_steps_and_keeps_its_model_spec():
    model = create_model("convnet_tiny", num_classes=3, in_chans=1)
    assert record_of(model) is None
    first = next_record(model, {("a", "out"): [0, 2]}, importance="l1")
    assert first == {"version": 1, "steps": [[["a", "out", [0, 2]]]], "importance": "l1"}
    with_record(model, {**first, "model": {"name": "convnet_tiny", "kwargs": {}}})
    second = next_record(model, {("b", "out"): [1]}, importance="l2", ratio=0.5)
    assert second["steps"] == [[["a", "out", [0, 2]]], [["b", "out", [1]]]]
    assert second["model"] == {"name": "convnet_tiny", "kwargs": {}} and second["ratio"] == 0.5


def test_an_explicit_record_is_what_save_writes_and_load_replays(tmp_path):
    model = create_model("convnet_tiny", num_classes=3, in_chans=1)
    x = torch.randn(2, 1, 16, 16)
    pruned = prune(model, x, ratio=0.5, allocation="uniform")
    record = record_of(pruned)
    assert record is not None and len(record["steps"]) == 1
    bare = with_record(pruned, None)  # the record passed explicitly instead of carried
    save(bare, tmp_path / "m.safetensors", model_name="convnet_tiny",
         model_kwargs={"num_classes": 3, "in_chans": 1}, record=record)
    assert read_record(tmp_path / "m.safetensors")["steps"] == record["steps"]
    back = load(tmp_path / "m.safetensors")
    pruned.eval(), back.eval()
    torch.testing.assert_close(back(x), pruned(x))
