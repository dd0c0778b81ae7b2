"""Where and in what arithmetic the network runs: the device, the precision (float32, or bfloat16 / float16
under autocast) chosen from the hardware, and the copy of results back to the host."""

from __future__ import annotations

import logging

import numpy as np
import torch

from .errors import InputError

logger = logging.getLogger(__name__)

#: Arithmetic the network may run in: ``float32`` (exact), or autocast to a 16-bit float type.
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


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
