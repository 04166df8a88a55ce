"""Fuzzing each stage's rules with records the contract accepts, at its edges.

A record that passed parsing can still be extreme: an amount of 2**256 - 1 raw units with 0
decimals, a price at its feed's bound, many settlements of one instant, redeliveries, accounts that
never open. No such record may crash a stage, every settlement comes out applied or refused, and
every row a stage writes fits its table's columns.

    .venv/bin/pytest tests/reliability/test_stage_fuzz.py -q
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.events import AccountProfile, DexTrade, LiquidityEvent, Settlement, Transfer
from schemas.serde import to_row
from schemas.tables import MarginHealthRow, PortfolioVarRow, SuspiciousActivityRow
from schemas.types import NUMERIC_LIMIT, UINT256_MAX, epoch_micros
from transforms.compliance.aml import AmlEngine, resolve_legs
from transforms.compliance.exposure import ExposureGraph, transfer_order
from transforms.compliance.lists import SanctionsIndex, load_lists
from transforms.compliance.policy import load_policy
from transforms.compliance.screening import screen_transfer
from transforms.compliance.store import BUNDLED_DIR
from transforms.margin.engine import MarginConfig, MarginShardEngine, PriceTick
from transforms.surveillance.rug_pull import RugPoolState, event_order
from transforms.surveillance.wash_trade import detect
from transforms.var.engine import Close, VarConfig, VarShardEngine

T0 = datetime(2025, 1, 6, tzinfo=UTC)
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACCOUNTS = [f"acct-{i}" for i in range(4)]
WALLETS = ["0x" + f"{i:02x}" * 20 for i in range(1, 6)]
LISTED = "0x04dba1194ee10112fe6c3207c0687def0e78bacf"  # on the bundled 2025-11-19 list
RAW = st.sampled_from(["0", "1", "10", "1000000", str(10**18), str(10**30), str(UINT256_MAX)])
DECIMALS = st.sampled_from([0, 6, 18, 36])
SECONDS = st.integers(0, 600)
PRICE = st.sampled_from(["0.00000001", "1", "3000", "97000.5", "10000000000"])  # feed bounds
USD = st.sampled_from([None, "0", "0.01", "10000", "999999999999999"])


def _at(s: int) -> datetime:
    return T0 + timedelta(seconds=s)


@st.composite
def settlements(draw):
    out = []
    for i in range(draw(st.integers(1, 25))):
        block = draw(st.none() | st.integers(0, 10**12))
        s = Settlement(
            event_id=f"s{i}", account_id=draw(st.sampled_from(ACCOUNTS)), venue="aave_v3",
            kind=draw(st.sampled_from(["deposit", "withdraw", "borrow", "repay", "liquidation"])),
            asset=draw(st.sampled_from(["ETH", "USDC", "BTC"])), amount_raw=draw(RAW),
            decimals=draw(DECIMALS), block_number=block,
            log_index=None if block is None else draw(st.integers(0, 2**31 - 1)),
            event_time=_at(draw(st.sampled_from([0, 1, 60, 3600, 86_400 * 3]))),
        )  # fmt: skip
        out.append(s)
        if draw(st.booleans()) and draw(st.booleans()):
            out.append(s)  # a redelivery
    return out


def _accounted(inputs: list[Settlement], rejected, books) -> None:
    refused = [r.settlement.event_id for r in rejected]
    applied = [sid for b in books.values() for sid in b.seen]
    assert sorted(refused + applied) == sorted(s.event_id for s in inputs)


def _fits(value) -> None:
    if isinstance(value, Decimal):
        assert abs(value) < NUMERIC_LIMIT


@FUZZ
@given(data=st.data(), method=st.sampled_from(["advance", "advance_batch"]))
def test_margin_never_crashes_and_accounts_for_every_settlement(data, method):
    ss = data.draw(settlements())
    ticks = [
        PriceTick(a, epoch_micros(_at(data.draw(SECONDS))), Decimal(data.draw(PRICE)), "ok")
        for a in ("ETH", "USDC", "BTC")
    ]
    eng = MarginShardEngine(MarginConfig(snapshot_s=3600))
    out, later, _ = getattr(eng, method)(ss, ticks, epoch_micros(_at(86_400 * 4)))
    assert later == []
    _accounted(ss, out.rejected, eng.books)
    for _, row in out.health:
        row = row if isinstance(row, MarginHealthRow) else MarginHealthRow.model_validate(row)
        for name in ("collateral_usd", "borrow_usd", "health_score"):
            _fits(getattr(row, name))
        to_row(MarginHealthRow.model_validate(row.model_dump()))  # re-validated: fits NUMERIC


@FUZZ
@given(data=st.data())
def test_var_never_crashes_and_accounts_for_every_settlement(data):
    ss = data.draw(settlements())
    day = 86_400 * 1_000_000
    end0 = epoch_micros(T0) + day
    closes = [
        Close(a, end0 + k * day, float(Decimal(data.draw(PRICE))))
        for a in ("ETH", "USDC", "BTC")
        for k in range(-3, 6)
    ]
    eng = VarShardEngine(VarConfig(min_scenarios=2, window=5))
    rows, rejected, later, _ = eng.advance(ss, closes, end0 + 5 * day)
    assert later == []
    applied = {sid for b in eng.books.values() for sid in b.seen}
    refused = [r.settlement.event_id for r in rejected]
    # closed books are dropped after valuation; what is neither refused nor open was applied
    assert set(refused) | applied <= {s.event_id for s in ss}
    for row in rows:
        to_row(PortfolioVarRow.model_validate(row.model_dump()))


@st.composite
def trades(draw):
    pool = "0x" + "b0" * 20
    out = []
    for i in range(draw(st.integers(1, 30))):
        buy = draw(st.booleans())
        out.append(
            DexTrade(
                event_id=f"t{i % 20}",
                venue="uniswap_v2",
                pool_address=pool,
                tx_hash=f"0x{i}",
                block_number=draw(st.integers(0, 10**12)),
                log_index=draw(st.integers(0, 5)),
                trader=draw(st.sampled_from(WALLETS)),
                recipient=draw(st.sampled_from(WALLETS)),
                token_in="USDC" if buy else "MEME",
                token_out="MEME" if buy else "USDC",
                amount_in_raw=draw(RAW),
                amount_out_raw=draw(RAW),
                decimals_in=draw(DECIMALS),
                decimals_out=draw(DECIMALS),
                amount_usd=draw(USD),
                event_time=_at(draw(SECONDS)),
            )  # fmt: skip
        )
    return out


@FUZZ
@given(ts=trades())
def test_wash_trade_detection_never_crashes_and_rows_fit(ts):
    result = detect(ts, T0, T0 + timedelta(hours=1))
    assert result.counters["trades_in"] == len(ts)
    for row in result.findings:
        to_row(SuspiciousActivityRow.model_validate(row.model_dump()))


@FUZZ
@given(data=st.data(), ts=trades())
def test_rug_pull_rules_never_crash(data, ts):
    pool = ts[0].pool_address
    events = list(ts)
    for i in range(data.draw(st.integers(0, 10))):
        events.append(
            LiquidityEvent(
                event_id=f"l{i}",
                pool_address=pool,
                tx_hash=f"0xl{i}",
                kind=data.draw(st.sampled_from(["create", "mint", "burn", "sync"])),
                block_number=data.draw(st.integers(0, 10**12)),
                log_index=i,
                sender=data.draw(st.sampled_from(WALLETS)),
                token0="MEME",
                token1="USDC",
                amount0_raw=data.draw(RAW),
                amount1_raw=data.draw(RAW),
                decimals0=data.draw(DECIMALS),
                decimals1=data.draw(DECIMALS),
                liquidity_raw=data.draw(st.none() | RAW),
                event_time=_at(data.draw(SECONDS)),
            )  # fmt: skip
        )
    state = RugPoolState(pool)
    for e in sorted(events, key=event_order):
        finding = state.observe(e)
        if finding is not None:
            to_row(SuspiciousActivityRow.model_validate(finding.model_dump()))


INDEX = SanctionsIndex(load_lists(BUNDLED_DIR / "brave-intl-lists-2025-11-19", date(2025, 11, 19)))
POLICY = load_policy()


@st.composite
def transfers(draw):
    out = []
    for i in range(draw(st.integers(1, 30))):
        out.append(
            Transfer(
                event_id=f"x{i % 25}",
                tx_hash=f"0x{i}",
                block_number=draw(st.integers(0, 10**12)),
                log_index=draw(st.integers(0, 3)),
                from_address=draw(st.sampled_from([*WALLETS, LISTED])),
                to_address=draw(st.sampled_from([*WALLETS, LISTED])),
                asset="USDC",
                amount_raw=draw(RAW),
                decimals=draw(DECIMALS),
                amount_usd=draw(USD),
                event_time=_at(draw(st.integers(0, 86_400 * 3))),
            )  # fmt: skip
        )
    return out


@FUZZ
@given(ts=transfers(), pep=st.booleans())
def test_screening_exposure_and_aml_never_crash(ts, pep):
    profile = AccountProfile(
        account_id="cust-1", wallets=WALLETS[:2], tier="tier1", country="SG", pep=pep,
        kyc_status="verified", updated_at=T0 - timedelta(days=1),
    )  # fmt: skip
    graph, aml = ExposureGraph(POLICY.exposure), AmlEngine(POLICY)
    by_wallet = {w: [profile] for w in profile.wallets}
    for t in sorted(ts, key=transfer_order):
        rows, alerts = screen_transfer(INDEX, t)
        assert len(rows) == 2
        graph.process(t, INDEX)
        for leg in resolve_legs(t, by_wallet):
            aml.process(leg)
