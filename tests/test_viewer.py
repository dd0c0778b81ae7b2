"""`crdetect view`: the self-contained HTML page, driven in a real headless browser (Chromium, Playwright).

.ci/run installs Debian's chromium, so the test runs in CI; without a Chromium it is skipped, saying why.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from astropy.io import fits
from scipy import ndimage

from crdetect import grow_mask
from crdetect.cli import main


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    where = "in CI (.ci/run could not install Debian's chromium)" if os.environ.get("CI") else "here"
    pytest.skip(f"no Chromium {where}: apt-get install chromium to run the viewer's browser test")


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    executable = _chromium()
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


def _expected(probability16, excluded, threshold, grow):
    flagged = (probability16 / 65534 >= threshold) & ~excluded
    return grow_mask(flagged, grow) & ~excluded if grow else flagged


def test_viewer_page_threshold_growth_hits_and_download(browser, tmp_path):
    rng = np.random.default_rng(0)
    image = rng.normal(1000, 10, (120, 150)).astype(np.float32)
    image[30, 20:35] += 900.0
    image[80:83, 100:102] += 1500.0
    image[10, 140] += 3000.0
    image[100, 10] = np.nan
    dq = np.zeros(image.shape, np.int16)
    dq[31, 20:30] = 1
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(image, name="SCI"), fits.ImageHDU(dq, name="DQ")]).writeto(
        tmp_path / "f.fits")
    assert main(["detect", str(tmp_path / "f.fits"), "--model", "fast", "--out-dir", str(tmp_path / "o"), "-q"]) == 0
    output = tmp_path / "o" / "f_crmask.fits"
    assert main(["view", str(output)]) == 0
    with fits.open(output) as hdul:
        probability16 = np.rint(hdul["CRPROB"].data.astype(np.float64) * 65534)
        written, threshold = hdul["CRMASK"].data.astype(bool), hdul["CRMASK"].header["CRTHRESH"]
    excluded = ~np.isfinite(image) | (dq != 0)

    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto((tmp_path / "o" / "f_crmask.html").as_uri())
    page.wait_for_selector("body[data-ready=true]")

    def shown():
        return int(page.text_content("#pixel-count")), int(page.text_content("#hit-count"))

    def move(slider, value):
        page.eval_on_selector(f"#{slider}", "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }",
                              str(value))

    expected = _expected(probability16, excluded, threshold, 0)
    assert shown() == (expected.sum(), ndimage.label(expected, np.ones((3, 3)))[1])
    assert expected.sum() == written.sum() and expected[30, 21:34].all()  # the page starts at the file's mask
    for value, grow in ((0.05, 0), (0.05, 2), (0.9, 1)):
        move("threshold", value)
        move("grow", grow)
        expected = _expected(probability16, excluded, value, grow)
        assert shown() == (expected.sum(), ndimage.label(expected, np.ones((3, 3)))[1])
    rows = page.query_selector_all("#hits tbody tr")
    sizes = [int(row.query_selector_all("td")[3].text_content()) for row in rows]
    assert sizes == sorted(sizes, reverse=True) and len(rows) == shown()[1]
    page.click("#overlay")
    page.select_option("#stretch", "asinh")
    page.click("#zoom-in")
    rows[0].click()  # centres the view on the largest hit

    with page.expect_download() as download_info:
        page.click("#download")
    download = download_info.value
    assert download.suggested_filename == "f_crmask_t0.900_g1.fits"
    saved = tmp_path / "download.fits"
    download.save_as(saved)
    with fits.open(saved) as hdul:
        hdul.verify("exception")
        np.testing.assert_array_equal(hdul[0].data.astype(bool), expected)  # the mask as edited, not as written
        assert hdul[0].header["CRTHRESH"] == pytest.approx(0.9) and hdul[0].header["CRGROW"] == 1
    assert errors == []
    page.close()


def test_mask_only_outputs_need_the_input_file(tmp_path, capsys):
    fits.PrimaryHDU(np.random.default_rng(1).normal(100, 5, (40, 40)).astype(np.float32)).writeto(tmp_path / "g.fits")
    assert main(["detect", str(tmp_path / "g.fits"), "--model", "fast", "--out-dir", str(tmp_path / "o"), "-q",
                 "--mask-only"]) == 0
    output = tmp_path / "o" / "g_crmask.fits"
    assert main(["view", str(output)]) == 2
    assert "pass --image INPUT.fits" in capsys.readouterr().err
    assert main(["view", str(output), "--image", str(tmp_path / "g.fits"), "--out", str(tmp_path / "p.html")]) == 0
    assert (tmp_path / "p.html").stat().st_size > 40 * 40 * 4
