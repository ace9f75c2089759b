"""Between a supernet's choices and plain arch defs: derive, encode, copy weights.

* :func:`derive_arch`: the plain arch def that an assignment of options (choice label ->
  option index) selects, in the released format (expansions relative to each block's
  real input width, so values like 5.4566 appear as in the published FBNetV2 defs);
* :func:`encode`: the assignment that derives a given plain arch def (e.g. a released
  model) from a space, or an error naming the first block that does not fit;
* :func:`copy_to`: the chosen path's weights, sliced into a derived model.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Dict, List, Tuple

from torch import nn

from ..arch.arch_def import ArchDefError, unify
from ..arch.builder import build_block
from .masked import slice_into

Index = Dict[str, int]


def derive_arch(net, index: Index) -> Dict[str, Any]:
    """The plain arch def of the options ``index`` picks (every choice of ``net``)."""
    stages: List[List[list]] = []
    c_in = net.in_chans
    for name, block in net.search_blocks().items():
        s, _ = net.block_rows[name]
        _, cand = block.chosen(index)
        c_out = block.out_space.chosen(index)
        row: list = [cand.op, c_out, block.stride, 1]
        kwargs = cand.derive_kwargs(index, c_in)
        if kwargs:
            row.append(kwargs)
        while len(stages) <= s:
            stages.append([])
        stages[s].append(row)
        c_in = c_out
    arch: Dict[str, Any] = {"input_size": net.input_size}
    if net.res_sizes is not None and "resolution" in net.choices:
        arch["input_size"] = net.res_sizes[index["resolution"]]
    if net.basic_args:
        arch["basic_args"] = dict(net.basic_args)
    arch["blocks"] = stages
    return arch


def copy_to(net, model: nn.Module, index: Index) -> None:
    """Copy the shared weights of the path ``index`` picks into ``model = build_model(derive_arch(net, index))``."""
    derived_blocks = model.backbone.stages
    for name, block in net.search_blocks().items():
        _, cand = block.chosen(index)
        slice_into(getattr(derived_blocks, name), cand.weight_source())
    slice_into(model.head, net.head)


def _plain_block(spec, c_in: int, arch_def: Dict[str, Any]) -> nn.Module:
    """Build one block of a plain arch def (to read its hidden width)."""
    return build_block(spec, c_in, dict(arch_def.get("basic_args", {})))


def encode(net, arch_def: Dict[str, Any]) -> Dict[str, int]:
    """The choice indices that derive ``arch_def`` (an architecture inside this space).

    Stage by stage, each space row takes the next run of equal-width blocks of
    ``arch_def`` (up to its repeats); blocks a row has left over become identity
    ``skip`` blocks (same width, stride 1). Raises :class:`ArchDefError` naming the
    first block that does not fit, when the space does not contain the architecture.
    """
    index: Dict[str, int] = {label: 0 for label in net.choices}
    label = "arch def to encode"
    target = unify(arch_def, None)
    if "resolution" in net.choices:
        size = int(arch_def.get("input_size", net.input_size))
        if size not in net.res_sizes:
            raise ArchDefError(f"{label}: input_size {size} is not among the resolution options {net.res_sizes}")
        index["resolution"] = net.res_sizes.index(size)
    by_stage: Dict[int, list] = {}
    for spec in target:
        by_stage.setdefault(spec.stage, []).append(spec)
    rows: "OrderedDict[Tuple[int, int], List[str]]" = OrderedDict()
    for name, (s, r) in net.block_rows.items():
        rows.setdefault((s, r), []).append(name)
    blocks = net.search_blocks()
    c_cur = net.in_chans
    n_stages = len({s for s, _ in rows})
    if set(by_stage) != set(range(n_stages)):
        raise ArchDefError(f"{label}: it has {len(by_stage)} stages, the space has {n_stages}")
    pos = {s: 0 for s in by_stage}
    for (s, r), names in rows.items():
        todo, p = by_stage[s], pos[s]
        width, k = _encode_row_width(net, names, todo[p:], c_cur, (s, r))
        space = blocks[names[0]].out_space
        if space.label:
            index[space.label] = space.widths.index(width)
        for i, name in enumerate(names):
            spec = todo[p + i] if i < k else None
            _encode_block(net, index, name, spec, c_cur if i == 0 else width, arch_def)
        pos[s] = p + k
        c_cur = width
    for s, todo in by_stage.items():
        if pos[s] != len(todo):
            _not_contained(f"block {todo[pos[s]].name} is left over after the space's rows of stage {s}")
    return index


def _not_contained(msg: str):
    raise ArchDefError(f"arch def to encode: {msg}; the space does not contain this architecture")


def _encode_row_width(net, names: List[str], todo: list, c_cur: int, row: Tuple[int, int]) -> Tuple[int, int]:
    """The width of space row ``row`` (stage, row) and how many of the arch def's next blocks ``todo`` it takes."""
    blocks = net.search_blocks()
    space, stride = blocks[names[0]].out_space, blocks[names[0]].stride
    first = todo[0] if todo else None
    if first is not None and first.out_channels in space.widths and first.stride == stride:
        k = 1
        while k < len(names) and k < len(todo) and todo[k].out_channels == first.out_channels and todo[k].stride == 1:
            k += 1
        return first.out_channels, k
    if c_cur in space.widths and stride == 1:
        return c_cur, 0  # the whole row is identity skips
    what = f"block {first.name} ({first.op}, {first.out_channels} ch)" if first else "the stage's end"
    _not_contained(f"space row {row[1]} of stage {row[0]} (widths {list(space.widths)}) cannot take {what}")


def _encode_block(net, index: Dict[str, int], name: str, spec, c_in: int, arch_def: Dict[str, Any]) -> None:
    """Set the block-type and expansion choices of space block ``name`` to derive ``spec``
    (None: an identity skip)."""
    block = net.search_blocks()[name]
    op = spec.op if spec else "skip"
    cands = [c for c in block.candidates.values() if c.op == op]
    if not cands:
        _not_contained(f'space block {name} has no candidate "{op}" (for {spec.name if spec else "an identity"})')
    op_label = next(
        (lbl for lbl, _ in block.factors[next(iter(block.candidates))] if net.choices[lbl].kind == "op"), None
    )
    if op_label:
        index[op_label] = list(net.choices[op_label].options).index(op)
    hidden_space = getattr(cands[0], "hidden_space", None)
    if spec is None or hidden_space is None:
        return
    h = _plain_block(spec, c_in, arch_def).hidden_channels
    if h not in hidden_space.widths:
        _not_contained(f"block {spec.name}: hidden width {h} is not among the space's {list(hidden_space.widths)}")
    if hidden_space.label:
        index[hidden_space.label] = hidden_space.widths.index(h)
