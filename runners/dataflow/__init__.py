"""The Dataflow run mode: the production job, its flex template and ``defi-risk deploy``."""
