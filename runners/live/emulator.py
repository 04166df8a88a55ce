"""The real Google Pub/Sub emulator for local live runs: start, provision, stop.

    defi-risk emulator start [--host-port localhost:8085] [--project defi-risk-local]
    export PUBSUB_EMULATOR_HOST=localhost:8085        # the line `start` prints
    defi-risk emulator status
    defi-risk emulator stop

``start`` runs ``gcloud beta emulators pubsub start`` in its own process group (gcloud leaves
its java child running when only gcloud is stopped), records the process group and host in
``STATE_DIR/emulator.json`` (default ``.defi-risk/`` under the current directory;
``--state-dir``), waits until ``http://HOST/`` answers ``Ok`` and creates, in ``--project``:

- every topic of ``schemas.registry``: the input topics and the alert topics;
- one dead-letter topic per input topic, named ``<topic>.dead-letter`` (e.g.
  ``settlements.v1.dead-letter``): the dead-letter policy of the input subscription forwards a
  message there after ``MAX_DELIVERY_ATTEMPTS`` (5) deliveries that were not acknowledged (the
  emulator honours it: tests/runners/live/test_emulator.py). Payloads the pipeline cannot parse do not go
  there: the pipeline acknowledges them and writes ``dead_letter`` table rows;
- one subscription per topic, named ``<topic>.sub`` (``settlements.v1.sub``,
  ``alerts.margin.v1.sub``, ``settlements.v1.dead-letter.sub``).

Provisioning is idempotent: what already exists is kept. ``stop`` sends SIGTERM to the whole
process group, then SIGKILL to what is left, and removes the state file. Tests use
``emulator_unavailable_reason()`` to skip with a clear reason when gcloud or its pubsub-emulator
component is missing, and ``start_emulator`` / ``EmulatorProcess.stop`` for a private emulator
on a free port (``tests/conftest.py``, fixture ``pubsub_emulator``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path

from runners.live.args import DEFAULT_HOST_PORT, DEFAULT_PROJECT, DEFAULT_STATE_DIR, START_TIMEOUT_S
from schemas.registry import INPUT_TOPICS
from schemas.topics import (
    MAX_DELIVERY_ATTEMPTS,
    all_topics,
    dead_letter_topic,
    subscription_path,
    topic_path,
)

STATE_FILE = "emulator.json"


LOG_FILE = "emulator.log"


STOP_TIMEOUT_S = 10.0


class EmulatorError(RuntimeError):
    """The emulator cannot be started, reached or stopped; the message says what to do."""


# ------------------------------------------------------------------------------ availability
def gcloud_path() -> str | None:
    return shutil.which("gcloud")


def emulator_unavailable_reason() -> str | None:
    """None when gcloud and its pubsub-emulator component are installed; otherwise why not."""
    gcloud = gcloud_path()
    if gcloud is None:
        return (
            "gcloud is not on PATH: install the Google Cloud CLI and its Pub/Sub emulator "
            "(Debian: google-cloud-cli-pubsub-emulator; else `gcloud components install "
            "pubsub-emulator`)"
        )
    sdk_root = Path(gcloud).resolve().parent.parent
    launcher = sdk_root / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    if not launcher.exists():
        return (
            f"the Pub/Sub emulator component is not installed under {sdk_root} "
            "(Debian: apt-get install google-cloud-cli-pubsub-emulator; else "
            "`gcloud components install pubsub-emulator`)"
        )
    if shutil.which("java") is None:
        return "the Pub/Sub emulator needs Java 11+ on PATH (java was not found)"
    return None


def free_host_port(host: str = "127.0.0.1") -> str:
    """A ``host:port`` with a port nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return f"{host}:{s.getsockname()[1]}"


def answers_ok(host: str, timeout_s: float = 1.0) -> bool:
    """True when ``http://HOST/`` answers ``Ok`` (the emulator's health page)."""
    try:
        with urllib.request.urlopen(f"http://{host}/", timeout=timeout_s) as answer:
            return answer.read().strip() == b"Ok"
    except (OSError, ValueError):
        return False


