"""Budgeted search: the most probable architecture whose exact cost meets a budget.

The learned distribution is one categorical per choice, ``p_l = softmax(alpha_l)`` (the
distribution the Gumbel-max trick samples from; the temperature only relaxes it). The
log-probability of an architecture is the sum over choices of ``log p_l[option]``: the
per-choice argmax is its maximum. With a budget we want

    max  sum_l log p_l[i_l]   subject to   lo <= cost(i) <= hi,   [lo, hi] = target * (1 -+ tolerance)

over every assignment ``i`` of options to choices, with ``cost`` the exact cost of the derived
model (FLOPs, params, or latency by a measured table). The cost is a sum of per-block terms, and
each term depends only on the block's own choices (block type, expansion), the widths flowing in
and out of it (the channel choices of its row and of the row before) and the input resolution.
:class:`BudgetTable` tabulates every term for every option combination once (its *items*); the
problem is then a chain, solved per resolution by a dynamic program over the terms in order.

The DP (:meth:`BudgetTable.most_probable_within`). A *state* is the output-width option ``s`` of
the term just placed; a *bucket* ``b`` is the cost spent so far, rounded to units of ``delta``.
An item ``k`` of term ``t`` leads from state ``src[k]`` to ``dst[k]``, costs ``cost[k]`` and adds
``offset[k] = round(cost[k] / delta)`` buckets. For each resolution ``r``:

    best[0][0, 0] = log p(resolution r)
    best[t][s', b'] = max over items k of term t with dst[k] = s' of  best[t-1][src[k], b' - offset[k]] + lp[k]
    low[t][s', b']  = min over the same items of  low[t-1][src[k], b' - offset[k]] + cost[k]
    high[t][s', b'] = max over the same items of  high[t-1][src[k], b' - offset[k]] + cost[k]

``best`` is the most probable partial architecture reaching the cell, ``low``/``high`` the
exact cheapest/dearest one (over *all* partial architectures in the cell, not only the most
probable). Every architecture ends in exactly one final cell, and its exact cost lies in that
cell's ``[low, high]``; each term's rounding error is at most ``delta / 2`` either way, so a
cell spans at most ``n_terms * delta``. With ``delta < (hi - lo) / n_terms`` no cell spans the
whole window, so a final cell whose ``[low, high]`` meets the window has its cheapest, dearest
or most probable architecture inside it. Hence:

* an architecture within the budget exists if and only if some final cell meets the window,
  and one is always found (no cap on how many cells are decoded);
* the answer is the most probable of the decoded architectures inside the window: exactly the
  optimum unless a more probable in-window architecture shares its cell with an even more
  probable one outside it (possible only within ``n_terms * delta`` of the window's edges).

    index, cost, log_p = budgeted_search(net, "flops", target=60.0)     # or BudgetTable(net, "flops")
    lo, hi = cost_range(net, "flops")                                   # exact cheapest / most expensive
"""

from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, replace
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import UserError
from .choices import Mixing
from .cost_kinds import COST_KINDS, cost_kind
from .masked import Spatial

Index = Dict[str, int]  # choice label -> option index
RESOLUTION = "resolution"
BUCKETS_PER_WINDOW = 64  # the DP's cost resolution: buckets across the budget window
MAX_BUCKETS = 1 << 14  # bounds the DP's memory (states x buckets per term); tiny tolerances hit it


class BudgetError(UserError, ValueError):
    """No architecture of the space meets the requested budget (or the space cannot be searched so)."""


def log_probs(net, temperature: float = 1.0) -> Dict[str, torch.Tensor]:
    """log softmax(alpha / temperature) per choice, detached, float64."""
    return {
        label: torch.log_softmax(net.alpha(label).detach().cpu().double() / temperature, -1) for label in net.choices
    }


def index_log_prob(index: Index, logp: Dict[str, torch.Tensor]) -> float:
    """Log-probability of a full assignment of options: sum over choices of log p[option]."""
    return float(sum(float(logp[label][i]) for label, i in index.items()))


def uniform_log_prob(net) -> float:
    """Log-probability of any architecture when every choice is uniform (alpha = 0)."""
    return -sum(math.log(c.size) for c in net.choices.values())


def one_hot_batch(net, index: Dict[str, torch.Tensor]) -> Mixing:
    """Batched one-hot mixing weights, ``(N, options)`` per choice, from ``(N,)`` option indices."""
    return {
        label: torch.nn.functional.one_hot(index[label].long(), c.size).double() for label, c in net.choices.items()
    }


def batch_cost(net, kind: str, index: Dict[str, torch.Tensor]) -> torch.Tensor:
    """Exact costs (millions) of N architectures given as ``(N,)`` option indices per choice."""
    with torch.no_grad():
        return net.expected_cost(kind, one_hot_batch(net, index))


def sample_uniform(net, n: int, generator: Optional[torch.Generator] = None) -> Dict[str, torch.Tensor]:
    """``n`` architectures drawn uniformly and independently per choice, as ``(n,)`` indices."""
    return {label: torch.randint(c.size, (n,), generator=generator) for label, c in net.choices.items()}


