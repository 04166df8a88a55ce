"""The production job and its deployment, built offline: same step labels as the local graph,
BigQuery converters, the flex template files and the gcloud command sequence.

    pytest tests/runners/dataflow/test_job.py
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from types import SimpleNamespace

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.graph import build, topics_for
from runners.dataflow import deploy
from runners.dataflow.job import ProductionOptions, build_production
from runners.direct import local_pipeline_options
from runners.io.bigquery import bigquery_row
from schemas.codegen import SCHEMA_DIR
from schemas.registry import TABLES
from schemas.tables import ComplianceScreeningRow, PriceRow, ProtocolRiskAssessmentRow
from tests.support.factories import step_labels

PROD_EDGES = ("ReadPubSub_", "ToBigQueryRow_", "WriteBigQuery_", "CountFailedRows_",
              "ToAlertMessage_", "WritePubSub_")  # fmt: skip
LOCAL_EDGES = ("Read[",)


def production(method: str, pipeline: str = "all") -> tuple[beam.Pipeline, dict]:
    opts = PipelineOptions(
        [
            "--project=demo-project",
            "--streaming",
            f"--bq_write_method={method}",
            f"--pipeline={pipeline}",
        ]  # fmt: skip
    )
    p = beam.Pipeline(options=opts)
    return p, build_production(p, opts)


@pytest.mark.parametrize("method", ["STREAMING_INSERTS", "FILE_LOADS"])
def test_production_graph_has_the_local_graphs_step_labels(method):
    prod, outputs = production(method)
    opts = local_pipeline_options(streaming=True, extra_args=["--pipeline=all"])
    local = beam.Pipeline(options=opts)
    sources = {t: local | f"Read[{t}]" >> beam.Create([]) for t in topics_for("all")}
    build(local, opts, sources)
    assert step_labels(prod, PROD_EDGES) == step_labels(local, LOCAL_EDGES)
    for stage in ("SanctionsJoin", "MonitorMargins", "ComputeVaR", "DetectWashTrades"):
        assert stage in step_labels(prod, PROD_EDGES)
    # every table gets a BigQuery write, every alert topic a Pub/Sub write
    all_labels = {t.full_label for t in prod.transforms_stack[0].parts}
    for table in TABLES:
        if table in outputs:
            assert f"WriteBigQuery_{table}" in all_labels
    assert "WritePubSub_alerts.compliance.v1" in all_labels


def test_production_reads_pubsub_with_id_label_and_event_time():
    p, _ = production("STREAMING_INSERTS", pipeline="compliance")
    reads = [t for t in p.transforms_stack[0].parts if t.full_label.startswith("ReadPubSub_")]
    assert {t.full_label for t in reads} == {
        "ReadPubSub_transfers.v1",
        "ReadPubSub_accounts.profiles.v1",
    }
    for t in reads:
        source = t.transform._source  # Beam keeps the read's settings on its source
        assert source.id_label == "event_id"
        assert source.timestamp_attribute == "ts"
        assert source.full_subscription.startswith("projects/demo-project/subscriptions/")


def test_production_refuses_batch_and_a_missing_project():
    with pytest.raises(ValueError, match="--streaming"):
        opts = PipelineOptions(["--project=demo-project"])
        build_production(beam.Pipeline(options=opts), opts)
    with pytest.raises(ValueError, match="--project"):
        opts = PipelineOptions(["--streaming"])
        build_production(beam.Pipeline(options=opts), opts)


def test_write_method_defaults():
    opts = PipelineOptions([]).view_as(ProductionOptions)
    assert opts.write_method(streaming=True) == "STORAGE_WRITE_API"
    assert opts.write_method(streaming=False) == "FILE_LOADS"


def test_bigquery_row_converts_numeric_timestamp_json_and_records():
    t = datetime(2025, 1, 6, 12, 0, 1, 250000, tzinfo=UTC)
    price = PriceRow.model_validate(
        {**_price_fields(), "price": Decimal("12345.123456789"), "event_time": t}
    )
    row = bigquery_row("prices", price)
    assert row["price"] == "12345.123456789"  # a decimal string, never a float
    assert row["event_time"] == "2025-01-06 12:00:01.250000 UTC"
    assert list(row) == [f["name"] for f in _schema("prices")]
    screening = ComplianceScreeningRow(
        screening_id="s", address="0xabc", chain_id="eip155:1", screening_type="exposure",
        screening_result="flagged", risk_score=50.0, hop_distance=2,
        evidence=json.dumps({"path": ["a", "b", "c"]}), screened_at=t,
    )  # fmt: skip
    assert (
        bigquery_row("compliance_screenings", screening)["evidence"] == '{"path": ["a", "b", "c"]}'
    )
    assert bigquery_row("compliance_screenings", screening, "FILE_LOADS")["evidence"] == {
        "path": ["a", "b", "c"]
    }
    assessment = ProtocolRiskAssessmentRow.model_validate(
        {
            "assessment_id": "a",
            "protocol_name": "Aave V3",
            "chain_id": "eip155:1",
            "overall_risk_score": 30.0,
            "risk_level": "low",
            "risk_factors": [{"factor": "audit", "score": 10.0, "weight": 0.5, "details": None}],
            "tvl_usd": Decimal("1000000.5"),
            "methodology_version": "v1",
            "assessed_at": t,
        }  # fmt: skip
    )
    out = bigquery_row("protocol_risk_assessments", assessment)
    assert out["risk_factors"] == [
        {"factor": "audit", "score": 10.0, "weight": 0.5, "details": None}
    ]
    assert out["tvl_usd"] == "1000000.5"


def _schema(table: str) -> list[dict]:
    return json.loads((SCHEMA_DIR / "bigquery" / f"{table}.json").read_text())


def _price_fields() -> dict:
    return {
        "price_id": "p1", "asset": "ETH", "status": "ok", "n_sources": 2,
        "sources": ["chainlink", "pyth"], "sources_set_aside": [],
        "window_start": datetime(2025, 1, 6, 12, 0, tzinfo=UTC),
    }  # fmt: skip


# ------------------------------------------------------------------------------ deployment
def test_template_files_are_fresh():
    for path, text in deploy.rendered_template_files().items():
        if path.name == "requirements.txt":
            continue  # pinned where generated; checked below against pyproject instead
        assert path.read_text() == text, f"{path} is stale: defi-risk deploy --write-template-files"


def test_metadata_lists_every_pipeline_option_with_help():
    meta = json.loads((deploy.TEMPLATE_DIR / "metadata.json").read_text())
    names = {p["name"] for p in meta["parameters"]}
    for option in ("pipeline", "sanctions_store", "sanctions_poll_minutes", "policy",
                   "bq_write_method", "bq_dataset", "margin_shards", "var_level"):  # fmt: skip
        assert option in names
    assert all(p["helpText"] for p in meta["parameters"])
    method = next(p for p in meta["parameters"] if p["name"] == "bq_write_method")
    assert method["regexes"] == ["^(STORAGE_WRITE_API|STREAMING_INSERTS|FILE_LOADS)$"]


def test_requirements_lock_pins_every_runtime_dependency_and_the_beam_of_the_image():
    import tomllib

    from packaging.requirements import Requirement

    lock = (deploy.TEMPLATE_DIR / "requirements.txt").read_text().splitlines()
    pins = dict(line.split("==") for line in lock if line and not line.startswith("#"))
    deps = tomllib.loads((deploy.ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for dep in deps:
        req = Requirement(dep)
        name = req.name.lower()
        assert name in pins, name
        assert req.specifier.contains(pins[name]), (name, pins[name])
    assert pins["apache-beam"] == deploy.BEAM_VERSION
    dockerfile = (deploy.TEMPLATE_DIR / "Dockerfile").read_text()
    assert f"apache/beam_python3.11_sdk:{deploy.BEAM_VERSION}" in dockerfile
    assert "python_template_launcher" in dockerfile
    assert "FLEX_TEMPLATE_PYTHON_PY_FILE=${WORKDIR}/runners/dataflow/job.py" in dockerfile


def _args(**kw):
    base = dict(
        project="demo-project", region="europe-west1", template_bucket="demo-templates",
        repository="defi-risk", tag="v7", job_name="defi-risk-all", pipeline="all",
        dataset="risk", service_account=None, sanctions_store=None, sanctions_poll_minutes=60.0,
        update=False, transform_name_mapping=[], drain=None, dry_run=True,
        write_template_files=False,
    )  # fmt: skip
    base.update(kw)
    return SimpleNamespace(**base)


def test_deploy_prints_build_template_and_run():
    build_cmd, template, run = deploy.commands(_args(service_account="w@demo-project.iam"))
    image = "europe-west1-docker.pkg.dev/demo-project/defi-risk/defi-risk-pipeline:v7"
    assert build_cmd[:4] == ["gcloud", "builds", "submit", "."]
    assert f"--substitutions=_IMAGE={image}" in build_cmd
    spec = "gs://demo-templates/templates/defi-risk-pipeline-v7.json"
    assert template[:5] == ["gcloud", "dataflow", "flex-template", "build", spec]
    assert f"--image={image}" in template and "--sdk-language=PYTHON" in template
    assert run[:5] == ["gcloud", "dataflow", "flex-template", "run", "defi-risk-all"]
    assert f"--template-file-gcs-location={spec}" in run
    params = next(a for a in run if a.startswith("--parameters="))
    assert f"sdk_container_image={image}" in params and "pipeline=all" in params
    assert "--service-account-email=w@demo-project.iam" in run and "--update" not in run


def test_deploy_update_carries_the_transform_name_mapping_and_drain_is_one_command():
    *_, run = deploy.commands(_args(update=True, transform_name_mapping=["OldStep=NewStep"]))
    assert "--update" in run
    assert '--transform-name-mappings={"OldStep":"NewStep"}' in run
    with pytest.raises(SystemExit):
        deploy.commands(_args(transform_name_mapping=["A=B"]))
    assert deploy.commands(_args(drain="2025-01-01_00_00_00-123")) == [
        [
            "gcloud",
            "dataflow",
            "jobs",
            "drain",
            "2025-01-01_00_00_00-123",
            "--region=europe-west1",
            "--project=demo-project",
        ]  # fmt: skip
    ]


def test_deploy_cli_dry_run_and_missing_arguments(capsys):
    from runners.cli import main

    assert main(["deploy", "--project", "p1", "--region", "r1", "--template-bucket", "b1",
                 "--dry-run"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert out.count("gcloud ") == 3
    assert main(["deploy", "--project", "p1", "--dry-run"]) == 2
    assert "--region" in capsys.readouterr().err
