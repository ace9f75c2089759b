"""tools/search.py end to end: outputs, search -> train, exact resume after SIGKILL,
torchrun, FLOPs target, and bad input."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch

import mobile_cv
from mobile_cv.config import get_cfg
from mobile_cv.data import build_dataset
from mobile_cv.engine import read_metrics, temperature_at
from tests.helpers import KILL_AT_STEP, ROOT, TORCHRUN

TINY_SPACE = {
    "input_size": 16,
    "basic_args": {"width_divisor": 8},
    "search": {"resolution": [8, 16]},
    "blocks": [
        [["masked-channel", 8, 2, 1, {"op": "conv_k3_hs", "channels": [4, 8]}]],
        [
            [
                "choice",
                16,
                2,
                1,
                {
                    "ops": ["ir_k3", "ir_k5_hs", "skip"],
                    "channels": {"min": 8, "max": 16, "step": 8},
                    "expansion": [1, 2],
                },
            ]
        ],
        [["masked-channel", 32, 1, 1, {"op": "ir_pool_hs", "channels": [16, 32], "expansion": 2}]],
    ],
}
TINY = [
    "DATA.INPUT_SIZE",
    "16",
    "DATA.LIMIT",
    "128",
    "SEARCH.BATCH_SIZE",
    "32",
    "SEARCH.WARMUP_EPOCHS",
    "1",
    "SEARCH.COST.TARGET",
    "0.012",
]  # the tiny space spans 0.0025-0.033 MFLOPs


def tool(name, *args, flags=()):
    return [
        sys.executable,
        os.path.join(ROOT, "tools", name),
        "--config-file",
        os.path.join(ROOT, "configs", "search_embedded_mnist.yaml"),
        *flags,
        *args,
    ]


def run(cmd, check=True, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


@pytest.fixture(scope="module")
def space_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "tiny_space.json"
    path.write_text(json.dumps(TINY_SPACE))
    return str(path)


def search_args(space_file, out, epochs=3):
    return ["SEARCH.SPACE", space_file, "OUTPUT_DIR", str(out), "SEARCH.EPOCHS", str(epochs), *TINY]


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory, space_file):
    out = tmp_path_factory.mktemp("search") / "full"
    p = run(tool("search.py", *search_args(space_file, out)))
    return out, p


def alphas(out):
    state = torch.load(out / "checkpoint.pth", map_location="cpu", weights_only=True)["states"]["supernet"]
    return {k: v for k, v in state.items() if k.startswith("alphas.")}


def test_search_writes_every_output_and_its_result_trains(finished_search, tmp_path):
    out, p = finished_search
    for name in (
        "config.yaml",
        "log.txt",
        "metrics.jsonl",
        "checkpoint.pth",
        "arch_def.json",
        "arch_def.py",
        "probabilities.png",
        "cost_accuracy.png",
        "search.json",
    ):
        assert (out / name).is_file(), name
    records = read_metrics(out / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [0, 1, 2]
    assert "alpha_loss" not in records[0] and "alpha_loss" in records[1]  # warm-up trains weights only
    # T falls from INIT to FINAL over the run, updated every step (4 weight steps per epoch here)
    cfg = get_cfg()
    t_init, t_final = cfg.SEARCH.TEMPERATURE.INIT, cfg.SEARCH.TEMPERATURE.FINAL
    for r in records:
        assert r["temperature"] == pytest.approx(temperature_at(t_init, t_final, (r["epoch"] + 3 / 4) / 3))
    assert {"expected_flops", "derived_flops_m", "derived_arch", "probs", "val_acc1"} <= set(records[-1])
    arch = json.load(open(out / "arch_def.json"))
    model = mobile_cv.build_model(arch, num_classes=10, in_chans=1)
    flops, _ = mobile_cv.count_flops_params(model, arch["input_size"])
    assert flops == pytest.approx(records[-1]["derived_flops_m"])
    assert "DMaskingNAS search of" in p.stdout and "derived:" in p.stdout  # the summary table
    assert any(a.abs().sum() > 0 for a in alphas(out).values())  # alpha was trained

    # train the derived model from scratch, then evaluate it
    train_out = tmp_path / "train"
    run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "train.py"),
            "--config-file",
            os.path.join(ROOT, "configs", "train_embedded_mnist.yaml"),
            "MODEL.ARCH",
            str(out / "arch_def.json"),
            "DATA.INPUT_SIZE",
            str(arch["input_size"]),
            "DATA.LIMIT",
            "128",
            "SOLVER.EPOCHS",
            "1",
            "SOLVER.BATCH_SIZE",
            "32",
            "OUTPUT_DIR",
            str(train_out),
        ]
    )
    summary = json.load(open(train_out / "eval.json"))
    assert summary["test"]["images"] == 128
    # re-evaluate the saved weights independently of the engine: the plain model on the first 128
    # test digits at the trained input size in one batch, top-1/top-5 and the loss computed here.
    # (One epoch on 128 digits is too little for a reliable margin over chance; the loss, a
    # continuous value, pins the reported numbers to exactly these weights and these images.)
    trained = mobile_cv.build_model(json.load(open(train_out / "arch_def.json")), num_classes=10, in_chans=1)
    trained.load_state_dict(torch.load(train_out / "model_final.pth", map_location="cpu", weights_only=True))
    test = build_dataset("embedded_mnist", "test", input_size=arch["input_size"], limit=128)
    assert len(test) == 128
    images = torch.stack([test[i][0] for i in range(128)])
    labels = torch.tensor([int(test[i][1]) for i in range(128)])
    with torch.no_grad():
        logits = trained.eval()(images)
    top5 = logits.topk(5, dim=1).indices
    assert summary["test"]["acc1"] == pytest.approx(100 * int((top5[:, 0] == labels).sum()) / 128, abs=1e-9)
    assert summary["test"]["acc5"] == pytest.approx(100 * int((top5 == labels[:, None]).any(1).sum()) / 128, abs=1e-9)
    assert summary["test"]["loss"] == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item(), rel=1e-5)


def test_sigkill_mid_epoch_then_resume_gives_the_same_alpha_and_arch(finished_search, space_file, tmp_path):
    ref, _ = finished_search
    out = tmp_path / "killed"
    steps_per_epoch = 128 // 32  # each a weight and (after the warm-up epoch) an alpha step
    kill_at = 2 * steps_per_epoch + 3  # before the 3rd step of epoch 3 (epoch 1 is weights only)
    cmd = [sys.executable, KILL_AT_STEP, str(kill_at), *tool("search.py", *search_args(space_file, out))[1:]]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1]
    assert not (out / "search.json").exists()

    run(tool("search.py", *search_args(space_file, out), flags=["--resume"]))
    a, b = alphas(ref), alphas(out)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.load(open(out / "arch_def.json")) == json.load(open(ref / "arch_def.json"))
    assert [r["val_acc1"] for r in read_metrics(out / "metrics.jsonl")] == [
        r["val_acc1"] for r in read_metrics(ref / "metrics.jsonl")
    ]


@pytest.mark.parametrize("sampled", ["['resolution']", "[]", "['op', 'resolution']"])
def test_torchrun_two_processes_end_with_the_same_alpha(space_file, tmp_path, sampled):
    """DDP reduces the weights' gradients (looking for unused ones only when block types are sampled:
    a sampled resolution still runs every weight); the alpha step reduces alpha's itself."""
    out = tmp_path / "ddp"
    cmd = [
        *TORCHRUN,
        *tool("search.py", *search_args(space_file, out, epochs=2), "SEARCH.SAMPLED_CHOICES", sampled)[1:],
    ]
    p = run(cmd)
    assert "world size 2" in p.stdout
    digests = json.load(open(out / "search.json"))["alpha_sha256_per_rank"]
    assert len(digests) == 2 and digests[0] == digests[1]
    assert [r["epoch"] for r in read_metrics(out / "metrics.jsonl")] == [0, 1]
    assert open(out / "log.txt").read().count("epoch 2/2") == 1  # rank 0 alone writes
    assert p.stdout.count("DMaskingNAS search of") == 1


