"""A self-contained HTML page to inspect a detection: ``crdetect view OUTPUT.fits``.

The page needs no server and no network: the image, the probability map and the pixels that can never be
flagged are embedded in it. In the browser: the frame with a zscale (linear or asinh) stretch, the mask
overlay on and off, a threshold slider that recomputes the mask from the probability, growth of the
mask by N pixels, zoom and pan with the pixel value and probability under the cursor, the detected hits
listed largest first with stamps (click one to go there), and a download of the mask *as shown* (the
chosen threshold and growth) as a FITS file.
"""

from __future__ import annotations

import base64
import html
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from .atomic import atomic_output
from .errors import InputError

logger = logging.getLogger(__name__)

TEMPLATE = Path(__file__).with_name("viewer_template.html")
#: Frames larger than this make pages of more than ~100 MB, slow to open: a warning says so.
LARGE_FRAME_PIXELS = 16_000_000


def _base64(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=dtype).tobytes()).decode("ascii")


def _open(path: str | os.PathLike) -> fits.HDUList:
    from .io.reading import open_fits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AstropyWarning)
        return open_fits(path)


def load_detection(output: str | os.PathLike, extver: int | None = None,
                   image_path: str | os.PathLike | None = None) -> dict:
    """The arrays of one searched science image of a crdetect output: ``image``, ``probability``, ``mask`` (the
    CRMASK as written), ``excluded`` (never flagged: non-finite, the input mask, the source veto's plane), and
    ``header`` (CRMASK's), ``science``, ``name``, ``source``, ``stem``.

    Parameters
    ----------
    output : path
        A file written by ``crdetect detect``.
    extver : int, optional
        Which science image (the EXTVER of its ``CRMASK``); the first by default.
    image_path : path, optional
        The input file, for outputs written with ``--mask-only`` (which hold no copy of the image).
    """
    with _open(output) as hdul:
        masks = [h for h in hdul if h.name == "CRMASK"]
        if not masks:
            raise InputError(f"{str(output)!r} has no CRMASK extension: is it an output of `crdetect detect`?")
        chosen = masks[0] if extver is None else next((h for h in masks if h.ver == extver), None)
        if chosen is None:
            raise InputError(f"{str(output)!r} has no CRMASK with EXTVER {extver}; it has "
                             f"{', '.join(str(h.ver) for h in masks)}")
        header = chosen.header.copy()
        mask = np.asarray(chosen.data) != 0
        probability = np.asarray(hdul["CRPROB", chosen.ver].data, np.float64)
        science, mask_index = int(header["CRSCIEXT"]), int(header.get("CRMASKX", -1))
        # the source veto's regions: the network's probability is kept there, the mask never holds them
        vetoed = np.asarray(hdul["CRVETO", chosen.ver].data) != 0 if ("CRVETO", chosen.ver) in hdul else None
        copied = image_path is None and "CRINPUT" not in hdul[0].header
    source = output if copied else image_path
    if source is None:
        raise InputError(f"{str(output)!r} was written with --mask-only and holds no image; pass --image INPUT.fits")
    with _open(source) as hdul:
        if science >= len(hdul) or hdul[science].data is None or hdul[science].data.shape != probability.shape:
            raise InputError(f"HDU {science} of {str(source)!r} is not the {probability.shape} image the mask "
                             "was made for; pass the input file with --image")
        image = np.asarray(hdul[science].data, np.float32)
        excluded = ~np.isfinite(image)
        if vetoed is not None:
            excluded |= vetoed
        if 0 <= mask_index < len(hdul) and hdul[mask_index].data is not None:
            excluded |= np.asarray(hdul[mask_index].data) != 0
        name = hdul[science].name
    stem = Path(output).name.rsplit(".fits", 1)[0].removesuffix("_crmask")
    return {"image": image, "probability": probability, "mask": mask, "excluded": excluded, "header": header,
            "science": science, "name": name, "source": Path(output).name, "stem": stem}


