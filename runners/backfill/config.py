"""The backfill's configuration: what a run computes, and the fingerprint its results carry.

A day's marker and the engines' saved state are kept under ``BackfillConfig.fingerprint()``: a
rerun with the same numbers resumes, one with other numbers (another VaR window, another feed
registry, another ``CODE_VERSION``) recomputes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from runners.backfill.files import STATE_DIR, input_fs
from transforms.margin.engine import MarginConfig
from transforms.prices.oracles import DEFAULT_REGISTRY
from transforms.var.engine import VarConfig

# Part of every fingerprint: raise it when the rows or the pickled engine state change, so that a
# newer version recomputes old days and never resumes from state it cannot read.
CODE_VERSION = 3  # 3: the house move renamed the engines' modules (pickled state names them)


@dataclass(frozen=True)
class BackfillConfig:
    start: date
    end: date
    input_dir: str
    output_dir: str
    feed_registry: str | None = None
    workers: int = 2
    chunk_days: int = 61
    var_shards: int = 4
    var_methods: tuple[str, ...] = ("historical", "parametric")
    var_level: float = 0.99
    es_level: float = 0.975
    var_window: int = 250
    var_min_scenarios: int = 30
    window_s: int = 60
    min_sources: int = 2
    # Margin rows of an account do not depend on which accounts share its shard (unlike VaR's
    # joint window), so the shards only spread the work: one per worker. Every shard replays
    # every price instant, so more shards cost more.
    margin_shards: int = 2
    margin_interval_s: int = 86_400  # margin_health snapshots of every account with debt
    force: bool = False

    def margin_config(self) -> MarginConfig:
        return MarginConfig(snapshot_s=self.margin_interval_s)

    def var_config(self) -> VarConfig:
        return VarConfig(
            methods=self.var_methods,
            level=self.var_level,
            es_level=self.es_level,
            horizon_days=1,
            window=self.var_window,
            min_scenarios=self.var_min_scenarios,
            bucket_s=86_400,
        )

    def fingerprint(self) -> str:
        """What the numbers depend on (not where they go, nor how many workers)."""
        keys = ("var_shards", "var_methods", "var_level", "es_level", "var_window",
                "var_min_scenarios", "window_s", "min_sources", "margin_shards",
                "margin_interval_s")  # fmt: skip
        data = {k: getattr(self, k) for k in keys}
        data["code"] = CODE_VERSION
        data["registry"] = hashlib.sha256(Path(self.registry_path()).read_bytes()).hexdigest()
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def registry_path(self) -> str:
        """The feed registry: --feed-registry, else the input's feeds.toml (copied next to the
        output when the input is remote), else the bundled one."""
        if self.feed_registry:
            return self.feed_registry
        filesystem, base = input_fs(self.input_dir)
        from pyarrow import fs

        if filesystem.get_file_info(f"{base}/feeds.toml").type == fs.FileType.File:
            if isinstance(filesystem, fs.LocalFileSystem):
                return f"{base}/feeds.toml"
            local = Path(self.output_dir) / STATE_DIR / "feeds.toml"
            local.parent.mkdir(parents=True, exist_ok=True)
            with filesystem.open_input_stream(f"{base}/feeds.toml") as src:
                local.write_bytes(src.read())
            return str(local)
        return str(DEFAULT_REGISTRY)
