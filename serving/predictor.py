"""One Predict path for both APIs: resolve the version, validate the inputs, run (batched or not), filter outputs.

The gRPC servicer hands it TensorProtos (`predict_proto`); the REST handler
decodes JSON against the signature first and hands it arrays (`run`). With a
`BatchScheduler`, requests whose inputs all carry a batch dimension go through
it (see `serving.batching`); the rest run directly on the caller's thread.
"""

from __future__ import annotations

import functools
from concurrent.futures import Future
from typing import Mapping, Optional, Sequence

import numpy as np
from tensorflow_serving.apis import predict_pb2

from serving.batching import BatchScheduler
from serving.model_manager import ModelManager
from serving.servable import Servable
from serving.tensor_codec import (
    RequestError,
    Signature,
    check_names,
    check_shape,
    run_signature,
    signature_of,
    tensor_from_proto,
)

Decoded = tuple[Servable, str, Signature, dict[str, np.ndarray], list[str]]


class Predictor:
    """Runs Predict requests against the manager's served versions, through the batch scheduler if any."""

    def __init__(self, models: ModelManager, scheduler: Optional[BatchScheduler] = None) -> None:
        self.models = models
        self.scheduler = scheduler

    @property
    def max_elements(self) -> int:
        """Largest number of elements an input tensor may have."""
        return self.models.max_elements

    def predict_proto(self, request: predict_pb2.PredictRequest,
                      timeout: Optional[float] = None) -> tuple[Servable, str, dict[str, np.ndarray]]:
        """A gRPC PredictRequest -> (servable, signature key, filtered outputs).

        Raises:
          RequestError: as `ModelManager.resolve`, `tensor_codec.check_names` / `tensor_from_proto`
            and `run`.
        """
        servable, key, signature, arrays, wanted = self.decode_proto(request)
        return servable, key, self.run(servable, key, signature, arrays, wanted, timeout, shapes_checked=True)

    def decode_proto(self, request: predict_pb2.PredictRequest) -> Decoded:
        """A gRPC PredictRequest -> (servable, signature key, signature, input arrays, wanted outputs), not yet run.

        The arrays' shapes are checked here (`tensor_from_proto`): pass `shapes_checked=True` to
        `run` / `submit`.

        Raises:
          RequestError: as `ModelManager.resolve` and `tensor_codec.check_names` / `tensor_from_proto`.
        """
        servable = self.models.resolve(request.model_spec)
        key, signature = signature_of(servable, request.model_spec.signature_name)
        wanted = check_names(key, signature, request.inputs, list(request.output_filter))
        arrays = {n: tensor_from_proto(n, request.inputs[n], spec, self.max_elements)
                  for n, spec in signature.inputs.items()}
        return servable, key, signature, arrays, wanted

    def run(self, servable: Servable, key: str, signature: Signature, arrays: Mapping[str, np.ndarray],
            wanted: Sequence[str], timeout: Optional[float] = None,
            shapes_checked: bool = False) -> dict[str, np.ndarray]:
        """Runs validated-by-name input arrays on `servable`'s signature `key`; returns the `wanted` outputs.

        Shapes are checked here (both APIs) unless `shapes_checked` (arrays from `decode_proto`).
        Batchable requests (every input has the same dimension 0, which the signature leaves open) go
        through the scheduler.

        Raises:
          RequestError: a bad shape, a graph error, a full batch queue (UNAVAILABLE), or no result
            within `timeout` seconds (DEADLINE_EXCEEDED).
        """
        if not shapes_checked:
            self._check_shapes(signature, arrays)
        run = functools.partial(run_signature, key, signature)
        if self.scheduler is None or not _batchable(signature, arrays):
            outputs = run(arrays)
        else:
            outputs = self.scheduler.execute(_queue_key(servable, key, arrays), run, arrays, timeout)
        return {n: outputs[n] for n in wanted}

    def submit(self, servable: Servable, key: str, signature: Signature,
               arrays: Mapping[str, np.ndarray], shapes_checked: bool = False) -> Optional[Future]:
        """Checks the shapes (unless `shapes_checked`) and, for a batchable request, enqueues it; returns the
        Future of all its outputs.

        None: no scheduler, or the request is not batchable (the caller runs it with `run`). The
        scheduler's threads lead the batch (`BatchScheduler.submit`), so the caller may await the
        Future without holding a thread.

        Raises:
          RequestError: a bad shape, a task larger than max_batch_size, or a full queue (UNAVAILABLE).
        """
        if not shapes_checked:
            self._check_shapes(signature, arrays)
        if self.scheduler is None or not _batchable(signature, arrays):
            return None
        run = functools.partial(run_signature, key, signature)
        return self.scheduler.submit(_queue_key(servable, key, arrays), run, arrays, early_run=True)

    def _check_shapes(self, signature: Signature, arrays: Mapping[str, np.ndarray]) -> None:
        """`tensor_codec.check_shape` for every input (RequestError INVALID_ARGUMENT naming the input)."""
        for name, spec in signature.inputs.items():
            check_shape(name, arrays[name].shape, spec, self.max_elements)


def _queue_key(servable: Servable, key: str, arrays: Mapping[str, np.ndarray]) -> tuple:
    """The batch queue of a request: model version, signature, and the inputs' shapes past dimension 0."""
    return (servable.name, servable.version, id(servable), key,
            tuple(sorted((n, a.shape[1:]) for n, a in arrays.items())))


def _batchable(signature: Signature, arrays: Mapping[str, np.ndarray]) -> bool:
    """Every input has rank >= 1, one shared non-zero dimension 0, and a spec that leaves dimension 0 open."""
    if not signature.batch_dim_open:
        return False
    sizes = set()
    for name in signature.inputs:
        a = arrays[name]
        if a.ndim == 0:
            return False
        sizes.add(a.shape[0])
    return len(sizes) == 1 and 0 not in sizes
