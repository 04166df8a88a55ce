"""Shared fixtures. Beam logs are quiet unless a test fails."""

from __future__ import annotations

import logging

import pytest

logging.getLogger("apache_beam").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory):
    """The real Pub/Sub emulator on a free port for the test session (``runners.live.emulator``).

    Started in its own process group and stopped as a group (gcloud leaves its java child
    running otherwise). Skipped, with the reason, when gcloud or its emulator component is
    missing; an installed emulator that fails to start fails the test. Tests keep apart by
    project id. Yields the ``EmulatorProcess``: set ``PUBSUB_EMULATOR_HOST`` to its ``host``.
    """
    from runners.live.emulator import emulator_unavailable_reason, free_host_port, start_emulator

    reason = emulator_unavailable_reason()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("pubsub-emulator") / "emulator.log"
    emulator = start_emulator(free_host_port(), "defi-risk-test", log)
    try:
        yield emulator
    finally:
        emulator.stop()