def sample_within(
    net,
    kind: str,
    target: float,
    tolerance: float,
    n: int,
    seed: int = 0,
    max_draws: int = 2_000_000,
    cost_fn: Optional[Callable[[Mixing], torch.Tensor]] = None,
) -> List[Tuple[Index, float]]:
    """``n`` distinct architectures drawn uniformly per choice, conditioned on an exact cost within
    ``tolerance`` of ``target`` (rejection sampling, costed in vectorised batches).

    Args:
        cost_fn: batched one-hot mixing weights -> costs; default ``net.expected_cost(kind, .)``
            (pass ``BudgetTable.expected`` for a latency table).

    Returns ``[(index, cost), ...]`` in draw order; :class:`BudgetError` if fewer than ``n``
    were found in ``max_draws`` draws.
    """
    g = torch.Generator().manual_seed(seed)
    lo, hi = target * (1 - tolerance), target * (1 + tolerance)
    found: Dict[Tuple, Tuple[Index, float]] = {}
    drawn = 0
    labels = list(net.choices)
    while len(found) < n and drawn < max_draws:
        batch = sample_uniform(net, 4096, g)
        with torch.no_grad():
            costs = cost_fn(one_hot_batch(net, batch)) if cost_fn else batch_cost(net, kind, batch)
        drawn += 4096
        for j in torch.nonzero((costs >= lo) & (costs <= hi)).flatten().tolist():
            index = {label: int(batch[label][j]) for label in labels}
            key = repr(net.derive_arch(net.one_hot(index)))  # distinct architectures, not assignments
            found.setdefault(key, (index, float(costs[j])))
            if len(found) == n:
                break
    if len(found) < n:
        raise BudgetError(
            f"only {len(found)} of {n} random architectures within {100 * tolerance:g}% of {target:g} in "
            f"{drawn} uniform draws; widen the tolerance or pick a budget nearer the space's typical cost"
        )
    return list(found.values())


# ---- the table ----------------------------------------------------------------------------------
@dataclass
class Term:
    """One block (or the head) of the cost chain: its items and their exact costs per resolution.

    Item ``k`` is one assignment of the block's own choices ``local_labels`` (``local_options[k]``,
    -1 where a choice does not matter for the item, e.g. the expansion of a ``skip``) for one
    input width option ``src[k]`` and output width option ``dst[k]``.
    """

    name: str
    in_label: Optional[str]
    out_label: Optional[str]
    n_out: int  # output width options (states after this term)
    src: torch.Tensor  # (K,) long
    dst: torch.Tensor  # (K,) long
    cost: torch.Tensor  # (R, K) float64, in the table's unit
    local_labels: List[str]
    local_options: torch.Tensor  # (K, len(local_labels)) long

    def item_probability(self, mixing: Mixing, first: Optional[bool] = None) -> torch.Tensor:
        """``(..., K)``: each item's probability under the product distribution of ``mixing``
        (everything but the resolution). With ``first`` (a DP over the chain of terms, whose state is
        the input width): the item's own choices, and its output width only where this term is the
        first to choose it (:func:`_first_choosers`), each choice counted once along a path."""
        p = 1.0
        if first is None:
            if self.in_label is not None:
                p = p * mixing[self.in_label][..., self.src]
            if self.out_label is not None and self.out_label != self.in_label:
                p = p * mixing[self.out_label][..., self.dst]
        elif first:
            p = p * mixing[self.out_label][..., self.dst]
        for j, label in enumerate(self.local_labels):
            opt = self.local_options[:, j]
            p = p * torch.where(opt >= 0, mixing[label][..., opt.clamp_min(0)], torch.ones((), device=opt.device))
        if isinstance(p, torch.Tensor):
            return p
        shape = next(iter(mixing.values())).shape[:-1] if mixing else ()
        return torch.ones(*shape, len(self.src), dtype=torch.float64, device=self.src.device)


def _first_choosers(terms: Sequence[Term]) -> List[bool]:
    """Per term, whether it is the first of the chain to use its output width choice (a row's repeats
    share one width choice, chosen by the row's first block)."""
    seen, out = set(), []
    for t in terms:
        out.append(t.out_label is not None and t.out_label not in seen)
        seen.add(t.out_label)
    return out


ItemCost = Callable[..., torch.Tensor]  # (candidate, spatial, labels, grid) -> (len(grid),) costs


def _grid(sizes: Sequence[int]) -> torch.Tensor:
    """All index combinations of ``sizes``, as an (N, len(sizes)) long tensor."""
    if not sizes:
        return torch.zeros(1, 0, dtype=torch.long)
    return torch.cartesian_prod(*[torch.arange(s) for s in sizes]).reshape(-1, len(sizes))


HINGE_BUCKETS = 400  # the hinge DP's resolution: buckets over the space's largest M params


