"""An in-memory stand-in with the WAL's sender-facing API, for tests that need to inspect or break it."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any


class FakeCursor:
    def __init__(self, wal: FakeWAL, after: int) -> None:
        self._wal = wal
        self._after = after
        self.closed = False

    def next_batch(self, max_records: int, max_bytes: int) -> list[tuple[int, bytes]]:
        with self._wal.cond:
            out: list[tuple[int, bytes]] = []
            size = 0
            for seq, payload in self._wal.items:
                if seq <= self._after:
                    continue
                if out and (len(out) >= max_records or size + len(payload) > max_bytes):
                    break
                out.append((seq, payload))
                size += len(payload)
            if out:
                self._after = out[-1][0]
            return out

    def seek(self, after: int) -> None:
        self._after = after

    def close(self) -> None:
        self.closed = True


class FakeWAL:
    def __init__(self, directory: Path | None = None) -> None:
        self.items: list[tuple[int, bytes]] = []
        self.cond = threading.Condition()
        self._acked = 0
        self.ack_calls: list[int] = []
        self.dead: dict[int, tuple[bytes, str]] = {}
        self.directory = directory or Path("/nonexistent")

    @property
    def acked_seq(self) -> int:
        return self._acked

    @property
    def last_seq(self) -> int:
        with self.cond:
            return self.items[-1][0] if self.items else 0

    def append(self, payload: bytes) -> int:
        return self.append_many([payload])[0]

    def append_many(self, payloads: list[bytes]) -> list[int]:
        with self.cond:
            start = self.last_seq
            seqs = list(range(start + 1, start + 1 + len(payloads)))
            self.items.extend(zip(seqs, payloads, strict=True))
            self.cond.notify_all()
            return seqs

    def cursor(self, after: int = 0) -> FakeCursor:
        return FakeCursor(self, after)

    def wait_for_append(self, after_seq: int, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.last_seq > after_seq, timeout)

    def ack(self, upto_seq: int) -> None:
        assert upto_seq > self._acked, f"ack must advance: {upto_seq} <= {self._acked}"
        self._acked = upto_seq
        self.ack_calls.append(upto_seq)

    def dead_letter(self, seq: int, payload: bytes, reason: str) -> Path:
        self.dead[seq] = (payload, reason)
        return self.directory / "dead-letter" / f"{seq}"

    def stats(self) -> dict[str, Any]:
        return {"acked_seq": self._acked, "last_seq": self.last_seq}
