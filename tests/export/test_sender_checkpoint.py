"""A checkpoint the disk refuses does not stop delivery, and catches up once the disk recovers."""

from __future__ import annotations

import time

from otel_audit.exceptions import WALError
from otel_audit.export.contexts import ContextStore
from otel_audit.testing import FakeCollector

from .conftest import SenderFactory, fill, transport_for
from .fakewal import FakeWAL


class FlakyCheckpointWAL(FakeWAL):
    """The first `failures` acks fail, as a checkpoint write does on a read-only or full disk."""

    failures = 3

    def ack(self, upto_seq: int) -> None:
        if self.failures:
            self.failures -= 1
            raise WALError("wal: could not write checkpoint: Read-only file system (errno 30)")
        super().ack(upto_seq)


def test_failed_checkpoints_neither_stop_delivery_nor_resend_what_was_delivered(
    collector: FakeCollector, contexts: ContextStore, make_sender: SenderFactory, tmp_path: object
) -> None:
    wal = FlakyCheckpointWAL()
    sender = make_sender(wal, transport_for("grpc", collector), max_batch_records=10, linger=0)
    ids = fill(wal, contexts, 50)
    assert sender.force_flush(10)
    # Delivered exactly once: a refused checkpoint is retried, the batch is not sent again.
    assert collector.record_ids() == ids
    deadline = time.monotonic() + 5
    while wal.acked_seq < 50 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert wal.acked_seq == 50
    assert "checkpoint not written" in sender.stats()["last_error"]
