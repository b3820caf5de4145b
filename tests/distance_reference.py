"""Independent references for the distance transforms and weight maps.

* ``brute_force_squared``: the squared distance from every pixel to the nearest
  pixel of each instance, by comparing every pixel with every instance pixel
  (float64, summed over the axes in order, as the definition reads). Exact at
  unit spacing. For small images.
* ``scipy_per_instance``: the usual recipe, one ``scipy.ndimage``
  distance transform per instance. For larger images.
* ``two_nearest_from``: sorts per-instance distances into d1, d2.
* ``unet_weight_formula``: the weight map from reference distances, float64.
* Instance-map builders: disks, touching cells, Voronoi partitions, single
  pixels, and the watershed segmentation of scikit-image's coins.
"""

from typing import Optional, Sequence, Tuple

import numpy as np


def _spacing(sampling, ndim) -> np.ndarray:
    if sampling is None:
        return np.ones(ndim)
    if np.isscalar(sampling):
        return np.full(ndim, float(sampling))
    return np.asarray(sampling, dtype=np.float64)


def instance_ids(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    return ids[ids != 0]


def brute_force_squared(labels: np.ndarray, sampling=None) -> Tuple[np.ndarray, np.ndarray]:
    """(ids, squared[K, *shape]): squared distances to each instance's nearest pixel."""
    spacing = _spacing(sampling, labels.ndim)
    coords = np.indices(labels.shape).reshape(labels.ndim, -1).T.astype(np.float64)
    flat = labels.reshape(-1)
    ids = instance_ids(labels)
    squared = np.empty((len(ids), flat.size))
    for k, i in enumerate(ids):
        members = coords[flat == i]
        total = np.zeros((flat.size, len(members)))
        for axis in range(labels.ndim):
            offset = (coords[:, None, axis] - members[None, :, axis]) * spacing[axis]
            total = total + offset * offset
        squared[k] = total.min(axis=1)
    return ids, squared.reshape((len(ids),) + labels.shape)


def scipy_per_instance(labels: np.ndarray, sampling=None) -> Tuple[np.ndarray, np.ndarray]:
    """(ids, distances[K, *shape]) by one SciPy distance transform per instance."""
    from scipy import ndimage

    ids = instance_ids(labels)
    distances = np.empty((len(ids),) + labels.shape)
    for k, i in enumerate(ids):
        distances[k] = ndimage.distance_transform_edt(labels != i, sampling=sampling)
    return ids, distances


def two_nearest_from(per_instance: np.ndarray, shape) -> Tuple[np.ndarray, np.ndarray]:
    """d1, d2 from per-instance distances (+inf where missing)."""
    if len(per_instance) == 0:
        return np.full(shape, np.inf), np.full(shape, np.inf)
    ordered = np.sort(per_instance, axis=0)
    d1 = ordered[0]
    d2 = ordered[1] if len(per_instance) > 1 else np.full(shape, np.inf)
    return d1, d2


def distance_of_ids(per_instance: np.ndarray, ids: np.ndarray, which: np.ndarray) -> np.ndarray:
    """per_instance[index of which[x]] at every pixel x; +inf where which is 0."""
    lookup = {int(i): k for k, i in enumerate(ids)}
    index = np.vectorize(lambda v: lookup.get(int(v), -1), otypes=[np.int64])(which)
    picked = np.take_along_axis(per_instance, np.maximum(index, 0)[None], axis=0)[0] \
        if len(ids) else np.zeros(which.shape)
    return np.where(index >= 0, picked, np.inf)


def unet_weight_formula(labels, d1, d2, w0=10.0, sigma=5.0, class_weight=None,
                        border_everywhere=False) -> np.ndarray:
    """w_c + w0 exp(-(d1 + d2)^2 / (2 sigma^2)) in float64; the border term on
    background pixels (everywhere with border_everywhere), 0 where d2 = inf."""
    if class_weight is None:
        class_weight = np.ones(labels.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        border = w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma ** 2))
    border = np.where(np.isinf(d2), 0.0, border)
    if not border_everywhere:
        border = np.where(labels == 0, border, 0.0)
    return class_weight + border


def balanced_class_weight(labels: np.ndarray) -> np.ndarray:
    total = labels.size
    foreground = np.count_nonzero(labels)
    background = total - foreground
    w_background = total / (2 * background) if background else 1.0
    w_foreground = total / (2 * foreground) if foreground else 1.0
    return np.where(labels != 0, w_foreground, w_background)


# --------------------------------------------------------------------------
# Instance maps
# --------------------------------------------------------------------------

def random_disks(shape: Sequence[int], count: int, rng: np.random.Generator,
                 radius: Optional[float] = None) -> np.ndarray:
    """Up to `count` disks (balls) with ids 1..count; later ones don't overwrite."""
    labels = np.zeros(shape, np.int64)
    grid = np.indices(shape)
    if radius is None:
        radius = 0.35 * (np.prod(shape) / max(count, 1)) ** (1 / len(shape))
    for i in range(1, count + 1):
        centre = [rng.uniform(0, s) for s in shape]
        r = radius * rng.uniform(0.5, 1.0)
        inside = sum((g - c) ** 2 for g, c in zip(grid, centre)) < r * r
        labels[inside & (labels == 0)] = i
    return labels


def voronoi_partition(shape: Sequence[int], count: int, rng: np.random.Generator,
                      gaps: bool = False) -> np.ndarray:
    """Every pixel labelled by its nearest seed (touching cells); with `gaps`,
    one-pixel background borders between cells."""
    seeds = np.stack([rng.uniform(0, s, count) for s in shape], axis=1)
    grid = np.indices(shape).reshape(len(shape), -1).T
    squared = ((grid[:, None, :] - seeds[None]) ** 2).sum(-1)
    labels = (np.argmin(squared, axis=1) + 1).reshape(shape)
    if gaps:
        edge = np.zeros(shape, bool)
        for axis in range(len(shape)):
            diff = np.diff(labels, axis=axis) != 0
            pad = [(0, 0)] * len(shape)
            pad[axis] = (0, 1)
            edge |= np.pad(diff, pad)
        labels = np.where(edge, 0, labels)
    return labels


def random_pixels(shape: Sequence[int], count: int, ids: int, rng: np.random.Generator):
    """`count` random pixels with ids in 1..ids (single-pixel instances, repeats)."""
    labels = np.zeros(shape, np.int64)
    flat = labels.reshape(-1)
    flat[rng.choice(flat.size, size=min(count, flat.size), replace=False)] = \
        rng.integers(1, ids + 1, size=min(count, flat.size))
    return labels


def coins_instances() -> np.ndarray:
    """Instance labels of scikit-image's coins photograph by the watershed recipe
    of scikit-image's gallery ("Comparing edge-based and region-based
    segmentation"): Sobel elevation map, markers below 30 and above 150,
    watershed, holes filled, connected components."""
    from scipy import ndimage
    from skimage import data, filters, segmentation

    coins = data.coins()
    elevation = filters.sobel(coins)
    markers = np.zeros_like(coins)
    markers[coins < 30] = 1
    markers[coins > 150] = 2
    regions = segmentation.watershed(elevation, markers)
    filled = ndimage.binary_fill_holes(regions - 1)
    labels, _ = ndimage.label(filled)
    return labels
