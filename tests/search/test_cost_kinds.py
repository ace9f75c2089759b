"""mobile_cv.search.cost_kinds: a cost kind is one registered class; a user's kind is searched with."""

import json
import os

import pytest
import torch

from mobile_cv.config import ConfigError
from mobile_cv.engine import default_setup, run_search, setup_cfg
from mobile_cv.latency.configs import item_configs
from mobile_cv.search.budget import BudgetTable
from mobile_cv.search.cost_kinds import COST_KINDS, CostKind, cost_kind
from tests.helpers import ROOT


class Activations(CostKind):
    """Thousands of values each block writes (its output feature map), summed over the blocks."""

    unit, what = "K values", "expected activations"

    def budget_table(self, cfg, net, table_path=None):
        def per_item(cand, spatial, index):  # (N, R): N option assignments at R input sizes
            c = item_configs(net, cand, spatial, index)
            stride = 1 if cand is None else c.base.stride
            sides = torch.tensor([(s + stride - 1) // stride for s in c.sizes], dtype=torch.float64)
            return c.c_out.double()[:, None] * sides[None] ** 2 / 1e3

        return BudgetTable(net, self.name, item_cost=per_item)


def test_a_cost_kind_registered_by_a_user_is_searched_with(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    COST_KINDS.register("activations", Activations)
    try:
        cfg = setup_cfg(
            os.path.join(ROOT, "configs", "search_embedded_mnist.yaml"),
            ["DATA.LIMIT", "64", "SEARCH.EPOCHS", "2", "SEARCH.WARMUP_EPOCHS", "1", "SEARCH.BATCH_SIZE", "32"]
            + ["SEARCH.COST.KIND", "activations", "SEARCH.COST.TARGET", "3.0", "OUTPUT_DIR", str(tmp_path / "s")],
            arch_key="SEARCH.SPACE",
        )
        summary = run_search(cfg, resume=False, device=default_setup(cfg, tool="search"))
    finally:
        COST_KINDS.unregister("activations")
    assert summary["cost_kind"] == "activations" and abs(summary["derived_activations"] / 3.0 - 1) <= 0.05
    last = [json.loads(line) for line in open(tmp_path / "s" / "metrics.jsonl")][-1]
    assert last["expected_activations"] > 0 and last["derived_activations"] == summary["derived_activations"]


def test_an_unknown_cost_kind_names_the_registered_ones():
    with pytest.raises(ConfigError, match=r"SEARCH.COST.KIND must be one of \['flops', 'latency', 'params'\].*flops"):
        setup_cfg("", ["SEARCH.COST.KIND", "flop"], arch_key="SEARCH.SPACE")
    assert cost_kind("latency").derived_key == "derived_latency_ms" and cost_kind("flops").unit == "MFLOPs"
