"""Where and in what arithmetic the network runs: the device, the precision (float32; bfloat16 / float16 under
torch's autocast; int8 in OpenVINO) chosen from the hardware, and the copy of results back to the host.

Nothing here imports torch unless a GPU or torch's arithmetic is asked for: detection on a CPU runs without it.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

#: Arithmetic the network may run in: ``float32`` (exact); ``bfloat16`` and ``float16``, torch's autocast;
#: ``int8``, a shipped network quantised with calibration (OpenVINO, :mod:`crdetect.inference.backends`).
PRECISIONS = ("float32", "bfloat16", "float16", "int8")


def torch_available() -> bool:
    """Whether torch is installed (without importing it: the import alone takes about 2 s)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):  # blocked (sys.modules["torch"] = None) or broken
        return False


def require_torch(purpose: str, extra: str = "torch"):
    """torch, imported, or :class:`crdetect._optional.MissingDependencyError` naming ``extra``, the extra that
    installs it for ``purpose`` (``"train"`` for simulation and training, which need more than torch)."""
    from ._optional import require

    return require("torch", extra, purpose)


def _nvidia_driver_present() -> bool:
    """Whether an NVIDIA driver is loaded: without one torch cannot see a GPU, and importing torch to ask costs
    about 2 s of a short detection."""
    return os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidiactl")


def detection_device(device: str = "auto") -> str:
    """The device a detector runs on, as a name: ``"auto"`` is CUDA when torch is installed and sees a GPU,
    else ``"cpu"``; ``"cuda"`` / ``"cuda:N"`` are checked to exist.

    Raises
    ------
    InputError
        An unknown device name, or CUDA asked for where there is none.
    """
    device = str(device)
    if device == "auto":
        if torch_available() and _nvidia_driver_present():
            import torch

            return "cuda" if torch.cuda.is_available() else "cpu"
        return "cpu"
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        if not (torch_available() and _nvidia_driver_present()):
            raise InputError("device 'cuda' was asked for but no CUDA GPU is available (or torch is not installed: "
                             "pip install 'crdetect[torch]'); use --device cpu")
        return str(resolve_device(device))
    raise InputError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """A torch device (for training and torch's runtime): ``"auto"`` picks CUDA when available; otherwise the
    named device, checked to exist."""
    torch = require_torch("training and torch's runtime")
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


def torch_dtype(precision: str):
    """torch's autocast type of a precision (None for float32)."""
    import torch

    return {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}[precision]


def check_precision(precision: str, device: str | torch.device) -> str:
    """Validate a precision name for ``device``; returns it.

    ``bfloat16`` and ``float16`` run the network under ``torch.autocast``. Measured on the shipped models
    (results/bench_detect.txt, results/precision.md): on a 2-core AMD EPYC with AVX512-BF16, bfloat16
    takes 0.50-0.71x the float32 time, moves TPR on the real frames by at most 0.002 and changes 0.1-0.2 %
    of the flagged pixels; float16 arithmetic changes several times fewer, but on a CPU it is several
    times slower than float32 (no native float16 convolutions): it is meant for CUDA GPUs. ``int8`` runs a
    shipped network quantised with calibration, in OpenVINO on a CPU (results/int8.md).
    """
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; use auto or one of {', '.join(PRECISIONS)}")
    on_cpu = str(device).startswith("cpu")
    if precision == "float16" and on_cpu:
        logger.warning("float16 on a CPU is much slower than float32 (no native float16 convolutions); "
                       "use bfloat16 for speed on CPUs")
    if precision == "bfloat16" and on_cpu and not cpu_has_native_bfloat16():
        logger.warning("this CPU has no native bfloat16 arithmetic (AVX512-BF16 or AMX): bfloat16 may be "
                       "slower than float32 here; measure with benchmarks/bench_detect.py --precision")
    if precision == "int8" and not on_cpu:
        raise InputError("int8 runs on the CPU (OpenVINO); on a GPU use float16 or float32")
    return precision


@functools.lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (``avx2``, ``avx512f``, ``avx512_bf16``, ``amx_bf16``...);
    empty where /proc/cpuinfo does not exist."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_native_bfloat16(unknown: bool = True) -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); ``unknown`` when that cannot be told."""
    flags = cpu_flags()
    if flags:
        return bool(flags & {"avx512_bf16", "amx_bf16"})
    if torch_available():
        import torch

        try:  # private helpers of torch.cpu (torch >= 2.1); no public equivalent
            return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
        except AttributeError:
            pass
    return unknown


def describe_cpu() -> str:
    """The CPU's model and the flags that decide the network's speed, for benchmark reports."""
    name = ""
    try:
        with open("/proc/cpuinfo") as f:
            name = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "")
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    flags = [flag for flag in wanted if flag in cpu_flags()]
    return f"{name or 'CPU'} ({os.cpu_count()} cores; flags: {' '.join(flags) or 'none of interest'})"


def resolve_precision(precision: str, device: str | torch.device, backend: str = "torch",
                      int8_available: bool = False) -> str:
    """``"auto"``: float16 on CUDA GPUs; int8 in OpenVINO where the model ships an int8 network, else float32;
    in torch on a CPU, bfloat16 where the CPU has native bfloat16 arithmetic, else float32. Other names pass
    through.

    Measured with the shipped ``default`` and ``fast`` (results/precision.md, results/gpu_session2/,
    results/int8.md): on a 2-core AMD EPYC with AVX512-BF16, bfloat16 takes 0.50-0.71x the float32 time and
    moves TPR on the real frames by at most 0.002; on an H200, float16 takes the network from 17.8 to 13.8 ms
    per DECam CCD; on a 2-core AMD EPYC with AVX2 only, int8 in OpenVINO takes 0.36x (default) and 0.32x (fast)
    torch's float32 time for the network."""
    if precision != "auto":
        return precision
    if str(device).startswith("cuda"):
        return "float16"
    if backend == "openvino":
        return "int8" if int8_available else "float32"
    return "bfloat16" if cpu_has_native_bfloat16(unknown=False) else "float32"


def to_host(arrays: list) -> list[np.ndarray | None]:
    """numpy arrays of ``arrays`` (numpy arrays pass through, None stays None). From a GPU they are copied into
    page-locked host memory, all at once, then waited for: copies into ordinary memory took 58-69 ms for the five
    maps of a DECam CCD on an H200 (4x the network). Page-locked blocks come from torch's caching host
    allocator, so frames of one size reuse them; each array keeps its block until it is freed."""
    device = next((t.device for t in arrays if t is not None and not isinstance(t, np.ndarray) and t.is_cuda), None)
    if device is None:
        return [t if t is None or isinstance(t, np.ndarray) else t.numpy() for t in arrays]
    import torch

    hosts = []
    for tensor in arrays:
        if tensor is None:
            hosts.append(None)
            continue
        host = torch.empty(tensor.shape, dtype=tensor.dtype, pin_memory=True)
        host.copy_(tensor, non_blocking=True)
        hosts.append(host)
    torch.cuda.current_stream(device).synchronize()
    return [None if host is None else host.numpy() for host in hosts]
