"""Pipeline options: every knob with a default, choices where they apply, and a help text."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.compliance.policy import load_policy
from transforms.margin.detector import DetectorConfig
from transforms.margin.engine import MarginConfig
from transforms.prices.oracles import load_registry
from transforms.var.engine import VarConfig

PIPELINES = ("all", "risk", "surveillance", "compliance")


class RiskPipelineOptions(PipelineOptions):
    """Options shared by every pipeline, on every runner."""

    @classmethod
    def _add_argparse_args(cls, parser):
        parser.add_argument(
            "--pipeline",
            default="all",
            choices=PIPELINES,
            help="Which pipeline to assemble: all (every stage in one graph), risk, surveillance or compliance.",
        )
        parser.add_argument(
            "--payload_format",
            default="json",
            choices=("json", "avro", "row"),
            help="Encoding of the input messages: JSON lines, Avro (Pub/Sub bodies) or typed rows (Parquet).",
        )
        parser.add_argument(
            "--known_assets",
            default=None,
            help="Comma-separated asset symbols the price and settlement streams may carry; others are "
            "dead letters. Default: the assets of the feed registry.",
        )
        parser.add_argument(
            "--feed_registry",
            default=None,
            help="Path of the oracle feed registry (TOML). Default: transforms/prices/config/feeds.toml.",
        )
        parser.add_argument(
            "--price_grace_s",
            type=int,
            default=None,
            help="Seconds added to a feed's heartbeat before its price is stale. Default: the registry's grace_s.",
        )
        parser.add_argument(
            "--max_conf_ratio",
            type=float,
            default=None,
            help="Reject a Pyth update whose conf/price is above this. Default: the registry's max_conf_ratio.",
        )
        parser.add_argument(
            "--min_price_sources",
            type=int,
            default=2,
            help="A composite with fewer agreeing sources than this is marked degraded.",
        )
        parser.add_argument(
            "--price_window_seconds",
            type=int,
            default=60,
            help="Width of the fixed event-time window of the composite price, in seconds.",
        )
        parser.add_argument(
            "--max_price_deviation_bps",
            type=float,
            default=None,
            help="A source further than this from the others (basis points) is set aside and the "
            "composite marked degraded. Default: the registry's max_source_deviation_bps.",
        )

        parser.add_argument(
            "--var_methods",
            default="historical,parametric",
            help="Comma-separated VaR methods to run together: historical, parametric, "
            "filtered_historical, monte_carlo.",
        )
        parser.add_argument("--var_level", type=float, default=0.99, help="VaR confidence level.")
        parser.add_argument(
            "--es_level", type=float, default=0.975, help="Expected-shortfall level."
        )
        parser.add_argument(
            "--var_horizon_days",
            type=int,
            default=1,
            help="VaR horizon in days; one-bucket figures are scaled by the square root of time.",
        )
        parser.add_argument(
            "--var_window",
            type=int,
            default=730,
            help="Returns per scenario set (default 730: two years of daily returns).",
        )
        parser.add_argument(
            "--var_interval",
            default="daily",
            choices=("daily", "hourly"),
            help="Return interval and recomputation frequency: daily (default) or hourly (intraday).",
        )
        parser.add_argument(
            "--var_min_scenarios",
            type=int,
            default=30,
            help="No VaR is written while fewer joint returns than this are available.",
        )
        parser.add_argument(
            "--var_shards",
            type=int,
            default=16,
            help="Account shards valued together in one vector step (more shards: more parallelism).",
        )

        parser.add_argument(
            "--margin_shards",
            type=int,
            default=4,
            help="Account shards of the margin engine; each price window is sent to every shard "
            "(more shards: more parallelism on Dataflow, more elements per price window).",
        )
        parser.add_argument(
            "--margin_warning",
            default="50",
            help="Health score (%%) below which an account is in the warning zone.",
        )
        parser.add_argument(
            "--margin_call",
            default="30",
            help="Health score (%%) below which an account is in margin call.",
        )
        parser.add_argument(
            "--margin_liquidation",
            default="15",
            help="Health score (%%) below which an account is liquidatable.",
        )
        parser.add_argument(
            "--margin_band",
            default="2",
            help="Hysteresis band in health points: an account leaves a zone only once its health "
            "clears the zone's threshold by this much.",
        )
        parser.add_argument(
            "--margin_cooldown_s",
            type=int,
            default=300,
            help="Event-time seconds during which a repeated alert of the same account and type is "
            "suppressed (the margin_events table still records it).",
        )
        parser.add_argument(
            "--margin_snapshot_s",
            type=int,
            default=3600,
            help="Every this many event-time seconds, a margin_health row for every account with "
            "debt (0: rows only on settlements and zone changes).",
        )
        parser.add_argument(
            "--margin_allowed_lateness_s",
            type=int,
            default=600,
            help="A settlement up to this late (behind the processed event time) is applied; a "
            "later one is a dead letter (late_settlement).",
        )

        parser.add_argument(
            "--policy",
            default=None,
            help="Compliance policy YAML (tier limits, countries, PEP, KYC, AML thresholds); "
            "default: the bundled transforms/compliance/config/policy.yaml. Check one with "
            "`defi-risk policy check FILE`.",
        )
        parser.add_argument(
            "--sanctions_store",
            default=None,
            help="Sanctions list store written by `defi-risk sanctions load` (local path or "
            "gs://). Default: the bundled OFAC snapshots of 2024-09-27 and 2025-11-19, with a "
            "warning (stale for live use).",
        )
        parser.add_argument(
            "--sanctions_poll_minutes",
            type=float,
            default=0.0,
            help="Streaming on Dataflow: re-read the store every N minutes so new list versions "
            "apply without a restart (0: read it once at start; the DirectRunner needs 0).",
        )
        parser.add_argument(
            "--compliance_shards",
            type=int,
            default=4,
            help="Keys the sanctions screen and the AML rules are spread over (exposure is keyed "
            "by chain).",
        )
        parser.add_argument(
            "--compliance_allowed_lateness_s",
            type=int,
            default=600,
            help="How long a transfer id is remembered past the longest AML window, to refuse a "
            "redelivery as a duplicate.",
        )

    def compliance_policy(self):
        return load_policy(self.policy)

    def margin_config(self):
        from decimal import Decimal

        return MarginConfig(
            detector=DetectorConfig(
                warning=Decimal(self.margin_warning),
                margin_call=Decimal(self.margin_call),
                liquidation=Decimal(self.margin_liquidation),
                band=Decimal(self.margin_band),
                cooldown_s=self.margin_cooldown_s,
            ),
            snapshot_s=self.margin_snapshot_s,
            allowed_lateness_s=self.margin_allowed_lateness_s,
        )

    def var_config(self):
        return VarConfig(
            methods=tuple(m.strip() for m in self.var_methods.split(",") if m.strip()),
            level=self.var_level,
            es_level=self.es_level,
            horizon_days=self.var_horizon_days,
            window=self.var_window,
            min_scenarios=self.var_min_scenarios,
            bucket_s=86_400 if self.var_interval == "daily" else 3_600,
        )

    def assets(self) -> tuple[str, ...]:
        if self.known_assets:
            return tuple(a.strip() for a in self.known_assets.split(",") if a.strip())

        return load_registry(self.feed_registry).assets()
