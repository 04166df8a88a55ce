"""Pipeline options: every knob with a default, choices where they apply, and a help text."""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

PIPELINES = ("all", "risk", "surveillance", "compliance")
DEFAULT_ASSETS = "BTC,ETH,USDC,USDT,DAI"


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
            default=DEFAULT_ASSETS,
            help="Comma-separated asset symbols the price and settlement streams may carry; others are dead letters.",
        )
        parser.add_argument(
            "--price_window_seconds",
            type=int,
            default=60,
            help="Width of the fixed event-time window of the composite price, in seconds.",
        )
        parser.add_argument(
            "--max_price_spread_bps",
            type=float,
            default=100.0,
            help="A composite whose sources spread wider than this (basis points) is marked degraded.",
        )

    def assets(self) -> tuple[str, ...]:
        return tuple(a.strip() for a in self.known_assets.split(",") if a.strip())
