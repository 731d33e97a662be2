"""Server-side request batching as TF Serving does it (`--enable_batching --batching_parameters_file`).

`read_batching_parameters` reads TF Serving's text-format `BatchingParameters`
(`batching_parameters.txt`). `BatchScheduler` follows TF's shared batch
scheduler: one queue per (model version, signature, input shapes past the batch
dimension); a task joins the queue's open batch, which closes when it reaches
`max_batch_size` rows or has waited `batch_timeout_micros`; `num_batch_threads`
threads shared by all queues run the closed batches (oldest first), each as ONE
call of the signature on the inputs concatenated along dimension 0, and split
the outputs back by rows. A queue holding `max_enqueued_batches` batches
refuses new batches with UNAVAILABLE ("The batch scheduling queue to which this
task was submitted is full"); a task larger than `max_batch_size` is
INVALID_ARGUMENT, as in TF Serving.

Where this differs from TF Serving: requests whose inputs differ past dimension 0
(e.g. history widths) go to different queues instead of failing the batch, and a
merged batch that fails (one row with k above max_k, say) is re-run request by
request, so one bad request never fails the others. Every task's future is
always completed (result or error): callers never hang.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable, Hashable, Mapping, Optional

import grpc
import numpy as np

from serving.tensor_codec import RequestError

_log = logging.getLogger("learn_tf.serving")

Outputs = dict[str, np.ndarray]
RunFn = Callable[[Mapping[str, np.ndarray]], Outputs]


@dataclass(frozen=True)
class BatchingParameters:
    """TF Serving's `BatchingParameters` (defaults as TF's SharedBatchScheduler)."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = field(default_factory=lambda: os.cpu_count() or 1)

    def __post_init__(self) -> None:
        for name in ("max_batch_size", "max_enqueued_batches", "num_batch_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"batching parameter {name} must be >= 1, got {getattr(self, name)}")
        if self.batch_timeout_micros < 0:
            raise ValueError(f"batch_timeout_micros must be >= 0, got {self.batch_timeout_micros}")


_WRAPPED = re.compile(r"^\s*(\w+)\s*\{\s*value\s*:\s*([^}\s]+)\s*\}\s*$")
_PLAIN = re.compile(r"^\s*(\w+)\s*:\s*(\S+)\s*$")
_INT_FIELDS = {"max_batch_size", "batch_timeout_micros", "max_enqueued_batches", "num_batch_threads"}
_IGNORED = {"thread_pool_name", "max_execution_batch_size"}


def read_batching_parameters(path: str) -> BatchingParameters:
    """Parses a text-format `BatchingParameters` file (one field per line, `#` comments).

    Raises:
      ValueError: naming the file and line of an unknown field, a bad value, or an option this
        server does not implement (`pad_variable_length_inputs: true`, `allowed_batch_sizes`,
        `enable_large_batch_splitting { value: true }`).
    """
    values: dict[str, int] = {}
    with open(path) as f:
        for n, raw in enumerate(f, 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            m = _WRAPPED.match(line) or _PLAIN.match(line)
            if not m:
                raise ValueError(f"{path}:{n}: cannot parse {line!r} (expected 'name {{ value: N }}')")
            name, value = m.group(1), m.group(2).strip('"')
            if name in _INT_FIELDS:
                try:
                    values[name] = int(value)
                except ValueError:
                    raise ValueError(f"{path}:{n}: {name} must be an integer, got {value!r}") from None
            elif name in ("pad_variable_length_inputs", "enable_large_batch_splitting"):
                if value not in ("true", "false"):
                    raise ValueError(f"{path}:{n}: {name} must be true or false, got {value!r}")
                if value == "true":
                    raise ValueError(f"{path}:{n}: {name} is not supported by this server (requests with "
                                     "different shapes are batched separately instead)")
            elif name == "allowed_batch_sizes":
                raise ValueError(f"{path}:{n}: allowed_batch_sizes is not supported by this server")
            elif name not in _IGNORED:
                raise ValueError(f"{path}:{n}: unknown batching parameter {name!r}")
    return BatchingParameters(**values)


@dataclass
class _Task:
    inputs: Mapping[str, np.ndarray]
    size: int
    future: Future


@dataclass
class _Batch:
    opened: float
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    closed: bool = False


@dataclass
class _Queue:
    run: RunFn
    batches: collections.deque = field(default_factory=collections.deque)


class BatchScheduler:
    """Merges concurrent tasks of one queue into batches run by a shared pool of batch threads.

    `submit(key, run, inputs)` returns a Future of the task's own rows of `run`'s outputs. `key`
    names the queue (callers include the model version, the signature and the inputs' shapes past
    dimension 0, so tasks of one queue concatenate); `run` maps concatenated inputs to outputs whose
    dimension 0 is the batch's rows. `stats` counts batches and tasks (for tests and benchmarks).
    """

    def __init__(self, params: BatchingParameters) -> None:
        self.params = params
        self._cond = threading.Condition()
        self._queues: dict[Hashable, _Queue] = {}
        self._stopped = False
        self.stats = collections.Counter()
        self._threads = [threading.Thread(target=self._loop, name=f"serving-batch-{i}", daemon=True)
                         for i in range(params.num_batch_threads)]
        for t in self._threads:
            t.start()

    def submit(self, key: Hashable, run: RunFn, inputs: Mapping[str, np.ndarray]) -> Future:
        """Enqueues one task (all inputs share dimension 0); returns the Future of its outputs.

        Raises:
          RequestError: INVALID_ARGUMENT for a task larger than max_batch_size; UNAVAILABLE when
            the queue is full or the scheduler is stopped.
        """
        sizes = {int(v.shape[0]) for v in inputs.values()}
        if len(sizes) != 1:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "Batching session Run() input tensors must have equal 0th-dimension size")
        size = sizes.pop()
        limit = self.params.max_batch_size
        if size > limit:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Task size {size} is larger than maximum input batch size {limit}")
        task = _Task(inputs, size, Future())
        with self._cond:
            if self._stopped:
                raise RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(run)
            tail = queue.batches[-1] if queue.batches and not queue.batches[-1].closed else None
            if tail is None or tail.size + size > limit:
                if len(queue.batches) >= self.params.max_enqueued_batches:
                    self.stats["rejected"] += 1
                    raise RequestError(grpc.StatusCode.UNAVAILABLE,
                                       "The batch scheduling queue to which this task was submitted is full; "
                                       f"currently {len(queue.batches)} batches enqueued and max_enqueued_batches "
                                       f"is {self.params.max_enqueued_batches}")
                if tail is not None:
                    tail.closed = True
                tail = _Batch(opened=time.monotonic())
                queue.batches.append(tail)
            tail.tasks.append(task)
            tail.size += size
            if tail.size >= limit:
                tail.closed = True
            self._cond.notify()
        return task.future

    def _next_batch(self) -> Optional[tuple[_Queue, _Batch]]:
        """Waits for the oldest batch that is closed or past its timeout; None once stopped and drained."""
        timeout_s = self.params.batch_timeout_micros / 1e6
        with self._cond:
            while True:
                now = time.monotonic()
                best, wait = None, None
                for key, queue in self._queues.items():
                    if not queue.batches:
                        continue
                    head = queue.batches[0]
                    due = head.opened + timeout_s
                    if head.closed or due <= now or self._stopped:
                        if best is None or head.opened < best[2].opened:
                            best = (key, queue, head)
                    else:
                        wait = due - now if wait is None else min(wait, due - now)
                if best is not None:
                    key, queue, batch = best
                    queue.batches.popleft()
                    batch.closed = True
                    if not queue.batches:
                        del self._queues[key]  # re-created on demand; old versions' queues do not pile up
                    return queue, batch
                if self._stopped:
                    return None
                self._cond.wait(wait)

    def _loop(self) -> None:
        while True:
            item = self._next_batch()
            if item is None:
                return
            queue, batch = item
            try:
                self._run(queue.run, batch)
            except BaseException as e:  # noqa: BLE001 - a batch thread must survive and complete every future
                _log.exception("batch of %d task(s) failed unexpectedly", len(batch.tasks))
                for t in batch.tasks:
                    if not t.future.done():
                        t.future.set_exception(e)

    def _run(self, run: RunFn, batch: _Batch) -> None:
        tasks = batch.tasks
        self.stats["batches"] += 1
        self.stats["tasks"] += len(tasks)
        self.stats["rows"] += batch.size
        if len(tasks) == 1:
            self._run_alone(run, tasks[0])
            return
        names = list(tasks[0].inputs)
        try:
            merged = {n: np.concatenate([t.inputs[n] for t in tasks], axis=0) for n in names}
            outputs = run(merged)
            bad = [n for n, v in outputs.items() if v.ndim == 0 or v.shape[0] != batch.size]
            if bad:
                raise RequestError(grpc.StatusCode.INTERNAL, f"outputs {bad} are not batched along dimension 0")
        except Exception:  # noqa: BLE001 - re-run one by one: each request gets its own result or error
            self.stats["split_retries"] += 1
            for t in tasks:
                self._run_alone(run, t)
            return
        start = 0
        for t in tasks:
            t.future.set_result({n: v[start:start + t.size] for n, v in outputs.items()})
            start += t.size

    @staticmethod
    def _run_alone(run: RunFn, task: _Task) -> None:
        try:
            task.future.set_result(run(task.inputs))
        except BaseException as e:  # noqa: BLE001 - the caller receives the error
            task.future.set_exception(e)

    def stop(self, timeout: float = 5.0) -> None:
        """Refuses new tasks, runs the queued ones, and waits up to `timeout` s for the batch threads."""
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
