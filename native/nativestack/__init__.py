"""The stack natively: the real Collector, Jaeger, Prometheus and the apps, started with the
repo's own config files and wired like docker-compose.yaml wires the containers."""
