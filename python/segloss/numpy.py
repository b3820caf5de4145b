"""Distance transforms and U-Net weight maps for NumPy arrays, without torch.

``import segloss.numpy`` needs only NumPy (the kernels are a small C++ module
that does not link libtorch), so these functions work in data-loading code and
in environments where torch is not installed::

    import segloss.numpy as snp

    d1, d2 = snp.two_nearest_distances(instance_labels)
    phi = snp.signed_distance_map(mask)          # boundary loss (Kervadec et al.)
    weights = snp.unet_weight_map(instance_labels, w0=10.0, sigma=5.0, class_weights="balanced")

Every function releases the GIL while it computes, takes a ``threads``
argument (default 1, as SciPy: in DataLoader workers one thread per worker is
usually best; at most 1024 are used, and where the system cannot start more,
the calling thread does the rest of the work), creates its threads per call (so it is safe in forked
workers), accepts C- or Fortran-ordered and non-contiguous arrays, and never
modifies its input. Results are new C-ordered arrays.

Exactness: at unit spacing the squared distances are integers computed
exactly, so ``d1`` and ``d2`` equal a brute-force computation bit for bit;
with other spacings they agree with it to about 1e-15 relative.
"""

import math
import numbers
from typing import Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from segloss import _numpy

__all__ = ["two_nearest_distances", "unet_weight_map", "distance_transform_edt",
           "signed_distance_map", "boundary_distance_map"]

Sampling = Optional[Union[float, Sequence[float]]]
ClassWeights = Optional[Union[str, Mapping[int, float], np.ndarray]]

_MIN_SPACING, _MAX_SPACING = 1e-100, 1e100


# Every error message starts with the public function's name, `op`.

def _sampling(op: str, sampling: Sampling, ndim: int) -> list:
    if sampling is None:
        return [1.0] * ndim
    if isinstance(sampling, numbers.Real):
        values = [float(sampling)] * ndim
    else:
        try:
            if isinstance(sampling, (str, bytes)):
                raise TypeError
            values = [float(s) for s in sampling]
        except (TypeError, ValueError):
            raise TypeError(f"{op}: sampling must be a number or a sequence of numbers, got "
                            f"{type(sampling).__name__}") from None
        if len(values) != ndim:
            raise ValueError(f"{op}: sampling must have one value per axis ({ndim}), got "
                             f"{len(values)}: {list(sampling)}")
    for axis, value in enumerate(values):
        if not (_MIN_SPACING <= value <= _MAX_SPACING):
            raise ValueError(f"{op}: sampling must be positive (between 1e-100 and 1e100), got "
                             f"{value} for axis {axis}")
    return values


# More threads than this are used as this many (none of the sweeps has more
# work to share, and the OS may refuse to start that many threads at once).
_MAX_THREADS = 1024


def _threads(op: str, threads: int) -> int:
    if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or threads < 1:
        raise ValueError(f"{op}: threads must be an integer >= 1, got {threads!r}")
    return min(int(threads), _MAX_THREADS)


