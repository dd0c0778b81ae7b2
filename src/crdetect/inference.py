"""Inference: run a CR model on frames of any size, whole or in exact overlapping tiles.

Tiling is done so that, for local models (convolutional nets with BatchNorm), the tiled result equals
the whole-frame result: the frame is reflect-padded once to the model's pooling multiple, tiles start
on that multiple, each tile contributes only pixels at least ``context_margin`` from its inner edges,
and overlapping contributions are averaged. Peers tile without overlap (seams, deepCR) or crop the
frame to a multiple of 16 (lost edges, Cosmic-CoNN); neither happens here.
"""

from __future__ import annotations

import copy
import difflib
import logging
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .checkpoint import CheckpointInfo, load_checkpoint, unwrap_model
from .errors import InputError
from .models import create_model, uses_group_norm
from .models.layers import fold_batch_norms, pad_to_multiple
from .preprocessing import FrameStatistics, Preprocessing, frame_statistics, frame_statistics_torch
from .steps import level_steps
from .validation import as_image, check_threshold, split_input_mask
from .veto import veto_sources

logger = logging.getLogger(__name__)

DEFAULT_TILE = 1024
DEFAULT_BATCH_SIZE = 2
#: Arithmetic the network may run in: ``float32`` (exact), or autocast to a 16-bit float type.
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}
WEIGHTS_DIR = Path(__file__).parent / "weights"


@dataclass
class DetectionResult:
    """Everything a detection produced for one frame.

    Attributes
    ----------
    probability : ndarray of float32
        CR probability per pixel, same shape as the input; 0 where the input was not finite.
    logits : ndarray of float32 or None
        The network's logits (-inf where the input was not finite). Probabilities saturate at 1.0 in
        float32 for logits above ~17; rank pixels by logits (ROC curves at low FPR). None when
        ``predict(..., return_logits=False)`` (4 bytes per pixel less).
    mask : ndarray of bool
        ``probability >= threshold``, never true at non-finite input pixels.
    nonfinite : ndarray of bool
        Pixels that were NaN or inf in the input (never flagged).
    protected : ndarray of bool
        Saturated stars and bleed trails (never flagged): see :func:`saturated_regions`.
    threshold : float
        Threshold used for ``mask``.
    statistics : FrameStatistics
        Sky and noise used to normalise the frame.
    masked : ndarray of bool or None
        The input mask (bad pixels given by the caller or the file), never flagged; None if there was none.
    vetoed : ndarray of bool or None
        Regions the network flagged that the source veto took for stars (:mod:`crdetect.veto`):
        probability 0, logit -inf, never flagged. None when the veto was off (all False when it was on and
        took nothing).
    """

    probability: np.ndarray
    mask: np.ndarray
    nonfinite: np.ndarray
    logits: np.ndarray | None
    protected: np.ndarray
    threshold: float
    statistics: FrameStatistics
    masked: np.ndarray | None = None
    vetoed: np.ndarray | None = None

    @property
    def cr_fraction(self) -> float:
        """Fraction of pixels flagged as CR."""
        return np.count_nonzero(self.mask) / self.mask.size if self.mask.size else 0.0


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


def to_host(tensors: list[torch.Tensor | None]) -> list[np.ndarray | None]:
    """numpy arrays of ``tensors`` (None stays None). From a GPU they are copied into page-locked host memory,
    all at once, then waited for: copies into ordinary memory took 58-69 ms for the five maps of a DECam CCD
    on an H200 (4x the network). Page-locked blocks come from torch's caching host allocator, so frames of one
    size reuse them; each array keeps its block until it is freed."""
    device = next((t.device for t in tensors if t is not None and t.is_cuda), None)
    if device is None:
        return [None if t is None else t.numpy() for t in tensors]
    hosts = []
    for tensor in tensors:
        if tensor is None:
            hosts.append(None)
            continue
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        hosts.append(host)
    torch.cuda.current_stream(device).synchronize()
    return [None if host is None else host.numpy() for host in hosts]


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


