"""The presets of the DECam-like benchmark (``crdetect simulate --preset``): how many frames per band go into
train/val and test, their size, and the patches they are cut into."""

from __future__ import annotations

from dataclasses import dataclass, replace

from .patches import PATCH, check_patch

#: Dark-sky brightness (AB mag / arcsec^2) and the AB magnitude giving 1 e-/s, per DECam band.
BANDS = {"g": (22.0, 26.5), "r": (21.1, 26.7), "i": (20.1, 26.6), "z": (18.7, 26.3)}


@dataclass(frozen=True)
class Preset:
    """How many frames per band go into train/val and test, and the frame size."""

    trainval_frames_per_band: int
    test_frames_per_band: int
    frame_shape: tuple[int, int] = (4096, 2048)
    val_fraction: float = 0.1
    patch: int = PATCH  # side of the square patches the frames are cut into

    @property
    def patches_per_frame(self) -> int:
        return (self.frame_shape[0] // self.patch) * (self.frame_shape[1] // self.patch)

    def counts(self) -> dict[str, int]:
        trainval = self.trainval_frames_per_band * len(BANDS) * self.patches_per_frame
        n_val = int(round(trainval * self.val_fraction))
        return {"train": trainval - n_val, "val": n_val,
                "test": self.test_frames_per_band * len(BANDS) * self.patches_per_frame}


PRESETS = {
    "paper": Preset(50, 14),
    "small": Preset(6, 1),
    "ci": Preset(1, 1, frame_shape=(512, 512)),
}


def preset_with_patch(preset: str, patch: int | None = None) -> Preset:
    """The preset ``preset``, its frames cut into ``patch`` x ``patch`` patches when given (up to 1024, as
    Cosmic-CoNN trains; at most the frame's side).

    Raises
    ------
    InputError
        A patch size that is not a multiple of 16 from 64 to 1024, or larger than the preset's frames.
    """
    from ..errors import InputError

    p = PRESETS[preset]
    if patch is None:
        return p
    patch = check_patch(patch)
    if patch > min(p.frame_shape):
        raise InputError(f"patch size {patch} is larger than the {preset} preset's frames "
                         f"({p.frame_shape[0]} x {p.frame_shape[1]} px)")
    return replace(p, patch=patch)


def plan(preset: str, patch: int | None = None) -> str:
    """Human-readable plan of a preset (what ``--dry-run`` prints)."""
    p = preset_with_patch(preset, patch)
    c = p.counts()
    return (f"preset {preset}: frames {p.frame_shape[0]}x{p.frame_shape[1]} px, {p.patches_per_frame} patches of "
            f"{p.patch}x{p.patch} per frame, bands {','.join(BANDS)}; {p.trainval_frames_per_band} train/val and "
            f"{p.test_frames_per_band} test frames per band -> {c['train']} train, {c['val']} validation, "
            f"{c['test']} test patches")
