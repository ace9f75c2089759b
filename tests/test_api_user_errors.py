"""The Python API across the library (arch, flops, search, engine): what a caller can get wrong raises
a UserError naming the argument or key."""

import pytest

from mobile_cv.errors import UserError
from tests.helpers import TINY_ARCH, TINY_SPACE


def _api_cases():
    import mobile_cv
    from mobile_cv.arch.arch_registry import arch_def_names
    from mobile_cv.engine import build_sgd
    from mobile_cv.search import CostLoss, build_supernet

    model = mobile_cv.build_model(TINY_ARCH, num_classes=10, in_chans=1)
    net = build_supernet(TINY_SPACE, num_classes=10, in_chans=1)
    return {
        "num_classes": (lambda: mobile_cv.build_model(TINY_ARCH, num_classes=-3), "num_classes"),
        "in_chans": (lambda: mobile_cv.build_model(TINY_ARCH, in_chans=0), "in_chans"),
        "global_pool": (lambda: mobile_cv.build_model(TINY_ARCH, global_pool="max"), "global_pool"),
        "unknown_override": (lambda: mobile_cv.build_model(TINY_ARCH, width=2), "width"),
        "flops_input_size": (lambda: mobile_cv.count_flops_params(model, 0), "input_size"),
        "temperature": (lambda: net.set_temperature(0.0), "temperature"),
        "sampled_kind": (lambda: net.sample_mixing(hard=["resolutions"]), "resolutions"),
        "cost_kind": (lambda: net.expected_cost("latency"), "kind"),
        "cost_form": (lambda: CostLoss("targets", 1.0), "targets"),
        "arch_kind": (lambda: arch_def_names("models"), "models"),
        "negative_lr": (lambda: build_sgd(model, lr=-0.5, momentum=0.9, weight_decay=0.0), "SOLVER.BASE_LR"),
        "search_decay": (
            lambda: build_sgd(model, lr=0.1, momentum=0.9, weight_decay=-1.0, keys="SEARCH.WEIGHTS"),
            "SEARCH.WEIGHTS.WEIGHT_DECAY",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["num_classes", "in_chans", "global_pool", "unknown_override", "flops_input_size", "temperature",
     "sampled_kind", "cost_kind", "cost_form", "arch_kind", "negative_lr", "search_decay"],
)  # fmt: skip
def test_python_api_refuses_a_users_value_with_a_user_error(case):
    """What a caller of the library can get wrong raises a UserError (the tools print it in one
    line) naming the argument or key; it is still the built-in type it specialises."""
    call, word = _api_cases()[case]
    with pytest.raises(UserError) as e:
        call()
    assert isinstance(e.value, (ValueError, TypeError, KeyError)), type(e.value)
    assert word in str(e.value)
