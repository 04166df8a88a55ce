"""Pipelines: graph assembly, local runs, the CLI, the generator and the warehouse."""
