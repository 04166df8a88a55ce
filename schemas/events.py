"""Pub/Sub topic contracts: one model per topic. Avro schemas are generated from these."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from schemas.base import Contract
from schemas.types import (
    Address,
    BlockNumber,
    ChainId,
    Decimals,
    EventTime,
    Id,
    Index,
    Name,
    NonNegativeNumeric,
    Numeric,
    PositiveNumeric,
    RawAmount,
    RoundId,
    Timestamp,
    UsdAmount,
    Wallet,
)

EVM_CHAIN = "eip155:1"


class PriceEvent(Contract):
    """market.prices.v1: one normalised price observation from one source."""

    event_time_field = "publish_time"
    key_fields = ("asset", "source")
    doc = "A normalised price of one asset from one source (Chainlink, Pyth, DEX, CEX)."

    event_id: Id = Field(
        description="Unique id of this price update (deterministic per source and round)."
    )
    asset: Name = Field(description="Asset symbol, e.g. BTC, ETH, USDC.")
    quote: Name = Field("USD", description="Quote currency of the price.")
    source: Literal["chainlink", "pyth", "dex", "cex"] = Field(
        description="Where the price came from."
    )
    price: PositiveNumeric = Field(description="Price of one unit of asset in quote, as a decimal.")
    confidence: NonNegativeNumeric | None = Field(
        None,
        description="Pyth confidence interval (same units as price); null for sources without one.",
    )
    publish_time: EventTime = Field(
        description="When the source published the price (UTC event time)."
    )
    feed_id: Id | None = Field(
        None, description="Chainlink aggregator proxy address or Pyth price feed id."
    )
    round_id: RoundId | None = Field(
        None, description="Chainlink roundId incl. phase bits, as a decimal string; null for Pyth."
    )
    answered_in_round: RoundId | None = Field(
        None, description="Chainlink answeredInRound, as a decimal string; null for Pyth."
    )
    started_at: Timestamp | None = Field(None, description="Chainlink startedAt of the round.")
    ema_price: PositiveNumeric | None = Field(
        None, description="Pyth exponentially-weighted moving average price."
    )
    observed_at: Timestamp | None = Field(
        None, description="When the poller read the value; staleness is judged against it."
    )
    chain_id: ChainId | None = Field(
        None, description="CAIP-2 chain id of the feed, e.g. eip155:1."
    )


SettlementKind = Literal["deposit", "withdraw", "borrow", "repay", "liquidation"]


class Settlement(Contract):
    """settlements.v1: a change to an account's collateral or debt."""

    event_time_field = "event_time"
    key_fields = ("account_id", "asset")
    doc = (
        "A settled position change of one account: deposit, withdraw, borrow, repay or liquidation."
    )

    event_id: Id = Field(description="Unique id of the settlement; updates are idempotent by it.")
    account_id: Id = Field(
        description="The account (wallet or sub-account) the settlement belongs to."
    )
    venue: Name = Field(description="Lending venue, e.g. aave_v3, compound_v3, maker.")
    chain_id: ChainId = Field(EVM_CHAIN, description="CAIP-2 chain id.")
    kind: SettlementKind = Field(
        description="deposit/withdraw change collateral; borrow/repay change debt; liquidation seizes collateral."
    )
    asset: Name = Field(description="Asset symbol of the amount.")
    amount_raw: RawAmount = Field(description="Amount in the token's raw integer units.")
    decimals: Decimals = Field(description="Token decimals: amount = amount_raw / 10**decimals.")
    tx_hash: Id | None = Field(None, description="Transaction hash, when settled on chain.")
    block_number: BlockNumber | None = Field(
        None, description="Block number, when settled on chain."
    )
    log_index: Index | None = Field(
        None, description="Log index in the block; orders the settlements of one block."
    )
    tx_index: Index | None = Field(
        None, description="Transaction index in the block; orders the settlements of one block."
    )
    event_time: EventTime = Field(description="When the settlement happened (UTC event time).")