#: Pixels within this many times the frame's noise below the saturation level count as saturated.
SATURATION_NOISE_SIGMA = 3.0


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

    if image.device.type == "cpu":
        return plateau_saturation(image.numpy(), tolerance, min_pixels, statistics, min_snr)
    return _plateau_saturation_in_torch(image, statistics, tolerance, min_pixels, min_snr)


def _plateau_saturation_in_torch(image: torch.Tensor, statistics: FrameStatistics, tolerance: float,
                                 min_pixels: int, min_snr: float) -> float | None:

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
    if image.device.type == "cpu":
        return torch.from_numpy(saturated_regions(image.numpy(), saturation, min_pixels))
    return _saturated_regions_in_torch(image, saturation, min_pixels)


def _saturated_regions_in_torch(image: torch.Tensor, saturation: float | None, min_pixels: int) -> torch.Tensor:
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


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available; otherwise the named device, checked to exist."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise InputError("device 'cuda' was asked for but no CUDA GPU is available; use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from None


def tile_origins(length: int, tile: int, margin: int) -> list[int]:
    """Start positions of tiles of size ``tile`` covering ``length`` with ``margin`` px of context.

    Consecutive tiles overlap by ``2 * margin`` so that every pixel is in the core of some tile;
    the last tile is shifted back to end exactly at ``length``.
    """
    if length <= tile:
        return [0]
    stride = tile - 2 * margin
    origins = list(range(0, length - tile, stride))
    origins.append(length - tile)
    return origins


def balanced_tile(length: int, tile: int, margin: int, multiple: int) -> int:
    """The smallest tile (a multiple of ``multiple``, at most ``tile``) that covers ``length`` with as many
    tiles as ``tile`` would need.

    Tiles of the requested size waste work when the length is just above a multiple of the stride
    (a 2048 px axis in 1024 px tiles with 32 px margins needs 3 tiles of 1024, i.e. 1.5x the pixels);
    3 tiles of 728 px cover it with 1.07x.
    """
    if length <= tile:
        return tile
    count = int(np.ceil((length - 2 * margin) / (tile - 2 * margin)))
    balanced = int(np.ceil(((length - 2 * margin) / count + 2 * margin) / multiple) * multiple)
    return min(tile, balanced)


def _core_window(origin: int, tile: int, length: int, margin: int) -> tuple[int, int]:
    """The tile-relative range whose predictions are kept: all but the margins facing other tiles."""
    start = margin if origin > 0 else 0
    stop = tile - margin if origin + tile < length else tile
    return start, stop


