"""``defi-risk schemas generate|check``: the generated Avro and BigQuery files of ``schemas/``.

defi-risk schemas generate    # rewrite schemas/avro and schemas/bigquery from the models
defi-risk schemas check       # exit 1 when a generated file is stale
"""

from __future__ import annotations

import sys

from schemas.codegen import stale_files, write_files


def schemas_command(args) -> int:
    """Writes the generated files, or checks them (1 when one is stale)."""
    if args.action == "generate":
        for path in write_files():
            print(f"wrote {path}")
        return 0
    stale = stale_files()
    for path in stale:
        print(f"stale: {path} (run `defi-risk schemas generate`)", file=sys.stderr)
    if not stale:
        print("generated schemas are up to date")
    return 1 if stale else 0
