"""Hebbian learning rules as pure functions.

Shapes. Linear: inputs ``x`` (N, D), weights ``W`` (K, D), responses ``y = x Wᵀ`` (N, K).
Convolution: ``x`` (N, C, H, W), ``W`` (K, C, kh, kw), ``y = conv2d(x, W)`` (N, K, H', W'); every patch
position counts as one sample, so "mean over samples" means over N·H'·W' patches.

Every rule here has the same shape (``scale``, default 1, multiplies the result for free: the layers pass
−1 to get the gradient ``−ΔW``),

    ΔW = (1/M) [ Rᵀ X  −  decay(R, W) ]        (M samples, R the post-synaptic factor, (M, K))

so each rule is a post-synaptic factor plus a decay term, and it exists in two forms:

* the direct update ``ΔW`` (``hebb``, ``instar``, ``oja``, ``hpca``), and
* Miconi's loss form (``hebb_loss``, ...): a scalar ``L(W)`` with ``∇_W L = −ΔW`` exactly, the
  post-synaptic factor and decay detached, so autograd plus any optimizer performs the rule.

Every rule class has the same protocol: ``update(x, weight, y, scale=..., **geometry)`` (the direct form),
``loss(y, weight, x=None, **geometry)`` (the loss form; ``x`` is needed by rules whose post-synaptic factor
depends on the input, such as :class:`SoftWTA`'s cosine) and ``unit_norm`` (whether the rule expects its
units renormalised to ‖w‖ = 1 after every step).

The correlation ``Rᵀ X`` of a convolution is computed with ``torch.nn.grad.conv2d_weight`` (no patch
matrix is ever materialised); decays come from sums of responses. Half-precision tensors (float16, bfloat16)
are updated in float32 and the update returned in their dtype: the sums over samples overflow float16
(largest 65,504) long before the 1/M, e.g. for unscaled 0..255 pixels.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.nn.grad import conv2d_weight

from .checks import check_choice, check_positive

IntPair = int | tuple[int, int]

# --------------------------------------------------------------------------------------- input checks


def check_temperature(temperature: float) -> float:
    """Return ``temperature`` if it is a finite number > 0, else raise ``ValueError``."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return float(temperature)


