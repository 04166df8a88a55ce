"""The array composite (backfill path) against the streaming CompositeEngine: identical rows.

pytest tests/transforms/prices/test_batch.py
"""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import pytest

from transforms.prices.batch import NANO, STATUS, Carry, SourceUpdates, compose_span
from transforms.prices.composite import MICROS, CompositeEngine, Obs

DAY = 86_400 * MICROS
T0 = 1_735_689_600 * MICROS  # 2025-01-01T00:00:00Z
HEARTBEAT = {"chainlink": 3600, "pyth": 60, "dex": 300}
PRIORITY = {"chainlink": 0, "pyth": 1, "dex": 2}


def stream(seed: int, days: int, sources=("chainlink", "pyth")) -> list[Obs]:
    """Random updates with outages, outliers, redeliveries and rounds going back."""
    rng = np.random.default_rng(seed)
    obs: list[Obs] = []
    n_min = days * 1440
    base = 3000 * np.exp(np.cumsum(rng.normal(0, 0.001, n_min)))
    outage = np.zeros(n_min, bool)
    for _ in range(days * 2):  # outages of 5 to 200 minutes for every source at once
        s = int(rng.integers(0, n_min - 200))
        outage[s : s + int(rng.integers(5, 200))] = True
    for source in sources:
        rnd = 1000
        for m in range(n_min):
            if outage[m]:
                continue
            every = {"chainlink": 0.08, "pyth": 0.95, "dex": 0.3}[source]
            if rng.random() > every:
                continue
            pub = T0 + m * 60 * MICROS + int(rng.integers(0, 60 * MICROS))
            p = base[m] * (1 + rng.normal(0, 0.0005))
            if rng.random() < 0.01:
                p *= 1.05  # an outlier: set aside when another source disagrees
            price = Decimal(f"{p:.8f}")
            rnd += 1
            key = rnd if source == "chainlink" else None
            o = Obs(source, f"feed-{source}", price, pub, key, f"{source}-{m}",
                    HEARTBEAT[source], PRIORITY[source])  # fmt: skip
            obs.append(o)
            if rng.random() < 0.01:  # a redelivery of the same update
                obs.append(o)
            if source == "chainlink" and rng.random() < 0.005:  # a stale round replayed
                obs.append(Obs(source, o.feed_key, price, pub, rnd - 3, f"old-{m}",
                               HEARTBEAT[source], PRIORITY[source]))  # fmt: skip
    return obs


def engine_rows(obs: list[Obs], until: int, **cfg):
    eng = CompositeEngine(**cfg)
    rows, rejects, later = eng.compose(obs, until)
    assert not later
    return (
        [
            (
                r.window_start_us,
                r.window_end_us,
                r.price,
                r.status,
                r.sources,
                r.set_aside,
                None if r.spread_bps is None else round(r.spread_bps, 6),
            )  # fmt: skip
            for r in rows
        ],
        sorted((r.obs.event_id, r.reason) for r in rejects),
    )


def to_updates(obs: list[Obs]) -> dict[str, SourceUpdates]:
    out = {}
    for s in sorted({o.source for o in obs}):
        mine = [o for o in obs if o.source == s]
        out[s] = SourceUpdates(
            publish_us=np.array([o.publish_us for o in mine], np.int64),
            price_nano=np.array([int(o.price * NANO) for o in mine], np.int64),
            order_key=np.array([o.order_key() for o in mine], np.int64),
            event_id=np.array([o.event_id for o in mine], object),
            is_round=s == "chainlink",
        )
    return out


