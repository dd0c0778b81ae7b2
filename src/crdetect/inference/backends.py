"""Runtimes for the network stage (issue #26): PyTorch everywhere, or OpenVINO on CPUs.

The network is the one stage of :meth:`crdetect.CRDetector.predict` a runtime replaces: it maps a batch of
normalised tiles (N, H, W) to logits. OpenVINO (``pip install 'crdetect[openvino]'``) compiles the BatchNorm-folded
network for the CPU at hand once per detector (1-2 s) and runs it in float32: on a 2-core AMD EPYC with AVX2 only,
``predict`` on a simulated DECam CCD took 5.03 s against torch's 6.85 s for ``default`` (0.73x) and 3.10 s against
3.94 s for ``fast`` (0.79x), with logits equal to torch's (``benchmarks/bench_backends.py``,
``results/bench_backends.txt``; astroscrappy 11.4 s on the frame); the study's ten models convert too, with logits
within 4e-4 and identical masks (``tests/test_backends.py``). Not yet the 2x of issue #26.
"""

from __future__ import annotations

import importlib.util
import logging
import warnings

import numpy as np
import torch

from ..device import cpu_has_native_bfloat16
from ..errors import InputError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "openvino")


def openvino_available() -> bool:
    """Whether the OpenVINO runtime is installed."""
    return importlib.util.find_spec("openvino") is not None


def resolve_backend(backend: str, device: torch.device, precision: str) -> str:
    """``"auto"``: OpenVINO on a CPU without native bfloat16 when it is installed and the arithmetic is float32
    (where torch's float32 is what ``auto`` precision runs), else torch. Other names are checked and pass through.

    Raises
    ------
    InputError
        An unknown backend, OpenVINO asked for but not installed, or for another device or arithmetic.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "auto":
        usable = device.type == "cpu" and precision == "float32" and openvino_available()
        return "openvino" if usable and not cpu_has_native_bfloat16(unknown=True) else "torch"
    if backend == "openvino":
        if not openvino_available():
            raise InputError("--backend openvino needs the OpenVINO runtime: pip install 'crdetect[openvino]'")
        if device.type != "cpu" or precision != "float32":
            raise InputError(f"the OpenVINO backend runs float32 on the CPU; got device {device.type}, precision "
                             f"{precision} (use --device cpu --precision float32, or --backend torch)")
    return backend


class OpenVINONetwork:
    """A network compiled by OpenVINO for this CPU: ``network(batch)`` maps tiles (N, H, W) to logits (N, H, W), as
    torch tensors in CPU memory. Any tile size: the input shape is dynamic."""

    def __init__(self, network: torch.nn.Module, threads: int | None = None) -> None:
        import openvino as ov

        with torch.no_grad(), warnings.catch_warnings():
            # the conversion traces the network: torch warns that tracing is deprecated and that the network's own
            # padding branch is fixed (tiles always come padded to its multiple); neither concerns a user
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            model = ov.convert_model(network.eval(), example_input=torch.zeros(1, 1, 64, 64),
                                     input=[ov.PartialShape([-1, 1, -1, -1])])
        self.compiled = ov.Core().compile_model(model, "CPU", {
            "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads()), "INFERENCE_PRECISION_HINT": "f32"})
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        tiles = np.ascontiguousarray(batch.detach().cpu().numpy()[:, None], dtype=np.float32)
        logits = self.request.infer({0: tiles})[self.output]
        return torch.from_numpy(np.array(logits[:, 0], dtype=np.float32))
