"""The fast paths compute what the plain float32 path computes: augmentation on stored uint8 images (exactly),
bfloat16 autocast in fine-tuning, scoring and VAE pre-training (to bf16's tolerance), and the precision setting
in the results key only when switched on."""

from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

from hebbkit.data import synthetic_images
from hebbkit.lagani import PRESETS, Classifier, FinetuneConfig, LaganiNet, finetune
from hebbkit.lagani import experiment
from hebbkit.lagani.net import VAE, vae_loss
from hebbkit.lagani.pretraining import pretrain
from hebbkit.loops import CROP_PADDING, augment, autocast, check_precision, predict, sgd
from hebbkit.utils import seed_everything

pytestmark = pytest.mark.usefixtures("one_thread")
WIDTH = 0.125
# bf16 keeps 8 bits of mantissa: one rounding is 2**-9 relative; a few layers of sums stay within a few percent
BF16_RELATIVE = 0.05


@pytest.fixture(scope="module")
def data():
    return synthetic_images(128, 64, seed=0)


def reference_augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The textbook float path: flip with probability 1/2, reflect-pad, crop each image at its own offset."""
    n, _, height, width = x.shape
    flip = torch.rand(n, generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(x, (CROP_PADDING,) * 4, mode="reflect")
    dy, dx = torch.randint(0, 2 * CROP_PADDING + 1, (2, n), generator=generator)
    return torch.stack([padded[i, :, dy[i] : dy[i] + height, dx[i] : dx[i] + width] for i in range(n)])


def test_augmenting_stored_uint8_images_then_standardising_equals_the_float_path(data):
    images = data.train.subset(slice(0, 40))
    fast = replace(images, images=augment(images.images, torch.Generator().manual_seed(3))).float()
    plain = reference_augment(images.float(), torch.Generator().manual_seed(3))
    assert fast.dtype == torch.float32 and torch.equal(fast, plain)  # bit for bit


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def test_bf16_forward_and_one_sgd_step_match_float32_with_float32_master_weights(data):
    net = LaganiNet(width=WIDTH)
    x, y = data.train.float()[:32], data.train.labels[:32]
    models = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(0)
        model = Classifier(net, 3, dropout=0.0)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
        with autocast(torch.device("cpu"), precision):
            logits = model(x)
            loss = F.cross_entropy(logits, y)
        loss.backward()
        optimizer.step()
        models[precision] = (model, logits, loss)
    (plain, plain_logits, plain_loss), (fast, fast_logits, fast_loss) = models["float32"], models["bfloat16"]
    assert fast_logits.dtype == torch.bfloat16 and fast_loss.dtype == torch.float32
    assert relative(fast_logits, plain_logits) < BF16_RELATIVE
    assert abs(fast_loss.item() - plain_loss.item()) < BF16_RELATIVE * plain_loss.item()
    before = Classifier(net, 3, dropout=0.0).state_dict()
    for name, weight in fast.named_parameters():
        assert weight.dtype == torch.float32  # master weights stay float32
        step_fast = weight.detach() - before[name]
        step_plain = dict(plain.named_parameters())[name].detach() - before[name]
        if weight.dim() > 1:  # a bias before BN gets a near-zero gradient that no relative tolerance fits
            # the step itself (not the weights): bf16 gradients through BN's backward, within 20 %, same direction
            assert relative(step_fast, step_plain) < 0.2, name
            assert F.cosine_similarity(step_fast.flatten(), step_plain.flatten(), dim=0) > 0.98, name


def test_bf16_fine_tuning_and_scoring_agree_with_float32(data):
    net = pretrain("hpca", data.train, width=WIDTH, progress=False)
    config = FinetuneConfig(epochs=2, batch_size=32, lr=1e-2, decay_from=1, augment=True)
    results = {p: finetune(net, 2, data.train, config, seed=1, val=data.test, progress=False, precision=p)
               for p in ("float32", "bfloat16")}
    (plain, plain_history), (fast, fast_history) = results["float32"], results["bfloat16"]
    for a, b in zip(plain_history, fast_history):
        assert b["train_loss"] == pytest.approx(a["train_loss"], rel=BF16_RELATIVE)
    # the same trained classifier scored both ways: predictions agree but for near-ties
    agree = (predict(plain, data.test) == predict(plain, data.test, precision="bfloat16")).float().mean()
    assert agree >= 0.95
    assert all(p.dtype == torch.float32 for p in fast.parameters())


def test_bf16_vae_loss_matches_float32_and_pretraining_runs(data):
    seed_everything(0)
    vae = VAE(LaganiNet(width=WIDTH)).eval()
    x = data.train.float()[:16]
    losses = {}
    for precision in ("float32", "bfloat16"):
        torch.manual_seed(1)  # the same latent noise
        with autocast(torch.device("cpu"), precision):
            outputs = vae(x)
        losses[precision] = vae_loss(x, *(o.float() for o in outputs)).item()
    assert losses["bfloat16"] == pytest.approx(losses["float32"], rel=BF16_RELATIVE)
    net = pretrain("vae", data.train, experiment.PRESETS["smoke"].config("vae"), width=WIDTH, progress=False,
                   precision="bfloat16")
    assert all(torch.isfinite(p).all() and p.dtype == torch.float32 for p in net.parameters())


def test_precision_is_in_the_results_key_only_when_switched_on(data):
    quick = PRESETS["quick"]
    dataset = synthetic_images(100, 10, seed=0)
    plain = experiment.results_key(quick, "hpca", dataset)
    legacy = experiment.settings_hash(  # the key's formula before the setting existed
        quick.finetune, quick.pretrain, type(quick.config("hpca")).__name__, quick.config("hpca"),
        experiment.make_method("hpca").revision, quick.width, quick.select_val, quick.test_images,
        experiment._probe_settings(quick, "hpca"), experiment.fingerprint(dataset.train), experiment.PROTOCOL_VERSION)
    assert plain == legacy
    assert experiment.results_key(replace(quick, precision="bfloat16"), "hpca", dataset) != plain


@pytest.mark.parametrize("bad", ["fp16", "float16", "", None])
def test_an_unknown_precision_is_named(bad):
    with pytest.raises(ValueError, match="precision must be one of float32, bfloat16"):
        check_precision(bad)
    with pytest.raises(ValueError, match="precision"):
        replace(PRESETS["smoke"], precision=bad)


@pytest.mark.parametrize("project", [False, True])
def test_pooling_before_the_relu_gives_the_same_values_and_gradients_bit_for_bit(project):
    torch.manual_seed(0)
    net = LaganiNet(width=WIDTH)
    block = net.blocks[0]
    block.project = project
    # values on a coarse grid: many ties inside pooling windows, and all-negative windows
    x = (torch.randn(8, 3, 32, 32) * 2).round().div(2).requires_grad_()
    reference = x.detach().clone().requires_grad_()
    out = block(x)
    expected = block.norm(F.max_pool2d(F.relu(block.response(reference)), 2))  # the textbook order
    assert torch.equal(out, expected)
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    assert torch.equal(x.grad, reference.grad)


def test_multi_tensor_sgd_is_the_per_parameter_loop_bit_for_bit_on_channels_last_weights():
    # a wide layer, a channels-last conv weight with a contiguous gradient (the layout fine-tuning produces, which
    # PyTorch's fused CPU SGD gets wrong), an odd tail, a bias
    shapes = [(2048, 1152), (96, 64, 3, 3), (1_000_003,), (10,)]
    finals = []
    for multi in (False, True):
        torch.manual_seed(0)
        params = [torch.randn(shape) for shape in shapes]
        params[1] = params[1].contiguous(memory_format=torch.channels_last)
        params = [p.requires_grad_() for p in params]
        options = {"lr": 4e-3, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-2}
        optimizer = sgd(params, **options) if multi else torch.optim.SGD(params, foreach=False, **options)
        generator = torch.Generator().manual_seed(1)
        for step in range(5):
            for group in optimizer.param_groups:
                group["lr"] = 4e-3 * 0.5**step  # the schedule's changes of rate
            for p in params:
                p.grad = torch.randn(p.shape, generator=generator)  # contiguous
            optimizer.step()
        finals.append(params)
    assert all(torch.equal(a, b) for a, b in zip(*finals))
