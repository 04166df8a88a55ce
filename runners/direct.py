"""Pinned local runners.

Beam 2.77's ``DirectRunner`` first tries to download the Prism runner from GitHub, which fails
offline and then falls back. Naming the engine skips that attempt, so local runs are quiet and
deterministic: the FnApiRunner for batch, the BundleBasedDirectRunner for streaming (TestStream,
Pub/Sub, processing-time timers).
"""

from __future__ import annotations

from apache_beam.options.pipeline_options import PipelineOptions

BATCH_RUNNER = "FnApiRunner"
STREAMING_RUNNER = "BundleBasedDirectRunner"


def local_pipeline_options(
    streaming: bool = False, num_workers: int = 1, extra_args: list[str] | None = None, **overrides
) -> PipelineOptions:
    """Options for a local run on a pinned runner.

    ``num_workers > 1`` uses multi-processing (measured ~1.5x faster on 2 cores in batch).
    """
    args = [f"--runner={STREAMING_RUNNER if streaming else BATCH_RUNNER}"]
    if streaming:
        args.append("--streaming")
    elif num_workers > 1:
        args += [f"--direct_num_workers={num_workers}", "--direct_running_mode=multi_processing"]
    args += list(extra_args or [])
    return PipelineOptions(args, **overrides)
