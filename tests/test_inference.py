"""Tiled inference equals whole-frame inference; bad pixels and bad inputs are handled."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from crdetect import CRDetector, InputError, Preprocessing, create_model, list_models
from crdetect.inference import tile_origins

LOCAL_MODELS = [n for n in list_models() if create_model(n).is_local]


def _detector(name: str = "deepcr_unet", **kwargs) -> CRDetector:
    """An untrained network; the source veto is off, since these tests are about the network's plumbing (tiles,
    padding, precision), where an untrained model's probabilities hover at 0.5 and the veto would cut at random."""
    torch.manual_seed(0)
    return CRDetector(create_model(name, **kwargs), Preprocessing(), device="cpu", source_veto=False)


def _frame(shape, seed=1):
    rng = np.random.default_rng(seed)
    image = rng.normal(1000.0, 20.0, shape).astype(np.float32)
    image[rng.integers(0, shape[0], 20), rng.integers(0, shape[1], 20)] += 3000.0  # CR-like spikes
    return image


def test_tile_origins_cover_the_length_with_the_last_tile_flush():
    assert tile_origins(100, 128, 16) == [0]
    assert tile_origins(300, 128, 16) == [0, 96, 172]
    assert tile_origins(256, 128, 32) == [0, 64, 128]


@pytest.mark.parametrize("name", LOCAL_MODELS)
def test_tiled_equals_whole_frame_for_local_models(name):
    detector = _detector(name)
    image = _frame((301, 517))  # odd sizes: the last tile is shifted, edges are padded
    whole = detector.predict_proba(image, tile=None)
    tiled = detector.predict_proba(image, tile=128, batch_size=3)
    assert tiled.shape == image.shape and tiled.dtype == np.float32
    np.testing.assert_allclose(tiled, whole, atol=1e-6)
    # the last rows and columns are predicted like every other pixel
    np.testing.assert_allclose(tiled[-1], whole[-1], atol=1e-6)
    np.testing.assert_allclose(tiled[:, -1], whole[:, -1], atol=1e-6)


def test_global_models_tile_close_to_whole_frame():
    """GroupNorm and attention see the whole tile, so tiling is not exact; it stays close."""
    detector = _detector("cosmic_conn")
    image = _frame((200, 300))
    assert not detector.model.is_local
    whole, tiled = detector.predict_proba(image, tile=None), detector.predict_proba(image, tile=128)
    assert np.abs(tiled - whole).max() < 0.1


@pytest.mark.parametrize("shape", [(1, 1), (3, 5), (1, 700), (700, 1), (2, 2)])
def test_tiny_and_one_pixel_wide_frames(shape):
    detector = _detector(base_channels=8)
    image = _frame(shape)
    for tile in (None, 128):
        probability = detector.predict_proba(image, tile=tile)
        assert probability.shape == shape and np.isfinite(probability).all()
    np.testing.assert_allclose(detector.predict_proba(image, tile=128), detector.predict_proba(image, tile=None),
                               atol=1e-6)


def test_nonfinite_pixels_are_never_flagged_and_do_not_poison_neighbours():
    detector = _detector()
    image = _frame((160, 160))
    bad = image.copy()
    bad[40:50, 60:70] = np.nan
    bad[100, 100] = np.inf
    bad[120, 10] = -np.inf
    result = detector.predict(bad, threshold=0.0)  # threshold 0 would flag every finite pixel
    assert np.isfinite(result.probability).all()
    assert result.nonfinite.sum() == 102
    assert not result.mask[result.nonfinite].any() and result.mask[~result.nonfinite].all()
    # Far from the bad pixels (beyond the receptive field) the prediction is unchanged.
    clean = detector.predict_proba(image, statistics=result.statistics)
    far = np.ones(image.shape, bool)
    far[40 - 32:50 + 32, 60 - 32:70 + 32] = far[100 - 32:101 + 32, 100 - 32:101 + 32] = False
    far[120 - 32:121 + 32, :11 + 32] = False
    np.testing.assert_allclose(result.probability[far], clean[far], atol=1e-6)


def test_integer_and_big_endian_input_give_the_float_result():
    detector = _detector(base_channels=8)
    image = np.round(_frame((64, 80)))
    reference = detector.predict_proba(image.astype(np.float32))
    np.testing.assert_array_equal(detector.predict_proba(image.astype(np.int32)), reference)
    np.testing.assert_array_equal(detector.predict_proba(image.astype(">f4")), reference)


