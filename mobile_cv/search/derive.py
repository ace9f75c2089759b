"""Budgeted derivation: the most probable architecture whose exact cost meets a budget.

The learned distribution is one categorical per choice, ``p_l = softmax(alpha_l)`` (the
distribution the Gumbel-max trick samples from; the temperature only relaxes it). The
log-probability of an architecture is the sum over choices of ``log p_l[option]``: the
per-choice argmax is its maximum. With a budget we want

    max  sum_l log p_l[i_l]   subject to   |cost(i) / target - 1| <= tolerance

over every assignment ``i`` of options to choices, with ``cost`` the exact FLOPs or params
of the derived model. The cost is a sum of per-block terms, and each block's term depends
only on its own choices (block type, expansion), the widths flowing in and out of it (the
channel choices of its row and of the row before) and the input resolution. So the
problem is a chain: for each resolution, a dynamic program over the blocks in order whose
state is the current row's width option and the cost spent so far (in buckets of
``delta``), keeping the most probable partial architecture per state. Block costs are
tabulated once for every option combination by one vectorised pass of the blocks' own
effective-shape cost (batched one-hot weights; no forward pass, no per-candidate loop).

Costs are rounded to buckets inside the DP and checked exactly afterwards: any
architecture whose exact cost is inside the window by more than ``n_blocks * delta / 2``
on both sides is considered, and the answer's exact cost is always inside the window.

    index = budgeted_index(net, "flops", target=60.0)      # or CostTable(net, "flops")
    lo, hi = cost_range(net, "flops")                      # exact cheapest / most expensive
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from ..errors import UserError
from .choices import Weights
from .masked import Spatial

Index = Dict[str, int]  # choice label -> option index
RESOLUTION = "resolution"


class BudgetError(UserError, ValueError):
    """No architecture of the space meets the requested budget."""


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


def one_hot_batch(net, index: Dict[str, torch.Tensor]) -> Weights:
    """Batched one-hot weights, ``(N, options)`` per choice, from ``(N,)`` option indices."""
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
    net, kind: str, target: float, tolerance: float, n: int, seed: int = 0, max_draws: int = 2_000_000
) -> List[Tuple[Index, float]]:
    """``n`` distinct architectures drawn uniformly per choice, conditioned on an exact cost within
    ``tolerance`` of ``target`` (rejection sampling, costed in vectorised batches).

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
        costs = batch_cost(net, kind, batch)
        drawn += 4096
        for j in torch.nonzero((costs >= lo) & (costs <= hi)).flatten().tolist():
            index = {label: int(batch[label][j]) for label in labels}
            key = repr(net.derive(net.one_hot(index)))  # distinct architectures, not assignments
            found.setdefault(key, (index, float(costs[j])))
            if len(found) == n:
                break
    if len(found) < n:
        raise BudgetError(
            f"only {len(found)} of {n} random architectures within {100 * tolerance:g}% of {target:g} in "
            f"{drawn} uniform draws; widen the tolerance or pick a budget nearer the space's typical cost"
        )
    return list(found.values())


# ---- the cost table ------------------------------------------------------------------------------
@dataclass
class _Term:
    """One block (or the head): its items and their exact costs per resolution.

    An item is one assignment of the block's own choices ``local`` (``opts``, -1 where the
    choice does not matter for the item, e.g. the expansion of a ``skip``) for one pair of
    input width option ``s_in`` and output width option ``s_out``.
    """

    name: str
    in_label: Optional[str]
    out_label: Optional[str]
    n_out: int
    s_in: torch.Tensor  # (K,) long
    s_out: torch.Tensor  # (K,) long
    cost: torch.Tensor  # (R, K) float64, millions
    local: List[str]
    opts: torch.Tensor  # (K, len(local)) long


def _grid(sizes: Sequence[int]) -> torch.Tensor:
    """All index combinations of ``sizes``, as an (N, len(sizes)) long tensor."""
    if not sizes:
        return torch.zeros(1, 0, dtype=torch.long)
    return torch.cartesian_prod(*[torch.arange(s) for s in sizes]).reshape(-1, len(sizes))


