"""Device choice, and the pipeline on CUDA (those tests run only where a GPU is present)."""

import pytest
import torch

from hebbkit.data import synthetic_images
from hebbkit.lagani import FinetuneConfig, configure, finetune, pretrain
from hebbkit.lagani import run_experiment
from hebbkit.loops import evaluate
from hebbkit.utils import DEVICE_VARIABLE, resolve_device

WIDTH = 0.125
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def test_auto_follows_the_environment_variable(monkeypatch):
    monkeypatch.setenv(DEVICE_VARIABLE, "cpu")
    assert resolve_device("auto") == torch.device("cpu") == resolve_device(None)
    monkeypatch.delenv(DEVICE_VARIABLE)
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize(("variable", "device", "named"), [
    (None, "gpu", "device"), ("nonsense", "auto", DEVICE_VARIABLE),
])
def test_bad_devices_name_their_source(monkeypatch, variable, device, named):
    if variable is not None:
        monkeypatch.setenv(DEVICE_VARIABLE, variable)
    with pytest.raises(ValueError, match=f"^{named} must be 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'"):
        resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="asks for CUDA, which is not available"):
        resolve_device("cuda")


@pytest.fixture(scope="module")
def data():
    return synthetic_images(200, 30, seed=0)


@needs_cuda
def test_hebbian_pretraining_on_cuda_matches_the_cpu(data):
    config = configure("hpca", epochs=1, batch_size=40)
    on_cpu = pretrain("hpca", data.train, config, width=WIDTH, device="cpu", progress=False)
    on_gpu = pretrain("hpca", data.train, config, width=WIDTH, device="cuda", progress=False)
    assert next(on_gpu.parameters()).is_cuda
    for cpu_block, gpu_block in zip(on_cpu.blocks, on_gpu.blocks):
        torch.testing.assert_close(gpu_block.layer.weight.cpu(), cpu_block.layer.weight, atol=1e-3, rtol=1e-3)


@needs_cuda
def test_finetuning_and_the_experiment_loop_run_on_cuda(data, tmp_path):
    net = pretrain("hpca", data.train, configure("hpca", batch_size=40), width=WIDTH, device="cuda", progress=False)
    model, history = finetune(net, 2, data.train, FinetuneConfig(epochs=3, batch_size=32, augment=True),
                              progress=False)  # on the network's device
    assert next(model.parameters()).is_cuda and len(history) == 3
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert 0 <= evaluate(model, data.test) <= 100
    results = run_experiment("smoke", data=data, device="cuda", out=tmp_path, progress=False).records
    assert len(results) == 4 * 2 * 2 and results["val_accuracy"].between(0, 100).all()
