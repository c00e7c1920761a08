from dataclasses import dataclass, field

import pytest

from slimkit.config import build_config, from_dict, to_dict
from slimkit.errors import ConfigError


@dataclass(frozen=True)
class Demo:
    lr: float = 0.1
    epochs: int = 3
    name: str = "a"
    nesterov: bool = False
    size: tuple[int, int, int] = (1, 28, 28)
    layers: tuple[str, ...] = field(default_factory=tuple)
    ratio: float | None = None


def test_from_dict_coerces_strings_from_cli_and_yaml():
    cfg = from_dict(Demo, {"lr": "0.5", "epochs": "7", "nesterov": "yes", "size": "3,32,32", "layers": ["fc"]})
    assert cfg == Demo(lr=0.5, epochs=7, nesterov=True, size=(3, 32, 32), layers=("fc",))
    assert to_dict(cfg)["size"] == [3, 32, 32]


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        from_dict(Demo, {"epoch": 3})


@pytest.mark.parametrize("bad", [{"epochs": "three"}, {"epochs": 2.5}, {"nesterov": "maybe"}, {"size": "1,2"}])
def test_bad_values_are_config_errors(bad):
    with pytest.raises(ConfigError):
        from_dict(Demo, bad)


def test_build_config_layers_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: 0.2\nepochs: 5\n")
    cfg = build_config(Demo, p, {"epochs": 9, "lr": None})
    assert cfg.lr == 0.2 and cfg.epochs == 9
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(Demo, tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        build_config(Demo, tmp_path / "list.yaml")


def test_config_changes_skip_allowed_keys_and_whole_sections():
    from slimkit.config import config_changes, to_dict
    from slimkit.jobs.compress import CompressConfig

    saved = to_dict(CompressConfig())
    now = from_dict(CompressConfig, {"finetune": {"epochs": 9}, "prune": {"macs_target": 0.25},
                                     "int8": {"calibration_images": 64, "tolerance": 1.0}})
    assert config_changes(saved, now, ("finetune.epochs", "int8")) == ["prune.macs_target: 0.5 -> 0.25"]
    assert sorted(config_changes(saved, now)) == ["finetune.epochs: 5 -> 9", "int8.calibration_images: 512 -> 64",
                                                  "int8.tolerance: 0.5 -> 1.0", "prune.macs_target: 0.5 -> 0.25"]
    old = {"macs": 0.5, "params": None, "importance": "l1", "finetune_epochs": 5, "finetune_lr": 0.01}
    assert config_changes({"distill": None}, from_dict(CompressConfig, {"distill": {}}))[0] == \
        "distill.temperature: None -> 4.0"  # a section switched on is a change
    # a run folder of the flat layout is compared in today's
    assert config_changes(old, now, ("int8",)) == ["prune.macs_target: 0.5 -> 0.25", "finetune.epochs: 5 -> 9"]


def test_renamed_options_reach_into_sections_and_sections_keep_their_defaults():
    """The flat options of an older layout land in today's sections; a section given in part keeps the job's own
    defaults for the rest (fine-tuning lr 0.01, not TrainConfig's 0.1); a budget given replaces the default one."""
    from slimkit.jobs.compress import CompressConfig

    with pytest.warns(DeprecationWarning, match="option macs is now called prune.macs_target"):
        old = from_dict(CompressConfig, {"macs": 0.3, "importance": "taylor", "finetune_epochs": 2, "seed": 3})
    assert (old.prune.macs_target, old.prune.importance) == (0.3, "taylor")
    assert (old.finetune.epochs, old.finetune.lr) == (2, 0.01)
    assert old.prune.seed == old.finetune.seed == 3  # the job's one seed
    assert old == from_dict(CompressConfig, {"prune": {"macs_target": 0.3, "importance": "taylor"},
                                             "finetune": {"epochs": 2}, "seed": 3})
    with pytest.warns(DeprecationWarning):
        assert from_dict(CompressConfig, {"finetune_epochs": 0, "dim_ratios": {}}).finetune is None
    assert from_dict(CompressConfig, {"prune": {"ratio": 0.3}}).prune.budget.kwargs() == {"ratio": 0.3}
    assert build_config(CompressConfig, {"prune": {"macs_target": 0.4}}, {"prune": {"params_target": 0.5}}
                        ).prune.budget.kwargs() == {"params_target": 0.5}  # a later layer's budget replaces it
    with pytest.raises(ConfigError, match="finetune.seed"):
        from_dict(CompressConfig, {"seed": 1, "finetune": {"seed": 2}})
    with pytest.warns(DeprecationWarning, match="kd_temperature is now called distill.temperature"):
        kd = from_dict(CompressConfig, {"distill": True, "kd_temperature": 2.0}).distill
    assert (kd.temperature, kd.alpha) == (2.0, 0.9)  # KD's own options (slimkit distill --method kd)
    with pytest.warns(DeprecationWarning):
        assert from_dict(CompressConfig, {"distill": False, "kd_alpha": 0.5}).distill is None
    with pytest.raises(ConfigError) as e:
        from_dict(CompressConfig, {"distill": {"alpha": 2}})
    assert e.value.option == "distill.alpha"


@dataclass(frozen=True)
class Renamed:
    RENAMED_OPTIONS = {"budget": "queries"}  # a class attribute, not a field
    queries: int = 100
    seed: int = 0


def test_a_renamed_option_still_loads_under_its_new_name():
    """Config files and run folders written before a rename keep loading; the new name wins over the old."""
    with pytest.warns(DeprecationWarning, match="budget is now called queries"):
        assert from_dict(Renamed, {"budget": 7, "seed": 1}) == Renamed(queries=7, seed=1)
    with pytest.warns(DeprecationWarning):
        assert build_config(Renamed, {"budget": 7}, {"queries": 9}) == Renamed(queries=9)
    assert from_dict(Renamed, {"queries": 3}) == Renamed(queries=3)
