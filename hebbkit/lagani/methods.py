"""The pre-training methods of Table 1, each with its own settings: the registry ``METHODS``, the only list of them.

A method is one :class:`Method` entry: its network (:class:`NetSpec`), its default settings (a small frozen
config, the reference code's values), the function that pre-trains it and, for a Hebbian method, the name of its
rule in :data:`hebbkit.rules.RULES`. Presets replace a method's settings by name (``Preset.configs``), and the
key of a method's results and cached networks holds the settings every method shares, that method's own config
and the data's fingerprint, so that changing one method's settings, or adding a method, leaves every other
method's results valid. The command line reads this module, so it imports nothing heavy (no torch).

Adding a Hebbian method: its rule in ``hebbkit/rules.py`` (with its name in ``RULES``), and one entry here with
its config (a :class:`HebbianConfig`, or a subclass for the rule's own settings, whose :meth:`rule_options` are
passed to the rule). A baseline of another kind names its own pre-training function (``"module:function"``, with
:func:`~hebbkit.lagani.pretraining.pretrain_vae`'s signature).

>>> METHODS["softwta"].config.temperature
0.02
>>> hebbian_methods()
('hpca', 'softwta', 'softhebb', 'krotov')
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from ..checks import check_choice, check_positive


@dataclass(frozen=True)
class NetSpec:
    """Which of the reference's networks a method uses.

    ``hebbian``: no biases and :class:`~.net.ModifiedBatchNorm2d`/``1d`` after blocks 3–5 (the Hebbian net; plain
    BN there when its config's ``modified_bn`` is off); else biases and plain BN (the backprop net). ``project``:
    layers output ``w·x/‖w‖`` (soft-WTA's ``vector_proj2d``). ``whiten``: ZCA-whiten the input (fitted on the
    pre-training images, stored with the weights; its config gives ``zca_eps``).
    """

    hebbian: bool = False
    project: bool = False
    whiten: bool = False
    modified_bn: bool = True


def _check_numbers(config: object, positive: tuple[str, ...] = (), integers: tuple[str, ...] = ()) -> None:
    for name in positive:
        check_positive(name, getattr(config, name))
    for name in integers:
        check_positive(name, getattr(config, name), integer=True)


@dataclass(frozen=True)
class PretrainConfig:
    """Settings every method shares. ``num_images``: pre-training images (``None`` = all the pool).
    ``statistics_images``: the first images whose average batch statistics become the BN running statistics
    after pre-training (the reference keeps the running averages of training)."""

    num_images: int | None = None
    statistics_images: int = 10_000

    def __post_init__(self) -> None:
        _check_numbers(self, integers=("statistics_images",))
        if self.num_images is not None:
            check_positive("num_images", self.num_images, integer=True)


@dataclass(frozen=True)
class NoSettings:
    """A method that does not pre-train (``supervised``, ``random``)."""


@dataclass(frozen=True)
class HebbianConfig:
    """Joint Hebbian training of all blocks: ``epochs`` at ``batch_size``, SGD step ``lr`` on each layer's ΔW
    (divided by √fan-in with ``fan_in_step``, the reference's ``adaptive_step``); ``modified_bn``: the reference's
    modified BN after blocks 3–5 (off: plain BN). With more than one epoch, the epoch whose Hebbian class-mean
    classifier scores best on the validation images is kept."""

    epochs: float = 20.0
    batch_size: int = 64
    lr: float = 1e-2
    modified_bn: bool = True
    fan_in_step: bool = False

    def __post_init__(self) -> None:
        _check_numbers(self, positive=("epochs", "lr"), integers=("batch_size",))

    def rule_options(self) -> dict:
        """The keyword arguments of the method's rule."""
        return {}


@dataclass(frozen=True)
class HPCAConfig(HebbianConfig):
    """HPCA: the nonlinearity ``f`` of ``f(y)``; the step divided by √fan-in, as the reference does."""

    nonlinearity: str = "relu"
    fan_in_step: bool = True

    def rule_options(self) -> dict:
        return {"f": self.nonlinearity}


@dataclass(frozen=True)
class SoftWTAConfig(HebbianConfig):
    """Lagani's soft-WTA: softmax ``temperature``; ``zca_eps``, the whitening constant of its input."""

    temperature: float = 0.02
    zca_eps: float = 1e-2

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_numbers(self, positive=("temperature", "zca_eps"))

    def rule_options(self) -> dict:
        return {"temperature": self.temperature}


@dataclass(frozen=True)
class SoftHebbConfig(HebbianConfig):
    """SoftHebb (Journé et al. 2023) in Lagani's network: the authors' one epoch at batch 10, softmax
    ``temperature`` 1 and rate exponent ``power`` 0.5 (their first block's), ``lr`` 0.01 (their deepest block's)
    times each unit's adaptive rate; the update is already scaled to a largest entry of 1 (no √fan-in step)."""

    epochs: float = 1.0
    batch_size: int = 10
    lr: float = 1e-2
    temperature: float = 1.0
    power: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_numbers(self, positive=("temperature", "power"))

    def rule_options(self) -> dict:
        return {"temperature": self.temperature, "power": self.power}


@dataclass(frozen=True)
class KrotovConfig(HebbianConfig):
    """Krotov–Hopfield in Lagani's network: the ``k``-th ranked unit pushed away with strength ``delta``, currents
    from ``sign(w)|w|^(p−1)``; biopytorch's best settings for a first conv layer (p 2, k 9, Δ 0.08, starting rate
    0.007), one epoch."""

    epochs: float = 1.0
    lr: float = 7e-3
    k: int = 9
    delta: float = 0.08
    p: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_numbers(self, positive=("p",), integers=("k",))

    def rule_options(self) -> dict:
        return {"k": self.k, "delta": self.delta, "p": self.p}


@dataclass(frozen=True)
class VAEConfig:
    """The reference's VAE: ``epochs`` of SGD with Nesterov momentum 0.9 at ``lr``, halved every epoch from
    ``decay_from``, batch ``batch_size``, loss ``MSE + beta · KL``, ``latent_dim`` latents; the epoch with the best
    validation loss is kept."""

    epochs: float = 20.0
    batch_size: int = 64
    lr: float = 1e-3
    decay_from: int = 10
    beta: float = 0.5
    latent_dim: int = 256

    def __post_init__(self) -> None:
        _check_numbers(self, positive=("epochs", "lr", "beta"), integers=("batch_size", "latent_dim"))
        if isinstance(self.decay_from, bool) or not isinstance(self.decay_from, int) or self.decay_from < 0:
            raise ValueError(f"decay_from must be an integer >= 0, got {self.decay_from!r}")


@dataclass(frozen=True)
class Method:
    """A pre-training method. ``pretrain``: ``"module:function"`` that pre-trains its network (``None``: it is
    not pre-trained); ``rule``: its Hebbian rule's name in :data:`hebbkit.rules.RULES`; ``trains_trunk``:
    whether fine-tuning trains the blocks (``False``: only the classifier learns, on frozen features);
    ``in_presets``: run by the presets (else only when asked for); ``revision``: raise it when a change to the
    code alters this method's results, so that its stored results and cached networks are not reused."""

    name: str
    display: str
    net: NetSpec
    config: object = NoSettings()
    pretrain: str | None = None
    rule: str | None = None
    trains_trunk: bool = True
    in_presets: bool = True
    revision: int = 1

    @property
    def hebbian(self) -> bool:
        return self.net.hebbian


HEBBIAN = "hebbkit.lagani.pretraining:pretrain_hebbian"
METHODS: dict[str, Method] = {method.name: method for method in (
    Method("hpca", "HPCA", NetSpec(hebbian=True), HPCAConfig(), HEBBIAN, rule="hpca"),
    Method("softwta", "softWTA", NetSpec(hebbian=True, project=True, whiten=True), SoftWTAConfig(), HEBBIAN,
           rule="softwta"),
    Method("vae", "VAE", NetSpec(), VAEConfig(), "hebbkit.lagani.pretraining:pretrain_vae"),
    Method("supervised", "supervised", NetSpec()),
    Method("random", "random", NetSpec(), trains_trunk=False, in_presets=False),
    Method("softhebb", "SoftHebb", NetSpec(hebbian=True), SoftHebbConfig(), HEBBIAN, rule="softhebb",
           in_presets=False),
    Method("krotov", "Krotov-Hopfield", NetSpec(hebbian=True), KrotovConfig(), HEBBIAN, rule="krotov",
           in_presets=False),
)}
DISPLAY_NAMES = {name: method.display for name, method in METHODS.items()}


def make_method(method: str) -> Method:
    """The :class:`Method` registered as ``method`` in ``METHODS``."""
    return METHODS[check_choice("method", method, METHODS)]


def check_method(method: str) -> str:
    """Return ``method`` if it is registered in ``METHODS``, else raise ``ValueError``."""
    return make_method(method).name


def preset_methods() -> tuple[str, ...]:
    """The methods the presets run (all but those registered with ``in_presets=False``)."""
    return tuple(name for name, method in METHODS.items() if method.in_presets)


def hebbian_methods() -> tuple[str, ...]:
    """The methods that pre-train a Hebbian network."""
    return tuple(name for name, method in METHODS.items() if method.hebbian)


def check_config(method: str, config: object) -> object:
    """Return ``config`` if it is a config of ``method``'s type, else raise ``ValueError``."""
    expected = type(make_method(method).config)
    if type(config) is not expected:
        raise ValueError(f"the settings of method {method!r} must be a {expected.__name__}, got {config!r}")
    return config


def configure(method: str, **changes) -> object:
    """``method``'s default config with ``changes`` (unknown names are an error naming the accepted ones).

    >>> configure("vae", epochs=1).epochs
    1
    """
    default = make_method(method).config
    known = {field.name for field in fields(default)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise ValueError(f"method {method!r} has no setting {', '.join(unknown)}; its settings are "
                         f"{', '.join(sorted(known)) or 'none'}")
    return type(default)(**{**{name: getattr(default, name) for name in known}, **changes})
