"""Options mean one thing everywhere: short flags, error messages that name the flag (not a config class), error
text printed verbatim (no rich markup), and --resume that takes the run's own options."""

import json

import pytest
import typer

from slimkit.cli.main import _register_all, app, main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def _commands():
    _register_all()
    root = typer.main.get_command(app)
    todo, seen = [("", root)], []
    while todo:
        name, cmd = todo.pop()
        seen.append((name, cmd))
        todo += [(f"{name} {n}".strip(), c) for n, c in getattr(cmd, "commands", {}).items()]
    return seen


def test_a_short_flag_means_the_same_option_in_every_command():
    meaning: dict[str, set[str]] = {}
    for _name, cmd in _commands():
        for p in cmd.params:
            longs = [o for o in p.opts + p.secondary_opts if o.startswith("--")]
            for short in (o for o in p.opts if not o.startswith("--")):
                meaning.setdefault(short, set()).update(longs[:1])
    clashes = {s: sorted(m) for s, m in meaning.items() if len(m) > 1}
    assert not clashes, clashes
    assert meaning["-m"] == {"--model"} and meaning["-s"] == {"--strategy"}


def test_bad_values_name_the_flag_not_a_config_class(capsys, tmp_path):
    out = str(tmp_path / "r")
    code, _, err = run(capsys, "compress", "--round-to", "abc", "--out", out)
    assert code == 2 and "--round-to" in err and "'auto'" in err and "expected int" not in err
    code, _, err = run(capsys, "train", "--epochs", "0", "--out", out)
    assert code == 2 and "--epochs must be >= 1" in err and "TrainJobConfig" not in err and "TrainConfig" not in err
    code, _, err = run(capsys, "compress", "--macs", "0", "--out", out)
    assert code == 2 and "--macs must be > 0" in err
    assert not (tmp_path / "r").exists()


def test_quantize_names_its_own_flag_for_a_bad_int8_value(capsys, tmp_path):
    for flag, value in (("--max-float", "-1"), ("--eval-images", "0"), ("--tolerance", "nan"), ("--tolerance", "-1")):
        code, _, err = run(capsys, "quantize", str(tmp_path / "run"), flag, value)
        assert code == 2 and f"{flag} must" in err and "max_float_layers" not in err, (flag, err)


def test_an_empty_value_is_an_error_not_the_option_left_out(capsys, tmp_path):
    """`-w "$W"` with W unset must not train from scratch, nor export / profile a randomly initialised model."""
    out = tmp_path / "r"
    for args, flag in ((["compress", "-w", "", "-d", "digits", "-o", str(out)], "--weights"),
                       (["train", "--data", " ", "-o", str(out)], "--data"),
                       (["compress", "--macs", "0.5", "--importance", "", "-o", str(out)], "--importance"),
                       (["export", "-m", "convnet_tiny", "-w", "", "-o", str(tmp_path / "m.onnx")], "--weights"),
                       (["profile", "convnet_tiny", "--weights", ""], "--weights")):
        code, _, err = run(capsys, *args)
        assert code == 2 and f"{flag} is empty" in err, (args, err)
    assert not out.exists() and not (tmp_path / "m.onnx").exists()
    for command in ("train", "compress"):  # no size at all is not the native size either
        code, _, err = run(capsys, command, "--data", "digits", "--input-size", ",", "-o", str(out))
        assert code == 2 and "input size (): give SIZE" in err and not out.exists(), err


def test_compress_flags_set_the_prune_and_finetune_sections_and_errors_name_the_flag(capsys, tmp_path):
    """The flat flags of compress set options of its prune / finetune sections; an error in one names the flag typed,
    and a budget flag replaces the config file's budget (one budget, the command line's)."""
    from slimkit.cli._common import job_config
    from slimkit.cli.compress import FLAGS
    from slimkit.jobs.compress import CompressConfig

    out = str(tmp_path / "r")
    for args, said in ((["--finetune-lr", "-1"], "--finetune-lr must be > 0"),
                       (["--dim-ratio", "heads=1.5"], "--dim-ratio takes shares to remove"),
                       (["--params", "0"], "--params must be > 0"),
                       (["--macs", "0.5", "--ratio", "0.3"], "give one budget: --macs or --ratio")):
        code, _, err = run(capsys, "compress", *args, "--out", out)
        assert code == 2 and said in err.replace("\n", " "), (args, err)
    assert not (tmp_path / "r").exists()
    (tmp_path / "c.yaml").write_text("prune: {macs_target: 0.4, importance: l2}\nfinetune: {epochs: 2}\n")
    cfg = job_config(CompressConfig, tmp_path / "c.yaml", {"params": 0.5, "finetune_epochs": None}, flags=FLAGS)
    assert cfg.prune.budget.kwargs() == {"params_target": 0.5} and cfg.prune.importance == "l2"
    assert (cfg.finetune.epochs, cfg.finetune.lr) == (2, 0.01)
    cfg = job_config(CompressConfig, None, {"finetune_epochs": 0, "ratio": 0.3}, flags=FLAGS)
    assert cfg.finetune is None and cfg.prune.budget.kwargs() == {"ratio": 0.3}


