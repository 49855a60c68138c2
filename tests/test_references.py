"""Every `*.md` / `*.py` / `*.yaml` path the repository's text names exists: in the repository,
in the package, or in the installed third-party package it names (nothing points outside)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where a bare or package-relative path may live (`training.py`, `attacks/badnet.py`).
BASES = [ROOT, ROOT / "src" / "snnbackdoor", ROOT / "src", ROOT / "configs", ROOT / "docs"]
# Names of files a run writes (they live in run directories, not in the repository), and the
# plugin module the README's extension example defines inline.
NOT_IN_REPOSITORY = {"config.yaml", "report.md", "my_backdoors.py"}
TEXT_SUFFIXES = (".py", ".md", ".yaml", ".yml", ".toml", ".cfg", ".txt")
PATH = re.compile(r"(?<![\w./-])([\w.-]+(?:/[\w.-]+)*\.(?:md|py|yaml))(?![\w/-])")


def _tracked_text_files() -> list[Path]:
    """The repository's tracked text files, tests excluded (they name the temp files they write)."""
    try:
        out = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    names = [n for n in out.split() if not n.startswith("tests/")]
    return [ROOT / n for n in names if n.endswith(TEXT_SUFFIXES) or n == "Makefile"]


def _installed(ref: str) -> bool:
    """A path under an installed package (`spikingjelly/_ops/selection.py`) that exists there."""
    package, _, rest = ref.partition("/")
    if not rest or not package.isidentifier():
        return False
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return False
    return any((Path(loc) / rest).exists() for loc in spec.submodule_search_locations)


def _exists(ref: str, source: Path) -> bool:
    return (ref in NOT_IN_REPOSITORY or any((base / ref).exists() for base in BASES)
            or (source.parent / ref).exists() or _installed(ref))


def test_every_named_file_exists():
    missing = []
    for path in _tracked_text_files():
        if not path.exists():
            continue
        for number, line in enumerate(path.read_text(errors="ignore").splitlines(), 1):
            for match in PATH.finditer(line):
                if not _exists(match.group(1), path):
                    missing.append(f"{path.relative_to(ROOT)}:{number}: {match.group(1)}")
    assert not missing, "references to files not in the repository:\n" + "\n".join(missing)


def test_the_check_sees_a_missing_file(tmp_path):
    """The pattern finds a dangling name (so the test above is not vacuous)."""
    found = [m.group(1) for m in PATH.finditer("see `PAPERS.md` and docs/methods.md 1.4")]
    assert found == ["PAPERS.md", "docs/methods.md"]
    assert not _exists("PAPERS.md", tmp_path / "x.md")
    assert _exists("docs/methods.md", tmp_path / "x.md")
    assert _exists("spikingjelly/activation_based/neuron/lif.py", tmp_path / "x.md")
