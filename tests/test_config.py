"""Configuration resolves argument > OTEL_AUDIT_* > OTEL_EXPORTER_OTLP_LOGS_* > OTEL_EXPORTER_OTLP_* > default."""

from __future__ import annotations

from pathlib import Path

import pytest

from otel_audit.config import default_wal_dir, parse_headers, resolve_config, resolve_exporter_config
from otel_audit.exceptions import ConfigError

_VARS = [
    "OTEL_AUDIT_ENDPOINT", "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_AUDIT_PROTOCOL", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_LOGS_HEADERS", "OTEL_AUDIT_DURABILITY",
    "OTEL_AUDIT_WAL_DIR", "OTEL_SERVICE_NAME", "OTEL_AUDIT_FSYNC_INTERVAL_MILLIS", "OTEL_EXPORTER_OTLP_TIMEOUT",
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)


def test_defaults_point_at_a_local_collector_over_grpc(tmp_path: Path) -> None:
    cfg = resolve_config(wal_dir=tmp_path)
    assert cfg.exporter.endpoints == ("http://localhost:4317",)
    assert cfg.exporter.protocol == "grpc"
    assert cfg.durability == "interval" and cfg.fail_closed is True and cfg.full_policy == "block"


def test_explicit_argument_wins_over_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OTEL_AUDIT_DURABILITY", "never")
    monkeypatch.setenv("OTEL_AUDIT_ENDPOINT", "http://a:1")
    cfg = resolve_config(wal_dir=tmp_path, durability="always", endpoint="http://b:2")
    assert cfg.durability == "always"
    assert cfg.exporter.endpoints == ("http://b:2",)


def test_audit_variable_wins_over_otlp_logs_over_generic(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:1")
    assert resolve_exporter_config().endpoints == ("http://generic:1",)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:2")
    assert resolve_exporter_config().endpoints == ("http://logs:2",)
    monkeypatch.setenv("OTEL_AUDIT_ENDPOINT", "http://g1:3,http://g2:4")
    assert resolve_exporter_config().endpoints == ("http://g1:3", "http://g2:4")


def test_http_generic_endpoint_gets_the_signal_path_but_logs_endpoint_is_used_as_is(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")
    assert resolve_exporter_config(protocol="http/protobuf").endpoints == ("http://c:4318/v1/logs",)
    assert resolve_exporter_config(protocol="http/protobuf", http_path="/v1/audit").endpoints == (
        "http://c:4318/v1/audit",
    )
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://c:4318/custom")
    assert resolve_exporter_config(protocol="http/protobuf").endpoints == ("http://c:4318/custom",)


def test_bad_explicit_values_raise_config_error_naming_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="durability"):
        resolve_config(wal_dir=tmp_path, durability="sometimes")
    with pytest.raises(ConfigError, match="protocol"):
        resolve_config(wal_dir=tmp_path, protocol="carrier-pigeon")
    with pytest.raises(ConfigError, match="not an http"):
        resolve_config(wal_dir=tmp_path, endpoint="ftp://x:1")
    with pytest.raises(ConfigError, match="fsync_interval"):
        resolve_config(wal_dir=tmp_path, fsync_interval=0)
    with pytest.raises(ConfigError, match="larger than max_bytes"):
        resolve_config(wal_dir=tmp_path, segment_bytes=1 << 20, max_bytes=1 << 16)
    with pytest.raises(ConfigError, match="certificate_file"):
        resolve_config(wal_dir=tmp_path, certificate_file=str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="both client_key_file"):
        key = tmp_path / "k.pem"
        key.write_text("x")
        resolve_config(wal_dir=tmp_path, client_key_file=str(key))


def test_bad_environment_values_warn_and_fall_back(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_AUDIT_DURABILITY", "sometimes")
    monkeypatch.setenv("OTEL_AUDIT_FSYNC_INTERVAL_MILLIS", "soon")
    cfg = resolve_config(wal_dir=tmp_path)
    assert cfg.durability == "interval"
    assert cfg.fsync_interval == 0.2
    assert "OTEL_AUDIT_DURABILITY" in caplog.text and "OTEL_AUDIT_FSYNC_INTERVAL_MILLIS" in caplog.text


def test_env_units_are_milliseconds(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("OTEL_AUDIT_FSYNC_INTERVAL_MILLIS", "50")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "2500")
    cfg = resolve_config(wal_dir=tmp_path)
    assert cfg.fsync_interval == pytest.approx(0.05)
    assert cfg.exporter.timeout == pytest.approx(2.5)


def test_headers_are_parsed_url_decoded_and_never_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_headers("Authorization=Bearer%20s3cret, x-tenant=a") == {
        "authorization": "Bearer s3cret",
        "x-tenant": "a",
    }
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "authorization=Bearer%20s3cret")
    exporter = resolve_exporter_config()
    assert exporter.headers == {"authorization": "Bearer s3cret"}
    assert "s3cret" not in repr(exporter)


def test_default_wal_dir_does_not_depend_on_the_working_directory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", "/srv/state")
    assert default_wal_dir("billing/api") == Path("/srv/state/otel-audit/billing_api")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "payments")
    assert resolve_config().wal_dir == Path("/srv/state/otel-audit/payments")


def test_a_misspelt_option_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown option.*duribility.*accepted:.*durability"):
        resolve_config(wal_dir=tmp_path, duribility="always")
