"""The suite's setup: the e2e marks (``E2E_TESTS``) and the fixtures more than one test file uses.

Paths, constants and plain helpers are in ``tests/helpers.py`` (``from tests.helpers import ROOT``).
"""

import json

import pytest
import torch

from tests.helpers import DATA, OTHER_ARCH, SEARCH, TINY_ARCH, TINY_SPACE, TOOLS, TRAIN

torch.set_num_threads(2)


# The long end-to-end runs (each tens of seconds to minutes on 2 cores: paper-scale searches, tools
# killed and resumed, torchrun, torch.compile, the GPU check's script): marked ``e2e`` and run by
# ``make test-e2e``, CI's second step, so that ``make test`` stays within 8 minutes. A node id
# prefix each (every parametrization of a test), or one parametrization (``name[id]``), without the
# test's folder: a test file's name is unique across tests/'s folders.
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
    "test_signals.py::test_sigkill_during_checkpoint_write",
    "test_signals.py::test_sigint_and_sigterm_stop_with_one_line",
    "test_memory_check.py::test_search_memory_estimate_matches_a_measured_search_step",
    "test_memory_check.py::test_memory_estimate_matches_a_measured_step",
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


# --------------------------------------------------------------------------- the fault tests' runs
# (tests/helpers.py says what those tests check). Session-scoped: no test changes what they return
# (a test that resumes or edits a run works on ``copy_run(train_run, tmp_path)``).


@pytest.fixture
def tool(capfd):
    """``tool("train", *argv) -> (exit code, stderr)``, in this process."""

    def call(name, *argv):
        capfd.readouterr()
        rc = TOOLS[name].main([str(a) for a in argv])
        return rc, capfd.readouterr().err

    return call


@pytest.fixture(scope="session")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("faults_files")
    (d / "tiny.json").write_text(json.dumps(TINY_ARCH))
    (d / "other.json").write_text(json.dumps(OTHER_ARCH))
    (d / "space.json").write_text(json.dumps(TINY_SPACE))
    return d


@pytest.fixture(scope="session")
def train_run(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults_train") / "run"
    assert TOOLS["train"].main(["MODEL.ARCH", str(files / "tiny.json"), "OUTPUT_DIR", str(out), *TRAIN]) == 0
    return out


@pytest.fixture(scope="session")
def search_run(files, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults_search") / "run"
    assert TOOLS["search"].main(["SEARCH.SPACE", str(files / "space.json"), "OUTPUT_DIR", str(out), *SEARCH]) == 0
    return out