class CostTable:
    """Exact per-block costs of every option combination of a supernet, for one cost kind.

    Built once per supernet (it depends on the space, not on alpha); :meth:`budgeted` and
    :meth:`extremes` then solve derivation problems without touching the network.
    """

    def __init__(self, net, kind: str) -> None:
        if kind not in ("flops", "params"):
            raise ValueError(f'kind must be "flops" or "params", got {kind!r}')
        self.net, self.kind = net, kind
        self.res_label = RESOLUTION if RESOLUTION in net.choices else None
        self.n_res = net.choices[RESOLUTION].size if self.res_label else 1
        self.terms: List[_Term] = []
        owner: Dict[str, str] = {}
        spatial = Spatial(tuple(net.res_sizes), RESOLUTION) if self.res_label else Spatial((net.input_size,))
        prev_out = None
        for name, block in net.search_blocks().items():
            if prev_out is not None and block.in_space != prev_out:
                raise NotImplementedError(f"block {name}: its input width is not the previous block's output")
            term = self._block_term(name, block, spatial)
            for label in term.local:
                if owner.setdefault(label, name) != name:
                    raise NotImplementedError(f"choice {label} is used by blocks {owner[label]} and {name}")
            self.terms.append(term)
            spatial, prev_out = block.out_spatial(spatial), block.out_space
        self.terms.append(self._head_term(prev_out, spatial))

    def _size(self, label: Optional[str]) -> int:
        return self.net.choices[label].size if label is not None else 1

    def _costed(self, labels: List[str], fixed_opts: Dict[str, int], cost_fn):
        """Cost ``cost_fn(weights)`` over the grid of ``labels`` (options in ``fixed_opts`` only)."""
        grid = _grid([self._size(lbl) for lbl in labels])
        for j, lbl in enumerate(labels):
            if lbl in fixed_opts:
                grid = grid[grid[:, j] == fixed_opts[lbl]]
        index = {lbl: grid[:, j] for j, lbl in enumerate(labels)}
        for lbl, opt in fixed_opts.items():
            index.setdefault(lbl, torch.full((len(grid),), opt, dtype=torch.long))
        weights = {lbl: torch.nn.functional.one_hot(ix, self._size(lbl)).double() for lbl, ix in index.items()}
        with torch.no_grad():
            value = torch.as_tensor(cost_fn(weights), dtype=torch.float64)
        return grid, value.expand(len(grid)) / 1e6

    def _items(self, grid: torch.Tensor, value: torch.Tensor, labels: List[str], a, b) -> Tuple:
        """Group grid rows that differ only in the resolution into items with a cost per resolution."""
        col = {lbl: j for j, lbl in enumerate(labels)}
        zeros = torch.zeros(len(grid), dtype=torch.long)
        r = grid[:, col[self.res_label]] if self.res_label else zeros
        keys = grid[:, [col[lbl] for lbl in labels if lbl != self.res_label]]
        uniq, inverse = torch.unique(keys, dim=0, return_inverse=True)
        cost = torch.zeros(self.n_res, len(uniq), dtype=torch.float64)
        cost[r, inverse] = value
        first = torch.zeros(len(uniq), dtype=torch.long)
        first[inverse] = torch.arange(len(grid))
        s_in = grid[first, col[a]] if a is not None else zeros[: len(uniq)]
        s_out = grid[first, col[b]] if b is not None else zeros[: len(uniq)]
        return grid[first], s_in, s_out, cost, col

    def _block_term(self, name: str, block, spatial: Spatial) -> _Term:
        a, b = block.in_space.label, block.out_space.label
        state = [lbl for lbl in (self.res_label, a, b) if lbl is not None]
        state = list(dict.fromkeys(state))  # a == b inside a row: one dimension
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
            grid, value = self._costed(labels, factors, lambda w, c=cand: _cost_value(c.cost(spatial, w)[0], self.kind))
            grid, s_in, s_out, cost, col = self._items(grid, value, labels, a, b)
            opts = torch.full((len(grid), len(local)), -1, dtype=torch.long)
            for j, lbl in enumerate(local):
                if lbl in factors:
                    opts[:, j] = factors[lbl]
                elif lbl in free:
                    opts[:, j] = grid[:, col[lbl]]
            parts.append((s_in, s_out, cost, opts))
        s_in, s_out, cost, opts = (torch.cat(x, dim=1 if i == 2 else 0) for i, x in enumerate(zip(*parts)))
        return _Term(name, a, b, self._size(b), s_in, s_out, cost, local, opts)

    def _head_term(self, last, spatial: Spatial) -> _Term:
        label = last.label
        labels = [lbl for lbl in (self.res_label, label) if lbl is not None]
        grid, value = self._costed(labels, {}, lambda w: _cost_value(self.net.head_cost(spatial, w), self.kind))
        _, s_in, s_out, cost, _ = self._items(grid, value, labels, label, label)
        return _Term(
            "head", label, label, self._size(label), s_in, s_out, cost, [], torch.zeros(len(s_in), 0, dtype=torch.long)
        )

    # -- solving --------------------------------------------------------------------------------
    def _item_log_probs(self, logp: Dict[str, torch.Tensor]) -> List[torch.Tensor]:
        """Per term, each item's log p: its own choices, plus its output width choice where the
        term is the first to use it (a row's repeats share one width choice)."""
        seen, out = set(), []
        for t in self.terms:
            lp = torch.zeros(len(t.s_in), dtype=torch.float64)
            for j, lbl in enumerate(t.local):
                o = t.opts[:, j]
                lp += torch.where(o >= 0, logp[lbl][o.clamp_min(0)], logp[lbl].max())
            if t.out_label is not None and t.out_label not in seen:
                seen.add(t.out_label)
                lp += logp[t.out_label][t.s_out]
            out.append(lp)
        return out

    def extreme(self, largest: bool = False) -> Tuple[Index, float]:
        """The exact cheapest (or most expensive) architecture: ``(index, cost)``."""
        sign = -1.0 if largest else 1.0
        best = None
        for r in range(self.n_res):
            dp, pointers = torch.zeros(1, dtype=torch.float64), []
            for t in self.terms:
                reach = dp[t.s_in] + sign * t.cost[r]
                dp = torch.full((t.n_out,), math.inf, dtype=torch.float64).scatter_reduce(0, t.s_out, reach, "amin")
                pointers.append(torch.nonzero(reach == dp[t.s_out]).flatten())  # items that reach their minimum
            s = int(dp.argmin())
            if best is None or float(dp[s]) < best[0]:
                best = (float(dp[s]), r, s, pointers)
        value, r, s, pointers = best
        cost = sign * value
        index: Index = {label: 0 for label in self.net.choices}
        if self.res_label:
            index[self.res_label] = r
        for t, winners in zip(reversed(self.terms), reversed(pointers)):
            k = int(next(k for k in winners.tolist() if int(t.s_out[k]) == s))
            for j, lbl in enumerate(t.local):
                if t.opts[k, j] >= 0:
                    index[lbl] = int(t.opts[k, j])
            if t.out_label is not None:
                index[t.out_label] = s
            s = int(t.s_in[k])
        return index, cost

    def extremes(self) -> Tuple[float, float]:
        """Exact (cheapest, most expensive) architecture cost of the space."""
        return self.extreme(False)[1], self.extreme(True)[1]

    def budgeted(
        self, target: float, tolerance: float, logp: Dict[str, torch.Tensor], buckets_per_window: int = 64
    ) -> Tuple[Index, float, float]:
        """The most probable assignment whose exact cost is within ``tolerance`` of ``target``.

        Returns ``(index, exact cost, log-probability)``. Costs are rounded to buckets of
        ``delta = 2 * tolerance * target / buckets_per_window`` inside the DP.

        Raises:
            BudgetError: no architecture of the space is within the window.
        """
        lo, hi = target * (1 - tolerance), target * (1 + tolerance)
        cheapest, dearest = self.extremes()
        unit = "MFLOPs" if self.kind == "flops" else "M params"
        if hi < cheapest or lo > dearest:
            raise BudgetError(
                f"no architecture of the space costs {target:g} {unit} (+-{100 * tolerance:g}%): it spans "
                f"{cheapest:.4g}-{dearest:.4g} {unit}; pick a target in that range"
            )
        found = self._search(lo, hi, logp, (hi - lo) / buckets_per_window, nearest_to=None)
        if found is not None:
            index, cost = found
            return index, cost, index_log_prob(index, logp)
        # for the message: the architectures nearest the target on either side
        wide = self._search(cheapest, dearest, logp, (hi - lo) / buckets_per_window, nearest_to=target)
        near = ", ".join(f"{c:.4g} {unit} ({100 * (c / target - 1):+.1f}%)" for c in wide)
        raise BudgetError(
            f"no architecture of the space is within {100 * tolerance:g}% of {target:g} {unit} (it spans "
            f"{cheapest:.4g}-{dearest:.4g} {unit}; the nearest cost {near}); move the target or raise the tolerance"
        )

    def _search(self, lo: float, hi: float, logp, delta: float, nearest_to: Optional[float]):
        """The DP over cost buckets of width ``delta`` up to ``hi``.

        Returns the most probable ``(index, exact cost)`` whose cost is in ``[lo, hi]`` (None if
        there is none) or, with ``nearest_to``, the exact costs of the architectures nearest to it
        from below and from above.
        """
        slack = len(self.terms) * delta / 2  # worst-case rounding drift of a path
        n_buckets = int(math.ceil((hi + slack) / delta)) + 1
        item_lp = self._item_log_probs(logp)
        res_lp = logp[self.res_label] if self.res_label else torch.zeros(1, dtype=torch.float64)
        cands, back = [], []
        for r in range(self.n_res):
            dp = torch.full((1, n_buckets), -math.inf, dtype=torch.float64)
            dp[0, 0] = float(res_lp[r])
            pointers = []
            for t, lp in zip(self.terms, item_lp):
                dp, ptr = _step(dp, t, t.cost[r], lp, delta)
                pointers.append(ptr)
            back.append(pointers)
            s, bk = torch.nonzero(torch.isfinite(dp), as_tuple=True)
            near = (bk * delta >= lo - slack) & (bk * delta <= hi + slack)
            cands += [(float(dp[si, bi]), r, si, bi) for si, bi in zip(s[near].tolist(), bk[near].tolist())]
        if nearest_to is not None:
            costs = [self._decode(r, s, bk, back[r], logp)[1] for _, r, s, bk in cands]
            below = [c for c in costs if c <= nearest_to]
            above = [c for c in costs if c > nearest_to]
            return ([max(below)] if below else []) + ([min(above)] if above else [])
        # most probable first; the first whose exact cost is inside the window wins
        for _, r, s, bk in sorted(cands, reverse=True)[:512]:
            index, cost = self._decode(r, s, bk, back[r], logp)
            if lo <= cost <= hi:
                return index, cost
        return None

    def _decode(self, r: int, s: int, bk: int, pointers, logp) -> Tuple[Index, float]:
        index: Index = {label: int(lp.argmax()) for label, lp in logp.items()}
        if self.res_label:
            index[self.res_label] = r
        cost = 0.0
        for t, (best, offsets) in zip(reversed(self.terms), reversed(pointers)):
            k = int(best[s, bk])
            assert k >= 0, "a reachable DP cell has a winning item"
            for j, lbl in enumerate(t.local):
                if t.opts[k, j] >= 0:
                    index[lbl] = int(t.opts[k, j])
            if t.out_label is not None:
                index[t.out_label] = int(t.s_out[k])
            cost += float(t.cost[r, k])
            bk -= int(offsets[k])
            s = int(t.s_in[k])
        return index, cost


