"""Established CR detectors behind one interface, so they are scored by the same code as our models.

* LA-Cosmic (van Dokkum 2001) through astroscrappy (McCully et al.), always available.
* deepCR (Zhang & Bloom 2020) and Cosmic-CoNN (Xu et al. 2023) from their PyPI packages, which ship
  their pretrained weights; optional (``pip install crdetect[peers]``), skipped with a message when
  not installed.

Every detector maps a :class:`~crdetect.frame.Frame` (the pixels with their gain, read noise and saturation
level) and the sky and noise that scale it to a per-pixel *score*, larger meaning more CR-like, and has a
default threshold on that score.
"""

from __future__ import annotations

import importlib.util
import logging

import numpy as np

from ._optional import require
from .frame import Frame
from .preprocessing import FrameStatistics

logger = logging.getLogger(__name__)

#: LA-Cosmic score: the largest ``sigclip`` at which astroscrappy still flags a pixel.
LACOSMIC_SIGCLIPS = (2.0, 3.0, 4.0, 4.5, 5.0, 6.0, 8.0, 12.0, 20.0, 50.0)


#: What the peers assume where a frame does not say (LA-Cosmic's gain 1 and a typical read noise; a 16-bit ADC).
DEFAULT_GAIN, DEFAULT_READ_NOISE, DEFAULT_SATURATION = 1.0, 5.0, 65535.0


def finite_image(frame: Frame, statistics: FrameStatistics) -> np.ndarray:
    """float32 copy of the frame's pixels with NaN/inf replaced by the sky level (the peers cannot take them)."""
    return np.where(np.isfinite(frame.data), frame.data, statistics.sky).astype(np.float32)


def _or(value: float | None, default: float) -> float:
    return default if value is None else float(value)


class Detector:
    """Interface: ``name``, ``threshold`` (on the score) and ``score(frame, statistics)``."""

    name: str = "detector"
    threshold: float = 0.5

    def score(self, frame: Frame, statistics: FrameStatistics) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError


class NetworkDetector(Detector):
    """A crdetect model; the score is its logit (probabilities tie at 1.0 in float32)."""

    def __init__(self, detector, name: str | None = None, tile: int | None = 1024) -> None:
        self.detector = detector
        self.name = name or detector.name
        p = min(max(detector.threshold, 1e-7), 1 - 1e-7)
        self.threshold = float(np.log(p / (1 - p)))
        self.tile = tile

    def score(self, frame, statistics):
        # the logits with the veto's plane applied when it is on (vetoed pixels rank last)
        return self.detector.predict(frame.data, tile=self.tile, statistics=statistics,
                                     saturation=frame.saturation).scores()


class LACosmicDetector(Detector):
    """LA-Cosmic via astroscrappy, scored by a sweep over ``sigclip``.

    astroscrappy returns a mask, not its Laplacian statistic; a ROC curve needs a graded score, so each
    pixel's score is the largest ``sigclip`` (of :data:`LACOSMIC_SIGCLIPS`) at which it is still
    flagged (0 if never). The default threshold is astroscrappy's default ``sigclip`` of 4.5; the other
    parameters (``sigfrac=0.3``, ``objlim=5``, 4 iterations) are astroscrappy's defaults, and gain,
    read noise and saturation level are the image's true values.
    """

    name = "lacosmic"
    threshold = 4.5

    def __init__(self, sigclips=LACOSMIC_SIGCLIPS, objlim: float = 5.0, sigfrac: float = 0.3, niter: int = 4) -> None:
        self.sigclips, self.objlim, self.sigfrac, self.niter = tuple(sorted(sigclips)), objlim, sigfrac, niter

    def _mask(self, image: np.ndarray, frame: Frame, sigclip: float) -> np.ndarray:
        astroscrappy = require("astroscrappy", "peers", "the LA-Cosmic baseline")
        mask, _ = astroscrappy.detect_cosmics(np.ascontiguousarray(image, np.float32), sigclip=sigclip,
                                              sigfrac=self.sigfrac, objlim=self.objlim,
                                              gain=_or(frame.gain, DEFAULT_GAIN),
                                              readnoise=_or(frame.read_noise, DEFAULT_READ_NOISE),
                                              satlevel=_or(frame.saturation, DEFAULT_SATURATION), niter=self.niter)
        return mask

    def detect(self, frame: Frame, sigclip: float = 4.5) -> np.ndarray:
        """One astroscrappy run at ``sigclip`` (what a user of LA-Cosmic gets)."""
        return self._mask(frame.data, frame, sigclip)

    def score(self, frame, statistics):
        image = finite_image(frame, statistics)
        score = np.zeros(image.shape, np.float32)
        for sigclip in self.sigclips:
            mask = self._mask(image, frame, sigclip)
            if not mask.any():
                break  # masks shrink as sigclip grows
            score[mask] = sigclip
        return score


def peer_available(module: str) -> bool:
    """Whether an optional peer package is importable."""
    return importlib.util.find_spec(module) is not None


class DeepCRDetector(Detector):
    """deepCR's pretrained ``decam`` model (``pip install deepCR``); the score is its probability.

    deepCR's model zoo says the DECam model expects calibrated images in ADU, which is what it gets.
    """

    name = "deepcr"
    threshold = 0.5

    def __init__(self, model: str = "decam", device: str = "CPU") -> None:
        if not peer_available("deepCR"):
            raise ImportError("deepCR is not installed: pip install deepCR")
        from deepCR import deepCR

        self.model = deepCR(mask=model, device=device)

    def score(self, frame, statistics):
        image = finite_image(frame, statistics)
        probability = self.model.clean(image, threshold=0.5, inpaint=False, binary=False)
        return np.asarray(probability, np.float32)


class CosmicCoNNDetector(Detector):
    """Cosmic-CoNN's pretrained ``ground_imaging`` model (``pip install cosmic-conn``).

    The model was trained on LCO frames in electrons and only subtracts the median itself, so the
    image is converted to electrons with the frame's gain first.
    """

    name = "cosmic_conn_peer"
    threshold = 0.5

    def __init__(self, model: str = "ground_imaging") -> None:
        if not peer_available("cosmic_conn"):
            raise ImportError("cosmic-conn is not installed: pip install cosmic-conn")
        import cosmic_conn

        self.model = cosmic_conn.init_model(model)

    def score(self, frame, statistics):
        image = finite_image(frame, statistics) * _or(frame.gain, DEFAULT_GAIN)
        return np.asarray(self.model.detect_cr(image), np.float32)


PEERS = {"lacosmic": LACosmicDetector, "deepcr": DeepCRDetector, "cosmic_conn": CosmicCoNNDetector}


def make_baselines(names: list[str]) -> list[Detector]:
    """Build the named baselines; peers that are not installed are skipped with a warning."""
    detectors = []
    for name in names:
        if name not in PEERS:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(PEERS)}")
        try:
            detectors.append(PEERS[name]())
        except ImportError as err:
            logger.warning("baseline %s skipped: %s", name, err)
    return detectors
