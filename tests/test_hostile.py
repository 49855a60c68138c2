"""Hostile input: every bad config, value, file or folder is one clear user error, no file is
written outside the run folder and no code from a file ever runs (issue 18).

Property-based parts (hypothesis) generate configs, `--set` values and model sidecars; the
explicit tests name one example of each class the issue lists.
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
from pathlib import Path

import pytest
import torch
import yaml
from cli_helpers import invoke, one_line_error
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from snnbackdoor.checkpoint import CheckpointError, load_model, save_model
from snnbackdoor.cli import user_message
from snnbackdoor.config import read_yaml
from snnbackdoor.errors import UserError
from snnbackdoor.experiments.base import parse_config, run_folder
from snnbackdoor.models import build_model
from snnbackdoor.registry import PluginError, UnknownComponentError

USER_ERRORS = (UserError, UnknownComponentError, PluginError)
CONFIGS = Path(__file__).resolve().parent.parent / "configs"
BASE = read_yaml(CONFIGS / "digits_clean.yaml")
FUZZ = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SLOW = settings(max_examples=5000, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])




def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# --------------------------------------------------------------------------- strategies

PAYLOAD = "!!python/object/apply:os.system ['touch {mark}']"
KEYS = ["kind", "name", "seed", "device", "dataset.name", "dataset.root", "dataset.options",
        "dataset.options.val_fraction", "dataset.options.size", "model.name", "model.neuron",
        "model.v_threshold", "model.tau", "model.T", "model.surrogate", "model.detach_reset",
        "train.epochs", "train.batch_size", "train.lr", "train.momentum", "train.seed",
        "train.optimizer", "train.schedule", "train.weight_decay", "train", "model", "nope"]
NAMES = st.sampled_from(["../x", "../../x", "/abs/path", "", ".", "..", "a/b/c", "a\\b",
                         "ok_name", "x" * 300, "tab\there", " lead", "nul\x00"])
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20), NAMES,
    st.sampled_from(["cuda:9", "cpu", "auto", "meta", "cuda:x", "lif", "adam", "digits",
                     "digits_net", "train", "badsnn", "1e12", "inf"]),
)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)


def set_in(data: dict, key: str, value) -> None:
    node = data
    *parents, last = key.split(".")
    for part in parents:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[last] = value


@st.composite
def configs(draw) -> dict:
    """The preset with a few keys set to arbitrary (often hostile) values."""
    data = json.loads(json.dumps(BASE))
    for key in draw(st.lists(st.sampled_from(KEYS), min_size=1, max_size=4)):
        set_in(data, key, draw(VALUES))
    return data


SET_VALUES = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["[1,", "{a: 1", "!!python/name:os.system", "&a [*a]", "1e12", ".inf",
                     "-.inf", ".nan", "'''", "a: 1\na: 2", "[" * 200 + "]" * 200,
                     "2**64", "18446744073709551616", "-1", "0", "~", "null", "[train]"]),
    VALUES.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
)


def check_parse(data: dict, overrides=(), cwd: Path | None = None) -> None:
    """parse_config either succeeds (and its run folder stays under runs/) or raises one of
    our user errors with a one-line message; nothing is written."""
    try:
        config = parse_config(data, overrides)
    except USER_ERRORS as err:
        message = user_message(err)
        assert message and "\n" not in message and "Traceback" not in message
        return
    folder = run_folder(config, None)
    assert not folder.is_absolute() and folder.parts[0] == "runs" and len(folder.parts) == 2
    assert ".." not in folder.parts and folder.name not in ("", ".")


# --------------------------------------------------------------------------- config fuzz


@FUZZ
@given(data=configs())
def test_fuzzed_configs_are_user_errors_or_valid(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_parse(data)
    assert not any(tmp_path.iterdir())


@FUZZ
@given(key=st.sampled_from(KEYS + ["a..b", "", ".x", "train.epochs.x"]), raw=SET_VALUES)
def test_fuzzed_set_values_are_user_errors_or_valid(key, raw, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_parse(BASE, [f"{key}={raw}"])
    assert not any(tmp_path.iterdir())


@settings(max_examples=100, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(st.text(max_size=200), VALUES.map(yaml.safe_dump),
                      st.sampled_from([PAYLOAD, f"name: {PAYLOAD}", "a: 1\na: 2", "[" * 5000])))
def test_fuzzed_yaml_files_never_run_code(text, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mark = tmp_path / "pwned"
    path = tmp_path / "c.yaml"
    path.write_text(text.replace("{mark}", str(mark)), encoding="utf-8", errors="surrogatepass")
    try:
        check_parse(read_yaml(path))
    except USER_ERRORS:
        pass
    assert not mark.exists() and tree(tmp_path) == {"c.yaml"}


# --------------------------------------------------------------------------- sidecar fuzz

_MODEL_DIR = Path(tempfile.mkdtemp(prefix="snn_hostile_"))
_MODEL = _MODEL_DIR / "model.safetensors"
save_model(build_model("digits_net"), _MODEL)
_SIDECAR = json.loads(_MODEL.with_suffix(".json").read_text())
_WEIGHTS = _MODEL.read_bytes()
SPEC_KEYS = list(_SIDECAR["spec"]) + ["unknown_key"]
LAYER = next(iter(_SIDECAR["neuron_params"]))


@st.composite
def sidecars(draw) -> dict:
    """The saved sidecar with spec fields and neuron_params replaced by arbitrary values."""
    meta = json.loads(json.dumps(_SIDECAR))
    for key in draw(st.lists(st.sampled_from(SPEC_KEYS), max_size=3)):
        meta["spec"][key] = draw(VALUES | st.integers(-(2**40), 2**40))
    choice = draw(st.integers(0, 5))
    if choice == 1:
        meta["neuron_params"] = draw(VALUES)
    elif choice == 2:
        meta["neuron_params"][LAYER] = {"v_threshold": draw(VALUES), "tau": draw(VALUES)}
    elif choice == 3:
        meta["spec"] = draw(VALUES)
    elif choice == 4:
        meta[draw(st.sampled_from(["format", "extra"]))] = draw(VALUES)
    return meta


def check_load(folder: Path, meta: dict, weights: bytes) -> None:
    path = folder / "m.safetensors"
    path.write_bytes(weights)
    path.with_suffix(".json").write_text(json.dumps(meta, allow_nan=True))
    try:
        model = load_model(path)
    except CheckpointError as err:
        assert "\n" not in user_message(err)
        return
    for name, values in model.spec.as_dict().items():  # what loaded is what was checked
        assert values == meta["spec"].get(name, values) or name in ("in_channels", "image_size")


@settings(FUZZ, max_examples=500)
@given(meta=sidecars(), damage=st.sampled_from(["none", "none", "truncate", "garbage", "int64",
                                                "pickle"]))
def test_fuzzed_model_sidecars_are_user_errors_or_load(meta, damage, tmp_path):
    weights = {
        "none": _WEIGHTS,
        "truncate": _WEIGHTS[: len(_WEIGHTS) // 3],
        "garbage": os.urandom(64),
        "int64": _int64_weights(),
        "pickle": pickle.dumps({"w": [1, 2, 3]}),
    }[damage]
    check_load(tmp_path, meta, weights)
    assert tree(tmp_path) == {"m.safetensors", "m.json"}


_INT64: list[bytes] = []


def _int64_weights() -> bytes:
    if not _INT64:
        state = build_model("digits_net").state_dict()
        path = _MODEL_DIR / "int64.safetensors"
        save_file({k: v.to(torch.int64) for k, v in state.items()}, str(path),
                  metadata={"format": _SIDECAR["format"]})
        _INT64.append(path.read_bytes())
    return _INT64[0]


@pytest.mark.slow
@SLOW
@given(data=configs(), meta=sidecars())
def test_fuzz_long(data, meta, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    check_parse(data)
    check_load(tmp_path, meta, _WEIGHTS)


# --------------------------------------------------------------------------- explicit classes


@pytest.mark.parametrize(("args", "says"), [
    (["--set", "train.epochs=[1,"], "not valid YAML"),
    (["--set", "train.epochs=0"], "train.epochs must be >= 1"),
    (["--set", "train.epochs=1000000000000"], "train.epochs must be in"),
    (["--set", "model.T=1e9"], "must be an integer"),
    (["--set", "model.T=1000000000"], "model.T must be in 1..1024"),
    (["--set", "model.v_threshold=.inf"], "finite"),
    (["--set", "model.tau=.inf"], "finite"),
    (["--set", "train.lr=.inf"], "finite"),
    (["--set", "train.batch_size=1000000000000"], "batch_size must be in"),
    (["--set", "seed=-1"], "seed must be an integer in [0, 2**32)"),
    (["--set", "seed=18446744073709551616"], "out of range"),
    (["--set", "device=cuda:9"], "cuda:9"),
    (["--set", "dataset.root=''"], "dataset.root is empty"),
    (["--set", "dataset.options.val_fraction=2"], "val_fraction"),
    (["--set", "name=../x"], "not a plain name"),
    (["--set", "name=/abs/path"], "not a plain name"),
    (["--set", "name=."], "not a plain name"),
    (["--set", "name=a/b/c"], "not a plain name"),
    (["--set", "name=''"], "not a plain name"),
    (["--out", ""], "--out is empty"),
    (["--set", "model.name=resnet"], "unknown model 'resnet'"),
])
def test_bad_values_are_one_line_before_the_run_folder(args, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(invoke(["train", CONFIGS / "digits_clean.yaml", *args]))
    assert says in line
    assert not any(tmp_path.iterdir())  # no run folder was created


@pytest.mark.parametrize(("text", "says"), [
    ("kind: train\nkind: train\n", "duplicate key 'kind' at line 2"),
    ("", "is empty"),
    ("# only a comment\n", "is empty"),
    ("kind: [train]\n", "kind must be the name"),
    ("name: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than"),
    ("a: &x [1, *x]\n", "contains itself"),
    ("- 1\n", "mapping of keys"),
    (f"name: {PAYLOAD}\n", "not valid YAML"),
])
def test_bad_config_files_are_one_line(text, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "c.yaml").write_text(text.replace("{mark}", str(tmp_path / "pwned")))
    assert says in one_line_error(invoke(["run", "c.yaml"]))
    assert tree(tmp_path) == {"c.yaml"}


def test_latin1_config_says_not_utf8(tmp_path):
    (tmp_path / "c.yaml").write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert "not UTF-8 text" in one_line_error(invoke(["run", tmp_path / "c.yaml"]))


def test_os_errors_name_the_path_and_never_print_an_errno(tmp_path):
    (tmp_path / "afile").write_text("x")
    config = CONFIGS / "digits_clean.yaml"
    line = one_line_error(invoke(["train", config, "--out", tmp_path / "afile" / "sub"]))
    assert "afile" in line and "Not a directory" in line
    line = one_line_error(invoke(["train", config, "--out", tmp_path / ("x" * 300)]))
    assert "too long" in line
    assert user_message(FileNotFoundError(2, "No such file or directory", "/x/y")) == (
        "/x/y does not exist; check the path (No such file or directory)")
    assert "permission denied" in user_message(PermissionError(13, "Permission denied", "/r"))


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_unwritable_out_is_one_line(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        line = one_line_error(invoke(["train", CONFIGS / "digits_clean.yaml",
                                      "--out", locked / "run"]))
    finally:
        locked.chmod(0o700)
    assert "Permission denied" in line and str(locked) in line


def test_debug_flag_and_env_show_the_traceback(tmp_path):
    for args, env in (([ "--debug", "run", "nope.yaml"], None),
                      (["run", "nope.yaml"], {"SNNBACKDOOR_DEBUG": "1"})):
        result = invoke(args, env=env)
        assert result.exit_code == 2 and "Traceback" in result.output
        assert result.output.strip().splitlines()[-1].startswith("error: ")


def test_a_library_bug_keeps_its_traceback():
    assert user_message(TypeError("unsupported operand")) is None
    assert user_message(AttributeError("no attribute")) is None
    assert user_message(UnknownComponentError("unknown model 'x'")) == "unknown model 'x'"
    assert user_message(PluginError("plugin 'p' failed")) == "plugin 'p' failed"
    try:
        yaml.safe_load("[1,")
    except yaml.YAMLError as err:
        assert "not valid YAML" in user_message(err) and "\n" not in user_message(err)


def test_cuda_parses_without_a_gpu_and_fails_only_where_it_would_train(tmp_path):
    """A Slurm login node without a GPU parses `device: cuda`; running it here still stops
    before the run folder is made."""
    import torch

    from snnbackdoor.experiments.base import parse_config, run_experiment
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    config = parse_config({"kind": "train", "name": "x", "device": "cuda",
                           "dataset": {"name": "digits"}})
    assert config.device == "cuda"
    with pytest.raises(ValueError, match="no CUDA GPU"):
        run_experiment(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("key", "says"), [
    ("hybrid.epochs=-1", "hybrid.epochs"),
    ("elimination.epochs=-3", "elimination.epochs"),
    ("elimination.lr_candidates=[0.0]", "elimination.lr"),
    ("conversion.chunk=0", "conversion.chunk"),
])
def test_rules_sections_refuse_bad_counts(key, says, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = one_line_error(invoke(["run", CONFIGS / "rules_digits.yaml", "--set", key]))
    assert says in line
    assert not any(tmp_path.iterdir())
