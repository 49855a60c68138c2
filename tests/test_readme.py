"""Every Python block of the README runs as written, so an example can never fail as printed.

The blocks of one `## ` section run in order in one namespace, in a fresh interpreter whose
working directory is a temporary folder (examples write files such as `runs/mine/`). A block
preceded by `<!-- plugin: NAME -->` is a plugin module, installed and run through a real
entry point by tests/test_extending.py, so it is not run here.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import snnbackdoor

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GUIDE = "Attack and defend your own network"
PLUGIN = re.compile(r"<!--\s*plugin:")


def sections(text: str) -> dict[str, list[str]]:
    """{section title: its Python blocks in order}; plugin blocks left out, fences honoured."""
    out: dict[str, list[str]] = {}
    title, fence, block, previous = "", None, [], ""
    for line in text.splitlines():
        if fence is None:
            if line.startswith("## "):
                title = line[3:].strip()
            elif line.startswith("```"):
                fence = line[3:].strip()
                block = []
                plugin = bool(PLUGIN.match(previous))
            if line.strip():
                previous = line
            continue
        if line.startswith("```"):
            if fence == "python" and not plugin:
                out.setdefault(title, []).append("\n".join(block) + "\n")
            fence = None
            previous = line
            continue
        block.append(line)
    assert fence is None, "README has an unclosed code fence"
    return out


BLOCKS = sections(README.read_text())


def run_section(title: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    env.setdefault("OMP_NUM_THREADS", "1")
    code = "\n".join(BLOCKS[title])
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


def test_the_readme_has_python_blocks_and_the_guide():
    assert GUIDE in BLOCKS and "Python API" in BLOCKS
    assert "Extending: a new attack or defense is one module" not in BLOCKS  # plugin: skipped
    for title, blocks in BLOCKS.items():
        for block in blocks:
            ast.parse(block, filename=f"README {title}")


@pytest.mark.parametrize("title", [t for t in BLOCKS if t != GUIDE])
def test_readme_section_runs_as_written(title, tmp_path):
    done = run_section(title, tmp_path)
    assert done.returncode == 0, f"README section {title!r} failed:\n{done.stderr[-3000:]}"


def test_the_guide_uses_only_the_documented_api():
    """No `snnbackdoor.<module>` name: every `sb.X` is exported by `snnbackdoor`."""
    tree = ast.parse("\n".join(BLOCKS[GUIDE]))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert not (node.module or "").startswith("snnbackdoor"), ast.unparse(node)
        if isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name == "snnbackdoor" or not alias.name.startswith("snnbackdoor")
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == "sb"}
    assert used and used <= set(snnbackdoor.__all__), sorted(used - set(snnbackdoor.__all__))


def test_the_guide_runs_top_to_bottom_with_its_figures(tmp_path):
    done = run_section(GUIDE, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    clean_ca = float(re.search(r"clean CA ([\d.]+)", out).group(1))
    assert clean_ca > 0.85
    badnet = ast.literal_eval(re.search(r"^BadNet (\{.*\})$", out, re.M).group(1))
    assert badnet["asr"] > 0.8 and badnet["ca"] > 0.85
    badsnn, control = re.search(r"^BadSNN (\{.*\}) \| T_o against the clean model: ([\d.]+)$",
                                out, re.M).groups()
    assert ast.literal_eval(badsnn)["asr"] > float(control)  # the backdoor adds to T_o
    for defense in ("finetune", "fine_pruning"):
        assert re.search(rf"^{defense} \{{'ca'", out, re.M)
    assert 0.5 < ast.literal_eval(re.search(r"^STRIP (\{.*\})$", out, re.M).group(1))["auroc"]
    reloaded = ast.literal_eval(re.search(r"^reloaded (\{.*\})$", out, re.M).group(1))
    assert reloaded == ast.literal_eval(badsnn)
    assert (tmp_path / "my_net.safetensors").exists() and (tmp_path / "my_net.json").exists()
