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
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import apache_beam as beam
from apache_beam.io.parquetio import ReadFromParquet
from apache_beam.metrics.metric import MetricsFilter

from pipelines.graph import build, topics_for
from pipelines.options import OptionsError, require_valid, unknown_options, validate
from pipelines.stages import stages_for
from runners.direct import local_pipeline_options
from runners.io.files import (
    InputError,
    fill_empty_tables,
    find_inputs,
    replay_stream,
    stages_without_inputs,
    write_alerts,
    write_bytes_atomic,
    write_table,
)
from schemas.registry import ALERT_TOPICS, TABLES
from transforms.common.parse import stage_label

log = logging.getLogger(__name__)

REPORT = "run_report.json"
RESULT_DIRS = ("tables", "alerts")
STAGING_PREFIX = ".staging-"  # OUT/.staging-<pid>: the run in progress
PREVIOUS_PREFIX = ".previous-"  # OUT/.previous-<pid>: the results being replaced, briefly


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
    # stage label -> the missing topics it needed (runs with allow_missing / --allow-missing-topics)
    skipped_stages: dict[str, list[str]] = field(default_factory=dict)

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
    allow_missing: bool = False,
) -> RunReport:
    """Runs the chosen pipeline over the topic files; replaces OUT/tables and OUT/alerts.

    ``replay="batch"`` reads the files with the FnApiRunner (fast); ``replay="stream"`` feeds them
    through a TestStream on the streaming BundleBasedDirectRunner, advancing the watermark minute
    by minute (slow; for small inputs and for checking that both paths agree).

    Everything is checked before OUT is touched: the arguments, every pipeline option
    (``OptionsError``), the files the options name, the output directory and the input topics
    (``InputError``: a topic a stage of the pipeline needs has no file, unless ``allow_missing``,
    which skips those stages). The graph is then built; only then does the run start.

    How a rerun replaces the previous results: the run writes into a fresh staging directory
    ``OUT/.staging-<pid>`` and, only once the pipeline has finished, renames its ``tables`` and
    ``alerts`` over OUT's; ``run_report.json`` is deleted when the run starts and written last,
    after the swap. So a run that fails, at any point, never deletes the previous tables and
    alerts, and never leaves a report behind: a ``run_report.json`` in OUT always describes the
    tables beside it and says the last run that started also finished (a stale "balanced" report
    of an earlier run next to a failed one would be read as the failed run's verdict).
    """
    input_dir, output_dir = Path(input_dir), Path(output_dir)
    problems = []
    if replay not in ("batch", "stream"):
        problems.append(f"--replay={replay}: must be one of batch, stream")
    if input_format not in ("jsonl", "parquet"):
        problems.append(f"--input-format={input_format}: must be one of jsonl, parquet")
    elif replay == "stream" and input_format != "jsonl":
        problems.append("--replay=stream: reads JSONL topic files only (--input-format=jsonl)")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 1:
        problems.append(f"--direct-num-workers={num_workers}: must be an integer >= 1")
    flags = [
        f"--pipeline={pipeline}",
        f"--payload_format={'json' if input_format == 'jsonl' else 'row'}",
        *(extra_args or []),
    ]
    problems += validate(flags) + unknown_options(flags)
    if problems:
        raise OptionsError(problems)
    options = local_pipeline_options(
        streaming=replay == "stream", num_workers=num_workers, extra_args=flags
    )
    opts = require_valid(options, files=True)
    if opts.sanctions_poll_minutes:
        raise OptionsError(
            [
                f"--sanctions_poll_minutes={opts.sanctions_poll_minutes:g}: must be 0 on the "
                "local runner (polling the store is for streaming jobs on Dataflow)"
            ]
        )
    _check_output_dir(output_dir)
    paths, missing = find_inputs(input_dir, topics_for(opts.pipeline), input_format)
    skipped = stages_without_inputs(stages_for(opts.pipeline), paths)
    if skipped and not allow_missing:
        needed = sorted({t for topics in skipped.values() for t in topics})
        raise InputError(
            f"{input_dir} has no {' or '.join(f'{t}.{input_format}' for t in needed)}, which "
            f"stage(s) {', '.join(skipped)} of pipeline '{opts.pipeline}' need; add the "
            "file(s), or pass --allow-missing-topics to run without those stages"
        )

    staging = output_dir / f"{STAGING_PREFIX}{os.getpid()}"
    # Built before the run starts, so that a stage refusing its configuration (a policy, a
    # sanctions store) fails while OUT is untouched; the sinks write into the staging directory.
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
            write_table(outputs[table], table, staging, replay == "stream")
    for topic in ALERT_TOPICS:
        if topic in outputs:
            write_alerts(outputs[topic], topic, staging, replay == "stream")

    # The run starts: the previous report goes first (see the docstring), then the staging
    # directories of runs that died without cleaning up theirs.
    (output_dir / REPORT).unlink(missing_ok=True)
    _sweep_abandoned(output_dir)
    try:
        for sub in RESULT_DIRS:
            (staging / sub).mkdir(parents=True)
        started = time.perf_counter()
        result = p.run()
        result.wait_until_finish()
        fill_empty_tables(staging, [t for t in TABLES if t in outputs])
        report = RunReport(
            opts.pipeline,
            str(input_dir),
            str(output_dir),
            time.perf_counter() - started,
            missing_topics=missing,
            skipped_stages=skipped,
        )
        if replay == "stream":
            _count_from_outputs(report, paths, staging)
        else:
            _collect_metrics(result, report, paths)
        _swap_in(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    write_bytes_atomic((json.dumps(asdict(report), indent=2) + "\n").encode(), output_dir / REPORT)
    return report


def _check_output_dir(output_dir: Path) -> None:
    """OUT, or the nearest of its parents that exists, must be a directory."""
    for path in (output_dir, *output_dir.parents):
        if path.exists():
            if path == output_dir and not path.is_dir():
                raise InputError(f"output directory {path} is a file, not a directory")
            if not path.is_dir():
                raise InputError(f"output directory {output_dir}: {path} is a file")
            return


def _sweep_abandoned(output_dir: Path) -> None:
    """Removes ``OUT/.staging-<pid>`` and ``OUT/.previous-<pid>`` of processes that are gone."""
    if not output_dir.is_dir():
        return
    for path in output_dir.glob(".*-*"):
        prefix, _, pid = path.name.rpartition("-")
        ours = f"{prefix}-" in (STAGING_PREFIX, PREVIOUS_PREFIX) and pid.isdigit()
        if ours and (int(pid) == os.getpid() or not _alive(int(pid))):
            shutil.rmtree(path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _swap_in(staging: Path, output_dir: Path) -> None:
    """Renames the staged ``tables`` and ``alerts`` over OUT's (each a rename on one file
    system); the previous ones are moved aside first and removed once both are in place."""
    previous = output_dir / f"{PREVIOUS_PREFIX}{os.getpid()}"
    previous.mkdir()
    for sub in RESULT_DIRS:
        if (output_dir / sub).exists() or (output_dir / sub).is_symlink():
            os.replace(output_dir / sub, previous / sub)
        os.replace(staging / sub, output_dir / sub)
    shutil.rmtree(previous, ignore_errors=True)


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
        allow_missing=args.allow_missing_topics,
    )
    print(
        f"ran pipeline '{report.pipeline}' on {report.input_dir} -> {report.output_dir} "
        f"in {report.wall_seconds:.1f} s"
    )
    print_accounting(report)
    if not report.balanced():
        print(f"defi-risk: {unbalanced_message(report)}", file=sys.stderr)
        return 1
    return 0


def unbalanced_message(report: RunReport) -> str:
    """One line: the topics whose records in != out + dead letters (exit code 1)."""
    topics = [t for t, c in report.topics.items() if c["in"] != c["out"] + c["dead_letter"]]
    return (
        f"the books do not balance: records in != out + dead letters for {', '.join(topics)} "
        f"(see {Path(report.output_dir) / REPORT})"
    )


def print_accounting(report) -> None:
    print("  records in = out + dead letters, per topic:")
    for topic, c in report.topics.items():
        ok = "ok" if c["in"] == c["out"] + c["dead_letter"] else "MISMATCH"
        print(f"    {topic:<20} {c['in']:>9,} = {c['out']:>9,} + {c['dead_letter']:>5,}  {ok}")
    skipped = getattr(report, "skipped_stages", {}) or {}
    for stage, topics in skipped.items():
        print(f"  stage {stage} skipped: no input file for {', '.join(topics)}")
    needed = {t for topics in skipped.values() for t in topics}
    optional = [t for t in report.missing_topics if t not in needed]
    if optional:
        # No stage needs them: an optional input (e.g. the profiles of MonitorAml) is empty.
        print(f"  topics with no input file (optional, read as empty): {', '.join(optional)}")
