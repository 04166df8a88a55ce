"""The sharded margin engine (pure): rows, events and alerts from settlements and prices, the
float screen against an exact per-account reference, lateness, redelivery and bounded state."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from schemas.types import epoch_micros
from tests.support.factories import settlement
from transforms.margin.detector import AccountState, DetectorConfig, observe
from transforms.margin.engine import MarginConfig, MarginShardEngine, PriceTick
from transforms.margin.health import health_score

T0 = datetime(2025, 1, 1, 12, tzinfo=UTC)
NO_SNAP = MarginConfig(snapshot_s=0)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def tick(asset: str, price: str | None, second: float, status: str = "ok") -> PriceTick:
    return PriceTick(
        asset, epoch_micros(at(second)), None if price is None else Decimal(price), status
    )


def usdc(event_id, account, kind, amount, second):
    return settlement(event_id, account, kind, "USDC", amount, at(second), decimals=6)


def eth(event_id, account, kind, amount, second):
    return settlement(event_id, account, kind, "ETH", amount, at(second))


def opened(account="acct", second=1):
    """10 ETH of collateral against 15,000 USDC of debt: health 100 at $3,000."""
    return [eth(f"{account}-d", account, "deposit", "10", second),
            usdc(f"{account}-b", account, "borrow", "15000", second + 1)]  # fmt: skip


def run(settlements, ticks, until_s=10_000, cfg=NO_SNAP, engine=None):
    eng = engine or MarginShardEngine(cfg)
    out, later_s, later_t = eng.advance(settlements, ticks, epoch_micros(at(until_s)))
    return eng, out


def test_worked_example_row_after_the_borrow():
    _, out = run(opened(), [tick("ETH", "3000", 0), tick("USDC", "1", 0)])
    row = out.health[-1][1]
    assert (row.trigger, row.zone, row.health_score) == ("settlement", "healthy", Decimal(100))
    assert (row.collateral_usd, row.borrow_usd) == (Decimal(30000), Decimal(15000))
    (lp,) = row.liquidation_prices
    assert (lp.asset, lp.liquidation_price, lp.margin_call_price) == (
        "ETH",
        Decimal("1725"),
        Decimal("1950"),
    )
    assert row.price_status == "ok" and out.events == [] and out.rejected == []


def test_price_moves_give_zone_rows_events_and_alerts_in_order():
    prices = [("3000", 0), ("1900", 60), ("1940", 120), ("1960", 180), ("1700", 240), ("2100", 300)]
    ticks = [tick("USDC", "1", 0)] + [tick("ETH", p, s) for p, s in prices]
    _, out = run(opened(), ticks)
    assert [(r.trigger, r.zone) for _, r in out.health] == [
        ("settlement", "no_debt"),  # the deposit alone: no debt, no health
        ("settlement", "healthy"),
        ("price", "margin_call"),  # 1900: health 26.67
        ("price", "liquidation"),  # 1700: 13.33 (1940 and 1960 stay inside the band)
        ("price", "warning"),  # 2100: 40 clears 15 + 2 and 30 + 2 (below 50: warning)
    ]
    assert [(e.event_type, e.previous_zone, e.zone) for _, e in out.events] == [
        ("margin_call", "healthy", "margin_call"),
        ("liquidation", "margin_call", "liquidation"),
        ("recovered", "liquidation", "warning"),
    ]
    assert [a.event_type for _, a in out.alerts] == ["margin_call", "liquidation", "recovered"]
    alert = out.alerts[0][1]
    assert alert.collateral_usd == Decimal("19000.000000000")
    assert alert.health_score == Decimal("26.666666667")


def test_hysteresis_no_flapping_between_29_9_and_30_1():
    # health = 20 * p / 1500 - 100 with 10 ETH against 15,000: 29.9 at 1948.5, 30.1 at 1951.5
    ticks = [tick("USDC", "1", 0), tick("ETH", "3000", 0)]
    ticks += [tick("ETH", "1948.5" if i % 2 == 0 else "1951.5", 60 * (i + 1)) for i in range(10)]
    _, out = run(opened(), ticks)
    assert [e.event_type for _, e in out.events] == ["margin_call"]
    assert [r.zone for _, r in out.health if r.trigger == "price"] == ["margin_call"]


@pytest.mark.parametrize("status", ["degraded", "price_unavailable"])
def test_a_doubtful_price_never_moves_an_account_into_margin_call_or_liquidation(status):
    ticks = [tick("USDC", "1", 0), tick("ETH", "3000", 0)]
    # a crash printed on a doubtful price (unavailable: the last good price, 1600, is kept)
    ticks += [tick("ETH", "1600", 60, "degraded" if status == "degraded" else "ok")]
    if status == "price_unavailable":
        ticks = [
            tick("USDC", "1", 0),
            tick("ETH", "1600", 0, "degraded"),
            tick("ETH", None, 60, status),
        ]
    _, out = run(opened(), ticks, until_s=100)
    assert out.events == []
    zones = {r.zone for _, r in out.health}
    assert not zones & {"margin_call", "liquidation"}
    assert out.health[-1][1].price_status in ("degraded", "price_unavailable")
    # a good price confirms it: now the account moves, and alerts
    _, out2 = run([], [tick("ETH", "1600", 120)], until_s=200, engine=_)
    assert [e.event_type for _, e in out2.events] == ["liquidation"]
    assert out2.health[-1][1].price_status == "ok"


def test_only_holders_of_the_moved_asset_are_revalued_exactly(monkeypatch):
    setts = []
    for i in range(500):
        setts += [eth(f"d{i}", f"e{i}", "deposit", "10", 1), usdc(f"b{i}", f"e{i}", "borrow", "10000", 2)]  # fmt: skip
    setts += [settlement("dbtc", "btc-only", "deposit", "BTC", "1", at(1), decimals=8),
              usdc("bb", "btc-only", "borrow", "10000", 2)]  # fmt: skip
    eng, _ = run(setts, [tick("USDC", "1", 0), tick("ETH", "3000", 0), tick("BTC", "60000", 0)], 5)
    calls = []
    original = eng._evaluate
    monkeypatch.setattr(eng, "_evaluate", lambda account, *a, **k: (calls.append(account), original(account, *a, **k)))  # fmt: skip
    _, out = run([], [tick("ETH", "2990", 60)], until_s=70, engine=eng)  # nobody changes zone
    assert calls == [] and out.health == []
    _, out = run([], [tick("BTC", "12000", 120)], until_s=130, engine=eng)  # 12k vs 10k: call
    assert calls == ["btc-only"]
    assert [(r.account_id, r.zone) for _, r in out.health] == [("btc-only", "margin_call")]


def reference(settlements, ticks, cfg: DetectorConfig):
    """Every account re-checked in Decimal at every event: the slow, obviously right model."""
    from transforms.common.positions import PositionBook

    books, states, prices, status, events = {}, {}, {}, {}, []
    timeline = sorted(
        [(p.t_us, 0, p.asset, p) for p in ticks] + [(epoch_micros(s.event_time), 1, s.event_id, s) for s in settlements],
        key=lambda e: e[:3],
    )  # fmt: skip
    for t, kind, _, item in timeline:
        if kind == 0:
            status[item.asset] = item.status
            if item.price is not None:
                prices[item.asset] = item.price
            accounts = [a for a, b in books.items() if item.asset in (*b.collateral, *b.debt)]
        else:
            book = books.setdefault(item.account_id, PositionBook(item.account_id))
            states.setdefault(item.account_id, AccountState())
            if not book.apply(item).applied:
                continue
            accounts = [item.account_id]
        for a in accounts:
            b = books[a]
            held = (*b.collateral, *b.debt)
            if any(x not in prices for x in held):
                continue
            c, d = b.value_usd(prices)
            st = max((status[x] for x in held), key=["ok", "degraded", "price_unavailable"].index, default="ok")  # fmt: skip
            events += [(e.account_id, e.event_type, e.event_ts, e.alerted)
                       for e in observe(a, states[a], health_score(c, d), st, datetime.fromtimestamp(t / 1e6, UTC), cfg)]  # fmt: skip
    return events


@pytest.mark.parametrize("seed", range(6))
def test_float_screen_gives_exactly_the_events_of_the_exact_reference(seed):
    rng = random.Random(seed)
    setts, ticks = [], []
    for i in range(60):
        q = Decimal(rng.randint(1, 40)) / 4
        setts.append(eth(f"d{i}", f"a{i}", "deposit", str(q), rng.randint(0, 50)))
        debt = int(q * 3000 / Decimal(rng.uniform(1.1, 2.2)))
        setts.append(usdc(f"b{i}", f"a{i}", "borrow", str(debt), 60 + rng.randint(0, 50)))
        if rng.random() < 0.3:
            setts.append(usdc(f"r{i}", f"a{i}", "repay", str(debt // 3), rng.randint(200, 5000)))
    price = 3000.0
    ticks.append(tick("USDC", "1", 0))
    for k in range(300):
        price *= 1 + rng.gauss(0, 0.02)
        status = "degraded" if rng.random() < 0.1 else "ok"
        # also prices landing exactly on a threshold of some account
        ticks.append(tick("ETH", str(round(Decimal(repr(price)), 2)), 30 * k, status))
    cfg = MarginConfig(snapshot_s=0)
    _, out = run(setts, ticks, until_s=30 * 301, cfg=cfg)
    got = [(e.account_id, e.event_type, e.event_ts, e.alerted) for _, e in out.events]
    assert got == reference(setts, ticks, cfg.detector)
    assert len(got) > 10  # the walk really crosses zones


def test_redelivered_settlement_changes_state_once_and_alerts_once():
    drag = usdc("drag", "acct", "borrow", "1000", 100)  # 16,000 of debt at 2,000: health 25
    setts = [*opened(), drag, drag]
    _, out = run(setts, [tick("USDC", "1", 0), tick("ETH", "2000", 0)], until_s=200)
    assert [r.outcome.reason for r in out.rejected] == ["duplicate"]
    assert [e.event_type for _, e in out.events] == ["margin_call"]
    assert len(out.alerts) == 1
    assert [r.borrow_usd for _, r in out.health][-1] == Decimal(16000)


def test_late_settlements_within_the_lateness_apply_and_beyond_it_are_refused():
    cfg = MarginConfig(snapshot_s=0, allowed_lateness_s=600)
    eng, _ = run(opened(), [tick("USDC", "1", 0), tick("ETH", "3000", 0)], until_s=3600, cfg=cfg)
    late_ok = eth("late-ok", "acct", "deposit", "1", 3600 - 300)
    too_late = eth("too-late", "acct", "deposit", "1", 3600 - 601)
    _, out = run([late_ok, too_late], [], until_s=3700, engine=eng)
    assert [(r.settlement.event_id, r.outcome.reason) for r in out.rejected] == [
        ("too-late", "late_settlement")
    ]
    assert "allowed lateness is 600 s" in out.rejected[0].outcome.message
    (row,) = [r for _, r in out.health]
    assert row.collateral_usd == Decimal(33000) and row.event_ts == at(3600)  # applied "now"
    assert eng.books["acct"].collateral["ETH"] == Decimal(11)


def test_state_of_10000_closed_accounts_is_purged_and_reused():
    cfg = MarginConfig(snapshot_s=0, allowed_lateness_s=600)
    eng = MarginShardEngine(cfg)
    ticks = [tick("USDC", "1", 0), tick("ETH", "3000", 0)]
    setts = []
    for i in range(10_000):
        setts += [eth(f"d{i}", f"a{i}", "deposit", "1", 1), usdc(f"b{i}", f"a{i}", "borrow", "100", 2),
                  usdc(f"r{i}", f"a{i}", "repay", "100", 3), eth(f"w{i}", f"a{i}", "withdraw", "1", 4)]  # fmt: skip
    out, _, _ = eng.advance(setts, ticks, epoch_micros(at(10)))
    assert eng.state_size() == 10_000 and not out.rejected
    assert eng.next_purge_us() == epoch_micros(at(4 + 600))
    assert eng.purge(epoch_micros(at(4 + 599))) == 0
    assert eng.purge(epoch_micros(at(4 + 600))) == 10_000
    assert eng.state_size() == 0 and not eng.states and not eng.row_of and not eng.closed_at
    capacity = eng.coll.shape[0]
    more = [eth(f"n{i}", f"n{i}", "deposit", "1", 700) for i in range(5_000)]
    eng.advance(more, [], epoch_micros(at(800)))
    assert eng.state_size() == 5_000 and eng.coll.shape[0] == capacity  # rows are reused


def test_an_account_that_reopens_before_the_purge_is_kept():
    cfg = MarginConfig(snapshot_s=0, allowed_lateness_s=60)
    setts = [eth("d", "a", "deposit", "1", 1), eth("w", "a", "withdraw", "1", 2), eth("d2", "a", "deposit", "2", 30)]  # fmt: skip
    eng, _ = run(setts, [tick("ETH", "3000", 0)], until_s=40, cfg=cfg)
    assert eng.purge(epoch_micros(at(1000))) == 0 and eng.books["a"].collateral["ETH"] == Decimal(2)


def test_snapshots_write_every_account_with_debt_at_each_boundary():
    cfg = MarginConfig(snapshot_s=3600)
    setts = opened("x") + [eth("dy", "y", "deposit", "1", 5)]  # y has no debt: no snapshot
    _, out = run(setts, [tick("USDC", "1", 0), tick("ETH", "3000", 0)], until_s=3 * 3600, cfg=cfg)
    snaps = [(r.account_id, r.event_ts) for _, r in out.health if r.trigger == "snapshot"]
    assert snaps == [("x", datetime(2025, 1, 1, h, tzinfo=UTC)) for h in (13, 14, 15)]


def test_no_row_until_every_held_asset_has_a_price():
    _, out = run(opened(), [tick("USDC", "1", 0)], until_s=30)
    assert out.health == []
    _, out = run(opened(), [tick("USDC", "1", 0), tick("ETH", "3000", 20)], until_s=30)
    assert [r.trigger for _, r in out.health] == ["price"]  # the first ETH price values it


def test_bad_configs_fail_loudly():
    with pytest.raises(ValueError, match="thresholds"):
        MarginConfig(detector=DetectorConfig(margin_call=Decimal(60)))
    with pytest.raises(ValueError, match=">= 0"):
        MarginConfig(snapshot_s=-1)


# ------------------------------------------------------------- one instant, one decision


def same_instant_pairs(n: int, seed: int, chain_order: bool):
    """n accounts, each opening with a deposit and a borrow in one block (one event time), with
    hash-like ids in random order; with ``chain_order`` the borrow's log index comes after."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        account, second = f"acct-{i:04d}", 1 + i % 50
        dep = eth(f"{rng.getrandbits(128):032x}", account, "deposit", "10", second)
        bor = usdc(f"{rng.getrandbits(128):032x}", account, "borrow", "15000", second)
        if chain_order:
            dep = dep.model_copy(update={"block_number": 100 + second, "log_index": 3})
            bor = bor.model_copy(update={"block_number": 100 + second, "log_index": 7})
        out += [dep, bor]
    rng.shuffle(out)
    return out


