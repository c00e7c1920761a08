"""The transformer options of `slimkit compress` (--dims, --dim-ratio, --token-method, --ratio-search) and the input
size of a ViT are checked before any work: every bad value is one line naming the value and the fix, printed
before a baseline is trained (compress trains one first: an error after minutes of training is a bug)."""

import pytest

import slimkit.jobs.train as train_job
from slimkit.cli.main import main

SMALL_TINYVIT = ["--model", "tinyvit_5m", "--model-arg", "embed_dims=[8,8,8,8]", "--model-arg", "depths=[1,1,1,1]",
                 "--model-arg", "num_heads=[1,1,1,1]"]  # windowed attention: no token sequence to shorten


@pytest.fixture
def compress(capsys, tmp_path, monkeypatch):
    """Run `slimkit compress --data digits ARGS`; training a baseline fails the test. Returns (exit code, stderr)."""
    def trained(*a, **k):
        raise AssertionError("a baseline was trained before the options were checked")

    monkeypatch.setattr(train_job, "run", trained)

    def run(*args):
        out = tmp_path / "run"
        code = main(["compress", "--data", "digits", *args, "--out", str(out)])
        assert not out.exists()  # refused before the run folder was written
        return code, capsys.readouterr().err.replace("\n", " ")
    return run


@pytest.mark.parametrize("args, said", [
    (["--dim-ratio", "heads=abc"], "--dim-ratio heads=abc: 'abc' is not a number (e.g. --dim-ratio heads=0.3)"),
    (["--dim-ratio", "heads="], "--dim-ratio takes NAME=NUMBER (e.g. --dim-ratio heads=0.3), got 'heads='"),
    (["--dim-ratio", "heads=true"], "'true' is not a number"),  # was read as 1.0 and refused as 1.0
    (["--dim-ratio", "heads=0.3", "--dim-ratio", "heads=0.5"], "--dim-ratio gives heads twice"),  # last one won
    (["--dims", ""], "--dims is empty"),  # was taken as no --dims: pruned every channel group
    (["--dims", "heads", "--dim-ratio", "neurons=0.3"], "names ['neurons'], which dims ['heads'] leaves out"),
    (["--token-method", "merge"], "--token-method applies to token pruning only"),  # was ignored
    (["--ratio-search", "--search-queries", "1"], "--search-queries must be >= 2"),  # failed after training
])
def test_bad_transformer_options_are_one_line_before_training(compress, args, said):
    code, err = compress("--model", "resnet20", *args)
    assert code == 2 and said in err, err


@pytest.mark.parametrize("args, said", [
    (["--model", "resnet20", "--dims", "heads"],
     "--dims names ['heads'], which resnet20 does not have: it can be pruned along neurons, embed"),
    (["--model", "resnet20", "--dim-ratio", "heads=0.3"], "--dim-ratio names ['heads'], which resnet20 does not have"),
    ([*SMALL_TINYVIT, "--dims", "tokens"], "windowed and hierarchical models keep their token grid): it can be pruned "
                                           "along heads, neurons, embed"),
    (["--model", "t2t_vit_7", "--dim-ratio", "tokens=0.3", "--token-method", "drop"],
     "sees 1 patch token at this input size"),  # 8x8 digits: would have pruned no token
])
def test_a_dimension_the_model_lacks_is_named_before_training(compress, args, said):
    """Checked on the architecture of the untrained model (once: the dependency groups and the token stack at the
    data's size), not when pruning starts after the baseline (nor, for heads of a CNN, a model pruned along
    nothing)."""
    code, err = compress(*args)
    assert code == 2 and said in err, err


def test_profile_of_a_vit_at_another_input_size_names_the_size_it_was_built_for(capsys):
    pytest.importorskip("timm")
    code = main(["profile", "timm:vit_tiny_patch16_224", "--input-size", "3,16,16", "--model-arg", "img_size=32",
                 "--model-arg", "depth=1", "--model-arg", "embed_dim=32", "--model-arg", "num_heads=2"])
    err = capsys.readouterr().err.replace("\n", " ")
    assert code == 2 and "built for 32x32 inputs" in err and "img_size=16" in err, err
