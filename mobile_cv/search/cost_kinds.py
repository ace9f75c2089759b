"""What a search can cost: one registered class per cost kind (``SEARCH.COST.KIND``).

A cost kind says everything the rest of the project needs to know about it, so nothing else
switches on its name: its unit, the record key of the derived architecture's exact cost, how the
expected cost the alpha step minimises and the exact per-block cost table the budgeted search
uses (:class:`~mobile_cv.search.budget.BudgetTable`) are built, what a config must hold for it,
and its labels in logs and plots. Three are registered: ``flops`` and ``params`` (counted by
effective shape propagation, in millions) and ``latency`` (milliseconds by a measured latency
table, tools/latency_table.py). Adding one (peak activation memory, energy, ...) is one class:

    @COST_KINDS.register("activations")
    class Activations(CostKind):
        unit, what = "M values", "activations"
        def budget_table(self, cfg, net, table_path=None):
            return BudgetTable(net, self.name, item_cost=my_per_block_cost)

(docs/architecture.md#adding-a-cost-kind; tests/search/test_cost_kinds.py searches with a toy kind.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, Tuple

import torch

from ..config.errors import ConfigError
from ..registry import Registry
from .choices import Mixing

if TYPE_CHECKING:  # the budget module imports this one
    from .budget import BudgetTable

ExpectedCost = Callable[[Mixing], torch.Tensor]

COST_KINDS = Registry(
    "cost kind",
    contract="a CostKind subclass (mobile_cv.search.cost_kinds): unit, budget_table(cfg, net), expected cost",
)
LATENCY = "latency"  # the measured kind's name (latency tables build their BudgetTable with it)


class CostKind:
    """One kind of search cost. Subclasses set the class attributes and :meth:`budget_table`;
    the default expected cost is the table's exact expectation (differentiable in the mixing
    weights, the derived architecture's exact cost at one-hot weights)."""

    name = ""  # the registered name, SEARCH.COST.KIND (set by the registry)
    unit = ""  # after every number of this kind ("MFLOPs", "ms")
    what = ""  # the expected cost's name in logs and plots
    source = "exact"  # where the derived architecture's cost comes from (plots: "derived flops (exact)")
    counted = False  # True: the derived model's count (derived_flops_m / derived_params_m) is this cost

    key = ""  # the record and search.json key of the derived architecture's cost ("" : derived_NAME)

    @property
    def derived_key(self) -> str:
        return self.key or f"derived_{self.name}"

    def check_config(self, cfg) -> None:
        """Raise :class:`ConfigError` where ``cfg`` lacks what this kind needs (run before any build)."""

    def prepare(self, cfg, net) -> None:
        """Load and check what the kind needs, on the meta-device supernet, before the data is read."""

    def budget_table(self, cfg, net, table_path: Optional[str] = None) -> "BudgetTable":
        """The exact cost of every option of ``net`` (the budgeted search's model)."""
        raise NotImplementedError

    def expected(self, net, table: "BudgetTable") -> ExpectedCost:
        """mixing weights -> the expected cost the alpha step minimises."""
        return table.expected

    def cost_model(self, cfg, net) -> Tuple["BudgetTable", ExpectedCost]:
        """What a search uses: the budget table and the differentiable expected cost."""
        table = self.budget_table(cfg, net)
        return table, self.expected(net, table)

    def derived_note(self, record: Dict[str, Any], long: bool = False) -> str:
        """The derived architecture's cost of this kind after its FLOPs and params in a log line
        (nothing for the counted kinds: those are the FLOPs and params already printed)."""
        if self.counted or self.derived_key not in record:
            return ""
        by = f" by the {self.name} table" if long and self.source != "exact" else ""
        return f"{',' if long else ''} {record[self.derived_key]:.4g} {self.unit}{by}"


class _Counted(CostKind):
    """Millions of FLOPs or parameters by effective shape propagation (the paper's convention)."""

    counted = True

    def count(self, cost) -> Any:
        """The field of a :class:`~mobile_cv.search.masked.Cost` this kind counts."""
        return getattr(cost, self.name)

    def budget_table(self, cfg, net, table_path: Optional[str] = None) -> "BudgetTable":
        from .budget import BudgetTable

        return BudgetTable(net, self.name)

    def expected(self, net, table: "BudgetTable") -> ExpectedCost:
        return lambda mixing: net.expected_cost(self.name, mixing)


@COST_KINDS.register("flops")
class Flops(_Counted):
    unit, what, key = "MFLOPs", "effective flops", "derived_flops_m"


@COST_KINDS.register("params")
class Params(_Counted):
    unit, what, key = "M params", "effective params", "derived_params_m"


