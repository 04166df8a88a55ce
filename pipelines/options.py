"""Pipeline options: every knob with a default, choices where they apply, and a help text.

``validate(options)`` checks the type and range of every field (pure, all problems at once, one
line each naming the option, the value and the allowed range); ``build()`` runs it on every run
mode, and the local run runs it, with ``check_files`` and ``unknown_options``, before its output
directory is touched. A new option needs its entry in ``_RANGES`` or its own rule there.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions

from transforms.compliance.policy import PolicyError, load_policy
from transforms.margin.detector import DetectorConfig
from transforms.margin.engine import MarginConfig
from transforms.prices.oracles import RegistryError, load_registry
from transforms.var.engine import METHODS, VarConfig

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
            "filtered_historical, monte_carlo; empty (--var_methods=) or none: no VaR stage.",
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

    def var_method_names(self) -> tuple[str, ...]:
        """The VaR methods to run; empty (``--var_methods=`` or ``none``): no VaR stage."""
        names = tuple(_items(self.var_methods or ""))
        return () if names == ("none",) else names

    def var_config(self):
        return VarConfig(
            methods=self.var_method_names(),
            level=self.var_level,
            es_level=self.es_level,
            horizon_days=self.var_horizon_days,
            window=self.var_window,
            min_scenarios=self.var_min_scenarios,
            bucket_s=86_400 if self.var_interval == "daily" else 3_600,
        )

    def assets(self) -> tuple[str, ...]:
        if self.known_assets:
            return tuple(_items(self.known_assets))

        return load_registry(self.feed_registry).assets()


# ------------------------------------------------------------------------------- validation
class OptionsError(ValueError):
    """Pipeline options out of range or of the wrong type. ``problems`` holds one line per
    problem (``--option=value: the allowed range``); the message is all of them on one line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("invalid pipeline options: " + "; ".join(self.problems))


@dataclass(frozen=True)
class _Spec:
    dest: str
    flag: str
    type: Callable[[str], Any] | None
    choices: tuple | None
    default: Any


class _Recorder:
    """Stands in for the argparse parser to read the option definitions of a class."""

    def __init__(self):
        self.specs: dict[str, _Spec] = {}

    def add_argument(self, *names, **kw):
        flag = next(n for n in names if n.startswith("--"))
        dest = kw.get("dest") or flag[2:].replace("-", "_")
        choices = tuple(kw["choices"]) if kw.get("choices") else None
        self.specs[dest] = _Spec(dest, flag, kw.get("type"), choices, kw.get("default"))


def _specs() -> dict[str, _Spec]:
    recorder = _Recorder()
    RiskPipelineOptions._add_argparse_args(recorder)
    return recorder.specs


class _ParseProblem(Exception):
    pass


class _RaisingParser(argparse.ArgumentParser):
    """argparse that raises instead of printing the usage and exiting."""

    def error(self, message):
        raise _ParseProblem(message)

    def add_value_provider_argument(self, *args, **kwargs):  # Beam's templated options
        self.add_argument(*args, **kwargs)


class _AsText:
    """A parser's ``add_argument`` without types and choices (the values stay text)."""

    def __init__(self, parser: argparse.ArgumentParser):
        self.parser = parser

    def add_argument(self, *names, **kw):
        kw.pop("type", None)
        kw.pop("choices", None)
        self.parser.add_argument(*names, **kw)