class CRDetector:
    """A CR model plus the preprocessing and threshold it was trained with.

    Build one with :func:`load_detector`. Methods take 2-D images in their own units.

    Parameters
    ----------
    model : nn.Module
        Model mapping (N, 1, H, W) normalised images to logits.
    preprocessing : Preprocessing
        How the model expects its input to be scaled.
    threshold : float
        Default probability threshold of :meth:`detect`.
    device : str or torch.device
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    name : str
        Human-readable model name, written into output headers.
    info : CheckpointInfo, optional
        Metadata of the checkpoint the model came from.
    precision : {"float32", "bfloat16", "float16"}
        Arithmetic of the network's convolutions (:func:`check_precision`); float32 by default.
    source_veto : bool
        Take flagged regions that look like stars out of the mask (:mod:`crdetect.veto`); on by default.
    """

    def __init__(self, model: nn.Module, preprocessing: Preprocessing | None = None, threshold: float = 0.5,
                 device: str | torch.device = "auto", name: str | None = None,
                 info: CheckpointInfo | None = None, precision: str = "float32", source_veto: bool = True) -> None:
        self.device = resolve_device(device)
        self.precision = check_precision(resolve_precision(precision, self.device), self.device)
        # a copy with BatchNorms folded into their convolutions (faster; the caller's module is untouched)
        self.model = fold_batch_norms(copy.deepcopy(unwrap_model(model)).eval()).to(self.device)
        # channels-last convolutions are markedly faster on CPUs (oneDNN; measured ~1.6x for the 3-16 U-Net on
        # 1024 px tiles, benchmarks/bench_detect.py) and on CUDA without GroupNorm (the default network on a
        # DECam CCD in float16 on an H200: 9 ms against 14 ms; issue #14), as in training
        channels_last = self.device.type == "cpu" or (self.device.type == "cuda" and not uses_group_norm(self.model))
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=self.memory_format)
        self.preprocessing = preprocessing or Preprocessing()
        self.threshold = float(threshold)
        self.source_veto = bool(source_veto)
        self.name = name or getattr(self.model, "model_name", type(self.model).__name__)
        self.info = info
        self.network = self.model  # the eager module (attributes; ``self.model`` may be compiled)

    def compile(self) -> "CRDetector":
        """Run the network through ``torch.compile`` (returns ``self``).

        Measured on 2 CPU cores, DECam CCD 2048 x 4096 (results/bench_detect.txt): 0.94-1.03x the eager
        time per frame once BatchNorms are folded (:func:`fold_batch_norms`; before folding it was 0.8x),
        after a one-off compilation of 2-16 s per process and tile shape; logits equal to 1e-5. Kept for
        GPUs and CPUs where it measurably helps (``benchmarks/bench_detect.py --compile``).
        """
        self.model = torch.compile(self.network, dynamic=False)
        return self

    def __repr__(self) -> str:
        return (f"CRDetector(name={self.name!r}, threshold={self.threshold}, device={str(self.device)!r}, "
                f"precision={self.precision!r}, source_veto={self.source_veto})")

    @property
    def pad_multiple(self) -> int:
        return int(getattr(self.network, "pad_multiple", 1))

    @property
    def context_margin(self) -> int:
        return int(getattr(self.network, "context_margin", 32))

    def predict(self, image, threshold: float | None = None, tile: int | None = DEFAULT_TILE,
                overlap: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                statistics: FrameStatistics | None = None, saturation: float | None = None,
                mask=None, return_logits: bool = True, source_veto: bool | None = None) -> DetectionResult:
        """Probability map, mask and diagnostics for one frame.

        Parameters
        ----------
        image : array_like, MaskedArray, CCDData or Frame
            2-D frame in its own units (ADU or electrons; the preprocessing is unit-free). The mask of a
            masked array or ``CCDData`` is honoured like ``mask``. A :class:`crdetect.frame.Frame` brings
            its mask and saturation level (used unless given here) and its data section: only that is
            searched, and pixels outside it (overscan) are never flagged (probability 0, logit -inf).
        threshold : float, optional
            Probability threshold; the detector's default when omitted.
        tile : int or None
            Tile side in pixels (rounded up to the model's pooling multiple); ``None`` runs the whole
            frame at once (fastest on GPU for small frames, most memory).
        overlap : int, optional
            Context margin kept around each tile's core, in pixels; the model's receptive-field
            margin by default. Tiles overlap by twice this.
        batch_size : int
            Tiles per forward pass.
        statistics : FrameStatistics, optional
            Sky and noise of the frame (e.g. from gain and read noise); estimated robustly if omitted.
        saturation : float, optional
            Saturation level (same units as the image, e.g. the FITS ``SATURATE`` keyword): saturated
            stars and bleed trails are never flagged (:func:`saturated_regions`; pixels down to
            ``SATURATION_NOISE_SIGMA`` times the frame's noise below the level count, since read noise
            scatters a plateau about it). Omitted, it is read off the pixels when the frame has flat
            plateaus at its maximum (:func:`plateau_saturation`).
        mask : array_like of bool, optional
            Input mask of the image's shape (True or non-zero = bad pixel: hot pixels, bad columns, a DQ
            plane). Masked pixels are never flagged, and are treated like non-finite ones: kept out of
            the sky, noise and background estimates and replaced by the sky before the network.
        return_logits : bool
            Keep the logits in the result (for ROC curves); without them the probability is computed in
            their place, saving 4 bytes per pixel (``crdetect detect`` does not need them).
        source_veto : bool, optional
            Take flagged regions that look like stars (smooth, with wings) out of the mask
            (:mod:`crdetect.veto`); the detector's setting (on by default) when omitted.
        """
        from .frame import Frame

        if isinstance(image, Frame):
            frame = image
            if frame.mask is not None:
                mask = frame.mask if mask is None else (np.asarray(mask) != 0) | frame.mask
            saturation = frame.saturation if saturation is None else saturation
            options = dict(threshold=threshold, tile=tile, overlap=overlap, batch_size=batch_size,
                           statistics=statistics, saturation=saturation, return_logits=return_logits,
                           source_veto=source_veto)
            if frame.section is not None:
                return self._predict_section(frame.data, frame.section, mask, **options)
            return self.predict(frame.data, mask=mask, **options)
        image, input_mask = split_input_mask(image, mask)
        image = as_image(image)
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        with torch.inference_mode():
            # the frame goes to the model's device once; every per-frame step below runs there
            frame = torch.from_numpy(image).to(self.device)
            # in CPU memory numpy answers these on the same memory (torch's CPU isfinite and boolean sums
            # measured 15-50x slower on a 2048 x 4096 frame)
            on_cpu = self.device.type == "cpu"
            nonfinite = torch.from_numpy(~np.isfinite(image)) if on_cpu else ~torch.isfinite(frame)
            masked = None if input_mask is None else torch.from_numpy(input_mask).to(self.device)
            ignored = nonfinite if masked is None else nonfinite | masked
            if bool(ignored.all()):
                what = "no finite pixels (all NaN or inf)" if bool(nonfinite.all()) else "no finite pixels outside the mask"
                raise InputError(f"the image has {what}; nothing to detect")
            count = int(np.count_nonzero(nonfinite.numpy())) if on_cpu else int(nonfinite.sum())
            if count:
                logger.warning("%d non-finite pixels (NaN/inf) are treated as sky and never flagged", count)
            if masked is not None:
                # masked pixels become NaN in a working copy: every estimate below already skips non-finite pixels
                frame = torch.where(masked, torch.nan, frame)
            stats = statistics or frame_statistics_torch(frame)
            # overscan, prescan and amplifier steps levelled (the same tensor where there are none)
            levelled, _ = level_steps(frame, stats.sigma)
            if levelled is not frame and statistics is None:
                stats = frame_statistics_torch(levelled)
            normalised = self.preprocessing.normalise_batch(levelled[None, None], stats.sky, stats.sigma)[0, 0]
            logits = self._predict_fitting_memory(normalised, tile, overlap, batch_size)
            del normalised
            if saturation is None:
                saturation = plateau_saturation_torch(frame, stats)
                if saturation is not None:
                    logger.info("no saturation level given: flat plateaus at %.6g and above are treated as saturated",
                                saturation)
            # read noise scatters a saturated plateau about its level: half its pixels read just below it, and
            # a small saturated core (an undersampled star) would fall apart into pieces too small to protect
            protected = saturated_regions_torch(
                frame, None if saturation is None else saturation - SATURATION_NOISE_SIGMA * stats.sigma)
            never = ignored | protected
            del ignored
            logits.masked_fill_(never, -torch.inf)
            # without the logits the probability takes their memory (4 bytes per pixel less)
            probability = torch.sigmoid(logits) if return_logits else logits.sigmoid_()
            # a threshold of 1 asks for certainty, which a network never has: float32 rounds p > 1 - 3e-8 up
            # to 1.0, so ">= 1" would still flag the strongest hits
            flagged = (probability >= threshold) & ~never if threshold < 1.0 else torch.zeros_like(never)
            probability, flagged, nonfinite, logits, protected, levelled = to_host(
                [probability, flagged, nonfinite, logits if return_logits else None, protected,
                 None if levelled is frame else levelled])
            del frame
        vetoed = None
        if self.source_veto if source_veto is None else source_veto:
            unusable = nonfinite if input_mask is None else nonfinite | input_mask
            # unusable pixels take the sky here too, as before the network; the veto sees the levelled frame
            seen = image if levelled is None else levelled
            vetoed = (veto_sources(seen, flagged, stats.sigma, unusable, fill=stats.sky) if flagged.any()
                      else np.zeros(flagged.shape, bool))
            if vetoed.any():
                flagged &= ~vetoed
                probability[vetoed] = 0.0
                if logits is not None:
                    logits[vetoed] = -np.inf
        return DetectionResult(probability, flagged, nonfinite, logits, protected, threshold, stats, input_mask, vetoed)

    def _predict_section(self, image, section, mask, **options) -> DetectionResult:
        """:meth:`predict` on ``image[section]`` only, embedded in a result of the full frame's shape.

        Raw frames carry overscan columns: their edge against the data is a sharp straight step that a CR
        model has never seen, and nothing there can be a cosmic ray. Pixels outside the section are never
        flagged (probability 0, logit -inf).
        """
        image = as_image(image)
        if mask is not None and np.shape(mask) != image.shape:
            raise InputError(f"mask has shape {np.shape(mask)} but the image has shape {image.shape}")
        inner = self.predict(image[section], mask=None if mask is None else np.asarray(mask)[section], **options)

        def embed(values: np.ndarray | None, fill) -> np.ndarray | None:
            if values is None:
                return None
            full = np.full(image.shape, fill, values.dtype)
            full[section] = values
            return full

        return replace(inner, probability=embed(inner.probability, 0), mask=embed(inner.mask, False),
                       nonfinite=embed(inner.nonfinite, False), logits=embed(inner.logits, -np.inf),
                       protected=embed(inner.protected, False), masked=embed(inner.masked, False),
                       vetoed=embed(inner.vetoed, False))

    def predict_proba(self, image, tile: int | None = DEFAULT_TILE, overlap: int | None = None,
                      batch_size: int = DEFAULT_BATCH_SIZE, statistics: FrameStatistics | None = None,
                      mask=None) -> np.ndarray:
        """CR probability (float32, shape of ``image``); see :meth:`predict` for the parameters."""
        return self.predict(image, tile=tile, overlap=overlap, batch_size=batch_size, statistics=statistics,
                            mask=mask).probability

    def detect(self, image, threshold: float | None = None, mask=None, **kwargs) -> np.ndarray:
        """Boolean CR mask (shape of ``image``); see :meth:`predict` for the parameters."""
        return self.predict(image, threshold=threshold, mask=mask, **kwargs).mask

    @torch.inference_mode()
    def _run(self, batch: torch.Tensor) -> torch.Tensor:
        """Logits (N, H, W) of normalised tiles (N, H, W) on the model's device."""
        x = batch[:, None].contiguous(memory_format=self.memory_format)
        dtype = PRECISIONS[self.precision]
        # autocast keeps normalisations and reductions in float32; only convolutions and matmuls drop
        with torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            return self.model(x).float()[:, 0]

    def _margin(self, overlap: int | None) -> int:
        """Context margin of a tile in pixels, rounded up to the pooling multiple."""
        margin = self.context_margin if overlap is None else int(overlap)
        return int(np.ceil(margin / self.pad_multiple) * self.pad_multiple)

    def _predict_fitting_memory(self, image: torch.Tensor, tile: int | None, overlap: int | None,
                                batch_size: int) -> torch.Tensor:
        """:meth:`_predict_normalised`, retried with half the batch, then half the tile, when out of memory.

        Large tiles are fastest on a GPU but their memory grows with the tile's area; rather than fail on
        a smaller GPU, fall back (tiling is exact, so the result does not change).
        """
        while True:
            try:
                return self._predict_normalised(image, tile, overlap, batch_size)
            except torch.OutOfMemoryError:
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                side = max(image.shape) if tile is None else tile
                if batch_size > 1:
                    batch_size //= 2
                elif side // 2 > 2 * self._margin(overlap):
                    tile = side // 2
                else:
                    raise InputError(f"out of {self.device.type} memory even with one {side} px tile; "
                                     "use --device cpu or free memory") from None
                logger.warning("out of %s memory: retrying with batch %d, tile %s", self.device.type, batch_size,
                               tile)

    def _predict_normalised(self, image: torch.Tensor, tile: int | None, overlap: int | None,
                            batch_size: int) -> torch.Tensor:
        """Logits of a normalised frame (2-D tensor on the model's device), whole or tiled."""
        height, width = image.shape
        multiple = self.pad_multiple
        # Pad once for the whole frame, exactly as the model pads a whole frame itself, so tiles
        # see the same pixels (and the same pooling grid) as a whole-frame pass.
        padded = pad_to_multiple(image[None, None], multiple)[0][0, 0]
        pad_h, pad_w = padded.shape
        if tile is None or (pad_h <= tile and pad_w <= tile):
            return self._run(padded[None])[0, :height, :width].contiguous()

        tile = int(np.ceil(tile / multiple) * multiple)
        margin = self._margin(overlap)
        if tile <= 2 * margin:
            raise InputError(f"tile ({tile}) must be larger than twice the overlap ({margin}); "
                             "use a larger tile or a smaller overlap")
        tile_h = min(balanced_tile(pad_h, tile, margin, multiple), pad_h)
        tile_w = min(balanced_tile(pad_w, tile, margin, multiple), pad_w)
        windows = [(y, x) for y in tile_origins(pad_h, tile_h, margin) for x in tile_origins(pad_w, tile_w, margin)]
        total = torch.zeros((pad_h, pad_w), dtype=torch.float32, device=image.device)
        # how many tile cores cover each pixel (1, or 2-4 where the last tile of a row or column is shifted
        # back): uint8 counts, a quarter of the memory of a float weight map
        count = torch.zeros((pad_h, pad_w), dtype=torch.uint8, device=image.device)
        for start in range(0, len(windows), batch_size):
            chunk = windows[start:start + batch_size]
            batch = torch.stack([padded[y:y + tile_h, x:x + tile_w] for y, x in chunk])
            for (y, x), logit in zip(chunk, self._run(batch)):
                y0, y1 = _core_window(y, tile_h, pad_h, margin)
                x0, x1 = _core_window(x, tile_w, pad_w, margin)
                total[y + y0:y + y1, x + x0:x + x1] += logit[y0:y1, x0:x1]
                count[y + y0:y + y1, x + x0:x + x1] += 1
        del padded
        total /= count
        return total[:height, :width].contiguous()


