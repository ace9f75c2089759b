"""The released FBNetV2 architectures (Wan et al., CVPR 2020), as plain arch-def dicts.

Numbers from the public FBNet model definitions (tests/data/arch_defs.json, checked
by tests/arch/test_published.py). Expansion ratios are relative to each block's real
input width, hence values like 5.4566: these defs were derived by DMaskingNAS from
a space whose expansion options referred to the space's maximum widths.
"""

# Settings of every searched inverted-residual row: SE width = hidden / 4, and the
# last BN of a residual block starts at gamma 0.
_IRF = {"less_se_channels": False, "zero_last_bn_gamma": True}


def _e(expansion):
    return {"expansion": expansion}


FBNetV2_F1 = {
    "input_size": 128,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [["conv_k3_hs", 8, 2, 1]],  # stage 0
        [["ir_k5", 8, 1, 1, _e(1), _IRF]],  # stage 1
        [  # stage 2
            ["ir_k5", 24, 2, 1, _e(5.4566), _IRF],
            ["ir_k5", 24, 1, 1, _e(4.7912), _IRF],
        ],
        [  # stage 3
            ["ir_k5_sehsig", 32, 2, 1, _e(5.3501), _IRF],
            ["ir_k5_sehsig", 24, 1, 1, _e(4.5379), _IRF],
        ],
        [  # stage 4
            ["ir_k5_hs", 56, 2, 1, _e(5.7133), _IRF],
            ["ir_k3_hs", 56, 1, 1, _e(4.1212), _IRF],
            ["ir_k3_sehsig_hs", 56, 1, 1, _e(5.1246), _IRF],
            ["skip", 80, 1, 1, _e(5.0333), _IRF],
            ["ir_k5_sehsig_hs", 80, 1, 1, _e(4.507), _IRF],
            ["ir_k5_sehsig_hs", 80, 1, 1, _e(1.7712), _IRF],
        ],
        [  # stage 5
            ["ir_k3_sehsig_hs", 144, 2, 1, _e(4.5685), _IRF],
            ["ir_k5_sehsig_hs", 144, 1, 1, _e(5.84), _IRF],
            ["ir_k5_sehsig_hs", 144, 1, 1, _e(6.8754), _IRF],
            ["skip", 224, 1, 1, _e(6.5245), _IRF],
        ],
        [["ir_pool_hs", 1600, 1, 1, _e(6)]],  # stage 6
    ],
}

FBNetV2_F2 = {
    "input_size": 160,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [["conv_k3_hs", 8, 2, 1]],  # stage 0
        [["ir_k5", 8, 1, 1, _e(1), _IRF]],  # stage 1
        [  # stage 2
            ["ir_k5", 24, 2, 1, _e(5.4566), _IRF],
            ["ir_k5", 24, 1, 1, _e(4.7912), _IRF],
        ],
        [  # stage 3
            ["ir_k5_sehsig", 32, 2, 1, _e(5.3501), _IRF],
            ["ir_k5_sehsig", 24, 1, 1, _e(4.5379), _IRF],
        ],
        [  # stage 4
            ["ir_k5_hs", 56, 2, 1, _e(5.7133), _IRF],
            ["ir_k3_hs", 56, 1, 1, _e(4.1212), _IRF],
            ["ir_k3_sehsig_hs", 56, 1, 1, _e(5.1246), _IRF],
            ["skip", 80, 1, 1, _e(5.0333), _IRF],
            ["ir_k5_sehsig_hs", 80, 1, 1, _e(4.507), _IRF],
            ["ir_k5_sehsig_hs", 80, 1, 1, _e(1.7712), _IRF],
        ],
        [  # stage 5
            ["ir_k3_sehsig_hs", 144, 2, 1, _e(4.5685), _IRF],
            ["ir_k5_sehsig_hs", 144, 1, 1, _e(5.84), _IRF],
            ["ir_k5_sehsig_hs", 144, 1, 1, _e(6.8754), _IRF],
            ["skip", 224, 1, 1, _e(6.5245), _IRF],
        ],
        [["ir_pool_hs", 1600, 1, 1, _e(6)]],  # stage 6
    ],
}

