"""Resource+scope contexts stored once per distinct value, so WAL records carry an 8-byte id instead."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

from otel_audit.exceptions import WALContextError, WALError
from otel_audit.export.payload import CONTEXT_ID_BYTES
from otel_audit.wal import fileio

CONTEXTS_DIRNAME = "contexts"


def context_id_of(blob: bytes) -> bytes:
    """The id of a context blob: the first 8 bytes of its BLAKE2b digest.

    Content-addressed, so two processes (or two restarts) that see the same resource and scope
    agree on the id without coordination, and a reader can check a file against its name.
    """
    return hashlib.blake2b(blob, digest_size=CONTEXT_ID_BYTES).digest()


class ContextStore:
    """Durable, content-addressed store of serialized ``ResourceLogs`` context blobs.

    Files live at ``<wal_dir>/contexts/<16 hex digits>.pb`` (mode 0600, directory 0700). ``put``
    returns only once the file and its directory entry are fsynced, so a record appended after it
    can always be resolved after a crash or power loss. Files are never rewritten or deleted: the
    set of distinct contexts of a process is small (one per resource x instrumentation scope).

    Thread-safe. ``get`` works on a directory this process cannot write (CLI, inspection tools).
    Every blob seen is cached in memory for the life of the store.
    """

    def __init__(self, wal_dir: str | os.PathLike[str]) -> None:
        self._wal_dir = Path(wal_dir)
        self._dir = self._wal_dir / CONTEXTS_DIRNAME
        self._cache: dict[bytes, bytes] = {}
        self._lock = threading.Lock()

    @property
    def directory(self) -> Path:
        return self._dir

    def path_of(self, context_id: bytes) -> Path:
        return self._dir / f"{context_id.hex()}.pb"

    def put(self, blob: bytes) -> bytes:
        """Persist ``blob`` (if new) and return its id; a cached id costs one hash and a dict lookup.

        Raises:
            WALError: the file could not be written (disk full, read-only directory); nothing
                referring to the context may be appended then.
        """
        cid = context_id_of(blob)
        if cid in self._cache:
            return cid
        with self._lock:
            if cid in self._cache:
                return cid
            path = self.path_of(cid)
            try:
                existing: bytes | None = path.read_bytes()
            except FileNotFoundError:
                existing = None
            except OSError as exc:
                raise WALError(f"cannot read context file {path}: {exc}") from exc
            if existing != blob:
                # A file with other bytes under this name is a torn or corrupted write (a 64-bit
                # collision is not a practical concern): replace it atomically with the right bytes.
                self._write(path, blob)
            self._cache[cid] = blob
        return cid

    def _write(self, path: Path, blob: bytes) -> None:
        # Through the WAL's file layer: the same durable-create steps, and crash tests can record them.
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            fileio.makedirs(self._dir)
            fd = fileio.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            try:
                fileio.write_all(fd, blob)
                fileio.fsync(fd)
            finally:
                fileio.close(fd)
            fileio.replace(tmp, path)
            fileio.fsync_dir(self._dir)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise WALError(
                f"cannot persist context file {path}: {exc}; records using it were not appended"
            ) from exc

    def get(self, context_id: bytes) -> bytes:
        """Return the blob stored under ``context_id``, from memory or from disk.

        Raises:
            WALContextError: the file is missing, unreadable, or its bytes do not hash to its id.
        """
        blob = self._cache.get(context_id)
        if blob is not None:
            return blob
        path = self.path_of(context_id)
        hex_id = context_id.hex()
        try:
            blob = path.read_bytes()
        except FileNotFoundError:
            raise WALContextError(
                f"context {hex_id} is missing: {path} does not exist; the records referring to it "
                "cannot be rebuilt (was the contexts/ directory deleted or not copied with the WAL?)",
                context_id=hex_id,
                path=str(path),
            ) from None
        except OSError as exc:
            raise WALContextError(
                f"context {hex_id}: cannot read {path}: {exc}", context_id=hex_id, path=str(path)
            ) from exc
        if context_id_of(blob) != context_id:
            raise WALContextError(
                f"context file {path} is corrupt: its {len(blob)} bytes do not hash to {hex_id}",
                context_id=hex_id,
                path=str(path),
            )
        with self._lock:
            self._cache[context_id] = blob
        return blob

    def ids(self) -> list[bytes]:
        """Ids of every context file on disk (for inspection tools)."""
        if not self._dir.is_dir():
            return []
        out = []
        for p in sorted(self._dir.glob("*.pb")):
            try:
                out.append(bytes.fromhex(p.stem))
            except ValueError:
                continue
        return out


__all__ = ["CONTEXTS_DIRNAME", "ContextStore", "context_id_of"]
