"""The stage registry: what each pipeline runs, and how later stages plug in.

A stage reads named streams (parsed topics such as ``settlements.v1``, or streams that earlier
stages provide, such as ``composite_prices``) and returns table rows, alerts, dead letters and
new streams. ``build()`` wires them in registry order. Adding VaR, margin, a detector or a screen
means appending a ``Stage`` here: the edges of the graph (sources, parsing, sinks) do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.pvalue import PCollection

from pipelines.options import RiskPipelineOptions
from transforms.common.dead_letter import ALERTS_TAG, DEAD_LETTER_TAG
from transforms.common.dead_letter import ALERTS_TAG as COMPLIANCE_ALERTS
from transforms.common.dead_letter import ALERTS_TAG as SURVEILLANCE_ALERTS
from transforms.compliance.transform import (
    MonitorAml,
    ReadSanctionsVersions,
    SanctionsJoin,
    ScreenExposure,
)
from transforms.margin.transform import EVENTS_TAG, MonitorMargins
from transforms.prices.transform import CompositePrices, ValidatePrices
from transforms.surveillance.transform import DetectRugPulls, DetectWashTrades
from transforms.var.transform import ComputeVaR


@dataclass
class StageOutput:
    tables: dict[str, PCollection] = field(default_factory=dict)  # table name -> row models
    alerts: dict[str, PCollection] = field(default_factory=dict)  # alert topic -> alert models
    dead_letters: list[PCollection] = field(default_factory=list)  # DeadLetterRow
    streams: dict[str, PCollection] = field(default_factory=dict)  # for later stages


@dataclass(frozen=True)
class Stage:
    label: str  # stable CamelCase step label: streaming updates match steps by it
    pipelines: frozenset[str]  # named pipelines (besides "all") that include the stage
    inputs: tuple[str, ...]  # streams it needs; the stage is skipped when one is missing
    build: Callable[[dict[str, PCollection], Any], StageOutput]


def _validate_prices(streams: dict[str, PCollection], options: Any) -> StageOutput:
    opts = options.view_as(RiskPipelineOptions)
    checked = streams["market.prices.v1"] | "ValidatePrices" >> ValidatePrices(
        opts.feed_registry, opts.price_grace_s, opts.max_conf_ratio
    )
    return StageOutput(
        dead_letters=[checked[DEAD_LETTER_TAG]], streams={"valid_prices": checked.valid}
    )


def _composite_prices(streams: dict[str, PCollection], options: Any) -> StageOutput:
    opts = options.view_as(RiskPipelineOptions)
    composite = streams["valid_prices"] | "CompositePrices" >> CompositePrices(
        window_seconds=opts.price_window_seconds,
        registry_path=opts.feed_registry,
        grace_s=opts.price_grace_s,
        max_dev_bps=opts.max_price_deviation_bps,
        min_sources=opts.min_price_sources,
        streaming=options.view_as(StandardOptions).streaming,
    )
    return StageOutput(
        tables={"prices": composite.prices},
        dead_letters=[composite[DEAD_LETTER_TAG]],
        streams={"composite_prices": composite.prices},
    )


def _compute_var(streams: dict[str, PCollection], options: Any) -> StageOutput:
    opts = options.view_as(RiskPipelineOptions)
    result = (streams["composite_prices"], streams["settlements.v1"]) | "ComputeVaR" >> ComputeVaR(
        opts.var_config(),
        shards=opts.var_shards,
        streaming=options.view_as(StandardOptions).streaming,
        # MonitorMargins (same pipelines, same settlements, same PositionBook rules) writes the
        # dead letters of refused settlements; VaR only counts them.
        dead_letter_rejections=False,
    )
    return StageOutput(tables={"portfolio_var": result.var}, dead_letters=[result[DEAD_LETTER_TAG]])


def _monitor_margins(streams: dict[str, PCollection], options: Any) -> StageOutput:
    opts = options.view_as(RiskPipelineOptions)
    result = (
        streams["composite_prices"],
        streams["settlements.v1"],
    ) | "MonitorMargins" >> MonitorMargins(
        opts.margin_config(),
        shards=opts.margin_shards,
        streaming=options.view_as(StandardOptions).streaming,
    )
    return StageOutput(
        tables={"margin_health": result.health, "margin_events": result[EVENTS_TAG]},
        alerts={"alerts.margin.v1": result[ALERTS_TAG]},
        dead_letters=[result[DEAD_LETTER_TAG]],
    )


def _detect_rug_pulls(streams: dict[str, PCollection], options: Any) -> StageOutput:
    result = (
        streams["liquidity.v1"],
        streams["dex.trades.v1"],
    ) | "DetectRugPulls" >> DetectRugPulls(streaming=options.view_as(StandardOptions).streaming)
    return StageOutput(
        tables={"suspicious_activities": result.findings},
        alerts={"alerts.surveillance.v1": result[SURVEILLANCE_ALERTS]},
    )


def _detect_wash_trades(streams: dict[str, PCollection], options: Any) -> StageOutput:
    findings, alerts = (
        streams["dex.trades.v1"],
        streams["transfers.v1"],
    ) | "DetectWashTrades" >> DetectWashTrades(streaming=options.view_as(StandardOptions).streaming)
    return StageOutput(
        tables={"suspicious_activities": findings}, alerts={"alerts.surveillance.v1": alerts}
    )


def _read_sanctions_lists(streams: dict[str, PCollection], options: Any) -> StageOutput:
    opts = options.view_as(RiskPipelineOptions)
    pipeline = streams["transfers.v1"].pipeline
    versions = pipeline | "ReadSanctionsVersions" >> ReadSanctionsVersions(
        opts.sanctions_store, opts.sanctions_poll_minutes
    )
    return StageOutput(streams={"sanctions_versions": versions})


def _sanctions_join(streams: dict[str, PCollection], options: Any) -> StageOutput:
    opts = options.view_as(RiskPipelineOptions)
    out = (streams["transfers.v1"], streams["sanctions_versions"]) | "SanctionsJoin" >> (
        SanctionsJoin(opts.compliance_shards, options.view_as(StandardOptions).streaming)
    )
    return StageOutput(
        tables={"compliance_screenings": out.screenings},
        alerts={"alerts.compliance.v1": out[COMPLIANCE_ALERTS]},
        dead_letters=[out[DEAD_LETTER_TAG]],
    )


def _screen_exposure(streams: dict[str, PCollection], options: Any) -> StageOutput:
    opts = options.view_as(RiskPipelineOptions)
    out = (streams["transfers.v1"], streams["sanctions_versions"]) | "ScreenExposure" >> (
        ScreenExposure(
            opts.compliance_policy().exposure,
            opts.compliance_shards,
            options.view_as(StandardOptions).streaming,
        )
    )
    # A transfer with no list in force is refused by this stage too (stage ScreenExposure).
    return StageOutput(
        tables={"compliance_screenings": out.screenings},
        alerts={"alerts.compliance.v1": out[COMPLIANCE_ALERTS]},
        dead_letters=[out[DEAD_LETTER_TAG]],
    )


def _monitor_aml(streams: dict[str, PCollection], options: Any) -> StageOutput:
    opts = options.view_as(RiskPipelineOptions)
    transfers = streams["transfers.v1"]
    profiles = streams.get("accounts.profiles.v1")
    if profiles is None:  # no profile feed: every wallet is its own subject
        profiles = transfers.pipeline | "NoProfiles" >> beam.Create([])
    rows, alerts, dead = (transfers, profiles) | "MonitorAml" >> MonitorAml(
        opts.compliance_policy(),
        opts.compliance_shards,
        options.view_as(StandardOptions).streaming,
        opts.compliance_allowed_lateness_s,
    )
    return StageOutput(
        tables={"compliance_screenings": rows},
        alerts={"alerts.compliance.v1": alerts},
        dead_letters=[dead],
    )


STAGES: list[Stage] = [
    Stage(
        "ValidatePrices",
        frozenset({"risk", "surveillance"}),
        ("market.prices.v1",),
        _validate_prices,
    ),
    Stage(
        "CompositePrices", frozenset({"risk", "surveillance"}), ("valid_prices",), _composite_prices
    ),
    Stage("ComputeVaR", frozenset({"risk"}), ("composite_prices", "settlements.v1"), _compute_var),
    Stage(
        "MonitorMargins",
        frozenset({"risk"}),
        ("composite_prices", "settlements.v1"),
        _monitor_margins,
    ),
    Stage(
        "DetectRugPulls",
        frozenset({"surveillance"}),
        ("liquidity.v1", "dex.trades.v1"),
        _detect_rug_pulls,
    ),
    Stage(
        "DetectWashTrades",
        frozenset({"surveillance"}),
        ("dex.trades.v1", "transfers.v1"),
        _detect_wash_trades,
    ),
    Stage(
        "ReadSanctionsVersions", frozenset({"compliance"}), ("transfers.v1",), _read_sanctions_lists
    ),
    Stage(
        "SanctionsJoin",
        frozenset({"compliance"}),
        ("transfers.v1", "sanctions_versions"),
        _sanctions_join,
    ),
    Stage(
        "ScreenExposure",
        frozenset({"compliance"}),
        ("transfers.v1", "sanctions_versions"),
        _screen_exposure,
    ),
    Stage("MonitorAml", frozenset({"compliance"}), ("transfers.v1",), _monitor_aml),
]

# Topics each named pipeline reads. "all" reads every input topic.
PIPELINE_TOPICS: dict[str, tuple[str, ...]] = {
    "risk": ("market.prices.v1", "settlements.v1"),
    "surveillance": ("market.prices.v1", "dex.trades.v1", "liquidity.v1", "transfers.v1"),
    "compliance": ("transfers.v1", "accounts.profiles.v1"),
}


def stages_for(pipeline: str) -> list[Stage]:
    return [s for s in STAGES if pipeline == "all" or pipeline in s.pipelines]
