"""ZCA whitening of whole images, Lagani's preprocessing for soft-WTA.

With ``C = cov(x) = U diag(λ) Uᵀ`` over the fitting images (each flattened to a vector of C·H·W values),

    ``zca(x) = (x − μ) U diag((λ + ε)^(-1/2)) Uᵀ``,

so whitened images have zero mean and covariance ``U diag(λ / (λ + ε)) Uᵀ``: the identity for directions with
variance ``λ ≫ ε``, damped below. The reference (HebbianLearning's ``neurolab.data``, ``WHITEN = 2``) whitens
whole 32×32 images of channel-standardised CIFAR-10 with ``ε = 10⁻²``, without centring each pixel first; this
module centres them (the per-pixel means of standardised images are near 0, so the difference is small).
:class:`ZCA` is a module with buffers, so a network that holds it stores it with its weights.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .checks import check_positive


class ZCA(nn.Module):
    """ZCA whitening of ``shape``-shaped inputs; the identity until :meth:`fit` (or a loaded state) sets it."""

    def __init__(self, shape: tuple[int, ...], eps: float = 1e-2) -> None:
        super().__init__()
        self.shape, self.eps = tuple(shape), check_positive("eps", eps)
        dim = int(torch.tensor(self.shape).prod())
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))

    @torch.no_grad()
    def fit(self, images: Tensor | list[Tensor]) -> ZCA:
        """Set the mean and the whitening matrix from ``images`` (a tensor, or chunks of one, ``(N, *shape)``)."""
        chunks = [images] if isinstance(images, Tensor) else list(images)
        count = sum(len(chunk) for chunk in chunks)
        if count < 2:
            raise ValueError(f"ZCA needs at least 2 images to fit, got {count}")
        for chunk in chunks:
            if tuple(chunk.shape[1:]) != self.shape:
                raise ValueError(f"ZCA was made for inputs of shape {self.shape}, got {tuple(chunk.shape[1:])}")
        mean = sum(chunk.flatten(1).double().sum(0) for chunk in chunks) / count
        cov = torch.zeros(len(mean), len(mean), dtype=torch.float64, device=mean.device)
        for chunk in chunks:
            centred = chunk.flatten(1).double() - mean
            cov.addmm_(centred.T, centred)
        eigenvalues, vectors = torch.linalg.eigh(cov / (count - 1))
        matrix = (vectors * (eigenvalues.clamp_min(0) + self.eps).rsqrt()) @ vectors.T
        self.mean.copy_(mean)
        self.matrix.copy_(matrix)
        return self

    def forward(self, x: Tensor) -> Tensor:
        flat = x.flatten(1) - self.mean
        return (flat @ self.matrix).view(x.shape)  # the matrix is symmetric

    def extra_repr(self) -> str:
        return f"shape={self.shape}, eps={self.eps}"
