"""tailpage exporter: structured log lines turned into Prometheus error metrics."""
