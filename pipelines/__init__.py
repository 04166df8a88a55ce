"""What the graph is: options, the stage registry and ``build()`` (never runs)."""
