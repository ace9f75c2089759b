"""Bad input gets an error that names the place and the fix."""

import pytest
import torch
from torch import nn

import arch_defs
import mobile_cv
from mobile_cv import ArchDefError, RegistryError, WeightsMismatchError


def arch(*rows, **top):
    return {"input_size": 32, "blocks": [[["conv_k3", 8, 2, 1]], list(rows)], **top}


def test_unknown_op_names_place_and_closest_names():
    with pytest.raises(ArchDefError) as e:
        mobile_cv.build_model(arch(["ir_k3", 8, 1, 1], ["ir_k3_sse", 16, 2, 1]))
    msg = str(e.value)
    assert "stage 1, row 1" in msg and '"ir_k3_sse"' in msg and '"ir_k3_se"' in msg


@pytest.mark.parametrize(
    "row,needle",
    [
        (["ir_k3", 16, 1], "has 3 fields, needs at least 4"),
        ("ir_k3", "a row must be a list"),
        ([3, 16, 1, 1], "field 0 (op)"),
        (["ir_k3", "16", 1, 1], "field 1 (out_channels) must be a positive int"),
        (["ir_k3", 0, 1, 1], "field 1 (out_channels) must be a positive int"),
        (["ir_k3", -8, 1, 1], "field 1 (out_channels) must be a positive int"),
        (["ir_k3", 16, 0, 1], "field 2 (stride) must be a positive int"),
        (["ir_k3", 16, -2, 1], "field 2 (stride) must be a positive int"),
        (["ir_k3", 16, 1, 0], "field 3 (repeats) must be a positive int"),
        (["ir_k3", 16, 1, 1, [1]], "field 4 must be a dict"),
    ],
)
def test_malformed_rows(row, needle):
    with pytest.raises(ArchDefError) as e:
        mobile_cv.build_model(arch(row))
    assert needle in str(e.value) and "stage 1, row 0" in str(e.value)


def test_kwarg_a_block_does_not_accept_raises():
    with pytest.raises(ArchDefError) as e:
        mobile_cv.build_model(arch(["ir_k3", 16, 1, 1, {"expnsion": 4}]))
    msg = str(e.value)
    assert "'expnsion'" in msg and "'expansion'" in msg and "stage 1, row 0" in msg


def test_kwarg_fixed_by_op_name_raises():
    with pytest.raises(ArchDefError, match="fixed by the op name"):
        mobile_cv.build_model(arch(["ir_k3", 16, 1, 1, {"kernel_size": 5}]))


def test_bad_kwarg_value_is_wrapped_with_place():
    with pytest.raises(ArchDefError, match=r"stage 1, row 0.*expansion must be a positive number"):
        mobile_cv.build_model(arch(["ir_k3", 16, 1, 1, {"expansion": -1}]))
    with pytest.raises(ArchDefError, match=r"stage 1, row 0.*divisible by groups"):
        mobile_cv.build_model(arch(["ir_k3", 15, 1, 1, {"expansion": 1, "pwl_groups": 2}]))


def test_unused_basic_args_key_raises():
    with pytest.raises(ArchDefError, match="basic_args key 'widht_divisor'"):
        mobile_cv.build_model(arch(["ir_k3", 16, 1, 1], basic_args={"widht_divisor": 8}))


def test_bad_top_level():
    with pytest.raises(ArchDefError, match="unknown key 'block'"):
        mobile_cv.build_model({"block": []})
    with pytest.raises(ArchDefError, match="stage 1 must be a non-empty list"):
        mobile_cv.build_model({"blocks": [[["conv_k3", 8, 2, 1]], []]})
    with pytest.raises(ArchDefError, match="input_size"):
        mobile_cv.build_model(arch(["ir_k3", 16, 1, 1], input_size=0))


def test_unknown_build_model_override():
    with pytest.raises(TypeError, match="'width_multiplier'.*width_mult"):
        mobile_cv.build_model("FBNetV2_F1", width_multiplier=2)


def test_registering_an_op_twice_raises():
    with pytest.raises(RegistryError, match='"ir_k3" is already registered'):
        mobile_cv.OPS.register("ir_k3", lambda i, o, s: nn.Identity())
    assert mobile_cv.OPS.get("ir_k3") is not None


def test_registering_an_arch_twice_and_unknown_arch():
    with pytest.raises(RegistryError, match="already registered"):
        arch_defs.register("FBNetV2_F1", arch_defs.get("FBNetV2_F1"))
    with pytest.raises(RegistryError, match='did you mean "FBNetV2_F1"'):
        arch_defs.get("FBNetV2_F11")


def test_checkpoint_that_does_not_fit_lists_first_mismatches():
    model = mobile_cv.build_model("FBNetV2_F1", num_classes=10)
    # shift every value, so any key the load copied before failing would show
    f4 = mobile_cv.build_model("FBNetV2_F4", num_classes=10).state_dict()
    other = {k: v + 1 if v.is_floating_point() else v for k, v in f4.items()}
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fits = [k for k in other if k in before and other[k].shape == before[k].shape and before[k].is_floating_point()]
    assert len(fits) >= 8  # keys a partial load (torch's own load_state_dict) would copy
    with pytest.raises(WeightsMismatchError) as e:
        mobile_cv.load_state_dict(model, other)
    msg = str(e.value)
    assert (
        "another shape" in msg
        and "backbone.stages.xif0_0.conv.weight weights [16, 3, 3, 3] vs model [8, 3, 3, 3]" in msg
    )
    assert "missing" in msg or "unexpected" in msg
    after = model.state_dict()
    assert after.keys() == before.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []  # nothing half-loaded


def test_checkpoint_with_other_num_classes():
    model = mobile_cv.build_model("FBNetV2_F1", num_classes=10)
    sd = mobile_cv.build_model("FBNetV2_F1", num_classes=1000).state_dict()
    with pytest.raises(WeightsMismatchError, match=r"head.conv.weight weights \[1000"):
        mobile_cv.load_state_dict(model, sd)
