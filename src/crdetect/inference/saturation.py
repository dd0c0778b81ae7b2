"""Saturated stars and bleed trails, which are never flagged: the saturation level (from the header, the user,
or read off flat plateaus at the top of the frame) and the connected regions at or above it.

The frame-wide steps have a numpy and a torch form: on a CPU the numpy one runs (torch's CPU kernels are
slower for these selections; the same memory, no copy), on a GPU the torch one (only the few thousand
candidate pixels come to the host). :func:`plateau_saturation_torch` and :func:`saturated_regions_torch` are
the single dispatch points (an array goes to the numpy form, a tensor in CPU memory too);
``tests/test_device_path.py`` checks that both forms give the same result. torch is imported only for tensors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..preprocessing import FrameStatistics, frame_statistics

if TYPE_CHECKING:
    import torch

#: Pixels within this many times the frame's noise below the saturation level count as saturated.
SATURATION_NOISE_SIGMA = 3.0


def plateau_saturation(image: np.ndarray, tolerance: float = 0.01, min_pixels: int = 5,
                       statistics: FrameStatistics | None = None, min_snr: float = 50.0) -> float | None:
    """Saturation level read off the pixels when no header or user gives one, or None if none shows.

    Saturated stars and bleed trails end in flat plateaus at the top of the frame's range (the ADC's full
    scale in raw frames; flat-fielding leaves them flat to about a per cent), whereas unsaturated stars
    and cosmic rays have a single peak pixel. The plateau's top is taken as the brightest pixel with an
    8-neighbour within ``tolerance`` of it (so lone brighter pixels, such as a hit above the plateau in
    a flat-fielded frame, do not hide it); if at least ``min_pixels`` connected pixels lie within
    ``tolerance`` below that top, their lower bound is returned. On CTIO Mosaic2 ``tpv.fits`` the
    plateaus lie at 63,300-63,900 and protect every core pixel the shipped models flagged without a
    level; none of the other real frames in shared/data shows one.

    A plateau less than ``min_snr`` sigma above the sky (``statistics``, estimated when omitted) is no
    saturation: where the noise is under a per cent of the sky (1000 +- 10 ADU), the brightest noise
    pixels of an empty frame are themselves "within a per cent" of each other.
    """
    peak = float(np.max(image, where=np.isfinite(image), initial=-np.inf))
    if not peak > 0:
        return None
    if statistics is None:
        statistics = frame_statistics(image)
    floor = statistics.sky + min_snr * statistics.sigma  # a plateau must lie above this
    if peak * (1 - tolerance) < floor:
        return None
    # Candidates: the top 15 % of the range and above the floor, usually a few thousand pixels, so that
    # everything below is done on coordinates, not on whole frames (on an empty sky frame the top 15 %
    # would be every pixel: 80 bytes each). A saturated pixel divided by a flat field stays within a few
    # per cent of the others, so the plateau's top is looked for in the top 10 %.
    with np.errstate(invalid="ignore"):
        ys, xs = np.nonzero((image >= max(0.85 * peak, floor)) & (image < np.inf))
    values = image[ys, xs].astype(np.float64)
    height, width = image.shape
    flat = np.zeros(len(ys), bool)
    for dy, dx in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]:
        ny, nx = ys + dy, xs + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        neighbour = np.full(len(ys), -np.inf)
        neighbour[inside] = image[ny[inside], nx[inside]]
        flat |= np.abs(neighbour - values) <= tolerance * values
    flat &= values >= 0.9 * peak
    if not flat.any():
        return None
    level = float(values[flat].max()) * (1 - tolerance)
    near_top = values >= level  # all such pixels are candidates: level >= 0.891 * peak
    return _plateau_level(ys[near_top], xs[near_top], level, floor, min_pixels)


def component_sizes(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """Size of the 8-connected component that each pixel (``ys[i]``, ``xs[i]``) forms with the others listed.

    Works on the list of pixels alone (a graph of their neighbour pairs), so its cost grows with their number,
    not with the area they are spread over: a few saturated stars scattered over a DECam CCD span most of
    it, and labelling that bounding box as an image took 0.1-0.3 s.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    count = len(ys)
    if count == 0:
        return np.zeros(0, np.int64)
    width = int(xs.max()) + 3  # a column of margin on each side: x - 1 and x + 1 never wrap to another row
    keys = (np.asarray(ys, np.int64) + 1) * width + np.asarray(xs, np.int64) + 1
    order = np.argsort(keys)
    sorted_keys = keys[order]
    rows, columns = [], []
    for dy, dx in ((0, 1), (1, -1), (1, 0), (1, 1)):  # half the neighbourhood: each pair once, undirected
        target = keys + dy * width + dx
        position = np.minimum(np.searchsorted(sorted_keys, target), count - 1)
        found = sorted_keys[position] == target
        rows.append(np.flatnonzero(found))
        columns.append(order[position[found]])
    rows, columns = np.concatenate(rows), np.concatenate(columns)
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, columns)), shape=(count, count))
    _, labels = connected_components(graph, directed=False)
    return np.bincount(labels)[labels]


def _plateau_level(y: np.ndarray, x: np.ndarray, level: float, floor: float, min_pixels: int) -> float | None:
    """``level`` if the pixels at (``y``, ``x``) hold a connected plateau of ``min_pixels`` above ``floor``."""
    largest = component_sizes(y, x).max()
    return level if largest >= min_pixels and level >= floor else None


