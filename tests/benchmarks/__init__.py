"""Benchmarks: each prints JSON lines with its figures and ratios against a baseline measured in
the same run. Run them all with ``make bench`` (``python -m tests.benchmarks``) or one with
``python -m tests.benchmarks.bench_parse``. They are not part of ``make test``.
"""
