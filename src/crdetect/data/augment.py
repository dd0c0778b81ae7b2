"""Training data on the model's device: whole splits as tensors and batch augmentation in torch.

A GPU trains the study's models at 1,000-2,800 patches/s; a per-sample numpy pipeline in DataLoader
workers delivers about 46 per worker process. Here a split is read once into tensors (on the device when it
fits, else in pinned host memory, moved a batch at a time), and every augmentation works on a whole batch
on that device: random crops, rot90 and flips, extra sky with its Poisson noise, bright smooth pedestals,
unlabelled straight lines, extra library hits labelled by the simulator's rule, and the model's input
normalisation (:meth:`crdetect.preprocessing.Preprocessing.normalise_batch`, the code inference uses).
The same code runs on CPU. Random draws come from a generator seeded by (seed, epoch, batch), so a run is
reproducible for a seed on a given device.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .._optional import require
from ..preprocessing import Preprocessing

logger = logging.getLogger(__name__)

#: Weight maps are stored as uint8: weight = value / WEIGHT_SCALE.
WEIGHT_SCALE = 255.0


def random_subset(indices: np.ndarray, limit: int | None, seed: int = 0) -> np.ndarray:
    """A reproducible, sorted random subset of ``limit`` indices (all of them when ``limit`` is None)."""
    indices = np.asarray(indices)
    if limit is None or limit >= len(indices):
        return indices
    return np.sort(np.random.default_rng(seed).choice(indices, limit, replace=False))


def batch_generator(device: torch.device, *stream: int) -> torch.Generator:
    """A generator on ``device`` seeded from a stream of integers (seed, epoch, batch, ...)."""
    seed = int(np.random.SeedSequence([int(s) for s in stream]).generate_state(1, np.uint64)[0] >> 1)
    return torch.Generator(device=device).manual_seed(seed)


# ---------------------------------------------------------------- the split as tensors

@dataclass
class PatchSplit:
    """One split (``train.h5``, ``val.h5``, ``test.h5``) as tensors.

    ``image`` (N, H, W) float32 in the frame's units, ``mask`` and ``ignore`` uint8, ``weight`` uint8
    (the median-weighted loss's map, value / 255) or None; per patch the frame's sky, noise and gain.
    """

    path: Path
    image: torch.Tensor
    mask: torch.Tensor
    ignore: torch.Tensor
    weight: torch.Tensor | None
    sky: torch.Tensor
    sigma: torch.Tensor
    gain: torch.Tensor

    def __len__(self) -> int:
        return self.image.shape[0]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.image, self.mask, self.ignore, self.weight)
                   if t is not None)

    @classmethod
    def load(cls, path: str | Path, device: torch.device | str = "cpu", limit: int | None = None, seed: int = 0,
             need_weight: bool = False, device_fraction: float = 0.6) -> PatchSplit:
        """Read a split (or a reproducible random ``limit`` of it) into tensors.

        On CUDA the split goes to the device when it takes less than ``device_fraction`` of the free device
        memory, else it stays in pinned host memory and :meth:`batch` moves one batch at a time (non-blocking).
        """
        h5py = require("h5py", "train", "reading and writing benchmark patches (HDF5)")
        path, device = Path(path), torch.device(device)
        if not path.is_file():
            raise FileNotFoundError(f"{path} does not exist; build the data with `crdetect simulate`")
        with h5py.File(path, "r") as f:
            if need_weight and "weight" not in f:
                raise ValueError(f"{path} holds no weight map, which the median-weighted loss needs; rebuild it "
                                 "with this version's `crdetect simulate` (or `crdetect label --training-set`)")
            count = f["image"].shape[0]
            indices = random_subset(np.arange(count), limit, seed)
            whole = len(indices) == count
            select = slice(None) if whole else indices

            def read(name: str) -> torch.Tensor:
                return torch.from_numpy(np.ascontiguousarray(f[name][select]))

            arrays = {name: read(name) for name in ("image", "mask", "ignore")}
            arrays["weight"] = read("weight") if need_weight else None
            meta = {k: torch.from_numpy(np.asarray(f[f"meta/{k}"][:], np.float32)[indices])
                    for k in ("frame_sky", "frame_sigma", "gain")}
        split = cls(path, arrays["image"].float(), arrays["mask"], arrays["ignore"], arrays["weight"],
                    meta["frame_sky"], meta["frame_sigma"], meta["gain"])
        resident = device.type != "cuda" or split.nbytes < device_fraction * torch.cuda.mem_get_info(device)[0]
        for name in ("image", "mask", "ignore", "weight", "sky", "sigma", "gain"):
            tensor = getattr(split, name)
            if tensor is not None:  # the small per-patch values always go to the device
                resident_here = resident or name in ("sky", "sigma", "gain")
                setattr(split, name, tensor.to(device) if resident_here else tensor.pin_memory())
        logger.info("%s: %d patches, %.2f GB, %s", path, len(split), split.nbytes / 1e9,
                    f"resident on {device}" if resident else "in pinned host memory, streamed per batch")
        return split

    def batch(self, indices: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """The patches at ``indices`` on ``device``: image (B, 1, H, W) float32, mask/ignore/weight float32
        (weight None when not loaded), sky/sigma/gain (B,)."""
        on_device = indices.to(self.image.device)

        def take(tensor: torch.Tensor | None) -> torch.Tensor | None:
            if tensor is None:
                return None
            return tensor.index_select(0, on_device).to(device, non_blocking=True).unsqueeze(1).float()

        out = {name: take(getattr(self, name)) for name in ("image", "mask", "ignore", "weight")}
        if out["weight"] is not None:
            out["weight"] = out["weight"] / WEIGHT_SCALE
        meta_index = indices.to(self.sky.device)
        out.update({name: getattr(self, name).index_select(0, meta_index).to(device) for name in ("sky", "sigma", "gain")})
        return out

    def batches(self, batch_size: int, shuffle: bool, epoch: int = 0, seed: int = 0,
                drop_last: bool = False) -> list[torch.Tensor]:
        """Index tensors of the batches of one epoch (shuffled reproducibly for (seed, epoch))."""
        n = len(self)
        order = (torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch)) if shuffle
                 else torch.arange(n))
        stop = n - n % batch_size if drop_last and n > batch_size else n
        return [order[i:i + batch_size] for i in range(0, stop, batch_size)]

    def stream_batches(self, batch_size: int, epoch: int, seed: int, per_epoch: int) -> list[torch.Tensor]:
        """Index tensors of an epoch of ``per_epoch`` patches: the ``epoch``-th stretch of a stream of shuffled
        passes over the split (pass ``p`` in the order :meth:`batches` gives epoch ``p``), so that validation can
        come every ``per_epoch`` patches whatever the split's size; a last partial batch is dropped."""
        n, start = len(self), epoch * per_epoch
        stop = start + per_epoch
        parts = []
        for p in range(start // n, (stop - 1) // n + 1):
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + p))
            parts.append(order[max(start - p * n, 0):min(stop - p * n, n)])
        indices = torch.cat(parts)
        usable = len(indices) - len(indices) % batch_size if len(indices) >= batch_size else len(indices)
        return [indices[i:i + batch_size] for i in range(0, usable, batch_size)]


