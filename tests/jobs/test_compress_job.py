import json
from dataclasses import replace

import numpy as np
import pytest

from slimkit.config import from_dict
from slimkit.distill.tasks import KDOptions
from slimkit.errors import ConfigError
from slimkit.jobs.compress import FINETUNE, CompressConfig, run
from slimkit.profile import count_macs
from slimkit.prune import PruneConfig, load


def _cfg(tmp_path, **kw):
    base = dict(model="convnet_small", data="digits", limit=200, baseline_epochs=2,
                finetune=replace(FINETUNE, epochs=1), latency_batches=(1,), batch_size=32, out=str(tmp_path / "run"))
    return CompressConfig(**{**base, **kw})


def test_compress_end_to_end_with_distillation(tmp_path):
    s = run(_cfg(tmp_path, prune=PruneConfig(macs_target=0.5), distill=KDOptions()))
    out = tmp_path / "run"
    for f in ("report.json", "report.html", "model.onnx", "model.safetensors", "pruned.safetensors",
              "kept_channels.png", "acc_vs_macs.png", "baseline/summary.json", "finetune/metrics.jsonl"):
        assert (out / f).is_file(), f
    assert s["pruned"]["macs"] <= 0.5 * s["baseline"]["macs"]
    assert s["macs_reduction"] == pytest.approx(s["baseline"]["macs"] / s["pruned"]["macs"])
    assert s["onnx_max_abs_diff"] <= 1e-4 * 10
    model = load(out / "model.safetensors")  # the shipped model reloads from its record alone
    assert count_macs(model, (1, 1, 8, 8)) == s["pruned"]["macs"]
    assert json.loads((out / "report.json").read_text())["pruned"]["params"] == s["pruned"]["params"]
    html = (out / "report.html").read_text()
    assert "data:image/png;base64" in html and "baseline" in html
    speed = s["speed_verdict"]  # the measured speed-up stated beside the MACs reduction, in the report too
    assert speed[0].startswith("onnxruntime batch 1: ") and f"x{s['macs_reduction']:.2f} fewer MACs" in speed[0]
    assert speed[0] in html


def test_resume_skips_finished_stages(tmp_path):
    first = run(_cfg(tmp_path, prune=PruneConfig(ratio=0.5)))
    mtime = (tmp_path / "run" / "pruned.safetensors").stat().st_mtime_ns
    again = run(_cfg(tmp_path, prune=PruneConfig(ratio=0.5)), resume=True)
    assert (tmp_path / "run" / "pruned.safetensors").stat().st_mtime_ns == mtime
    assert again["pruned"]["test_acc"] == first["pruned"]["test_acc"]
    assert again["pruned"]["macs"] == first["pruned"]["macs"]


def test_one_budget_only():
    with pytest.raises(ConfigError, match="one budget"):
        CompressConfig(prune=PruneConfig(params_target=0.5, ratio=0.3))
    cfg = from_dict(CompressConfig, {"prune": {"params_target": 0.5}})  # replaces the default MACs budget
    assert cfg.prune.budget.kwargs() == {"params_target": 0.5} and CompressConfig().prune.macs_target == 0.5


def test_round_to_parses_auto_and_numbers():
    assert from_dict(CompressConfig, {"prune": {"round_to": "auto"}}).prune.round_to == "auto"
    assert from_dict(CompressConfig, {"prune": {"round_to": "8"}}).prune.round_to == 8
    with pytest.raises(ConfigError, match="round_to"):
        from_dict(CompressConfig, {"prune": {"round_to": "fast"}})


@pytest.mark.parametrize("method", ["iterative", "chex"])
def test_other_pruning_methods(tmp_path, method):
    s = run(_cfg(tmp_path, method=method, prune=PruneConfig(macs_target=0.5, importance="l2")))
    assert s["pruned"]["macs"] <= 0.5 * s["baseline"]["macs"]
    assert (tmp_path / "run" / "model.onnx").is_file()
    model = load(tmp_path / "run" / "model.safetensors")
    assert count_macs(model, (1, 1, 8, 8)) == s["pruned"]["macs"]