FBNetV2_F3 = {
    "input_size": 192,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [["conv_k3_hs", 8, 2, 1]],  # stage 0
        [["ir_k5", 8, 1, 1, _e(1), _IRF]],  # stage 1
        [  # stage 2
            ["ir_k5", 24, 2, 1, _e(5.4566), _IRF],
            ["ir_k5", 24, 1, 1, _e(4.7912), _IRF],
        ],
        [  # stage 3
            ["ir_k5_sehsig", 32, 2, 1, _e(5.3501), _IRF],
            ["ir_k5_sehsig", 24, 1, 1, _e(4.5379), _IRF],
        ],
        [  # stage 4
            ["ir_k5_hs", 56, 2, 1, _e(5.7133), _IRF],
            ["ir_k3_hs", 56, 1, 1, _e(4.1212), _IRF],
            ["ir_k3_sehsig_hs", 56, 1, 1, _e(5.1246), _IRF],
            ["skip", 80, 1, 1, _e(5.0333), _IRF],
            ["ir_k5_sehsig_hs", 80, 1, 1, _e(4.507), _IRF],
            ["ir_k5_sehsig_hs", 80, 1, 1, _e(1.7712), _IRF],
        ],
        [  # stage 5
            ["ir_k3_sehsig_hs", 144, 2, 1, _e(4.5685), _IRF],
            ["ir_k5_sehsig_hs", 144, 1, 1, _e(5.84), _IRF],
            ["ir_k5_sehsig_hs", 144, 1, 1, _e(6.8754), _IRF],
            ["skip", 224, 1, 1, _e(6.5245), _IRF],
        ],
        [["ir_pool_hs", 1984, 1, 1, _e(6)]],  # stage 6
    ],
}

FBNetV2_F4 = {
    "input_size": 224,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [["conv_k3_hs", 16, 2, 1]],  # stage 0
        [["ir_k3_hs", 16, 1, 1, _e(1), _IRF]],  # stage 1
        [  # stage 2
            ["ir_k5_hs", 24, 2, 1, _e(5.4566), _IRF],
            ["ir_k5_hs", 24, 1, 1, _e(1.7912), _IRF],
            ["ir_k5_hs", 24, 1, 1, _e(1.7912), _IRF],
        ],
        [  # stage 3
            ["ir_k5_sehsig", 32, 2, 1, _e(5.3501), _IRF],
            ["ir_k5_sehsig", 32, 1, 1, _e(3.5379), _IRF],
            ["ir_k5_sehsig", 32, 1, 1, _e(4.5379), _IRF],
            ["ir_k5_sehsig", 32, 1, 1, _e(4.5379), _IRF],
        ],
        [  # stage 4
            ["ir_k5_hs", 64, 2, 1, _e(5.7133), _IRF],
            ["ir_k3_hs", 64, 1, 1, _e(2.1212), _IRF],
            ["skip", 64, 1, 1, _e(3.1246), _IRF],
            ["ir_k3_hs", 104, 1, 1, _e(5.0333), _IRF],
            ["ir_k5_sehsig_hs", 104, 1, 1, _e(2.507), _IRF],
            ["ir_k5_sehsig_hs", 104, 1, 1, _e(1.7712), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(3.7712), _IRF],
        ],
        [  # stage 5
            ["ir_k3_sehsig_hs", 184, 2, 1, _e(5.5685), _IRF],
            ["ir_k5_sehsig_hs", 184, 1, 1, _e(2.84), _IRF],
            ["ir_k5_sehsig_hs", 184, 1, 1, _e(4.8754), _IRF],
            ["skip", 224, 1, 1, _e(6.5245), _IRF],
        ],
        [["ir_pool_hs", 1984, 1, 1, _e(6)]],  # stage 6
    ],
}

