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
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import apache_beam as beam
from apache_beam.io.parquetio import ReadFromParquet
from apache_beam.metrics.metric import MetricsFilter

from pipelines.graph import build, topics_for
from pipelines.options import RiskPipelineOptions
from runners.direct import local_pipeline_options
from runners.io.files import find_inputs, replay_stream, write_alerts, write_table
from schemas.registry import ALERT_TOPICS, TABLES
from transforms.common.parse import stage_label

log = logging.getLogger(__name__)


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
            write_table(outputs[table], table, output_dir, replay == "stream")
    for topic in ALERT_TOPICS:
        if topic in outputs:
            write_alerts(outputs[topic], topic, output_dir, replay == "stream")
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


def run_command(args) -> int:
    """``defi-risk run PIPELINE --input-dir DIR --output-dir OUT`` (``--source files``)."""
    if args.streaming:
        print(
            "defi-risk run: --streaming is for --source pubsub; replay files in streaming mode "
            "with --replay stream",
            file=sys.stderr,
        )
        return 2
    if not args.input_dir:
        print("defi-risk run: --input-dir is required with --source files", file=sys.stderr)
        return 2
    report = run_local(
        args.input_dir,
        args.output_dir,
        pipeline=args.pipeline,
        input_format=args.input_format,
        num_workers=args.direct_num_workers,
        replay=args.replay,
        extra_args=args.pipeline_options,
    )
    print(
        f"ran pipeline '{report.pipeline}' on {report.input_dir} -> {report.output_dir} "
        f"in {report.wall_seconds:.1f} s"
    )
    print_accounting(report)
    return 0 if report.balanced() else 1


def print_accounting(report) -> None:
    print("  records in = out + dead letters, per topic:")
    for topic, c in report.topics.items():
        ok = "ok" if c["in"] == c["out"] + c["dead_letter"] else "MISMATCH"
        print(f"    {topic:<20} {c['in']:>9,} = {c['out']:>9,} + {c['dead_letter']:>5,}  {ok}")
    if report.missing_topics:
        print(f"  topics with no input file (skipped): {', '.join(report.missing_topics)}")