def batch_rows(obs: list[Obs], days: int, **cfg):
    carry, rows, rejects = Carry(), [], []
    for d in range(days):
        lo, hi = T0 + d * DAY, T0 + (d + 1) * DAY
        day = [o for o in obs if lo <= o.publish_us < hi]
        span, rej, carry = compose_span(to_updates(day), carry, hi, HEARTBEAT, PRIORITY, **cfg)
        by_source = to_updates(day)
        rejects += [(str(by_source[r.source].event_id[r.index]), r.reason) for r in rej]
        for i in range(len(span)):
            st = STATUS[span.status[i]]
            used = tuple(s for j, s in enumerate(span.sources) if span.used[i, j])
            aside = tuple(s for j, s in enumerate(span.sources) if span.set_aside[i, j])
            price = None if st == "price_unavailable" else Decimal(int(span.price_nano[i])) / NANO
            spread = None if st == "price_unavailable" else round(float(span.spread_bps[i]), 6)
            rows.append((int(span.window_start_us[i]), int(span.window_end_us[i]), price, st,
                         used, aside, spread))  # fmt: skip
    return rows, sorted(rejects)


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_batch_composite_equals_the_streaming_engine_over_days(seed):
    obs = stream(seed, days=3)
    expected, expected_rejects = engine_rows(obs, T0 + 3 * DAY)
    got, got_rejects = batch_rows(obs, days=3)
    assert len(got) == len(expected) > 3000
    for g, e in zip(got, expected, strict=True):
        assert g[:2] == e[:2] and g[3:6] == e[3:6], (g, e)
        assert g[2] == e[2], (g, e)  # exact: integer median of 8-decimal prices
        assert (g[6] is None) == (e[6] is None) and (g[6] is None or abs(g[6] - e[6]) < 1e-6)
    assert got_rejects == expected_rejects and got_rejects
    statuses = {r[3] for r in got}
    assert statuses == {"ok", "degraded", "price_unavailable"}


def test_three_sources_and_parameters_follow_the_engine():
    obs = stream(9, days=2, sources=("chainlink", "pyth", "dex"))
    cfg = {"max_dev_bps": 30.0, "min_sources": 3, "grace_s": 30}
    expected, _ = engine_rows(obs, T0 + 2 * DAY, **cfg)
    got, _ = batch_rows(obs, days=2, **cfg)
    assert [g[:2] + g[3:6] for g in got] == [e[:2] + e[3:6] for e in expected]
    assert [g[2] for g in got] == [e[2] for e in expected]
    assert any(len(g[5]) for g in got)  # some source was set aside


def test_an_outage_open_at_midnight_is_reported_once():
    obs = [
        o
        for o in stream(5, days=2)
        if not (T0 + DAY - 3600 * MICROS <= o.publish_us < T0 + DAY + 3600 * MICROS)
    ]
    expected, _ = engine_rows(obs, T0 + 2 * DAY)
    got, _ = batch_rows(obs, days=2)
    assert got == [g for g in got] and len(got) == len(expected)
    around = [g for g in got if T0 + DAY - 7200 * MICROS <= g[0] < T0 + DAY + 7200 * MICROS]
    assert sum(g[3] == "price_unavailable" for g in around) == 1


def test_no_updates_and_no_carry_gives_nothing():
    span, rej, carry = compose_span({}, Carry(), T0 + DAY, HEARTBEAT, PRIORITY)
    assert len(span) == 0 and rej == [] and carry.next_start_us is None


def test_decimal_array_is_the_exact_inverse_of_the_int64_reading():
    """Prices go to the decimal128(38, 9) column from their buffers: the same values as Decimal
    objects would give, nulls where unavailable, negative and extreme values included."""
    import pyarrow as pa

    from transforms.common.columns import decimal_array, to_nano

    nano = np.array([1, 3_000_000_000_000, -5, 0, 2**62, -(2**62), 123_456_789], dtype=np.int64)
    null = np.array([False, False, False, True, False, False, False])
    got = decimal_array(nano, null)
    want = pa.array(
        [None if u else Decimal(int(v)).scaleb(-9) for u, v in zip(null, nano, strict=True)],
        pa.decimal128(38, 9),
    )
    assert got.equals(want) and got.null_count == 1
    assert np.array_equal(to_nano(pa.array(got.to_pylist()[:3], pa.decimal128(38, 9))), nano[:3])
    assert decimal_array(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=bool)).equals(
        pa.array([], pa.decimal128(38, 9))
    )


def test_name_lists_are_the_marked_names_of_each_row():
    import pyarrow as pa

    from transforms.common.columns import name_lists

    names = np.array(["chainlink", "pyth", "dex"], dtype=object)
    mask = np.array([[True, False, True], [False, False, False], [False, True, False]])
    got = name_lists(names, mask)
    assert got.type == pa.list_(pa.string())
    assert got.to_pylist() == [["chainlink", "dex"], [], ["pyth"]]
    assert name_lists(np.array([], dtype=object), np.zeros((2, 0), bool)).to_pylist() == [[], []]
