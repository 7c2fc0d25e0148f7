"""Pooling of the last feature map: GeM's arithmetic, the choice per model, and what it changes."""
import numpy as np
import pytest
import torch
from apache_beam.options.pipeline_options import PipelineOptions

from gridtsne import models, reindex
from gridtsne.decode import DecodeConfig, decode_image
from gridtsne.pooling import gem_pool, resolve_pooling
from tests import image_corpus as corpus


def _batch(*names):
    return np.stack([decode_image(corpus.jpeg_bytes(corpus.photo(n)), DecodeConfig()).pixels
                     for n in names])


def test_gem_lies_between_the_mean_and_the_maximum():
    fmap = torch.rand(2, 5, 7, 7, generator=torch.Generator().manual_seed(0))
    gem = gem_pool(fmap)
    assert gem.shape == (2, 5)
    assert torch.all(gem > fmap.mean((2, 3))) and torch.all(gem < fmap.amax((2, 3)))
    assert torch.allclose(gem_pool(fmap, p=1.0), fmap.mean((2, 3)), atol=1e-6)
    assert torch.allclose(gem_pool(torch.full((1, 3, 4, 4), 2.5)), torch.full((1, 3), 2.5))
    # A feature present in one corner only counts for more than under the average.
    spot = torch.zeros(1, 1, 4, 4)
    spot[0, 0, 0, 0] = 16.0
    assert float(gem_pool(spot)) == pytest.approx(16.0 / 16 ** (1 / 3), rel=1e-4)


def test_pooling_choice_per_model():
    assert resolve_pooling("auto", ("gem", "avg"), "m") == "gem"
    assert resolve_pooling("avg", ("gem", "avg"), "m") == "avg"
    with pytest.raises(ValueError, match="'max'"):
        resolve_pooling("max", ("gem", "avg"), "m")
    # Refused before any weights are fetched: convnext_tiny's map is signed.
    with pytest.raises(ValueError, match="convnext_tiny.*'gem'"):
        models.load_model("convnext_tiny", device="cpu", pooling="gem")
    assert models.load_model("tests.tiny_model:TINY", device="cpu").pooling == "avg"


@pytest.fixture(scope="module")
def lite0_both():
    return (models.load_model(device="cpu"), models.load_model(device="cpu", pooling="avg"))


def test_default_model_vectors_are_gem_pooled(lite0_both):
    gem, avg = lite0_both
    assert (gem.pooling, avg.pooling) == ("gem", "avg")
    batch = _batch("chelsea", "coffee", "astronaut")
    v_gem, v_avg = models.embed_batch(gem, batch), models.embed_batch(avg, batch)
    assert np.allclose(np.linalg.norm(v_gem, axis=1), 1.0, atol=1e-5)
    with torch.inference_mode():
        fmap = gem.module.net.forward_features(models.to_input_tensor(gem, batch))
    expected = torch.nn.functional.normalize(gem_pool(fmap), dim=1).numpy()
    assert np.allclose(v_gem, expected, atol=1e-5)
    with torch.inference_mode():
        fmap = avg.module.net.forward_features(models.to_input_tensor(avg, batch))
    assert np.allclose(v_avg, torch.nn.functional.normalize(fmap.mean((2, 3)), dim=1).numpy(),
                       atol=1e-5)
    assert np.abs(v_gem - v_avg).max() > 0.01


def test_classifier_head_sees_the_average_whatever_the_pooling(lite0_both):
    gem, avg = lite0_both
    batch = _batch("chelsea", "coffee")
    assert np.allclose(models.classify_batch(gem, batch), models.classify_batch(avg, batch),
                       atol=1e-3)


def test_pooling_is_in_the_metadata_and_decides_reuse():
    from pipelines.embed import config_from_options

    default = config_from_options(PipelineOptions(["--input", "x/", "--output", "y/"]))
    assert default.metadata["pooling"] == "gem" and "GeM" in default.metadata["vector"]
    avg = config_from_options(PipelineOptions(["--input", "x/", "--output", "y/",
                                               "--pooling", "avg"]))
    assert avg.embed.pooling == "avg" and avg.metadata["pooling"] == "avg"
    # Tables written before the key existed were average-pooled: reused under --pooling avg
    # only; a switch of pooling re-embeds everything (their vectors would not stand together).
    older = {k: v for k, v in avg.metadata.items() if k != "pooling"}
    assert reindex.reuse_mismatch(older, avg.metadata) is None
    assert "pooling" in reindex.reuse_mismatch(older, default.metadata)
    with pytest.raises(ValueError, match="convnext_tiny.*offers pooling"):
        config_from_options(PipelineOptions(["--input", "x/", "--output", "y/",
                                             "--model", "convnext_tiny", "--pooling", "gem"]))
