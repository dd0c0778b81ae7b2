"""What the evaluation's figures show of each detector."""

from __future__ import annotations

import numpy as np

from crdetect.baselines import Detector, LACosmicDetector, NetworkDetector
from crdetect.evaluation.evaluate import score_as_probability


class _Peer(Detector):
    """A peer whose score is already a probability (deepCR, Cosmic-CoNN)."""

    name = "peer"


def test_prediction_maps_show_every_detector_on_the_0_1_scale():
    probability = np.array([[0.0, 0.2, 1.0]], np.float32)
    # a peer's sky stays at 0 (it was put through the sigmoid once: 0.5 everywhere, a pink panel)
    assert np.array_equal(score_as_probability(_Peer(), probability), probability)
    network = NetworkDetector.__new__(NetworkDetector)  # our networks score in logits
    assert np.allclose(score_as_probability(network, np.array([-50.0, 0.0, 50.0])), [0.0, 0.5, 1.0], atol=1e-6)
    lacosmic = LACosmicDetector.__new__(LACosmicDetector)  # its mask at the default sigclip (4.5)
    assert score_as_probability(lacosmic, np.array([0.0, 5.0])).tolist() == [0.0, 1.0]