def check_k(k: int, num_units: int) -> int:
    """Return ``k`` if it is an integer in 1..num_units, else raise ``ValueError``."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= num_units:
        raise ValueError(f"k must be an integer in 1..{num_units} (the number of units), got {k!r}")
    return k


def check_learning_rate(lr: float) -> float:
    """Return ``lr`` if it is a finite number >= 0, else raise ``ValueError``."""
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"learning rate lr must be a finite number >= 0, got {lr!r}")
    return float(lr)


def check_finite(name: str, tensor: Tensor) -> None:
    """Raise ``ValueError`` if ``tensor`` holds NaN or Inf (one reduction pass when it does not). A meta tensor
    holds no values: it passes, so that shapes propagate through a plastic layer on ``device="meta"``."""
    if tensor.is_meta:
        return
    if not torch.isfinite(tensor.sum()) and not torch.isfinite(tensor).all():
        raise ValueError(f"{name} must be finite: it contains NaN or Inf values")


def _pair(value: IntPair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _conv_output_size(x: Tensor, weight: Tensor, stride: IntPair = 1, padding: IntPair = 0,
                      dilation: IntPair = 1) -> tuple[int, int]:
    """(H', W') of ``conv2d(x, weight)`` with this geometry."""
    return tuple(
        (size + 2 * p - d * (k - 1) - 1) // s + 1
        for size, k, s, p, d in zip(x.shape[2:], weight.shape[2:], _pair(stride), _pair(padding), _pair(dilation))
    )


def _check_pair(x: Tensor, weight: Tensor, post: Tensor | None = None, geometry: dict | None = None) -> None:
    if weight.dim() not in (2, 4):
        raise ValueError(f"weight must be 2-D (K, D) or 4-D (K, C, kh, kw), got shape {tuple(weight.shape)}")
    if x.dtype != weight.dtype:
        raise TypeError(f"x and weight must share a dtype, got x {x.dtype} and weight {weight.dtype}")
    if x.dim() != weight.dim() or x.shape[1] != weight.shape[1]:
        want = "(N, D)" if weight.dim() == 2 else "(N, C, H, W)"
        raise ValueError(
            f"x must have shape {want} with {weight.shape[1]} features/channels to match weight "
            f"{tuple(weight.shape)}, got x of shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"x holds no samples (shape {tuple(x.shape)}): a rule needs a batch of at least one")
    if post is not None:
        want = (x.shape[0], weight.shape[0])
        if weight.dim() == 4:
            want += _conv_output_size(x, weight, **(geometry or {}))
        if tuple(post.shape) != want:
            raise ValueError(
                f"post-synaptic factor must have shape {want} ({'N, K, H_out, W_out' if weight.dim() == 4 else 'N, K'}) "
                f"for x {tuple(x.shape)} and weight {tuple(weight.shape)}, got {tuple(post.shape)}"
            )
    check_finite("x", x)
    check_finite("weight", weight)


# ------------------------------------------------------------------------------------------- helpers

HALF_PRECISION = (torch.float16, torch.bfloat16)


def _float32_sums(rule: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """Run a direct-form rule ``rule(..., x, weight, post, *, scale, **geometry)`` in float32 when ``x`` and
    ``weight`` are half precision, and return the update in their dtype (finite wherever the update fits it)."""

    @functools.wraps(rule)
    def wrapper(*args, scale: float = 1.0, **geometry) -> Tensor:
        *lead, x, weight, post = args
        if weight.dtype not in HALF_PRECISION or x.dtype != weight.dtype:  # a dtype mismatch: the rule says so
            return rule(*args, scale=scale, **geometry)
        return rule(*lead, x.float(), weight.float(), post.float(), scale=scale, **geometry).to(weight.dtype)

    return wrapper



def responses(x: Tensor, weight: Tensor, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1) -> Tensor:
    """``y = x Wᵀ`` for a linear layer, ``conv2d(x, W)`` for a convolution (no bias)."""
    if weight.dim() == 2:
        return F.linear(x, weight)
    return F.conv2d(x, weight, None, stride, padding, dilation)


def as_rows(y: Tensor) -> Tensor:
    """Responses as an (M, K) matrix: one row per sample (and per patch position for a conv)."""
    return y if y.dim() == 2 else y.movedim(1, -1).reshape(-1, y.shape[1])


def correlation(
    x: Tensor, weight: Tensor, post: Tensor, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1
) -> Tensor:
    """``Rᵀ X``: the sum over samples (and patches) of ``post_k · x``, shaped like ``weight``."""
    if weight.dim() == 2:
        return post.T @ x
    return conv2d_weight(x, weight.shape, post, stride, padding, dilation)


def _num_samples(post: Tensor) -> int:
    return post.numel() // post.shape[1]


def _update(x: Tensor, weight: Tensor, post: Tensor, decay: Tensor | None, geometry: dict, scale: float) -> Tensor:
    """``scale · (RᵀX − decay) / M``, the subtraction and scaling fused into the product where possible."""
    scale = scale / _num_samples(post)
    if weight.dim() == 2:
        if decay is None:
            return torch.mm(post.T, x).mul_(scale)
        return decay.addmm_(post.T, x, beta=-scale, alpha=scale)  # decay is a fresh buffer
    delta = correlation(x, weight, post, **geometry)
    if decay is not None:
        delta.sub_(decay)
    return delta.mul_(scale)


def _loss(y: Tensor, weight: Tensor, post: Tensor, decay: Tensor | None) -> Tensor:
    """``−(1/M)[Σ R⊙y − Σ W⊙decay]`` with ``R`` and ``decay`` constants: its gradient is ``−ΔW``."""
    total = (post.detach() * y).sum()
    if decay is not None:
        total = total - (weight * decay.detach()).sum()
    return -total / _num_samples(post)


def _check_loss(y: Tensor, weight: Tensor, post: Tensor) -> None:
    if y.dim() < 2 or y.shape[1] != weight.shape[0] or post.shape != y.shape:
        raise ValueError(
            f"the loss form needs responses y of shape (N, K={weight.shape[0]}, ...) and a post-synaptic factor "
            f"of the same shape, got y {tuple(y.shape)}, factor {tuple(post.shape)}, weight {tuple(weight.shape)}"
        )


def _unit_sums(t: Tensor) -> Tensor:
    """Sum over every dimension but the units' (dim 1): samples, and patch positions for a conv."""
    return t.sum(0) if t.dim() == 2 else t.sum((0, 2, 3))


