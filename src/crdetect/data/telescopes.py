"""Telescope classes of the LCO-like consecutive-exposure data set (Cosmic-CoNN's, Xu et al. 2023) and its presets.

Cosmic-CoNN trains on sets of three consecutive exposures from LCO's 0.4 m (SBIG STX-6303), 1 m (Sinistro) and
2 m (Spectral) telescopes and tests on those and on Gemini GMOS imaging at 1x1 and 2x2 binning. A
:class:`Telescope` holds what the simulator needs of each; the values and where they come from:

- **1 m / Sinistro**: 4096 x 4096 px of 15 um, 0.389"/px, read noise 7.5-8 e-, full well 100,000-120,000 e-,
  gain 1.0 e-/ADU after LCO's pipeline (LCO's Sinistro instrument page).
- **0.4 m / SBIG STX-6303**: 3072 x 2048 px of 9 um, 0.571"/px (the camera's format and LCO's 0.4 m plate scale
  as Cosmic-CoNN describes them); read noise 16.4 e- and a saturation of 153,440 e- from a public photometry
  pipeline's table of LCO cameras (``LCOGT0m4``); gain 1.0 (pipeline-processed frames, in electrons).
- **2 m / Spectral**: 4096 x 4096 px of 15 um read out binned 2 x 2 (2048 x 2048 px of 0.304"), read noise
  11.3 e- from the same pipeline table (``LCOGT2m``); gain 1.0.
- **Gemini GMOS**: Hamamatsu CCDs of 15 um, 0.0807"/px unbinned; gain 1.933 e-/ADU and read noise 4.24 e- of
  the GMOS-S frame in astroscrappy's tests (shared/data/real/MANIFEST.md); 16-bit ADC.

Approximations, stated: zero points are DECam's (:data:`crdetect.data.presets.BANDS`) scaled by collecting
area (no throughput differences); sky brightness is the same dark sky per band at every site; the cosmic-ray
footprints are the ITL library's (10 um pixels, 100 um thick) at the hit rate per unit area, summed over
binned pixels, not re-shaped for other pixel sizes or sensor thicknesses; seeing and exposure ranges are
typical of each class, not measured from LCO's archive.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: Collecting area of the Blanco 4 m with DECam (m^2): the DECam zero points of BANDS are for this area.
BLANCO_AREA_M2 = 10.0
#: Pixel side of the ITL sensors of the cosmic-ray library (um).
LIBRARY_PIXEL_UM = 10.0


@dataclass(frozen=True)
class Telescope:
    """What the simulator needs of one telescope class (see the module's docstring for the sources)."""

    name: str
    area_m2: float  # collecting area
    pixel_scale: float  # arcsec per (binned) pixel
    pixel_um: float  # unbinned pixel side
    binning: int
    frame_shape: tuple[int, int]  # rows, columns of the (binned) readout
    gain: float  # e- / ADU
    read_noise: float  # e-
    full_well: float  # e- per (binned) pixel
    adc_max: float  # ADU
    seeing_arcsec: tuple[float, float]
    exposure_s: tuple[float, float]
    bands: tuple[str, ...] = ("g", "r", "i")


TELESCOPES = {
    "lco_0m4": Telescope("lco_0m4", 0.10, 0.571, 9.0, 1, (2048, 3072), 1.0, 16.4, 153_440, 153_440,
                         (1.6, 3.0), (60.0, 300.0)),
    "lco_1m": Telescope("lco_1m", 0.625, 0.389, 15.0, 1, (4096, 4096), 1.0, 7.75, 110_000, 110_000,
                        (1.2, 2.5), (30.0, 300.0)),
    "lco_2m": Telescope("lco_2m", 2.8, 0.304, 15.0, 2, (2048, 2048), 1.0, 11.3, 300_000, 300_000,
                        (1.0, 2.0), (30.0, 200.0)),
    "gemini_1x1": Telescope("gemini_1x1", 50.0, 0.0807, 15.0, 1, (4176, 2048), 1.933, 4.24, 120_000, 65535,
                            (0.5, 1.0), (60.0, 300.0)),
    "gemini_2x2": Telescope("gemini_2x2", 50.0, 0.1614, 15.0, 2, (2088, 1024), 1.933, 4.24, 120_000, 65535,
                            (0.5, 1.0), (60.0, 300.0)),
}
LCO_CLASSES = ("lco_0m4", "lco_1m", "lco_2m")
GEMINI_CLASSES = ("gemini_1x1", "gemini_2x2")


@dataclass(frozen=True)
class ConsecutivePreset:
    """How many sets of three consecutive exposures per telescope class go into training (train + val) and test.

    ``window`` crops every frame to at most that many rows and columns of its detector (the CPU-sized presets;
    None keeps whole detectors), ``val_every`` sends every n-th training set of each class to validation (whole
    sets: exposures of one field never straddle train and val; see :func:`crdetect.data.lco.set_jobs`).
    """

    train_sets: dict[str, int]
    test_sets: dict[str, int]
    window: tuple[int, int] | None = None
    exposures: int = 3
    val_every: int = 10
    patch: int = 1024
    cr_rate_scale: float = 3.0  # hits per area and time times the library's (more labelled pixels per patch)
    note: str = ""
    seed_counts: dict[str, int] = field(default_factory=dict)

    def frame_shape(self, telescope: str) -> tuple[int, int]:
        shape = TELESCOPES[telescope].frame_shape
        if self.window is None:
            return shape
        return min(shape[0], self.window[0]), min(shape[1], self.window[1])

    def frames(self) -> dict[str, int]:
        """Frames of training (train + val) and of test, LCO and Gemini."""
        lco_test = sum(self.test_sets.get(t, 0) for t in LCO_CLASSES)
        return {"train": self.exposures * sum(self.train_sets.values()), "test_lco": self.exposures * lco_test,
                "test_gemini": self.exposures * sum(self.test_sets.get(t, 0) for t in GEMINI_CLASSES)}


#: Cosmic-CoNN's counts: 576, 670 and 141 training sets of the 0.4, 1 and 2 m (4,161 frames) and 119 test sets
#: (357 frames); the split of the test sets over the classes is ours (in proportion to the training sets), as
#: are the 20 Gemini sets per binning.
SEED_COUNTS = {"train_frames": 4161, "test_frames": 357, "train_sets": 1387, "test_sets": 119}
CONSECUTIVE_PRESETS = {
    "lco": ConsecutivePreset({"lco_0m4": 576, "lco_1m": 670, "lco_2m": 141},
                             {"lco_0m4": 49, "lco_1m": 58, "lco_2m": 12, "gemini_1x1": 20, "gemini_2x2": 20},
                             note="the seed's counts on whole detectors (a GPU-sized machine's job)",
                             seed_counts=SEED_COUNTS),
    "lco-small": ConsecutivePreset({"lco_0m4": 12, "lco_1m": 14, "lco_2m": 3},
                                   {"lco_0m4": 1, "lco_1m": 1, "lco_2m": 1, "gemini_1x1": 1, "gemini_2x2": 1},
                                   window=(2048, 2048), val_every=5,
                                   note="1/48 of the seed's training sets, 2048 x 2048 windows: what 2 CPU cores "
                                        "build in minutes", seed_counts=SEED_COUNTS),
    "lco-ci": ConsecutivePreset({"lco_0m4": 2, "lco_1m": 2, "lco_2m": 1},
                                {"lco_0m4": 1, "lco_1m": 1, "lco_2m": 1, "gemini_1x1": 1, "gemini_2x2": 1},
                                window=(1024, 1024), val_every=5, note="for tests", seed_counts=SEED_COUNTS),
}