class ParamsHinge:
    """``slope[r] * max(0, P - knot)`` with ``P`` an architecture's M params and ``r`` its resolution (a
    table's whole-model term that is not a sum over blocks, :mod:`mobile_cv.latency.calibration`), and
    its expectation under the joint choice probabilities.

    The expectation needs the distribution of ``P``, not its mean: a sum-product DP over the chain of
    blocks, with the state of the budget DP (the output-width option of the term just placed) and the
    M params spent so far in buckets of ``delta``. Each cell carries its probability mass ``m`` and the
    mass-weighted M params of the partial architectures in it ``mu`` (exact sums, not bucket centres):

        m[t][s', b']  = sum over items k of term t with dst[k] = s' of  m[t-1][src[k], b' - off[k]] * w[k]
        mu[t][s', b'] = same sum of  (mu[t-1][src[k], b' - off[k]] + m[t-1][src[k], b' - off[k]] * P[k]) * w[k]

    (``w[k]`` the probability of the item's own choices and of its output width where the term is the
    first to choose it: :meth:`Term.item_probability` with ``first``, as :meth:`BudgetTable._item_log_probs`
    counts them), and the expectation is
    ``sum over r of p(r) * slope[r]`` times ``sum over final cells of max(0, mu - knot * m)`` (no block's
    M params depend on the resolution, an independent choice): every cell's architectures taken at
    their mean M params. At one-hot weights one cell holds the one architecture, so it is its exact hinge;
    otherwise it is exact but where one cell's architectures lie on both sides of the knot (within
    ``n_terms * delta`` of it), and never above the exact expectation (Jensen, per cell). Differentiable
    in the weights. Batched one-hot weights (the rejection sampler's) are costed directly.

    Args:
        params: the budget table of kind "params" of the same supernet (its items in the same order).
        knot: the hinge's knot, in M params.
        slopes: per resolution option (one for a space without), the table's unit per M params past it.
    """

    def __init__(self, params: "BudgetTable", knot: float, slopes: Sequence[float]) -> None:
        self.params, self.knot = params, float(knot)
        self.slopes = torch.as_tensor(slopes, dtype=torch.float64).reshape(-1)
        if len(self.slopes) != params.n_res:
            raise BudgetError(f"a hinge needs one slope per resolution ({params.n_res}), got {len(self.slopes)}")
        most = sum(float(t.cost[0].max()) for t in params.terms)  # parameters do not depend on the resolution
        self.delta = max(most, 1e-9) / HINGE_BUCKETS
        self.n_buckets = int(math.ceil(most / self.delta)) + len(params.terms) + 2
        self._first = _first_choosers(params.terms)
        self._plans: Dict[torch.device, List[Tuple[torch.Tensor, torch.Tensor, int, torch.Tensor]]] = {}

    def value(self, mparams, r: int):
        """The hinge of M params (a float or a tensor) at resolution option ``r``."""
        if isinstance(mparams, torch.Tensor):
            return float(self.slopes[r]) * (mparams - self.knot).clamp_min(0)
        return float(self.slopes[r]) * max(0.0, mparams - self.knot)

    def _slope(self, mixing: Mixing) -> torch.Tensor:
        """The slope in expectation over the resolution option (``(...)``)."""
        label = self.params.res_label
        if label is None:
            return self.slopes[0]
        weights = mixing[label].double()
        return weights @ self.slopes.to(weights.device)

    def _plan(self, device: torch.device):
        """Per term: each item's (offset, source, destination) cell as one flat key, the item's M params,
        the number of distinct offsets, and those offsets (fixed by the space: built once per device)."""
        if device not in self._plans:
            plan = []
            for t in self.params.terms:
                p = t.cost[0]
                off = torch.round(p / self.delta).long()
                offsets, which = torch.unique(off, return_inverse=True)
                n_in = int(t.src.max()) + 1 if len(t.src) else 1
                key = (which * n_in + t.src) * t.n_out + t.dst
                plan.append((key.to(device), p.to(device), n_in, offsets.to(device)))
            self._plans[device] = plan
        return self._plans[device]

    def expected(self, mixing: Mixing, terms: Sequence["Term"], shortcut: bool = True) -> torch.Tensor:
        """The hinge's expectation under ``mixing`` (``terms``: the table's terms on the mixing's device,
        for their item probabilities; ``shortcut=False``: the DP even at one-hot weights)."""
        slope = self._slope(mixing)
        if shortcut and _one_hot(mixing):  # one architecture per row: its M params are a plain sum
            return slope * (self.params.expected(mixing) - self.knot).clamp_min(0)
        device = next(iter(mixing.values())).device
        batch = next(iter(mixing.values())).shape[:-1]
        m = torch.zeros(*batch, 1, self.n_buckets, dtype=torch.float64, device=device)
        m[..., 0, 0] = 1.0
        mu = torch.zeros_like(m)
        for t, first, (key, p, n_in, offsets) in zip(terms, self._first, self._plan(device)):
            w = t.item_probability(mixing, first).double()  # (..., K)
            n_off = len(offsets)
            flat = torch.zeros(*batch, n_off * n_in * t.n_out, dtype=torch.float64, device=device)
            weight = flat.index_add(-1, key, w).reshape(*batch, n_off, n_in, t.n_out)
            weight_p = flat.index_add(-1, key, w * p).reshape(*batch, n_off, n_in, t.n_out)
            new_m = torch.zeros(*batch, t.n_out, self.n_buckets, dtype=torch.float64, device=device)
            new_mu = torch.zeros_like(new_m)
            m, mu = m[..., :n_in, :], mu[..., :n_in, :]
            for j, o in enumerate(offsets.tolist()):
                width = self.n_buckets - o
                if width <= 0:
                    continue
                wj, vj = weight[..., j, :, :], weight_p[..., j, :, :]
                src_m, src_mu = m[..., :, :width], mu[..., :, :width]
                new_m[..., :, o:] = new_m[..., :, o:] + torch.einsum("...sb,...sd->...db", src_m, wj)
                new_mu[..., :, o:] = (
                    new_mu[..., :, o:]
                    + torch.einsum("...sb,...sd->...db", src_mu, wj)
                    + torch.einsum("...sb,...sd->...db", src_m, vj)
                )
            m, mu = new_m, new_mu
        return slope * (mu - self.knot * m).clamp_min(0).sum((-2, -1))