def _unit_decay(weight: Tensor, per_unit: Tensor) -> Tensor:
    """``s_i w_i`` for a per-unit scale ``s`` (K,)."""
    return per_unit.view(-1, *([1] * (weight.dim() - 1))) * weight


HPCA_BLOCK = 64


def _gram_is_cheaper(num_samples: int, num_units: int, dim: int) -> bool:
    """Cost of ``tril(FᵀF) W`` (K²(M + D)) against the blocked running reconstruction (K·D·(2M + block))."""
    return num_units * (num_samples + dim) <= dim * (2 * num_samples + HPCA_BLOCK)


def _hpca_blocked(x: Tensor | None, rows: Tensor, flat: Tensor) -> Tensor:
    """``FᵀX − tril(FᵀF) W`` (``x=None`` reads as 0) in O(M·K·D), for few samples and many units.

    Units are taken in blocks; ``residual = X − Σ_{j<block} f_j w_j`` carries the reconstruction of the
    units before the block, so a block needs ``F_bᵀ residual − tril(F_bᵀF_b) W_b``.
    """
    out = torch.empty_like(flat)
    residual = torch.zeros(rows.shape[0], flat.shape[1], dtype=flat.dtype, device=flat.device)
    if x is not None:
        residual.copy_(x)
    for start in range(0, flat.shape[0], HPCA_BLOCK):
        f_b, w_b = rows[:, start : start + HPCA_BLOCK], flat[start : start + HPCA_BLOCK]
        torch.mm(f_b.T, residual, out=out[start : start + HPCA_BLOCK])
        out[start : start + HPCA_BLOCK].addmm_(torch.tril(f_b.T @ f_b), w_b, alpha=-1)
        residual.addmm_(f_b, w_b, alpha=-1)
    return out


def _hpca_decay(fy: Tensor, weight: Tensor) -> Tensor:
    """``tril(FᵀF) W``: row i is ``Σ_n f_ni Σ_{j≤i} f_nj w_j``.

    With many samples (M ≳ K, every conv layer) through the K×K Gram matrix; with few samples and many
    units (a wide linear layer), where K²·D would dominate, through the blocked reconstruction.
    """
    rows, flat = as_rows(fy), weight.flatten(1)
    if _gram_is_cheaper(*rows.shape, flat.shape[1]):
        return (torch.tril(rows.T @ rows) @ flat).view_as(weight)
    return _hpca_blocked(None, rows, flat).neg_().view_as(weight)


# --------------------------------------------------------------------------------------------- rules


