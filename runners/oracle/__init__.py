"""The oracle poller: reads Chainlink over JSON-RPC and Pyth over Hermes, publishes PriceEvents.

    defi-risk oracle poll --rpc-url http://localhost:8545 --hermes-url https://hermes.pyth.network
        --interval 10 --publish jsonl:out/prices.jsonl --status-file out/oracle_status.json

Modules: ``rpc`` (JSON-RPC ``eth_call`` and the AggregatorV3 ABI), ``hermes`` (Pyth Hermes HTTP),
``resilience`` (timeouts, jittered retries, circuit breakers), ``publish`` (JSONL and Pub/Sub
sinks, dead letters), ``poller`` (the cycle: no missed rounds, no duplicates, nothing stale as
fresh) and ``args`` (the CLI arguments). Tests: ``pytest -q tests/runners/oracle/test_poller.py``.
"""