def _one_hot(mixing: Mixing) -> bool:
    """Whether every choice's weights are one-hot (each row a single 1)."""
    return all(bool(((w == 0) | (w == 1)).all()) and bool((w.sum(-1) == 1).all()) for w in mixing.values())


class BudgetTable:
    """Exact per-block costs of every option combination of a supernet, for one cost kind.

    Built once per supernet (it depends on the space, not on alpha); :meth:`most_probable_within`,
    :meth:`extremes` and :meth:`expected` then work without touching the network.

    Args:
        kind: a registered cost kind (:mod:`.cost_kinds`): "flops" or "params" are counted (millions,
            by effective-shape counting of one-hot options); any other kind, latency (ms by a measured
            table's lookup) included, gives ``item_cost``.
        item_cost: ``item_cost(candidate, spatial, index)`` -> ``(N, R)`` costs of the
            candidate block for ``N`` option assignments ``index`` (label -> ``(N,)`` options) at each
            of ``spatial``'s ``R`` input sizes.
        constant: a cost every architecture pays once (a runtime's per-model overhead).
    """

    def __init__(self, net, kind: str, item_cost: Optional[ItemCost] = None, constant: float = 0.0) -> None:
        if kind not in COST_KINDS.names():
            raise BudgetError(f"cost kind must be one of {COST_KINDS.names()}, got {kind!r}")
        self.cost_kind = cost_kind(kind)
        if self.cost_kind.counted == (item_cost is not None):
            raise BudgetError(
                f"cost kind {kind!r} is {'counted from shapes: no' if self.cost_kind.counted else 'not counted: an'} "
                f"item_cost goes with it"
            )
        self.net, self.kind, self.unit, self.item_cost = net, kind, self.cost_kind.unit, item_cost
        self.res_label = RESOLUTION if RESOLUTION in net.choices else None
        self.n_res = net.choices[RESOLUTION].size if self.res_label else 1
        self.terms: List[Term] = []
        owner: Dict[str, str] = {}
        spatial = Spatial(tuple(net.res_sizes), RESOLUTION) if self.res_label else Spatial((net.input_size,))
        prev_out = None
        for name, block in net.search_blocks().items():
            if prev_out is not None and block.in_space != prev_out:
                raise BudgetError(
                    f"{self._space()}: block {name}'s input width is not the previous block's output, which the "
                    f"budget table's chain of blocks assumes; budgets cannot be searched in this space"
                )
            term = self._block_term(name, block, spatial)
            for label in term.local_labels:
                if owner.setdefault(label, name) != name:
                    raise BudgetError(
                        f"{self._space()}: choice {label} is used by blocks {owner[label]} and {name}; the budget "
                        f"table needs each block-type/expansion choice in one block"
                    )
            self.terms.append(term)
            spatial, prev_out = block.out_spatial(spatial), block.out_space
        self.terms.append(self._head_term(prev_out, spatial, constant))
        self._moved: Dict[torch.device, List[Term]] = {}
        self.hinge: Optional[ParamsHinge] = None  # a whole-model term that is not a sum over blocks (set_hinge)

    def set_hinge(self, params: "BudgetTable", knot: float, slopes: Sequence[float]) -> None:
        """Add ``slopes[r] * max(0, M params - knot)`` to the cost of every architecture of resolution
        option ``r`` (:class:`ParamsHinge`): its expectation, exact costs, extremes and budgeted
        derivation then include it."""
        if [len(t.src) for t in params.terms] != [len(t.src) for t in self.terms]:
            raise BudgetError("the params table of a hinge must be of the same supernet as the table")
        self.hinge = ParamsHinge(params, knot, slopes) if any(slopes) else None

    def _upper(self) -> "BudgetTable":
        """The hinge's upper branch as a plain table: every item's cost at resolution ``r`` plus
        ``slopes[r]`` x its M params. An architecture's cost with the hinge is the larger of this table's
        less ``slopes[r] x knot`` (:meth:`_shifts`) and the table's without it (each a sum over blocks, so
        each has the exact DPs; the shift is left to the caller, the DPs' costs being >= 0)."""
        h = self.hinge
        out = copy.copy(self)
        out.hinge, out._moved = None, {}
        slopes = h.slopes[:, None]
        out.terms = [replace(t, cost=t.cost + slopes * hp.cost[0]) for t, hp in zip(self.terms, h.params.terms)]
        return out

    def _shifts(self) -> List[float]:
        """Per resolution option, what the upper branch's costs exceed the hinged cost by: ``slopes[r] x knot``."""
        return [float(v) * self.hinge.knot for v in self.hinge.slopes]

    def _lower(self) -> "BudgetTable":
        """The table without its hinge (the sum over blocks)."""
        out = copy.copy(self)
        out.hinge = None
        return out

    def _space(self) -> str:
        return f"search space {self.net.name!r}" if self.net.name else "the search space"

    def _size(self, label: Optional[str]) -> int:
        return self.net.choices[label].size if label is not None else 1

    def _options(self, labels: List[str], fixed: Dict[str, int]) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        """Every combination of ``labels``' options that agrees with ``fixed``, as grid rows and as
        ``label -> (N,)`` options (``fixed`` labels included)."""
        grid = _grid([self._size(lbl) for lbl in labels])
        for j, lbl in enumerate(labels):
            if lbl in fixed:
                grid = grid[grid[:, j] == fixed[lbl]]
        index = {lbl: grid[:, j] for j, lbl in enumerate(labels)}
        for lbl, opt in fixed.items():
            index.setdefault(lbl, torch.full((len(grid),), opt, dtype=torch.long))
        return grid, index

    def _counted(self, cost_fn, index: Dict[str, torch.Tensor], n: int) -> torch.Tensor:
        """``(n, R)`` effective-shape costs (millions) of one-hot options ``index``, per resolution."""
        mixing = {lbl: torch.nn.functional.one_hot(ix, self._size(lbl)).double() for lbl, ix in index.items()}
        per_res = []
        for r in range(self.n_res):
            if self.res_label:
                mixing[self.res_label] = torch.nn.functional.one_hot(
                    torch.full((n,), r, dtype=torch.long), self.n_res
                ).double()
            with torch.no_grad():
                value = cost_fn(mixing)
                value = self.cost_kind.count(value)
            per_res.append(torch.as_tensor(value, dtype=torch.float64).expand(n) / 1e6)
        return torch.stack(per_res, 1)

    def _block_term(self, name: str, block, spatial: Spatial) -> Term:
        a, b = block.in_space.label, block.out_space.label
        state = list(dict.fromkeys(lbl for lbl in (a, b) if lbl is not None))  # a == b inside a row: one label
        local: List[str] = []
        for cand_name, cand in block.candidates.items():
            hidden = getattr(cand, "hidden_space", None)
            for label in [lbl for lbl, _ in block.factors[cand_name]] + ([hidden.label] if hidden else []):
                if label is not None and label not in state and label not in local:
                    local.append(label)
        parts = []
        for cand_name, cand in block.candidates.items():
            factors = dict(block.factors[cand_name])
            hidden = getattr(cand, "hidden_space", None)
            free = (
                [hidden.label] if hidden is not None and hidden.label in local and hidden.label not in factors else []
            )
            labels = state + free
            grid, index = self._options(labels, factors)
            if self.item_cost is not None:
                cost = self.item_cost(cand, spatial, index)
            else:
                cost = self._counted(lambda m, c=cand: c.cost(spatial, m)[0], index, len(grid))
            col = {lbl: j for j, lbl in enumerate(labels)}
            options = torch.full((len(grid), len(local)), -1, dtype=torch.long)
            for j, lbl in enumerate(local):
                if lbl in factors:
                    options[:, j] = factors[lbl]
                elif lbl in free:
                    options[:, j] = grid[:, col[lbl]]
            src = index[a] if a is not None else torch.zeros(len(grid), dtype=torch.long)
            dst = index[b] if b is not None else torch.zeros(len(grid), dtype=torch.long)
            parts.append((src, dst, cost.T, options))
        src, dst, cost, options = (torch.cat(x, dim=1 if i == 2 else 0) for i, x in enumerate(zip(*parts)))
        return Term(name, a, b, self._size(b), src, dst, cost.contiguous(), local, options)

    def _head_term(self, last, spatial: Spatial, constant: float) -> Term:
        label = last.label
        grid, index = self._options([label] if label is not None else [], {})
        if self.item_cost is not None:
            cost = self.item_cost(None, spatial, index)
        else:
            cost = self._counted(lambda m: self.net.head_cost(spatial, m), index, len(grid))
        src = index[label] if label is not None else torch.zeros(len(grid), dtype=torch.long)
        empty = torch.zeros(len(grid), 0, dtype=torch.long)
        return Term("head", label, label, self._size(label), src, src.clone(), cost.T + constant, [], empty)

    # -- the differentiable expectation ---------------------------------------------------------
    def expected(self, mixing: Mixing) -> torch.Tensor:
        """The expectation of the table's cost when every choice takes its options with the
        probabilities ``mixing`` (independently): each term's items weighted by the product of the
        mixing weights of the choices the item depends on. Differentiable in ``mixing``; with one-hot
        weights it is the chosen architecture's table cost. Batched ``(N, options)`` mixing weights give N."""
        total = 0.0
        device = next(iter(mixing.values())).device if mixing else torch.device("cpu")
        if self.hinge is not None:
            total = self.hinge.expected(mixing, self._terms_on(device))
        for t in self._terms_on(device):
            p = t.item_probability(mixing).double()  # (..., K); float64: exact sums at one-hot weights
            per_res = p @ t.cost.T if p.dim() > 1 else t.cost @ p  # (..., R) or (R,)
            if self.res_label:
                g = mixing[self.res_label].double()
                total = total + (per_res * g).sum(-1)
            else:
                total = total + per_res[..., 0]
        return total

    def _terms_on(self, device: torch.device) -> List[Term]:
        """The terms with their tensors on ``device`` (moved once per device, for GPU searches)."""
        if device.type == "cpu":
            return self.terms
        if device not in self._moved:
            self._moved[device] = [
                replace(t, **{f: getattr(t, f).to(device) for f in ("src", "dst", "cost", "local_options")})
                for t in self.terms
            ]
        return self._moved[device]

    def exact(self, index: Index) -> float:
        """The table cost of one architecture."""
        return float(self.expected(self.net.one_hot(index)))

    # -- the budgeted search --------------------------------------------------------------------
    def _item_log_probs(self, logp: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """Per term, each item's log p: its own choices, plus its output width choice where the
        term is the first to use it (a row's repeats share one width choice)."""
        out = []
        for t, first in zip(self.terms, _first_choosers(self.terms)):
            lp = torch.zeros(len(t.src), dtype=torch.float64)
            for j, label in enumerate(t.local_labels):
                opt = t.local_options[:, j]
                lp += torch.where(opt >= 0, logp[label][opt.clamp_min(0)], logp[label].max())
            if first:
                lp += logp[t.out_label][t.dst]
            out.append(lp)
        return out

    def extreme(self, largest: bool = False) -> Tuple[Index, float]:
        """The exact cheapest (or most expensive) architecture: ``(index, cost)``, by a min-plus DP
        over the terms whose state is the output-width option (no rounding). With a hinge the cost is
        the larger of two sums over blocks (:meth:`_upper`): the most expensive is exact (the larger of
        the two branches' most expensive); the cheapest is the cheaper of the two branches' cheapest
        architectures, costed exactly (a real architecture; none is cheaper than the branches' minima).
        """
        if self.hinge is not None:
            found = [b.extreme(largest) for b in (self._lower(), self._upper())]
            costed = [(index, self.exact(index)) for index, _ in found]
            return (max if largest else min)(costed, key=lambda x: x[1])
        sign = -1.0 if largest else 1.0
        best = None
        for r in range(self.n_res):
            spent, winners = torch.zeros(1, dtype=torch.float64), []
            for t in self.terms:
                reach = spent[t.src] + sign * t.cost[r]
                spent = torch.full((t.n_out,), math.inf, dtype=torch.float64).scatter_reduce(0, t.dst, reach, "amin")
                winners.append(torch.nonzero(reach == spent[t.dst]).flatten())  # items that reach their minimum
            state = int(spent.argmin())
            if best is None or float(spent[state]) < best[0]:
                best = (float(spent[state]), r, state, winners)
        value, r, state, winners = best
        index: Index = {label: 0 for label in self.net.choices}
        if self.res_label:
            index[self.res_label] = r
        for t, items in zip(reversed(self.terms), reversed(winners)):
            k = int(next(k for k in items.tolist() if int(t.dst[k]) == state))
            self._assign(index, t, k)
            state = int(t.src[k])
        return index, sign * value

    def extremes(self) -> Tuple[float, float]:
        """Exact (cheapest, most expensive) architecture cost of the space."""
        return self.extreme(False)[1], self.extreme(True)[1]

    @staticmethod
    def _assign(index: Index, t: Term, k: int) -> None:
        for j, label in enumerate(t.local_labels):
            if t.local_options[k, j] >= 0:
                index[label] = int(t.local_options[k, j])
        if t.out_label is not None:
            index[t.out_label] = int(t.dst[k])

    def most_probable_within(
        self, target: float, tolerance: float, logp: Dict[str, torch.Tensor]
    ) -> Tuple[Index, float, float]:
        """The most probable assignment whose exact cost is within ``tolerance`` of ``target``
        (the DP of the module docstring). Returns ``(index, exact cost, log-probability)``.

        Raises:
            BudgetError: no architecture of the space is within the window (proven by the DP), or
                the tolerance is too small for the DP's resolution to decide.
        """
        if not (target > 0 and tolerance > 0):
            raise BudgetError(f"a budget needs a positive target and tolerance, got {target!r} and {tolerance!r}")
        lo, hi = target * (1 - tolerance), target * (1 + tolerance)
        cheapest, dearest = self.extremes()
        if hi < cheapest or lo > dearest:
            raise BudgetError(
                f"no architecture of the space costs {target:g} {self.unit} (+-{100 * tolerance:g}%): it spans "
                f"{cheapest:.4g}-{dearest:.4g} {self.unit}; pick a target in that range"
            )
        delta = max((hi - lo) / max(BUCKETS_PER_WINDOW, 2 * len(self.terms)), hi / MAX_BUCKETS)
        if self.hinge is None:
            found, undecided = self._search_window(lo, hi, logp, delta)
        else:  # each branch's cells decoded, every decoded architecture costed with the hinge
            results = [
                self._lower()._search_window(lo, hi, logp, delta, exact=self),
                self._upper()._search_window(lo, hi, logp, delta, exact=self, shifts=self._shifts()),
            ]
            answers = [a for a, _ in results if a is not None]
            found = max(answers, key=lambda a: a[2]) if answers else None
            undecided = all(u for _, u in results)
        if found is not None:
            return found
        if undecided:
            raise BudgetError(
                f"a tolerance of {100 * tolerance:g}% is below what the budget DP resolves at {target:g} "
                f"{self.unit} ({len(self.terms)} blocks, {MAX_BUCKETS} cost buckets); raise the tolerance to at "
                f"least {100 * len(self.terms) * hi / MAX_BUCKETS / (2 * target):.2g}%"
            )
        near = ", ".join(
            f"{c:.4g} {self.unit} ({100 * (c / target - 1):+.1f}%)" for c in self._nearest(lo, hi, dearest, delta)
        )
        raise BudgetError(
            f"no architecture of the space is within {100 * tolerance:g}% of {target:g} {self.unit} (it spans "
            f"{cheapest:.4g}-{dearest:.4g} {self.unit}; the nearest cost {near}); move the target or raise the "
            f"tolerance"
        )

    def _run(self, r: int, logp_items: List[torch.Tensor], res_lp: float, delta: float, n_buckets: int):
        """The three DP tables of resolution ``r`` over buckets ``[0, n_buckets)``: the final
        ``(best, low, high)`` values and each criterion's winning item per cell and term."""
        start = torch.full((1, n_buckets), -math.inf, dtype=torch.float64)
        best, neg_low, high = start.clone(), start.clone(), start.clone()
        best[0, 0], neg_low[0, 0], high[0, 0] = res_lp, 0.0, 0.0
        winners: Dict[str, List[torch.Tensor]] = {"best": [], "low": [], "high": []}
        offsets = []
        for t, lp in zip(self.terms, logp_items):
            cost = t.cost[r]
            offset = torch.round(cost / delta).long()
            offsets.append(offset)
            best, w_best = _relax(best, t, offset, lp)
            neg_low, w_low = _relax(neg_low, t, offset, -cost)  # min-plus as max-plus of negated costs
            high, w_high = _relax(high, t, offset, cost)
            winners["best"].append(w_best)
            winners["low"].append(w_low)
            winners["high"].append(w_high)
        return best, -neg_low, high, winners, offsets

    def _trace(self, r: int, winners: List[torch.Tensor], offsets, states, buckets, logp_items, res_lp):
        """Decode final cells ``(states, buckets)`` along one criterion's winners: the items chosen per
        term (``(n_terms, N)``), the exact costs and the log-probabilities of those architectures."""
        items = []
        cost = torch.zeros(len(states), dtype=torch.float64)
        log_p = torch.full((len(states),), res_lp, dtype=torch.float64)
        for t, w, off, lp in zip(reversed(self.terms), reversed(winners), reversed(offsets), reversed(logp_items)):
            k = w[states, buckets]
            items.append(k)
            cost += t.cost[r][k]
            log_p += lp[k]
            buckets = buckets - off[k]
            states = t.src[k]
        return torch.stack(items[::-1]), cost, log_p

    def _search_window(
        self,
        lo: float,
        hi: float,
        logp,
        delta: float,
        exact: Optional["BudgetTable"] = None,
        shifts: Optional[Sequence[float]] = None,
    ):
        """``((index, cost, log p) or None, whether some cell could not be decided)``; with ``exact`` (the
        table with a hinge whose branch this is) the cells meeting ``[lo + shifts[r], hi + shifts[r]]`` in
        this table's costs are decoded and the architectures costed by ``exact`` against ``[lo, hi]``."""
        shifts = list(shifts) if shifts is not None else [0.0] * self.n_res
        n_buckets = int(math.floor((hi + max(shifts)) / delta)) + len(self.terms) + 2  # paths in the window end below
        logp_items = self._item_log_probs(logp)
        res_lp = logp[self.res_label] if self.res_label else torch.zeros(1, dtype=torch.float64)
        answer, undecided = None, False
        for r in range(self.n_res):
            best, low, high, winners, offsets = self._run(r, logp_items, float(res_lp[r]), delta, n_buckets)
            cell_lo, cell_hi = lo + shifts[r], hi + shifts[r]
            meets = torch.isfinite(best) & (low <= cell_hi) & (high >= cell_lo)
            states, buckets = torch.nonzero(meets, as_tuple=True)
            if len(states) == 0:
                continue
            inside_any = torch.zeros(len(states), dtype=torch.bool)
            for criterion in ("best", "low", "high"):
                items, cost, log_p = self._trace(
                    r, winners[criterion], offsets, states, buckets, logp_items, float(res_lp[r])
                )
                if exact is not None:
                    cost = exact._costs_of(r, items)
                inside = (cost >= lo) & (cost <= hi)
                inside_any |= inside
                if inside.any():
                    j = int(torch.where(inside, log_p, torch.tensor(-math.inf, dtype=torch.float64)).argmax())
                    if answer is None or float(log_p[j]) > answer[2] + 1e-12:
                        answer = (self._index_of(r, items[:, j], logp), float(cost[j]), float(log_p[j]))
            undecided |= bool((~inside_any).any())  # a cell spanning the whole window: finer buckets needed
        return answer, undecided and answer is None

    def _costs_of(self, r: int, items: torch.Tensor) -> torch.Tensor:
        """Exact costs (the hinge included) of the architectures given as items per term (``(n_terms, N)``)
        at resolution ``r``."""
        cost = sum(t.cost[r][k] for t, k in zip(self.terms, items))
        if self.hinge is not None:
            mparams = sum(t.cost[0][k] for t, k in zip(self.hinge.params.terms, items))
            cost = cost + self.hinge.value(mparams, r)
        return cost

    def _index_of(self, r: int, items: torch.Tensor, logp: Dict[str, torch.Tensor]) -> Index:
        # a choice no item of the path decides (the expansion of a skip) takes its most probable option,
        # the log-probability the items counted for it
        index: Index = {label: int(lp.argmax()) for label, lp in logp.items()}
        if self.res_label:
            index[self.res_label] = r
        for t, k in zip(self.terms, items.tolist()):
            self._assign(index, t, k)
        return index

    def _nearest(
        self, lo: float, hi: float, dearest: float, delta: float, shifts: Optional[Sequence[float]] = None
    ) -> List[float]:
        """Exact costs of real architectures nearest the window from below and from above (when no
        architecture is inside it), from the cells' cheapest and dearest members over the whole range
        (with a hinge, of either branch, less the upper branch's ``shifts`` per resolution: a cost the
        hinge may raise)."""
        if self.hinge is not None:
            found = [
                self._lower()._nearest(lo, hi, dearest, delta),
                self._upper()._nearest(lo, hi, dearest, delta, shifts=self._shifts()),
            ]
            below = [c for f in found for c in f if c < lo]
            above = [c for f in found for c in f if c > hi]
            return ([max(below)] if below else []) + ([min(above)] if above else [])
        shifts = list(shifts) if shifts is not None else [0.0] * self.n_res
        delta = max(delta, dearest / 4096)  # real architectures' costs, at a coarser resolution
        n_buckets = int(math.floor((dearest + max(shifts)) / delta)) + len(self.terms) + 2
        logp_items = [torch.zeros(len(t.src), dtype=torch.float64) for t in self.terms]
        below, above = -math.inf, math.inf
        for r in range(self.n_res):
            best, low, high, _, _ = self._run(r, logp_items, 0.0, delta, n_buckets)
            reached = torch.isfinite(best)
            low, high = low - shifts[r], high - shifts[r]
            under, over = reached & (high < lo), reached & (low > hi)
            if under.any():
                below = max(below, float(high[under].max()))
            if over.any():
                above = min(above, float(low[over].min()))
        return [c for c in (below, above) if math.isfinite(c)]


def _relax(prev: torch.Tensor, term: Term, offset: torch.Tensor, value: torch.Tensor):
    """One max-plus DP transition: ``new[dst[k], b + offset[k]] = max_k prev[src[k], b] + value[k]``.

    Returns the new table and the winning item per cell (-1 where no item reaches it).
    """
    n_buckets = prev.shape[1]
    n_items = len(value)
    valid = offset < n_buckets
    # of the items that share (src, dst, offset) only the one with the largest value can win (the first on ties)
    key = (term.src * term.n_out + term.dst) * n_buckets + offset.clamp_max(n_buckets - 1)
    n_keys = int(key.max()) + 1
    top = torch.full((n_keys,), -math.inf, dtype=torch.float64).scatter_reduce(0, key, value, "amax")
    order = torch.arange(n_items)
    first = torch.full((n_keys,), n_items).scatter_reduce(
        0, key, torch.where(value >= top[key], order, n_items), "amin"
    )
    valid &= order == first[key]
    new = torch.full((term.n_out, n_buckets), -math.inf, dtype=torch.float64)
    winner = torch.full((term.n_out, n_buckets), -1, dtype=torch.long)
    cols = torch.arange(n_buckets)
    minus_inf = torch.tensor(-math.inf, dtype=torch.float64)
    for k0 in range(0, n_items, 2048):  # bounded memory: (items, buckets) per chunk
        ks = torch.arange(k0, min(k0 + 2048, n_items))
        ks = ks[valid[ks]]
        if len(ks) == 0:
            continue
        source_bucket = cols[None, :] - offset[ks][:, None]
        reached = prev[term.src[ks]].gather(1, source_bucket.clamp_min(0))
        vals = torch.where(source_bucket >= 0, reached, minus_inf) + value[ks][:, None]
        for s in term.dst[ks].unique().tolist():
            rows = term.dst[ks] == s
            v, arg = vals[rows].max(0)
            better = v > new[s]
            new[s] = torch.where(better, v, new[s])
            winner[s] = torch.where(better, ks[rows][arg], winner[s])
    return new, winner


def cost_range(net, kind: str, table: Optional[BudgetTable] = None) -> Tuple[float, float]:
    """Exact (cheapest, most expensive) architecture cost of a supernet's space."""
    return (table or BudgetTable(net, kind)).extremes()


def budgeted_search(
    net,
    kind: str,
    target: float,
    tolerance: float = 0.05,
    logp: Optional[Dict[str, torch.Tensor]] = None,
    table: Optional[BudgetTable] = None,
) -> Tuple[Index, float, float]:
    """The most probable architecture (under ``logp``, default log softmax(alpha)) whose exact cost
    is within ``tolerance`` of ``target``: ``(index, cost, log-probability)``."""
    table = table or BudgetTable(net, kind)
    return table.most_probable_within(target, tolerance, logp if logp is not None else log_probs(net))


def select_architecture(net, table: BudgetTable, target: float, tolerance: float) -> Tuple[Index, Dict[str, float]]:
    """The architecture a search returns now: with a ``target`` (> 0) the most probable one within
    ``tolerance`` of it, else the argmax of every choice; and what it owes to the learned distribution
    (its log-probability beside the argmax's and any architecture's under uniform choices)."""
    logp = log_probs(net)
    argmax = net.argmax()
    index = table.most_probable_within(target, tolerance, logp)[0] if target > 0 else argmax
    info = {
        "log_prob": index_log_prob(index, logp),
        "log_prob_argmax": index_log_prob(argmax, logp),
        "log_prob_uniform": uniform_log_prob(net),
        f"argmax_{table.kind}": table.exact(argmax),
        "is_argmax": index == argmax,
    }
    return index, info


def enumerate_all(net) -> itertools.product:
    """Every assignment of options (for brute-force checks on tiny spaces)."""
    labels = list(net.choices)
    for combo in itertools.product(*[range(net.choices[lbl].size) for lbl in labels]):
        yield dict(zip(labels, combo))
