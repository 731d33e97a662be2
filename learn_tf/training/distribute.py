"""Distributed training from `TF_CONFIG`: which `tf.distribute` strategy, and towers built in its scope.

- `TF_CONFIG` naming two or more tasks (workers, chief): `MultiWorkerMirroredStrategy`
  (synchronous data parallelism; gradients all-reduced every step, so every
  worker ends with the same weights). Vertex AI Training and Kubernetes set
  `TF_CONFIG` for each replica of a worker pool.
- No `TF_CONFIG` but several local GPUs: `MirroredStrategy`.
- Otherwise: no strategy; training runs exactly as on one process.

`trainer.train` calls `distributed_towers`: under a strategy it trains a copy
of the towers created in the strategy's scope (Keras then distributes the
dataset and all-reduces the gradients) and copies the trained weights back.
Only the chief writes checkpoints and logs to the run's folder
(`worker_output_dir`); other workers write to a scratch folder.

MultiWorkerMirroredStrategy must be configured before TensorFlow runs its
first op, so with a multi-task `TF_CONFIG` it is created when this module is
imported (`learn train` and the Trainer's `run_fn` import it through
`learn_tf.training.trainer` before any op runs).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Any, Iterator, Mapping, Optional

import numpy as np
import tensorflow as tf

_STRATEGY: dict[str, Any] = {}


def tf_config(env: Optional[Mapping[str, str]] = None) -> dict[str, Any]:
    """The parsed `TF_CONFIG` ({} when unset or empty)."""
    raw = (os.environ if env is None else env).get("TF_CONFIG", "")
    return json.loads(raw) if raw.strip() else {}


def num_tasks(config: Mapping[str, Any]) -> int:
    """How many training tasks (chief + workers) `TF_CONFIG`'s cluster names."""
    cluster = config.get("cluster", {})
    return sum(len(cluster.get(role, [])) for role in ("chief", "worker"))


def is_chief(env: Optional[Mapping[str, str]] = None) -> bool:
    """True for the task that writes the outputs: the chief, else worker 0, or a single process."""
    config = tf_config(env)
    task = config.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return task.get("type") == "worker" and int(task.get("index", 0)) == 0 and "chief" not in config.get("cluster", {})


def strategy_kind(env: Optional[Mapping[str, str]] = None, num_gpus: Optional[int] = None) -> str:
    """"multi_worker", "mirrored" or "none" for this process's `TF_CONFIG` and devices."""
    if num_tasks(tf_config(env)) >= 2:
        return "multi_worker"
    gpus = len(tf.config.list_physical_devices("GPU")) if num_gpus is None else num_gpus
    return "mirrored" if gpus >= 2 else "none"


def strategy() -> Optional[tf.distribute.Strategy]:
    """The process's strategy (created once, on first call): see the module docstring; None = no strategy.

    MultiWorkerMirroredStrategy must be created before the first collective
    op; call this early in a worker process.
    """
    if "strategy" not in _STRATEGY:
        kind = strategy_kind()
        if kind == "multi_worker":
            options = tf.distribute.experimental.CommunicationOptions(
                implementation=tf.distribute.experimental.CommunicationImplementation.RING)
            _STRATEGY["strategy"] = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
        elif kind == "mirrored":
            _STRATEGY["strategy"] = tf.distribute.MirroredStrategy()
        else:
            _STRATEGY["strategy"] = None
    return _STRATEGY["strategy"]


def _build(towers: tf.keras.Model) -> None:
    """Creates every weight of the towers (as `jobs.save_towers` does before saving)."""
    towers.users(tf.zeros([1, 1], tf.int32))
    towers.items(tf.ones([1], tf.int32))


@contextlib.contextmanager
def distributed_towers(towers: tf.keras.Model) -> Iterator[tf.keras.Model]:
    """Yields the towers to train, inside the strategy's scope when there is one.

    Without a strategy: `towers` itself, no scope (the single-process path).
    With one: a copy (same class and config) created in the scope, holding
    the chief's weights on every worker (workers may have initialised their
    towers differently); the block builds the model and optimizer and trains
    there; on success the copy's weights are written back into `towers`.
    """
    dist = strategy()
    if dist is None:
        yield towers
        return
    _build(towers)
    with dist.scope():
        replica = type(towers).from_config(towers.get_config())
        _build(replica)
        replica.set_weights(chief_weights(dist, towers.get_weights()))
        yield replica
    towers.set_weights(replica.get_weights())


def chief_weights(dist: tf.distribute.Strategy, weights: list[np.ndarray]) -> list[np.ndarray]:
    """The chief's (global replica 0's) `weights` on every worker: one all-reduce of the flattened values."""
    if not weights:
        return weights
    flat = np.concatenate([np.asarray(w, np.float64).ravel() for w in weights])

    @tf.function
    def keep_replica_zero(x: tf.Tensor) -> tf.Tensor:
        ctx = tf.distribute.get_replica_context()
        return x * tf.cast(tf.equal(ctx.replica_id_in_sync_group, 0), x.dtype)

    per_replica = dist.run(keep_replica_zero, args=(tf.constant(flat),))
    total = dist.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None).numpy()
    out, start = [], 0
    for w in weights:
        w = np.asarray(w)
        out.append(total[start:start + w.size].reshape(w.shape).astype(w.dtype))
        start += w.size
    return out


def worker_output_dir(output_dir: Optional[str]) -> Optional[str]:
    """`output_dir` for the chief (or a single process); a fresh scratch folder for other workers."""
    if output_dir is None or is_chief():
        return output_dir
    return tempfile.mkdtemp(prefix="learn-worker-")  # non-chief checkpoints/logs: local scratch, never published


if num_tasks(tf_config()) >= 2:  # collective ops must be configured at program startup (see above)
    strategy()
