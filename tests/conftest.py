import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "tests", "data")
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "tests"))

torch.set_num_threads(2)

# ``python KILL_AT_STEP N tools/x.py ARGS``: the tool, SIGKILLed before its N-th step (a hook).
KILL_AT_STEP = os.path.join(ROOT, "tests", "kill_at_step.py")
# ``[*TORCHRUN, tools/x.py, ARGS]``: the tool in two processes on this machine (DistributedDataParallel)
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]

# the smallest search space the tool tests search: 16 px, two resolutions, a block-type choice
TINY_SPACE = {
    "input_size": 16,
    "search": {"resolution": [8, 16]},
    "blocks": [
        [["masked-channel", 8, 2, 1, {"op": "conv_k3_hs", "channels": [4, 8]}]],
        [["choice", 16, 2, 1, {"ops": ["ir_k3", "skip"], "channels": [8, 16], "expansion": [1, 2]}]],
    ],
}


# The long end-to-end runs (each tens of seconds to minutes on 2 cores: paper-scale searches, tools
# killed and resumed, torchrun, torch.compile, the GPU check's script): marked ``e2e`` and run by
# ``make test-e2e``, CI's second step, so that ``make test`` stays within 8 minutes. A node id
# prefix each (every parametrization of a test), or one parametrization (``name[id]``).
E2E_TESTS = (
    "test_search_tool.py::test_paper_scale_f_space_search_derives_within_the_target",
    "test_search_tool.py::test_paper_scale_latency_budgeted_search_of_the_f_space",
    "test_search_tool.py::test_target_form_lands_the_derived_flops_near_the_target_on_the_demo_space",
    "test_search_tool.py::test_sigkill_mid_epoch_then_resume_gives_the_same_alpha_and_arch",
    "test_search_tool.py::test_torchrun_two_processes_end_with_the_same_alpha",
    "test_search_tool.py::test_derive_a_family_from_one_finished_search",
    "test_train_tools.py::test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run",
    "test_train_tools.py::test_torchrun_two_processes_write_one_run_with_identical_weights",
    "test_mixed_precision.py::test_sigkill_then_resume_is_bit_exact",
    "test_mixed_precision.py::test_compiled_training_saves_the_plain_model",
    "test_mixed_precision.py::test_compiled_search_runs_within_the_recompile_limit",
    "test_faults.py::test_sigkill_during_checkpoint_write",
    "test_faults.py::test_sigint_and_sigterm_stop_with_one_line",
    "test_faults.py::test_search_memory_estimate_matches_a_measured_search_step",
    "test_faults.py::test_memory_estimate_matches_a_measured_step",
    "test_cost_kinds.py::test_a_cost_kind_registered_by_a_user_is_searched_with",
    "test_gpu_check.py::test_gpu_check_runs_on_cpu",
    "test_executorch.py::test_int8_pte_of_the_bundled_model_keeps_top1_on_the_held_out_digits",
    "test_executorch.py::test_tool_exports_a_searched_arch_with_its_weights_to_executorch",
    "test_latency.py::test_executorch_table_of_a_small_space",
    "test_executorch.py::test_fp32_pte_matches_eager_in_executorch[FBNetV2_F1]",
    "test_configs_run.py::test_config_runs_one_step[search_imagenet.yaml]",
    "test_configs_run.py::test_config_runs_one_step[search_imagenet_latency.yaml]",
)


@pytest.hookimpl(tryfirst=True)  # before -m deselects: every collected test is seen
def pytest_collection_modifyitems(config, items):
    modules = {}
    for item in items:
        node = item.nodeid.split("/")[-1]
        modules[node.split("::")[0]] = getattr(item, "module", None)
        if any(node == p or node.startswith(p + "[") for p in E2E_TESTS):
            item.add_marker(pytest.mark.e2e)
    # a renamed test must not drop out of both steps silently
    lost = [
        p
        for p in E2E_TESTS
        if p.split("::")[0] in modules and not hasattr(modules[p.split("::")[0]], p.split("::")[1].split("[")[0])
    ]
    if lost:
        raise pytest.UsageError(f"tests/conftest.py E2E_TESTS names tests that do not exist: {lost}")


@pytest.fixture
def data_dir():
    return DATA