def check_pubsub_target(emulator_host: str | None = None) -> str | None:
    """Where Pub/Sub clients will connect; raises EmulatorError with what to do when nowhere.

    Returns the emulator host when ``PUBSUB_EMULATOR_HOST`` is set (and checks that it answers),
    or None for real Pub/Sub when Google credentials are found.
    """
    host = emulator_host if emulator_host is not None else os.environ.get("PUBSUB_EMULATOR_HOST")
    if host:
        if not answers_ok(host, timeout_s=2.0):
            raise EmulatorError(
                f"PUBSUB_EMULATOR_HOST={host} but nothing answers at http://{host}/: start the "
                f"emulator with `defi-risk emulator start --host-port {host}`"
            )
        return host
    try:
        import google.auth

        google.auth.default()
    except Exception as err:  # DefaultCredentialsError, or google-auth missing altogether
        raise EmulatorError(
            "PUBSUB_EMULATOR_HOST is not set and no Google credentials were found "
            f"({type(err).__name__}). For a local run: `defi-risk emulator start`, then "
            f"`export PUBSUB_EMULATOR_HOST={DEFAULT_HOST_PORT}` (the line it prints). For real "
            "Pub/Sub: `gcloud auth application-default login`."
        ) from err
    return None


# ---------------------------------------------------------------------------------- process
def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group; Linux /proc, else a signal-0 probe."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return []
        except PermissionError:
            return [pgid]
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...; comm may hold spaces and parentheses
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) >= 3 and fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _is_emulator_group(pgid: int) -> bool:
    """The group still runs a Pub/Sub emulator (guards against a recycled pid in a stale file)."""
    for pid in _group_members(pgid):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            return True  # no /proc: trust the state file
        if b"pubsub" in cmdline:
            return True
    return False


def stop_process_group(pgid: int, timeout_s: float = STOP_TIMEOUT_S, proc=None) -> str:
    """SIGTERM the group, wait up to ``timeout_s``, then SIGKILL what is left.

    Returns how it ended: ``terminated``, ``killed`` or ``not running``. ``proc`` (the Popen of
    the group leader, when this process started it) is reaped so it leaves no zombie.
    """
    if not _group_members(pgid):
        if proc is not None:
            proc.poll()
        return "not running"
    for sig, outcome in ((signal.SIGTERM, "terminated"), (signal.SIGKILL, "killed")):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return outcome
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()
            if not _group_members(pgid):
                return outcome
            time.sleep(0.05)
    raise EmulatorError(f"process group {pgid} survived SIGKILL for {timeout_s:.0f} s")


@dataclass
class EmulatorProcess:
    """A running emulator: its process group, host and log."""

    pid: int  # the gcloud process, leader of its own process group
    host: str  # host:port, the PUBSUB_EMULATOR_HOST value
    project: str
    log_path: str
    started_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    _popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    def is_running(self) -> bool:
        return bool(_group_members(self.pid))

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> str:
        return stop_process_group(self.pid, timeout_s, self._popen)

    def export_line(self) -> str:
        return f"export PUBSUB_EMULATOR_HOST={self.host}"

    def state(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if not f.name.startswith("_")}


def log_tail(path: str | Path, n_chars: int = 1500) -> str:
    try:
        return Path(path).read_text(errors="replace")[-n_chars:].strip()
    except OSError:
        return "(no log)"


