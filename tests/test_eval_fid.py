"""FID / KID maths against independent computations, the feature cache, and the FID InceptionV3.

The Inception tests use random weights (the real file cannot be downloaded here): they check the
architecture's layout and shapes, not feature values.
"""

import numpy as np
import pytest
import torch
from scipy import linalg

from spade_core.eval import (
    INCEPTION_WEIGHTS_ENV,
    FeatureStatsCache,
    FIDInceptionV3,
    feature_statistics,
    frechet_distance,
    frechet_distance_from_features,
    kernel_inception_distance,
)
from spade_core.eval.inception import MixedE, _avg_pool_same


def _random_spd(rng: np.random.Generator, dim: int) -> np.ndarray:
    a = rng.normal(size=(dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_frechet_distance_matches_closed_form_for_diagonal_covariances():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    s1, s2 = rng.uniform(0.1, 3.0, size=8), rng.uniform(0.1, 3.0, size=8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_matches_symmetric_scipy_computation_for_full_covariances():
    rng = np.random.default_rng(1)
    dim = 12
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    sigma1, sigma2 = _random_spd(rng, dim), _random_spd(rng, dim)
    # Independent route: tr sqrt(S1 S2) = tr sqrt(S1^1/2 S2 S1^1/2), a symmetric PSD root.
    root1 = linalg.sqrtm(sigma1).real
    cross = np.trace(linalg.sqrtm(root1 @ sigma2 @ root1).real)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1) + np.trace(sigma2) - 2 * cross
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-8)


def test_frechet_distance_of_identical_statistics_is_zero():
    rng = np.random.default_rng(2)
    mu, sigma = rng.normal(size=10), _random_spd(rng, 10)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_frechet_distance_with_singular_covariance_is_finite():
    rng = np.random.default_rng(3)
    low_rank = rng.normal(size=(6, 2))
    sigma1 = low_rank @ low_rank.T  # rank 2 of 6
    sigma2 = np.zeros((6, 6))
    value = frechet_distance(np.zeros(6), sigma1, np.ones(6), sigma2)
    assert np.isfinite(value)
    assert value == pytest.approx(6 + np.trace(sigma1), rel=1e-3)
    f1, f2 = rng.normal(size=(5, 10)), rng.normal(size=(7, 10))  # fewer images than dims: rank-deficient
    value = frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    assert np.isfinite(value)
    assert value == pytest.approx(frechet_distance_from_features(f1, f2, method="svd"), rel=1e-4)


def test_frechet_distance_retries_with_eps_offset_when_sqrtm_is_not_finite(monkeypatch):
    calls = []
    real_sqrtm = linalg.sqrtm

    def flaky_sqrtm(matrix):
        calls.append(matrix.copy())
        return np.full_like(matrix, np.inf) if len(calls) == 1 else real_sqrtm(matrix)

    monkeypatch.setattr(linalg, "sqrtm", flaky_sqrtm)
    value = frechet_distance(np.zeros(3), np.eye(3), np.zeros(3), np.eye(3), eps=1e-2)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], np.eye(3) * 1.01**2)
    assert value == pytest.approx(2 * 3 - 2 * 3 * 1.01, abs=1e-12)


def test_frechet_distance_rejects_large_imaginary_parts_and_mismatched_shapes():
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
    with pytest.raises(ValueError, match="same feature extractor"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


def test_feature_statistics_are_float64_mean_and_unbiased_covariance():
    feats = torch.randn(50, 4, generator=torch.Generator().manual_seed(0))
    mu, sigma = feature_statistics(feats)
    assert mu.dtype == np.float64 and sigma.shape == (4, 4)
    np.testing.assert_allclose(mu, feats.double().mean(0).numpy(), atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(feats.double().numpy(), rowvar=False), atol=1e-12)
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 4)))


@pytest.mark.parametrize("n1,n2", [(40, 50), (9, 7)])
def test_frechet_from_features_svd_route_equals_sqrtm_route(n1, n2):
    rng = np.random.default_rng(4)
    f1, f2 = rng.normal(size=(n1, 16)), rng.normal(size=(n2, 16)) * 1.5 + 0.3
    by_svd = frechet_distance_from_features(f1, f2, method="svd")
    by_sqrtm = frechet_distance_from_features(f1, f2, method="sqrtm")
    assert by_svd == pytest.approx(by_sqrtm, rel=1e-5)
    assert frechet_distance_from_features(f1, f1) == pytest.approx(0.0, abs=1e-8)


def test_kid_is_near_zero_for_identical_sets_and_grows_with_a_shift():
    rng = np.random.default_rng(5)
    feats = rng.normal(size=(1000, 16))
    same_mean, same_std = kernel_inception_distance(feats, feats, num_subsets=20, subset_size=200)
    shifted_mean, _ = kernel_inception_distance(feats, feats + 0.5, num_subsets=20, subset_size=200)
    assert abs(same_mean) < 0.02 and same_std >= 0
    assert shifted_mean > 0.5
    assert abs(same_mean) < 0.05 * shifted_mean