def check_precision(precision: str, device: torch.device) -> str:
    """Validate a precision name for ``device``; returns it.

    ``bfloat16`` and ``float16`` run the network under ``torch.autocast``. Measured on the shipped models
    (results/bench_detect.txt, results/precision.md): on a 2-core AMD EPYC with AVX512-BF16, bfloat16
    takes 0.50-0.71x the float32 time, moves TPR on the real frames by at most 0.002 and changes 0.1-0.2 %
    of the flagged pixels; float16 arithmetic changes several times fewer, but on a CPU it is several
    times slower than float32 (no native float16 convolutions): it is meant for CUDA GPUs.
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use auto or one of {', '.join(PRECISIONS)}")
    if precision == "float16" and device.type == "cpu":
        logger.warning("float16 on a CPU is much slower than float32 (no native float16 convolutions); "
                       "use bfloat16 for speed on CPUs")
    if precision == "bfloat16" and device.type == "cpu" and not cpu_has_native_bfloat16():
        logger.warning("this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX): bfloat16 may be "
                       "slower than float32 here; measure with benchmarks/bench_detect.py --precision")
    return precision


def cpu_has_native_bfloat16(unknown: bool = True) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); ``unknown`` when torch cannot tell."""
    try:  # private helpers of torch.cpu (torch >= 2.1); no public equivalent
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    except AttributeError:
        return unknown


