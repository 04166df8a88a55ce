"""The embedded default: run the real graph over topic files on the pinned local runner.

    defi-risk generate --out data/demo --days 7 --accounts 200 --seed 7
    defi-risk run all --input-dir data/demo --output-dir out/demo

Sources are ``DIR/<topic>.jsonl`` (or ``.parquet``) files; records are stamped with their event
time, so windows, state and timers behave as they do on the live stream. Sinks are Parquet tables
under ``OUT/tables/<table>/`` and JSONL alerts under ``OUT/alerts/<topic>.jsonl``.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

import apache_beam as beam
from apache_beam.io.parquetio import ReadFromParquet, WriteToParquet
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_stream import TestStream
from apache_beam.transforms import window
from apache_beam.transforms.window import TimestampedValue

from pipelines.graph import build, topics_for
from pipelines.options import RiskPipelineOptions
from runners.direct import local_pipeline_options
from schemas.codegen import arrow_schema
from schemas.registry import ALERT_TOPICS, TABLES, TOPICS
from schemas.serde import to_json, to_row
from schemas.types import MAX_EVENT_TIME, MIN_EVENT_TIME

log = logging.getLogger(__name__)


class InputError(RuntimeError):
    """The input directory does not hold what the run needs."""


@dataclass
class RunReport:
    pipeline: str
    input_dir: str
    output_dir: str
    wall_seconds: float
    topics: dict[str, dict[str, int]] = field(default_factory=dict)  # topic -> in/out/dead_letter
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)  # "Stage.reason" -> n
    # Records that parsed but a later step refused (validation, ordered checks): "Stage.reason" -> n
    rejected_downstream: dict[str, int] = field(default_factory=dict)
    missing_topics: list[str] = field(default_factory=list)

    def balanced(self) -> bool:
        return all(t["in"] == t["out"] + t["dead_letter"] for t in self.topics.values())


def find_inputs(
    input_dir: Path, topics: tuple[str, ...], input_format: str
) -> tuple[dict[str, Path], list[str]]:
    if not input_dir.is_dir():
        raise InputError(
            f"input directory {input_dir} does not exist; create one with `defi-risk generate --out {input_dir}`"
        )
    found, missing = {}, []
    for topic in topics:
        path = input_dir / f"{topic}.{input_format}"
        (found.__setitem__(topic, path) if path.exists() else missing.append(topic))
    if not found:
        raise InputError(
            f"no {input_format} topic files in {input_dir} (expected e.g. {topics[0]}.{input_format})"
        )
    return found, missing


def _sink_window(streaming: bool):
    # Batch writes one file per table; an unbounded write needs finite windows, so the stream
    # replay writes one file per table and event-time day (closed by the watermark).
    return window.FixedWindows(86_400) if streaming else window.GlobalWindows()


def _write_table(rows, table: str, out_dir: Path, streaming: bool = False):
    model = TABLES[table]
    return (
        rows
        | f"Global_{table}" >> beam.WindowInto(_sink_window(streaming))
        | f"ToRow_{table}" >> beam.Map(to_row)
        | f"Write_{table}"
        >> WriteToParquet(
            str(out_dir / "tables" / table / "part"),
            arrow_schema(model),
            file_name_suffix=".parquet",
            num_shards=1,
        )
    )


def _write_alerts(alerts, topic: str, out_dir: Path, streaming: bool = False):
    return (
        alerts
        | f"Global_{topic}" >> beam.WindowInto(_sink_window(streaming))
        | f"ToJson_{topic}" >> beam.Map(to_json)
        | f"Write_{topic}"
        >> beam.io.WriteToText(
            str(out_dir / "alerts" / topic), file_name_suffix=".jsonl", shard_name_template=""
        )
    )


def _peek_event_time(raw: bytes, field_name: str) -> float | None:
    """Event time (epoch seconds) of a JSON line, without validating it; None when unreadable."""
    from schemas.types import coerce_time

    try:
        value = json.loads(raw).get(field_name)
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return coerce_time(value).timestamp()
    except (ValueError, TypeError, AttributeError, OverflowError):
        return None
    return None


def replay_stream(paths: dict[str, Path], step_seconds: int = 60) -> TestStream:
    """A TestStream that replays the topic files in event-time order, one step at a time.

    Each topic is a tagged output. Lines are released in steps of ``step_seconds`` of event time,
    and after each step the watermark of every topic advances to the step's end, as a live
    source's watermark would. A line whose time cannot be read (a future dead letter) travels
    with the line before it. Everything is held in the graph: meant for small inputs.
    """
    events: list[tuple[float, int, str, bytes]] = []
    for topic, path in paths.items():
        field_name = TOPICS[topic].event_time_field
        last = None
        for i, raw in enumerate(path.read_bytes().split(b"\n")):
            if not raw:
                continue
            t = _peek_event_time(raw, field_name)
            if t is None or not (MIN_EVENT_TIME.timestamp() <= t < MAX_EVENT_TIME.timestamp()):
                t = last
            last = t if t is not None else last
            events.append((t if t is not None else -1.0, i, topic, raw))
    first = min((e[0] for e in events if e[0] >= 0), default=0.0)
    events = [(t if t >= 0 else first, i, topic, raw) for t, i, topic, raw in events]
    events.sort(key=lambda e: (e[0], e[2], e[1]))
    stream = TestStream(output_tags=set(paths))
    for topic in paths:
        stream = stream.advance_watermark_to(int(first) - 1, tag=topic)
    i = 0
    while i < len(events):
        step_end = (int(events[i][0]) // step_seconds + 1) * step_seconds
        batch: dict[str, list] = {}
        while i < len(events) and events[i][0] < step_end:
            t, _, topic, raw = events[i]
            batch.setdefault(topic, []).append(TimestampedValue(raw, t))
            i += 1
        for topic, elements in batch.items():
            stream = stream.add_elements(elements, tag=topic)
        for topic in paths:
            stream = stream.advance_watermark_to(step_end, tag=topic)
    for topic in paths:
        stream = stream.advance_watermark_to_infinity(tag=topic)
    return stream


def run_local(
    input_dir: str | Path,
    output_dir: str | Path,
    pipeline: str = "all",
    input_format: str = "jsonl",
    num_workers: int = 1,
    extra_args: list[str] | None = None,
    replay: str = "batch",
) -> RunReport:
    """Runs the chosen pipeline over the topic files; replaces OUT/tables and OUT/alerts.

    ``replay="batch"`` reads the files with the FnApiRunner (fast); ``replay="stream"`` feeds them
    through a TestStream on the streaming BundleBasedDirectRunner, advancing the watermark minute
    by minute (slow; for small inputs and for checking that both paths agree).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    if replay not in ("batch", "stream"):
        raise ValueError(f"replay must be 'batch' or 'stream', got {replay!r}")
    if replay == "stream" and input_format != "jsonl":
        raise ValueError("the stream replay reads JSONL topic files only")
    payload_format = "json" if input_format == "jsonl" else "row"
    options = local_pipeline_options(
        streaming=replay == "stream",
        num_workers=num_workers,
        extra_args=[
            f"--pipeline={pipeline}",
            f"--payload_format={payload_format}",
            *(extra_args or []),
        ],
    )
    paths, missing = find_inputs(
        input_dir, topics_for(options.view_as(RiskPipelineOptions).pipeline), input_format
    )
    for sub in ("tables", "alerts"):  # a rerun replaces the previous output, never appends to it
        shutil.rmtree(output_dir / sub, ignore_errors=True)
        (output_dir / sub).mkdir(parents=True)

    started = time.perf_counter()
    p = beam.Pipeline(options=options)
    sources = {}
    if replay == "stream":
        replayed = p | "ReplayInEventTime" >> replay_stream(paths)
        sources = {topic: replayed[topic] for topic in paths}
    for topic, path in ({} if replay == "stream" else paths).items():
        if input_format == "jsonl":
            # Bytes, not str: invalid UTF-8 must become a dead letter, not crash the reader.
            sources[topic] = p | f"Read[{topic}]" >> beam.io.ReadFromText(
                str(path), coder=beam.coders.BytesCoder()
            )
        else:
            sources[topic] = p | f"Read[{topic}]" >> ReadFromParquet(str(path))
    outputs = build(p, options, sources)
    for table in TABLES:
        if table in outputs:
            _write_table(outputs[table], table, output_dir, replay == "stream")
    for topic in ALERT_TOPICS:
        if topic in outputs:
            _write_alerts(outputs[topic], topic, output_dir, replay == "stream")
    result = p.run()
    result.wait_until_finish()
    report = RunReport(
        pipeline,
        str(input_dir),
        str(output_dir),
        time.perf_counter() - started,
        missing_topics=missing,
    )
    if replay == "stream":
        _count_from_outputs(report, paths, output_dir)
    else:
        _collect_metrics(result, report, paths)
    (output_dir / "run_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def _count_from_outputs(report: RunReport, paths: dict[str, Path], output_dir: Path) -> None:
    """Stream replay accounting, from the files: the BundleBasedDirectRunner's Beam metrics
    were measured to keep only the first bundle's counts (Beam 2.77), so they are not used here.
    ``in`` counts input lines, ``dead_letter`` the parse dead letters of each topic, and
    ``rejected_downstream`` the dead letters of later steps."""
    import pyarrow.parquet as pq

    dead_dir = output_dir / "tables" / "dead_letter"
    rows = pq.read_table(dead_dir).to_pylist() if any(dead_dir.glob("*.parquet")) else []
    for topic, path in paths.items():
        lines = sum(1 for line in path.read_bytes().split(b"\n") if line)
        parse_dead = [r for r in rows if r["source"] == topic and r["stage"].startswith("Parse")]
        report.topics[topic] = {
            "in": lines,
            "out": lines - len(parse_dead),
            "dead_letter": len(parse_dead),
        }
    for r in rows:
        key = f"{r['stage']}.{r['error_reason']}"
        report.dead_letter_reasons[key] = report.dead_letter_reasons.get(key, 0) + 1
        if not r["stage"].startswith("Parse"):
            report.rejected_downstream[key] = report.rejected_downstream.get(key, 0) + 1


def _collect_metrics(result, report: RunReport, paths: dict[str, Path]) -> None:
    from transforms.parse import stage_label

    counters: dict[str, int] = {}
    for m in result.metrics().query(MetricsFilter().with_namespace("parse"))["counters"]:
        # A counter may be reported once per step instance; the streaming runner commits late.
        counters[m.key.metric.name] = counters.get(m.key.metric.name, 0) + max(
            m.committed or 0, m.attempted or 0
        )
    for topic in paths:
        stage = stage_label(topic)
        dead = {
            k.split(".dead_letter.", 1)[1]: v
            for k, v in counters.items()
            if k.startswith(f"{stage}.dead_letter.")
        }
        report.topics[topic] = {
            "in": counters.get(f"{stage}.in", 0),
            "out": counters.get(f"{stage}.out", 0),
            "dead_letter": sum(dead.values()),
        }
        report.dead_letter_reasons.update({f"{stage}.{k}": v for k, v in sorted(dead.items())})
    # Steps after parsing count their dead letters in the "dead_letter" namespace.
    for m in result.metrics().query(MetricsFilter().with_namespace("dead_letter"))["counters"]:
        name = m.key.metric.name
        report.rejected_downstream[name] = report.rejected_downstream.get(name, 0) + max(
            m.committed or 0, m.attempted or 0
        )
    report.rejected_downstream = dict(sorted(report.rejected_downstream.items()))
    report.dead_letter_reasons.update(report.rejected_downstream)
