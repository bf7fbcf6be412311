"""Running batchd in production: Prometheus metrics, /metrics /healthz /readyz, systemd notify.

`metrics` defines every metric, `snapshot` reads the cluster's state from Redis, `server` serves
the endpoints from `batchd run`, `health` tracks its loops, `systemd` speaks the notify protocol.
"""
