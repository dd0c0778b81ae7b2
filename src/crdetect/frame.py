"""A frame: the pixels and what their header says about them, derived in one place.

Gain, read noise, saturation level, data section, unit and bad-pixel mask used to be read from headers in
several modules; :class:`Frame` reads them once (from a FITS header, a :class:`~crdetect.io.reading.ScienceHDU`
or an astropy ``CCDData``) and :meth:`crdetect.CRDetector.predict` takes it whole: its mask is honoured,
its saturation level protects saturated stars, and only its data section is searched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

import numpy as np

from .errors import InputError

#: Header keywords of the saturation level, in order of preference.
SATURATION_KEYWORDS = ("SATURATE", "SATLEVEL", "SATURATN", "MAXLIN")
GAIN_KEYWORDS = ("GAIN", "EGAIN", "ATODGAIN", "CCDGAIN")
READ_NOISE_KEYWORDS = ("RDNOISE", "READNOIS", "RON", "READNOISE")


def header_number(header, keywords) -> float | None:
    """The first of ``keywords`` present in ``header`` with a positive number (GAIN, SATURATE, ...)."""
    for key in keywords:
        value = header.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
            return float(value)
    return None


#: Header keywords naming the part of a raw frame that holds pixels (the rest is overscan or prescan).
DATA_SECTION_KEYWORDS = ("DATASEC", "TRIMSEC")


def data_section(header, shape: tuple[int, int]) -> tuple[slice, slice] | None:
    """The frame's data section from DATASEC (else TRIMSEC), as numpy slices, or None.

    FITS sections are 1-based, inclusive and x first (``[17:528,1:520]``). A section that is missing,
    malformed, flipped or does not fit inside ``shape`` (a stale keyword kept after trimming) is ignored.
    """
    for key in DATA_SECTION_KEYWORDS:
        value = header.get(key)
        match = re.fullmatch(r"\s*\[\s*(\d+)\s*:\s*(\d+)\s*,\s*(\d+)\s*:\s*(\d+)\s*\]\s*", str(value or ""))
        if not match:
            continue
        x1, x2, y1, y2 = map(int, match.groups())
        if 1 <= x1 <= x2 <= shape[1] and 1 <= y1 <= y2 <= shape[0]:
            if (x1, x2, y1, y2) == (1, shape[1], 1, shape[0]):
                return None  # the whole frame
            return slice(y1 - 1, y2), slice(x1 - 1, x2)
    return None


def required_header_number(value: float | None, header, keywords, what: str, source: str) -> float:
    """``value`` if given, else the first of ``keywords`` in ``header``; a clear error naming the option if neither."""
    found = value if value is not None else header_number(header, keywords)
    if found is None:
        raise InputError(f"no {what} in the header of {source} (looked for {', '.join(keywords)}); "
                         f"pass --{what.replace(' ', '-')}")
    return float(found)


@dataclass
class Frame:
    """A 2-D image and what is known about it.

    Attributes
    ----------
    data : ndarray
        The pixels (2-D; any real dtype, converted when detected).
    gain : float or None
        Electrons per ADU.
    read_noise : float or None
        Read noise in electrons.
    saturation : float or None
        Saturation level in the image's units: saturated stars and bleed trails are never flagged.
    section : (slice, slice) or None
        The data section (DATASEC/TRIMSEC): pixels outside (overscan, prescan) are never searched.
    mask : ndarray of bool or None
        Bad pixels (never flagged, kept out of every estimate).
    unit : str or None
        BUNIT or the CCDData unit (for the record: the detection is unit-free).
    label : str
        Where the frame came from, for messages.
    """

    data: np.ndarray
    gain: float | None = None
    read_noise: float | None = None
    saturation: float | None = None
    section: tuple[slice, slice] | None = None
    mask: np.ndarray | None = None
    unit: str | None = None
    label: str = ""

    @classmethod
    def from_header(cls, data: np.ndarray, header, mask: np.ndarray | None = None, label: str = "",
                    full_frame: bool = False) -> Frame:
        """A frame whose gain, read noise, saturation, data section and unit come from ``header`` (a FITS
        header or anything with ``.get``, such as a ScienceHDU's inheriting keywords); ``full_frame`` ignores
        the data section."""
        section = None if full_frame else data_section(header, np.shape(data))
        unit = header.get("BUNIT")
        return cls(data, header_number(header, GAIN_KEYWORDS), header_number(header, READ_NOISE_KEYWORDS),
                   header_number(header, SATURATION_KEYWORDS), section, mask, str(unit) if unit else None, label)

    @classmethod
    def from_science(cls, science, full_frame: bool = False) -> Frame:
        """The frame of a :class:`~crdetect.io.reading.ScienceHDU` (keywords inherited from the primary
        header where the file allows it; its own DQ/BPM plane as the mask)."""
        return cls.from_header(science.data, science.keywords, science.mask, science.label, full_frame)

    @classmethod
    def from_ccddata(cls, ccd, full_frame: bool = False) -> Frame:
        """The frame of an astropy ``CCDData`` (its ``meta`` as the header, its mask, its unit)."""
        frame = cls.from_header(np.asarray(ccd.data), ccd.meta or {}, None if ccd.mask is None else
                                np.asarray(ccd.mask) != 0, full_frame=full_frame)
        return replace(frame, unit=str(ccd.unit) if ccd.unit is not None else frame.unit)

    def with_overrides(self, gain: float | None = None, read_noise: float | None = None,
                       saturation: float | None = None) -> Frame:
        """This frame with the values a user gave in place of the header's (None keeps the header's)."""
        return replace(self, gain=self.gain if gain is None else gain,
                       read_noise=self.read_noise if read_noise is None else read_noise,
                       saturation=self.saturation if saturation is None else saturation)

    @property
    def pixels(self) -> np.ndarray:
        """The data section's pixels (the whole image without a section)."""
        return self.data if self.section is None else self.data[self.section]

    @property
    def section_mask(self) -> np.ndarray | None:
        """The mask over the data section."""
        if self.mask is None:
            return None
        return self.mask if self.section is None else self.mask[self.section]