def start_emulator(
    host_port: str = DEFAULT_HOST_PORT,
    project: str = DEFAULT_PROJECT,
    log_path: str | Path = LOG_FILE,
    timeout_s: float = START_TIMEOUT_S,
) -> EmulatorProcess:
    """Starts ``gcloud beta emulators pubsub start`` in a new process group and waits for ``Ok``.

    Raises EmulatorError (with the log tail) when the emulator is missing, the address is taken,
    the process exits, or it does not answer within ``timeout_s``; nothing is left running then.
    """
    reason = emulator_unavailable_reason()
    if reason:
        raise EmulatorError(reason)
    if answers_ok(host_port):
        raise EmulatorError(
            f"something already answers at http://{host_port}/ (another emulator?): stop it, or "
            "pick another --host-port"
        )
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "CLOUDSDK_CORE_DISABLE_PROMPTS": "1",
        "CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK": "1",
    }
    command = [
        gcloud_path() or "gcloud",
        "beta",
        "emulators",
        "pubsub",
        "start",
        f"--host-port={host_port}",
        f"--project={project}",
    ]
    with log_path.open("wb") as log:
        popen = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    emulator = EmulatorProcess(popen.pid, host_port, project, str(log_path), _popen=popen)
    deadline = time.monotonic() + timeout_s
    while not answers_ok(host_port):
        if popen.poll() is not None:
            emulator.stop()  # the java child may outlive gcloud
            raise EmulatorError(
                f"the Pub/Sub emulator exited with code {popen.returncode} before answering at "
                f"http://{host_port}/; log {log_path}:\n{log_tail(log_path)}"
            )
        if time.monotonic() > deadline:
            emulator.stop()
            raise EmulatorError(
                f"the Pub/Sub emulator did not answer Ok at http://{host_port}/ within "
                f"{timeout_s:.0f} s; log {log_path}:\n{log_tail(log_path)}"
            )
        time.sleep(0.1)
    return emulator


# ------------------------------------------------------------------------------- provisioning
@dataclass
class ProvisionReport:
    created: list[str] = field(default_factory=list)  # topic and subscription paths
    existing: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def provision(
    project: str,
    emulator_host: str | None = None,
    topics: list[str] | None = None,
) -> ProvisionReport:
    """Creates every topic of ``all_topics()`` (or ``topics``), then one ``<topic>.sub`` each.

    Input subscriptions get a dead-letter policy to ``<topic>.dead-letter`` when that topic is
    created too. Existing topics and subscriptions are kept (AlreadyExists is fine).
    ``emulator_host`` overrides ``PUBSUB_EMULATOR_HOST`` for this call.
    """
    from google.api_core.exceptions import AlreadyExists, InvalidArgument
    from google.cloud import pubsub_v1

    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    if emulator_host:
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host
    report = ProvisionReport()
    try:
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        wanted = topics if topics is not None else all_topics()
        for topic in wanted:
            path = topic_path(project, topic)
            try:
                publisher.create_topic(name=path, timeout=30)
                report.created.append(path)
            except AlreadyExists:
                report.existing.append(path)
        for topic in wanted:
            path = subscription_path(project, topic)
            request = {"name": path, "topic": topic_path(project, topic)}
            if topic in INPUT_TOPICS and dead_letter_topic(topic) in wanted:
                request["dead_letter_policy"] = {
                    "dead_letter_topic": topic_path(project, dead_letter_topic(topic)),
                    "max_delivery_attempts": MAX_DELIVERY_ATTEMPTS,
                }
            try:
                try:
                    subscriber.create_subscription(request=request, timeout=30)
                except InvalidArgument as err:  # an emulator without dead-letter policies
                    if "dead_letter_policy" not in request:
                        raise
                    request.pop("dead_letter_policy")
                    report.notes.append(f"{path}: no dead-letter policy ({err.message})")
                    subscriber.create_subscription(request=request, timeout=30)
                report.created.append(path)
            except AlreadyExists:
                report.existing.append(path)
        subscriber.close()
        publisher.stop()
    finally:
        if emulator_host:
            if previous is None:
                os.environ.pop("PUBSUB_EMULATOR_HOST", None)
            else:
                os.environ["PUBSUB_EMULATOR_HOST"] = previous
    return report


# -------------------------------------------------------------------------------- state file
def state_file(state_dir: str | Path | None = None) -> Path:
    return Path(state_dir or DEFAULT_STATE_DIR) / STATE_FILE


