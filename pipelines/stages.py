"""The stage registry: what each pipeline runs, and how later stages plug in.

A stage reads named streams (parsed topics such as ``settlements.v1``, or streams that earlier
stages provide, such as ``composite_prices``) and applies one domain composite under its stable
label. Every composite returns the same contract (``transforms/common/dead_letter.py``): its main
output under ``MAIN_TAG``, alerts under ``ALERTS_TAG`` and dead letters under ``DEAD_LETTER_TAG``.
The stage says where they go: which tables, which alert topic, which stream for later stages.
``build()`` wires the stages in registry order. Adding a detector or a screen means appending a
``Stage`` here: the edges of the graph (sources, parsing, sinks) do not change.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import apache_beam as beam

from pipelines.options import RiskPipelineOptions
from transforms.common.dead_letter import MAIN_TAG
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

# (the pipeline's options, streaming?) -> the stage's composite
Make = Callable[[RiskPipelineOptions, bool], beam.PTransform]


@dataclass(frozen=True)
class Stage:
    label: str  # stable CamelCase step label: streaming updates match steps by it
    pipelines: frozenset[str]  # named pipelines (besides "all") that include the stage
    inputs: tuple[str, ...]  # streams it reads; the stage is skipped when one is missing
    make: Make
    tables: dict[str, str] = field(default_factory=dict)  # output tag -> table
    alerts: str | None = None  # the alert topic its ALERTS_TAG output goes to
    stream: str | None = None  # the name later stages read its main output by
    # Streams it reads when present; a missing one is an empty stand-in under the given label.
    optional: dict[str, str] = field(default_factory=dict)
    # A source: applied to the pipeline itself (its inputs only decide whether it runs); it
    # returns one PCollection, the stream.
    source: bool = False
    # Whether the options switch it on (VaR is off with an empty --var_methods).
    enabled: Callable[[RiskPipelineOptions], bool] = lambda o: True


def _composite_prices(o: RiskPipelineOptions, streaming: bool) -> beam.PTransform:
    return CompositePrices(
        window_seconds=o.price_window_seconds,
        registry_path=o.feed_registry,
        grace_s=o.price_grace_s,
        max_dev_bps=o.max_price_deviation_bps,
        min_sources=o.min_price_sources,
        streaming=streaming,
    )


def _compute_var(o: RiskPipelineOptions, streaming: bool) -> beam.PTransform:
    # MonitorMargins (same pipelines, same settlements, same PositionBook rules) writes the dead
    # letters of refused settlements; VaR only counts them.
    return ComputeVaR(o.var_config(), o.var_shards, streaming, dead_letter_rejections=False)


def _monitor_aml(o: RiskPipelineOptions, streaming: bool) -> beam.PTransform:
    return MonitorAml(
        o.compliance_policy(), o.compliance_shards, streaming, o.compliance_allowed_lateness_s
    )


STAGES: list[Stage] = [
    Stage(
        "ValidatePrices",
        frozenset({"risk", "surveillance"}),
        ("market.prices.v1",),
        lambda o, _: ValidatePrices(o.feed_registry, o.price_grace_s, o.max_conf_ratio),
        stream="valid_prices",
    ),
    Stage(
        "CompositePrices",
        frozenset({"risk", "surveillance"}),
        ("valid_prices",),
        _composite_prices,
        tables={MAIN_TAG: "prices"},
        stream="composite_prices",
    ),
    Stage(
        "ComputeVaR",
        frozenset({"risk"}),
        ("composite_prices", "settlements.v1"),
        _compute_var,
        tables={MAIN_TAG: "portfolio_var"},
        enabled=lambda o: bool(o.var_method_names()),
    ),
    Stage(
        "MonitorMargins",
        frozenset({"risk"}),
        ("composite_prices", "settlements.v1"),
        lambda o, streaming: MonitorMargins(o.margin_config(), o.margin_shards, streaming),
        tables={MAIN_TAG: "margin_health", EVENTS_TAG: "margin_events"},
        alerts="alerts.margin.v1",
    ),
    Stage(
        "DetectRugPulls",
        frozenset({"surveillance"}),
        ("liquidity.v1", "dex.trades.v1"),
        lambda o, streaming: DetectRugPulls(streaming=streaming),
        tables={MAIN_TAG: "suspicious_activities"},
        alerts="alerts.surveillance.v1",
    ),
    Stage(
        "DetectWashTrades",
        frozenset({"surveillance"}),
        ("dex.trades.v1", "transfers.v1"),
        lambda o, streaming: DetectWashTrades(streaming=streaming),
        tables={MAIN_TAG: "suspicious_activities"},
        alerts="alerts.surveillance.v1",
    ),
    Stage(
        "ReadSanctionsVersions",
        frozenset({"compliance"}),
        ("transfers.v1",),
        lambda o, _: ReadSanctionsVersions(o.sanctions_store, o.sanctions_poll_minutes),
        stream="sanctions_versions",
        source=True,
    ),
    Stage(
        "SanctionsJoin",
        frozenset({"compliance"}),
        ("transfers.v1", "sanctions_versions"),
        lambda o, streaming: SanctionsJoin(o.compliance_shards, streaming),
        tables={MAIN_TAG: "compliance_screenings"},
        alerts="alerts.compliance.v1",
    ),
    Stage(
        "ScreenExposure",
        frozenset({"compliance"}),
        ("transfers.v1", "sanctions_versions"),
        # A transfer with no list in force is refused by this stage too (stage ScreenExposure).
        lambda o, streaming: ScreenExposure(
            o.compliance_policy().exposure, o.compliance_shards, streaming
        ),
        tables={MAIN_TAG: "compliance_screenings"},
        alerts="alerts.compliance.v1",
    ),
    Stage(
        "MonitorAml",
        frozenset({"compliance"}),
        ("transfers.v1",),
        _monitor_aml,
        tables={MAIN_TAG: "compliance_screenings"},
        alerts="alerts.compliance.v1",
        # no profile feed: every wallet is its own subject
        optional={"accounts.profiles.v1": "NoProfiles"},
    ),
]

# Topics each named pipeline reads. "all" reads every input topic.
PIPELINE_TOPICS: dict[str, tuple[str, ...]] = {
    "risk": ("market.prices.v1", "settlements.v1"),
    "surveillance": ("market.prices.v1", "dex.trades.v1", "liquidity.v1", "transfers.v1"),
    "compliance": ("transfers.v1", "accounts.profiles.v1"),
}


def stages_for(pipeline: str) -> list[Stage]:
    return [s for s in STAGES if pipeline == "all" or pipeline in s.pipelines]
