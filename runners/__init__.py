"""Where and how the graph runs: the CLI, the edges, one package per run mode, the commands, the
oracle poller and the generator. Nothing imports ``runners``.
"""
