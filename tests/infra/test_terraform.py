"""Static checks of infra/terraform (no terraform binary, no GCP credentials).

python-hcl2 parses every .tf file; the checks compare the parsed configuration with the contracts
in schemas/ (tables, topics, Avro and BigQuery schema files) and runners/live/emulator.py (names of
subscriptions and dead-letter topics), then checkov runs over the whole tree from its own venv
(`make .venv-checkov`).
"""

from __future__ import annotations

import json
import re
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import hcl2
import pytest

from runners.dataflow.deploy import template_parameters
from schemas.codegen import PARTITION_EXPIRATION_DAYS
from schemas.registry import ALERT_TOPICS, DATASET, INPUT_TOPICS, TABLES, TOPICS, avro_name
from schemas.topics import DEAD_LETTER_SUFFIX, MAX_DELIVERY_ATTEMPTS, SUBSCRIPTION_SUFFIX
from tests.support.paths import ROOT

TF_ROOT = ROOT / "infra" / "terraform"
MODULES = TF_ROOT / "modules"
ENVS = ("dev", "prod")
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
MV_SQL = ROOT / "sql" / "views" / "risk" / "recent_portfolio_exposures_mv.sql"
PRIMITIVE_ROLES = {"roles/owner", "roles/editor", "roles/viewer"}
TF_FILES = sorted(TF_ROOT.rglob("*.tf"))