def test_constant_frame_gives_a_result():
    detector = _detector(base_channels=8)
    probability = detector.predict_proba(np.zeros((40, 40), np.float32))
    assert probability.shape == (40, 40) and np.isfinite(probability).all()


@pytest.mark.parametrize("bad, message", [
    (np.zeros(10), "must be 2-D"),
    (np.zeros((2, 3, 4)), "For a cube, pass one plane"),
    (np.zeros((0, 4)), "empty"),
    (np.full((4, 4), np.nan), "no finite pixels"),
    (np.array([["a", "b"]]), "numeric"),
    (np.zeros((4, 4), complex), "numeric"),
])
def test_bad_images_get_clear_errors(bad, message):
    with pytest.raises(InputError, match=message):
        _detector(base_channels=8).predict_proba(bad)


def test_tile_must_exceed_twice_the_overlap():
    with pytest.raises(InputError, match="larger than twice the overlap"):
        _detector(base_channels=8).predict_proba(_frame((300, 300)), tile=64, overlap=32)


def test_detect_thresholds_the_probability():
    detector = _detector(base_channels=8)
    image = _frame((50, 60))
    probability = detector.predict_proba(image)
    np.testing.assert_array_equal(detector.detect(image, threshold=0.4), probability >= 0.4)


def test_saturated_stars_and_bleeds_are_protected_but_not_single_saturated_pixels():
    from crdetect.inference import saturated_regions

    image = np.full((30, 30), 100.0, np.float32)
    image[5:15, 10] = 5e4  # a bleed column
    image[20, 20] = 5e4  # a saturated CR pixel
    protected = saturated_regions(image, 4e4)
    assert protected[5:15, 9:12].all() and protected[4, 10] and not protected[20, 20]
    assert not saturated_regions(image, None).any()
    result = _detector(base_channels=8).predict(image, threshold=0.0, saturation=4e4)
    assert not result.mask[protected].any() and result.mask[20, 20]


def test_a_saturated_plateau_read_with_noise_is_protected_whole():
    """Read noise scatters a saturated plateau about its level: half its pixels read just below it. A small
    saturated core (an undersampled star) then fell apart into pieces under the 5 pixels a saturated region
    needs, and the network flagged the star (issue #13: a third of `fast`'s false pixels on undersampled
    stars, whose cores were clipped at the simulator's full well)."""
    rng = np.random.default_rng(3)
    image = rng.normal(100.0, 5.0, (40, 40)).astype(np.float32)
    core = (slice(18, 21), slice(18, 21))  # a 3 x 3 plateau at the full well, read noise on top
    image[core] = 4e4 + rng.normal(0.0, 1.5, (3, 3)).astype(np.float32)
    assert np.count_nonzero(image[core] >= 4e4) < 5  # alone these pixels would not be protected
    result = _detector(base_channels=8).predict(image, threshold=0.0, saturation=4e4)
    assert result.protected[17:22, 17:22].all() and not result.mask[17:22, 17:22].any()


def test_balanced_tiles_cover_with_less_overlap():
    from crdetect.inference import balanced_tile

    assert balanced_tile(2048, 1024, 32, 8) == 728
    origins = tile_origins(2048, 728, 32)
    assert len(origins) == 3 and origins[-1] + 728 == 2048
    assert balanced_tile(900, 1024, 32, 8) == 1024  # one tile: unchanged


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch's inductor imports torch.jit internals
def test_compiled_detector_gives_the_eager_logits():
    from crdetect import load_detector

    image = np.random.default_rng(0).normal(100, 5, (300, 200)).astype(np.float32)
    eager = load_detector("fast", device="cpu", backend="torch", precision="float32")
    compiled = load_detector("fast", device="cpu", compile=True, precision="float32")
    assert compiled.backend == "torch"  # torch.compile is torch's
    assert compiled.pad_multiple == eager.pad_multiple and compiled.context_margin == eager.context_margin
    np.testing.assert_allclose(compiled.predict(image, tile=None).logits, eager.predict(image, tile=None).logits,
                               atol=1e-4)


def test_bfloat16_keeps_the_shipped_mask_and_unknown_precision_is_refused(shared_data):
    """bfloat16 autocast moves logits a little; the mask of a real frame barely changes."""
    from crdetect import load_detector
    from crdetect.data.real import _read

    image = _read(shared_data / "real" / "b1_hsc_lsst" / "hsc_crs.fits")
    exact = load_detector("default", device="cpu", backend="torch", precision="float32").predict(image)
    fast = load_detector("default", device="cpu", precision="bfloat16")
    assert fast.precision == "bfloat16" and "bfloat16" in repr(fast)
    rounded = fast.predict(image)
    assert rounded.logits.dtype == np.float32
    assert np.abs(rounded.logits - exact.logits).max() < 1.0  # measured 0.38
    assert exact.mask.sum() > 300 and (rounded.mask != exact.mask).sum() <= 5  # measured 1 of 362
    with pytest.raises(InputError, match="unknown precision 'half'.*float32, bfloat16, float16, int8"):
        load_detector("fast", device="cpu", precision="half")


