"""The builder against the outside world: the public model table, the published
checkpoint layout, and outputs of the reference implementation."""

import json
import os

import pytest
import torch
from conftest import DATA
from seeded_weights import seeded_input, seeded_state_dict

import arch_defs
import mobile_cv
from mobile_cv.arch_def import to_jsonable

PUBLISHED = json.load(open(os.path.join(DATA, "published_models.json")))["models"]
CHECKPOINT_KEYS = json.load(open(os.path.join(DATA, "checkpoint_keys.json")))
REFERENCE_DEFS = json.load(open(os.path.join(DATA, "arch_defs.json")))


@pytest.mark.parametrize("entry", PUBLISHED, ids=[m["name"] for m in PUBLISHED])
def test_flops_params_match_published_table(entry):
    model = mobile_cv.build_model(entry["name"])
    flops, params = mobile_cv.count_flops_params(model, entry["resolution"])
    # the issue asks for 0.5%; the conventions reproduce the table to rounding
    assert flops == pytest.approx(entry["flops_m"], rel=1e-6)
    assert params == pytest.approx(entry["params_m"], rel=1e-5)  # table rounds fbnet_a/b/c to 1e-5 M


@pytest.mark.parametrize("name", sorted(REFERENCE_DEFS))
def test_python_arch_defs_equal_reference_json(name):
    assert to_jsonable(arch_defs.get(name)) == REFERENCE_DEFS[name]


@pytest.mark.parametrize("name", sorted(CHECKPOINT_KEYS))
def test_state_dict_layout_matches_published_checkpoints(name):
    own = [(k, list(v.shape)) for k, v in mobile_cv.build_model(name).state_dict().items()]
    ref = [(k, list(s)) for k, s in CHECKPOINT_KEYS[name]]
    assert own == ref  # same keys, same shapes, same order


def test_published_checkpoint_layout_loads_strict():
    model = mobile_cv.build_model("FBNetV2_F1")
    fake = {
        k: torch.zeros(s, dtype=torch.long if k.endswith("num_batches_tracked") else torch.float32)
        for k, s in CHECKPOINT_KEYS["FBNetV2_F1"]
    }
    model.load_state_dict({k: v for k, v in fake.items()}, strict=True)


def test_golden_sample_fbnetv2_f4():
    golden = torch.load(os.path.join(DATA, "equiv_fbnetv2_f4.pt"), weights_only=True)
    state = {k: v.float() if v.is_floating_point() else v for k, v in golden["state_dict"].items()}
    model = mobile_cv.build_model(golden["arch"], num_classes=golden["num_classes"]).eval()
    mobile_cv.load_state_dict(model, state, strict=True)
    with torch.no_grad():
        logits = model(golden["input"].float())
    torch.testing.assert_close(logits, golden["logits"].float(), atol=1e-4, rtol=0)


REFERENCE_LOGITS = os.path.join(DATA, "reference_logits.json")


@pytest.mark.parametrize("name", sorted(CHECKPOINT_KEYS))
def test_reference_implementation_logits(name):
    """fbnet_a/b/c match bit for bit; FBNetV2 to ~1e-13 relative (hard-sigmoid divides by 6
    where the reference multiplies by 1/6: one ulp)."""
    ref = json.load(open(REFERENCE_LOGITS))["models"][name]
    model = mobile_cv.build_model(name, num_classes=ref["num_classes"]).double().eval()
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=0))
    with torch.no_grad():
        logits = model(seeded_input(ref["resolution"], seed=1, batch=2))
    expected = torch.tensor(ref["logits"], dtype=torch.float64)
    torch.testing.assert_close(logits, expected, rtol=1e-9, atol=1e-9 * expected.abs().max().item())
