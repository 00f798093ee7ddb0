"""Quickstart: one durable audit record; runs with or without a collector on localhost:4317."""

import otel_audit

audit = otel_audit.configure(service_name="quickstart")  # WAL: $OTEL_AUDIT_WAL_DIR or ~/.local/state/otel-audit/quickstart
receipt = audit.record("user.login.success", actor_id="u-1", actor_type="user", action="LOGIN", outcome="success",
                       target_type="http.endpoint", target_id="/api/session", source_id="203.0.113.42")
print(f"persisted record {receipt.record_id} (sha256 {receipt.integrity_hash[:16]}...) in {audit.config.wal_dir}")
where = audit.config.exporter.endpoints[0]
if audit.force_flush(timeout=2.0):
    print(f"delivered to the collector at {where}")
else:
    print(f"no collector answered at {where}: the record is safe in the WAL "
          f"({audit.stats()['backlog_records']} waiting) and is sent on the next run or when the collector is up")
audit.shutdown(timeout=0.5)  # what is not delivered stays on disk
