"""Runtimes for the network stage (issue #26): OpenVINO on CPUs, with no torch needed, or PyTorch (GPUs, your own
checkpoints and modules, training).

The network is the one stage of :meth:`crdetect.CRDetector.predict` a runtime replaces: it maps a batch of
normalised tiles (N, H, W) to logits of the same shape. Both runtimes here take numpy arrays on the host; torch's
also takes tensors on a GPU.

- :class:`OpenVINONetwork` runs a network file that ships with crdetect (ONNX, BatchNorms folded; float32, and for
  ``default`` and ``fast`` also int8, quantised with calibration on training frames by
  ``scripts/export_networks.py``), or a torch module converted on the spot (1-2 s). On a 2-core AMD EPYC with
  AVX2 only, a batch of two 872 x 728 tiles took 0.71 s in torch float32, 0.40 s in OpenVINO float32 and 0.25 s
  in OpenVINO int8 for ``default``; 0.28, 0.12 and 0.09 s for ``fast`` (results/bench_detect.txt has the whole
  frames). Compiling a shipped file takes 0.05-0.15 s.
- :class:`TorchNetwork` runs a module (folded BatchNorms, channels-last on CPUs, autocast for bfloat16 and
  float16), on the CPU or a GPU.
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import warnings
from pathlib import Path

import numpy as np

from ..errors import InputError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")


def openvino_available() -> bool:
    """Whether the OpenVINO runtime is installed."""
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(backend: str, device: str, precision: str, network_file: bool = True) -> str:
    """The runtime for a detector: ``"auto"`` is OpenVINO on a CPU when a network file for it ships
    (``network_file``: the shipped models) and the arithmetic is float32, int8 or auto, else torch (a GPU,
    bfloat16 or float16, a checkpoint or module of your own: converting one to OpenVINO costs 1-2 s, which
    ``backend="openvino"`` pays). Other names are checked and pass through.

    Raises
    ------
    InputError
        An unknown backend, OpenVINO asked for but not installed, or for another device or arithmetic.
    MissingDependencyError
        torch needed but not installed.
    """
    from ..device import require_torch, torch_available

    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    on_cpu = str(device).startswith("cpu")
    if backend == "auto":
        usable = on_cpu and precision in ("auto", "float32", "int8") and openvino_available()
        if usable and (network_file or not torch_available()):
            return "openvino"
        backend = "torch"
    if backend == "openvino":
        if not openvino_available():
            raise InputError("--backend openvino needs the OpenVINO runtime: pip install openvino")
        if not on_cpu or precision not in ("auto", "float32", "int8"):
            raise InputError(f"the OpenVINO backend runs float32 or int8 on the CPU; got device {device}, precision "
                             f"{precision} (use --device cpu --precision float32, or --backend torch)")
        return backend
    if precision == "int8":
        raise InputError("int8 runs in OpenVINO (--backend openvino or auto) on a shipped model")
    require_torch("this device or arithmetic (torch's runtime)")
    return backend


def inference_copy(module):
    """A copy of a torch ``module`` for inference (the caller's is untouched): unwrapped from DDP or
    ``torch.compile``, in eval mode, its BatchNorms folded into their convolutions (faster, logits equal to 4e-5)."""
    from ..checkpoint import unwrap_model
    from ..models.layers import fold_batch_norms

    return fold_batch_norms(copy.deepcopy(unwrap_model(module)).eval())


def _threads(threads: int | None) -> int:
    """Threads for a runtime: ``threads``, else the CPUs this process may use."""
    if threads:
        return int(threads)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class OpenVINONetwork:
    """A network compiled by OpenVINO for this CPU: ``network(tiles)`` maps tiles (N, H, W) to logits (N, H, W),
    numpy float32 both. Any tile size: the input shape is dynamic.

    Parameters
    ----------
    source : path or torch.nn.Module
        An ONNX file (a shipped network) or a module to convert (float32).
    precision : {"float32", "int8"}
        What the file holds: recorded in outputs. The non-quantised operations always run in float32 (OpenVINO
        would pick bfloat16 on CPUs that have it).
    threads : int, optional
        Inference threads; the CPUs this process may use by default.
    pad_multiple, context_margin : int
        The network's pooling multiple and receptive-field margin (a module carries its own).
    """

    backend = "openvino"

    def __init__(self, source, precision: str = "float32", threads: int | None = None, pad_multiple: int = 1,
                 context_margin: int = 32) -> None:
        import openvino as ov

        core = ov.Core()
        if isinstance(source, (str, os.PathLike)):
            model = core.read_model(str(Path(source)))
        else:
            import torch

            pad_multiple = int(getattr(source, "pad_multiple", pad_multiple))
            context_margin = int(getattr(source, "context_margin", context_margin))
            with torch.no_grad(), warnings.catch_warnings():
                # the conversion traces the network: torch warns that tracing is deprecated and that the network's
                # own padding branch is fixed (tiles always come padded to its multiple); neither concerns a user
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.simplefilter("ignore", DeprecationWarning)
                model = ov.convert_model(source.eval(), example_input=torch.zeros(1, 1, 64, 64),
                                         input=[ov.PartialShape([-1, 1, -1, -1])])
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": _threads(threads),
                                                          "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        self.precision = precision
        self.pad_multiple, self.context_margin = int(pad_multiple), int(context_margin)

    def __call__(self, tiles: np.ndarray) -> np.ndarray:
        tiles = np.ascontiguousarray(tiles[:, None], dtype=np.float32)
        # the tiles are read in place and the logits copied once, here (the request reuses its output memory)
        logits = self.request.infer({0: tiles}, share_inputs=True, share_outputs=True)[self.output]
        return np.array(logits[:, 0], dtype=np.float32)


class TorchNetwork:
    """A torch module as the network stage: BatchNorms folded into their convolutions (a copy; the caller's module is
    untouched), channels-last where faster, autocast for bfloat16 and float16. ``network(tiles)`` takes tiles
    (N, H, W) as a numpy array on the host or a tensor on the module's device and gives logits the same way.

    Parameters
    ----------
    module : torch.nn.Module
        Maps (N, 1, H, W) normalised images to logits.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"``.
    precision : {"float32", "bfloat16", "float16"}
        Arithmetic of the convolutions.
    """

    backend = "torch"

    def __init__(self, module, device: str = "cpu", precision: str = "float32") -> None:
        import torch

        from ..models import uses_group_norm

        self.device = torch.device(device)
        self.precision = precision
        self.network = inference_copy(module).to(self.device)
        # channels-last convolutions are markedly faster on CPUs (oneDNN; measured ~1.6x for the 3-16 U-Net on
        # 1024 px tiles, benchmarks/bench_detect.py) and on CUDA without GroupNorm (the default network on a
        # DECam CCD in float16 on an H200: 9 ms against 14 ms; issue #14), as in training
        channels_last = self.device.type == "cpu" or not uses_group_norm(self.network)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.network = self.network.to(memory_format=self.memory_format)
        self.model = self.network  # what runs: the eager module, or its compiled form (:meth:`compile`)
        self.pad_multiple = int(getattr(self.network, "pad_multiple", 1))
        self.context_margin = int(getattr(self.network, "context_margin", 32))

    def compile(self) -> None:
        """Run the network through ``torch.compile`` (:meth:`crdetect.CRDetector.compile`)."""
        import torch

        self.model = torch.compile(self.network, dynamic=False)

    def __call__(self, tiles):
        import torch

        from ..device import torch_dtype

        on_host = isinstance(tiles, np.ndarray)
        with torch.inference_mode():
            x = (torch.from_numpy(np.ascontiguousarray(tiles, np.float32)) if on_host else tiles)[:, None]
            x = x.contiguous(memory_format=self.memory_format)
            dtype = torch_dtype(self.precision)
            # autocast keeps normalisations and reductions in float32; only convolutions and matmuls drop
            with torch.autocast(self.device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
                logits = self.model(x).float()[:, 0]
        return logits.numpy() if on_host else logits


def make_network(module, device: str, precision: str, backend: str, threads: int | None = None):
    """The runtime for a torch ``module`` (a checkpoint of your own, a registry network): OpenVINO (float32,
    converted now) or torch."""
    if backend == "openvino":
        if precision == "int8":
            raise InputError("int8 needs a network quantised with calibration: only the shipped models have one; "
                             "use --precision float32 for this checkpoint")
        return OpenVINONetwork(inference_copy(module), "float32", threads)
    return TorchNetwork(module, device, precision)
