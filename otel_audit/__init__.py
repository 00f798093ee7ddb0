"""Durable audit logging for OpenTelemetry."""

from otel_audit.exceptions import *  # noqa: F403
