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
from pathlib import Path

import apache_beam as beam
from apache_beam.io.parquetio import ReadFromParquet, WriteToParquet
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.transforms import window

from pipelines.graph import build, topics_for
from pipelines.options import RiskPipelineOptions
from runners.direct import local_pipeline_options
from schemas.codegen import arrow_schema
from schemas.registry import ALERT_TOPICS, TABLES
from schemas.serde import to_json, to_row

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
    missing_topics: list[str] = field(default_factory=list)

    def balanced(self) -> bool:
        return all(t["in"] == t["out"] + t["dead_letter"] for t in self.topics.values())


def find_inputs(input_dir: Path, topics: tuple[str, ...], input_format: str) -> tuple[dict[str, Path], list[str]]:
    if not input_dir.is_dir():
        raise InputError(f"input directory {input_dir} does not exist; create one with `defi-risk generate --out {input_dir}`")
    found, missing = {}, []
    for topic in topics:
        path = input_dir / f"{topic}.{input_format}"
        (found.__setitem__(topic, path) if path.exists() else missing.append(topic))
    if not found:
        raise InputError(f"no {input_format} topic files in {input_dir} (expected e.g. {topics[0]}.{input_format})")
    return found, missing


def _write_table(rows, table: str, out_dir: Path):
    model = TABLES[table]
    return (
        rows
        | f"Global_{table}" >> beam.WindowInto(window.GlobalWindows())
        | f"ToRow_{table}" >> beam.Map(to_row)
        | f"Write_{table}"
        >> WriteToParquet(
            str(out_dir / "tables" / table / "part"),
            arrow_schema(model),
            file_name_suffix=".parquet",
            num_shards=1,
        )
    )


def _write_alerts(alerts, topic: str, out_dir: Path):
    return (
        alerts
        | f"Global_{topic}" >> beam.WindowInto(window.GlobalWindows())
        | f"ToJson_{topic}" >> beam.Map(to_json)
        | f"Write_{topic}"
        >> beam.io.WriteToText(str(out_dir / "alerts" / topic), file_name_suffix=".jsonl", shard_name_template="")
    )


def run_local(
    input_dir: str | Path,
    output_dir: str | Path,
    pipeline: str = "all",
    input_format: str = "jsonl",
    num_workers: int = 1,
    extra_args: list[str] | None = None,
) -> RunReport:
    """Runs the chosen pipeline over the topic files; replaces OUT/tables and OUT/alerts."""
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    payload_format = "json" if input_format == "jsonl" else "row"
    options = local_pipeline_options(
        num_workers=num_workers,
        extra_args=[f"--pipeline={pipeline}", f"--payload_format={payload_format}", *(extra_args or [])],
    )
    paths, missing = find_inputs(input_dir, topics_for(options.view_as(RiskPipelineOptions).pipeline), input_format)
    for sub in ("tables", "alerts"):  # a rerun replaces the previous output, never appends to it
        shutil.rmtree(output_dir / sub, ignore_errors=True)
        (output_dir / sub).mkdir(parents=True)

    started = time.perf_counter()
    p = beam.Pipeline(options=options)
    sources = {}
    for topic, path in paths.items():
        if input_format == "jsonl":
            # Bytes, not str: invalid UTF-8 must become a dead letter, not crash the reader.
            sources[topic] = p | f"Read[{topic}]" >> beam.io.ReadFromText(str(path), coder=beam.coders.BytesCoder())
        else:
            sources[topic] = p | f"Read[{topic}]" >> ReadFromParquet(str(path))
    outputs = build(p, options, sources)
    for table in TABLES:
        if table in outputs:
            _write_table(outputs[table], table, output_dir)
    for topic in ALERT_TOPICS:
        if topic in outputs:
            _write_alerts(outputs[topic], topic, output_dir)
    result = p.run()
    result.wait_until_finish()
    report = RunReport(pipeline, str(input_dir), str(output_dir), time.perf_counter() - started, missing_topics=missing)
    _collect_metrics(result, report, paths)
    (output_dir / "run_report.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    return report


def _collect_metrics(result, report: RunReport, paths: dict[str, Path]) -> None:
    from transforms.parse import stage_label

    counters = {
        m.key.metric.name: m.committed
        for m in result.metrics().query(MetricsFilter().with_namespace("parse"))["counters"]
    }
    for topic in paths:
        stage = stage_label(topic)
        dead = {k.split(".dead_letter.", 1)[1]: v for k, v in counters.items() if k.startswith(f"{stage}.dead_letter.")}
        report.topics[topic] = {
            "in": counters.get(f"{stage}.in", 0),
            "out": counters.get(f"{stage}.out", 0),
            "dead_letter": sum(dead.values()),
        }
        report.dead_letter_reasons.update({f"{stage}.{k}": v for k, v in sorted(dead.items())})
