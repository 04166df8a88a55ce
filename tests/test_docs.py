"""The docs match the code: every path and module a README names exists, and README.md stays an
index (at most 12 KB).

    pytest -q tests/test_docs.py
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from tests.support.paths import ROOT

PACKAGES = ("runners", "pipelines", "transforms", "schemas")
TOP = (*PACKAGES, "sql", "infra", "tests", ".ci")
SPAN = re.compile(r"`([^`\n]+)`|\]\(([^)\s]+)\)")  # `code` spans and markdown link targets
PATHLIKE = re.compile(r"^[\w.\-/]+$")
MODULE = re.compile(rf"^(?:{'|'.join(PACKAGES)})(?:\.\w+)+$")


def readmes() -> list[Path]:
    tracked = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "*README.md"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return [ROOT / p for p in tracked if not p.startswith("tests/data/")]


def named(text: str) -> list[str]:
    out = []
    for code, link in SPAN.findall(text):
        token = (code or link).strip().rstrip(".,:;")
        if link and "://" in link:
            continue
        out.append(token)
    return out


def module_exists(name: str) -> bool:
    """``a.b.c`` names a module, or an attribute defined at the top of one (``a.b.func``)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        file = base.with_suffix(".py") if not base.is_dir() else base / "__init__.py"
        if file.exists():
            rest = parts[i:]
            if not rest:
                return True
            if len(rest) > 2:
                return False
            pattern = (
                rf"^(?:class|def|async def) {rest[0]}\b|^{rest[0]}\b[^=\n]*=|^    def {rest[-1]}\b"
            )
            return re.search(pattern, file.read_text(), re.M) is not None
    return False


def broken_references(readme: Path) -> list[str]:
    """Paths and modules a README names that do not exist. A path counts when it starts at the
    repository's top (``runners/...``, ``sql/...``) or beside the README (``data/ofac/``); a bare
    ``name.py`` must be somewhere under the README's folder. Paths of outputs (``OUT/...``,
    ``ground_truth.json``) are neither, and are not checked."""
    bad = []
    for token in named(readme.read_text()):
        if MODULE.match(token):
            if not module_exists(token):
                bad.append(token)
            continue
        if not PATHLIKE.match(token):
            continue
        first = token.split("/")[0]
        if "/" in token and first in TOP:
            ok = (ROOT / token).exists()
        elif "/" in token and (readme.parent / first).exists():
            ok = (readme.parent / token).exists()
        elif "/" not in token and token.endswith(".py"):
            ok = any(readme.parent.rglob(token))
        else:
            continue
        if not ok:
            bad.append(token)
    return bad


def test_readme_is_an_index():
    assert (ROOT / "README.md").stat().st_size <= 12 * 1024
    text = (ROOT / "README.md").read_text()
    assert "make demo" in text and "make test" in text


@pytest.mark.parametrize("readme", readmes(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_path_a_readme_names_exists(readme):
    assert broken_references(readme) == []


def test_a_wrong_path_is_caught(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(
        "`runners/local/run.py`, `transforms.margin.engine.MarginShardEngine`, `OUT/tables/`,\n"
        "`transforms/margin/nothing.py`, `runners.local.run.no_such_function`, `pipelines.gone`,"
        " `gone.py`\n"
    )
    assert broken_references(readme) == [
        "transforms/margin/nothing.py",
        "runners.local.run.no_such_function",
        "pipelines.gone",
        "gone.py",
    ]


def test_every_package_with_rules_or_a_run_mode_has_its_readme():
    for folder in ("transforms", "runners/local", "runners/live", "runners/dataflow"):
        assert (ROOT / folder / "README.md").exists(), folder
    for domain in ("prices", "var", "margin", "surveillance", "compliance"):
        assert (ROOT / "transforms" / domain / "README.md").exists(), domain
    assert (ROOT / "runners" / "backfill" / "README.md").exists()