def test_out_of_memory_falls_back_to_smaller_batches_and_tiles(caplog):
    """A tile too large for a GPU's memory is retried smaller; tiling is exact, so nothing changes. (The torch
    branch of the window, which runs on GPUs, called here on a CPU tensor.)"""
    from crdetect.inference.tiling import sliding_window_fitting_memory

    detector = _detector(base_channels=8)
    image = torch.from_numpy(_frame((300, 520)) / 100.0 - 10.0)
    margin, multiple = detector.margin(), detector.pad_multiple
    whole = sliding_window_fitting_memory(detector._run, image, None, margin, multiple, 1)

    def small_memory(batch):
        if batch.shape[0] > 1 or batch.shape[-1] > 200:
            raise torch.OutOfMemoryError("simulated: CUDA out of memory")
        return detector._run(batch)

    retried = sliding_window_fitting_memory(small_memory, image, None, margin, multiple, 4)
    np.testing.assert_allclose(retried.numpy(), whole.numpy(), atol=1e-5)
    assert "retrying with batch 1" in caplog.text

    def no_memory(batch):
        raise torch.OutOfMemoryError("no")

    with pytest.raises(InputError, match="out of cpu memory even with one"):
        sliding_window_fitting_memory(no_memory, image, 256, margin, multiple, 1)


@pytest.mark.parametrize("name", ["deepcr_unet", "unet", "att_unet", "tunet_4"])
def test_batch_norms_are_folded_for_inference_without_changing_the_logits(name):
    """The detector runs a copy with every conv+BatchNorm pair folded; the caller's module is untouched."""
    torch.manual_seed(0)
    model = create_model(name)
    with torch.no_grad():  # non-trivial running statistics, as after training
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
    model.eval()
    detector = CRDetector(model, Preprocessing(), device="cpu")
    folded = sum(isinstance(m, torch.nn.BatchNorm2d) for m in detector.model.modules())
    original = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert original > 0 and folded < original and model.training is False
    if name != "tunet_4":  # every BatchNorm of the U-Nets follows a conv in a block
        assert folded == 0
    x = torch.from_numpy(_frame((64, 96))[None, None] / 1000.0 - 1.0).float()
    with torch.inference_mode():
        np.testing.assert_allclose(detector.model(x).numpy(), model(x).numpy(), atol=1e-4)


def test_bfloat16_on_a_cpu_without_native_support_warns(monkeypatch, caplog):
    import crdetect.inference as inference

    monkeypatch.setattr(inference, "cpu_has_native_bfloat16", lambda: False)
    CRDetector(create_model("deepcr_unet", base_channels=4), device="cpu", precision="bfloat16")
    assert "no native bfloat16" in caplog.text


def test_saturation_is_read_off_flat_plateaus_when_no_level_is_given():
    from crdetect.inference import plateau_saturation

    rng = np.random.default_rng(3)
    image = rng.normal(1000.0, 10.0, (60, 60)).astype(np.float32)
    assert plateau_saturation(image) is None  # noise only
    image[30, 30] = 6.7e4  # one bright hit: a peak, not a plateau
    image[10, 10:13] = [6.0e4, 6.6e4, 6.1e4]  # an unsaturated star's top: no flat group of 5 px
    assert plateau_saturation(image) is None
    image[40:43, 40:43] = 65535.0  # a saturated star core: a flat top, below the lone hit (flat-fielded)
    assert plateau_saturation(image) == pytest.approx(65535.0 * 0.99)
    result = _detector(base_channels=8).predict(image, threshold=0.0)
    assert not result.mask[39:44, 39:44].any() and result.protected[40:43, 40:43].all()
    assert result.mask[30, 30]  # the single bright pixel is still a candidate
    assert plateau_saturation(np.zeros((8, 8), np.float32)) is None  # nothing positive
    empty_sky = rng.normal(1000.0, 10.0, (80, 96)).astype(np.float32)  # its brightest pixels are within 1 %
    assert plateau_saturation(empty_sky) is None
    assert plateau_saturation(np.full((8, 8), np.nan, np.float32)) is None
