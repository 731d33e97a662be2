"""Scheduling priority: the threads that run models yield the CPU to the threads that move requests.

On a machine whose cores are all busy, the gRPC event loop (which decodes requests,
hands them to the batch queues and writes the answers) competes for the CPU with
the threads that run the model. When the model wins, requests wait in the loop's
queue instead of in the batch queue, batches stay small, and the loop falls behind
further. `ModelServer` therefore runs its model threads at a higher nice value
(`--compute_nice`; by default `DEFAULT_COMPUTE_NICE` with batching on, 0 without, see
`resolve_nice`): the batch scheduler's threads,
the pool that runs unbatched model calls, the REST handler pool, the model
poller (loading a new version) and TensorFlow's own thread pools, which inherit the
nice value of the thread that starts TensorFlow's runtime (`start_tensorflow_at`).
The front-end threads keep the process's priority. Only raising nice values
(lowering priority) is used, which needs no privilege.

Nice values are per thread on Linux; elsewhere these functions do nothing.
At 1M items, concurrency 32, batching on: docs/benchmarks.md, "Request batching".
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Optional

_log = logging.getLogger("learn_tf.serving")

DEFAULT_COMPUTE_NICE = 10
MAX_NICE = 19


def resolve_nice(nice: Optional[int], batching: bool) -> int:
    """The nice value of the model threads: `nice` when given (checked), else `DEFAULT_COMPUTE_NICE` with
    batching and 0 without.

    Without batching the model threads are the requests' own path: at 1M items an unbatched server
    at nice 10 served 0.90-1.03x the requests per second of one at 0 (five pairs, mean 0.96x), so
    the default leaves it at 0 (docs/benchmarks.md, "Request batching").

    Raises:
      ValueError: outside 0..19.
    """
    if nice is None:
        return DEFAULT_COMPUTE_NICE if batching else 0
    return check_nice(nice)


def check_nice(nice: int) -> int:
    """`nice` if it is a valid nice increment (0 to 19).

    Raises:
      ValueError: outside 0..19.
    """
    if not 0 <= int(nice) <= MAX_NICE:
        raise ValueError(f"compute nice must be in 0..{MAX_NICE}, got {nice}")
    return int(nice)


def supported() -> bool:
    """Whether thread nice values are supported here (Linux, where nice is a per-thread attribute)."""
    return sys.platform.startswith("linux") and hasattr(os, "setpriority")


def thread_nice() -> int:
    """The calling thread's nice value (0 where unsupported)."""
    return os.getpriority(os.PRIO_PROCESS, 0) if supported() else 0


def lower_thread_priority(nice: int) -> None:
    """Raises the calling thread's nice value to at least `nice` (never lowers it; no-op for 0 or off Linux).

    Threads it starts later inherit the value. A thread that cannot change its nice value logs why
    and carries on at its priority.
    """
    if not nice or not supported():
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, 0)
        if current < nice:
            os.setpriority(os.PRIO_PROCESS, 0, nice)  # who=0: the calling thread on Linux
    except OSError as e:  # e.g. a seccomp profile that forbids it: serving still works
        _log.warning("could not lower the priority of thread %s to nice %d: %s", threading.current_thread().name,
                     nice, e)


def start_tensorflow_at(nice: int) -> bool:
    """Starts TensorFlow's runtime from a thread at nice `nice`, so its thread pools inherit that value.

    Returns False (and changes nothing) for nice 0, where nice values are unsupported, and when the
    runtime has already started in this process (then its pools keep their priority, which is
    logged); True otherwise.
    """
    if not nice or not supported():
        return False
    from tensorflow.python.eager import context  # the runtime's state; public APIs start it implicitly

    if getattr(context.context(), "_initialized", True):
        _log.info("TensorFlow's thread pools keep their priority (TensorFlow started before nice %d was asked)", nice)
        return False
    started: list[bool] = []

    def run() -> None:
        import tensorflow as tf

        lower_thread_priority(nice)
        tf.constant(0)  # creates the eager context and its thread pools on this thread
        started.append(True)

    thread = threading.Thread(target=run, name="serving-tf-start", daemon=True)
    thread.start()
    thread.join()
    return bool(started)
