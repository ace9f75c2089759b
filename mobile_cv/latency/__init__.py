"""Latency as a search cost: a table measured on the deployment runtime, and its lookups.

    python tools/latency_table.py mnist_small_space --runtime executorch --out TABLE.json
    table = LatencyTable.load("TABLE.json")
    budget = table.budget_table(net)          # the budgeted search's table, in ms
    ms = budget.expected(net.sample_mixing())  # differentiable expected latency (exact expectation)

* :mod:`.configs`: block configurations (what changes a block's computation), from the supernet;
* :mod:`.runtimes`: ExecuTorch (XNNPACK, fp32/int8), ONNX Runtime, eager PyTorch;
* :mod:`.measure`: timing every configuration (or a grid, and interpolation) into a table;
* :mod:`.table`: the table file, its checks and lookups.
"""

from .configs import BlockConfig, build_module, space_configs
from .measure import LatencySettings, TableMeasurement, measure_latency_table, table_range
from .runtimes import RUNTIMES, RuntimeUnavailableError, check_runtime, default_runtime
from .table import LatencyTable, LatencyTableError, space_digest

# their names in 0.1 ("build" now means making an object from its description: a model, a loader)
build_latency_table = measure_latency_table
TableBuilder = TableMeasurement

__all__ = [
    "RUNTIMES",
    "BlockConfig",
    "LatencySettings",
    "LatencyTable",
    "LatencyTableError",
    "RuntimeUnavailableError",
    "TableBuilder",
    "TableMeasurement",
    "build_latency_table",
    "measure_latency_table",
    "build_module",
    "check_runtime",
    "default_runtime",
    "space_configs",
    "space_digest",
    "table_range",
]