def _raw_values(options: PipelineOptions | Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """The value of every RiskPipelineOptions field, without Beam's parser (which prints its
    usage and exits on a value of the wrong type): strings as given on the command line, typed
    values where they were set in Python (keyword overrides, assignments to a view)."""
    specs = _specs()
    if isinstance(options, PipelineOptions):
        # Beam keeps the command line in ``_flags`` and overrides (and values already read
        # through a view, typed) in ``_all_options``; a view reads the latter first.
        flags = list(getattr(options, "_flags", None) or [])
        overrides = dict(getattr(options, "_all_options", None) or {})
    else:
        flags, overrides = list(options), {}
    parser = _RaisingParser(allow_abbrev=False, add_help=False)
    for spec in specs.values():
        parser.add_argument(spec.flag, dest=spec.dest, default=argparse.SUPPRESS)
    problems: list[str] = []
    try:
        given, _ = parser.parse_known_args(flags)
        values = vars(given)
    except _ParseProblem as exc:
        values, problems = {}, [str(exc)]
    values.update({k: v for k, v in overrides.items() if k in specs})
    return {d: values.get(d, s.default) for d, s in specs.items()}, problems


_SYMBOL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _number(value: Any, kind: type) -> int | float | None:
    """``value`` as an int or a finite float, or None when it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = kind(value.strip())
        except ValueError:
            return None
    if kind is int:
        return value if isinstance(value, int) else None
    if isinstance(value, int | float) and math.isfinite(value):
        return float(value)
    return None


def _items(text: str) -> list[str]:
    """A comma-separated list without its empty entries (``var_method_names``, ``assets``)."""
    return [item.strip() for item in text.split(",") if item.strip()]


def _show(value: Any) -> str:
    """A value as given, quoted only when it is empty, padded or not text."""
    if isinstance(value, str) and value and value == value.strip() and " " not in value:
        return value
    return repr(value)


def _decimal(value: Any) -> Decimal | None:
    try:
        d = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return None
    return d if d.is_finite() else None


# option -> (int or float, in range?, the allowed range in words, may it be None?)
_RANGES: dict[str, tuple[type, Callable[[Any], bool], str, bool]] = {
    "price_grace_s": (int, lambda v: v >= 0, "an integer >= 0 (seconds)", True),
    "max_conf_ratio": (float, lambda v: 0 < v <= 1, "a number in (0, 1]", True),
    "min_price_sources": (int, lambda v: v >= 1, "an integer >= 1", False),
    "price_window_seconds": (int, lambda v: v >= 1, "an integer >= 1 (seconds)", False),
    "max_price_deviation_bps": (float, lambda v: v > 0, "a number > 0 (basis points)", True),
    "var_level": (float, lambda v: 0 < v < 1, "a number in (0, 1), e.g. 0.99", False),
    "es_level": (float, lambda v: 0 < v < 1, "a number in (0, 1), e.g. 0.975", False),
    "var_horizon_days": (int, lambda v: v >= 1, "an integer >= 1 (days)", False),
    "var_window": (int, lambda v: v >= 2, "an integer >= 2 (returns)", False),
    "var_min_scenarios": (int, lambda v: v >= 2, "an integer >= 2 (returns)", False),
    "var_shards": (int, lambda v: v >= 1, "an integer >= 1", False),
    "margin_shards": (int, lambda v: v >= 1, "an integer >= 1", False),
    "margin_cooldown_s": (int, lambda v: v >= 0, "an integer >= 0 (seconds)", False),
    "margin_snapshot_s": (int, lambda v: v >= 0, "an integer >= 0 (seconds; 0: off)", False),
    "margin_allowed_lateness_s": (int, lambda v: v >= 0, "an integer >= 0 (seconds)", False),
    "sanctions_poll_minutes": (float, lambda v: v >= 0, "a number >= 0 (minutes; 0: off)", False),
    "compliance_shards": (int, lambda v: v >= 1, "an integer >= 1", False),
    "compliance_allowed_lateness_s": (int, lambda v: v >= 0, "an integer >= 0 (seconds)", False),
}
_MARGIN_LEVELS = ("margin_liquidation", "margin_call", "margin_warning")  # ascending
_PATHS = ("feed_registry", "policy", "sanctions_store")


def validate(options: PipelineOptions | Sequence[str]) -> list[str]:
    """Every problem of the RiskPipelineOptions values of ``options`` (a PipelineOptions, any
    view, or a command line), one line each naming the option, the value and the allowed range;
    [] when all hold. Pure: reads no file (``check_files`` loads the files options name), so
    ``build()`` runs it on every run mode before a stage is made."""
    specs = _specs()
    values, problems = _raw_values(options)

    def bad(dest: str, allowed: str) -> None:
        problems.append(f"{specs[dest].flag}={_show(values[dest])}: must be {allowed}")

    for dest, spec in specs.items():
        if spec.choices and values[dest] not in spec.choices:
            bad(dest, f"one of {', '.join(map(str, spec.choices))}")
    typed: dict[str, Any] = {}
    for dest, (kind, ok, allowed, optional) in _RANGES.items():
        if optional and values[dest] is None:
            continue
        n = _number(values[dest], kind)
        if n is None or not ok(n):
            bad(dest, allowed)
        else:
            typed[dest] = n
    if "var_window" in typed and typed.get("var_min_scenarios", 0) > typed["var_window"]:
        problems.append(
            f"--var_min_scenarios={_show(values['var_min_scenarios'])}: must be at most "
            f"--var_window ({typed['var_window']}), or no VaR is ever written"
        )

    methods = values["var_methods"]
    names = _items(methods) if isinstance(methods, str) else None
    known = f"a comma-separated list of {', '.join(METHODS)} (each at most once), or none"
    if names is None or (names != ["none"] and (
        any(m not in METHODS for m in names) or len(set(names)) != len(names)
    )):  # fmt: skip
        bad("var_methods", known)

    assets = values["known_assets"]
    if assets not in (None, ""):
        symbols = _items(assets) if isinstance(assets, str) else []
        if not symbols or not all(_SYMBOL.match(a) for a in symbols):
            bad("known_assets", "comma-separated asset symbols, e.g. BTC,ETH")

    levels = {d: _decimal(values[d]) for d in (*_MARGIN_LEVELS, "margin_band")}
    for dest, level in levels.items():
        if level is None:
            bad(dest, "a decimal number (a health score in %)")
    if levels["margin_band"] is not None and levels["margin_band"] < 0:
        bad("margin_band", "a decimal number >= 0 (health points)")
    low, mid, high = (levels[d] for d in _MARGIN_LEVELS)
    if None not in (low, mid, high) and not low < mid < high:
        problems.append(
            f"--margin_liquidation={_show(values['margin_liquidation'])}, --margin_call="
            f"{_show(values['margin_call'])}, --margin_warning={_show(values['margin_warning'])}: "
            "must satisfy liquidation < margin_call < warning"
        )

    for dest in _PATHS:
        if values[dest] is not None and (not isinstance(values[dest], str) or not values[dest]):
            bad(dest, "a path")
    if typed.get("sanctions_poll_minutes", 0) > 0 and not values["sanctions_store"]:
        problems.append(
            f"--sanctions_poll_minutes={_show(values['sanctions_poll_minutes'])}: polling needs "
            "--sanctions_store (a store written by `defi-risk sanctions load`)"
        )
    return problems


def check_files(options: PipelineOptions) -> list[str]:
    """Problems of the feed registry and the compliance policy named by the options (each is
    loaded and checked by its own loader); [] when none is named or both load."""
    opts = options.view_as(RiskPipelineOptions)
    problems = []
    if opts.feed_registry:
        try:
            load_registry(opts.feed_registry)
        except RegistryError as exc:
            problems.append(f"--feed_registry={_show(opts.feed_registry)}: {exc}")
    if opts.policy:
        try:
            load_policy(opts.policy)
        except PolicyError as exc:
            problems.append(f"--policy={_show(opts.policy)}: {'; '.join(exc.problems)}")
    return problems


def require_valid(options: PipelineOptions, files: bool = False) -> RiskPipelineOptions:
    """The RiskPipelineOptions view once ``validate`` (and with ``files``, ``check_files``)
    finds nothing; raises OptionsError with every problem otherwise."""
    problems = validate(options)
    if problems:
        raise OptionsError(problems)
    if files and (problems := check_files(options)):
        raise OptionsError(problems)
    return options.view_as(RiskPipelineOptions)


def unknown_options(flags: Sequence[str]) -> list[str]:
    """Problems of a command line against every options class Beam knows of (its own and
    ours): names none defines (a typo would otherwise be dropped with a warning) and values
    their parser refuses. For the local runner's command line; a Dataflow launch may pass
    service flags of its own, so ``build()`` does not run this."""
    parser = _RaisingParser(allow_abbrev=False, add_help=False)
    seen: dict[str, type] = {}
    for cls in PipelineOptions.__subclasses__():  # as Beam's get_all_options collects them
        seen.setdefault(str(cls), cls)
    for cls in seen.values():
        try:
            # Our own values are validate()'s: parsed here as text, for their names only.
            cls._add_argparse_args(_AsText(parser) if cls is RiskPipelineOptions else parser)
        except argparse.ArgumentError:  # the same flag defined twice: keep the first
            continue
    try:
        _, unknown = parser.parse_known_args(list(flags))
    except _ParseProblem as exc:
        return [str(exc)]
    names = [u.split("=", 1)[0] for u in unknown if u.startswith("-")]
    return [f"{n}: unknown pipeline option (see pipelines/options.py)" for n in names] + [
        f"{u!r}: unexpected argument (pass options as --name=value)"
        for u in unknown
        if not u.startswith("-")
    ]
