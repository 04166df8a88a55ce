"""Plain-Python baselines: the same pure functions the pipeline wraps, in one process, no Beam."""

from __future__ import annotations

from collections import defaultdict

from schemas.events import PriceEvent
from transforms.prices.composite import CompositeEngine
from transforms.prices.oracles import load_registry
from transforms.prices.transform import to_obs
from transforms.prices.validation import check_update


def composite_rows(events: list[PriceEvent]) -> int:
    """Validate, then compose each asset in one pass: the number of composite rows."""
    reg = load_registry()
    by_asset = defaultdict(list)
    for e in events:
        if check_update(e, reg) is None:
            by_asset[e.asset].append(to_obs(e, reg.heartbeat(e.asset, e.source)))
    rows = 0
    for obs in by_asset.values():
        end = max(o.publish_us for o in obs)
        end = end - end % 60_000_000 + 60_000_000
        engine = CompositeEngine(60, reg.grace_s, reg.max_source_deviation_bps, 2)
        rows += len(engine.compose(obs, end)[0])
    return rows
