"""What a user adopting crdetect gets (issue #29): licence, citation, changelog, the PNG quick-look, and a wheel
that installs and runs."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.io import fits

from crdetect.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_licence_citation_and_changelog_are_there():
    assert REPO.joinpath("LICENSE").read_text().startswith("BSD 3-Clause License")
    citation = yaml.safe_load(REPO.joinpath("CITATION.cff").read_text())
    assert citation["cff-version"] == "1.2.0" and citation["license"] == "BSD-3-Clause"
    import crdetect

    assert citation["version"] == crdetect.__version__  # the version comes from one place: crdetect.__version__
    cited = " ".join(reference["title"] for reference in citation["references"])
    for work in ("deepCR", "Cosmic-CoNN", "Attention Augmented", "Laplacian", "maskfill"):
        assert work in cited
    assert REPO.joinpath("CHANGELOG.md").read_text().startswith("# Changelog")


def test_png_quicklook_shows_the_frame_the_mask_and_the_largest_hits(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    image = np.random.default_rng(0).normal(1000.0, 10.0, (128, 160)).astype(np.float32)
    image[40, 50:56] += 3000.0  # a track
    image[90, 100] += 5000.0  # a one-pixel hit
    fits.PrimaryHDU(image).writeto(tmp_path / "frame.fits")
    assert main(["detect", str(tmp_path / "frame.fits"), "--out-dir", str(tmp_path / "o"), "-q"]) == 0
    output = tmp_path / "o" / "frame_crmask.fits"
    assert main(["view", str(output), "--png"]) == 0
    png = output.with_suffix(".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert main(["view", str(output), "--png"]) == 2  # never replaced unless asked
    assert "exists" in capsys.readouterr().err
    assert main(["view", str(output), "--png", "--overwrite", "--out", str(tmp_path / "look.png")]) == 0


@pytest.mark.slow
def test_the_wheel_holds_the_models_and_the_sample_and_runs_once_installed(tmp_path):
    """python -m build's wheel passes twine check, holds the shipped models and the sample, and crdetect detect
    --sample runs from it in a fresh virtual environment (its dependencies from this one's site-packages)."""
    pytest.importorskip("build")
    pytest.importorskip("twine")
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--sdist", "--no-isolation", "--outdir", str(dist),
                    str(REPO)], check=True, capture_output=True, timeout=600)
    wheel = next(dist.glob("crdetect-*.whl"))
    subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *map(str, dist.iterdir())], check=True,
                   capture_output=True, timeout=300)
    names = zipfile.ZipFile(wheel).namelist()
    for needed in ("crdetect/weights/default.pt", "crdetect/weights/fast.pt", "crdetect/weights/pretrained.json",
                   "crdetect/weights/default.onnx", "crdetect/weights/default.int8.onnx", "crdetect/weights/fast.int8.onnx",
                   "crdetect/samples/saao_a8280271.fits.fz", "crdetect/viewer_template.html"):
        assert needed in names
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    # the dependencies (torch, astropy...) from this environment: its site-packages appended to the new one's path
    # (a path listed in a .pth file; the .pth files inside it, such as an editable install's, are not run)
    import site
    import sysconfig

    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    Path(purelib, "dependencies.pth").write_text("\n".join([sysconfig.get_paths()["purelib"], *site.getsitepackages()]))
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    # as a core install runs it: torch (present in this environment) made unimportable
    script = ("import sys; sys.modules['torch'] = None; from crdetect.cli import main; "
              f"code = main(['detect', '--sample', '--out-dir', {str(tmp_path / 'out')!r}, '-q']); "
              "assert sys.modules['torch'] is None; sys.exit(code)")
    run = subprocess.run([str(python), "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                         env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr
    located = subprocess.run([str(python), "-c", "import crdetect; print(crdetect.__file__)"], capture_output=True,
                             text=True, cwd=tmp_path, check=True).stdout
    assert str(venv) in located  # the installed wheel ran, not this checkout
    assert (tmp_path / "out" / "saao_a8280271_crmask.fits").exists()