@_float32_sums
def hebb(x: Tensor, weight: Tensor, y: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
    """Plain Hebb: ``Δw_i = ⟨y_i x⟩``.

    No decay term, so ``‖w‖`` grows without bound: the reason for the rules below.
    """
    _check_pair(x, weight, y, geometry)
    return _update(x, weight, y, None, geometry, scale)


@_float32_sums
def instar(x: Tensor, weight: Tensor, r: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
    """Grossberg instar / competitive learning: ``Δw_i = ⟨r_i (x − w_i)⟩``.

    ``r`` comes from a competition (``wta``, ``soft_wta``, ``kwta``) or is the response itself; each
    unit moves towards the inputs it wins, so with hard WTA it converges to a cluster centroid.
    Decay: ``(Σ_n r_ni) w_i``.
    """
    _check_pair(x, weight, r, geometry)
    return _update(x, weight, r, _unit_decay(weight, _unit_sums(r)), geometry, scale)


@_float32_sums
def oja(x: Tensor, weight: Tensor, y: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
    """Oja's rule: ``Δw_i = ⟨y_i (x − y_i w_i)⟩``; a single unit converges to the first principal
    component with ``‖w‖ = 1``. Decay: ``(Σ_n y_ni²) w_i``."""
    _check_pair(x, weight, y, geometry)
    return _update(x, weight, y, _unit_decay(weight, _unit_sums(y.square())), geometry, scale)


@_float32_sums
def hpca(x: Tensor, weight: Tensor, fy: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
    """Nonlinear Hebbian PCA (Sanger's generalised Hebbian algorithm with ``f``):

        ``Δw_i = ⟨f(y_i) (x − Σ_{j≤i} f(y_j) w_j)⟩``,   matrix form ``(f(Y)ᵀX − tril(f(Y)ᵀf(Y)) W) / M``.

    Each unit minimises the reconstruction error left by the units before it; with ``f`` the identity
    the units converge to the top-K principal components, in order. ``fy`` is ``f(y)``.
    """
    _check_pair(x, weight, fy, geometry)
    if weight.dim() == 2 and not _gram_is_cheaper(*fy.shape, weight.shape[1]):
        return _hpca_blocked(x, fy, weight).mul_(scale / fy.shape[0])
    return _update(x, weight, fy, _hpca_decay(fy, weight), geometry, scale)


def patch_norms(x: Tensor, weight: Tensor, stride: IntPair = 1, padding: IntPair = 0, dilation: IntPair = 1) -> Tensor:
    """Euclidean norm of every input patch a unit sees: (N, 1) for linear, (N, 1, H', W') for conv."""
    if weight.dim() == 2:
        return x.norm(dim=1, keepdim=True)
    ones = torch.ones(1, *weight.shape[1:], dtype=x.dtype, device=x.device)
    return F.conv2d(x.square(), ones, None, stride, padding, dilation).sqrt()


def cosine(x: Tensor, weight: Tensor, y: Tensor, **geometry) -> Tensor:
    """``cos(w_i, x_n) = y_ni / (‖x_n‖ ‖w_i‖)`` from the responses ``y = x Wᵀ`` (a zero norm counts as 1)."""
    unit = weight.flatten(1).norm(dim=1)
    unit = torch.where(unit == 0, 1.0, unit).view(1, -1, *[1] * (y.dim() - 2))
    patch = patch_norms(x, weight, **geometry)
    return y / (torch.where(patch == 0, 1.0, patch) * unit)


def _unit_shares(r: Tensor, weight: Tensor) -> Tensor:
    """``Σ_n r_ni`` per unit, shaped to scale ``weight``; 1 where a unit has no share (its update is 0)."""
    sums = _unit_sums(r)
    return torch.where(sums == 0, 1.0, sums).view(-1, *[1] * (weight.dim() - 1))


@_float32_sums
def weighted_instar(x: Tensor, weight: Tensor, r: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
    """Instar with Lagani's weighted-average reduction:

        ``Δw_i = Σ_n r_ni² (x_n − w_i) / Σ_n r_ni``,

    the per-sample updates ``r_ni (x_n − w_i)`` averaged with weights ``r_ni / Σ_n r_ni``, so a unit that wins
    little also moves little. Post-synaptic factor ``r²``, decay ``(Σ_n r_ni²) w_i``, then each unit divided
    by its share ``Σ_n r_ni`` (instead of the sample count).
    """
    _check_pair(x, weight, r, geometry)
    squared = r.square()
    delta = _update(x, weight, squared, _unit_decay(weight, _unit_sums(squared)), geometry,
                    scale * _num_samples(r))
    return delta.div_(_unit_shares(r, weight))


# ----------------------------------------------------------------------------------- loss forms


def hebb_loss(y: Tensor, weight: Tensor) -> Tensor:
    """``L = −⟨ȳ · y⟩`` with ``ȳ = y.detach()``: ``−∇_W L = ⟨y x⟩`` (plain Hebb)."""
    _check_loss(y, weight, y)
    return _loss(y, weight, y, None)


def instar_loss(y: Tensor, weight: Tensor, r: Tensor) -> Tensor:
    """``L = −⟨r · y⟩ + ½ Σ_i (Σ_n r_ni) ‖w_i‖²`` (as ``w·w̄``): ``−∇_W L = ⟨r (x − w)⟩`` (instar)."""
    _check_loss(y, weight, r)
    return _loss(y, weight, r, _unit_decay(weight.detach(), _unit_sums(r.detach())))


def oja_loss(y: Tensor, weight: Tensor) -> Tensor:
    """``L = −⟨ȳ · y⟩ + Σ_i (Σ_n ȳ_ni²) w_i·w̄_i``: ``−∇_W L = ⟨y (x − y w)⟩`` (Oja)."""
    _check_loss(y, weight, y)
    post = y.detach()
    return _loss(y, weight, post, _unit_decay(weight.detach(), _unit_sums(post.square())))


def hpca_loss(y: Tensor, weight: Tensor, fy: Tensor) -> Tensor:
    """``L = −⟨f̄ · y⟩ + Σ_ij tril(F̄ᵀF̄)_ij w_i·w̄_j``: ``−∇_W L`` is the HPCA update."""
    _check_loss(y, weight, fy)
    post = fy.detach()
    return _loss(y, weight, post, _hpca_decay(post, weight.detach()))


def weighted_instar_loss(y: Tensor, weight: Tensor, r: Tensor) -> Tensor:
    """``L = −Σ_i (1/S_i) [Σ_n r̄_ni² y_ni − ½ (Σ_n r̄_ni²) ‖w_i‖²]`` with ``S_i = Σ_n r̄_ni`` (as ``w·w̄``):
    ``−∇_W L`` is the :func:`weighted_instar` update."""
    _check_loss(y, weight, r)
    r = r.detach()
    shares = _unit_shares(r, weight).view(1, -1, *[1] * (r.dim() - 2))
    post = r.square() / shares * _num_samples(r)
    return _loss(y, weight, post, _unit_decay(weight.detach(), _unit_sums(post)))


# ------------------------------------------------------------------------------------- competitions


def wta(y: Tensor) -> Tensor:
    """Hard winner-take-all over units (dim 1): 1 for the largest response, 0 elsewhere."""
    return F.one_hot(y.argmax(1), y.shape[1]).movedim(-1, 1).to(y.dtype)


def soft_wta(y: Tensor, temperature: float) -> Tensor:
    """Soft winner-take-all ``r = softmax(y / T)`` over units (dim 1).

    ``T → 0`` gives hard WTA (ties share), ``T → ∞`` uniform responsibility. Finite for every ``T > 0``: the
    maximum is subtracted before dividing, and half-precision inputs are computed in float32.
    """
    check_temperature(temperature)
    work = y if y.dtype in (torch.float32, torch.float64) else y.float()
    shifted = work - work.amax(1, keepdim=True)
    scaled = torch.where(shifted == 0, 0.0, shifted / temperature)  # 0/T stays 0 even where T underflows
    return torch.softmax(scaled, dim=1).to(y.dtype)


def kwta(y: Tensor, k: int) -> Tensor:
    """k-winners-take-all over units (dim 1): 1 for the ``k`` largest responses, 0 elsewhere."""
    check_k(k, y.shape[1])
    return torch.zeros_like(y).scatter_(1, y.topk(k, dim=1).indices, 1.0)


NONLINEARITIES: dict[str, Callable[[Tensor], Tensor]] = {
    "identity": lambda t: t,
    "relu": torch.relu,
    "tanh": torch.tanh,
}


def unit_norm_(weight: Tensor) -> Tensor:
    """In place: every unit's weight vector (a row of ``weight.flatten(1)``) to Euclidean norm 1."""
    with torch.no_grad():
        return weight.div_(weight.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *[1] * (weight.dim() - 1)))


def apply_update(weight: Tensor, delta: Tensor, lr: float) -> None:
    """In place ``W ← W + lr · ΔW`` for the direct form without an optimizer."""
    if delta.shape != weight.shape:
        raise ValueError(f"delta must have the weight's shape {tuple(weight.shape)}, got {tuple(delta.shape)}")
    with torch.no_grad():
        weight.add_(delta, alpha=check_learning_rate(lr))


# ------------------------------------------------------------------------------ rule specifications
# Small frozen dataclasses that bind a rule to its hyper-parameters, for layers and configs. Each maps
# responses ``y`` to the post-synaptic factor and calls the functions above.


@dataclass(frozen=True)
class Hebb:
    """Plain Hebb, ``Δw_i = ⟨y_i x⟩``."""

    unit_norm: ClassVar[bool] = False

    def update(self, x: Tensor, weight: Tensor, y: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
        return hebb(x, weight, y, scale=scale, **geometry)

    def loss(self, y: Tensor, weight: Tensor, x: Tensor | None = None, **geometry) -> Tensor:
        return hebb_loss(y, weight)


@dataclass(frozen=True)
class Oja:
    """Oja's rule, ``Δw_i = ⟨y_i (x − y_i w_i)⟩``."""

    unit_norm: ClassVar[bool] = False

    def update(self, x: Tensor, weight: Tensor, y: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
        return oja(x, weight, y, scale=scale, **geometry)

    def loss(self, y: Tensor, weight: Tensor, x: Tensor | None = None, **geometry) -> Tensor:
        return oja_loss(y, weight)


@dataclass(frozen=True)
class Competitive:
    """Instar with a competition: ``Δw_i = ⟨r_i (x − w_i)⟩``.

    ``competition``: ``"wta"`` (hard), ``"soft"`` (``r = softmax(y/T)``, Lagani's soft-WTA), ``"kwta"``
    (the ``k`` largest win), or ``"none"`` (``r = y``, Grossberg's instar).
    """

    unit_norm: ClassVar[bool] = False

    competition: str = "wta"
    temperature: float = 1.0
    k: int = 1

    def __post_init__(self) -> None:
        check_choice("competition", self.competition, COMPETITIONS)
        check_temperature(self.temperature)
        check_positive("k", self.k, integer=True)

    def responsibilities(self, y: Tensor) -> Tensor:
        if self.competition == "soft":
            return soft_wta(y, self.temperature)
        if self.competition == "kwta":
            return kwta(y, self.k)
        return wta(y) if self.competition == "wta" else y

    def update(self, x: Tensor, weight: Tensor, y: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
        return instar(x, weight, self.responsibilities(y), scale=scale, **geometry)

    def loss(self, y: Tensor, weight: Tensor, x: Tensor | None = None, **geometry) -> Tensor:
        return instar_loss(y, weight, self.responsibilities(y.detach()))


@dataclass(frozen=True)
class HPCA:
    """Nonlinear Hebbian PCA, ``Δw_i = ⟨f(y_i)(x − Σ_{j≤i} f(y_j) w_j)⟩``; ``f`` in ``NONLINEARITIES``."""

    unit_norm: ClassVar[bool] = False

    f: str = "identity"

    def __post_init__(self) -> None:
        check_choice("f", self.f, NONLINEARITIES)

    def update(self, x: Tensor, weight: Tensor, y: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
        return hpca(x, weight, NONLINEARITIES[self.f](y), scale=scale, **geometry)

    def loss(self, y: Tensor, weight: Tensor, x: Tensor | None = None, **geometry) -> Tensor:
        return hpca_loss(y, weight, NONLINEARITIES[self.f](y.detach()))


@dataclass(frozen=True)
class SoftWTA:
    """Lagani's soft winner-take-all (HebbianLearning's ``eswta``: the ``hwta`` rule with exponential soft-WTA):

        ``s_ni = ((1 + cos(w_i, x_n)) / 2)²``,   ``r_ni = exp(s_ni / T) / Σ_j exp(s_nj / T)``,
        ``Δw_i = Σ_n r_ni² (x_n − w_i) / Σ_n r_ni``        (:func:`weighted_instar`).

    Units compete on the squared raised cosine, so the competition ignores the weights' norms; the weights are
    never renormalised (``unit_norm`` is false) and each unit moves towards the responsibility-weighted mean
    of the inputs it wins. ``y`` is the plain response ``x Wᵀ``; the loss form needs ``x`` for the cosine.
    """

    temperature: float = 0.02
    unit_norm: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_temperature(self.temperature)

    def responsibilities(self, x: Tensor, weight: Tensor, y: Tensor, **geometry) -> Tensor:
        similarity = ((1 + cosine(x, weight, y, **geometry)) / 2).square()
        return soft_wta(similarity, self.temperature)

    @_float32_sums
    def update(self, x: Tensor, weight: Tensor, y: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
        _check_pair(x, weight, y, geometry)
        return weighted_instar(x, weight, self.responsibilities(x, weight, y, **geometry), scale=scale, **geometry)

    def loss(self, y: Tensor, weight: Tensor, x: Tensor | None = None, **geometry) -> Tensor:
        if x is None:
            raise ValueError("SoftWTA.loss needs the input x (its competition uses the cosine of x and w)")
        r = self.responsibilities(x.detach(), weight.detach(), y.detach(), **geometry)
        return weighted_instar_loss(y, weight, r)


# ------------------------------------------------------------------- SoftHebb and Krotov–Hopfield
# Both rules are "Oja with a competition": a post-synaptic factor ``r`` and a decay weighted by the current
# ``u``, ``ΔW = (1/M)[RᵀX − diag(Σ_n r_ni u_ni) W]``, then, as in the authors' code, divided by its largest
# entry ``max|ΔW|`` (the whole layer's), so that the step is set by the learning rate alone.


def lp_responses(x: Tensor, weight: Tensor, p: float, **geometry) -> Tensor:
    """Krotov–Hopfield's currents ``u_i = ⟨sign(w_i)|w_i|^(p−1), x⟩`` (``p = 2``: the plain responses)."""
    if p == 2:
        return responses(x, weight, **geometry)
    return responses(x, weight.sign() * weight.abs().pow(p - 1), **geometry)


def _normalised_oja(x: Tensor, weight: Tensor, r: Tensor, u: Tensor, geometry: dict) -> Tensor:
    """``(RᵀX − diag(Σ_n r_ni u_ni) W) / max|·|``: the competitive Oja update scaled to a largest entry of 1."""
    delta = _update(x, weight, r, _unit_decay(weight, _unit_sums(r * u)), geometry, 1.0)
    return delta.div_(delta.abs().amax().clamp_min(1e-30))


def _normalised_oja_loss(y: Tensor, weight: Tensor, x: Tensor, r: Tensor, u: Tensor, per_unit: Tensor,
                         geometry: dict) -> Tensor:
    """The loss whose gradient is ``−per_unit ⊙ _normalised_oja(...)`` (``r``, ``u`` and the scales constant)."""
    with torch.no_grad():
        peak = _update(x, weight, r, _unit_decay(weight, _unit_sums(r * u)), geometry, 1.0).abs().amax()
        factor = per_unit.view(1, -1, *[1] * (r.dim() - 2)) / peak.clamp_min(1e-30)
        post = r * factor
    return _loss(y, weight, post, _unit_decay(weight.detach(), _unit_sums(post * u)))


def softhebb_responsibilities(u: Tensor, temperature: float) -> Tensor:
    """SoftHebb's post-synaptic factor: ``q = softmax(u / T)`` over units, ``+q`` for the winner (the largest
    ``u``) and ``−q`` for every other unit (the soft anti-Hebbian plasticity of the losers)."""
    q = soft_wta(u, temperature)
    winner = F.one_hot(u.argmax(1), u.shape[1]).movedim(-1, 1).bool()
    return torch.where(winner, q, -q)


def adaptive_rate(weight: Tensor, power: float) -> Tensor:
    """SoftHebb's per-neuron rate factor ``(|‖w_i‖₂ − 1| + 1e-10)^power`` (K,): large far from the unit sphere,
    vanishing on it, so each unit slows down as it converges."""
    return (weight.flatten(1).norm(dim=1) - 1).abs().add_(1e-10).pow_(power)


def krotov_responsibilities(u: Tensor, k: int, delta: float) -> Tensor:
    """Krotov–Hopfield's ranking ``g``: +1 for the unit with the largest current, ``−delta`` for the ``k``-th
    largest, 0 for the rest (over units, dim 1)."""
    check_k(k, u.shape[1])
    ranked = u.topk(k, dim=1).indices
    g = torch.zeros_like(u).scatter_(1, ranked[:, :1], 1.0)
    return g.scatter_(1, ranked[:, k - 1 : k], -delta)


@dataclass(frozen=True)
class SoftHebb:
    """SoftHebb (Journé et al. 2023; the ``softkrotov`` layer of the authors' code, mode 0):

        ``q_ni = softmax_i(u_ni / T)``, ``r_ni = q_ni`` for the winner ``i = argmax u_n``, ``−q_ni`` otherwise,
        ``ΔW = ρ ⊙ D / max|D|``,  ``D_i = Σ_n r_ni (x_n − u_ni w_i)``,  ``ρ_i = (|‖w_i‖ − 1| + 10⁻¹⁰)^power``,

    with ``u = x Wᵀ``. The winner learns Hebbian, the losers soft anti-Hebbian; the decay pulls every unit to
    the unit sphere, and ``ρ`` (the authors' weight-norm-dependent rate, ``lr · ρ_i`` per neuron) stops a unit
    that has reached it. ``temperature`` is the authors' ``1 / t_invert``.
    """

    temperature: float = 1.0
    power: float = 0.5
    unit_norm: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        check_positive("power", self.power)

    @_float32_sums
    def update(self, x: Tensor, weight: Tensor, y: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
        _check_pair(x, weight, y, geometry)
        delta = _normalised_oja(x, weight, softhebb_responsibilities(y, self.temperature), y, geometry)
        return _unit_decay(delta, adaptive_rate(weight, self.power).mul_(scale))

    def loss(self, y: Tensor, weight: Tensor, x: Tensor | None = None, **geometry) -> Tensor:
        if x is None:
            raise ValueError("SoftHebb.loss needs the input x (its update is divided by its largest entry)")
        u = y.detach()
        r = softhebb_responsibilities(u, self.temperature)
        return _normalised_oja_loss(y, weight, x.detach(), r, u, adaptive_rate(weight.detach(), self.power),
                                    geometry)


@dataclass(frozen=True)
class KrotovHopfield:
    """Krotov & Hopfield's competing hidden units (PNAS 2019; their ``Biological_Learning`` code):

        ``u_ni = ⟨sign(w_i)|w_i|^(p−1), x_n⟩``,  ``g_ni = 1`` for the largest ``u_n·``, ``−delta`` for the
        ``k``-th largest, 0 otherwise,   ``ΔW = D / max|D|``,  ``D_i = Σ_n g_ni (x_n − u_ni w_i)``.

    The decay drives every unit to ``‖w_i‖_p = 1``; the anti-Hebbian push on the ``k``-th unit keeps units apart.
    ``y`` is the plain response ``x Wᵀ``; for ``p ≠ 2`` the currents are recomputed from ``x`` (both forms).
    """

    k: int = 2
    delta: float = 0.4
    p: float = 2.0
    unit_norm: ClassVar[bool] = False

    def __post_init__(self) -> None:
        check_positive("k", self.k, integer=True)
        if not (isinstance(self.delta, (int, float)) and math.isfinite(self.delta) and self.delta >= 0):
            raise ValueError(f"delta must be a finite number >= 0, got {self.delta!r}")
        if not (isinstance(self.p, (int, float)) and math.isfinite(self.p) and self.p >= 2):
            raise ValueError(f"p must be a finite number >= 2, got {self.p!r}")

    def currents(self, x: Tensor, weight: Tensor, y: Tensor, **geometry) -> Tensor:
        return y if self.p == 2 else lp_responses(x, weight, self.p, **geometry)

    @_float32_sums
    def update(self, x: Tensor, weight: Tensor, y: Tensor, *, scale: float = 1.0, **geometry) -> Tensor:
        _check_pair(x, weight, y, geometry)
        u = self.currents(x, weight, y, **geometry)
        return _normalised_oja(x, weight, krotov_responsibilities(u, self.k, self.delta), u, geometry).mul_(scale)

    def loss(self, y: Tensor, weight: Tensor, x: Tensor | None = None, **geometry) -> Tensor:
        if x is None:
            raise ValueError("KrotovHopfield.loss needs the input x (its update is divided by its largest entry)")
        x, fixed = x.detach(), weight.detach()
        u = self.currents(x, fixed, y.detach(), **geometry)
        ones = torch.ones(weight.shape[0], dtype=y.dtype, device=y.device)
        return _normalised_oja_loss(y, weight, x, krotov_responsibilities(u, self.k, self.delta), u, ones,
                                    geometry)


COMPETITIONS = ("wta", "soft", "kwta", "none")
Rule = Hebb | Oja | Competitive | HPCA | SoftWTA | SoftHebb | KrotovHopfield
RULES: dict[str, Callable[..., Rule]] = {
    "hebb": Hebb,
    "oja": Oja,
    "instar": functools.partial(Competitive, "none"),
    "wta": functools.partial(Competitive, "wta"),
    "kwta": functools.partial(Competitive, "kwta"),
    "softmax_instar": functools.partial(Competitive, "soft"),  # instar with r = softmax(y/T)
    "softwta": SoftWTA,  # Lagani's soft-WTA, the rule of Table 1's soft-WTA method
    "hpca": HPCA,
    "softhebb": SoftHebb,  # Journé et al. 2023
    "krotov": KrotovHopfield,  # Krotov & Hopfield 2019
}
RULE_OPTIONS = ("temperature", "k", "f", "delta", "p", "power")


def make_rule(name: str, **options) -> Rule:
    """The rule registered as ``name`` in ``RULES``, given those of ``options`` (``temperature``, ``k``, ``f``,
    ``delta``, ``p``, ``power``) that it takes.

    >>> make_rule("softwta", temperature=0.1, k=2)
    SoftWTA(temperature=0.1)
    """
    unknown = sorted(set(options) - set(RULE_OPTIONS))
    if unknown:
        raise ValueError(f"make_rule takes the options {', '.join(RULE_OPTIONS)}, got {', '.join(unknown)}")
    factory = RULES[check_choice("rule", name, RULES)]
    accepted = inspect.signature(factory).parameters
    return factory(**{key: value for key, value in options.items() if key in accepted})

