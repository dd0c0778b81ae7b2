"""The detector: a CR network with the preprocessing and threshold it was trained with, run on frames of any size.

:meth:`CRDetector.predict` is the chain of stages of :mod:`crdetect.inference.stages`; the network itself is
called at one place (:meth:`CRDetector._run`, through :func:`crdetect.inference.tiling.sliding_window`), where
another inference backend plugs in.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from ..device import check_precision, detection_device, resolve_precision, to_host
from ..errors import InputError
from ..preprocessing import FrameStatistics, Preprocessing
from ..validation import as_image, check_threshold
from ..veto import DEFAULTS, VetoParameters
from .backends import make_network, resolve_backend
from .result import DetectionResult
from .stages import frame_scaling, prepare_frame, probability_and_mask, protect_saturated, veto_plane
from .tiling import DEFAULT_BATCH_SIZE, DEFAULT_TILE, sliding_window_fitting_memory

if TYPE_CHECKING:
    from ..checkpoint import CheckpointInfo

logger = logging.getLogger(__name__)


def veto_parameters(source_veto: bool | VetoParameters | None) -> VetoParameters | None:
    """The veto's thresholds for ``source_veto``: True the defaults, a :class:`VetoParameters` itself, False (or
    None) no veto."""
    if isinstance(source_veto, VetoParameters):
        return source_veto
    return DEFAULTS if source_veto else None


class CRDetector:
    """A CR network plus the preprocessing and threshold it was trained with.

    Build one with :func:`crdetect.load_detector`. Methods take 2-D images in their own units. On a CPU every
    stage runs in numpy around the network's runtime (no torch needed with OpenVINO); on a GPU in torch.

    Parameters
    ----------
    model : torch.nn.Module or network runtime
        A module mapping (N, 1, H, W) normalised images to logits, or a runtime of
        :mod:`crdetect.inference.backends` (:class:`~crdetect.inference.backends.OpenVINONetwork`,
        :class:`~crdetect.inference.backends.TorchNetwork`), which fixes device, precision and backend.
    preprocessing : Preprocessing
        How the model expects its input to be scaled.
    threshold : float
        Default probability threshold of :meth:`detect`.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"``...
    name : str
        Human-readable model name, written into output headers.
    info : CheckpointInfo, optional
        Metadata of the checkpoint the model came from.
    precision : {"float32", "bfloat16", "float16", "int8", "auto"}
        Arithmetic of the network's convolutions (:func:`crdetect.device.check_precision`); float32 by default.
    source_veto : bool or VetoParameters
        Take flagged regions that look like stars out of the mask (:mod:`crdetect.veto`); on by default, with
        the default thresholds or the ones given.
    backend : {"torch", "openvino", "auto"}
        The runtime of a module's network stage (:mod:`crdetect.inference.backends`): torch by default.
    threads : int, optional
        OpenVINO's inference threads (torch's are set process-wide with ``torch.set_num_threads``).
    """

    def __init__(self, model, preprocessing: Preprocessing | None = None, threshold: float = 0.5,
                 device: str = "auto", name: str | None = None, info: CheckpointInfo | None = None,
                 precision: str = "float32", source_veto: bool | VetoParameters = True, backend: str = "torch",
                 threads: int | None = None) -> None:
        if callable(model) and hasattr(model, "backend") and hasattr(model, "pad_multiple"):
            self.runtime = model  # a runtime already built: it knows its device and arithmetic
            self.device = str(getattr(model, "device", "cpu"))
        else:
            self.device = detection_device(device)
            precision = check_precision(resolve_precision(precision, self.device, backend), self.device)
            backend = resolve_backend(backend, self.device, precision, network_file=False)
            try:
                self.runtime = make_network(model, self.device, precision, backend, threads)
            except Exception as err:  # an operator OpenVINO cannot convert: torch runs the network
                if backend != "openvino" or isinstance(err, InputError):
                    raise
                logger.warning("OpenVINO cannot compile %s (%s); running it in torch", name or "the network", err)
                self.runtime = make_network(model, self.device, precision, "torch")
        self.preprocessing = preprocessing or Preprocessing()
        self.threshold = float(threshold)
        self.veto = veto_parameters(source_veto)
        module = self.network
        self.name = name or getattr(module, "model_name", type(module).__name__ if module is not None else "network")
        self.info = info

    @property
    def backend(self) -> str:
        """The network's runtime: ``"openvino"`` or ``"torch"`` (the output header's ``CRBACKND``)."""
        return self.runtime.backend

    @property
    def precision(self) -> str:
        """The network's arithmetic: ``"float32"``, ``"int8"``, ``"bfloat16"`` or ``"float16"`` (``CRPRECIS``)."""
        return self.runtime.precision

    @property
    def network(self):
        """The eager torch module (None for a network file run by OpenVINO)."""
        return getattr(self.runtime, "network", None)

    @property
    def model(self):
        """The torch module that runs (compiled, when :meth:`compile` was called); None without torch's runtime."""
        return getattr(self.runtime, "model", None)

    @property
    def memory_format(self):
        """torch's memory format of the network's input (torch's runtime only)."""
        return self.runtime.memory_format

    @property
    def on_host(self) -> bool:
        """Whether the stages run in numpy on the host (a CPU), rather than in torch on a GPU."""
        return self.device.startswith("cpu")

    @property
    def source_veto(self) -> bool:
        """Whether the source veto is on."""
        return self.veto is not None

    @source_veto.setter
    def source_veto(self, value: bool | VetoParameters) -> None:
        self.veto = veto_parameters(value)

    def compile(self) -> CRDetector:
        """Run the network through ``torch.compile`` (returns ``self``; torch's runtime only).

        Measured on 2 CPU cores, DECam CCD 2048 x 4096 (results/bench_detect.txt): 0.94-1.03x the eager
        time per frame once BatchNorms are folded (:func:`~crdetect.models.layers.fold_batch_norms`; before folding
        it was 0.8x), after a one-off compilation of 2-16 s per process and tile shape; logits equal to 1e-5. Kept
        for GPUs and CPUs where it measurably helps (``benchmarks/bench_detect.py --compile``).
        """
        if self.backend != "torch":
            raise InputError("--compile is torch's (torch.compile); use --backend torch with it")
        self.runtime.compile()
        return self

    def __repr__(self) -> str:
        return (f"CRDetector(name={self.name!r}, threshold={self.threshold}, device={self.device!r}, "
                f"precision={self.precision!r}, backend={self.backend!r}, source_veto={self.source_veto})")

    @property
    def pad_multiple(self) -> int:
        return int(self.runtime.pad_multiple)

    @property
    def context_margin(self) -> int:
        return int(self.runtime.context_margin)

    def margin(self, overlap: int | None = None) -> int:
        """Context margin of a tile in pixels (``overlap``, or the model's), rounded up to the pooling multiple."""
        margin = self.context_margin if overlap is None else int(overlap)
        return int(np.ceil(margin / self.pad_multiple) * self.pad_multiple)


    def predict(self, image, *, threshold: float | None = None, tile: int | None = DEFAULT_TILE,
                overlap: int | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
                statistics: FrameStatistics | None = None, saturation: float | None = None,
                mask=None, return_logits: bool = True,
                source_veto: bool | VetoParameters | None = None) -> DetectionResult:
        """Probability map, mask and diagnostics for one frame.

        Parameters
        ----------
        image : array_like, MaskedArray, CCDData or Frame
            2-D frame in its own units (ADU or electrons; the preprocessing is unit-free). The mask of a
            masked array or ``CCDData`` is honoured like ``mask``. A :class:`crdetect.frame.Frame` brings
            its mask and saturation level (used unless given here) and its data section: only that is
            searched, and pixels outside it (overscan) are never flagged (probability 0, logit -inf).
        threshold : float, optional
            Probability threshold; the detector's default when omitted. 1 flags nothing.
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
            stars and bleed trails are never flagged (:func:`~crdetect.inference.stages.protect_saturated`).
            Omitted, it is read off the pixels when the frame has flat plateaus at its maximum.
        mask : array_like of bool, optional
            Input mask of the image's shape (True or non-zero = bad pixel: hot pixels, bad columns, a DQ
            plane). Masked pixels are never flagged, and are treated like non-finite ones: kept out of
            the sky, noise and background estimates and replaced by the sky before the network.
        return_logits : bool
            Keep the logits in the result (for ROC curves); without them the probability is computed in
            their place, saving 4 bytes per pixel (``crdetect detect`` does not need them).
        source_veto : bool or VetoParameters, optional
            Take flagged regions that look like stars (smooth, with wings) out of the mask
            (:mod:`crdetect.veto`); the detector's setting (on by default) when omitted. The veto is a plane
            of the result (``vetoed``): the network's probability and logits are kept as they are.
        """
        from ..frame import Frame

        if isinstance(image, Frame):
            return self._predict_frame(image, mask, threshold=threshold, tile=tile, overlap=overlap,
                                       batch_size=batch_size, statistics=statistics, saturation=saturation,
                                       return_logits=return_logits, source_veto=source_veto)
        threshold = self.threshold if threshold is None else check_threshold(threshold)
        veto = self.veto if source_veto is None else veto_parameters(source_veto)
        with self._stage_context():
            frame = prepare_frame(image, mask, self.device)
            stats, levelled = frame_scaling(frame.pixels, statistics)
            normalised = self._normalise(levelled, stats)
            logits = sliding_window_fitting_memory(self.runtime, normalised, tile, self.margin(overlap),
                                                   self.pad_multiple, batch_size)
            del normalised
            protected = protect_saturated(frame.pixels, saturation, stats)
            probability, flagged = probability_and_mask(logits, frame.ignored | protected, threshold, return_logits)
            probability, flagged, nonfinite, logits, protected, levelled = to_host(
                [probability, flagged, frame.nonfinite, logits if return_logits else None, protected,
                 None if levelled is frame.pixels else levelled])
        vetoed = None
        if veto is not None:
            unusable = nonfinite if frame.input_mask is None else nonfinite | frame.input_mask
            vetoed = veto_plane(frame.image if levelled is None else levelled, flagged, unusable, stats, veto)
        mask = flagged if vetoed is None or not vetoed.any() else flagged & ~vetoed
        return DetectionResult(probability, mask, nonfinite, logits, protected, threshold, stats, frame.input_mask,
                               vetoed, veto)

    def _predict_frame(self, frame, mask, **options) -> DetectionResult:
        """:meth:`predict` on a :class:`~crdetect.frame.Frame`: its mask (with ``mask``) and saturation level, and
        only its data section searched (raw frames carry overscan: its edge against the data is a sharp straight
        step, and nothing there can be a cosmic ray), embedded in a result of the full frame's shape in which
        pixels outside the section are never flagged (probability 0, logit -inf)."""
        if frame.mask is not None:
            mask = frame.mask if mask is None else (np.asarray(mask) != 0) | frame.mask
        if options["saturation"] is None:
            options["saturation"] = frame.saturation
        if frame.section is None:
            return self.predict(frame.data, mask=mask, **options)
        section = frame.section
        image = as_image(frame.data)
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

    def predict_proba(self, image, *, tile: int | None = DEFAULT_TILE, overlap: int | None = None,
                      batch_size: int = DEFAULT_BATCH_SIZE, statistics: FrameStatistics | None = None,
                      mask=None) -> np.ndarray:
        """The network's CR probability (float32, shape of ``image``); see :meth:`predict` for the parameters."""
        return self.predict(image, tile=tile, overlap=overlap, batch_size=batch_size, statistics=statistics,
                            mask=mask).probability

    def detect(self, image, *, threshold: float | None = None, mask=None, **kwargs) -> np.ndarray:
        """Boolean CR mask (shape of ``image``); see :meth:`predict` for the parameters."""
        return self.predict(image, threshold=threshold, mask=mask, **kwargs).mask

    def _stage_context(self):
        """torch's inference mode around the stages on a GPU; nothing on the host (numpy)."""
        if self.on_host:
            return contextlib.nullcontext()
        import torch

        return torch.inference_mode()

    def _normalise(self, levelled, stats: FrameStatistics):
        """The frame scaled as the network expects (numpy on the host, torch on a GPU)."""
        if isinstance(levelled, np.ndarray):
            return self.preprocessing.normalise(levelled, stats)
        return self.preprocessing.normalise_batch(levelled[None, None], stats.sky, stats.sigma)[0, 0]

    def _run(self, batch):
        """Logits (N, H, W) of normalised tiles (N, H, W): the network stage, the one place a runtime runs."""
        return self.runtime(batch)