FBNetV2_L1 = {
    "input_size": 224,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [["conv_k3_hs", 16, 2, 1]],  # stage 0
        [["ir_k3_hs", 16, 1, 1, _e(1), _IRF]],  # stage 1
        [  # stage 2
            ["ir_k5_hs", 24, 2, 1, _e(5.4566), _IRF],
            ["ir_k5_hs", 24, 1, 1, _e(1.7912), _IRF],
            ["ir_k3_hs", 24, 1, 1, _e(1.7912), _IRF],
            ["ir_k5_hs", 24, 1, 1, _e(1.7912), _IRF],
        ],
        [  # stage 3
            ["ir_k5_sehsig_hs", 40, 2, 1, _e(5.3501), _IRF],
            ["ir_k5_sehsig_hs", 32, 1, 1, _e(3.5379), _IRF],
            ["ir_k5_sehsig_hs", 32, 1, 1, _e(4.5379), _IRF],
            ["ir_k5_sehsig_hs", 32, 1, 1, _e(4.5379), _IRF],
        ],
        [  # stage 4
            ["ir_k5_hs", 64, 2, 1, _e(5.7133), _IRF],
            ["ir_k3_hs", 64, 1, 1, _e(2.1212), _IRF],
            ["skip", 64, 1, 1, _e(3.1246), _IRF],
            ["ir_k3_hs", 64, 1, 1, _e(3.1246), _IRF],
            ["ir_k3_hs", 112, 1, 1, _e(5.0333), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(2.507), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(1.7712), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(2.7712), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(3.7712), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(3.7712), _IRF],
        ],
        [  # stage 5
            ["ir_k3_sehsig_hs", 184, 2, 1, _e(5.5685), _IRF],
            ["ir_k5_sehsig_hs", 184, 1, 1, _e(2.84), _IRF],
            ["ir_k5_sehsig_hs", 184, 1, 1, _e(2.84), _IRF],
            ["ir_k5_sehsig_hs", 184, 1, 1, _e(4.8754), _IRF],
            ["ir_k5_sehsig_hs", 184, 1, 1, _e(4.8754), _IRF],
            ["skip", 224, 1, 1, _e(6.5245), _IRF],
        ],
        [["ir_pool_hs", 1984, 1, 1, _e(6)]],  # stage 6
    ],
}

FBNetV2_L2 = {
    "input_size": 256,
    "basic_args": {"width_divisor": 8},
    "blocks": [
        [["conv_k3_hs", 16, 2, 1]],  # stage 0
        [["ir_k3_hs", 16, 1, 1, _e(1), _IRF]],  # stage 1
        [  # stage 2
            ["ir_k5_hs", 24, 2, 1, _e(5.4566), _IRF],
            ["ir_k5_hs", 24, 1, 1, _e(1.7912), _IRF],
            ["ir_k3_hs", 24, 1, 1, _e(1.7912), _IRF],
            ["ir_k5_hs", 24, 1, 1, _e(1.7912), _IRF],
        ],
        [  # stage 3
            ["ir_k5_sehsig_hs", 40, 2, 1, _e(5.3501), _IRF],
            ["ir_k5_sehsig_hs", 32, 1, 1, _e(3.5379), _IRF],
            ["ir_k5_sehsig_hs", 32, 1, 1, _e(4.5379), _IRF],
            ["ir_k5_sehsig_hs", 32, 1, 1, _e(4.5379), _IRF],
        ],
        [  # stage 4
            ["ir_k5_hs", 64, 2, 1, _e(5.7133), _IRF],
            ["ir_k3_hs", 64, 1, 1, _e(2.1212), _IRF],
            ["skip", 64, 1, 1, _e(3.1246), _IRF],
            ["ir_k3_hs", 64, 1, 1, _e(3.1246), _IRF],
            ["ir_k3_hs", 112, 1, 1, _e(5.0333), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(2.507), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(1.7712), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(2.7712), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(3.7712), _IRF],
            ["ir_k5_sehsig_hs", 112, 1, 1, _e(3.7712), _IRF],
        ],
        [  # stage 5
            ["ir_k3_sehsig_hs", 184, 2, 1, _e(5.5685), _IRF],
            ["ir_k5_sehsig_hs", 184, 1, 1, _e(2.84), _IRF],
            ["ir_k5_sehsig_hs", 184, 1, 1, _e(2.84), _IRF],
            ["ir_k5_sehsig_hs", 184, 1, 1, _e(4.8754), _IRF],
            ["ir_k5_sehsig_hs", 184, 1, 1, _e(4.8754), _IRF],
            ["skip", 224, 1, 1, _e(6.5245), _IRF],
        ],
        [["ir_pool_hs", 1984, 1, 1, _e(6)]],  # stage 6
    ],
}


ARCH_DEFS = {
    "FBNetV2_F1": FBNetV2_F1,
    "FBNetV2_F2": FBNetV2_F2,
    "FBNetV2_F3": FBNetV2_F3,
    "FBNetV2_F4": FBNetV2_F4,
    "FBNetV2_L1": FBNetV2_L1,
    "FBNetV2_L2": FBNetV2_L2,
}
