"""Group commit: the decisions that are waiting to be written share one transaction, so one
fsync (SQLite ``synchronous=FULL``) or one WAL flush (PostgreSQL) makes them all durable.

No thread of its own and no timer: the first caller that finds nobody writing becomes the
leader, takes everything queued (its own row included), commits it, and wakes the callers whose
rows it wrote. Callers that arrive while a commit is in progress queue behind it and are written
together by the next leader. So a lone request is written at once (no added latency) and under
load the batch grows with the number of requests in flight. Every caller returns only after its
own row is committed, or raises: nothing is returned that is not durable.

A batch is one transaction: if it fails, none of it is written. A failure that belongs to one row
(a constraint, say) must not cost the others their write, so a failed batch is retried row by row,
each row in its own transaction, and each caller gets its own row's outcome. Failures of the
database itself (StoreUnavailable: down, locked past the timeout) fail every row of the batch at
once: retrying each would only make every caller wait the timeout again.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Callable, ContextManager, Generic, Sequence, TypeVar

from service.store.base import StoreUnavailable

T = TypeVar("T")
log = logging.getLogger(__name__)

# A bound on one transaction's size, so one commit never holds the write lock for long.
MAX_BATCH = 256


class _Pending(Generic[T]):
    __slots__ = ("item", "done", "error")

    def __init__(self, item: T):
        self.item = item
        self.done = False
        self.error: BaseException | None = None


class GroupCommitter(Generic[T]):
    """``write(items)`` writes a batch in one transaction, or raises and writes nothing."""

    def __init__(self, write: Callable[[Sequence[T]], None], max_batch: int = MAX_BATCH,
                 serialise: Callable[[], ContextManager] = contextlib.nullcontext):
        self._write = write
        # Held by the leader around taking a batch and writing it: with writers in other
        # processes (SQLite), the batch is taken once this process's turn has come, so it holds
        # everything that queued meanwhile.
        self._serialise = serialise
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: list[_Pending[T]] = []
        self._writing = False
        # What was measured (batches, rows): read by the benchmark and the tests.
        self.batches = 0
        self.rows = 0
        # Told the size of every commit that succeeded (the app counts them in a metric).
        self.on_commit: Callable[[int], None] | None = None

    def submit(self, item: T) -> None:
        """Return once ``item`` is committed; raise what its write raised otherwise."""
        mine = _Pending(item)
        with self._cond:
            self._queue.append(mine)
            while not mine.done:
                if self._writing:
                    self._cond.wait()
                    continue
                # Nobody is writing: lead the next batch (ours is in it, or already done).
                self._writing = True
                self._cond.release()
                try:
                    self._lead()
                finally:
                    self._cond.acquire()
                    self._writing = False
                    self._cond.notify_all()
        if mine.error is not None:
            raise mine.error

    def _lead(self) -> None:
        try:
            turn = self._serialise()
            turn.__enter__()
        except BaseException as exc:
            with self._cond:
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
            for p in batch:
                p.error, p.done = exc, True
            return
        try:
            with self._cond:
                batch, self._queue = self._queue[:self._max_batch], self._queue[self._max_batch:]
            self._commit(batch)
        finally:
            turn.__exit__(None, None, None)

    def _commit(self, batch: list[_Pending[T]]) -> None:
        # Until a write is known to have succeeded, every row counts as not written, whatever
        # interrupts this (a worker being stopped included).
        unwritten = StoreUnavailable("the decision was not written")
        for p in batch:
            p.error = unwritten
        try:
            self._write([p.item for p in batch])
        except StoreUnavailable as exc:
            for p in batch:
                p.error = exc
        except Exception:
            for p in batch:
                try:
                    self._write([p.item])
                except Exception as row_exc:
                    p.error = row_exc
                else:
                    p.error = None
                    self.rows += 1
                    self._committed(1)
        else:
            for p in batch:
                p.error = None
            self.batches += 1
            self.rows += len(batch)
            self._committed(len(batch))
        finally:
            for p in batch:
                p.done = True

    def _committed(self, rows: int) -> None:
        # The rows are durable whatever this does: a failing observer never fails a write.
        if self.on_commit is not None:
            try:
                self.on_commit(rows)
            except Exception:
                log.exception("group commit: the commit observer failed")