def test_error_text_is_printed_verbatim(capsys, tmp_path):
    code, _, err = run(capsys, "train", "--model", "resnet[pixel3]", "--out", str(tmp_path / "r"))
    assert code == 2 and "resnet[pixel3]" in err.replace("\n", "")


def test_resume_from_the_command_line_takes_the_runs_own_options(capsys, tmp_path):
    out = str(tmp_path / "r")
    args = ["train", "--model", "convnet_tiny", "--epochs", "1", "--limit", "100", "--lr", "0.05", "--out", out]
    code, _, err = run(capsys, *args)
    assert code == 0, err
    first = json.loads((tmp_path / "r" / "summary.json").read_text())
    code, _, err = run(capsys, "train", "--out", out, "--resume")  # no options: the run's own
    assert code == 0, err
    again = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert again["test_acc"] == first["test_acc"] and again["model"] == "convnet_tiny"
    code, _, err = run(capsys, "train", "--out", out, "--resume", "--optimizer", "adamw")
    assert code == 2 and "optimizer: 'sgd' -> 'adamw'" in err
    code, _, err = run(capsys, "train", "--out", out, "--resume", "--epochs", "2")  # may change: trains on
    assert code == 0, err
    assert json.loads((tmp_path / "r" / "summary.json").read_text())["epochs"] == 2


def test_compress_distill_flag_switches_kd_with_its_options(capsys, tmp_path, monkeypatch):
    """--distill is KD with its options (a config file's distill: section, else KD's defaults); --no-distill none."""
    import slimkit.cli.compress as cli
    from slimkit.distill.tasks import KDOptions
    from slimkit.errors import ConfigError

    seen = []

    def fake_run(cfg, resume=False):
        seen.append(cfg.distill)
        raise ConfigError("stop here")

    monkeypatch.setattr(cli, "run", fake_run)
    (tmp_path / "c.yaml").write_text("distill: {temperature: 2.0}\n")
    out = ["--out", str(tmp_path / "r")]
    for args in (["--config", str(tmp_path / "c.yaml")], ["--distill"], ["--config", str(tmp_path / "c.yaml"),
                                                                          "--no-distill"], []):
        assert run(capsys, "compress", *args, *out)[0] == 2
    assert seen == [KDOptions(temperature=2.0), KDOptions(), None, None]


def test_compress_ratio_search_takes_the_searchs_own_importance_unless_one_is_given(capsys, tmp_path, monkeypatch):
    """`compress --ratio-search` scores channels with the ratio search's default criterion (Taylor), not the
    pruning default (l1); --importance (or a config file's prune.importance) still wins, and without the search
    the pruning default stays."""
    import inspect

    import slimkit.cli.compress as cli
    import slimkit.jobs.compress as job
    from slimkit.errors import ConfigError
    from slimkit.nas.prune_ratios import search_prune_ratios
    from slimkit.prune import PruneConfig

    searched = inspect.signature(search_prune_ratios).parameters["importance"].default
    assert searched != PruneConfig.importance  # (else this test shows nothing)
    seen = []

    def fake_run(cfg, resume=False):
        seen.append(cfg.prune.importance)
        raise ConfigError("stop here")

    monkeypatch.setattr(cli, "run", fake_run)
    (tmp_path / "c.yaml").write_text("prune: {importance: l2}\n")
    out = ["--out", str(tmp_path / "r")]
    for args in (["--ratio-search", "--macs", "0.6"], ["--ratio-search", "--macs", "0.6", "--importance", "l1"],
                 ["--ratio-search", "--macs", "0.6", "--config", str(tmp_path / "c.yaml")], ["--macs", "0.6"]):
        assert run(capsys, "compress", *args, *out)[0] == 2
    assert seen == [searched, "l1", "l2", PruneConfig.importance]

    calls = []  # and the job hands that criterion to the search

    def fake_search(*args, **kwargs):
        calls.append(kwargs["importance"])
        raise ConfigError("stop here")

    monkeypatch.setattr(job, "search_prune_ratios", fake_search)
    cfg = job.CompressConfig(prune=PruneConfig(macs_target=0.6, importance=None), ratio_search=True)
    loaders = type("Loaders", (), {"val": [(None, None)], "train": None})()
    with pytest.raises(ConfigError, match="stop here"):
        job._prune(cfg, None, {}, loaders, None, [], tmp_path, False)
    assert calls == [searched]
