"""Where the graph runs: pinned local runner options (and, later, Dataflow deployment)."""
