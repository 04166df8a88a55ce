"""Small builders of valid contract records for tests."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from runners.synthetic.rng import base58check
from schemas.events import Settlement


def tron_address(n: int) -> str:
    """A valid Tron address (base58check of 0x41 + 20 bytes), distinct per ``n``."""
    return base58check(b"\x41" + n.to_bytes(20, "big"))


def step_labels(pipeline, edges: tuple[str, ...] = ()) -> set[str]:
    """Full labels of every step of a built pipeline (composites and leaves), leaving out the
    steps under a top-level label that starts with one of ``edges`` (sources and sinks)."""
    import apache_beam as beam

    labels: set[str] = set()

    class Visitor(beam.pipeline.PipelineVisitor):
        def enter_composite_transform(self, node):
            labels.add(node.full_label)

        def visit_transform(self, node):
            labels.add(node.full_label)

    pipeline.visit(Visitor())
    return {label for label in labels if not label.startswith(edges)} if edges else labels


def settlement(
    event_id: str,
    account: str,
    kind: str,
    asset: str,
    amount: str,
    when: datetime,
    decimals: int = 18,
) -> Settlement:
    """A settlement of ``amount`` token units (converted to raw units with ``decimals``)."""
    return Settlement(
        event_id=event_id,
        account_id=account,
        venue="aave_v3",
        kind=kind,
        asset=asset,
        amount_raw=str(int(Decimal(amount).scaleb(decimals))),
        decimals=decimals,
        event_time=when,
    )
