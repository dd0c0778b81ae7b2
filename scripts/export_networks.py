"""Write the shipped models' networks for runtimes without torch (issue #26): for every checkpoint in
``src/crdetect/weights/``, ``NAME.onnx`` (float32, BatchNorms folded, any batch and tile size), and for ``default``
and ``fast`` also ``NAME.int8.onnx``, quantised with calibration on training-like frames; then the table
``weights/pretrained.json`` with their SHA-256.

    python scripts/export_networks.py                # every model; int8 for default and fast
    python scripts/export_networks.py --only default --calibration-frames 6

Needs torch, onnx and onnxruntime (its quantisation tool): ``pip install 'crdetect[export]'``; crdetect itself
needs neither at run time (OpenVINO reads the files).

The int8 networks: static post-training quantisation (onnxruntime.quantization, QDQ format: int8 weights per
output channel, uint8 activations with min-max ranges from the calibration data), with the first convolution
(which sees the asinh-stretched pixels), the transposed convolutions (the upsampling) and the head (which makes
the logits) left in float32. Chosen by the TPR on the real frames (scripts/precision_effect.py) and by the
Gaussian stars of tests/test_faults.py: quantising every layer moved fast's TPR on M51 by up to 0.05 (min-max
ranges) or 0.09 (percentile ranges); with the first convolution and the head in float32 the TPRs stayed within
0.003 but for one (+0.006), and default flagged 28 px on bright Gaussian stars of FWHM 3.5 px that float32 leaves
alone; with the upsampling in float32 too, 1 px and TPRs within 0.0045, at about the same speed. Calibration tiles:
simulated DECam-like frames (crdetect.data.simulate, the training pool of the CR library: never the test pool),
normalised as each model expects, cut into 256 x 256 tiles. Every exported file is checked here: float32 logits
equal the checkpoint's in torch to 1e-3; int8 masks are reported against float32 (the accuracy on real frames is
measured by ``crdetect evaluate --real ... --backend openvino --precision int8``, results/int8.md).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np

logger = logging.getLogger("export_networks")

INT8_MODELS = ("default", "fast")
TILE = 256


def export_float32(checkpoint: Path, out: Path) -> None:
    """The checkpoint's network, BatchNorms folded, as ONNX with a dynamic batch and tile size."""
    import torch

    from crdetect.checkpoint import load_checkpoint
    from crdetect.inference.backends import inference_copy

    model, _ = load_checkpoint(checkpoint)
    model = inference_copy(model).float()
    example = torch.zeros(1, 1, TILE, TILE)
    dynamic = {0: "batch", 2: "height", 3: "width"}
    # the TransUNets' attention would take torch's fused inference kernel, which ONNX has no operator for
    torch.backends.mha.set_fastpath_enabled(False)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings on the (fixed) padding branch
        torch.onnx.export(model, example, str(out), input_names=["tiles"], output_names=["logits"],
                          dynamic_axes={"tiles": dynamic, "logits": dynamic}, opset_version=17, dynamo=False)


def runs_at_any_size(checkpoint: Path, network: Path) -> str | None:
    """None when the exported network gives the checkpoint's logits (to 1e-3) on tiles of another size than it was
    traced at, else why not (the TransUNets' token reshapes are traced with the tracing size's token count)."""
    from crdetect.checkpoint import load_checkpoint
    from crdetect.inference.backends import OpenVINONetwork, TorchNetwork

    model, _ = load_checkpoint(checkpoint)
    tiles = np.random.default_rng(0).normal(size=(2, 320, 352)).astype(np.float32)
    expected = TorchNetwork(model)(tiles)
    try:
        got = OpenVINONetwork(network, pad_multiple=getattr(model, "pad_multiple", 1))(tiles)
    except RuntimeError as err:
        return str(err).strip().splitlines()[-1]
    difference = float(np.abs(got - expected).max())
    return None if difference <= 1e-3 else f"logits differ by {difference:.2g}"