def view_data(output: str | os.PathLike, extver: int | None = None, image_path: str | os.PathLike | None = None) -> dict:
    """What the page embeds for one searched science image of a crdetect output file (:func:`load_detection`)."""
    loaded = load_detection(output, extver, image_path)
    image, excluded, header = loaded["image"], loaded["excluded"], loaded["header"]
    height, width = image.shape
    if image.size > LARGE_FRAME_PIXELS:
        logger.warning("a %d x %d frame makes a page of about %d MB: slow to open in a browser", width, height,
                       int(image.size * 9.4 / 1e6))
    return {"width": width, "height": height, "image": _base64(image, "<f4"),
            # the stored 16-bit steps of 1/65534, as integers 0..65534
            "probability": _base64(np.clip(np.rint(loaded["probability"] * 65534), 0, 65534), "<u2"),
            "excluded": _base64(excluded, "u1") if excluded.any() else None,
            "threshold": float(header["CRTHRESH"]), "model": str(header.get("CRMODEL", "")),
            "source": loaded["source"], "stem": loaded["stem"], "science": loaded["science"], "name": loaded["name"]}


def write_quicklook(output: str | os.PathLike, png: str | os.PathLike | None = None, extver: int | None = None,
                    image_path: str | os.PathLike | None = None, overwrite: bool = False, stamps: int = 8) -> Path:
    """A static PNG of a detection for pipelines and logs (``crdetect view OUTPUT --png``): the frame (zscale) with
    the CR mask in red, and stamps of the largest hits; returns its path (default: OUTPUT with ``.png``).

    Needs matplotlib (``pip install 'crdetect[plots]'``).
    """
    from ._optional import require

    require("matplotlib", "plots", "the PNG quick-look")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.visualization import ZScaleInterval
    from scipy import ndimage

    loaded = load_detection(output, extver, image_path)
    image, mask, header = loaded["image"], loaded["mask"], loaded["header"]
    finite = np.where(np.isfinite(image), image, np.nanmedian(image))
    low, high = ZScaleInterval().get_limits(finite)
    labels, count = ndimage.label(mask, np.ones((3, 3), bool))
    sizes = ndimage.sum_labels(mask, labels, np.arange(1, count + 1)) if count else np.zeros(0)
    largest = np.argsort(sizes)[::-1][:stamps]
    columns = 4
    rows = max(1, int(np.ceil(len(largest) / columns)))
    figure = plt.figure(figsize=(12, 6))
    grid = figure.add_gridspec(rows, 2 + columns, width_ratios=[3, 3] + [1] * columns)
    frame_axis = figure.add_subplot(grid[:, :2])
    overlay = np.zeros((*mask.shape, 4))
    overlay[mask] = (1.0, 0.1, 0.1, 0.9)
    frame_axis.imshow(finite, origin="lower", cmap="gray", vmin=low, vmax=high, interpolation="nearest")
    frame_axis.imshow(overlay, origin="lower", interpolation="nearest")
    frame_axis.set_title(f"{loaded['source']} [{loaded['science']}]: {int(mask.sum())} CR px in {count} hits\n"
                         f"{header.get('CRMODEL', '')}, threshold {float(header['CRTHRESH']):.3f}", fontsize=8)
    boxes = ndimage.find_objects(labels)
    for position, index in enumerate(largest):
        box = boxes[index]
        cy, cx = (box[0].start + box[0].stop) // 2, (box[1].start + box[1].stop) // 2
        half = max(8, max(box[0].stop - box[0].start, box[1].stop - box[1].start))
        window = (slice(max(cy - half, 0), cy + half), slice(max(cx - half, 0), cx + half))
        axis = figure.add_subplot(grid[position // columns, 2 + position % columns])
        axis.imshow(finite[window], origin="lower", cmap="gray", vmin=low, vmax=max(high, finite[window].max()),
                    interpolation="nearest")
        axis.contour(mask[window], levels=[0.5], colors="red", linewidths=0.6)
        axis.set_title(f"{int(sizes[index])} px at ({cx}, {cy})", fontsize=6)
        axis.set_xticks([])
        axis.set_yticks([])
    figure.tight_layout()
    png = Path(png) if png is not None else Path(output).with_suffix(".png")
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    with atomic_output(png, overwrite) as handle:
        handle.write(buffer.getvalue())
    return png


def write_viewer(output: str | os.PathLike, page: str | os.PathLike | None = None, extver: int | None = None,
                 image_path: str | os.PathLike | None = None, overwrite: bool = False) -> Path:
    """Write the HTML page for ``output`` (default: beside it, ``.html`` for ``.fits``); returns its path."""
    data = view_data(output, extver, image_path)
    page = Path(page) if page is not None else Path(output).with_suffix(".html")
    # the data go inside <script>: "</" must not end it early
    text = TEMPLATE.read_text().replace("__TITLE__", html.escape(data["source"])).replace(
        "__DATA__", json.dumps(data).replace("</", "<\\/"))
    with atomic_output(page, overwrite) as handle:
        handle.write(text.encode())
    return page