def _cost_value(cost, kind: str):
    return cost.flops if kind == "flops" else cost.params


def _step(dp: torch.Tensor, term: _Term, cost: torch.Tensor, lp: torch.Tensor, delta: float):
    """One DP transition: ``new[s_out, b + o_k] = max_k dp[s_in_k, b] + lp_k``.

    Returns the new table and the back-pointers (the winning item per cell, and every
    item's bucket offset).
    """
    n_out = term.n_out
    n_buckets = dp.shape[1]
    offsets = torch.round(cost / delta).long()
    valid = offsets < n_buckets
    # of the items that share (s_in, s_out, rounded cost) only the most probable can win (the first on ties)
    key = (term.s_in * n_out + term.s_out) * n_buckets + offsets.clamp_max(n_buckets - 1)
    n_keys = int(key.max()) + 1
    top = torch.full((n_keys,), -math.inf, dtype=torch.float64).scatter_reduce(0, key, lp, "amax")
    order = torch.arange(len(lp))
    first = torch.full((n_keys,), len(lp)).scatter_reduce(0, key, torch.where(lp >= top[key], order, len(lp)), "amin")
    valid &= order == first[key]
    new = torch.full((n_out, n_buckets), -math.inf, dtype=torch.float64)
    best = torch.full((n_out, n_buckets), -1, dtype=torch.long)
    cols = torch.arange(n_buckets)
    for k0 in range(0, len(lp), 2048):  # bounded memory: (items, buckets) per chunk
        ks = torch.arange(k0, min(k0 + 2048, len(lp)))
        ks = ks[valid[ks]]
        if len(ks) == 0:
            continue
        src = cols[None, :] - offsets[ks][:, None]  # the bucket each item extends
        vals = (
            torch.where(
                src >= 0, dp[term.s_in[ks]].gather(1, src.clamp_min(0)), torch.tensor(-math.inf, dtype=torch.float64)
            )
            + lp[ks][:, None]
        )
        for s in term.s_out[ks].unique().tolist():
            rows = term.s_out[ks] == s
            v, arg = vals[rows].max(0)
            better = v > new[s]
            new[s] = torch.where(better, v, new[s])
            best[s] = torch.where(better, ks[rows][arg], best[s])
    return new, (best, offsets)


def cost_range(net, kind: str, table: Optional[CostTable] = None) -> Tuple[float, float]:
    """Exact (cheapest, most expensive) architecture cost of a supernet's space, in millions."""
    return (table or CostTable(net, kind)).extremes()


def budgeted_index(
    net,
    kind: str,
    target: float,
    tolerance: float = 0.05,
    logp: Optional[Dict[str, torch.Tensor]] = None,
    table: Optional[CostTable] = None,
) -> Tuple[Index, float, float]:
    """The most probable architecture (under ``logp``, default log softmax(alpha)) whose exact cost
    is within ``tolerance`` of ``target``: ``(index, cost, log-probability)``."""
    table = table or CostTable(net, kind)
    return table.budgeted(target, tolerance, logp if logp is not None else log_probs(net))


def enumerate_all(net) -> itertools.product:
    """Every assignment of options (for brute-force checks on tiny spaces)."""
    labels = list(net.choices)
    for combo in itertools.product(*[range(net.choices[lbl].size) for lbl in labels]):
        yield dict(zip(labels, combo))
