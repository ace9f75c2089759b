"""Unit tests of the engine's parts on their own: the epoch loop, the hooks, the checkpointer, the runs."""

import json
import os

import pytest
import torch

from mobile_cv.engine import (
    Checkpointer,
    CheckpointError,
    HookBase,
    NonFiniteLossError,
    SearchRun,
    SetEpoch,
    StepBase,
    Trainer,
    TrainRun,
    WriteMetrics,
    setup_cfg,
)
from mobile_cv.engine.runs import RUN_KINDS, run_kind_of


class CountStep(StepBase):
    """Adds each batch to a total; a NaN batch is a non-finite loss."""

    def __init__(self):
        self.total, self.seen = 0.0, []

    def __call__(self, batch):
        if batch != batch:
            raise NonFiniteLossError(f"the training loss is nan at {self.trainer.where}")
        self.total += batch
        self.seen.append(batch)

    def results(self):
        return {"total": self.total}


class Calls(HookBase):
    def __init__(self, log):
        self.log = log

    def __getattribute__(self, name):
        if name in ("before_train", "before_epoch", "before_step", "after_step", "after_epoch", "after_train"):
            return lambda: self.log.append((name, self.trainer.epoch, self.trainer.iter))
        return super().__getattribute__(name)


def test_the_loop_calls_every_hook_in_order_and_fills_the_record():
    log, step = [], CountStep()
    trainer = Trainer(step, [1.0, 2.0], epochs=3, hooks=[None, Calls(log)])  # None: a hook left out
    trainer.train(start_epoch=1)
    names = [n for n, *_ in log]
    assert names[0] == "before_train" and names[-1] == "after_train"
    assert names[1:7] == ["before_epoch", "before_step", "after_step", "before_step", "after_step", "after_epoch"]
    assert [e for n, e, _ in log if n == "before_epoch"] == [1, 2]  # resumed at epoch 1 of 3
    assert trainer.record == {"epoch": 2, "total": 6.0} and trainer.global_step == 5


def test_a_non_finite_loss_says_where_and_what_is_intact():
    trainer = Trainer(CountStep(), [1.0, float("nan")], epochs=2, describe_failure=lambda: "checkpoint X is intact")
    with pytest.raises(NonFiniteLossError, match=r"epoch 1/2, iteration 2/2\. checkpoint X is intact"):
        trainer.train()


def test_set_epoch_makes_an_epochs_order_a_function_of_the_epoch_and_metrics_are_written(tmp_path):
    from torch.utils.data import DataLoader, DistributedSampler

    data = torch.arange(8.0)
    sampler = DistributedSampler(data, num_replicas=1, rank=0, shuffle=True, seed=0)
    loader = DataLoader(data, batch_size=8, sampler=sampler, generator=torch.Generator())

    def orders(start_epoch, path):
        seen = []

        class Record(StepBase):
            def __call__(self, batch):
                seen.append(batch.tolist())

            def results(self):
                return {"n": len(seen)}

        hooks = [SetEpoch(loader), WriteMetrics(str(path), start_epoch)]
        Trainer(Record(), loader, epochs=2, hooks=hooks).train(start_epoch)
        return seen

    both = orders(0, tmp_path / "a.jsonl")
    assert both[0] != both[1] and orders(1, tmp_path / "b.jsonl") == [both[1]]  # a resumed epoch 1 is epoch 1
    assert [json.loads(line)["n"] for line in (tmp_path / "a.jsonl").read_text().splitlines()] == [1, 2]


def test_the_checkpointer_restores_states_and_rng_and_refuses_another_runs_file(tmp_path):
    model = torch.nn.Linear(3, 2)
    ckpt = Checkpointer(str(tmp_path), model=model)
    assert ckpt.resume_or_start(True) == {} and not ckpt.has_checkpoint()
    ckpt.save(epoch=4)
    after_save = torch.rand(3)
    weights = model.weight.detach().clone()
    torch.nn.init.zeros_(model.weight)
    assert ckpt.resume_or_start(True)["epoch"] == 4
    assert torch.equal(model.weight, weights) and torch.equal(torch.rand(3), after_save)  # the RNG as at save
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
    with pytest.raises(CheckpointError, match=r"has no state for \['supernet'\]"):
        Checkpointer(str(tmp_path), supernet=model).load()