@COST_KINDS.register(LATENCY)
class Latency(CostKind):
    """Milliseconds on a deployment runtime by SEARCH.COST.LATENCY_TABLE (docs/dmaskingnas.md)."""

    unit, what, source, key = "ms", "expected latency (table)", "table", "derived_latency_ms"

    def check_config(self, cfg) -> None:
        if not cfg.SEARCH.COST.LATENCY_TABLE:
            raise ConfigError(
                "SEARCH.COST.KIND is 'latency' but SEARCH.COST.LATENCY_TABLE is empty; build the space's table with "
                f"python tools/latency_table.py {cfg.SEARCH.SPACE} --out TABLE.json, then set "
                "SEARCH.COST.LATENCY_TABLE TABLE.json"
            )

    def load(self, cfg, net, table_path: Optional[str] = None):
        """The latency table (SEARCH.COST.LATENCY_TABLE, or ``table_path``) checked against this search:
        its space, resolutions and classifier, and the runtime, int8 and threads SEARCH.COST asks for
        (``table_path`` given: any runtime)."""
        from ..arch.arch_registry import resolve_arch_def
        from ..latency.table import LatencyTable  # deferred: the latency package builds on this one

        c = cfg.SEARCH.COST
        if not (table_path or c.LATENCY_TABLE):
            raise ConfigError(
                f"cost kind latency needs a latency table and {cfg.SEARCH.SPACE}'s search used none: give one "
                f"(tools/derive.py --table TABLE, built by tools/latency_table.py {cfg.SEARCH.SPACE} --out TABLE)"
            )
        path = table_path or c.LATENCY_TABLE
        loaded = self.__dict__.setdefault("_tables", {})  # read once per instance: a run checks, then builds
        table = loaded[path] if path in loaded else loaded.setdefault(path, LatencyTable.load(path))
        want = (
            {} if table_path else {"runtime": c.LATENCY_RUNTIME, "int8": c.LATENCY_INT8, "threads": c.LATENCY_THREADS}
        )
        table.check(cfg.SEARCH.SPACE, resolve_arch_def(cfg.SEARCH.SPACE)[0], net, want)
        return table

    def prepare(self, cfg, net) -> None:
        self.load(cfg, net)  # a wrong or broken table fails here, not after the data scan

    def budget_table(self, cfg, net, table_path: Optional[str] = None) -> "BudgetTable":
        return self.load(cfg, net, table_path).budget_table(net)

    def cost_model(self, cfg, net) -> Tuple["BudgetTable", ExpectedCost]:
        latency_table = self.load(cfg, net)
        check_machine(cfg, latency_table)
        table = latency_table.budget_table(net)
        return table, table.expected


def check_machine(cfg, table) -> None:
    """SEARCH.COST.LATENCY_CHECK: the table's probes timed here (the main process only; the others
    wait for its verdict); one line says whether the table still describes this machine."""
    import logging

    from .. import comm
    from ..latency.probes import check_table, verdict
    from ..latency.table import LatencyTableError

    logger = logging.getLogger("mobile_cv.search")
    mode = cfg.SEARCH.COST.LATENCY_CHECK
    if mode == "off":
        return
    line, ok = "", True
    if comm.is_main_process():
        if not table.data.get("probes"):
            line = f"{table.rebuild_line()} (SEARCH.COST.LATENCY_CHECK {mode}: no probes to time)"
        else:
            report = check_table(table, rounds=10, warmup=2)
            line, ok = verdict(table, report), report["describes"]
            line += f" (drift: {report['drift']:.4f})"
    line, ok = comm.broadcast_object((line, ok))
    if ok:
        logger.info("%s", line)
        return
    if mode == "refuse":
        raise LatencyTableError(f"{line}; SEARCH.COST.LATENCY_CHECK refuse: the search did not start")
    logger.warning("%s; SEARCH.COST.LATENCY_CHECK warn: searching with it anyway", line)


def cost_kind(name: str) -> CostKind:
    """The registered cost kind ``name`` (an instance); a miss names the registered ones."""
    kind = COST_KINDS.get(name)()
    kind.name = name
    return kind


def check_cost_config(cfg) -> None:
    """SEARCH.COST.KIND is a registered kind and the config holds what that kind needs."""
    if cfg.SEARCH.COST.KIND not in COST_KINDS.names():
        from ..registry import did_you_mean

        names = COST_KINDS.names()
        raise ConfigError(
            f"config key SEARCH.COST.KIND must be one of {names} (the registered cost kinds), got "
            f"{cfg.SEARCH.COST.KIND!r}{did_you_mean(cfg.SEARCH.COST.KIND, names)}"
        )
    cost_kind(cfg.SEARCH.COST.KIND).check_config(cfg)
