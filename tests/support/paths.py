"""Where the tests find the project and their data, wherever the test module sits."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repository
DATA = ROOT / "tests" / "data"  # real datasets copied from ../shared, each with its SOURCE.md