def read_state(state_dir: str | Path | None = None) -> dict | None:
    path = state_file(state_dir)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        raise EmulatorError(f"cannot read {path}: {err}; remove it by hand") from err


def write_state(emulator: EmulatorProcess, state_dir: str | Path | None = None) -> Path:
    path = state_file(state_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(emulator.state(), indent=2) + "\n")
    return path


def running_from_state(state_dir: str | Path | None = None) -> EmulatorProcess | None:
    """The emulator the state file names, when its process group is still an emulator."""
    state = read_state(state_dir)
    if state is None:
        return None
    emulator = EmulatorProcess(**state)
    return emulator if _is_emulator_group(emulator.pid) else None


# -------------------------------------------------------------------------------------- CLI
def _print_provisioned(report: ProvisionReport, project: str) -> None:
    print(
        f"  project {project}: {len(report.created)} topics/subscriptions created, "
        f"{len(report.existing)} already there"
    )
    for note in report.notes:
        print(f"  note: {note}")


def emulator_command(args) -> int:
    try:
        if args.action == "start":
            return _cmd_start(args)
        if args.action == "stop":
            return _cmd_stop(args)
        return _cmd_status(args)
    except EmulatorError as err:
        print(f"defi-risk emulator: {err}", file=sys.stderr)
        return 1


def _cmd_start(args) -> int:
    running = running_from_state(args.state_dir)
    if running is not None:
        if running.host != args.host_port:
            raise EmulatorError(
                f"an emulator already runs at {running.host} (pid {running.pid}, "
                f"{state_file(args.state_dir)}); `defi-risk emulator stop` first"
            )
        print(f"the Pub/Sub emulator already runs at {running.host} (pid {running.pid})")
        emulator = running
    else:
        stale = read_state(args.state_dir)
        if stale is not None:
            print(f"removing stale {state_file(args.state_dir)} (pid {stale.get('pid')} is gone)")
            state_file(args.state_dir).unlink(missing_ok=True)
        log = Path(args.state_dir) / LOG_FILE
        started = time.monotonic()
        emulator = start_emulator(args.host_port, args.project, log, args.timeout)
        path = write_state(emulator, args.state_dir)
        print(
            f"started the Pub/Sub emulator at {emulator.host} in {time.monotonic() - started:.1f} s "
            f"(process group {emulator.pid}; state {path}, log {log})"
        )
    try:
        report = provision(args.project, emulator_host=emulator.host)
    except Exception as err:
        raise EmulatorError(f"could not create the topics in {emulator.host}: {err}") from err
    _print_provisioned(report, args.project)
    print("use it in this shell with:")
    print(f"  {emulator.export_line()}")
    return 0


def _cmd_stop(args) -> int:
    state = read_state(args.state_dir)
    if state is None:
        print(f"no emulator recorded in {state_file(args.state_dir)}; nothing to stop")
        return 0
    emulator = EmulatorProcess(**state)
    if _is_emulator_group(emulator.pid):
        outcome = emulator.stop()
    else:
        outcome = "not running (stale state file)"
    state_file(args.state_dir).unlink(missing_ok=True)
    print(f"Pub/Sub emulator at {emulator.host} (process group {emulator.pid}): {outcome}")
    return 0


def _cmd_status(args) -> int:
    state = read_state(args.state_dir)
    if state is None:
        print(f"not running (no {state_file(args.state_dir)}); start it: defi-risk emulator start")
        return 1
    emulator = EmulatorProcess(**state)
    alive = _is_emulator_group(emulator.pid)
    ok = alive and answers_ok(emulator.host)
    print(
        f"{'running' if ok else 'NOT ANSWERING' if alive else 'not running (stale state file)'}: "
        f"{emulator.host}, project {emulator.project}, process group {emulator.pid}, "
        f"started {emulator.started_at}, log {emulator.log_path}"
    )
    if ok:
        print(f"  {emulator.export_line()}")
    return 0 if ok else 1