def test_a_run_says_what_differs_between_kinds(tmp_path):
    train = TrainRun(setup_cfg("", ["MODEL.ARCH", "FBNetV2_F1", "SOLVER.BATCH_SIZE", "8"]))
    search = SearchRun(SearchRun.setup_cfg(os.path.join("configs", "search_embedded_mnist.yaml")))
    assert (train.name, train.splits, train.per_rank_batch(), train.epochs_key) == (
        "FBNetV2_F1",
        ("train", "val", "test"),
        8,
        "SOLVER.EPOCHS",
    )
    assert search.name == "mnist_small_space" and "search.json" in search.run_files
    assert train.identity()["digest"] != search.identity()["digest"] and train.identity() == train.identity()
    assert run_kind_of({"supernet": {}}) == "search" and RUN_KINDS["train"] is TrainRun
    with pytest.raises(RuntimeError, match=r"run\(\) before setup\(\)"):
        train.run()


@pytest.mark.parametrize("n_weights,n_alpha", [(10, 3), (8, 2), (4, 4), (3, 5)])
@pytest.mark.parametrize("schedule", ["interleaved", "spread", "epoch"])
def test_alpha_schedules_place_alpha_steps_as_documented(schedule, n_weights, n_alpha):
    """interleaved: one alpha step after every weight step (the alpha split cycled); spread: one pass
    of the alpha split per epoch, evenly between the weight steps, the last after the last weight
    step; epoch: that pass after the weight steps. Nothing before WARMUP_EPOCHS."""
    from mobile_cv.config import get_cfg
    from mobile_cv.engine import SearchStep

    class Recorder(SearchStep):
        def __init__(self, cfg, alpha_loader):
            self.warmup, self.schedule, self.alpha_loader = (
                cfg.SEARCH.WARMUP_EPOCHS,
                cfg.SEARCH.ALPHA.SCHEDULE,
                alpha_loader,
            )
            self._alpha_batches, self._alpha_epoch, self.log = None, -1, []

        def weight_step(self, x, y):
            self.log.append(("w", self.trainer.epoch, x))

        def alpha_step(self, x, y, where):
            self.log.append(("a", self.trainer.epoch, x))

        def start_epoch(self):
            pass

        def results(self):
            return {}

        def postfix(self):
            return {}

    cfg = get_cfg()
    cfg.SEARCH.WARMUP_EPOCHS, cfg.SEARCH.ALPHA.SCHEDULE = 1, schedule
    alpha = [(f"a{i}", None) for i in range(n_alpha)]
    step = Recorder(cfg, alpha)
    Trainer(step, [(f"w{i}", None) for i in range(n_weights)], epochs=3).train()
    assert [x for k, e, x in step.log if e == 0] == [f"w{i}" for i in range(n_weights)]  # warm-up: weights only
    for epoch in (1, 2):
        got = [x for k, e, x in step.log if e == epoch]
        assert [x for x in got if x[0] == "w"] == [f"w{i}" for i in range(n_weights)]
        alphas = [x for x in got if x[0] == "a"]
        if schedule == "interleaved":
            assert alphas == [f"a{i % n_alpha}" for i in range(n_weights)]
            assert got[1::2] == alphas
        else:
            assert alphas == [f"a{i}" for i in range(n_alpha)]  # one pass, in the split's order
            assert got[-1] == f"a{n_alpha - 1}"
        if schedule == "epoch":
            assert got[n_weights:] == alphas
        if schedule == "spread":  # alpha step j follows weight step ceil((j + 1) * n_w / n_a) - 1
            for j in range(n_alpha):
                before = got.index(f"a{j}")
                w_before = sum(x[0] == "w" for x in got[:before])
                assert w_before == -(-(j + 1) * n_weights // n_alpha)


def test_the_console_log_follows_a_swapped_stdout_and_never_writes_to_a_closed_one(monkeypatch, tmp_path):
    import io
    import logging
    import sys

    from mobile_cv.engine.logger import setup_logger

    first = io.StringIO()
    monkeypatch.setattr(sys, "stdout", first)
    log = setup_logger(str(tmp_path))
    log.info("one")
    second = io.StringIO()
    monkeypatch.setattr(sys, "stdout", second)
    first.close()  # what a capture that ended does with its stream
    errors = []
    monkeypatch.setattr(logging.Handler, "handleError", lambda self, record: errors.append(record))
    log.info("two")
    assert errors == [] and "two" in second.getvalue()
    assert (tmp_path / "log.txt").read_text().count("one") == 1
