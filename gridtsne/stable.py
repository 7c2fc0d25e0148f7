"""``--stable`` re-indexing: keep the previous map's positions, place only what is new.

A scheduled re-run that re-fitted t-SNE from scratch would reshuffle the whole map, and users
would no longer find their photos. Instead, images already laid out (same ``uri`` and
``sha256``) keep their previous t-SNE coordinates, new and changed ones are placed against
them with openTSNE's partial optimisation, and only the grid assignment is solved again; the
refinement step (:mod:`gridtsne.refine`) then moves new images only, never kept ones. When
the new images exceed ``refit_fraction`` of the collection the old map no longer represents
it, and a full t-SNE fit is made instead.
"""
import logging

import numpy as np
import pyarrow.compute as pc

from gridtsne import storage
from gridtsne.tsne import place_new_points

log = logging.getLogger(__name__)

MIN_KEPT = 16  # fewer kept points than this make a poor frame for placing new ones


def stable_positions(previous_layout_url, refit_fraction=0.2, seed=0, n_jobs=-1,
                     storage_options=None):
    """A ``positions(uri, sha256, vectors)`` hook for :func:`gridtsne.layout.run_layout`.

    It returns ``(xy, info)``, or ``(None, info)`` when a full refit is due (no previous
    layout, too many new images, too few kept ones); ``info`` says which and why.
    """
    if not 0 <= refit_fraction <= 1:
        raise ValueError(f"refit_fraction must be in [0, 1], got {refit_fraction!r}")

    def positions(uri, sha256, vectors):
        if previous_layout_url is None or not storage.exists(previous_layout_url,
                                                             storage_options):
            return None, {"mode": "refit", "reason": "no previous layout"}
        prev = storage.read_parquet(previous_layout_url, columns=["uri", "sha256", "x", "y"],
                                    storage_options=storage_options)
        # A kept image has the same uri and the same content as before.
        keys = pc.binary_join_element_wise(uri, pc.fill_null(sha256, ""), "\x00")
        prev_keys = pc.binary_join_element_wise(prev.column("uri"),
                                                pc.fill_null(prev.column("sha256"), ""), "\x00")
        pos = pc.index_in(keys, value_set=prev_keys)
        kept = pc.is_valid(pos).to_numpy(zero_copy_only=False)
        n, n_kept = len(kept), int(kept.sum())
        n_new = n - n_kept
        info = {"kept": n_kept, "placed": n_new, "removed": prev.num_rows - n_kept,
                "refit_fraction": refit_fraction}
        if n_kept < MIN_KEPT or n_new > refit_fraction * n:
            reason = (f"{n_new} of {n} images are new (more than {refit_fraction:.0%})"
                      if n_kept >= MIN_KEPT else f"only {n_kept} images kept")
            log.info("stable layout: full t-SNE refit, %s", reason)
            return None, {**info, "mode": "refit", "reason": reason}
        take = pos.filter(pc.is_valid(pos))
        xy = np.empty((n, 2), dtype=np.float32)
        xy[kept, 0] = prev.column("x").take(take).to_numpy()
        xy[kept, 1] = prev.column("y").take(take).to_numpy()
        if n_new:
            xy[~kept] = place_new_points(vectors[kept], xy[kept], vectors[~kept], seed=seed,
                                         n_jobs=n_jobs)
        log.info("stable layout: kept %d positions, placed %d new images", n_kept, n_new)
        # Kept images are pinned: the refinement step moves only the new ones.
        return xy, {**info, "mode": "stable", "pinned": kept}

    return positions
