"""validate(): every RiskPipelineOptions field has its type and range checked, in one pure
function, before a stage is made (``build()`` runs it on every run mode)."""

from __future__ import annotations

import time

import apache_beam as beam
import pytest

from pipelines.graph import build
from pipelines.options import (
    _RANGES,
    OptionsError,
    RiskPipelineOptions,
    _specs,
    check_files,
    require_valid,
    unknown_options,
    validate,
)
from runners.direct import local_pipeline_options

# option -> values it must refuse; every field of RiskPipelineOptions is here (checked below)
BAD: dict[str, list[str]] = {
    "pipeline": ["x", "RISK"],
    "payload_format": ["xml"],
    "known_assets": [",", "BTC,ET H"],
    "feed_registry": [""],
    "price_grace_s": ["-1", "1.5", "abc"],
    "max_conf_ratio": ["0", "-0.1", "1.5", "nan", "inf"],
    "min_price_sources": ["0", "two"],
    "price_window_seconds": ["-60", "0", "1.5", "60s"],
    "max_price_deviation_bps": ["0", "-5", "nan"],
    "var_methods": ["foo", "historical,foo", "historical,historical", "none,historical"],
    "var_level": ["1.5", "1", "0", "-0.5", "nan", "inf", "0.99x"],
    "es_level": ["1", "0", "2"],
    "var_horizon_days": ["0", "-1", "1.5"],
    "var_window": ["-5", "1", "abc", "1e3"],
    "var_interval": ["weekly"],
    "var_min_scenarios": ["1", "0"],
    "var_shards": ["0", "-4"],
    "margin_shards": ["0"],
    "margin_warning": ["abc", "inf"],
    "margin_call": ["NaN", ""],
    "margin_liquidation": ["1e"],
    "margin_band": ["-1", "x"],
    "margin_cooldown_s": ["-1", "5.5"],
    "margin_snapshot_s": ["-3600"],
    "margin_allowed_lateness_s": ["-1"],
    "policy": [""],
    "sanctions_store": [""],
    "sanctions_poll_minutes": ["-1", "nan"],
    "compliance_shards": ["0"],
    "compliance_allowed_lateness_s": ["-600", "ten"],
}

GOOD: list[str] = [
    "--var_level=0.5",
    "--es_level=0.95",
    "--var_methods=historical,parametric,filtered_historical,monte_carlo",
    "--var_methods= monte_carlo ,",  # as var_config reads it: stripped, empties dropped
    "--var_methods=",  # no VaR stage
    "--var_methods=none",
    "--var_window=30",  # the default var_min_scenarios
    "--var_min_scenarios=730",  # the default var_window
    "--price_window_seconds=1",
    "--price_grace_s=0",
    "--max_conf_ratio=1",
    "--margin_snapshot_s=0",
    "--margin_cooldown_s=0",
    "--margin_band=0",
    "--margin_warning=60.5",
    "--known_assets=BTC,ETH,",
    "--known_assets=",
    "--var_interval=hourly",
    "--payload_format=row",
    "--sanctions_poll_minutes=0",
]


def test_every_field_of_the_options_is_covered():
    assert set(BAD) == set(_specs())
    for dest, spec in _specs().items():
        if spec.type in (int, float):  # a number: its range is in the table, of its type
            assert _RANGES[dest][0] is spec.type, dest


def test_defaults_are_valid():
    assert validate([]) == []
    assert validate(local_pipeline_options()) == []
    assert validate(local_pipeline_options(streaming=True)) == []


@pytest.mark.parametrize("arg", GOOD)
def test_values_in_range_pass(arg):
    assert validate([arg]) == []
    assert validate(["--var_window=2", "--var_min_scenarios=2"]) == []


@pytest.mark.parametrize(
    ("dest", "value"), [(dest, value) for dest, values in BAD.items() for value in values]
)
def test_each_bad_value_is_one_line_naming_option_value_and_range(dest, value):
    problems = validate([f"--{dest}={value}"])
    assert len(problems) == 1, problems
    (problem,) = problems
    assert problem.startswith(f"--{dest}=")
    assert "\n" not in problem
    assert "must be" in problem
    shown = problem.split(":", 1)[0].split("=", 1)[1]
    assert shown in (value, repr(value))


def test_cross_field_rules():
    (p,) = validate(["--var_window=50", "--var_min_scenarios=60"])
    assert p.startswith("--var_min_scenarios=60") and "--var_window (50)" in p
    (p,) = validate(["--margin_call=60"])  # above the warning level (50)
    assert "liquidation < margin_call < warning" in p and "--margin_call=60" in p
    (p,) = validate(["--margin_liquidation=30"])  # equal to margin_call
    assert "--margin_liquidation=30" in p
    (p,) = validate(["--sanctions_poll_minutes=5"])
    assert p.startswith("--sanctions_poll_minutes=5") and "--sanctions_store" in p
    assert validate(["--sanctions_poll_minutes=5", "--sanctions_store=gs://b/lists"]) == []


def test_all_problems_at_once_on_one_line():
    args = ["--var_level=1.5", "--var_window=-5", "--price_window_seconds=-60"]
    with pytest.raises(OptionsError) as err:
        require_valid(local_pipeline_options(extra_args=args))
    assert len(err.value.problems) == 3
    assert "\n" not in str(err.value)
    for arg in args:
        assert arg in str(err.value)


def test_values_set_in_python_are_checked_too():
    assert validate(local_pipeline_options(var_level=2.0)) == [
        "--var_level=2.0: must be a number in (0, 1), e.g. 0.99"
    ]
    opts = local_pipeline_options()
    opts.view_as(RiskPipelineOptions).var_window = 1
    assert [p.split(":")[0] for p in validate(opts)] == ["--var_window=1"]


def test_a_flag_without_its_value_is_a_problem_not_an_exit():
    (p,) = validate(["--var_level"])
    assert "--var_level" in p


def test_unknown_options_flags_typos_but_knows_beams_own():
    assert unknown_options(["--var_lvel=0.9"]) == [
        "--var_lvel: unknown pipeline option (see pipelines/options.py)"
    ]
    beam_flags = ["--runner=FnApiRunner", "--streaming", "--direct_num_workers=2"]
    assert unknown_options([*beam_flags, "--var_window=abc"]) == []  # ours: validate()'s job
    (p,) = unknown_options(["--direct_num_workers=x"])
    assert "--direct_num_workers" in p


def test_check_files_loads_the_files_options_name(tmp_path):
    assert check_files(local_pipeline_options()) == []
    bad = tmp_path / "policy.yaml"
    bad.write_text("tiers: 3\n")
    problems = check_files(
        local_pipeline_options(
            extra_args=[f"--feed_registry={tmp_path / 'nope.toml'}", f"--policy={bad}"]
        )
    )
    assert [p.split("=")[0] for p in problems] == ["--feed_registry", "--policy"]
    assert all("\n" not in p for p in problems)


@pytest.mark.parametrize("streaming", [False, True])
def test_build_refuses_bad_options_before_any_stage(streaming):
    # -60 used to loop forever once run; build() now refuses it at once, on every run mode.
    opts = local_pipeline_options(
        streaming=streaming, extra_args=["--pipeline=risk", "--price_window_seconds=-60"]
    )
    p = beam.Pipeline(options=opts)
    started = time.perf_counter()
    with pytest.raises(OptionsError, match=r"--price_window_seconds=-60: must be an integer >= 1"):
        build(p, opts, {"market.prices.v1": p | beam.Create([b""])})
    assert time.perf_counter() - started < 5