# ---------------------------------------------------------------- batch augmentation

@dataclass(frozen=True)
class AugmentSettings:
    """What :class:`BatchAugmenter` does to training (and, for pedestals, lines and hits, validation) batches.

    Parameters
    ----------
    crop : int, optional
        Random crop size of training patches (faster on CPUs); validation patches are not cropped.
    sky_boost : float
        Up to this multiple of the frame's sky is added to a training patch with its Poisson noise
        (lower contrast of hits, as deepCR does).
    pedestal_prob, pedestal_peak
        Probability of a bright smooth blob under a patch (galaxy cores, nebulae on which hits must still be
        found) and the range of its peak in units of the frame noise (log-uniform).
    line_prob : float
        Probability of an unlabelled straight line across a patch (sky lines, bad columns, satellite trails).
    extra_hits : float
        Mean number of extra library hits per patch, labelled by the simulator's rule.
    hit_zoom : float
        Extra footprints are magnified by a factor uniform in [1, ``hit_zoom``].
    hit_charge : (float, float)
        Range of the log-uniform factor on the extra hits' charge.
    track_fraction : float
        Fraction of the extra hits drawn as straight tracks (grazing muons, 3-40 px, blurred 0.3-1 px).
    label_nsigma : float
        Added charge of at least this many times the pixel's noise is labelled a cosmic ray.
    """

    crop: int | None = None
    sky_boost: float = 1.0
    pedestal_prob: float = 0.0
    pedestal_peak: tuple[float, float] = (10.0, 3000.0)
    line_prob: float = 0.0
    line_peak: tuple[float, float] = (5.0, 1000.0)
    extra_hits: float = 0.0
    hit_zoom: float = 1.0
    hit_charge: tuple[float, float] = (0.5, 50.0)
    track_fraction: float = 0.3
    label_nsigma: float = 2.0


