from pathlib import Path

import pytest

from snnbackdoor.config import ConfigError, read_yaml
from snnbackdoor.experiments.base import load_config, parse_config

BASE = {"kind": "train", "name": "t", "dataset": {"name": "digits"},
        "model": {"name": "digits_net"}}


def test_preset_loads_and_set_overrides_apply():
    config = load_config("configs/digits_clean.yaml", ["train.epochs=3", "model.v_threshold=1.5"])
    assert config.train.epochs == 3 and config.model.v_threshold == 1.5


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["train.epoch=3"], "Did you mean 'epochs'"),
        (["train.epochs=ten"], "must be an integer"),
        (["model.tau=0.5"], "paper tau 0.5 -> tau=2.0"),
        (["model.name=resnet"], "unknown model 'resnet'"),
        (["dataset.name=cifar"], "unknown dataset"),
        (["kind=nonsense"], "unknown experiment kind"),
        (["train.optimizer=rmsprop"], "adam' or 'sgd"),
        (["model.detach_reset=3"], "true or false"),
        (["trian.epochs=3"], "Did you mean 'train'"),
    ],
)
def test_bad_configs_fail_before_training_with_one_line(overrides, message):
    with pytest.raises((ConfigError, KeyError, ValueError), match=message) as info:
        parse_config(BASE, overrides)
    assert "\n" not in str(info.value.args[0])


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_config_parses(path, tmp_path):
    """Each preset is valid as shipped (a paper-scale one once given its dataset.root)."""
    data = read_yaml(path)
    data.pop("sweep", None)  # sweep configs: the base config without its grid
    if data["dataset"]["name"] not in ("digits", "ndigits"):  # the embedded ones need no root
        data["dataset"]["root"] = str(tmp_path)
    assert parse_config(data).kind == data["kind"]


def test_strict_yaml_refuses_duplicates_aliases_loops_and_code(tmp_path):
    from snnbackdoor.config import load_yaml_text

    assert load_yaml_text("a: &x {k: 1}\nb: *x\n", "t") == {"a": {"k": 1}, "b": {"k": 1}}
    for text, says in [("a: 1\na: 2", "duplicate key 'a'"), ("a: &x [1, *x]", "itself"),
                       ("a: !!python/name:os.system", "not valid YAML"),
                       ("a: " + "[" * 40 + "]" * 40, "deeper than")]:
        with pytest.raises(ConfigError, match=says):
            load_yaml_text(text, "t")
    with pytest.raises(ConfigError, match=r"--set train.epochs value '\[1,' is not valid YAML"):
        parse_config(BASE, ["train.epochs=[1,"])


def test_check_range_says_the_bounds():
    from snnbackdoor.config import check_range

    check_range("a.b", 0.5, 0, 1, low_open=True)
    with pytest.raises(ConfigError, match=r"'a.b' must be a number in \(0, 1\], got 0"):
        check_range("a.b", 0, 0, 1, low_open=True)
    with pytest.raises(ConfigError, match="must be an integer"):
        check_range("n", 2.5, 1, None, integer=True)
    with pytest.raises(ConfigError, match="must be a number"):
        check_range("x", float("nan"))
