"""Thin shim so Dataflow's ``--setup_file ./setup.py`` can stage this package.

All metadata and dependencies live in pyproject.toml; setuptools reads them from there.
"""

from setuptools import setup

setup()
