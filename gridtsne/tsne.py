"""t-SNE of image vectors to 2-D with openTSNE, and placement of new points into an old map.

openTSNE is used as its authors recommend: PCA initialisation (keeps the global layout and
makes the result reproducible), FFT-accelerated interpolation gradients (linear in N) from
10,000 points on and Barnes-Hut below (openTSNE's own rule: measured here on 1,024 CIFAR-10
vectors, FFT took 1.3-2.5x as long for the same DPQ16 within seed noise), the learning rate
N/12 ("auto"), all cores, and a fixed ``random_state`` (identical output, also threaded). The FFT gradients keep
the whole fit near-linear in N, so by default every point is fitted: fitting a sample and
placing the rest with openTSNE's ``transform`` is available (``fit_sample``) but measured
here to cost a lot of quality (16,384 CIFAR-10 vectors: DPQ16 0.843 fitting all, 0.674
fitting 4,096 and transforming the rest; the time saved was lost in the noise of this
shared 2-core machine).
"""
import logging
import time

import numpy as np

from gridtsne import faults, progress

log = logging.getLogger(__name__)

# Above this many vectors, and when the vectors are wider than PCA_DIMS, reduce them to
# PCA_DIMS dimensions first. Measured on 16,384 CIFAR-10 EfficientNet-Lite0 vectors (1,280-d),
# PCA to 200 lowered DPQ16 from 0.843 to 0.839 and did not save time, so it is kept for sizes
# where the neighbour index of full-width vectors (another copy of them) strains memory.
PCA_AUTO_MIN_N = 200_000
PCA_DIMS = 200
# From this many points on, FFT gradients (linear) beat Barnes-Hut (N log N), as in openTSNE.
FFT_MIN_N = 10_000
GRADIENTS = ("auto", "fft", "bh")
METRICS = ("euclidean", "cosine")
# Iterations between progress reports (and KL divergence log lines) of a t-SNE fit.
CALLBACK_EVERY = 50


def reduce_dimensions(vectors, dims):
    """Project ``vectors`` onto their first ``dims`` principal components (float32).

    Computed from the D x D covariance (accumulated in float64 chunks, so memory stays at the
    input plus its projection) with a deterministic eigendecomposition: the same input always
    gives the same output, which a fixed t-SNE seed relies on.
    """
    x = np.asarray(vectors)
    n, d = x.shape
    if dims is None or dims >= d:
        return x
    if dims < 2:
        raise ValueError(f"PCA dimensions must be at least 2, got {dims!r}")
    mean = x.mean(axis=0, dtype=np.float64)
    cov = np.zeros((d, d))
    for s in range(0, n, 65536):
        c = x[s:s + 65536].astype(np.float64) - mean
        cov += c.T @ c
    _, vecs = np.linalg.eigh(cov)
    top = vecs[:, ::-1][:, :dims]
    # Fix each component's sign (largest loading positive): eigh's sign is arbitrary.
    top *= np.sign(top[np.abs(top).argmax(axis=0), np.arange(dims)])
    out = np.empty((n, dims), dtype=np.float32)
    for s in range(0, n, 65536):
        out[s:s + 65536] = (x[s:s + 65536].astype(np.float64) - mean) @ top
    return out


def resolve_pca_dims(pca_dims, n, d):
    """``pca_dims`` as an int or None: ``"auto"`` reduces to 200 only for large, wide inputs."""
    if pca_dims == "auto":
        return PCA_DIMS if n > PCA_AUTO_MIN_N and d > PCA_DIMS else None
    if pca_dims in (None, 0):
        return None
    return int(pca_dims)


def resolve_fit_sample(fit_sample, n):
    """How many points to fit t-SNE on (``n`` means all of them; ``"auto"`` fits all)."""
    if fit_sample in ("auto", None, 0):
        return n
    return min(int(fit_sample), n)


class _ProgressLog:
    """openTSNE callback every ``every`` iterations: reports the iteration to
    :mod:`gridtsne.progress` and, when ``verbose``, logs the KL divergence and time.

    openTSNE counts each optimisation phase (early exaggeration, then the rest) from zero;
    the reported iteration runs over both.
    """

    def __init__(self, phase, early_iter, n_iter, every, verbose=True):
        self.phase, self.verbose, self.early_iter = phase, verbose, early_iter
        self.total = early_iter + n_iter
        self.start = time.perf_counter()
        # A phase shorter than ``every`` calls back never: the first call is then the second's.
        self.offset = 0 if early_iter >= every else early_iter
        self.last = 0
        progress.report(tsne_iteration=0, tsne_iterations=self.total)

    def __call__(self, iteration, error, embedding):
        if iteration <= self.last:
            self.offset = self.early_iter
        self.last = iteration
        progress.report(tsne_iteration=min(self.offset + iteration, self.total))
        faults.point("tsne")
        if self.verbose:
            log.info("t-SNE %s: iteration %d, KL divergence %.4f, %.1f s", self.phase,
                     iteration, error, time.perf_counter() - self.start)
        return False


