"""What several domains share: parsing, dead letters and the composite contract, event timers,
shard keys, account positions and column helpers.
"""