class DexTrade(Contract):
    """dex.trades.v1: one swap on a DEX pool."""

    event_time_field = "event_time"
    key_fields = ("pool_address", "trader")
    doc = "One swap on a DEX pool, in raw token units with its USD value at trade time."

    event_id: Id = Field(description="Unique id: chain, tx hash and log index.")
    chain_id: ChainId = Field(EVM_CHAIN, description="CAIP-2 chain id.")
    venue: Name = Field(description="DEX, e.g. uniswap_v2, uniswap_v3, quickswap.")
    pool_address: Address = Field(description="Pool (pair) contract address.")
    tx_hash: Id = Field(description="Transaction hash.")
    block_number: BlockNumber = Field(description="Block number.")
    log_index: Index = Field(description="Log index of the Swap event in the block.")
    trader: Address = Field(description="Address that initiated the swap (tx sender).")
    recipient: Address = Field(description="Address that received the output tokens.")
    token_in: Name = Field(description="Symbol of the token sold into the pool.")
    token_out: Name = Field(description="Symbol of the token bought from the pool.")
    amount_in_raw: RawAmount = Field(description="Amount sold, raw integer units.")
    amount_out_raw: RawAmount = Field(description="Amount bought, raw integer units.")
    decimals_in: Decimals = Field(description="Decimals of token_in.")
    decimals_out: Decimals = Field(description="Decimals of token_out.")
    amount_usd: UsdAmount | None = Field(
        None, description="USD value of the trade at trade time, when priced."
    )
    event_time: EventTime = Field(description="Block time of the swap (UTC event time).")


class LiquidityEvent(Contract):
    """liquidity.v1: pool lifecycle and reserve changes (Uniswap-v2 style events)."""

    event_time_field = "event_time"
    key_fields = ("pool_address",)
    doc = "A pool event: create, mint (add liquidity), burn (remove liquidity) or sync (new reserves)."

    event_id: Id = Field(description="Unique id: chain, tx hash and log index.")
    chain_id: ChainId = Field(EVM_CHAIN, description="CAIP-2 chain id.")
    pool_address: Address = Field(description="Pool (pair) contract address.")
    kind: Literal["create", "mint", "burn", "sync"] = Field(description="Event type.")
    tx_hash: Id = Field(description="Transaction hash.")
    block_number: BlockNumber = Field(description="Block number.")
    log_index: Index = Field(description="Log index in the block.")
    sender: Address = Field(
        description="Address that caused the event (LP provider for mint/burn, deployer for create)."
    )
    token0: Name = Field(description="Symbol of token0 of the pair.")
    token1: Name = Field(description="Symbol of token1 of the pair (the quote token).")
    amount0_raw: RawAmount = Field(
        description="token0 amount added/removed (mint/burn) or new reserve0 (sync), raw units."
    )
    amount1_raw: RawAmount = Field(
        description="token1 amount added/removed (mint/burn) or new reserve1 (sync), raw units."
    )
    decimals0: Decimals = Field(description="Decimals of token0.")
    decimals1: Decimals = Field(description="Decimals of token1.")
    liquidity_raw: RawAmount | None = Field(
        None, description="LP tokens minted or burned (mint/burn), raw units."
    )
    event_time: EventTime = Field(description="Block time (UTC event time).")


class Transfer(Contract):
    """transfers.v1: a token or native-coin transfer between two addresses."""

    event_time_field = "event_time"
    key_fields = ("from_address", "to_address")
    doc = "A transfer of a token or native coin between two addresses."

    event_id: Id = Field(description="Unique id: chain, tx hash and log index.")
    chain_id: ChainId = Field(
        EVM_CHAIN,
        description="CAIP-2 chain id (eip155:1 Ethereum, eip155:42161 Arbitrum, tron:mainnet, ...).",
    )
    tx_hash: Id = Field(description="Transaction hash.")
    block_number: BlockNumber = Field(description="Block number.")
    log_index: Index = Field(description="Log index (0 for native transfers).")
    from_address: Address = Field(description="Sender address, as the chain writes it.")
    to_address: Address = Field(description="Recipient address, as the chain writes it.")
    asset: Name = Field(description="Symbol of the transferred asset.")
    token_address: Address | None = Field(
        None, description="Token contract; null for the native coin."
    )
    amount_raw: RawAmount = Field(description="Amount in raw integer units.")
    decimals: Decimals = Field(description="Token decimals.")
    amount_usd: UsdAmount | None = Field(
        None, description="USD value at transfer time, when priced."
    )
    event_time: EventTime = Field(description="Block time (UTC event time).")