def _uniform(g: torch.Generator, n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (high - low) + low


def _log_uniform(g: torch.Generator, n: int, low: float, high: float, device) -> torch.Tensor:
    return torch.exp(_uniform(g, n, math.log(low), math.log(high), device))


def _poisson(rate: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return torch.poisson(rate.clamp_min(0), generator=g)


class FootprintBank:
    """The CR library's footprints as tensors, centred on square canvases grouped by size (few big ones
    do not make every small one cost a big canvas)."""

    SIZES = (8, 16, 32, 64, 128, 256)

    def __init__(self, footprints, device: torch.device, zoom: float = 1.0) -> None:
        self.device = device
        self.canvases: list[torch.Tensor] = []
        self.extents: list[torch.Tensor] = []
        members: dict[int, list[np.ndarray]] = {}
        for stamp in footprints:
            size = next(s for s in self.SIZES if s >= max(stamp.shape) + 2)
            members.setdefault(size, []).append(stamp)
        self.bucket_of = []
        for size, stamps in sorted(members.items()):
            canvas_size = int(math.ceil(size * zoom / 2) * 2)
            canvas = np.zeros((len(stamps), canvas_size, canvas_size), np.float32)
            for i, stamp in enumerate(stamps):
                h, w = stamp.shape
                y, x = (canvas_size - h) // 2, (canvas_size - w) // 2
                canvas[i, y:y + h, x:x + w] = stamp
            self.canvases.append(torch.from_numpy(canvas).to(device))
            self.extents.append(torch.tensor([max(s.shape) for s in stamps], dtype=torch.float32, device=device))
        sizes = torch.tensor([len(c) for c in self.canvases], dtype=torch.float32)
        self.bucket_probability = (sizes / sizes.sum()).to(device)  # a footprint is drawn uniformly


def _transform_stamps(stamps: torch.Tensor, g: torch.Generator, zoom_max: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate by a random multiple of 90 degrees, flip half of them, magnify by U(1, ``zoom_max``)
    (footprints magnified by < 5 % stay as they are, as the reference does). Returns stamps and zooms."""
    m, device = stamps.shape[0], stamps.device
    quarter = torch.randint(4, (m,), generator=g, device=device)
    flip = torch.rand(m, generator=g, device=device) < 0.5
    zoom = _uniform(g, m, 1.0, zoom_max, device) if zoom_max > 1 else torch.ones(m, device=device)
    zoom = torch.where(zoom > 1.05, zoom, torch.ones_like(zoom))
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0], device=device)[quarter]  # exact: no rounding of cos(pi/2)
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0], device=device)[quarter]
    sign = torch.where(flip, -1.0, 1.0)
    theta = torch.zeros(m, 2, 3, device=device)
    theta[:, 0, 0], theta[:, 0, 1] = cos * sign / zoom, -sin / zoom
    theta[:, 1, 0], theta[:, 1, 1] = sin * sign / zoom, cos / zoom
    grid = F.affine_grid(theta, list(stamps.shape[:1]) + [1] + list(stamps.shape[1:]), align_corners=False)
    out = F.grid_sample(stamps[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0].clamp_min(0), zoom


def _track_stamps(g: torch.Generator, m: int, device, size: int = 64, electrons_per_px: float = 1500.0):
    """``m`` straight tracks 3-40 px long at random angles, blurred by sigma 0.3-1 px, on ``size`` canvases;
    as :func:`crdetect.data.inject.cr_track` (charge proportional to the path length in each pixel)."""
    length = _uniform(g, m, 3.0, 40.0, device)
    angle = _uniform(g, m, 0.0, math.pi, device)
    blur = _uniform(g, m, 0.3, 1.0, device)
    steps = 8 * 40
    count = torch.ceil(length * 8).clamp_min(2)
    j = torch.arange(steps, device=device, dtype=torch.float32)
    t = (j[None] + 0.5) * (length / count)[:, None]
    used = j[None] < count[:, None]
    offset = _uniform(g, 2 * m, 0.0, 1.0, device).reshape(2, m)  # sub-pixel position of the track
    x = (t - length[:, None] / 2) * torch.cos(angle)[:, None] + size / 2 + offset[0][:, None]
    y = (t - length[:, None] / 2) * torch.sin(angle)[:, None] + size / 2 + offset[1][:, None]
    flat = y.long().clamp(0, size - 1) * size + x.long().clamp(0, size - 1)
    charge = torch.where(used, (electrons_per_px * length / count)[:, None], 0.0)
    stamps = torch.zeros(m, size * size, device=device).scatter_add_(1, flat, charge).reshape(m, size, size)
    radius = 4
    taps = torch.arange(-radius, radius + 1, device=device, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps[None] / blur[:, None]) ** 2)
    kernel = kernel / kernel.sum(1, keepdim=True)
    blurred = F.conv2d(stamps[None], kernel[:, None, :, None], padding=(radius, 0), groups=m)
    blurred = F.conv2d(blurred, kernel[:, None, None, :], padding=(0, radius), groups=m)
    return blurred[0], length


class BatchAugmenter:
    """Augment and normalise batches of a :class:`PatchSplit` on their device.

    Parameters
    ----------
    settings : AugmentSettings
        What to do.
    preprocessing : Preprocessing
        The model's input normalisation (applied last, as at inference).
    device : torch.device
        Where batches live.
    pool : str
        Footprint pool of the CR library for the extra hits (``"train"``).
    """

    def __init__(self, settings: AugmentSettings, preprocessing: Preprocessing, device: torch.device | str,
                 pool: str = "train") -> None:
        self.settings, self.preprocessing, self.device = settings, preprocessing, torch.device(device)
        self.bank = None
        if settings.extra_hits > 0:
            from .inject import load_cr_library

            self.bank = FootprintBank(load_cr_library().pool(pool).footprints, self.device, settings.hit_zoom)

    def __call__(self, batch: dict[str, torch.Tensor], g: torch.Generator, train: bool) -> dict[str, torch.Tensor]:
        """Augment ``batch`` (from :meth:`PatchSplit.batch`) and normalise it; returns ``x`` (the network's
        input), ``mask``, ``ignore`` and ``weight`` (None without a weight map). Training batches get every
        augmentation; validation batches only pedestals, lines and hits (deterministic for their generator),
        so that the best epoch is chosen on the data the network is trained for."""
        s = self.settings
        image, sky, sigma, gain = batch["image"], batch["sky"].clone(), batch["sigma"].clone(), batch["gain"]
        planes = [batch["mask"], batch["ignore"]] + ([batch["weight"]] if batch["weight"] is not None else [])
        n, device = image.shape[0], image.device
        view = (n, 1, 1, 1)
        if train and s.sky_boost > 0:
            extra = _uniform(g, n, 0.0, s.sky_boost, device) * sky.clamp_min(0)
            image = image + _poisson((extra * gain).reshape(view).expand_as(image), g) / gain.reshape(view)
            sky, sigma = sky + extra, torch.sqrt(sigma**2 + extra / gain)
        if train and s.crop and s.crop < image.shape[-1]:
            image, *planes = self._crop(g, s.crop, image, *planes)
        light = torch.zeros_like(image) if (s.pedestal_prob > 0 or s.line_prob > 0) else None
        if s.pedestal_prob > 0:
            light = light + self._pedestals(g, image.shape, sigma)
        if s.line_prob > 0:
            light = light + self._lines(g, image.shape, sigma)
        if light is not None:
            image = image + _poisson(light * gain.reshape(view), g) / gain.reshape(view)
            if len(planes) == 3:  # added sources count fully in the median-weighted loss, as stars do
                planes[2] = torch.maximum(planes[2], ((light / sigma.reshape(view) - 1) / 4).clamp(0, 1))
        if s.extra_hits > 0:
            image, planes[0] = self._hits(g, image, planes[0], planes[1], sky, sigma, gain)
        if train:
            image, *planes = self._rotate_and_flip(g, image, *planes)
        x = self.preprocessing.normalise_batch(image, sky, sigma)
        return {"x": x, "mask": planes[0], "ignore": planes[1], "weight": planes[2] if len(planes) == 3 else None}

    @staticmethod
    def _crop(g: torch.Generator, size: int, *tensors: torch.Tensor) -> list[torch.Tensor]:
        n, _, height, width = tensors[0].shape
        device = tensors[0].device
        y0 = torch.randint(0, height - size + 1, (n,), generator=g, device=device)
        x0 = torch.randint(0, width - size + 1, (n,), generator=g, device=device)
        span = torch.arange(size, device=device)
        rows = (y0[:, None] + span)[:, :, None]
        columns = (x0[:, None] + span)[:, None, :]
        batch = torch.arange(n, device=device)[:, None, None]
        return [t[:, 0][batch, rows, columns].unsqueeze(1) for t in tensors]

    @staticmethod
    def _rotate_and_flip(g: torch.Generator, *tensors: torch.Tensor) -> list[torch.Tensor]:
        n, device = tensors[0].shape[0], tensors[0].device
        stacked = torch.cat(tensors, dim=1)
        quarter = torch.randint(4, (n,), generator=g, device=device)
        flip = torch.randint(2, (n,), generator=g, device=device).bool()
        out = stacked.clone()
        for k in range(4):
            for flipped in (False, True):
                chosen = ((quarter == k) & (flip == flipped)).nonzero().flatten()
                if chosen.numel():
                    turned = torch.rot90(stacked.index_select(0, chosen), k, dims=(-2, -1))
                    out[chosen] = turned.flip(-1) if flipped else turned
        return list(out.split([t.shape[1] for t in tensors], dim=1))

    def _chosen(self, g: torch.Generator, n: int, probability: float, device) -> torch.Tensor:
        return (torch.rand(n, generator=g, device=device) < probability).float()

    def _pedestals(self, g: torch.Generator, shape, sigma: torch.Tensor) -> torch.Tensor:
        """Bright smooth elliptical blobs (Gaussian or exponential, scales 6-80 px, centre possibly off the
        patch), the light alone (ADU), zero where not chosen; as ``add_pedestal`` of the reference."""
        n, _, height, width = shape
        device = sigma.device
        chosen = self._chosen(g, n, self.settings.pedestal_prob, device)
        cy = _uniform(g, n, -0.25, 1.25, device) * height
        cx = _uniform(g, n, -0.25, 1.25, device) * width
        scale_y, scale_x = _log_uniform(g, n, 6.0, 80.0, device), _log_uniform(g, n, 6.0, 80.0, device)
        angle = _uniform(g, n, 0.0, math.pi, device)
        gaussian = torch.rand(n, generator=g, device=device) < 0.5
        peak = _log_uniform(g, n, *self.settings.pedestal_peak, device) * sigma
        column = lambda v: v.reshape(n, 1, 1)  # noqa: E731
        y = torch.arange(height, device=device, dtype=torch.float32)[None, :, None] - column(cy)
        x = torch.arange(width, device=device, dtype=torch.float32)[None, None, :] - column(cx)
        cos, sin = column(torch.cos(angle)), column(torch.sin(angle))
        u = (x * cos + y * sin) / column(scale_x)
        v = (-x * sin + y * cos) / column(scale_y)
        r2 = u * u + v * v
        profile = torch.where(column(gaussian), torch.exp(-0.5 * r2), torch.exp(-torch.sqrt(r2)))
        return (profile * column(peak * chosen)).unsqueeze(1)

    def _lines(self, g: torch.Generator, shape, sigma: torch.Tensor) -> torch.Tensor:
        """Straight lines across the patch (half along rows or columns, half at any angle; Gaussian
        cross-section of sigma 0.7-2.5 px), the light alone; as ``add_line`` of the reference."""
        n, _, height, width = shape
        device = sigma.device
        chosen = self._chosen(g, n, self.settings.line_prob, device)
        axis_aligned = torch.rand(n, generator=g, device=device) < 0.5
        angle = torch.where(axis_aligned, torch.randint(2, (n,), generator=g, device=device) * (math.pi / 2),
                            _uniform(g, n, 0.0, math.pi, device))
        offset = _uniform(g, n, -0.5, 0.5, device) * min(height, width)
        width_px = _uniform(g, n, 0.7, 2.5, device)
        peak = _log_uniform(g, n, *self.settings.line_peak, device) * sigma
        column = lambda v: v.reshape(n, 1, 1)  # noqa: E731
        y = torch.arange(height, device=device, dtype=torch.float32)[None, :, None]
        x = torch.arange(width, device=device, dtype=torch.float32)[None, None, :]
        distance = (x - width / 2) * column(torch.sin(angle)) - (y - height / 2) * column(torch.cos(angle)) - column(offset)
        profile = torch.exp(-0.5 * (distance / column(width_px)) ** 2)
        return (profile * column(peak * chosen)).unsqueeze(1)

    def _hits(self, g: torch.Generator, image: torch.Tensor, mask: torch.Tensor, ignore: torch.Tensor,
              sky: torch.Tensor, sigma: torch.Tensor, gain: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Poisson(``extra_hits``) library footprints and straight tracks per patch, at random positions
        (partly off the patch at its edges), charge scaled log-uniformly; labelled where the added charge
        reaches ``label_nsigma`` times the pixel's noise (sky noise and the sources' Poisson noise)."""
        s, bank = self.settings, self.bank
        n, _, height, width = image.shape
        device = image.device
        counts = torch.poisson(torch.full((n,), float(s.extra_hits), device=device), generator=g).long()
        owner = torch.repeat_interleave(torch.arange(n, device=device), counts)
        total = owner.numel()
        charge = torch.zeros(n * height * width, device=device)
        if total:
            is_track = torch.rand(total, generator=g, device=device) < s.track_fraction
            scale = _log_uniform(g, total, *s.hit_charge, device)
            groups = []
            tracks = is_track.nonzero().flatten()
            if tracks.numel():
                stamps, length = _track_stamps(g, tracks.numel(), device)
                groups.append((tracks, stamps, length))
            footprints = (~is_track).nonzero().flatten()
            if footprints.numel():
                bucket = torch.multinomial(bank.bucket_probability, footprints.numel(), replacement=True, generator=g)
                for b, canvas in enumerate(bank.canvases):
                    members = footprints[bucket == b]
                    if not members.numel():
                        continue
                    which = torch.randint(len(canvas), (members.numel(),), generator=g, device=device)
                    stamps, zoom = _transform_stamps(canvas.index_select(0, which), g, s.hit_zoom)
                    groups.append((members, stamps, bank.extents[b][which] * zoom))
            for members, stamps, extent in groups:
                self._paste(g, charge, stamps * scale[members].reshape(-1, 1, 1), owner[members], extent,
                            height, width)
        added = charge.reshape(n, 1, height, width) / gain.reshape(n, 1, 1, 1)
        noise = torch.sqrt(sigma.reshape(n, 1, 1, 1) ** 2
                           + (image - sky.reshape(n, 1, 1, 1)).clamp_min(0) / gain.reshape(n, 1, 1, 1))
        labelled = (added >= s.label_nsigma * noise) & (ignore < 0.5)
        return image + added, torch.maximum(mask, labelled.float())

    @staticmethod
    def _paste(g: torch.Generator, charge: torch.Tensor, stamps: torch.Tensor, owner: torch.Tensor,
               extent: torch.Tensor, height: int, width: int) -> None:
        """Add ``stamps`` (m, S, S) into the flat (N*H*W) ``charge`` with their centres uniform over the patch
        widened by half their ``extent`` (a hit may lie partly off the patch, as at a detector's edge)."""
        m, size = stamps.shape[0], stamps.shape[-1]
        device = stamps.device
        half = extent / 2
        cy = (torch.rand(m, generator=g, device=device) * (height + 2 * half - 1) - half).round().long()
        cx = (torch.rand(m, generator=g, device=device) * (width + 2 * half - 1) - half).round().long()
        span = torch.arange(size, device=device) - size // 2
        rows = cy[:, None, None] + span[None, :, None]
        columns = cx[:, None, None] + span[None, None, :]
        inside = (rows >= 0) & (rows < height) & (columns >= 0) & (columns < width) & (stamps > 0)
        flat = (owner[:, None, None] * height + rows) * width + columns
        charge.index_add_(0, flat[inside], stamps[inside])
