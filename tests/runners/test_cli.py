"""`defi-risk`: every option is checked before the output directory is touched, and one handler
turns every outcome into its exit code: 0 ok, 1 the books do not balance, 2 usage or input error,
3 internal error (``runners/cli.py``, EXIT_CODES)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import apache_beam as beam
import pytest

import runners.local.run as local_run
from pipelines.options import OptionsError
from pipelines.stages import stages_for
from runners.cli import main
from runners.io.files import InputError, stages_without_inputs
from tests.support.paths import ROOT

T0 = 1736121600  # 2025-01-06T00:00:00Z


@pytest.fixture
def prices_only(tmp_path) -> Path:
    """An input directory with a dozen prices and no other topic."""
    data = tmp_path / "in"
    data.mkdir()
    lines = [
        json.dumps(
            {
                "event_id": f"{source}{i}",
                "asset": "ETH",
                "source": source,
                "price": str(3000 + k),
                "publish_time": T0 + i * 20 + k,
            }
        )
        for i in range(6)
        for k, source in enumerate(("chainlink", "pyth"))
    ]
    (data / "market.prices.v1.jsonl").write_text("\n".join(lines) + "\n")
    return data


@pytest.fixture
def earlier(tmp_path) -> Path:
    """An output directory holding the results of an earlier run."""
    out = tmp_path / "out"
    (out / "tables" / "prices").mkdir(parents=True)
    (out / "tables" / "prices" / "part-earlier.parquet").write_bytes(b"PAR1 earlier")
    (out / "alerts").mkdir()
    (out / "alerts" / "alerts.margin.v1.jsonl").write_text('{"alert": "earlier"}\n')
    report = {"pipeline": "risk", "topics": {"market.prices.v1": {"in": 1, "out": 1}}}
    (out / "run_report.json").write_text(json.dumps(report) + "\n")
    return out


def snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def run_args(data: Path, out: Path, *more: str) -> list[str]:
    return ["run", "risk", "--input-dir", str(data), "--output-dir", str(out), *more]


def one_line(text: str) -> str:
    lines = text.splitlines()
    assert len(lines) == 1, text
    assert "Traceback" not in text
    return lines[0]


# ----------------------------------------------------------------------- 2: usage and input
@pytest.mark.parametrize(
    ("option", "names"),
    [
        ("--var_level=1.5", "--var_level=1.5: must be a number in (0, 1)"),
        ("--var_window=-5", "--var_window=-5: must be an integer >= 2"),
        ("--var_window=abc", "--var_window=abc: must be an integer >= 2"),
        ("--es_level=1", "--es_level=1: must be a number in (0, 1)"),
        ("--var_methods=historical,garch", "--var_methods=historical,garch: must be"),
        ("--margin_call=70", "liquidation < margin_call < warning"),
        ("--min_price_sources=0", "--min_price_sources=0: must be an integer >= 1"),
        ("--var_lvel=0.9", "--var_lvel: unknown pipeline option"),
        ("--sanctions_poll_minutes=5", "--sanctions_poll_minutes=5"),
        ("--policy=/nonexistent/policy.yaml", "--policy=/nonexistent/policy.yaml"),
    ],
)
def test_a_bad_option_exits_2_in_one_line_and_leaves_earlier_results(
    option, names, prices_only, earlier, capsys
):
    before = snapshot(earlier)
    started = time.perf_counter()
    # Books would balance and every topic is present: only the option is wrong.
    code = main(run_args(prices_only, earlier, "--allow-missing-topics", option))
    assert time.perf_counter() - started < 10
    assert code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith("defi-risk: invalid pipeline options: ")
    assert names in line
    assert snapshot(earlier) == before
    assert not [p for p in earlier.iterdir() if p.name.startswith(".")]


def test_a_negative_price_window_exits_2_at_once_instead_of_looping(prices_only, earlier):
    # It used to spin at 100 % CPU forever: a subprocess with a timeout, so a regression fails.
    before = snapshot(earlier)
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "runners.cli", *run_args(prices_only, earlier)]
        + ["--allow-missing-topics", "--price_window_seconds=-60"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert "--price_window_seconds=-60: must be an integer >= 1" in line
    assert snapshot(earlier) == before
    assert time.perf_counter() - started < 120


def test_an_output_dir_that_is_a_file_exits_2(prices_only, tmp_path, capsys):
    out = tmp_path / "out.txt"
    out.write_text("not a directory\n")
    assert main(run_args(prices_only, out, "--allow-missing-topics")) == 2
    assert "is a file" in one_line(capsys.readouterr().err)
    assert out.read_text() == "not a directory\n"
    assert main(run_args(prices_only, out / "sub", "--allow-missing-topics")) == 2
    assert "is a file" in one_line(capsys.readouterr().err)


def test_a_missing_topic_a_stage_needs_exits_2_unless_allowed(prices_only, earlier, capsys):
    before = snapshot(earlier)
    assert main(run_args(prices_only, earlier)) == 2
    line = one_line(capsys.readouterr().err)
    assert "settlements.v1.jsonl" in line
    assert "ComputeVaR" in line and "MonitorMargins" in line
    assert "--allow-missing-topics" in line
    assert snapshot(earlier) == before

    # Allowed: it runs, says which stages it skipped, and replaces the earlier results whole.
    assert main(run_args(prices_only, earlier, "--allow-missing-topics")) == 0
    stdout = capsys.readouterr().out
    assert "stage ComputeVaR skipped: no input file for settlements.v1" in stdout
    assert "stage MonitorMargins skipped: no input file for settlements.v1" in stdout
    after = snapshot(earlier)
    assert "tables/prices/part-earlier.parquet" not in after  # the earlier fake
    assert any(k.startswith("tables/prices/") for k in after)
    assert "alerts/alerts.margin.v1.jsonl" not in after  # no margin stage ran this time
    report = json.loads(after["run_report.json"])
    assert report["topics"] == {"market.prices.v1": {"in": 12, "out": 12, "dead_letter": 0}}
    assert report["skipped_stages"] == {
        "ComputeVaR": ["settlements.v1"],
        "MonitorMargins": ["settlements.v1"],
    }
    assert not [p for p in earlier.iterdir() if p.name.startswith(".")]  # no staging left


def skipped(pipeline: str, found: list[str]) -> dict[str, list[str]]:
    return stages_without_inputs(stages_for(pipeline), found)


def test_which_stages_a_missing_topic_skips():
    # As build() wires them: a stage needs its inputs, and the streams of the stages it reads.
    assert skipped("risk", ["market.prices.v1", "settlements.v1"]) == {}
    assert skipped("all", ["settlements.v1", "transfers.v1"]) == {
        "ValidatePrices": ["market.prices.v1"],
        "CompositePrices": ["market.prices.v1"],
        "ComputeVaR": ["market.prices.v1"],
        "MonitorMargins": ["market.prices.v1"],
        "DetectRugPulls": ["liquidity.v1", "dex.trades.v1"],
        "DetectWashTrades": ["dex.trades.v1"],
    }
    # MonitorAml reads profiles when there are some (Stage.optional): never needed.
    assert skipped("compliance", ["transfers.v1"]) == {}


# ------------------------------------------------------------------------- 3: internal error
def test_an_internal_failure_exits_3_in_one_line_and_keeps_earlier_results(
    prices_only, earlier, capsys, monkeypatch
):
    def boom(self, *args, **kwargs):
        raise RuntimeError("the runner broke\nwith a second line")

    monkeypatch.setattr(beam.Pipeline, "run", boom)
    before = snapshot(earlier)
    assert main(run_args(prices_only, earlier, "--allow-missing-topics")) == 3
    line = one_line(capsys.readouterr().err)
    assert line == (
        "defi-risk: internal error: RuntimeError: the runner broke | with a second line "
        "(run with --verbose for the traceback)"
    )
    # The run had started: the earlier tables and alerts stay, the earlier report is gone (it
    # would read as this run's verdict), and so is the staging directory.
    after = snapshot(earlier)
    assert after == {k: v for k, v in before.items() if k != "run_report.json"}
    assert not [p for p in earlier.iterdir() if p.name.startswith(".")]

    # --verbose, after the command too, adds the traceback.
    assert main(run_args(prices_only, earlier, "--allow-missing-topics", "--verbose")) == 3
    err = capsys.readouterr().err
    assert err.startswith("defi-risk: internal error: RuntimeError: the runner broke")
    assert "Traceback (most recent call last)" in err


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (InputError("input directory x does not exist"), 2, "input directory x does not exist"),
        (OptionsError(["--var_level=2: must be"]), 2, "invalid pipeline options: --var_level=2"),
        (FileNotFoundError(2, "No such file or directory", "/x/y"), 2, "No such file or"),
        (NotADirectoryError(20, "Not a directory", "/x"), 2, "Not a directory: /x"),
        (PermissionError(13, "Permission denied", "/out"), 2, "Permission denied: /out"),
        (ValueError("a bug"), 3, "internal error: ValueError: a bug (run with --verbose"),
        (KeyError("k"), 3, "internal error: KeyError: 'k'"),
    ],
)
def test_one_handler_maps_every_failure_to_its_exit_code(
    error, code, message, prices_only, tmp_path, capsys, monkeypatch
):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(local_run, "run_local", fail)
    assert main(run_args(prices_only, tmp_path / "out")) == code
    assert message in one_line(capsys.readouterr().err)


# ------------------------------------------------------------------------ 1: unbalanced books
def test_unbalanced_books_exit_1_and_say_so(prices_only, earlier, capsys, monkeypatch):
    def short(result, report, paths):
        report.topics = {"market.prices.v1": {"in": 12, "out": 10, "dead_letter": 1}}

    monkeypatch.setattr(local_run, "_collect_metrics", short)
    assert main(run_args(prices_only, earlier, "--allow-missing-topics")) == 1
    captured = capsys.readouterr()
    assert "MISMATCH" in captured.out
    line = one_line(captured.err)
    assert line.startswith("defi-risk: the books do not balance")
    assert "market.prices.v1" in line
    report = json.loads((earlier / "run_report.json").read_text())
    assert report["topics"]["market.prices.v1"] == {"in": 12, "out": 10, "dead_letter": 1}


# ---------------------------------------------------------------------------------- the docs
def test_help_documents_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "exit codes:" in text
    for code in ("0  success", "1  ", "2  usage or input error", "3  internal error"):
        assert code in text
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--allow-missing-topics" in capsys.readouterr().out


def test_readme_documents_the_exit_codes():
    text = (ROOT / "README.md").read_text()
    assert "Exit codes" in text
    for code in ("`0`", "`1`", "`2`", "`3`"):
        assert code in text