def resolve_precision(precision: str, device: torch.device) -> str:
    """``"auto"``: float16 on CUDA GPUs, bfloat16 on a CPU with native bfloat16 arithmetic, float32 elsewhere.
    Other names pass through.

    Measured with the shipped ``default`` and ``fast`` (results/precision.md, results/gpu_session2/):
    on a 2-core AMD EPYC with AVX512-BF16, bfloat16 takes 0.50-0.71x the float32 time and moves TPR on the
    real frames by at most 0.002; on an H200, float16 takes the network from 17.8 to 13.8 ms per DECam CCD,
    moves TPR on the real frames by at most 0.0002 and changes 8-10 mask pixels per Mpix."""
    if precision != "auto":
        return precision
    if device.type == "cuda":
        return "float16"
    return "bfloat16" if device.type == "cpu" and cpu_has_native_bfloat16(unknown=False) else "float32"


def shipped_weights(name: str) -> Path | None:
    """Path of the checkpoint shipped in the package for ``name`` (e.g. ``"default"``), if any."""
    path = WEIGHTS_DIR / f"{name}.pt"
    return path if path.is_file() else None


def shipped_model_names() -> list[str]:
    """Names of the trained models shipped in the package (``default`` first)."""
    names = sorted(p.stem for p in WEIGHTS_DIR.glob("*.pt"))
    return sorted(names, key=lambda n: n != "default")