def test_unknown_method_is_named(tmp_path):
    with pytest.raises(ConfigError, match="chex"):
        run(_cfg(tmp_path, method="magic"))


def test_baseline_run_brings_its_data_and_mismatch_is_refused(tmp_path):
    from slimkit.jobs.train import TrainJobConfig
    from slimkit.jobs.train import run as train
    from slimkit.train import TrainConfig

    x = np.random.default_rng(0).integers(0, 255, (60, 12, 12), dtype="uint8")
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(60) % 3)
    train(TrainJobConfig(model="convnet_tiny", data=str(tmp_path / "d.npz"), out=str(tmp_path / "base"),
                         train=TrainConfig(epochs=1, progress=False)))
    s = run(CompressConfig(baseline=str(tmp_path / "base"), prune=PruneConfig(ratio=0.5),
                           finetune=replace(FINETUNE, epochs=1), latency_batches=(1,), out=str(tmp_path / "c")))
    assert s["data"] == "d"  # the npz the baseline was trained on, not the digits default
    with pytest.raises(ConfigError, match="trained on"):
        run(CompressConfig(baseline=str(tmp_path / "base"), data="digits", prune=PruneConfig(ratio=0.5),
                           out=str(tmp_path / "e")))


def test_allocation_is_checked_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="allocation must be one of latency, uniform, global, global_latency"):
        run(_cfg(tmp_path, prune=PruneConfig(macs_target=0.5, allocation="fastest")))
    with pytest.raises(ConfigError, match="method chex allocates") as e:
        run(_cfg(tmp_path, prune=PruneConfig(macs_target=0.5, allocation="uniform"), method="chex"))
    assert e.value.option == "prune.allocation"  # the CLI names --allocation
    assert not (tmp_path / "run").exists()  # refused before the run folder was written


VIT = dict(model="timm:deit_tiny_patch16_224", model_kwargs={"img_size": 8, "patch_size": 2, "embed_dim": 32,
                                                             "depth": 2, "num_heads": 4}, baseline_epochs=1)


@pytest.mark.slow
def test_transformer_ratio_search_meets_the_macs_budget_and_ships_a_reloadable_model(tmp_path):
    pytest.importorskip("timm")
    s = run(_cfg(tmp_path, **VIT, prune=PruneConfig(macs_target=0.6), ratio_search=True, search_queries=4,
                 calib_batches=2))
    assert s["pruned"]["macs"] <= 0.6 * s["baseline"]["macs"]
    model = load(tmp_path / "run" / "model.safetensors")
    assert count_macs(model, (1, 1, 8, 8)) == s["pruned"]["macs"]
    assert s["onnx_max_abs_diff"] <= 1e-4


@pytest.mark.slow
def test_transformer_dim_ratio_prunes_only_the_named_dimension(tmp_path):
    pytest.importorskip("timm")
    run(_cfg(tmp_path, **VIT, prune=PruneConfig(ratios={"heads": 0.5})))
    model = load(tmp_path / "run" / "model.safetensors")
    assert [b.attn.num_heads for b in model.blocks] == [2, 2]
    assert [b.mlp.fc1.out_features for b in model.blocks] == [128, 128]  # neurons untouched
    assert model.patch_embed.proj.out_channels == 32  # the embedding too


def test_transformer_options_are_checked_up_front(tmp_path):
    with pytest.raises(ConfigError, match="unknown dimensions"):
        run(_cfg(tmp_path, prune=PruneConfig(macs_target=0.5, dims=("heads", "layers"))))
    with pytest.raises(ConfigError, match="--method oneshot"):
        run(_cfg(tmp_path, method="iterative", prune=PruneConfig(macs_target=0.5, dims=("heads",))))
    with pytest.raises(ConfigError, match="MACs budget"):
        run(_cfg(tmp_path, prune=PruneConfig(params_target=0.5), ratio_search=True))
    with pytest.raises(ConfigError, match="drop --dim-ratio"):
        run(_cfg(tmp_path, ratio_search=True, prune=PruneConfig(ratios={"heads": 0.3})))
    assert not (tmp_path / "run").exists()  # nothing was written
