"""build(): the whole graph on injected sources, in streaming (TestStream) and batch."""

from __future__ import annotations

import json

import apache_beam as beam
import pytest
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to

from pipelines.graph import build, topics_for
from pipelines.stages import STAGES, stages_for
from runners.direct import local_pipeline_options
from schemas.registry import INPUT_TOPICS
from tests.support.factories import step_labels
from tests.support.paths import DATA

T = 1736121600  # 2025-01-06T00:00:00Z


def price(i: int, source: str, value: str, second: int, asset: str = "ETH") -> bytes:
    return json.dumps(
        {
            "event_id": f"p{i}",
            "asset": asset,
            "source": source,
            "price": value,
            "publish_time": T + second,
        }
    ).encode()


def settlement(i: int, kind: str, second: int) -> bytes:
    return json.dumps(
        {
            "event_id": f"s{i}",
            "account_id": "acct-1",
            "venue": "aave_v3",
            "kind": kind,
            "asset": "ETH",
            "amount_raw": "1000000000000000000",
            "decimals": 18,
            "event_time": T + second,
        }
    ).encode()


def test_streaming_graph_on_test_stream_sources():
    # One TestStream with a tag per topic: the DirectRunner drives one watermark per TestStream.
    P, S = "market.prices.v1", "settlements.v1"
    stream = (
        TestStream(output_tags={P, S})
        .advance_watermark_to(T, tag=P)
        .advance_watermark_to(T, tag=S)
        .add_elements([price(1, "chainlink", "3000", 5), price(2, "pyth", "3002", 30)], tag=P)
        .add_elements([settlement(1, "deposit", 10), settlement(2, "teleport", 20)], tag=S)
        .add_elements([b"{oops", price(3, "pyth", "-1", 40)], tag=P)
        .advance_watermark_to(T + 120, tag=P)
        .advance_watermark_to(T + 120, tag=S)
        .add_elements([price(4, "pyth", "3010", 130)], tag=P)
        .advance_watermark_to(T + 180, tag=P)
        .advance_watermark_to_infinity(tag=P)
        .advance_watermark_to_infinity(tag=S)
    )
    opts = local_pipeline_options(streaming=True, extra_args=["--pipeline=risk"])
    with beam.Pipeline(options=opts) as p:
        sources = p | stream
        out = build(p, opts, {P: sources[P], S: sources[S]})
        assert_that(
            out["prices"] | beam.Map(lambda r: (r.asset, str(r.price), r.n_sources)),
            # minute 1 carries both sources forward; minute 2 has Pyth 3010 and Chainlink 3000
            equal_to([("ETH", "3001", 2), ("ETH", "3001", 2), ("ETH", "3005", 2)]),
            label="Prices",
        )
        assert_that(
            out["dead_letter"] | beam.Map(lambda d: (d.stage, d.error_reason)),
            equal_to(
                [
                    ("ParsePrices", "invalid_json"),
                    ("ParsePrices", "non_positive_price"),
                    ("ParseSettlements", "wrong_type"),
                ]
            ),
            label="DeadLetters",
        )
        assert_that(
            out["parsed:settlements.v1"] | beam.Map(lambda s: s.event_id),
            equal_to(["s1"]),
            label="Settlements",
        )


LABELS_BEFORE = DATA / "graph" / "step_labels_e2c78e8.json"


@pytest.mark.parametrize("streaming", [False, True])
@pytest.mark.parametrize("pipeline", ["all", "risk", "surveillance", "compliance"])
def test_step_labels_are_stable(pipeline, streaming):
    """Streaming jobs are updated in place by step label: every label the graph had before the
    house move (tests/data/graph/SOURCE.md) is still there; new steps may be added."""
    opts = local_pipeline_options(streaming=streaming, extra_args=[f"--pipeline={pipeline}"])
    p = beam.Pipeline(options=opts)
    build(p, opts, {t: p | f"Src[{t}]" >> beam.Create([b""]) for t in topics_for(pipeline)})
    labels = step_labels(p, ("Src[",))
    before = json.loads(LABELS_BEFORE.read_text())[
        f"{pipeline}/{'streaming' if streaming else 'batch'}"
    ]
    assert len(before) > 40
    assert sorted(set(before) - labels) == []
    for expected in ("ComputeVaR/ValueShards", "MonitorMargins/MarginShards", "FlattenDeadLetters"):
        assert expected in labels or pipeline not in ("all", "risk"), expected


@pytest.mark.parametrize(
    ("pipeline", "topics"),
    [
        ("risk", {"market.prices.v1", "settlements.v1"}),
        ("compliance", {"transfers.v1", "accounts.profiles.v1"}),
        (
            "all",
            {
                "market.prices.v1",
                "settlements.v1",
                "dex.trades.v1",
                "liquidity.v1",
                "transfers.v1",
                "accounts.profiles.v1",
            },
        ),
    ],
)
def test_each_named_pipeline_reads_its_topics(pipeline, topics):
    assert set(topics_for(pipeline)) == topics
    assert all(pipeline == "all" or pipeline in s.pipelines for s in stages_for(pipeline))
    assert stages_for("all") == STAGES


@pytest.mark.parametrize("off", ["--var_methods=", "--var_methods=none"])
def test_an_empty_var_methods_leaves_var_out_and_margin_in(off):
    opts = local_pipeline_options(extra_args=["--pipeline=risk", off])
    p = beam.Pipeline(options=opts)
    out = build(p, opts, {t: p | f"Src[{t}]" >> beam.Create([b""]) for t in topics_for("risk")})
    labels = step_labels(p, ("Src[",))
    assert not any(label.startswith("ComputeVaR") for label in labels)
    assert "portfolio_var" not in out and "margin_health" in out
    assert "MonitorMargins/MarginShards" in labels


def test_unknown_source_topic_is_rejected():
    opts = local_pipeline_options()
    p = beam.Pipeline(options=opts)
    with pytest.raises(ValueError, match="unknown input topics"):
        build(p, opts, {"prices.v9": p | beam.Create([b""])})


@pytest.mark.parametrize("streaming", [False, True])
def test_the_graph_builds_without_beam_warnings(caplog, streaming):
    """Every stateful step's key has a deterministic coder (state on Dataflow is keyed by the
    encoded key), and no DoFn mixes yield and return: Beam warns of neither while building."""
    opts = local_pipeline_options(streaming=streaming, extra_args=["--pipeline=all"])
    p = beam.Pipeline(options=opts)
    with caplog.at_level("WARNING", logger="apache_beam"):
        build(p, opts, {t: p | f"Src[{t}]" >> beam.Create([b"{}"]) for t in INPUT_TOPICS})
    beam_warnings = [r.getMessage() for r in caplog.records if r.name.startswith("apache_beam")]
    assert beam_warnings == []
    # the check can fail: Beam does warn on a stateful step with an untyped key
    caplog.clear()
    with caplog.at_level("WARNING", logger="apache_beam"):
        _ = (
            p
            | "Untyped" >> beam.Create([("k", 1)])
            | "AnyKey" >> beam.Map(lambda kv: kv).with_output_types(beam.typehints.Any)
            | "Stateful" >> beam.ParDo(_StatefulFn())
        )
    assert any("may not be deterministic" in r.getMessage() for r in caplog.records)


class _StatefulFn(beam.DoFn):
    COUNT = beam.transforms.userstate.ReadModifyWriteStateSpec("n", beam.coders.VarIntCoder())

    def process(self, element, count=beam.DoFn.StateParam(COUNT)):
        yield element
