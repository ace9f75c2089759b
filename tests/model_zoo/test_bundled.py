"""Bundled zoo weights load offline, reach their recorded accuracy on the embedded test split,
and record the FLOPs and params of the model they build."""

import pytest
import timm
import torch

import mobile_cv
import model_zoo
from mobile_cv.data import build_dataset, build_loader_from_dataset
from mobile_cv.engine import evaluate


@pytest.mark.parametrize("entry", model_zoo.BUNDLED, ids=[e.name for e in model_zoo.BUNDLED])
def test_bundled_model_reaches_its_recorded_accuracy(entry):
    assert entry.num_classes == 10 and entry.in_chans == 1  # trained on the embedded MNIST digits
    model = model_zoo.create_model(entry.name, pretrained=True)  # sha256-checked, no network
    test = build_dataset("embedded_mnist", "test", input_size=entry.input_size)
    loader = build_loader_from_dataset(test, batch_size=100, training=False)
    result = evaluate(model, loader, device=torch.device("cpu"))
    assert result["images"] == 500
    assert result["acc1"] == pytest.approx(entry.top1, abs=0.01)
    assert result["acc5"] == pytest.approx(entry.top5, abs=0.01)


def test_bundled_model_through_timm_gives_the_same_logits():
    entry = model_zoo.BUNDLED[0]
    ours = model_zoo.create_model(entry.name, pretrained=True).eval()
    theirs = timm.create_model(entry.name.lower(), pretrained=True).eval()
    x = torch.randn(2, 1, entry.input_size, entry.input_size)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


@pytest.mark.parametrize("entry", model_zoo.BUNDLED, ids=[e.name for e in model_zoo.BUNDLED])
def test_bundled_entry_records_the_flops_and_params_of_its_model(entry):
    model = model_zoo.create_model(entry.name)  # the entry's arch file, num_classes and in_chans
    assert model.input_size == entry.input_size
    flops, params = mobile_cv.count_flops_params(model, entry.input_size)
    assert flops == pytest.approx(entry.flops_m, rel=1e-3)
    assert params == pytest.approx(entry.params_m, rel=1e-3)
    # the count depends on the input size, so the entry's number is the one at its input size
    assert mobile_cv.count_flops_params(model, entry.input_size + 8)[0] > 1.2 * flops