# ------------------------------------------------------------------------------- parsing
def _unquote(value: Any) -> Any:
    """python-hcl2 >= 6 keeps the quotes of string literals and block labels; older ones do not."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _normalise(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            _unquote(k): _normalise(v)
            for k, v in node.items()
            if k not in ("__is_block__", "__comments__", "__inline_comments__")
        }
    if isinstance(node, list):
        return [_normalise(v) for v in node]
    return _unquote(node)


@cache
def parsed(path: Path) -> dict:
    with path.open() as f:
        return _normalise(hcl2.load(f))


def module_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.tf"))


def blocks(directory: Path, kind: str) -> list[dict]:
    """Every top-level block of one kind (resource, variable, locals, ...) of a module."""
    return [b for path in module_files(directory) for b in parsed(path).get(kind, [])]


def resources(directory: Path, rtype: str | None = None) -> dict[tuple[str, str], dict]:
    """(type, name) -> body of every resource of a module."""
    found = {}
    for block in blocks(directory, "resource"):
        for t, named in block.items():
            for name, body in named.items():
                if rtype is None or t == rtype:
                    found[(t, name)] = body
    return found


def module_calls(directory: Path) -> dict[str, dict]:
    return {name: body for block in blocks(directory, "module") for name, body in block.items()}


def locals_of(directory: Path) -> dict:
    merged: dict = {}
    for block in blocks(directory, "locals"):
        merged.update(block)
    return merged


def variables(directory: Path) -> dict[str, dict]:
    return {name: body for block in blocks(directory, "variable") for name, body in block.items()}


def outputs(directory: Path) -> dict[str, dict]:
    return {name: body for block in blocks(directory, "output") for name, body in block.items()}


def var_default(directory: Path, expr: str) -> Any:
    """The default of ``${var.x}``; a literal stays itself."""
    m = re.fullmatch(r"\$\{var\.(\w+)\}", str(expr))
    return variables(directory)[m.group(1)]["default"] if m else expr


def one(body: dict, key: str) -> dict:
    """A nested block (python-hcl2 gives a list of one dict per occurrence)."""
    value = body[key]
    assert isinstance(value, list) and len(value) == 1, f"expected one {key} block"
    return value[0]


def file_arguments(expr: str) -> list[str]:
    """The path templates of the file() calls of an expression (quotes nest inside ${...})."""
    found = []
    for m in re.finditer(r'file\("', expr):
        depth, i = 0, m.end()
        while i < len(expr) and not (expr[i] == '"' and depth == 0):
            if expr.startswith("${", i):
                depth, i = depth + 1, i + 1
            elif expr[i] == "}" and depth:
                depth -= 1
            i += 1
        found.append(expr[m.end() : i])
    return found


def resolve_path(template: str, directory: Path, key: str | None = None) -> Path:
    """Evaluates the few interpolations the modules use in file() paths."""
    local_values = locals_of(directory)

    def local(m: re.Match) -> str:
        return _unquote(local_values[m.group(1)])

    text = re.sub(r"\$\{local\.(\w+)\}", local, template)
    text = text.replace("${path.module}", str(directory))
    if key is not None:
        text = text.replace('${replace(each.key, \\".\\", \\"_\\")}', avro_name(key))
        text = text.replace('${replace(each.key, ".", "_")}', avro_name(key))
        text = text.replace("${each.key}", key)
    assert "${" not in text, f"cannot evaluate {template!r}"
    return Path(text).resolve()


def hcl_literal(value: Any) -> Any:
    """Numbers and booleans of python-hcl2 (native, or as text in some versions)."""
    if isinstance(value, str):
        if value in ("true", "false"):
            return value == "true"
        if value == "null":
            return None
        if re.fullmatch(r"-?\d+", value):
            return int(value)
    return value


# ----------------------------------------------------------------------------------- layout
def test_layout():
    expected = {"bigquery_risk", "pubsub", "storage", "dataflow", "iam", "monitoring"}
    assert expected <= {p.name for p in MODULES.iterdir() if p.is_dir()}
    for env in ENVS:
        assert (TF_ROOT / "envs" / env / "versions.tf").is_file()
    assert (MODULES / "bigquery_risk" / "materialized_views.tf").is_file()
    assert (MODULES / "bigquery_risk" / "views.tf").is_file()


@pytest.mark.parametrize("path", TF_FILES, ids=lambda p: str(p.relative_to(TF_ROOT)))
def test_every_tf_file_parses(path):
    assert isinstance(parsed(path), dict)


def test_every_variable_and_output_has_a_description():
    for directory in sorted({p.parent for p in TF_FILES}):
        for name, body in {**variables(directory), **outputs(directory)}.items():
            assert str(body.get("description", "")).strip(), (
                f"{directory}: {name} has no description"
            )


# --------------------------------------------------------------------------------- BigQuery
BQ = MODULES / "bigquery_risk"


def table_schema_files() -> dict[str, Path]:
    """Table id -> the schemas/bigquery file its google_bigquery_table reads."""
    found = {}
    tables = locals_of(BQ).get("tables", {})
    for (_, name), body in resources(BQ, "google_bigquery_table").items():
        if "materialized_view" in body or "view" in body:
            continue
        args = file_arguments(body["schema"])
        assert len(args) == 1, f"google_bigquery_table.{name} must read its schema with file()"
        if body.get("for_each") == "${local.tables}":
            for table in tables:
                found[table] = resolve_path(args[0], BQ, table)
        else:
            found[_unquote(body["table_id"])] = resolve_path(args[0], BQ)
    return found


def test_every_bigquery_schema_file_has_a_table_that_reads_it():
    schema_dir = ROOT / "schemas" / "bigquery"
    files = {p.stem for p in schema_dir.glob("*.json")}
    assert files == set(TABLES)
    read = table_schema_files()
    assert set(read) == set(TABLES)
    for table, path in read.items():
        assert path == (schema_dir / f"{table}.json").resolve(), (table, path)
        assert path.is_file()


def test_dataset_is_risk():
    assert var_default(BQ, "${var.dataset_id}") == DATASET
    (body,) = resources(BQ, "google_bigquery_dataset").values()
    assert body["dataset_id"] == "${var.dataset_id}"


def ddl_partition_and_clustering(table: str) -> tuple[str, list[str]]:
    ddl = (ROOT / "sql" / "ddl" / f"{table}.sql").read_text()
    partition = re.search(r"PARTITION BY DATE\((\w+)\)", ddl).group(1)
    cluster = re.search(r"CLUSTER BY ([\w, ]+)", ddl).group(1)
    return partition, [c.strip() for c in cluster.split(",")]


def test_tables_are_partitioned_and_clustered_as_the_registry_says():
    tables = locals_of(BQ)["tables"]
    assert set(tables) == set(TABLES)
    for table, model in TABLES.items():
        spec = tables[table]
        assert spec["partition_field"] == model.event_time_field, table
        assert spec["clustering"] == list(model.key_fields[:4]), table
        assert ddl_partition_and_clustering(table) == (
            spec["partition_field"],
            spec["clustering"],
        )
        assert hcl_literal(spec["partition_expiration_days"]) == PARTITION_EXPIRATION_DAYS.get(
            table
        ), table
        assert spec["description"] == model.doc, table
    body = resources(BQ, "google_bigquery_table")[("google_bigquery_table", "table")]
    partitioning = one(body, "time_partitioning")
    assert partitioning["type"] == "DAY"
    assert partitioning["field"] == "${each.value.partition_field}"
    assert "partition_expiration_days" in partitioning["expiration_ms"]
    assert body["clustering"] == "${each.value.clustering}"
    assert body["deletion_protection"] == "${var.deletion_protection}"


def test_only_dead_letter_expires_partitions():
    tables = locals_of(BQ)["tables"]
    expiring = {t for t, spec in tables.items() if hcl_literal(spec["partition_expiration_days"])}
    assert expiring == {"dead_letter"}
    assert hcl_literal(tables["dead_letter"]["partition_expiration_days"]) == 90


def test_materialized_view_reads_its_sql_file():
    body = resources(BQ)[("google_bigquery_table", "recent_portfolio_exposures_mv")]
    mv = one(body, "materialized_view")
    assert hcl_literal(mv["enable_refresh"]) is True
    assert hcl_literal(mv["refresh_interval_ms"]) == 60000
    local_name = re.fullmatch(r"\$\{local\.(\w+)\}", mv["query"]).group(1)
    query_expr = locals_of(BQ)[local_name]
    ddl_local = re.search(r"local\.(\w+)", query_expr).group(1)
    (path,) = file_arguments(locals_of(BQ)[ddl_local])
    assert resolve_path(path, BQ) == MV_SQL.resolve()


def hcl_regexes(expr: str) -> list[str]:
    """The patterns of the regex() / replace(..., "/re/", ...) calls of an expression, unescaped."""
    return [p.replace("\\\\", "\\") for p in re.findall(r'"((?:\(\?|/)(?:[^"\\]|\\.)*)"', expr)]


def test_materialized_view_query_is_the_select_of_the_sql_file():
    if not MV_SQL.is_file():
        pytest.skip(
            f"{MV_SQL.relative_to(ROOT)} does not exist yet (written with the SQL views); "
            "Terraform's file() needs it before `terraform plan`"
        )
    locs = locals_of(BQ)
    (strip,) = hcl_regexes(locs["recent_portfolio_exposures_ddl"])
    ddl = re.sub(strip.strip("/"), "", MV_SQL.read_text())
    (query_re,) = hcl_regexes(locs["recent_portfolio_exposures_query"])
    m = re.search(query_re, ddl)
    assert m, (
        f"materialized_views.tf finds no CREATE MATERIALIZED VIEW ... AS SELECT in {MV_SQL.name}"
    )
    query = m.group(1).strip().removesuffix(";")
    assert re.match(r"(?i)(WITH|SELECT)\b", query)
    assert "MATERIALIZED VIEW" not in query.upper()
    (header_re,) = hcl_regexes(locs["recent_portfolio_exposures_header"])
    header = re.search(header_re, ddl).group(1)
    if re.search(r"(?i)PARTITION\s+BY", header):
        (partition_re,) = hcl_regexes(locs["recent_portfolio_exposures_partition"])
        assert re.search(partition_re, header), "PARTITION BY of the view is not read"


# ------------------------------------------------------------------------------ plain views
VIEWS_DIR = ROOT / "sql" / "views"
VIEW_RESOURCES = ("view", "view_on_view")


def hcl_call_patterns(expr: str, function: str) -> list[str]:
    """The first (string literal) argument of every ``function("...", ...)`` call, unescaped."""
    found = re.findall(rf'\b{function}\("((?:[^"\\]|\\.)*)"', expr)
    return [p.replace("\\\\", "\\") for p in found]


@cache
def views_tf_selection() -> dict[str, dict]:
    """views.tf's local.views evaluated in Python: stem -> {path, name, query, reads}.

    Every pattern (fileset glob, comment strip, materialized-view exclusion, name/query regex,
    references regex) is read from the .tf, so the evaluation follows the file; the structure
    around them (which result is the key, which group the name, the trailing-`;` trim) is asserted
    on the expression text.
    """
    locs = locals_of(BQ)
    views_dir = resolve_path(locs["views_dir"], BQ)
    assert views_dir == VIEWS_DIR.resolve()
    view_sql = locs["view_sql"]
    (glob,) = re.findall(r'fileset\(local\.views_dir, "([^"]+)"\)', view_sql)
    assert 'file("${local.views_dir}/${f}")' in view_sql
    strips = hcl_regexes(view_sql)
    assert len(strips) == 1, "views.tf must drop the -- comments with one replace(..., /re/, ...)"
    (strip,) = strips
    assert strip.startswith("/") and strip.endswith("/"), strip
    views = locs["views"]
    assert 'for f, sql in local.view_sql : trimsuffix(basename(f), ".sql") =>' in views
    query_res = hcl_call_patterns(views, "regex")
    assert len(query_res) == 2 and query_res[0] == query_res[1], query_res
    (exclude,) = hcl_call_patterns(views, "regexall")
    assert re.search(r"\bif length\(regexall\(\"[^\n]*\", sql\)\) == 0\}\}$", views), views
    assert re.search(r"name = regex\([^\n]*, sql\)\[0\]", views)
    assert re.search(r"trimsuffix\(trimspace\(regex\([^\n]*, sql\)\[1\]\), \";\"\)", views)
    (reads_re,) = hcl_call_patterns(locs["view_reads"], "regexall")
    assert "view.query) : ref[0]" in locs["view_reads"]

    selected: dict[str, dict] = {}
    for path in sorted(VIEWS_DIR.glob(glob)):
        sql = re.sub(strip[1:-1], "", path.read_text())
        if re.search(exclude, sql):
            continue
        m = re.search(query_res[0], sql)
        assert m, f"views.tf's regex finds no CREATE VIEW ... AS SELECT in {path}"
        assert path.stem not in selected, f"two view files named {path.stem}"
        query = m.group(2).strip().removesuffix(";").strip()
        selected[path.stem] = {
            "path": path.relative_to(VIEWS_DIR).as_posix(),
            "name": m.group(1),
            "query": query,
            "reads": set(re.findall(reads_re, query)),
        }
    return selected


def views_on_views(selection: dict[str, dict]) -> set[str]:
    """local.views_on_views: the views that read another selected view."""
    expr = locals_of(BQ)["views_on_views"]
    assert "if length(setintersection(reads, toset(keys(local.views)))) > 0" in expr
    return {name for name, view in selection.items() if view["reads"] & set(selection)}


def test_every_plain_view_file_has_a_view_resource():
    from runners.local.warehouse import read_view, view_files

    selection = views_tf_selection()
    files = view_files(ROOT / "sql")
    assert {p.resolve() for p in files} == {p.resolve() for p in VIEWS_DIR.rglob("*.sql")}
    # The files the warehouse (sqlglot) reads as plain views, independently of views.tf's regexes.
    plain = {p.stem: p for p in files if not read_view(p).materialized}
    assert set(selection) == set(plain)
    assert len(plain) == len(files) - 1 and MV_SQL.stem not in selection
    for stem, view in selection.items():
        assert VIEWS_DIR / view["path"] == plain[stem]
        assert view["name"] == f"{DATASET}.{stem}", (stem, view["name"])  # the precondition
    on_views = views_on_views(selection)
    assert "open_margin_calls" in on_views  # reads risk.latest_margin_health
    assert "recent_portfolio_exposures" not in on_views  # reads the materialized view only

    res = resources(BQ, "google_bigquery_table")
    bodies = {name: res[("google_bigquery_table", name)] for name in VIEW_RESOURCES}
    assert bodies["view"]["for_each"] == (
        "${{for name, view in local.views : name => view if !contains(local.views_on_views, name)}}"
    )
    assert bodies["view_on_view"]["for_each"] == (
        "${{for name, view in local.views : name => view if contains(local.views_on_views, name)}}"
    )
    instances = {"view": set(selection) - on_views, "view_on_view": on_views}
    # Two levels only: a view on a view reads no other view on a view (its second precondition).
    for name in on_views:
        assert not selection[name]["reads"] & on_views, name
    for rname, body in bodies.items():
        assert body["table_id"] == "${each.key}"
        assert body["dataset_id"] == "${google_bigquery_dataset.risk.dataset_id}"
        assert body["deletion_protection"] == "${var.deletion_protection}"
        view = one(body, "view")
        assert view["query"] == "${each.value.query}"
        assert hcl_literal(view["use_legacy_sql"]) is False
        assert "materialized_view" not in body and "schema" not in body
        depends = set(body["depends_on"])
        assert {
            "${google_bigquery_table.table}",
            "${google_bigquery_table.recent_portfolio_exposures_mv}",
        } <= depends, rname
        conditions = [p["condition"] for p in one(body, "lifecycle")["precondition"]]
        assert '${each.value.name == "${var.dataset_id}.${each.key}"}' in conditions
        assert instances[rname], f"google_bigquery_table.{rname} creates no view"
    assert "${google_bigquery_table.view}" in bodies["view_on_view"]["depends_on"]
    # The tables' deletion protection, and a view is not mistaken for a table.
    assert res[("google_bigquery_table", "table")]["deletion_protection"] == (
        "${var.deletion_protection}"
    )
    assert "view_ids" in outputs(BQ)


def test_every_view_query_extracted_by_views_tf_is_the_files_select():
    import sqlglot
    from sqlglot import exp

    selection = views_tf_selection()
    assert selection
    for stem, view in selection.items():
        query = view["query"]
        assert "--" not in query and not query.rstrip().endswith(";"), stem
        parsed_query = sqlglot.parse_one(
            query, read="bigquery", error_level=sqlglot.ErrorLevel.RAISE
        )
        assert isinstance(parsed_query, exp.Query), (stem, type(parsed_query))
        assert re.match(r"(?i)(WITH|SELECT)\b", query), stem
        # The same query as the CREATE VIEW statement of the file, parsed as a whole.
        (statement,) = sqlglot.parse(
            (VIEWS_DIR / view["path"]).read_text(),
            read="bigquery",
            error_level=sqlglot.ErrorLevel.RAISE,
        )
        assert isinstance(statement, exp.Create) and statement.kind == "VIEW", stem
        assert statement.expression == parsed_query, stem
        # What the query reads, by views.tf's regex and by sqlglot, agree.
        tables = {t.name for t in parsed_query.find_all(exp.Table) if t.db == DATASET}
        assert view["reads"] == tables, (stem, view["reads"], tables)


def test_sqlglot_raise_level_rejects_a_broken_view_query():
    # The check above means something only if sqlglot raises on a broken query.
    import sqlglot
    from sqlglot.errors import ParseError

    with pytest.raises(ParseError):
        sqlglot.parse_one(
            "SELECT a FROM risk.t WHERE (", read="bigquery", error_level=sqlglot.ErrorLevel.RAISE
        )


def test_terraform_evaluates_the_views_locals_as_the_test_does(tmp_path):
    """With a terraform binary on the PATH: its own evaluation of views.tf's locals agrees."""
    import shutil

    terraform = shutil.which("terraform")
    if terraform is None:
        pytest.skip("no terraform binary on the PATH; the Python evaluation above stands alone")
    module = tmp_path / "infra" / "terraform" / "modules" / "bigquery_risk"
    module.mkdir(parents=True)
    (tmp_path / "sql").symlink_to(ROOT / "sql", target_is_directory=True)
    source = (BQ / "views.tf").read_text()
    only_locals = source[: source.index("\nresource ")]
    (module / "locals.tf").write_text(
        only_locals
        + '\noutput "views" {\n  value = local.views\n}\n'
        + 'output "views_on_views" {\n  value = local.views_on_views\n}\n'
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "TF_IN_AUTOMATION": "1",
        "HOME": str(tmp_path),
        "CHECKPOINT_DISABLE": "1",
    }
    for cmd in (["init", "-input=false"], ["apply", "-auto-approve", "-input=false"]):
        done = subprocess.run(
            [terraform, *cmd, "-no-color"],
            cwd=module,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    done = subprocess.run(
        [terraform, "output", "-json"],
        cwd=module,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    selection = views_tf_selection()
    got = out["views"]["value"]
    assert set(got) == set(selection)
    for stem, view in selection.items():
        assert got[stem] == {k: view[k] for k in ("path", "name", "query")}, stem
    assert set(out["views_on_views"]["value"]) == views_on_views(selection)


# ---------------------------------------------------------------------------------- Pub/Sub
PUBSUB = MODULES / "pubsub"


def pubsub_topics() -> tuple[list[str], list[str]]:
    inputs = var_default(PUBSUB, "${var.input_topics}")
    alerts = var_default(PUBSUB, "${var.alert_topics}")
    return inputs, alerts


def expand(name_expr: str, keys) -> set[str]:
    return {name_expr.replace("${each.key}", k) for k in keys}


def test_pubsub_topics_are_the_registry_topics():
    inputs, alerts = pubsub_topics()
    assert tuple(inputs) == INPUT_TOPICS
    assert tuple(alerts) == ALERT_TOPICS
    assert set(inputs) | set(alerts) == set(TOPICS)
    assert locals_of(PUBSUB)["topics"] == "${toset(concat(var.input_topics, var.alert_topics))}"


def test_every_topic_has_an_avro_schema_read_from_schemas_avro():
    (body,) = resources(PUBSUB, "google_pubsub_schema").values()
    assert body["for_each"] == "${local.topics}"
    assert body["type"] == "AVRO"
    (path,) = file_arguments(body["definition"])
    for topic in TOPICS:
        expected = ROOT / "schemas" / "avro" / f"{avro_name(topic)}.avsc"
        assert resolve_path(path, PUBSUB, topic) == expected.resolve()
        assert expected.is_file()
    topic = resources(PUBSUB)[("google_pubsub_topic", "topic")]
    assert topic["for_each"] == "${local.topics}"
    settings = one(topic, "schema_settings")
    assert settings["encoding"] == "BINARY"
    assert settings["schema"] == "${google_pubsub_schema.topic[each.key].id}"
    assert topic["message_retention_duration"]


def test_every_topic_has_a_dead_letter_topic_and_subscription():
    res = resources(PUBSUB)
    dead = res[("google_pubsub_topic", "dead_letter")]
    assert dead["for_each"] == "${local.topics}"
    assert expand(dead["name"], TOPICS) == {t + DEAD_LETTER_SUFFIX for t in TOPICS}
    dead_sub = res[("google_pubsub_subscription", "dead_letter")]
    assert dead_sub["for_each"] == "${local.topics}"
    assert dead_sub["topic"] == "${google_pubsub_topic.dead_letter[each.key].id}"
    assert expand(dead_sub["name"], TOPICS) == {
        t + DEAD_LETTER_SUFFIX + SUBSCRIPTION_SUFFIX for t in TOPICS
    }


def test_input_subscriptions_have_a_dead_letter_policy():
    sub = resources(PUBSUB)[("google_pubsub_subscription", "topic")]
    assert sub["for_each"] == "${local.topics}"  # input and alert topics
    assert expand(sub["name"], INPUT_TOPICS) == {t + SUBSCRIPTION_SUFFIX for t in INPUT_TOPICS}
    policy = one(sub, "dead_letter_policy")
    assert policy["dead_letter_topic"] == "${google_pubsub_topic.dead_letter[each.key].id}"
    attempts = hcl_literal(var_default(PUBSUB, policy["max_delivery_attempts"]))
    assert attempts == MAX_DELIVERY_ATTEMPTS == 5
    assert sub["message_retention_duration"]
    assert sub["ack_deadline_seconds"]
    retention = var_default(PUBSUB, sub["message_retention_duration"])
    assert re.fullmatch(r"\d+s", retention) and int(retention[:-1]) <= 7 * 24 * 3600


# ---------------------------------------------------------------------------------- storage
STORAGE = MODULES / "storage"


def test_hot_bucket_lifecycle_is_cold_at_90_days_and_deleted_at_2555():
    hot = resources(STORAGE)[("google_storage_bucket", "hot")]
    rules = []
    for rule in hot["lifecycle_rule"]:
        action, condition = one(rule, "action"), one(rule, "condition")
        age = hcl_literal(var_default(STORAGE, condition.get("age")))
        storage_class = var_default(STORAGE, action.get("storage_class"))
        rules.append((action["type"], age, storage_class))
    set_class = [r for r in rules if r[0] == "SetStorageClass"]
    assert len(set_class) == 1
    assert set_class[0][1] == 90
    assert set_class[0][2] in ("COLDLINE", "ARCHIVE")
    assert ("Delete", 2555, None) in rules
    assert "2555 days = 7 years" in (STORAGE / "main.tf").read_text()


def test_buckets_are_private_uniform_and_versioned():
    buckets = resources(STORAGE, "google_storage_bucket")
    assert {name for _, name in buckets} >= {"hot", "backfill"}
    for (_, name), body in buckets.items():
        assert hcl_literal(body["uniform_bucket_level_access"]) is True, name
        assert body["public_access_prevention"] == "enforced", name
        assert hcl_literal(one(body, "versioning")["enabled"]) is True, name


# -------------------------------------------------------------------------------------- IAM
IAM = MODULES / "iam"


def walk(node: Any, path: tuple = ()):
    """Every (path, key, value) of a parsed file."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path, k, v
            yield from walk(v, (*path, k))
    elif isinstance(node, list):
        for v in node:
            yield from walk(v, path)


def test_no_primitive_roles_anywhere():
    pattern = re.compile(r"roles/(owner|editor|viewer)\b")
    for path in TF_FILES:
        assert not pattern.search(path.read_text()), f"primitive role in {path}"
        for _, key, value in walk(parsed(path)):
            if key in ("role", "roles"):
                for role in value if isinstance(value, list) else [value]:
                    assert role not in PRIMITIVE_ROLES, f"{path}: {role}"


def all_iam_bindings() -> list[tuple[Path, str, str, dict]]:
    """(module dir, resource type, name, body) of every *_iam_member of the tree."""
    found = []
    for directory in sorted({p.parent for p in TF_FILES}):
        for (rtype, name), body in resources(directory).items():
            if rtype.endswith("_iam_member") or rtype.endswith("_iam_binding"):
                found.append((directory, rtype, name, body))
    return found


WORKER = "${local.worker}"


def test_one_worker_service_account():
    accounts = [
        (d, name)
        for d in sorted({p.parent for p in TF_FILES})
        for (t, name) in resources(d)
        if t == "google_service_account"
    ]
    assert accounts == [(IAM, "worker")]
    assert locals_of(IAM)["worker"] == "serviceAccount:${google_service_account.worker.email}"


def test_worker_publishes_only_to_alert_topics():
    publisher = [
        (d, t, n, b) for d, t, n, b in all_iam_bindings() if b["role"] == "roles/pubsub.publisher"
    ]
    worker = [x for x in publisher if x[3]["member"] == WORKER]
    assert [(t, n) for _, t, n, _ in worker] == [
        ("google_pubsub_topic_iam_member", "alert_publisher")
    ]
    assert worker[0][3]["for_each"] == "${var.alert_topic_ids}"
    # Other publisher grants are the Pub/Sub service agent's, on the dead-letter topics.
    for d, _, _, body in publisher:
        if body["member"] != WORKER:
            assert d == PUBSUB and "dead_letter" in body["topic"]
            assert "gcp-sa-pubsub" in locals_of(PUBSUB)["pubsub_service_agent"]
    # The envs pass exactly the alert topics, and the output holds only var.alert_topics.
    assert "for name in var.alert_topics" in outputs(PUBSUB)["alert_topic_ids"]["value"]
    for env in ENVS:
        iam = module_calls(TF_ROOT / "envs" / env)["iam"]
        assert iam["alert_topic_ids"] == "${module.pubsub.alert_topic_ids}"


def test_worker_grants_are_on_its_resources_only():
    roles = {}
    for _, rtype, _, body in all_iam_bindings():
        if body["member"] == WORKER:
            roles.setdefault(body["role"], set()).add(rtype)
    assert roles["roles/bigquery.dataEditor"] == {"google_bigquery_dataset_iam_member"}
    assert roles["roles/pubsub.subscriber"] == {"google_pubsub_subscription_iam_member"}
    assert roles["roles/pubsub.publisher"] == {"google_pubsub_topic_iam_member"}
    assert roles["roles/storage.objectAdmin"] == {"google_storage_bucket_iam_member"}
    assert roles["roles/storage.objectViewer"] == {"google_storage_bucket_iam_member"}
    project_level = {r for r, types in roles.items() if "google_project_iam_member" in types}
    assert project_level == {"roles/dataflow.worker", "roles/bigquery.jobUser"}
    editor = resources(IAM)[("google_bigquery_dataset_iam_member", "data_editor")]
    assert editor["dataset_id"] == "${var.dataset_id}"
    subscriber = resources(IAM)[("google_pubsub_subscription_iam_member", "subscriber")]
    assert subscriber["for_each"] == "${var.subscription_ids}"
    for env in ENVS:
        iam = module_calls(TF_ROOT / "envs" / env)["iam"]
        assert iam["dataset_id"] == "${module.bigquery.dataset_id}"
        assert iam["subscription_ids"] == "${module.pubsub.input_subscription_ids}"
    # BigQuery data roles nowhere but on the dataset.
    for _, rtype, _, body in all_iam_bindings():
        if body["role"].startswith("roles/bigquery.data"):
            assert rtype == "google_bigquery_dataset_iam_member"


# --------------------------------------------------------------------------------- Dataflow
DATAFLOW = MODULES / "dataflow"


def pipeline_option_names() -> set[str]:
    """The job's options: the flex template's parameters (RiskPipelineOptions, ProductionOptions)."""
    return {p["name"] for p in template_parameters()}


def test_dataflow_flex_template_job():
    (body,) = resources(DATAFLOW, "google_dataflow_flex_template_job").values()
    assert body["provider"] in ("google-beta", "${google-beta}")
    assert hcl_literal(body["enable_streaming_engine"]) is True
    assert body["on_delete"] == "drain"
    assert hcl_literal(body["skip_wait_on_job_termination"]) is True
    assert body["service_account_email"] == "${var.service_account_email}"
    for key in ("container_spec_gcs_path", "region", "temp_location"):
        assert body[key] == f"${{var.{key}}}"
    params = body["parameters"]
    for name in ("pipeline", "sanctions_store", "sanctions_poll_minutes", "pubsub_project"):
        assert name in params, name
    keys = set(re.findall(r"(\w+)\s*=", params))
    assert keys <= pipeline_option_names(), keys - pipeline_option_names()
    for env in ENVS:
        call = module_calls(TF_ROOT / "envs" / env)["dataflow"]
        assert call["service_account_email"] == "${module.iam.worker_email}"


# ------------------------------------------------------------------------------- monitoring
MONITORING = MODULES / "monitoring"


def test_alert_policies_and_slos():
    res = resources(MONITORING)
    policies = {n: b for (t, n), b in res.items() if t == "google_monitoring_alert_policy"}
    metrics = {}
    for name, body in policies.items():
        assert body["notification_channels"] == "${var.notification_channels}", name
        for condition in body["conditions"]:
            filt = one(condition, "condition_threshold")["filter"]
            metrics.setdefault(name, set()).update(re.findall(r'metric.type = \\?"([^"\\]+)', filt))
    found = set().union(*metrics.values())
    assert "dataflow.googleapis.com/job/system_lag" in found
    assert "dataflow.googleapis.com/job/data_watermark_age" in found
    assert "dataflow.googleapis.com/job/is_failed" in found
    assert {
        "pubsub.googleapis.com/subscription/num_undelivered_messages",
        "pubsub.googleapis.com/topic/send_message_operation_count",
    } & found
    assert any(t == "google_monitoring_custom_service" for t, _ in res)
    slos = [b for (t, _), b in res.items() if t == "google_monitoring_slo"]
    assert slos and all(
        b["service"].startswith("${google_monitoring_custom_service.") for b in slos
    )


# ------------------------------------------------------------------------------------- envs
def test_envs_pin_versions_and_use_a_gcs_backend():
    pinned = re.compile(r"^(~>\s*\d+\.\d+(\.\d+)?|=?\s*\d+\.\d+\.\d+)$")
    for env in ENVS:
        (terraform,) = parsed(TF_ROOT / "envs" / env / "versions.tf")["terraform"]
        assert pinned.match(terraform["required_version"]), env
        providers = one(terraform, "required_providers")
        for provider in ("google", "google-beta"):
            assert providers[provider]["source"] == f"hashicorp/{provider}"
            assert pinned.match(providers[provider]["version"]), (env, provider)
        (backend,) = terraform["backend"]
        assert "gcs" in backend


def test_prod_has_deletion_protection_on():
    prod = module_calls(TF_ROOT / "envs" / "prod")
    assert hcl_literal(prod["bigquery"]["deletion_protection"]) is True
    assert hcl_literal(prod["storage"]["force_destroy"]) is False
    assert hcl_literal(var_default(BQ, "${var.deletion_protection}")) is True


# ---------------------------------------------------------------------------------- checkov
SKIP = re.compile(r"#\s*checkov:skip=([^:\s]+)(?::(.*))?")


def test_every_checkov_skip_names_a_check_and_says_why():
    skips = []
    for path in TF_FILES:
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                m = SKIP.search(line)
                assert m, f"{path}: malformed skip {line.strip()!r}"
                check, reason = m.group(1), (m.group(2) or "").strip()
                assert re.fullmatch(r"CKV2?_[A-Z]+_\d+", check), f"{path}: {check}"
                assert len(reason) >= 20, f"{path}: skip of {check} has no reason"
                skips.append(check)
    assert skips  # the README lists them; a new skip needs a reason there too
    readme = (TF_ROOT / "README.md").read_text()
    for check in set(skips):
        assert check in readme, f"{check} is skipped but not explained in the README"


@cache
def checkov_summary() -> dict:
    if not CHECKOV.exists():
        pytest.fail(
            f"{CHECKOV.relative_to(ROOT)} is missing: run `make .venv-checkov` "
            "(checkov lives in its own venv, apart from Beam's pins)"
        )
    cmd = [
        str(CHECKOV),
        "-d",
        str(TF_ROOT),
        "--framework",
        "terraform",
        "--compact",
        "--quiet",
        "--skip-download",
        "-o",
        "json",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert result.stdout.strip(), f"checkov printed nothing: {result.stderr[-2000:]}"
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    assert len(reports) == 1
    failed = reports[0].get("results", {}).get("failed_checks", [])
    return {**reports[0]["summary"], "failed_ids": [(c["check_id"], c["resource"]) for c in failed]}


def test_checkov_passes():
    summary = checkov_summary()
    assert summary["parsing_errors"] == 0
    assert summary["failed"] == 0, summary["failed_ids"]
    assert summary["passed"] > 0
