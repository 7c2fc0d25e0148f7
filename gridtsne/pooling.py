"""How a CNN's last feature map becomes one vector: average or generalised-mean (GeM) pooling.

GeM, ``(mean over positions of x^p)^(1/p)`` per channel (Radenović, Tolias and Chum, "Fine-tuning
CNN Image Retrieval with No Human Annotation", TPAMI 2019), sits between the average (p = 1)
and the maximum (p -> infinity): a feature strongly present in part of the image counts for
more than under the average, which is what "these two photos show the same kind of thing"
needs. With p = 3, off the shelf, on EfficientNet-Lite0 it raised the share of each photo's 4
nearest neighbours with its label from 0.745 to 0.753 (clothing-small) and 0.603 to 0.610
(CIFAR-10, 4,096), and the map's neighbour label agreement, under the same layout, by +0.017
and +0.019 (+0.025 on 16,384 CIFAR-10 photos; 3 seeds, docs/layout.md's recipe-gem rows), at no
measurable cost. It needs a non-negative map (after ReLU, ReLU6, or nearly so after SiLU), so
each model lists the poolings it offers.
"""
POOLINGS = ("auto", "avg", "gem")
GEM_P = 3.0
# Floor of the map before the power, as in the GeM papers: the small negatives of a SiLU map
# count as (nearly) zero and the root never sees an exact zero.
GEM_EPS = 1e-6

DESCRIPTIONS = {
    "avg": "average-pooled penultimate feature map, L2-normalised, float32",
    "gem": f"GeM-pooled (p={GEM_P:g}) penultimate feature map, L2-normalised, float32",
}


def gem_pool(fmap, p=GEM_P, eps=GEM_EPS):
    """``(N, C, H, W)`` -> ``(N, C)``: the generalised mean over positions, in float32."""
    return fmap.float().clamp(min=eps).pow(p).mean((2, 3)).pow(1.0 / p)


def resolve_pooling(pooling, offered, model_name):
    """The pooling to use: ``"auto"`` is the model's first offered one; others are checked.

    Parameters
    ----------
    pooling : {"auto", "avg", "gem"}
    offered : tuple of str
        What the model's embedder can do, its default first (``ModelSpec.poolings``).
    model_name : str
        For the error message.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
    if pooling == "auto":
        return offered[0]
    if pooling not in offered:
        raise ValueError(f"model {model_name!r} offers pooling {list(offered)}, not {pooling!r}")
    return pooling