def unknown_model_message(name: str) -> str:
    """Why ``name`` is not a model, with the close matches, the shipped (trained) models, and the registry
    networks that have no trained weights (if any)."""
    from .models import list_models

    shipped = shipped_model_names()
    untrained = [n for n in list_models() if n not in shipped]
    close = difflib.get_close_matches(name, list(dict.fromkeys(shipped + untrained)), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    extra = (f" Untrained registry networks, for experiments only: {', '.join(untrained)}." if untrained else "")
    return (f"unknown model {name!r}.{hint} Trained models shipped with crdetect: {', '.join(shipped) or 'none'}; "
            f"or a checkpoint file (.pt).{extra} (`crdetect models` lists them all)")


def is_untrained_name(model) -> bool:
    """Whether ``model`` names a registry network without weights (neither shipped nor a checkpoint file)."""
    from .models import list_models

    spec = str(model)
    return (not isinstance(model, nn.Module) and shipped_weights(spec) is None and not Path(spec).is_file()
            and spec in list_models())


def load_detector(model: str | os.PathLike | nn.Module = "default", device: str | torch.device = "auto",
                  threshold: float | None = None, compile: bool = False, precision: str = "float32",
                  source_veto: bool = True) -> CRDetector:
    """Build a :class:`CRDetector` from a shipped model name, a registry name, a checkpoint or a module.

    Parameters
    ----------
    model : str, path or nn.Module
        ``"default"`` or another shipped model (see ``crdetect models``); a checkpoint path
        (``.pt``); a registry name (an *untrained* network, for experiments); or a module.
    device : str or torch.device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda"``.
    threshold : float, optional
        Override the checkpoint's default probability threshold.
    compile : bool
        Compile the network with ``torch.compile`` (:meth:`CRDetector.compile`).
    precision : {"float32", "bfloat16", "float16"}
        Arithmetic of the network (:func:`check_precision`): float32 (default, exact), bfloat16 (about 2x
        faster on recent CPUs), float16 (for CUDA GPUs).
    source_veto : bool
        Take flagged regions that look like stars out of the mask (:mod:`crdetect.veto`; on by default).
    """
    if isinstance(model, nn.Module):
        detector = CRDetector(model, device=device, precision=precision)
    else:
        spec = str(model)
        path = shipped_weights(spec) or (Path(spec) if (spec.endswith(".pt") or Path(spec).is_file()) else None)
        if path is not None:
            net, info = load_checkpoint(path)
            name = spec if shipped_weights(spec) else path.name
            detector = CRDetector(net, info.preprocessing, info.threshold, device, name=f"{name} ({info.model_name})",
                                  info=info, precision=precision)
        elif spec == "default":
            raise InputError("no default model is shipped with this installation of crdetect; "
                             "pass --model with a checkpoint path")
        else:
            if not is_untrained_name(spec):
                raise InputError(unknown_model_message(spec))
            logger.warning("model %r has no trained weights: its predictions are meaningless until trained "
                           "(`crdetect train`)", spec)
            detector = CRDetector(create_model(spec), device=device, name=f"{spec} (untrained)", precision=precision)
    if threshold is not None:
        detector.threshold = check_threshold(threshold)
    detector.source_veto = bool(source_veto)
    return detector.compile() if compile else detector
