"""Dataflow deployment: the flex template's files and the gcloud commands that build and launch it.

    defi-risk deploy --project P --region R --template-bucket B --dry-run
    defi-risk deploy --project P --region R --template-bucket B --update --job-name defi-risk-all
    defi-risk deploy --project P --region R --template-bucket B --drain JOB_ID --dry-run
    defi-risk deploy --write-template-files        # regenerate metadata.json and requirements.txt

The template (``runners/dataflow/flex_template/``):
- ``Dockerfile``: the Beam 2.77 Python 3.11 SDK image with the flex-template launcher copied in,
  the locked requirements and this package. The same image runs the workers
  (``sdk_container_image``), so the launcher and the workers cannot disagree on a version;
- ``metadata.json``: every pipeline parameter (``RiskPipelineOptions`` and
  ``ProductionOptions``) with its help text, generated from the option parsers;
- ``requirements.txt``: the runtime dependency closure of ``pyproject.toml`` pinned to the versions
  installed where it was generated (``--write-template-files``);
- ``cloudbuild.yaml``: builds and pushes the image with that Dockerfile.

An in-place update (``--update``) keeps the job's state only if every stateful step keeps its
name: the step labels of ``pipelines/stages.py`` are stable for that reason. A renamed step
needs ``--transform-name-mapping OLD=NEW`` (repeatable), which becomes
``--transform-name-mappings`` of ``gcloud dataflow flex-template run``.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

from pipelines.options import RiskPipelineOptions
from runners.dataflow.job import ProductionOptions

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_DIR = Path(__file__).resolve().parent / "flex_template"
BEAM_VERSION = "2.77.0"
# Options the launcher or the service sets itself: not template parameters.
_SERVICE_OPTIONS = {"runner", "project", "region", "streaming", "temp_location"}


def _parsers() -> list[tuple[str, argparse.ArgumentParser]]:

    out = []
    for cls in (RiskPipelineOptions, ProductionOptions):
        parser = argparse.ArgumentParser()
        cls._add_argparse_args(parser)
        out.append((cls.__name__, parser))
    return out


def template_parameters() -> list[dict]:
    """Every pipeline option as a flex-template parameter, with its help text."""
    params = []
    for _, parser in _parsers():
        for action in parser._actions:
            if not action.option_strings or action.dest == "help":
                continue
            name = action.option_strings[0].lstrip("-")
            if name in _SERVICE_OPTIONS:
                continue
            help_text = " ".join((action.help or "").split())
            if action.default is not None:
                help_text += f" Default: {action.default}."
            param = {
                "name": name,
                "label": name.replace("_", " ").capitalize(),
                "helpText": help_text,
                "isOptional": True,
            }
            if action.choices:
                param["regexes"] = [
                    "^(" + "|".join(re.escape(str(c)) for c in action.choices) + ")$"
                ]
            params.append(param)
    return params


def template_metadata() -> dict:
    return {
        "name": "defi-risk-pipeline",
        "description": "DeFi risk pipelines (prices, VaR, margin, surveillance, compliance): "
        "Pub/Sub in, BigQuery tables and Pub/Sub alert topics out.",
        "streaming": True,
        "supportsAtLeastOnce": False,
        "supportsExactlyOnce": True,
        "defaultStreamingMode": "EXACTLY_ONCE",
        "parameters": template_parameters(),
    }


def _closure(specs: list[str]) -> dict[str, str]:
    """Installed distributions that ``specs`` need, with their markers evaluated here (extras
    included): name -> installed version."""
    pins: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [Requirement(s) for s in specs]
    while todo:
        req = todo.pop()
        key = req.name.lower().replace("_", "-")
        if (key, frozenset(req.extras)) in visited:
            continue
        visited.add((key, frozenset(req.extras)))
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency that is not installed
        pins[key] = dist.version
        for dep in dist.requires or []:
            r = Requirement(dep)
            if r.marker is None or any(r.marker.evaluate({"extra": e}) for e in req.extras or {""}):
                todo.append(r)
    return pins


def runtime_requirements() -> list[str]:
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pins = _closure(deps)
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def rendered_template_files() -> dict[Path, str]:
    lock = (
        "# Generated by `defi-risk deploy --write-template-files` from pyproject.toml's runtime\n"
        "# dependencies and their dependencies, pinned to the versions installed there.\n"
        + "\n".join(runtime_requirements())
        + "\n"
    )
    return {
        TEMPLATE_DIR / "metadata.json": json.dumps(template_metadata(), indent=2) + "\n",
        TEMPLATE_DIR / "requirements.txt": lock,
    }


# ------------------------------------------------------------------------------- commands
def image_uri(project: str, region: str, repository: str, tag: str) -> str:
    return f"{region}-docker.pkg.dev/{project}/{repository}/defi-risk-pipeline:{tag}"


def commands(args) -> list[list[str]]:
    """The gcloud command sequence for ``args`` (build, template, launch or update, or drain)."""
    region, project = args.region, args.project
    if args.drain:
        return [
            [
                "gcloud",
                "dataflow",
                "jobs",
                "drain",
                args.drain,
                f"--region={region}",
                f"--project={project}",
            ]
        ]
    image = image_uri(project, region, args.repository, args.tag)
    spec = f"gs://{args.template_bucket}/templates/defi-risk-pipeline-{args.tag}.json"
    params = {
        "pipeline": args.pipeline,
        "sdk_container_image": image,
        "bq_dataset": args.dataset,
        "payload_format": "avro",
    }
    if args.sanctions_store:
        params["sanctions_store"] = args.sanctions_store
        params["sanctions_poll_minutes"] = str(args.sanctions_poll_minutes)
    build = [
        "gcloud", "builds", "submit", ".",  # the repository root: the Dockerfile copies from it
        f"--project={project}", f"--region={region}",
        f"--config={TEMPLATE_DIR.relative_to(ROOT) / 'cloudbuild.yaml'}",
        f"--substitutions=_IMAGE={image}",
    ]  # fmt: skip
    template = [
        "gcloud", "dataflow", "flex-template", "build", spec,
        f"--image={image}", "--sdk-language=PYTHON",
        f"--metadata-file={TEMPLATE_DIR.relative_to(ROOT) / 'metadata.json'}",
        f"--project={project}",
    ]  # fmt: skip
    run = [
        "gcloud", "dataflow", "flex-template", "run", args.job_name,
        f"--template-file-gcs-location={spec}", f"--region={region}", f"--project={project}",
        "--enable-streaming-engine",
        f"--staging-location=gs://{args.template_bucket}/staging",
        f"--temp-location=gs://{args.template_bucket}/temp",
        "--parameters=" + ",".join(f"{k}={v}" for k, v in params.items()),
    ]  # fmt: skip
    if args.service_account:
        run.append(f"--service-account-email={args.service_account}")
    if args.update:
        run.append("--update")
        mappings = dict(m.split("=", 1) for m in args.transform_name_mapping)
        if mappings:
            run.append("--transform-name-mappings=" + json.dumps(mappings, separators=(",", ":")))
    elif args.transform_name_mapping:
        raise SystemExit("--transform-name-mapping only applies with --update")
    return [build, template, run]


def deploy_command(args) -> int:
    if args.write_template_files:
        for path, text in rendered_template_files().items():
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
        return 0
    missing = [f"--{n.replace('_', '-')}" for n in ("project", "region") if not getattr(args, n)]
    if not args.drain and not args.template_bucket:
        missing.append("--template-bucket")
    if missing:
        print(f"defi-risk deploy: missing {' '.join(missing)}", file=sys.stderr)
        return 2
    cmds = commands(args)
    if args.dry_run:
        print(f"# run from the repository root ({ROOT})")
        for c in cmds:
            print(shlex.join(c))
        return 0
    if shutil.which("gcloud") is None:
        print(
            "defi-risk deploy: gcloud is not on PATH (use --dry-run to print the commands)",
            file=sys.stderr,
        )
        return 2
    for c in cmds:
        print(f"+ {shlex.join(c)}", flush=True)
        done = subprocess.run(c, check=False, cwd=ROOT)
        if done.returncode:
            print(f"defi-risk deploy: step failed (exit {done.returncode})", file=sys.stderr)
            return done.returncode
    return 0


def add_deploy_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--project", help="GCP project of the job, topics and dataset.")
    p.add_argument("--region", help="Dataflow and Artifact Registry region, e.g. europe-west1.")
    p.add_argument(
        "--template-bucket", help="Bucket for the template spec, staging and temp files."
    )
    p.add_argument("--repository", default="defi-risk", help="Artifact Registry Docker repository.")
    p.add_argument("--tag", default="v1", help="Image and template version tag.")
    p.add_argument(
        "--job-name", default="defi-risk-all", help="Dataflow job name (stable across updates)."
    )
    p.add_argument(
        "--pipeline", default="all", choices=("all", "risk", "surveillance", "compliance")
    )
    p.add_argument("--dataset", default="risk", help="BigQuery dataset (Terraform's).")
    p.add_argument("--service-account", help="Worker service account (Terraform's iam module).")
    p.add_argument("--sanctions-store", help="gs:// path of the sanctions list store.")
    p.add_argument(
        "--sanctions-poll-minutes", type=float, default=60.0, help="Store poll interval."
    )
    p.add_argument("--update", action="store_true", help="Update the running job in place.")
    p.add_argument(
        "--transform-name-mapping",
        action="append",
        default=[],
        metavar="OLD=NEW",
        help="With --update: a renamed step (repeatable).",
    )
    p.add_argument("--drain", metavar="JOB_ID", help="Drain a running job instead of deploying.")
    p.add_argument("--dry-run", action="store_true", help="Print the gcloud commands; run nothing.")
    p.add_argument(
        "--write-template-files",
        action="store_true",
        help="Regenerate runners/dataflow/flex_template/metadata.json and requirements.txt.",
    )
    p.set_defaults(func=deploy_command)
