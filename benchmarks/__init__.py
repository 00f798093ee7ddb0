"""Benchmarks of otel-audit against the OpenTelemetry SDK\x27s own pipeline and the disk\x27s limit."""
