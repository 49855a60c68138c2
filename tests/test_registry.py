"""The one registry: every kind listed, did-you-mean, duplicates refused, plugins by entry point."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from snnbackdoor import registry

CLI = [sys.executable, "-m", "snnbackdoor.cli"]


def test_every_kind_has_components():
    for kind in ("model", "dataset", "experiment"):
        assert registry.names(kind), kind
    assert "digits_net" in registry.names("model")
    assert "table2" in registry.names("experiment")


def test_unknown_name_suggests_the_closest_and_says_where_it_lives():
    with pytest.raises(registry.UnknownComponentError, match="Did you mean 'badsnn'"):
        registry.get("experiment", "badsn")
    with pytest.raises(registry.UnknownComponentError, match="is a model, not a dataset"):
        registry.get("dataset", "digits_net")
    with pytest.raises(registry.UnknownComponentError, match="unknown component kind"):
        registry.names("attak")


def test_a_second_component_with_the_same_name_is_refused():
    def first():
        """One."""

    def second():
        """Two."""

    registry.register("trigger", "test_dup_trigger")(first)
    try:
        with pytest.raises(ValueError, match="registered twice"):
            registry.register("trigger", "test_dup_trigger")(second)
        assert registry.get("trigger", "test_dup_trigger").description == "One."
    finally:
        registry._TABLE["trigger"].pop("test_dup_trigger")


def _plugin(tmp_path: Path, body: str, name: str = "snnbd_test_plugin") -> dict:
    """A plugin package made visible through a real entry point (a dist-info on sys.path)."""
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    dist = tmp_path / f"{name}-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[snnbackdoor.plugins]\n{name} = {name}\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")])
    return env


def test_a_plugin_registered_through_the_entry_point_is_listed(tmp_path):
    env = _plugin(tmp_path, '''
        from dataclasses import dataclass

        import snnbackdoor


        @dataclass
        class ShoutOptions:
            volume: int = 3


        @snnbackdoor.register("trigger", "shout", options=ShoutOptions)
        def shout(x):
            """A plugin trigger that brightens every pixel."""
            return (x * 2).clamp(0, 1)
    ''')
    out = subprocess.run(CLI + ["list", "--json"], env=env, capture_output=True, text=True,
                         check=True)
    listed = json.loads(out.stdout)
    assert set(registry.KINDS) <= set(listed)
    assert listed["trigger"]["shout"] == {
        "description": "A plugin trigger that brightens every pixel.",
        "options": {"volume": 3},
    }
    assert "digits_net" in listed["model"]


def test_a_broken_plugin_is_one_clear_line(tmp_path):
    env = _plugin(tmp_path, "raise ImportError('missing dependency foo')\n", "snnbd_broken")
    out = subprocess.run(CLI + ["list"], env=env, capture_output=True, text=True)
    assert out.returncode != 0
    assert "plugin 'snnbd_broken'" in out.stderr and "missing dependency foo" in out.stderr
    assert "Traceback" not in out.stderr
