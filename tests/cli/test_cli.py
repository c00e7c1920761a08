"""The `slimkit` command line: help, summaries, one-line errors, --debug."""

import json

import pytest

from slimkit.cli.main import main


def run(capsys, *args):
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("cmd", ["compress", "models", "profile", "train", "search", "export", "quantize"])
def test_every_command_has_help(capsys, cmd):
    code, out, _ = run(capsys, cmd, "--help")
    assert code == 0 and "Usage" in out and "--" in out


def test_models_lists_the_zoo(capsys):
    code, out, _ = run(capsys, "models", "resnet*")
    assert code == 0 and "resnet20" in out and "vgg16" not in out


def test_profile_writes_json_matching_the_library(capsys, tmp_path):
    from slimkit.models import create_model
    from slimkit.profile import count_macs

    code, out, _ = run(capsys, "profile", "resnet20", "--input-size", "1,28,28", "--json", str(tmp_path / "p.json"))
    assert code == 0 and "MACs" in out
    data = json.loads((tmp_path / "p.json").read_text())
    assert data["macs"] == count_macs(create_model("resnet20", in_chans=1), (1, 28, 28))


def test_errors_are_one_line_without_traceback(capsys):
    code, out, err = run(capsys, "profile", "resnet21")
    assert code == 2 and "unknown model 'resnet21'" in err and "Traceback" not in err + out
    code, _, err = run(capsys, "profile", "resnet20", "--input-size", "3,32")
    assert code == 2 and "C,H,W" in err
    code, _, err = run(capsys, "train", "--data", "nope-data")
    assert code == 2 and "unknown dataset" in err and "fashion-mnist" in err


def test_debug_shows_the_exception(capsys):
    from slimkit.errors import UnknownNameError

    with pytest.raises(UnknownNameError):
        main(["--debug", "profile", "resnet21"])