class AccountProfile(Contract):
    """accounts.profiles.v1: the KYC profile of a customer account (latest wins, by updated_at)."""

    event_time_field = "updated_at"
    key_fields = ("account_id",)
    doc = "KYC profile of a customer account: its wallets, tier, country, PEP flag and KYC status."

    account_id: Id = Field(description="The customer account.")
    wallets: list[Wallet] = Field(
        min_length=1,
        max_length=1000,
        description="Addresses the account controls, as the chain writes them.",
    )
    tier: Name = Field(description="Limit tier; the compliance policy defines the tiers.")
    country: str = Field(
        pattern=r"^[A-Z]{2}(-[A-Z0-9]{1,3})?$",
        description="Residence: ISO 3166-1 alpha-2 country, or ISO 3166-2 region.",
    )
    pep: bool = Field(False, description="Politically exposed person.")
    kyc_status: Literal["verified", "pending", "unverified", "rejected"] = Field(
        description="KYC status."
    )
    updated_at: EventTime = Field(description="When this profile version took effect.")


class MarginAlert(Contract):
    """alerts.margin.v1: a throttled margin alert."""

    event_time_field = "event_ts"
    key_fields = ("account_id", "event_type")
    doc = "A margin alert: margin call, liquidation or recovery of one account."

    alert_id: str = Field(
        description="Deterministic id: hash of account, event type and event time."
    )
    account_id: str = Field(description="The account.")
    event_type: Literal["margin_call", "liquidation", "recovered"] = Field(
        description="What happened."
    )
    zone: str = Field(description="The zone the account entered.")
    previous_zone: str | None = Field(None, description="The zone it left.")
    health_score: Numeric | None = Field(
        None, description="Margin health (collateral - borrow) / borrow * 100."
    )
    collateral_usd: Numeric = Field(description="Collateral value in USD.")
    borrow_usd: Numeric = Field(description="Debt value in USD.")
    price_status: str = Field(
        description="Status of the prices used: ok, degraded or price_unavailable."
    )
    event_ts: EventTime = Field(description="Event time of the update that caused the alert.")


class SurveillanceAlert(Contract):
    """alerts.surveillance.v1: a market-abuse finding above the alert threshold."""

    event_time_field = "detected_at"
    key_fields = ("activity_type",)
    doc = "A market-abuse alert (wash trading, rug pull, pump and dump, sybil cluster)."

    alert_id: str = Field(description="Deterministic id of the alert.")
    activity_id: str = Field(description="The suspicious_activities row this alert is about.")
    activity_type: str = Field(
        description="wash_trading, rug_pull, pump_and_dump or sybil_cluster."
    )
    chain_id: str = Field(description="CAIP-2 chain id.")
    confidence_score: float = Field(ge=0, le=100, description="Confidence from 0 to 100.")
    wallet_addresses: list[str] = Field(default_factory=list, description="Wallets involved.")
    pool_address: str | None = Field(None, description="Pool involved, if any.")
    estimated_impact_usd: Numeric | None = Field(
        None, description="Estimated wash volume or loss in USD."
    )
    summary: str = Field(description="One line for a human.")
    detected_at: EventTime = Field(description="Event time at which the detector fired.")


class ComplianceAlert(Contract):
    """alerts.compliance.v1: a sanctions hit or AML rule hit."""

    event_time_field = "screened_at"
    key_fields = ("address",)
    doc = "A compliance alert: sanctions match, exposure or AML rule hit."

    alert_id: str = Field(description="Deterministic id of the alert.")
    screening_id: str = Field(description="The compliance_screenings row this alert is about.")
    address: str = Field(description="The screened address.")
    chain_id: str = Field(description="CAIP-2 chain id.")
    screening_result: Literal["flagged", "blocked"] = Field(
        description="flagged (review) or blocked."
    )
    rule_id: str = Field(description="Sanctions list or AML rule that hit.")
    list_version: str | None = Field(None, description="Sanctions list version, for list hits.")
    risk_score: float = Field(ge=0, le=100, description="Risk score from 0 to 100.")
    tx_hash: str | None = Field(None, description="The transfer that was screened.")
    evidence_tx_hashes: list[str] = Field(
        default_factory=list, description="Evidence transactions."
    )
    screened_at: EventTime = Field(description="Event time of the screened transfer.")