def test_kid_clips_subset_size_and_is_deterministic():
    rng = np.random.default_rng(6)
    small, large = rng.normal(size=(5, 8)), rng.normal(size=(30, 8))
    first = kernel_inception_distance(small, large, num_subsets=10, subset_size=1000, seed=3)
    assert first == kernel_inception_distance(small, large, num_subsets=10, subset_size=1000, seed=3)
    with pytest.raises(ValueError, match="at least 2"):
        kernel_inception_distance(small[:1], large)


def test_feature_stats_cache_round_trip(tmp_path):
    feats = np.random.default_rng(7).normal(size=(20, 6)).astype(np.float32)
    ids = [f"s{i}" for i in range(20)]
    cache = FeatureStatsCache(tmp_path / "real.npz", key="inception=abc")
    assert cache.load() is None
    cache.save(feats[:10], ids[:10], complete=False)
    partial = cache.load()
    assert not partial.complete and partial.mu is None and partial.sample_ids == ids[:10]
    cache.save(feats, ids, complete=True)
    entry = cache.load()
    mu, sigma = feature_statistics(feats)
    assert entry.complete and entry.sample_ids == ids
    np.testing.assert_allclose(entry.mu, mu)
    np.testing.assert_allclose(entry.sigma, sigma)
    np.testing.assert_array_equal(entry.features, feats)
    assert FeatureStatsCache(tmp_path / "real.npz", key="inception=other").load() is None
    assert [p.name for p in tmp_path.iterdir()] == ["real.npz"]


# --- FIDInceptionV3 (random weights: layout and plumbing only) ---------------------------------------------

@pytest.fixture(scope="module")
def inception():
    torch.manual_seed(0)
    return FIDInceptionV3()


def test_inception_state_dict_matches_pytorch_fid_layout(inception):
    state = inception.state_dict()
    # 94 conv+BN units x (conv.weight + 4 BN tensors) + fc.weight + fc.bias, plus one num_batches_tracked per BN.
    assert len([k for k in state if not k.endswith("num_batches_tracked")]) == 472
    assert len(state) == 566
    expected = {
        "Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
        "Conv2d_4a_3x3.bn.running_var": (192,),
        "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
        "Mixed_6b.branch7x7_2.conv.weight": (128, 128, 1, 7),
        "Mixed_6e.branch7x7dbl_5.conv.weight": (192, 192, 1, 7),
        "Mixed_7a.branch3x3_2.conv.weight": (320, 192, 3, 3),
        "Mixed_7b.branch3x3dbl_1.conv.weight": (448, 1280, 1, 1),
        "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1),
        "Mixed_7c.branch3x3_2b.bn.weight": (384,),
        "fc.weight": (1008, 2048),
        "fc.bias": (1008,),
    }
    for name, shape in expected.items():
        assert tuple(state[name].shape) == shape, name
    # torchvision's inception_v3 has 27,161,264 parameters; minus its aux head (3,326,696) plus 8 more classes.
    assert sum(p.numel() for p in inception.parameters()) == 23_850_960


@pytest.mark.parametrize("size", [64, 299])
def test_inception_returns_pool3_features(inception, size):
    images = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))
    feats = inception(images)
    assert feats.shape == (1, 2048)
    assert torch.isfinite(feats).all() and (feats >= 0).all()


def test_inception_fid_pooling_quirks():
    # Average pooling ignores the padding: a constant map stays constant up to the border.
    assert torch.equal(_avg_pool_same(torch.ones(1, 1, 4, 4)), torch.ones(1, 1, 4, 4))
    assert MixedE(2048, max_pool=True).max_pool and not MixedE(1280, max_pool=False).max_pool


def test_inception_rejects_wrong_input_shape(inception):
    with pytest.raises(ValueError, match="batch dimension"):
        inception(torch.rand(3, 64, 64))
    with pytest.raises(ValueError, match="resize_input=True"):
        FIDInceptionV3(resize_input=False)(torch.rand(1, 3, 64, 64))


def test_inception_loads_a_pytorch_fid_style_file(tmp_path, inception, monkeypatch):
    state = {k: v for k, v in inception.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "pt_inception.pth"
    torch.save(state, path)
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(path))
    loaded = FIDInceptionV3.from_pretrained()
    assert torch.equal(loaded.fc.weight, inception.fc.weight)
    assert torch.equal(loaded.Mixed_7c.branch_pool.bn.running_var, inception.Mixed_7c.branch_pool.bn.running_var)
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="not the pytorch-fid Inception weights"):
        FIDInceptionV3.from_pretrained(tmp_path / "wrong.pth")


def test_inception_missing_weights_offline_names_the_env_var(tmp_path, monkeypatch):
    monkeypatch.delenv(INCEPTION_WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("SPADE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_ENV) as err:
        FIDInceptionV3.from_pretrained()
    assert "pt_inception-2015-12-05-6726825d.pth" in str(err.value)
    monkeypatch.setenv(INCEPTION_WEIGHTS_ENV, str(tmp_path / "nowhere.pth"))
    with pytest.raises(FileNotFoundError, match=INCEPTION_WEIGHTS_ENV):
        FIDInceptionV3.from_pretrained()
