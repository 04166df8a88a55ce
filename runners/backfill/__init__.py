"""The backfill run mode (``defi-risk backfill``): history, a day at a time, through the
streaming path's rules. See README.md beside this package.
"""
