"""ZCA whitening: zero mean, identity covariance up to ε, the ZCA (symmetric) solution, bad input."""

import pytest
import torch

from hebbkit.whitening import ZCA


def _correlated(n: int, dim: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    mixing = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
    return (torch.randn(n, dim, generator=gen, dtype=torch.float64) @ mixing + 3.0).view(n, 2, 2, dim // 4)


def test_whitened_data_has_zero_mean_and_identity_covariance_up_to_eps():
    x = _correlated(4000, 12)
    zca = ZCA((2, 2, 3), eps=1e-6).double().fit(x)
    white = zca(x).flatten(1)
    torch.testing.assert_close(white.mean(0), torch.zeros(12, dtype=torch.float64), atol=1e-9, rtol=0)
    torch.testing.assert_close(white.T @ white / 3999, torch.eye(12, dtype=torch.float64), atol=1e-4, rtol=0)


def test_eps_damps_the_low_variance_directions():
    x = _correlated(4000, 12)
    eigenvalues = torch.linalg.eigvalsh(torch.cov(x.flatten(1).T))
    zca = ZCA((2, 2, 3), eps=1e-2).double().fit(x)
    white = zca(x).flatten(1)
    got = torch.linalg.eigvalsh(white.T @ white / 3999)
    torch.testing.assert_close(got, eigenvalues / (eigenvalues + 1e-2), atol=1e-6, rtol=1e-6)


def test_zca_is_the_symmetric_whitening_closest_to_the_input():
    zca = ZCA((2, 2, 3)).double().fit(_correlated(500, 12))
    torch.testing.assert_close(zca.matrix, zca.matrix.T)
    assert torch.linalg.eigvalsh(zca.matrix).min() > 0


def test_fit_from_chunks_equals_fit_at_once():
    x = _correlated(300, 12)
    once = ZCA((2, 2, 3)).double().fit(x)
    chunked = ZCA((2, 2, 3)).double().fit(list(x.split(70)))
    torch.testing.assert_close(once.matrix, chunked.matrix)
    torch.testing.assert_close(once.mean, chunked.mean)


def test_state_travels_with_the_module():
    fitted = ZCA((2, 2, 3)).double().fit(_correlated(300, 12))
    loaded = ZCA((2, 2, 3)).double()
    loaded.load_state_dict(fitted.state_dict())
    x = _correlated(5, 12, seed=1)
    torch.testing.assert_close(loaded(x), fitted(x))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="ZCA needs at least 2 images"):
        ZCA((2, 2, 3)).fit(torch.randn(1, 2, 2, 3))
    with pytest.raises(ValueError, match=r"made for inputs of shape \(2, 2, 3\), got \(3, 2, 2\)"):
        ZCA((2, 2, 3)).fit(torch.randn(5, 3, 2, 2))
    with pytest.raises(ValueError, match="eps must be a number > 0"):
        ZCA((2, 2, 3), eps=0)
