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
always completed (result or error): callers never hang. When requests arrive
one at a time, a lone waiting request computes its row early, on an idle run
slot, and still answers only when its batch closes (see `BatchScheduler`).
"""

from __future__ import annotations

import bisect
import collections
import logging
import os
import re
import threading
import time
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Mapping, Optional

import grpc
import numpy as np

from serving.priority import lower_thread_priority
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


_POOL = "scheduler thread"  # the driver of a batch whose tasks were submitted without a waiting caller


@dataclass(eq=False)
class _Task:
    inputs: Mapping[str, np.ndarray]
    size: int
    future: Optional[Future] = None  # submit(): completed by whoever runs the batch
    wake: Optional[Any] = None  # execute(): a held lock its waiting caller blocks on; released to wake it
    outputs: Optional[Outputs] = None
    error: Optional[BaseException] = None
    early: bool = False  # outputs or error come from an early run of the task alone (see BatchScheduler)
    may_run_early: bool = False  # execute(), or submit(..., early_run=True): an early run is allowed
    done: bool = False


@dataclass(eq=False)
class _Queue:
    key: Hashable
    run: RunFn
    batches: collections.deque = field(default_factory=collections.deque)


@dataclass(eq=False)
class _Batch:
    queue: _Queue
    opened: float
    lead: threading.Condition  # its driver waits here (full, timeout, a free run slot)
    tasks: list[_Task] = field(default_factory=list)
    size: int = 0
    full: bool = False  # no task joins any more, and it is due
    sealed: bool = False  # no task joins any more (its driver ran its task early), due at its timeout
    picked: bool = False  # out of its queue: holds a run slot, running or run
    due: bool = False  # in the scheduler's list of batches waiting for a run slot
    driver: Any = None  # the _Task whose caller runs it, _POOL, or None (waits for a scheduler thread)
    slotless: bool = False  # picked with every task run early: completed without taking a run slot


class BatchScheduler:
    """Merges concurrent tasks of one queue into batches, at most `num_batch_threads` of them running at once.

    `execute(key, run, inputs, timeout)` returns the task's own rows of `run`'s outputs. `key` names
    the queue (callers include the model version, the signature and the inputs' shapes past
    dimension 0, so tasks of one queue concatenate); `run` maps concatenated inputs to outputs whose
    dimension 0 is the batch's rows. The first caller of a batch leads it: it waits until the batch
    is full or `batch_timeout_micros` old and a run slot is free (oldest due batch first), then runs
    the batch on its own thread and hands the other callers their rows, so no thread hand-off
    happens on the way in. A batch of one task runs on its inputs as they are (no merge, no split).
    `submit(key, run, inputs)` is the same for callers that do not wait: it returns a Future, and
    the scheduler's `num_batch_threads` threads lead the batches nobody waits on. `stats` counts
    batches and tasks (for tests and benchmarks). `thread_nice`: the scheduler threads run at this
    nice value (`serving.priority`; 0 keeps the creating thread's).

    Early run of a lone task (`early_run`, on by default): when a waiting caller's batch still holds
    only its task `early_run_micros` after it opened (default a quarter of `batch_timeout_micros`),
    the scheduler is idle (no batch running or due) and the last batch it ran held one task too
    (requests arrive one at a time, so a batch rarely forms), the caller runs its task alone at once,
    on a run slot, and its batch takes no more tasks (later ones open the next batch, as when a batch
    is full). The early caller gets exactly the unbatched result, no sooner than its batch's timeout,
    so a lone request still waits `batch_timeout_micros`; what changes is that its computation
    happens right after it arrived, while the process's threads and caches are warm, instead of
    after the idle wait.
    """

    def __init__(self, params: BatchingParameters, early_run: bool = True,
                 early_run_micros: Optional[int] = None, thread_nice: int = 0) -> None:
        self.params = params
        self.thread_nice = thread_nice  # the scheduler threads' nice value (serving.priority)
        self.early_run = early_run
        self.early_run_micros = params.batch_timeout_micros // 4 if early_run_micros is None else early_run_micros
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # scheduler threads wait here for batches to lead
        self._queues: dict[Hashable, _Queue] = {}
        self._detached: collections.deque[_Batch] = collections.deque()  # batches without a driver yet
        self._due: list[_Batch] = []  # due batches waiting for a run slot, oldest first
        self._free_slots = params.num_batch_threads
        self._last_lone = True  # the last batch run held one task: requests are arriving one at a time
        self._stopped = False
        self.stats = collections.Counter()
        self._threads = [threading.Thread(target=self._loop, name=f"serving-batch-{i}", daemon=True)
                         for i in range(params.num_batch_threads)]
        for t in self._threads:
            t.start()

    # ---------------------------------------------------------------- entry points

    def execute(self, key: Hashable, run: RunFn, inputs: Mapping[str, np.ndarray],
                timeout: Optional[float] = None) -> Outputs:
        """Runs one task (all inputs share dimension 0) in a batch of its queue; returns its rows of the outputs.

        Raises:
          RequestError: INVALID_ARGUMENT for a task larger than max_batch_size; UNAVAILABLE when the
            queue is full or the scheduler is stopped; DEADLINE_EXCEEDED when no result came within
            `timeout` seconds (a task whose batch has not started yet leaves it). Errors of `run`
            are raised as they are.
        """
        task = _Task(inputs, self._task_size(inputs), wake=threading.Lock(), may_run_early=True)
        task.wake.acquire()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            batch = self._enqueue(key, run, task)
            if batch.driver is None:  # this caller leads the batch (and takes it from the scheduler threads)
                if batch in self._detached:
                    self._detached.remove(batch)
                batch.driver = task
            leads = self._lead_or_wait(batch, task, deadline, timeout)
        while not leads:
            # Blocks on the task's own lock, not the scheduler's: whoever completes the batch (or hands this
            # caller its lead) releases it, and a completed caller returns without taking the scheduler's lock.
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is None or remaining > 0:
                task.wake.acquire(timeout=-1 if remaining is None else remaining)
            if task.done:
                break
            with self._lock:
                leads = self._lead_or_wait(batch, task, deadline, timeout)
        if leads:  # this caller holds the batch's run slot
            self._run_batch(batch)
        if task.error is not None:
            raise task.error
        assert task.outputs is not None
        return task.outputs

    def submit(self, key: Hashable, run: RunFn, inputs: Mapping[str, np.ndarray], early_run: bool = False) -> Future:
        """Enqueues one task for the scheduler's threads; returns the Future of its outputs.

        `early_run`: when the task is alone in its batch under the conditions of the class docstring,
        the scheduler thread leading the batch runs it early (as `execute` does for its caller); the
        Future still completes only when the batch is due. Off by default, so the task waits for
        others to join.

        Raises:
          RequestError: INVALID_ARGUMENT for a task larger than max_batch_size; UNAVAILABLE when
            the queue is full or the scheduler is stopped.
        """
        task = _Task(inputs, self._task_size(inputs), future=Future(), may_run_early=early_run)
        with self._lock:
            batch = self._enqueue(key, run, task)
            if batch.driver is None and batch not in self._detached:
                self._detached.append(batch)
                self._cond.notify()
        return task.future

    def _lead_or_wait(self, batch: _Batch, task: _Task, deadline: Optional[float], timeout: Optional[float]) -> bool:
        """(Lock held.) True when `task`'s caller now holds `batch`'s run slot; False: wait (or done).

        Raises:
          RequestError: DEADLINE_EXCEEDED once `deadline` has passed (a task whose batch has not started
            leaves it).
        """
        if task.done:
            return False
        if batch.driver is task and not batch.picked:
            if not self._await_turn(batch, deadline):
                self._leave(batch, task)
                raise _deadline(timeout)
            return True
        if deadline is not None and deadline - time.monotonic() <= 0:
            if not batch.picked:
                self._leave(batch, task)
            raise _deadline(timeout)
        return False

    def stop(self, timeout: float = 5.0) -> None:
        """Refuses new tasks, runs the queued ones, and waits up to `timeout` s for the scheduler threads."""
        with self._lock:
            self._stopped = True
            self._cond.notify_all()
            for queue in self._queues.values():
                for batch in queue.batches:
                    batch.lead.notify_all()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    # ---------------------------------------------------------------- queues (called with the lock held)

    def _task_size(self, inputs: Mapping[str, np.ndarray]) -> int:
        sizes = {int(v.shape[0]) for v in inputs.values()}
        if len(sizes) != 1:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               "Batching session Run() input tensors must have equal 0th-dimension size")
        size = sizes.pop()
        limit = self.params.max_batch_size
        if size > limit:
            raise RequestError(grpc.StatusCode.INVALID_ARGUMENT,
                               f"Task size {size} is larger than maximum input batch size {limit}")
        return size

    def _enqueue(self, key: Hashable, run: RunFn, task: _Task) -> _Batch:
        """Adds `task` to its queue's open batch (a new one if it does not fit); returns that batch."""
        if self._stopped:
            raise RequestError(grpc.StatusCode.UNAVAILABLE, "the server is shutting down")
        limit = self.params.max_batch_size
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = _Queue(key, run)
        last = queue.batches[-1] if queue.batches else None
        tail = last if last is not None and not last.full and not last.sealed else None
        if tail is None or tail.size + task.size > limit:
            if len(queue.batches) >= self.params.max_enqueued_batches:
                self.stats["rejected"] += 1
                raise RequestError(grpc.StatusCode.UNAVAILABLE,
                                   "The batch scheduling queue to which this task was submitted is full; "
                                   f"currently {len(queue.batches)} batches enqueued and max_enqueued_batches "
                                   f"is {self.params.max_enqueued_batches}")
            if tail is not None:
                self._close(tail)
            tail = _Batch(queue, time.monotonic(), threading.Condition(self._lock))
            queue.batches.append(tail)
        tail.tasks.append(task)
        tail.size += task.size
        if tail.size >= limit:
            self._close(tail)
        return tail

    @staticmethod
    def _close(batch: _Batch) -> None:
        """No task joins `batch` any more: its driver may run it now."""
        batch.full = True
        batch.lead.notify()

    def _await_turn(self, batch: _Batch, deadline: Optional[float]) -> bool:
        """Waits (as `batch`'s driver) until it is due and holds a run slot, then takes it out of its queue.

        Due: full, `batch_timeout_micros` old, or the scheduler stopping. Run slots go to the oldest
        due batch first. Returns False, still queued, when `deadline` passes first.
        """
        timeout_s = self.params.batch_timeout_micros / 1e6
        early_s = self.early_run_micros / 1e6
        while True:
            now = time.monotonic()
            wait: Optional[float] = None
            if batch.full or self._stopped or now >= batch.opened + timeout_s:
                if batch.tasks and all(t.early for t in batch.tasks):  # nothing left to run: no slot needed
                    self._undue(batch)
                    self._pick(batch)
                    batch.slotless = True
                    return True
                if not batch.due:
                    batch.due = True
                    bisect.insort(self._due, batch, key=lambda b: b.opened)
                if self._free_slots > 0 and self._due[0] is batch:
                    self._due.pop(0)
                    batch.due = False
                    self._free_slots -= 1
                    self._pick(batch)
                    if self._free_slots > 0 and self._due:
                        self._due[0].lead.notify()
                    return True
            elif self._may_run_early(batch):
                if now >= batch.opened + early_s:
                    self._run_early(batch)
                    continue
                wait = batch.opened + early_s - now
            else:
                wait = batch.opened + timeout_s - now
            if deadline is not None:
                if deadline <= now:
                    self._undue(batch)
                    return False
                wait = deadline - now if wait is None else min(wait, deadline - now)
            batch.lead.wait(wait)

    def _may_run_early(self, batch: _Batch) -> bool:
        """Whether `batch`'s waiting driver may run its lone task now (see the class docstring)."""
        if not (self.early_run and self._last_lone and len(batch.tasks) == 1):
            return False
        task = batch.tasks[0]
        return (task.may_run_early and not task.early and (batch.driver is task or batch.driver is _POOL)
                and not self._due and self._free_slots == self.params.num_batch_threads)

    def _run_early(self, batch: _Batch) -> None:
        """(Lock held, released meanwhile.) Runs the lone task alone on a run slot; the batch takes no more tasks."""
        task = batch.tasks[0]
        task.early = True
        batch.sealed = True  # later tasks open the next batch: none waits for this run past its own timeout
        self._free_slots -= 1
        self.stats["early_runs"] += 1
        self._lock.release()
        try:
            _run_alone(batch.queue.run, task)
        finally:
            self._lock.acquire()
            self._free_slots += 1
            if self._due:
                self._due[0].lead.notify()

    def _undue(self, batch: _Batch) -> None:
        """Takes `batch` off the list of due batches (the next one may take a free slot)."""
        if batch.due:
            self._due.remove(batch)
            batch.due = False
            if self._free_slots > 0 and self._due:
                self._due[0].lead.notify()

    def _pick(self, batch: _Batch) -> None:
        batch.picked = batch.full = True
        queue = batch.queue
        queue.batches.remove(batch)
        if not queue.batches and self._queues.get(queue.key) is queue:
            del self._queues[queue.key]  # re-created on demand; old versions' queues do not pile up

    def _leave(self, batch: _Batch, task: _Task) -> None:
        """`task`'s caller gives up before `batch` started: its rows leave the batch, and so does its lead."""
        batch.tasks.remove(task)
        batch.size -= task.size
        if batch.driver is not task:
            return
        self._undue(batch)
        waiting = [t for t in batch.tasks if t.future is None]
        if waiting:  # another caller of the batch leads it
            batch.driver = waiting[0]
            _wake(waiting[0])
        elif batch.tasks:  # only tasks nobody waits on: the scheduler threads lead it
            batch.driver = None
            self._detached.append(batch)
            self._cond.notify()
        else:
            batch.full = True
            batch.queue.batches.remove(batch)
            if not batch.queue.batches and self._queues.get(batch.queue.key) is batch.queue:
                del self._queues[batch.queue.key]

    # ---------------------------------------------------------------- running

    def _loop(self) -> None:
        """A scheduler thread: leads the batches that nobody waiting on them leads (`submit`)."""
        lower_thread_priority(self.thread_nice)
        while True:
            with self._lock:
                while not self._detached and not self._stopped:
                    self._cond.wait()
                if not self._detached:
                    return
                batch = self._detached.popleft()
                if batch.driver is not None or batch.picked:
                    continue
                batch.driver = _POOL
                self._await_turn(batch, None)
            self._run_batch(batch)

    def _run_batch(self, batch: _Batch) -> None:
        """Runs a picked batch (its driver holds a run slot), completes every task, frees the slot."""
        tasks = batch.tasks
        retried = False
        try:
            # A submitted task whose caller cancelled its Future (gone, or past its deadline) is not computed.
            todo = [t for t in tasks if not t.early and not (t.future is not None and t.future.cancelled())]
            if todo:
                retried = self._compute(batch.queue.run, todo, sum(t.size for t in todo))
        except BaseException as e:  # noqa: BLE001 - every task must be completed, whatever happens
            _log.exception("batch of %d task(s) failed unexpectedly", len(tasks))
            for t in tasks:
                if t.outputs is None and t.error is None:
                    t.error = e
        finally:
            with self._lock:
                self.stats["batches"] += 1
                self.stats["tasks"] += len(tasks)
                self.stats["rows"] += batch.size
                self.stats["split_retries"] += int(retried)
                for t in tasks:
                    t.done = True
                self._last_lone = len(tasks) == 1
                if not batch.slotless:
                    self._free_slots += 1
                if self._due:
                    self._due[0].lead.notify()
            for t in tasks:  # outside the scheduler's lock: the callers woken do not queue for it
                if t.future is not None:
                    _complete(t)
                elif t.wake is not None:
                    _wake(t)

    @staticmethod
    def _compute(run: RunFn, tasks: list[_Task], size: int) -> bool:
        """Sets every task's outputs or error; True when a failed merged batch was re-run task by task."""
        if len(tasks) == 1:  # alone: its own inputs and outputs, nothing merged or split
            _run_alone(run, tasks[0])
            return False
        names = list(tasks[0].inputs)
        try:
            merged = {n: np.concatenate([t.inputs[n] for t in tasks], axis=0) for n in names}
            outputs = run(merged)
            bad = [n for n, v in outputs.items() if v.ndim == 0 or v.shape[0] != size]
            if bad:
                raise RequestError(grpc.StatusCode.INTERNAL, f"outputs {bad} are not batched along dimension 0")
        except Exception:  # noqa: BLE001 - re-run one by one: each request gets its own result or error
            for t in tasks:
                _run_alone(run, t)
            return True
        start = 0
        for t in tasks:  # views of the batch's outputs, no copies
            t.outputs = {n: v[start:start + t.size] for n, v in outputs.items()}
            start += t.size
        return False


def _run_alone(run: RunFn, task: _Task) -> None:
    try:
        task.outputs = run(task.inputs)
    except Exception as e:  # noqa: BLE001 - the caller receives the error
        task.error = e


def _wake(task: _Task) -> None:
    """Wakes `task`'s waiting caller (at most one wake-up stays pending)."""
    try:
        task.wake.release()
    except RuntimeError:  # already released: the caller has a wake-up pending
        pass


def _complete(task: _Task) -> None:
    """Completes a submitted task's Future (unless its caller cancelled it)."""
    assert task.future is not None
    try:
        if task.error is not None:
            task.future.set_exception(task.error)
        else:
            task.future.set_result(task.outputs)
    except InvalidStateError:  # cancelled by its caller
        pass


def _deadline(timeout: Optional[float]) -> RequestError:
    return RequestError(grpc.StatusCode.DEADLINE_EXCEEDED, f"no result within the request's deadline ({timeout:.1f} s)")
