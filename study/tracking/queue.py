"""MLflow writes as one FIFO of operations, delivered in order, retried after an outage.

Why: MLflow being down must never take the study down, and after an outage the writes must land in
their order (a run is created before its metrics and ends after them). Each Tune callback appends
and then tries to drain, stopping at the first failure; after a failure, draining is retried only
every ``retry_interval_s``, so a dead server costs the driver one short HTTP timeout per interval,
not one per result.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any, Callable

__all__ = ["OperationQueue", "undelivered_operations", "record_undelivered"]

logger = logging.getLogger(__name__)

Operation = tuple[str, "str | None", Any]  # (kind, trial id, payload)


class OperationQueue:
    """Buffered operations and when to try delivering them again. Pickled with its owner (the
    tracker's state in ``tuner.pkl``), so what was not delivered before a crash is delivered after."""

    def __init__(self, retry_interval_s: float = 10.0) -> None:
        self.retry_interval_s = retry_interval_s
        self.items: collections.deque[Operation] = collections.deque()
        self._retry_at = 0.0
        self._failing = False  # the last attempt failed (its warning is out; retries go to the log)

    def __len__(self) -> int:
        return len(self.items)

    def submit(self, op: Operation, apply: Callable[..., None]) -> None:
        """Append ``op``; deliver the queue now unless a failure asked to wait."""
        self.items.append(op)
        if time.monotonic() >= self._retry_at:
            self.drain(apply)

    def drain(self, apply: Callable[..., None]) -> bool:
        """Apply operations in order; stop at the first failure. True when the queue is empty.

        An outage is said on the terminal twice: when it starts and when the buffer is delivered;
        each retry in between goes to the study log only (a minute-long outage was 35 lines)."""
        delivered, failing = 0, getattr(self, "_failing", False)  # a queue pickled before this flag
        while self.items:
            try:
                apply(*self.items[0])
            except Exception as exc:
                self._retry_at = time.monotonic() + self.retry_interval_s
                logger.log(logging.INFO if failing else logging.WARNING,
                           "MLflow call failed (%s: %s); %d operation(s) buffered, retrying every %gs.",
                           type(exc).__name__, str(exc).splitlines()[0][:200] if str(exc) else "",
                           len(self.items), self.retry_interval_s)
                self._failing = True
                return False
            self.items.popleft()
            delivered += 1
        if failing:
            logger.warning("MLflow is reachable again: %d buffered operation(s) delivered.", delivered)
            self._failing = False
        return True

    def flush(self, apply: Callable[..., None], timeout_s: float = 0.0) -> bool:
        """Deliver now, retrying for up to ``timeout_s``; True if everything was delivered."""
        deadline = time.monotonic() + timeout_s
        while not self.drain(apply):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            time.sleep(min(self.retry_interval_s, remaining, 2.0))
        return True


#: parent run id -> MLflow operations still undelivered when the experiment ended in this process.
_UNDELIVERED: dict[str, int] = {}


def record_undelivered(parent_run_id: str, count: int) -> None:
    """What the tracker of ``parent_run_id`` left undelivered at the end of ``Tuner.fit``."""
    _UNDELIVERED[parent_run_id] = count


def undelivered_operations(parent_run_id: str) -> int:
    """How many operations the tracker of ``parent_run_id`` could not deliver by the end of
    ``Tuner.fit`` in this process (0 if it delivered everything). The runner turns a non-zero
    count into a non-zero exit: a finished study whose runs MLflow never got is not a success."""
    return _UNDELIVERED.get(parent_run_id, 0)
