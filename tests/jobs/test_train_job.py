import json

import torch

from slimkit.jobs._common import load_run_model
from slimkit.jobs.train import TrainJobConfig, run
from slimkit.train import TrainConfig, evaluate


def test_train_job_end_to_end_on_digits(tmp_path):
    cfg = TrainJobConfig(model="convnet_small", data="digits", limit=300, out=str(tmp_path / "run"),
                         train=TrainConfig(epochs=3, lr=0.05, batch_size=32, progress=False))
    summary = run(cfg)
    run_dir = tmp_path / "run"
    for f in ("summary.json", "config.yaml", "model.safetensors", "model.json", "metrics.jsonl", "best.safetensors"):
        assert (run_dir / f).is_file(), f
    assert json.loads((run_dir / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["test_acc"] > 0.5 and summary["epochs"] == 3  # 10 classes: chance is 0.1
    model, spec = load_run_model(run_dir)
    assert spec["in_chans"] == 1 and spec["input_size"] == [1, 8, 8]
    from slimkit.data import create_dataset, make_loaders

    test = make_loaders(create_dataset("digits", limit=300), 32).test
    assert evaluate(model, test)["acc"] == summary["test_acc"]
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)
