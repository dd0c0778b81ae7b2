"""The network over a frame of any size: whole, or in exact overlapping tiles (a sliding window in the manner of
MONAI's ``sliding_window_inference``), retried with smaller batches and tiles when a GPU runs out of memory.

Tiling is exact for local models (convolutional nets with BatchNorm): the frame is reflect-padded once to the
model's pooling multiple, tiles start on that multiple, each tile contributes only pixels at least ``margin``
from its inner edges, and overlapping contributions are averaged, so the tiled result equals the whole-frame
result. Peers tile without overlap (seams, deepCR) or crop the frame to a multiple of 16 (lost edges,
Cosmic-CoNN); neither happens here.

Frames are numpy arrays on the host (any runtime on the CPU) or torch tensors on a GPU; the window is the same
code for both, and torch is imported only for tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

DEFAULT_TILE = 1024
DEFAULT_BATCH_SIZE = 2


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


def pad_frame(image, multiple: int):
    """A 2-D array or tensor padded at its bottom and right to a multiple of ``multiple``, as the networks pad a
    whole frame themselves (:func:`crdetect.models.layers.pad_to_multiple`): reflected, or the edge repeated where
    the frame is too small to reflect."""
    height, width = image.shape
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if not (pad_h or pad_w):
        return image
    reflect = pad_h < height and pad_w < width
    if isinstance(image, np.ndarray):
        return np.pad(image, ((0, pad_h), (0, pad_w)), mode="reflect" if reflect else "edge")
    from ..models.layers import pad_to_multiple

    return pad_to_multiple(image[None, None], multiple)[0][0, 0]


def _zeros(shape: tuple[int, int], dtype: str, like):
    """Zeros of ``dtype`` (``"float32"`` or ``"uint8"``) beside ``like`` (its library and device)."""
    if isinstance(like, np.ndarray):
        return np.zeros(shape, dtype)
    import torch

    return torch.zeros(shape, dtype=getattr(torch, dtype), device=like.device)


def _stack(tiles: list):
    if isinstance(tiles[0], np.ndarray):
        return np.stack(tiles)
    import torch

    return torch.stack(tiles)


def sliding_window(network: Callable, image, tile: int | None, margin: int, multiple: int, batch_size: int):
    """``network``'s output (logits) for a 2-D ``image``, whole or in tiles, in the image's library and device.

    Parameters
    ----------
    network : callable
        Maps a batch of tiles (N, H, W) to outputs of the same shape (arrays for arrays, tensors for tensors).
    image : ndarray or torch.Tensor
        The normalised frame (2-D, float32).
    tile : int or None
        Tile side (rounded up to ``multiple``); None runs the whole padded frame at once.
    margin : int
        Context kept around each tile's core (a multiple of ``multiple``); tiles overlap by twice this.
    multiple : int
        The network's pooling multiple: the frame is padded to it, tiles start on it.
    batch_size : int
        Tiles per call of ``network``.
    """
    height, width = image.shape
    # Pad once for the whole frame, exactly as the model pads a whole frame itself, so tiles see the same
    # pixels (and the same pooling grid) as a whole-frame pass.
    padded = pad_frame(image, multiple)
    pad_h, pad_w = padded.shape
    if tile is None or (pad_h <= tile and pad_w <= tile):
        return network(padded[None])[0, :height, :width]
    tile = int(np.ceil(tile / multiple) * multiple)
    if tile <= 2 * margin:
        raise InputError(f"tile ({tile}) must be larger than twice the overlap ({margin}); "
                         "use a larger tile or a smaller overlap")
    tile_h = min(balanced_tile(pad_h, tile, margin, multiple), pad_h)
    tile_w = min(balanced_tile(pad_w, tile, margin, multiple), pad_w)
    windows = [(y, x) for y in tile_origins(pad_h, tile_h, margin) for x in tile_origins(pad_w, tile_w, margin)]
    total = _zeros((pad_h, pad_w), "float32", image)
    # how many tile cores cover each pixel (1, or 2-4 where the last tile of a row or column is shifted back):
    # uint8 counts, a quarter of the memory of a float weight map
    count = _zeros((pad_h, pad_w), "uint8", image)
    for start in range(0, len(windows), batch_size):
        chunk = windows[start:start + batch_size]
        batch = _stack([padded[y:y + tile_h, x:x + tile_w] for y, x in chunk])
        for (y, x), logit in zip(chunk, network(batch)):
            y0, y1 = _core_window(y, tile_h, pad_h, margin)
            x0, x1 = _core_window(x, tile_w, pad_w, margin)
            total[y + y0:y + y1, x + x0:x + x1] += logit[y0:y1, x0:x1]
            count[y + y0:y + y1, x + x0:x + x1] += 1
    del padded
    total /= count
    return total[:height, :width]


def sliding_window_fitting_memory(network, image, tile: int | None, margin: int, multiple: int, batch_size: int):
    """:func:`sliding_window`, retried with half the batch, then half the tile, when a GPU runs out of memory.

    Large tiles are fastest on a GPU but their memory grows with the tile's area; rather than fail on a smaller
    GPU, fall back (tiling is exact, so the result does not change). Arrays on the host go straight through.
    """
    if isinstance(image, np.ndarray):
        return np.ascontiguousarray(sliding_window(network, image, tile, margin, multiple, batch_size))
    import torch

    while True:
        try:
            return sliding_window(network, image, tile, margin, multiple, batch_size).contiguous()
        except torch.OutOfMemoryError:
            if image.device.type == "cuda":
                torch.cuda.empty_cache()
            side = max(image.shape) if tile is None else tile
            if batch_size > 1:
                batch_size //= 2
            elif side // 2 > 2 * margin:
                tile = side // 2
            else:
                raise InputError(f"out of {image.device.type} memory even with one {side} px tile; "
                                 "use --device cpu or free memory") from None
            logger.warning("out of %s memory: retrying with batch %d, tile %s", image.device.type, batch_size, tile)