def _real(op: str, name: str, value) -> float:
    """A real number argument as a float, or an error naming it."""
    if isinstance(value, (bool, str, bytes)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{op}: {name} must be a real number, got {value!r}")
    return float(value)


def _run(op: str, kernel, *args):
    """Calls the C++ module, whose messages name the argument: prefixed with
    the public function's name, as every message of this module is."""
    try:
        return kernel(*args)
    except (ValueError, TypeError) as error:
        raise type(error)(f"{op}: {error}") from None


def _readable(array: np.ndarray) -> np.ndarray:
    # The kernels take element strides; a view whose byte strides are not a
    # multiple of its item size (rare) is copied.
    if any(s % array.itemsize for s in array.strides):
        return np.ascontiguousarray(array)
    return array


def _instance_labels(op: str, labels) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        hint = (" (a binary mask? label its connected components first, e.g. with "
                "scipy.ndimage.label or skimage.measure.label)" if labels.dtype.kind == "b" else "")
        raise TypeError(f"{op}: labels must be an array of integer instance ids (any signed or "
                        f"unsigned integer dtype; 0 is background), got dtype {labels.dtype}{hint}")
    if labels.ndim not in (2, 3):
        raise ValueError(f"{op}: labels must be a 2D or 3D instance map, got {labels.ndim} "
                         "dimensions "
                         f"(shape {labels.shape}); call once per image")
    return _readable(labels)


def two_nearest_distances(labels, sampling: Sampling = None, return_labels: bool = False,
                          *, threads: int = 1):
    r"""Distances from every pixel to its nearest and second-nearest instance.

    With :math:`d_i(x)` the Euclidean distance (with ``sampling``) from pixel
    :math:`x` to the nearest pixel of instance :math:`i` (0 on the instance's
    own pixels): :math:`d_1(x) = \min_i d_i(x)`, and :math:`d_2(x)` is the
    smallest :math:`d_i(x)` over the instances other than the nearest one.
    Exact, in one sweep per axis, in time independent of the number of
    instances.

    Args:
        labels: instance map, ``[H, W]`` or ``[D, H, W]``, any signed or
            unsigned integer dtype; 0 is background, every other value an
            instance id (ids need not be consecutive).
        sampling: spacing per axis (a number or one per axis), default 1, as
            in ``scipy.ndimage``.
        return_labels: also return the ids of the nearest and second-nearest
            instances.
        threads: threads to use (default 1).

    Returns:
        ``(d1, d2)``, float64 arrays of ``labels``' shape, ``+inf`` where
        there are fewer than one / two instances; with ``return_labels``,
        ``(d1, d2, l1, l2)``, the ids in ``labels``' dtype (0 where there is
        no such instance). Where two instances are equally near, which one is
        ``l1`` is unspecified (``d1 == d2`` there), but it is the same on
        every run, thread count and device.
    """
    op = "segloss.numpy.two_nearest_distances"
    labels = _instance_labels(op, labels)
    return _run(op, _numpy.two_nearest, labels, _sampling(op, sampling, labels.ndim),
                bool(return_labels), _threads(op, threads))


def _class_weight_arguments(op: str, class_weights: ClassWeights, labels: np.ndarray):
    """(background_weight, foreground_weight, balanced, pixel_weights or None)."""
    if class_weights is None:
        return 1.0, 1.0, False, None
    if isinstance(class_weights, str):
        if class_weights != "balanced":
            raise ValueError(f"{op}: class_weights must be None, 'balanced', a mapping "
                             "{0: background, 1: foreground} or an array of per-pixel weights, got "
                             f"{class_weights!r}")
        return 1.0, 1.0, True, None
    if isinstance(class_weights, Mapping):
        unknown = set(class_weights) - {0, 1}
        if unknown:
            raise ValueError(f"{op}: class_weights mapping must have keys 0 (background) and/or 1 "
                             f"(foreground), got keys {sorted(class_weights, key=repr)}")
        weights = [_real(op, f"class_weights[{key}]", class_weights.get(key, 1.0))
                   for key in (0, 1)]
        if not all(math.isfinite(w) for w in weights):
            raise ValueError(f"{op}: class_weights must be finite, got {dict(class_weights)}")
        return weights[0], weights[1], False, None
    pixel = np.asarray(class_weights)
    if pixel.dtype.kind not in "fiub" or pixel.shape != labels.shape:
        raise ValueError(f"{op}: class_weights as an array must hold one real weight per pixel, "
                         f"of the labels' shape {labels.shape}; got dtype {pixel.dtype}, shape "
                         f"{pixel.shape}")
    return 1.0, 1.0, False, np.ascontiguousarray(pixel, dtype=np.float32)


def unet_weight_map(labels, w0: float = 10.0, sigma: float = 5.0,
                    class_weights: ClassWeights = None, sampling: Sampling = None, *,
                    border_everywhere: bool = False, threads: int = 1) -> np.ndarray:
    r"""The U-Net weight map of Ronneberger et al. (2015).

    .. math::
        w(x) = w_c(x) + w_0 \exp\left(-\frac{(d_1(x) + d_2(x))^2}{2\sigma^2}\right)

    with :math:`d_1, d_2` the distances to the nearest and second-nearest
    instance (:func:`two_nearest_distances`). The border term is added on
    background pixels only (as the paper's implementations do; every pixel
    with ``border_everywhere=True``) and is 0 where there is no second
    instance.

    Args:
        labels: instance map, ``[H, W]`` or ``[D, H, W]``, integer ids, 0 is
            background.
        w0: border weight (the paper's 10).
        sigma: border width in the units of ``sampling`` (the paper's 5).
        class_weights: :math:`w_c`. ``None``: 1 everywhere. ``"balanced"``:
            background and foreground (label != 0) pixels get
            ``n_pixels / (2 * n_pixels_of_that_class)``. A mapping
            ``{0: w_background, 1: w_foreground}``. Or an array of per-pixel
            weights of ``labels``' shape.
        sampling: spacing per axis, default 1.
        border_everywhere: add the border term on instance pixels too.
        threads: threads to use (default 1).

    Returns:
        float32 array of ``labels``' shape (computed in float64).
    """
    op = "segloss.numpy.unet_weight_map"
    labels = _instance_labels(op, labels)
    w0, sigma = _real(op, "w0", w0), _real(op, "sigma", sigma)
    if not math.isfinite(w0):
        raise ValueError(f"{op}: w0 must be finite, got {w0}")
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"{op}: sigma must be positive and finite, got {sigma}")
    background, foreground, balanced, pixel = _class_weight_arguments(op, class_weights, labels)
    return _run(op, _numpy.unet_weight_map, labels, _sampling(op, sampling, labels.ndim), w0,
                sigma, bool(border_everywhere), background, foreground, balanced, pixel,
                _threads(op, threads))