def resolve_gradient(gradient, n):
    """``"fft"`` or ``"bh"``: ``"auto"`` means FFT from :data:`FFT_MIN_N` points on."""
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
    if gradient == "auto":
        return "fft" if n >= FFT_MIN_N else "bh"
    return gradient


def _tsne(perplexity, seed, n_jobs, n_iter, early_exaggeration_iter, n_points, verbose,
          gradient, metric="euclidean"):
    from openTSNE import TSNE

    return TSNE(
        n_components=2,
        perplexity=min(perplexity, max(1.0, (n_points - 1) / 3.0)),
        metric=metric,
        initialization="pca",
        negative_gradient_method=gradient,
        learning_rate="auto",
        n_iter=n_iter,
        early_exaggeration_iter=early_exaggeration_iter,
        n_jobs=n_jobs,
        random_state=seed,
        callbacks=_ProgressLog("fit", early_exaggeration_iter, n_iter, CALLBACK_EVERY, verbose),
        callbacks_every_iters=CALLBACK_EVERY,
    )


def embed_2d(vectors, perplexity=30.0, seed=0, n_jobs=-1, pca_dims="auto", n_iter=500,
             early_exaggeration_iter=250, fit_sample="auto", gradient="auto", metric="euclidean",
             verbose=True):
    """2-D t-SNE coordinates (float32, shape (n, 2)) of ``vectors``, and an info dict
    (``pca_s``, ``affinities_s``: neighbours, affinities and initialisation, ``fit_s``: those
    and the optimisation, ``gradient``, ...).

    Parameters
    ----------
    vectors : (n, d) float array.
    perplexity : openTSNE's perplexity (lowered automatically for tiny inputs).
    seed : ``random_state``; the same seed and input give the same output.
    n_jobs : threads (-1: all cores).
    pca_dims : ``"auto"``, None/0 (never) or a number of dimensions to reduce to first.
    n_iter, early_exaggeration_iter : optimisation lengths (openTSNE's defaults).
    fit_sample : ``"auto"``/None/0 (fit all) or the number of points to fit on; the others
        are placed with ``transform`` (faster for huge N, but clearly worse maps).
    gradient : ``"auto"`` (FFT from 10,000 points on, Barnes-Hut below), ``"fft"`` or ``"bh"``.
    metric : ``"euclidean"`` or ``"cosine"``: the distance of the input affinities.
    """
    x = np.asarray(vectors, dtype=np.float32)
    if x.ndim != 2 or len(x) < 4:
        raise ValueError(f"t-SNE needs at least 4 vectors as an (n, d) array, got shape {x.shape!r}")
    if not np.isfinite(x).all():
        raise ValueError("vectors contain NaN or infinite values")
    if perplexity <= 0:
        raise ValueError(f"perplexity must be positive, got {perplexity!r}")
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    n, d = x.shape
    info = {}
    start = time.perf_counter()
    dims = resolve_pca_dims(pca_dims, n, d)
    if dims is not None and dims < d:
        x = reduce_dimensions(x, dims)
        log.info("reduced %d-d vectors to %d PCA dimensions in %.1f s", d, dims,
                 time.perf_counter() - start)
    info["pca_dims"] = dims
    info["pca_s"] = round(time.perf_counter() - start, 3)
    m = resolve_fit_sample(fit_sample, n)
    info["fit_sample"] = m
    info["gradient"] = resolve_gradient(gradient, m)
    start = time.perf_counter()
    tsne = _tsne(perplexity, seed, n_jobs, n_iter, early_exaggeration_iter, m, verbose,
                 info["gradient"], metric)
    _time_affinities(tsne, info)
    if m >= n:
        log.info("t-SNE of %d points (%d dimensions)", n, x.shape[1])
        xy = np.asarray(tsne.fit(x), dtype=np.float32)
        progress.report(tsne_iteration=n_iter + early_exaggeration_iter)
        info["fit_s"] = round(time.perf_counter() - start, 3)
        return xy, info
    rng = np.random.default_rng(seed)
    fit_idx = np.sort(rng.choice(n, size=m, replace=False))
    rest = np.ones(n, dtype=bool)
    rest[fit_idx] = False
    log.info("t-SNE of a sample of %d of %d points, then transform of the other %d", m, n, n - m)
    embedding = tsne.fit(x[fit_idx])
    progress.report(tsne_iteration=n_iter + early_exaggeration_iter)
    progress.phase("layout", "t-SNE transform")
    info["fit_s"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    xy = np.empty((n, 2), dtype=np.float32)
    # transform() re-centres the reference embedding in place: copy it out afterwards.
    placed = _transform_in_chunks(embedding, x[rest])
    xy[fit_idx] = np.asarray(embedding, dtype=np.float32)
    xy[rest] = placed
    info["transform_s"] = round(time.perf_counter() - start, 3)
    return xy, info


def _time_affinities(tsne, info):
    """Make ``tsne.fit`` record in ``info["affinities_s"]`` how long its first step took.

    ``fit`` is ``prepare_initial`` (nearest neighbours, affinities, PCA initialisation) then
    the optimisation; timing the first on the instance keeps openTSNE's own ``fit``, so the
    result is the same to the bit.
    """
    prepare = tsne.prepare_initial

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return prepare(*args, **kwargs)
        finally:
            info["affinities_s"] = round(time.perf_counter() - start, 3)

    tsne.prepare_initial = timed


def _transform_in_chunks(embedding, x, chunk=100_000):
    """``embedding.transform`` in chunks, logging progress (the new points do not interact)."""
    out = np.empty((len(x), 2), dtype=np.float32)
    start = time.perf_counter()
    for s in range(0, len(x), chunk):
        out[s:s + chunk] = np.asarray(embedding.transform(x[s:s + chunk]), dtype=np.float32)
        log.info("t-SNE transform: %d/%d points placed, %.1f s", min(s + chunk, len(x)), len(x),
                 time.perf_counter() - start)
    return out


def place_new_points(old_vectors, old_xy, new_vectors, seed=0, n_jobs=-1, perplexity=5.0,
                     n_iter=250, k=25):
    """2-D positions of ``new_vectors`` in an existing map, leaving the old points where they are.

    For incremental re-indexing (``--stable``): the old map (``old_vectors`` at ``old_xy``) is
    kept fixed and each new point starts at the median of its ``k`` nearest old points, then is
    optimised against the old points only (openTSNE ``prepare_partial`` + ``optimize`` with the
    settings of its ``transform``, but without re-centring the old map, so the returned
    coordinates are in the old map's frame).

    Returns a float32 array of shape (len(new_vectors), 2).
    """
    from openTSNE import TSNEEmbedding
    from openTSNE.affinity import PerplexityBasedNN

    old_vectors = np.asarray(old_vectors, dtype=np.float32)
    new_vectors = np.asarray(new_vectors, dtype=np.float32)
    old_xy = np.asarray(old_xy, dtype=np.float64)
    if old_vectors.ndim != 2 or new_vectors.ndim != 2 or old_vectors.shape[1] != new_vectors.shape[1]:
        raise ValueError(f"old and new vectors must be (n, d) arrays of one width, got "
                         f"{old_vectors.shape!r} and {new_vectors.shape!r}")
    if old_xy.shape != (len(old_vectors), 2):
        raise ValueError(f"old_xy must have shape ({len(old_vectors)}, 2), got {old_xy.shape!r}")
    if len(new_vectors) == 0:
        return np.empty((0, 2), dtype=np.float32)
    k = min(k, len(old_vectors) - 1)
    perplexity = min(perplexity, max(1.0, k / 3.0))
    affinities = PerplexityBasedNN(old_vectors, perplexity=perplexity, n_jobs=n_jobs,
                                   random_state=seed)
    embedding = TSNEEmbedding(old_xy.copy(), affinities, negative_gradient_method="fft",
                              n_jobs=n_jobs, random_state=seed)
    partial = embedding.prepare_partial(new_vectors, initialization="median", k=k,
                                        perplexity=perplexity)
    partial.optimize(n_iter=n_iter, learning_rate=0.1, exaggeration=1.5, momentum=0.8,
                     inplace=True, max_grad_norm=0.25)
    return np.asarray(partial, dtype=np.float32)
