"""Run every benchmark module (bench_*.py) in its own process, in name order."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def main() -> int:
    failed = 0
    for path in sorted(Path(__file__).parent.glob("bench_*.py")):
        module = f"tests.benchmarks.{path.stem}"
        print(f"# {module}", file=sys.stderr, flush=True)
        failed += subprocess.call([sys.executable, "-m", module]) != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