def saturated_regions(image: np.ndarray, saturation: float | None, min_pixels: int = 5) -> np.ndarray:
    """Saturated stars and bleed trails: connected pixels at or above ``saturation``, grown by 1 px.

    Only regions of at least ``min_pixels`` count, so a single saturated cosmic-ray pixel (strong hits
    in short exposures) can still be flagged; saturated star cores and bleed columns never are.
    """
    if saturation is None:
        return np.zeros(image.shape, bool)
    from scipy import ndimage

    with np.errstate(invalid="ignore"):
        above = image >= saturation
    labels, count = ndimage.label(above, np.ones((3, 3), bool))
    protected = np.zeros(image.shape, bool)
    # region by region inside its bounding box: whole-frame size counts and dilation cost 0.35 s per
    # DECam CCD, this a few ms
    for index, window in enumerate(ndimage.find_objects(labels), start=1):
        region = labels[window] == index
        if region.sum() < min_pixels:
            continue
        grown = tuple(slice(max(w.start - 1, 0), w.stop + 1) for w in window)
        inner = tuple(slice(w.start - g.start, w.stop - g.start) for w, g in zip(window, grown))
        box = np.zeros(protected[grown].shape, bool)
        box[inner] = region
        protected[grown] |= ndimage.binary_dilation(box, np.ones((3, 3), bool))
    return protected


def plateau_saturation_torch(image: torch.Tensor, statistics: FrameStatistics, tolerance: float = 0.01,
                             min_pixels: int = 5, min_snr: float = 50.0) -> float | None:
    """:func:`plateau_saturation` for a 2-D tensor on any device: the frame-wide work (peak, candidates, their
    neighbours) on the device; the few thousand candidates are finished on the CPU. Same result. A tensor in
    CPU memory goes to the numpy function (no copy; torch's CPU kernels are slower for these selections)."""

    if isinstance(image, np.ndarray):
        return plateau_saturation(image, tolerance, min_pixels, statistics, min_snr)
    if image.device.type == "cpu":
        return plateau_saturation(image.numpy(), tolerance, min_pixels, statistics, min_snr)
    return _plateau_saturation_in_torch(image, statistics, tolerance, min_pixels, min_snr)


def _plateau_saturation_in_torch(image: torch.Tensor, statistics: FrameStatistics, tolerance: float,
                                 min_pixels: int, min_snr: float) -> float | None:
    import torch

    finite = torch.isfinite(image)
    peak = float(torch.where(finite, image, -torch.inf).max())
    if not peak > 0:
        return None
    floor = statistics.sky + min_snr * statistics.sigma
    if peak * (1 - tolerance) < floor:
        return None
    # float32 comparisons as numpy makes them (the threshold rounded to the image's type)
    candidates = (image >= torch.tensor(max(0.85 * peak, floor), dtype=image.dtype)) & finite
    ys, xs = candidates.nonzero(as_tuple=True)
    values = image[ys, xs].double()
    height, width = image.shape
    padded = torch.nn.functional.pad(torch.where(finite, image, -torch.inf)[None, None], (1, 1, 1, 1),
                                     value=-torch.inf)[0, 0]
    flat = torch.zeros(len(ys), dtype=torch.bool, device=image.device)
    for dy, dx in [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]:
        neighbour = padded[ys + 1 + dy, xs + 1 + dx].double()
        flat |= (neighbour - values).abs() <= tolerance * values
    flat &= values >= 0.9 * peak
    if not bool(flat.any()):
        return None
    level = float(values[flat].max()) * (1 - tolerance)
    near_top = values >= level
    return _plateau_level(ys[near_top].cpu().numpy(), xs[near_top].cpu().numpy(), level, floor, min_pixels)


def saturated_regions_torch(image: torch.Tensor, saturation: float | None, min_pixels: int = 5) -> torch.Tensor:
    """:func:`saturated_regions` for a 2-D tensor on any device: pixels at or above ``saturation`` are found and
    the kept regions grown by 1 px (max-pooling) on the device; only the bounding box of the saturated pixels
    is labelled, on the CPU. Same result; a tensor in CPU memory goes to the numpy function (no copy)."""
    if isinstance(image, np.ndarray):
        return saturated_regions(image, saturation, min_pixels)
    import torch

    if image.device.type == "cpu":
        return torch.from_numpy(saturated_regions(image.numpy(), saturation, min_pixels))
    return _saturated_regions_in_torch(image, saturation, min_pixels)


def _saturated_regions_in_torch(image: torch.Tensor, saturation: float | None, min_pixels: int) -> torch.Tensor:
    import torch

    protected = torch.zeros(image.shape, dtype=torch.bool, device=image.device)
    if saturation is None:
        return protected
    above = image >= torch.tensor(saturation, dtype=image.dtype)
    ys, xs = above.nonzero(as_tuple=True)
    if not len(ys):
        return protected
    kept = torch.from_numpy(component_sizes(ys.cpu().numpy(), xs.cpu().numpy()) >= min_pixels).to(image.device)
    if not bool(kept.any()):
        return protected
    protected[ys[kept], xs[kept]] = True
    grown = torch.nn.functional.max_pool2d(protected[None, None].to(torch.float16 if image.is_cuda else torch.float32),
                                           3, stride=1, padding=1)
    return grown[0, 0] > 0