def calibration_tiles(preprocessing, frames: int, seed: int = 1234) -> list[np.ndarray]:
    """Normalised 256 x 256 tiles of ``frames`` simulated DECam-like frames (2048 x 1024 px, r and i band, the
    CR library's training pool), every other tile of each frame."""
    from crdetect.data.inject import load_cr_library
    from crdetect.data.simulate import DetectorModel, SimulationConfig, simulate_frame
    from crdetect.preprocessing import frame_statistics

    rng = np.random.default_rng(seed)
    config = SimulationConfig(detector=DetectorModel(shape=(2048, 1024)))
    library = load_cr_library().pool("train")
    tiles = []
    for index in range(frames):
        frame = simulate_frame(rng, config, "ri"[index % 2], library)
        image = frame.image
        normalised = preprocessing.normalise(image, frame_statistics(image))
        for y in range(0, image.shape[0] - TILE + 1, TILE):
            for x in range(0, image.shape[1] - TILE + 1, TILE):
                if (y // TILE + x // TILE) % 2 == index % 2:
                    tiles.append(normalised[y:y + TILE, x:x + TILE][None, None].astype(np.float32))
    return tiles


def quantise(float32: Path, out: Path, tiles: list[np.ndarray]) -> None:
    """Static int8 quantisation of an ONNX network with ``tiles`` as calibration data; its first convolution, its
    transposed convolutions and its head stay in float32."""
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Tiles(CalibrationDataReader):
        def __init__(self):
            self.items = iter(tiles)

        def get_next(self):
            tile = next(self.items, None)
            return None if tile is None else {"tiles": tile}

    here = Path.cwd()
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the quantisation tool writes scratch files into the working directory
        try:
            prepared = Path(tmp) / "prepared.onnx"
            quant_pre_process(str(float32), str(prepared), skip_symbolic_shape=True)
            nodes = onnx.load(str(prepared)).graph.node
            convolutions = [node.name for node in nodes if node.op_type in ("Conv", "ConvTranspose")]
            in_float32 = [convolutions[0], convolutions[-1]] + [n.name for n in nodes if n.op_type == "ConvTranspose"]
            quantize_static(str(prepared), str(out), Tiles(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=in_float32)
        finally:
            os.chdir(here)


def check(name: str, directory: Path) -> str:
    """Logits of the exported float32 network (OpenVINO) against the checkpoint's (torch) on a frame with hits,
    whole and in tiles; for int8, the mask pixels that differ from float32's."""
    import crdetect

    rng = np.random.default_rng(0)
    image = rng.normal(1000.0, 10.0, (300, 340)).astype(np.float32)
    image[rng.integers(0, 300, 80), rng.integers(0, 340, 80)] += rng.uniform(50, 3000, 80)
    reference = crdetect.load_detector(name, device="cpu", backend="torch", precision="float32", source_veto=False)
    exported = crdetect.load_detector(name, device="cpu", backend="openvino", precision="float32", source_veto=False)
    a, b = reference.predict(image), exported.predict(image)
    finite = np.isfinite(a.logits)
    difference = float(np.abs(a.logits[finite] - b.logits[finite]).max())
    if difference > 1e-3:
        raise SystemExit(f"{name}: the ONNX network's logits differ from the checkpoint's by {difference}")
    report = f"{name}: float32 logits within {difference:.1e} of torch's; mask pixels changed {int((a.mask != b.mask).sum())}"
    if (directory / f"{name}.int8.onnx").is_file():
        quantised = crdetect.load_detector(name, device="cpu", backend="openvino", precision="int8", source_veto=False)
        c = quantised.predict(image)
        report += (f"; int8 mask pixels changed {int((a.mask != c.mask).sum())} of {int(a.mask.sum())} flagged, "
                   f"largest probability difference {float(np.abs(a.probability - c.probability).max()):.3f}")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", help="models to export (default: every shipped checkpoint)")
    parser.add_argument("--calibration-frames", type=int, default=8, help="simulated frames for int8 (default 8)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from crdetect.preprocessing import Preprocessing
    from crdetect.pretrained import TABLE, describe_weights, weights_dir

    directory = weights_dir()
    names = args.only or [path.stem for path in sorted(directory.glob("*.pt"))]
    table = json.loads((directory / TABLE).read_text())
    for name in names:
        export_float32(directory / f"{name}.pt", directory / f"{name}.onnx")
        failure = runs_at_any_size(directory / f"{name}.pt", directory / f"{name}.onnx")
        if failure:
            (directory / f"{name}.onnx").unlink()
            logger.info("%s: no network file (it runs in torch only): the exported network fails at another tile "
                        "size (%s)", name, failure)
            continue
        logger.info("%s: wrote %s", name, f"{name}.onnx")
        if name in INT8_MODELS:
            tiles = calibration_tiles(Preprocessing.from_dict(table[name]["preprocessing"]), args.calibration_frames)
            quantise(directory / f"{name}.onnx", directory / f"{name}.int8.onnx", tiles)
            logger.info("%s: wrote %s (%d calibration tiles)", name, f"{name}.int8.onnx", len(tiles))
    (directory / TABLE).write_text(json.dumps(describe_weights(directory), indent=1) + "\n")
    from crdetect.pretrained import _table

    _table.cache_clear()
    for name in names:
        if (directory / f"{name}.onnx").is_file():
            logger.info(check(name, directory))
    return 0


if __name__ == "__main__":
    sys.exit(main())