def test_train_then_export_a_run(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model: convnet_tiny\nepochs: 1\nlimit: 100\nprogress: false\n")
    code, out, err = run(capsys, "train", "--config", str(cfg), "--out", str(tmp_path / "r"), "--lr", "0.05")
    assert code == 0, err
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["model"] == "convnet_tiny" and summary["epochs"] == 1
    code, out, err = run(capsys, "export", str(tmp_path / "r"), "--out", str(tmp_path / "m.onnx"))
    assert code == 0, err
    assert (tmp_path / "m.onnx").is_file() and "max |diff|" in out
    code, _, err = run(capsys, "train", "--config", str(cfg), "--epoch", "2")
    assert code == 2 and "--epoch" in err


def test_unknown_config_key_is_named(capsys, tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("modle: resnet20\n")
    code, _, err = run(capsys, "train", "--config", str(cfg))
    assert code == 2 and "modle" in err and "did you mean 'model'" in err


def test_compress_cli_runs_and_reports(capsys, tmp_path):
    code, out, err = run(capsys, "compress", "--model", "convnet_tiny", "--limit", "150", "--baseline-epochs", "1",
                         "--finetune-epochs", "1", "--ratio", "0.5", "--round-to", "auto", "--out", str(tmp_path / "c"))
    assert code == 0, err
    assert "MACs x" in out and (tmp_path / "c" / "report.html").is_file()
    flat = " ".join(out.split())  # the console wraps long lines
    assert "onnxruntime batch 1: " in flat and "fewer MACs" in flat  # the speed-up stated beside the MACs reduction
    code, _, err = run(capsys, "compress", "--importance", "l9", "--out", str(tmp_path / "d"), "--limit", "50",
                       "--baseline-epochs", "1")
    assert code == 2 and "unknown importance 'l9'" in err


@pytest.mark.parametrize("cmd", ["compress", "models", "profile", "train", "search", "export", "quantize"])
def test_every_command_accepts_a_config_file(capsys, cmd):
    code, out, _ = run(capsys, cmd, "--help")
    assert "--config" in out


def test_models_and_export_read_yaml(capsys, tmp_path):
    (tmp_path / "m.yaml").write_text("pattern: 'vgg*'\n")
    code, out, _ = run(capsys, "models", "--config", str(tmp_path / "m.yaml"))
    assert code == 0 and "vgg16" in out and "resnet20" not in out
    (tmp_path / "e.yaml").write_text("input_size: 1,16,16\n")
    code, out, err = run(capsys, "export", "convnet_tiny", "--config", str(tmp_path / "e.yaml"), "--out",
                         str(tmp_path / "m.onnx"))
    assert code == 0, err
    import onnx

    dims = onnx.load(str(tmp_path / "m.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims][1:] == [1, 16, 16]


def _option_help(cmd, option):
    import typer

    from slimkit.cli.main import _register_all, app

    _register_all()
    command = typer.main.get_command(app)
    sub = command.commands[cmd]
    return next(p.help for p in sub.params if option in p.opts)


def test_option_help_lists_every_registered_name():
    """Help reads the registries: a criterion, method or strategy registered in one file is listed without edits."""
    from slimkit.distill import list_distillers
    from slimkit.nas import list_strategies
    from slimkit.prune import list_importances, list_pruning_methods
    from slimkit.registry import SPACES

    for cmd, option, names in (("compress", "--importance", list_importances()),
                               ("compress", "--method", list_pruning_methods()),
                               ("distill", "--method", list_distillers()),
                               ("search", "--strategy", list_strategies()),
                               ("search", "--space", SPACES.list())):
        text = _option_help(cmd, option)
        assert names and all(n in text.replace(",", " ").split() for n in names), (cmd, option, text)
    assert "css" in _option_help("compress", "--importance")


def test_option_help_lists_every_value_of_a_closed_choice():
    """Options with a fixed set of values (allocation, token method, one-shot method, calibration) list the
    library's own tuple, so a value added there appears in the help without editing the CLI."""
    from slimkit.nas.oneshot import METHODS
    from slimkit.prune import ALLOCATIONS
    from slimkit.prune.tokens import TOKEN_METHODS
    from slimkit.quantize.ptq import CALIBRATION_METHODS

    for cmd, option, names in (("compress", "--allocation", ALLOCATIONS),
                               ("compress", "--token-method", TOKEN_METHODS),
                               ("oneshot", "--method", METHODS),
                               ("quantize", "--calibration-method", CALIBRATION_METHODS)):
        listed = _option_help(cmd, option).split(".")[0].replace(",", " ").split()
        assert names and all(n in listed for n in names), (cmd, option, listed)


def test_train_a_multiplexed_vit_by_model_arg_then_export_and_reload(capsys, tmp_path):
    """`--model-arg multiplex=2` trains a MiniViT (pairs of blocks share one attention and MLP), counted once."""
    from slimkit.jobs._common import load_run_model
    from slimkit.models import create_model, multiplex
    from slimkit.profile import count_params

    out = tmp_path / "mini"
    code, _, err = run(capsys, "train", "--model", "t2t_vit_7", "--model-arg", "small_input=true", "--model-arg",
                       "multiplex=2", "--data", "digits", "--limit", "100", "--epochs", "1", "--optimizer", "adamw",
                       "--lr", "1e-3", "--out", str(out))
    assert code == 0, err
    unshared = create_model("t2t_vit_7", num_classes=10, in_chans=1, small_input=True)
    hand = count_params(multiplex(unshared, share=2))
    summary = json.loads((out / "summary.json").read_text())
    assert summary["params"] == hand < 0.7 * count_params(unshared)
    back, spec = load_run_model(out)
    assert spec["kwargs"]["multiplex"] == 2 and count_params(back) == hand
    assert [b.depth for b in back.blocks] == [2, 2, 2, 1]  # t2t_vit_7: 7 blocks in groups of 2
    code, text, err = run(capsys, "export", str(out), "--out", str(tmp_path / "mini.onnx"))
    assert code == 0, err
    assert (tmp_path / "mini.onnx").is_file() and "max |diff|" in text
