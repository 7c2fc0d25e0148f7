"""The Pillow path's model for Beam's ``RunInference`` (used by :mod:`transforms.embed`).

A module of its own because ``apache_beam.ml.inference`` imports torch: :mod:`transforms.embed`
imports it only when it builds the Pillow path, so worker processes that unpickle the batched
path's steps (listing, reading, sending bytes to the machine's shared model) start without it;
and it imports Beam's module without the part that pulls in torch (below), so a launcher that
builds the Pillow path's graph does not load torch either.
"""
import sys

import numpy as np

# ``apache_beam.ml.inference.base`` imports torch (~1.2 CPU-s) only for its optional
# ModelManager, in a ``try: ... except ImportError``, and imports it again itself where a model
# manager is asked for (gridtsne never asks). Hiding that one module while ``base`` loads keeps
# torch out of a launcher that only builds the graph: torch is loaded where a model is.
# The same ``try`` imports ``resource`` (the memory figures RunInference reports); the failed
# import leaves it None, so it is put back, else every batch logs that memory cannot be read.
_MODEL_MANAGER = "apache_beam.ml.inference.model_manager"
if "apache_beam.ml.inference.base" not in sys.modules and _MODEL_MANAGER not in sys.modules:
    sys.modules[_MODEL_MANAGER] = None  # importing it raises ImportError meanwhile
    try:
        import apache_beam.ml.inference.base as _base
    finally:
        if sys.modules.get(_MODEL_MANAGER, ()) is None:
            del sys.modules[_MODEL_MANAGER]
    if _base.resource is None:
        try:
            import resource as _resource
        except ImportError:  # not on this platform: Beam's own answer
            pass
        else:
            _base.resource = _resource

from apache_beam.ml.inference.base import ModelHandler  # noqa: E402

from gridtsne import models  # noqa: E402


class EmbeddingModelHandler(ModelHandler):
    """RunInference handler for :mod:`gridtsne.models`: uint8 HWC arrays in, vectors out.

    Our own handler rather than ``PytorchModelHandlerTensor`` because (a) the default model
    is loaded by mapping another implementation's state dict, which that handler's
    ``state_dict_path`` + ``model_class`` cannot express; (b) the examples travel as uint8
    (a quarter of a float tensor) and are normalised once per batch on the device; (c) it runs
    under ``torch.inference_mode()`` with channels-last activations; (d) ``--device auto`` is
    resolved on the worker, not on the launcher.

    Only names and numbers are stored here; the model is built in :meth:`load_model`, once
    per worker process (RunInference shares it between the process's threads).
    """

    def __init__(self, config):
        super().__init__(min_batch_size=config.batch_size, max_batch_size=config.batch_size)
        self._config = config

    def load_model(self):
        import torch

        if self._config.torch_threads:
            torch.set_num_threads(self._config.torch_threads)
        loaded = models.load_model(self._config.model, self._config.weights,
                                   self._config.device, self._config.channels_last,
                                   precision=self._config.precision,
                                   pooling=self._config.pooling)
        models.check_weights(loaded, self._config.weights_sha256)
        return loaded

    def run_inference(self, batch, model, inference_args=None):
        vectors = models.embed_batch(model, np.stack(batch))
        return list(vectors)

    def get_num_bytes(self, batch):
        return sum(int(a.nbytes) for a in batch)

    def get_metrics_namespace(self):
        return "gridtsne.embed.RunInference"
