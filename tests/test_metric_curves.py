"""Numbers readable without wandb: every CLI run with a logger writes ``<run>/csv/metrics.csv`` (Lightning's
CSVLogger) and ``fit`` ends with ``<run>/curves.png`` (:class:`callbacks.MetricCurves`)."""

import csv
from pathlib import Path
from types import SimpleNamespace

import pytest
from lightning.pytorch.loggers import CSVLogger, WandbLogger
from PIL import Image

from callbacks import MetricCurves
from lightning_ebm.cli import with_csv_logger
from tests.test_console import SCRIPT, console, warnings_in

SMALL = ["--model.langevin_steps=2", "--data.image_size=40", "--data.crop_size=32"]


@pytest.fixture(scope="module")
def fit(tmp_path_factory):
    """One 3-step fit of the texture recipe through the console script, with the default (wandb) logger."""
    assert SCRIPT.is_file(), f"{SCRIPT} is missing: install the project (make install) before running the tests"
    cwd = tmp_path_factory.mktemp("curves")
    out = console(
        "fit", "--config", "texture", "--trainer.max_steps=3", "--trainer.log_every_n_steps=1", *SMALL, cwd=cwd
    )
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = (cwd / "runs" / "texture").iterdir()
    return out, run


def test_a_fit_with_the_default_logger_leaves_a_csv_with_the_loss(fit):
    out, run = fit
    with open(run / "csv" / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["step"]) for r in rows] == [0, 1, 2]
    assert all(float(r["train/loss"]) == float(r["train/loss"]) for r in rows)  # a number in every row
    assert not warnings_in(out), warnings_in(out)  # hparams.yaml takes our hyper-parameters without a warning
    assert (run / "csv" / "hparams.yaml").is_file()
    assert list(run.glob("wandb/offline-run-*"))  # wandb is still the first logger
    assert "CSVLogger" not in (run / "config.yaml").read_text()  # the config used again writes into its new run


def test_a_fit_ends_with_curves_and_the_summary_names_both_files(fit):
    out, run = fit
    with Image.open(run / "curves.png") as image:
        image.load()
        assert image.size[0] >= 100 and image.size[1] >= 60
    assert f"metrics    {Path('runs') / 'texture' / run.name / 'csv' / 'metrics.csv'}" in out.stderr
    assert f"curves     {Path('runs') / 'texture' / run.name / 'curves.png'}" in out.stderr


def test_the_csv_logger_is_added_to_any_logger_without_one(tmp_path):
    wandb = WandbLogger(project="p", save_dir=tmp_path, offline=True)  # nothing starts before .experiment
    added = with_csv_logger(wandb, tmp_path)
    assert added[0] is wandb and isinstance(added[1], CSVLogger)
    assert Path(added[1].log_dir) == tmp_path / "csv"
    assert len(with_csv_logger([wandb, WandbLogger(project="q", offline=True)], tmp_path)) == 3
    own = [wandb, CSVLogger(tmp_path / "elsewhere")]
    assert with_csv_logger(own, tmp_path) is own  # a CSVLogger of the user's is kept as configured
    assert with_csv_logger(False, tmp_path) is False and with_csv_logger(None, tmp_path) is None  # no logger at all
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("step\n0\n")  # a resumed run: the earlier file is kept
    assert Path(with_csv_logger(wandb, tmp_path)[1].log_dir).name.startswith("csv-")


def test_metric_curves_draws_the_logged_series_and_nothing_without_a_csv_logger(tmp_path):
    logger = CSVLogger(tmp_path, name="", version="csv")
    for step in range(5):
        logger.log_metrics({"train/loss": 1.0 - step, "train/f_data": step**2, "other": 1.0}, step=step)
    logger.log_metrics({"val/swd": 40.0}, step=4)
    trainer = SimpleNamespace(is_global_zero=True, loggers=[logger], default_root_dir=str(tmp_path))
    MetricCurves(panel_size=(200, 100), columns=2).on_train_end(trainer, None)
    with Image.open(tmp_path / "curves.png") as image:
        assert image.size == (400, 200)  # three panels: loss, f_data, swd; "other" is not drawn
    (tmp_path / "curves.png").unlink()
    MetricCurves().on_train_end(SimpleNamespace(is_global_zero=True, loggers=[], default_root_dir=tmp_path), None)
    MetricCurves().on_train_end(
        SimpleNamespace(is_global_zero=False, loggers=[logger], default_root_dir=tmp_path), None
    )
    assert not (tmp_path / "curves.png").exists()
