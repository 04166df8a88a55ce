"""The local run mode, the embedded default: topic files through the graph on the pinned local
runner, the DuckDB warehouse and the demo.
"""