def distance_transform_edt(input, sampling: Sampling = None, *, threads: int = 1) -> np.ndarray:
    """Euclidean distance from every nonzero element to the nearest zero.

    The same result as ``scipy.ndimage.distance_transform_edt(input,
    sampling)`` (distances only), bit for bit at unit spacing, for any number
    of dimensions; the one-instance case of :func:`two_nearest_distances`. Like
    SciPy, an input without zeros gives the distances to a point just before
    the first element along axis 0 (index ``(-1, 0, ..., 0)``), and a 0-D
    input is treated as 1-D.

    Returns:
        float64 array of ``input``'s shape (at least 1-D).
    """
    op = "segloss.numpy.distance_transform_edt"
    array = np.atleast_1d(np.asarray(input))
    if array.dtype.kind not in "biufc":
        raise TypeError(f"{op}: input must be an array of numbers or bools (nonzero is "
                        f"foreground), got dtype {array.dtype}")
    if array.dtype.kind not in "biu":
        array = array != 0
    array = _readable(array)
    return _run(op, _numpy.distance_transform_edt, array, _sampling(op, sampling, array.ndim),
                _threads(op, threads))


def _mask(op: str, mask) -> np.ndarray:
    array = np.asarray(mask)
    if array.dtype.kind not in "biu":
        raise TypeError(f"{op}: mask must be an array of bools or integers (nonzero is "
                        f"foreground), got dtype {array.dtype}; threshold a probability map "
                        "first, e.g. mask > 0.5")
    if array.ndim < 1:
        raise ValueError(f"{op}: mask must have at least one dimension, got a 0-D array")
    return _readable(array)


def signed_distance_map(mask, sampling: Sampling = None, *, threads: int = 1) -> np.ndarray:
    """The signed distance map of the boundary loss (Kervadec et al. 2019).

    Outside the mask, the distance to the nearest mask pixel; inside, minus
    (the distance to the nearest background pixel - 1), as MONAI's
    ``BoundaryLoss.compute_distance_map`` (in float64 here): with SciPy's
    ``edt = scipy.ndimage.distance_transform_edt``,
    ``np.where(mask, -(edt(mask) - 1), edt(~mask))``, bit for bit at unit
    spacing, from one sweep that carries both classes. 0 everywhere for a
    mask that is empty or full. One image of any number of dimensions.

    Args:
        mask: bool or integer array (nonzero is foreground).
        sampling: the spacing along each axis (a number or one per axis).

    Returns:
        float64 array of ``mask``'s shape.
    """
    op = "segloss.numpy.signed_distance_map"
    array = _mask(op, mask)
    return _run(op, _numpy.distance_map, array, "signed", _sampling(op, sampling, array.ndim),
                _threads(op, threads))


def boundary_distance_map(mask, sampling: Sampling = None, *, threads: int = 1) -> np.ndarray:
    """Every pixel's distance to the nearest pixel of the other class.

    ``edt(mask) + edt(~mask)`` with SciPy's ``distance_transform_edt``, bit
    for bit at unit spacing, as MONAI's ``HausdorffDTLoss.distance_field``
    (in float64 here), from one sweep that carries both classes. 0 everywhere
    for a mask that is empty or full. One image of any number of dimensions.

    Returns:
        float64 array of ``mask``'s shape.
    """
    op = "segloss.numpy.boundary_distance_map"
    array = _mask(op, mask)
    return _run(op, _numpy.distance_map, array, "boundary",
                _sampling(op, sampling, array.ndim), _threads(op, threads))
