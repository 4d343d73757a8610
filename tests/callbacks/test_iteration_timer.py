"""IterationTimer: logged times, the sampler's share, the summary line, and the module left as it was."""

import re

import pytest
import torch

from callbacks import IterationTimer
from callbacks.iteration_timer import SAMPLERS
from lightning_ebm.process_clock import seconds_since_process_start
from tests.conftest import DEBUG, TEXTURE, TINY, run_cli

KEYS = ("time/iteration_s", "time/step_s", "time/data_s", "time/sampler_s", "time/sampler_share")


def timed_fit(tmp_path, *extra):
    return run_cli(
        "fit", "--config", TEXTURE, "--config", DEBUG, "--config", "timing", *TINY, "--trainer.log_every_n_steps=2",
        *extra, root=tmp_path,
    )  # fmt: skip


def test_the_timing_preset_logs_the_times_and_prints_a_summary(tmp_path, capsys):
    cli = timed_fit(tmp_path)
    timers = [c for c in cli.trainer.callbacks if isinstance(c, IterationTimer)]
    assert len(timers) == 1  # the preset adds it to the recipe's callbacks, which stay
    assert {"SampleGrid", "EnergyMonitor"} <= {type(c).__name__ for c in cli.trainer.callbacks}
    metrics = cli.trainer.callback_metrics
    for key in KEYS:
        assert key in metrics and torch.isfinite(metrics[key])
    for key in KEYS[:2]:
        assert metrics[key] > 0
    assert metrics["time/data_s"] >= 0
    assert 0 < metrics["time/sampler_share"] <= 1
    assert metrics["time/sampler_s"] <= metrics["time/step_s"] <= metrics["time/iteration_s"]

    timer = timers[0]
    assert len(timer.iterations) == cli.trainer.global_step == 4
    for times in timer.iterations:
        assert 0 < times["sampler_s"] <= times["step_s"] <= times["iteration_s"]
        assert 0 <= times["data_s"] <= times["iteration_s"]
    line = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("IterationTimer:")]
    assert len(line) == 1
    assert re.search(r"s/iteration \([\d.e+-]+ iterations/s\) over 2 iterations \(after 2 of warm-up\)", line[0])
    assert "sampler" in line[0] and "data" in line[0]


def test_the_wrapped_methods_are_restored_after_fit(tmp_path):
    cli = timed_fit(tmp_path)
    model, profiler = cli.model, cli.trainer.profiler
    for name in (*SAMPLERS, "training_step"):
        assert name not in vars(model), name  # the class's methods again, no instance attribute left
    assert "start" not in vars(profiler) and "stop" not in vars(profiler)
    assert type(model).langevin is not None and model.langevin.__func__ is type(model).langevin


def test_warm_up_is_left_out_unless_nothing_is_left(tmp_path, capsys):
    timed_fit(tmp_path, "--trainer.callbacks.warmup=10")
    line = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("IterationTimer:"))
    assert "over 4 iterations (after 0 of warm-up)" in line


def test_warmup_is_validated():
    with pytest.raises(ValueError, match="warmup"):
        IterationTimer(warmup=-1)


def test_seconds_since_process_start():
    seconds = seconds_since_process_start()
    if seconds is None:
        pytest.skip("no /proc on this system")
    assert seconds > 0
