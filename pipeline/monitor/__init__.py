"""``pipeline monitor``: continuous verification with independent alerting (docs/MONITOR.md).

``config`` (monitor.toml), ``hot`` (trailing a stream with the library's verifier), ``cold``
(the ledger and cold objects, read-only), ``witness`` (checkpoints against witnesses),
``findings`` (the monitor's finding record, adapted from the library's), ``alerts``
(Alertmanager, signed webhook, e-mail, the watchdog), ``metrics``, ``state`` (the durable
position) and ``runner`` (the cycle).
"""
