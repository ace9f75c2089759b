"""DMaskingNAS search spaces, as arch-def dicts with search rows.

The paper's exact per-stage tables were not available, so these are our spaces
(docs/dmaskingnas.md), designed so their envelopes contain the released models: every
FBNetV2_F1..F4 is a derivable architecture of ``fbnetv2_f_space`` (and of
``fbnetv2_p_space``, at 224 px), and FBNetV2_L1/L2 of ``fbnetv2_l_space``;
``tests/search/test_search.py::test_spaces_contain_released_models`` derives each one and
checks its FLOPs and params against the released model. Blocks a smaller model lacks are
identity ``skip`` candidates (same width, stride 1).

Row field 1 is the row's maximum width; ``channels`` are the options; a row's
channel choice is shared by its repeated blocks, block type and expansion are
chosen per block. Expansion options are relative to the row's maximum input
width; :func:`expansions` spells them so the hidden widths step by 8, which is
what the released models' ratios (5.4566, ...) resolve to.
"""

# The FBNetV2 block-type candidates: ir k3/k5 x SE (hard-sigmoid) or not x ReLU/h-swish, + skip.
FBNETV2_OPS = [
    "ir_k3",
    "ir_k5",
    "ir_k3_hs",
    "ir_k5_hs",
    "ir_k3_sehsig",
    "ir_k5_sehsig",
    "ir_k3_sehsig_hs",
    "ir_k5_sehsig_hs",
    "skip",
]

_IRF = {"less_se_channels": False, "zero_last_bn_gamma": True}


def expansions(lo, hi, *in_maxes, step=8):
    """Expansion options that give every hidden width lo, lo+step, ..., hi to blocks
    whose maximum input width is any of ``in_maxes`` (a row's first block sees the
    previous row's maximum, its repeats see the row's own)."""
    return sorted({round(h / m, 6) for m in in_maxes for h in range(lo, hi + 1, step)})


def _choice(c_max, stride, n, channels, expansion):
    return ["choice", c_max, stride, n, {"ops": FBNETV2_OPS, "channels": channels, "expansion": expansion}, _IRF]


# FLOPs-targeted FBNetV2-F space (resolution searched) -----------------------------------------
def _f_blocks(last_max=240, pool_channels=(1600, 1984)):
    return [
        [["masked-channel", 16, 2, 1, {"op": "conv_k3_hs", "channels": (8, 16, 8)}]],
        [_choice(16, 1, 1, (8, 16, 8), expansions(8, 32, 16))],
        [_choice(32, 2, 3, (16, 32, 8), expansions(16, 128, 16, 32))],
        [
            _choice(40, 2, 1, (24, 40, 8), expansions(32, 160, 32)),
            _choice(40, 1, 3, (24, 40, 8), expansions(40, 200, 40)),
        ],
        [
            _choice(64, 2, 3, (48, 64, 8), expansions(48, 320, 40, 64)),
            _choice(112, 1, 3, (72, 112, 8), expansions(64, 400, 64, 112)),
            _choice(120, 1, 1, (72, 120, 8), expansions(112, 448, 112)),
        ],
        [
            _choice(200, 2, 3, (136, 200, 8), expansions(336, 1024, 120, 200)),
            _choice(last_max, 1, 1, (200, last_max, 8), expansions(400, 960, 200, last_max)),
        ],
        [
            [
                "masked-channel",
                1984,
                1,
                1,
                {
                    "op": "ir_pool_hs",
                    "channels": list(pool_channels),
                    "expansion": expansions(1152, 1440, last_max, step=32),
                },
            ]
        ],
    ]


fbnetv2_f_space = {
    "input_size": 224,
    "basic_args": {"width_divisor": 8},
    "search": {"resolution": [128, 160, 192, 224]},
    "blocks": _f_blocks(),
}

# Params-targeted FBNetV2-P space: the F blocks with a wider last stage and head, at a
# fixed 224 px (parameters do not depend on the resolution).
fbnetv2_p_space = {
    "input_size": 224,
    "basic_args": {"width_divisor": 8},
    "search": {"resolution": [224]},
    "blocks": _f_blocks(last_max=288, pool_channels=(1280, 1600, 1984)),
}

# Large FBNetV2-L space: deeper stages 2-5, resolution 224 or 256 ------------------------------
fbnetv2_l_space = {
    "input_size": 256,
    "basic_args": {"width_divisor": 8},
    "search": {"resolution": [224, 256]},
    "blocks": [
        [["masked-channel", 24, 2, 1, {"op": "conv_k3_hs", "channels": (16, 24, 8)}]],
        [_choice(24, 1, 1, (16, 24, 8), expansions(16, 48, 24))],
        [_choice(32, 2, 4, (24, 32, 8), expansions(32, 128, 24, 32))],
        [
            _choice(48, 2, 1, (32, 48, 8), expansions(64, 192, 32)),
            _choice(48, 1, 3, (32, 48, 8), expansions(96, 192, 48)),
        ],
        [
            _choice(80, 2, 4, (56, 80, 8), expansions(128, 320, 48, 80)),
            _choice(128, 1, 6, (96, 128, 8), expansions(192, 480, 80, 128)),
        ],
        [
            _choice(208, 2, 5, (160, 208, 8), expansions(448, 1024, 128, 208)),
            _choice(256, 1, 1, (208, 256, 8), expansions(400, 1024, 208, 256)),
        ],
        [
            [
                "masked-channel",
                1984,
                1,
                1,
                {"op": "ir_pool_hs", "channels": [1600, 1984], "expansion": expansions(1152, 1536, 256, step=32)},
            ]
        ],
    ],
}

# Small-input space for 28-32 px images (the embedded MNIST demo, 1 input channel) ---------
# Four block types instead of nine keep a search epoch under half a minute on 2 CPU cores.
MNIST_OPS = ["ir_k3", "ir_k5_hs", "ir_k3_sehsig_hs", "skip"]


def _small(c_max, stride, n, channels, expansion):
    return ["choice", c_max, stride, n, {"ops": MNIST_OPS, "channels": channels, "expansion": expansion}, _IRF]


mnist_small_space = {
    "input_size": 32,
    "basic_args": {"width_divisor": 8},
    "search": {"resolution": [16, 24, 32]},
    "blocks": [
        [["masked-channel", 16, 2, 1, {"op": "conv_k3_hs", "channels": (8, 16, 8)}]],
        [_small(24, 1, 1, (8, 24, 8), [1.0, 2.0, 4.0])],
        [_small(40, 2, 2, (16, 40, 8), [1.0, 2.0, 4.0, 6.0])],
        [_small(64, 2, 2, (32, 64, 16), [1.0, 2.0, 4.0, 6.0])],
        [["masked-channel", 256, 1, 1, {"op": "ir_pool_hs", "channels": (128, 256, 64), "expansion": 4}]],
    ],
}

ARCH_DEFS = {
    "fbnetv2_f_space": fbnetv2_f_space,
    "fbnetv2_p_space": fbnetv2_p_space,
    "fbnetv2_l_space": fbnetv2_l_space,
    "mnist_small_space": mnist_small_space,
}
