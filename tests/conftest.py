"""Shared fixtures. Beam logs are quiet unless a test fails."""

from __future__ import annotations

import logging

logging.getLogger("apache_beam").setLevel(logging.WARNING)