def test_target_below_the_smallest_model_is_refused(space_file, tmp_path):
    args = [*search_args(space_file, tmp_path / "t"), "SEARCH.COST.FORM", "target", "SEARCH.COST.TARGET", "1e-4"]
    p = run(tool("search.py", *args), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no architecture of the space costs 0.0001 MFLOPs" in p.stderr and "spans 0.002544-0.03338" in p.stderr


def test_target_in_a_gap_between_the_space_costs_is_refused(space_file, tmp_path):
    p = run(tool("search.py", *search_args(space_file, tmp_path / "t"), "SEARCH.COST.TARGET", "0.01"), check=False)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert "no architecture of the space is within 5% of 0.01 MFLOPs" in p.stderr
    assert "the nearest cost 0.009376 MFLOPs (-6.2%), 0.01093 MFLOPs (+9.3%)" in p.stderr
    assert not (tmp_path / "t" / "checkpoint.pth").exists()


def test_output_folder_of_another_run_is_refused(finished_search, space_file):
    out, _ = finished_search
    before = open(out / "checkpoint.pth", "rb").read()
    p = run(tool("search.py", *search_args(space_file, out)), check=False)
    assert p.returncode == 2 and "--resume" in p.stderr and "Traceback" not in p.stderr
    assert open(out / "checkpoint.pth", "rb").read() == before


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(finished_search, space_file, tmp_path):
    import hashlib
    import shutil

    out = tmp_path / "nan"
    shutil.copytree(finished_search[0], out)
    files = ("checkpoint.pth", "metrics.jsonl", "arch_def.json", "search.json")
    digest = lambda: {n: hashlib.sha256((out / n).read_bytes()).hexdigest() for n in files}  # noqa: E731
    kept = digest()
    # resume for a 4th epoch with an absurd learning rate
    p = run(
        tool("search.py", *search_args(space_file, out, epochs=4), "SEARCH.WEIGHTS.LR", "1e12", flags=["--resume"]),
        check=False,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr
    msg = p.stderr.strip().splitlines()[-1]
    assert "loss is nan" in msg.lower() or "loss is inf" in msg.lower()
    assert "search 4/4" in msg and "checkpoint.pth (after epoch 3) is intact" in msg
    assert digest() == kept
    assert not [n for n in os.listdir(out) if n.endswith(".tmp")]


def test_unknown_config_key_names_the_closest(space_file, tmp_path):
    p = run(tool("search.py", "SEARCH.COST.TARGETT", "3", "OUTPUT_DIR", str(tmp_path / "k")), check=False)
    assert p.returncode == 2 and "SEARCH.COST.TARGETT" in p.stderr and "SEARCH.COST.TARGET" in p.stderr


def test_target_form_lands_the_derived_flops_near_the_target_on_the_demo_space(tmp_path):
    out = tmp_path / "target"
    target = 1.5
    p = run(
        tool(
            "search.py",
            "SEARCH.COST.FORM",
            "target",
            "SEARCH.COST.TARGET",
            str(target),
            "SEARCH.EPOCHS",
            "4",
            "SEARCH.WARMUP_EPOCHS",
            "1",
            "DATA.LIMIT",
            "512",
            "OUTPUT_DIR",
            str(out),
        )
    )
    summary = json.load(open(out / "search.json"))
    assert summary["space"] == "mnist_small_space"  # the demo's space
    arch = json.load(open(out / "arch_def.json"))
    flops, _ = mobile_cv.count_flops_params(mobile_cv.build_model(arch, num_classes=10, in_chans=1), arch["input_size"])
    assert abs(flops / target - 1) <= 0.05, (flops, p.stdout[-1500:])  # SEARCH.COST.TOLERANCE
    assert summary["derived_flops_m"] == pytest.approx(flops)
    records = read_metrics(out / "metrics.jsonl")
    assert "argmax_flops" in records[-1]  # the plain argmax architecture's cost is reported beside it
    # the derived architecture is the learned distribution's: its log-probability is reported
    # beside the argmax's (the maximum) and uniform choices'
    assert summary["log_prob"] <= summary["log_prob_argmax"] + 1e-9 and summary["log_prob_uniform"] < 0
    assert set(summary["top_prob"]) == set(records[-1]["probs"])


def test_paper_scale_f_space_search_derives_within_the_target(tmp_path):
    """The FBNetV2-F space (10^55.7 architectures, 224 px) searched for 2 epochs on a tiny
    ImageNet-layout folder: the derived architecture's exact FLOPs are within 5% of 240.
    Sampled block types keep a CI step small (the full mixture's memory is a benchmark)."""
    from tests.helpers import make_image_folder

    root = tmp_path / "images"
    make_image_folder(root, classes=("a", "b"), per_class=5)
    out = tmp_path / "f"
    p = run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "search.py"),
            "--config-file",
            os.path.join(ROOT, "configs", "search_imagenet.yaml"),
            "DATA.ROOT",
            str(root),
            "MODEL.NUM_CLASSES",
            "2",
            "DATA.NUM_WORKERS",
            "0",
            "SEARCH.EPOCHS",
            "2",
            "SEARCH.WARMUP_EPOCHS",
            "1",
            "SEARCH.BATCH_SIZE",
            "2",
            "SEARCH.SAMPLED_CHOICES",
            "['op', 'resolution']",
            "OUTPUT_DIR",
            str(out),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    summary = json.load(open(out / "search.json"))
    assert summary["space"] == "fbnetv2_f_space" and abs(summary["target_error"]) <= 0.05
    arch = json.load(open(out / "arch_def.json"))
    flops, _ = mobile_cv.count_flops_params(mobile_cv.build_model(arch, num_classes=2), arch["input_size"])
    assert abs(flops / 240 - 1) <= 0.05
    assert "DMaskingNAS search of fbnetv2_f_space" in p.stdout and "derived:" in p.stdout


def test_paper_scale_latency_budgeted_search_of_the_f_space(tmp_path):
    """The FBNetV2-F space searched for a millisecond budget with the shipped ExecuTorch table
    (configs/search_imagenet_latency.yaml: 1000 classes, so the folder has 1000 class folders):
    the derived architecture's latency by the table is within 5% of the budget."""
    from tests.helpers import make_image_folder

    root = tmp_path / "images"
    make_image_folder(root, classes=[f"c{i:03d}" for i in range(1000)], per_class=3)
    out = tmp_path / "f"
    config = os.path.join(ROOT, "configs", "search_imagenet_latency.yaml")
    overrides = ["DATA.ROOT", str(root), "DATA.NUM_WORKERS", "0", "DATA.LIMIT", "8", "SEARCH.EPOCHS", "2"]
    overrides += ["SEARCH.WARMUP_EPOCHS", "1", "SEARCH.BATCH_SIZE", "2", "SEARCH.RECOMPUTE_BLOCKS", "False"]
    overrides += ["SEARCH.SAMPLED_CHOICES", "['op', 'resolution']", "OUTPUT_DIR", str(out)]
    # the start-up machine check exports and times whole F models (about a minute): tested in test_latency.py
    overrides += ["SEARCH.COST.LATENCY_CHECK", "off"]
    p = run(
        [sys.executable, os.path.join(ROOT, "tools", "search.py"), "--config-file", config, *overrides],
        env={**os.environ, "OMP_NUM_THREADS": "2"},
    )
    summary = json.load(open(out / "search.json"))
    target = get_cfg_target(config)
    assert summary["space"] == "fbnetv2_f_space" and summary["cost_kind"] == "latency"
    assert abs(summary["derived_latency_ms"] / target - 1) <= 0.05 and abs(summary["target_error"]) <= 0.05
    assert "ms by the latency table" in p.stdout


def get_cfg_target(config_file):
    cfg = get_cfg()
    cfg.merge_from_file(config_file)
    return cfg.SEARCH.COST.TARGET


def test_derive_a_family_from_one_finished_search(finished_search, tmp_path):
    """Three budgets from the same alpha, each within tolerance; at the search's own target the
    derived architecture is the one the search wrote."""
    out, _ = finished_search
    fam = tmp_path / "family"
    p = run(
        [
            sys.executable,
            os.path.join(ROOT, "tools", "derive.py"),
            str(out),
            "--budgets",
            "0.006",
            "0.012",
            "0.024",
            "--out",
            str(fam),
        ]
    )
    family = json.loads((fam / "family.json").read_text())
    assert family["kind"] == "flops" and [r["budget"] for r in family["rows"]] == [0.006, 0.012, 0.024]
    for r in family["rows"]:
        assert abs(r["cost"] / r["budget"] - 1) <= 0.05 and (fam / r["file"]).is_file()
    assert json.loads((fam / "arch_def_0.012.json").read_text()) == json.loads((out / "arch_def.json").read_text())
    assert (fam / "family.png").stat().st_size > 1000 and "budget" in p.stdout
    bad = run([sys.executable, os.path.join(ROOT, "tools", "derive.py"), str(out), "--budgets", "5"], check=False)
    assert bad.returncode == 2 and "outside what" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    empty = run(
        [sys.executable, os.path.join(ROOT, "tools", "derive.py"), str(tmp_path), "--budgets", "0.01"], check=False
    )
    assert empty.returncode == 2 and "holds no finished search" in empty.stderr
