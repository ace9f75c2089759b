"""The released FBNet (v1) architectures fbnet_a/b/c (Wu et al., CVPR 2019) as arch-def dicts.

Numbers from the public FBNet model definitions (tests/data/arch_defs.json). These
models were trained with biases on every conv (``_BIAS``) and no width rounding
(no ``basic_args``: width_divisor 1).
"""

_BIAS = {"bias": True}


def _e(expansion):
    return {"expansion": expansion}


fbnet_a = {
    "input_size": 224,
    "blocks": [
        [["conv_k3", 16, 2, 1]],  # stage 0
        [["skip", 16, 1, 1]],  # stage 1
        [  # stage 2
            ["ir_k3", 24, 2, 1, _e(3), _BIAS],
            ["ir_k3", 24, 1, 1, _e(1), _BIAS],
            ["skip", 24, 1, 1, _BIAS],
            ["skip", 24, 1, 1, _BIAS],
        ],
        [  # stage 3
            ["ir_k5", 32, 2, 1, _e(6), _BIAS],
            ["ir_k3", 32, 1, 1, _e(3), _BIAS],
            ["ir_k5", 32, 1, 1, _e(1), _BIAS],
            ["ir_k3", 32, 1, 1, _e(3), _BIAS],
        ],
        [  # stage 4
            ["ir_k5", 64, 2, 1, _e(6), _BIAS],
            ["ir_k5", 64, 1, 1, _e(3), _BIAS],
            ["ir_k5_g2", 64, 1, 1, _e(1), _BIAS, {"pwl_groups": 2}],
            ["ir_k5", 64, 1, 1, _e(6), _BIAS],
            ["ir_k3", 112, 1, 1, _e(6), _BIAS],
            ["ir_k5_g2", 112, 1, 1, _e(1), _BIAS, {"pwl_groups": 2}],
            ["ir_k5", 112, 1, 1, _e(3), _BIAS],
            ["ir_k3_g2", 112, 1, 1, _e(1), _BIAS, {"pwl_groups": 2}],
        ],
        [  # stage 5
            ["ir_k5", 184, 2, 1, _e(6), _BIAS],
            ["ir_k5", 184, 1, 1, _e(6), _BIAS],
            ["ir_k5", 184, 1, 1, _e(3), _BIAS],
            ["ir_k5", 184, 1, 1, _e(6), _BIAS],
            ["ir_k5", 352, 1, 1, _e(6), _BIAS],
        ],
        [["conv_k1", 1504, 1, 1]],  # stage 6
    ],
}

fbnet_b = {
    "input_size": 224,
    "blocks": [
        [["conv_k3", 16, 2, 1]],  # stage 0
        [["ir_k3", 16, 1, 1, _e(1), _BIAS]],  # stage 1
        [  # stage 2
            ["ir_k3", 24, 2, 1, _e(6), _BIAS],
            ["ir_k5", 24, 1, 1, _e(1), _BIAS],
            ["ir_k3", 24, 1, 1, _e(1), _BIAS],
            ["ir_k3", 24, 1, 1, _e(1), _BIAS],
        ],
        [  # stage 3
            ["ir_k5", 32, 2, 1, _e(6), _BIAS],
            ["ir_k5", 32, 1, 1, _e(3), _BIAS],
            ["ir_k3", 32, 1, 1, _e(6), _BIAS],
            ["ir_k5", 32, 1, 1, _e(6), _BIAS],
        ],
        [  # stage 4
            ["ir_k5", 64, 2, 1, _e(6), _BIAS],
            ["ir_k5", 64, 1, 1, _e(6), _BIAS],
            ["skip", 64, 1, 1],
            ["ir_k5", 64, 1, 1, _e(3), _BIAS],
            ["ir_k5", 112, 1, 1, _e(6), _BIAS],
            ["ir_k3", 112, 1, 1, _e(1), _BIAS],
            ["ir_k5", 112, 1, 1, _e(1), _BIAS],
            ["ir_k5", 112, 1, 1, _e(3), _BIAS],
        ],
        [  # stage 5
            ["ir_k5", 184, 2, 1, _e(6), _BIAS],
            ["ir_k5", 184, 1, 1, _e(1), _BIAS],
            ["ir_k5", 184, 1, 1, _e(6), _BIAS],
            ["ir_k5", 184, 1, 1, _e(6), _BIAS],
            ["ir_k3", 352, 1, 1, _e(6), _BIAS],
        ],
        [["conv_k1", 1984, 1, 1]],  # stage 6
    ],
}

fbnet_c = {
    "input_size": 224,
    "blocks": [
        [["conv_k3", 16, 2, 1]],  # stage 0
        [["ir_k3", 16, 1, 1, _e(1), _BIAS]],  # stage 1
        [  # stage 2
            ["ir_k3", 24, 2, 1, _e(6), _BIAS],
            ["skip", 24, 1, 1, _e(1), _BIAS],
            ["ir_k3", 24, 1, 1, _e(1), _BIAS],
            ["ir_k3", 24, 1, 1, _e(1), _BIAS],
        ],
        [  # stage 3
            ["ir_k5", 32, 2, 1, _e(6), _BIAS],
            ["ir_k5", 32, 1, 1, _e(3), _BIAS],
            ["ir_k5", 32, 1, 1, _e(6), _BIAS],
            ["ir_k3", 32, 1, 1, _e(6), _BIAS],
        ],
        [  # stage 4
            ["ir_k5", 64, 2, 1, _e(6), _BIAS],
            ["ir_k5", 64, 1, 1, _e(3), _BIAS],
            ["ir_k5", 64, 1, 1, _e(6), _BIAS],
            ["ir_k5", 64, 1, 1, _e(6), _BIAS],
            ["ir_k5", 112, 1, 1, _e(6), _BIAS],
            ["ir_k5", 112, 1, 1, _e(6), _BIAS],
            ["ir_k5", 112, 1, 1, _e(6), _BIAS],
            ["ir_k5", 112, 1, 1, _e(3), _BIAS],
        ],
        [  # stage 5
            ["ir_k5", 184, 2, 1, _e(6), _BIAS],
            ["ir_k5", 184, 1, 1, _e(6), _BIAS],
            ["ir_k5", 184, 1, 1, _e(6), _BIAS],
            ["ir_k5", 184, 1, 1, _e(6), _BIAS],
            ["ir_k3", 352, 1, 1, _e(6), _BIAS],
        ],
        [["conv_k1", 1984, 1, 1]],  # stage 6
    ],
}


ARCH_DEFS = {"fbnet_a": fbnet_a, "fbnet_b": fbnet_b, "fbnet_c": fbnet_c}