@pytest.mark.parametrize("chain_order", [True, False])
@pytest.mark.parametrize("method", ["advance", "advance_batch"])
def test_a_deposit_and_borrow_of_one_instant_never_alert_whatever_their_ids(chain_order, method):
    settlements = same_instant_pairs(1000, seed=16, chain_order=chain_order)
    ticks = [tick("ETH", "3000", 0), tick("USDC", "1", 0)]
    eng = MarginShardEngine(NO_SNAP)
    out, _, _ = getattr(eng, method)(settlements, ticks, epoch_micros(at(100)))
    assert out.rejected == [] and out.events == [] and out.alerts == []
    # one evaluation per account and instant, after both settlements: health 100, not -100
    assert len(out.health) == 1000
    assert {(r.zone, r.health_score) for _, r in out.health} == {("healthy", Decimal(100))}


def test_a_borrow_ordered_before_its_deposit_by_the_chain_is_still_one_decision():
    # the chain order puts the borrow first (an odd but valid block): the account is judged
    # after both, so there is no liquidation at -100 in between
    dep = eth("b" * 32, "acct", "deposit", "10", 1).model_copy(update={"block_number": 5, "log_index": 9})  # fmt: skip
    bor = usdc("a" * 32, "acct", "borrow", "15000", 1).model_copy(update={"block_number": 5, "log_index": 2})  # fmt: skip
    _, out = run([dep, bor], [tick("ETH", "3000", 0), tick("USDC", "1", 0)])
    assert out.alerts == [] and [r.health_score for _, r in out.health] == [Decimal(100)]