@dataclass
class LabelledFrame:
    """A :class:`Frame` with a CR label, for evaluation: what every scoring path (the benchmark's patches, the real
    frames, the simulated source frames) hands to the detectors.

    Attributes
    ----------
    frame : Frame
        The image with its gain, read noise and saturation level (what a detector may know).
    truth : ndarray of bool
        The CR label.
    ignore : ndarray of bool
        Pixels left out of the scores (unlabelled real hits, bad columns).
    description : str
        What the label is, and is not.
    statistics : FrameStatistics, optional
        The sky and noise that scale the frame; measured on the pixels when not given (:attr:`scaling`).
    clean : ndarray, optional
        The frame without its labelled hits, where it is known (hits injected into a real frame, simulated
        frames): the truth behind the hits for the inpainting benchmark.
    """

    frame: Frame
    truth: np.ndarray
    ignore: np.ndarray
    description: str = ""
    statistics: object | None = None  # crdetect.preprocessing.FrameStatistics
    clean: np.ndarray | None = None

    @classmethod
    def of(cls, name: str, image: np.ndarray, truth: np.ndarray, ignore: np.ndarray, gain: float | None,
           read_noise: float | None, saturation: float | None, description: str = "",
           statistics=None, clean: np.ndarray | None = None) -> LabelledFrame:
        """A labelled frame from its pixels and facts."""
        return cls(Frame(image, gain=gain, read_noise=read_noise, saturation=saturation, label=name), truth, ignore,
                   description, statistics, clean)

    @property
    def name(self) -> str:
        return self.frame.label

    @property
    def image(self) -> np.ndarray:
        return self.frame.data

    @property
    def scaling(self):
        """The sky and noise that scale the frame (:attr:`statistics`, else measured once on the pixels)."""
        if self.statistics is None:
            from .preprocessing import frame_statistics

            self.statistics = frame_statistics(self.frame.data)
        return self.statistics
