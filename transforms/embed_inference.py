"""The Pillow path's model for Beam's ``RunInference`` (used by :mod:`transforms.embed`).

A module of its own because ``apache_beam.ml.inference`` imports torch: :mod:`transforms.embed`
imports it only when it builds the Pillow path, so worker processes that unpickle the batched
path's steps (listing, reading, sending bytes to the machine's shared model) start without it.
"""
import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from gridtsne import models


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
