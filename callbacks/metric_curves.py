"""A small PNG of the main training curves at the end of ``fit``, drawn with Pillow from the run's CSV metrics."""

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from PIL import Image, ImageDraw

from callbacks.images import font, text_width

METRICS = (
    "train/loss",
    "train/f_data,train/f_sample",
    "train/energy_gap",
    "train/grad_norm",
    "val/swd,val/swd_floor",
    "val/fid",
)
"""The panels drawn by default, where logged: the loss, :class:`callbacks.EnergyMonitor`'s diagnostics (Nijkamp et
al. 2020; the energies of data and samples on one panel) and :class:`callbacks.SampleQuality`'s scores (the SWD with
its floor). Names joined by commas share a panel."""


def read_metrics(path: Path, names: Sequence[str]) -> dict[str, list[tuple[int, float]]]:
    """``{name: [(step, value), ...]}`` from a Lightning ``metrics.csv``, for the ``names`` that have finite values,
    in the order of ``names``."""
    series: dict[str, list[tuple[int, float]]] = {name: [] for name in names}
    with open(path, newline="") as file:
        for row in csv.DictReader(file):
            for name in names:
                value = row.get(name)
                if value not in (None, "") and math.isfinite(float(value)):
                    series[name].append((int(float(row["step"])), float(value)))
    return {name: points for name, points in series.items() if points}


COLOURS = ((31, 119, 180), (255, 127, 14), (44, 160, 44))
GREY, FRAME = (90, 90, 90), (200, 200, 200)
Panel = dict[str, list[tuple[int, float]]]
"""The curves of one panel: ``{metric name: [(step, value), ...]}``."""


def draw_panel(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], curves: Panel) -> None:
    """The curves of one panel in ``box = (x0, y0, x1, y1)`` on a shared scale: each name, in its colour, with its
    minimum and maximum above a line plot of the values against the step; the first and last step below it."""
    x0, y0, x1, y1 = box
    points = [p for series in curves.values() for p in series]
    steps, values = [s for s, _ in points], [v for _, v in points]
    lo, hi, first, last = min(values), max(values), min(steps), max(steps)
    left, right, bottom = x0 + 6, x1 - 6, y1 - 16
    top = y0 + 4
    for (name, series), colour in zip(curves.items(), COLOURS):
        low, high = min(v for _, v in series), max(v for _, v in series)
        draw.text((left, top), f"{name}   min {low:.4g}   max {high:.4g}", fill=colour, font=font())
        top += 12
    top += 2
    draw.rectangle((left, top, right, bottom), outline=FRAME)
    draw.text((left, bottom + 2), f"step  {first}", fill=GREY, font=font())
    draw.text((right - text_width(str(last)), bottom + 2), str(last), fill=GREY, font=font())
    for series, colour in zip(curves.values(), COLOURS):
        line = []
        for step, value in sorted(series):
            fx = (step - first) / (last - first) if last > first else 0.5
            fy = (value - lo) / (hi - lo) if hi > lo else 0.5
            line.append((left + 2 + fx * (right - left - 4), bottom - 2 - fy * (bottom - top - 4)))
        if len(line) > 1:
            draw.line(line, fill=colour, width=1)
        if len(line) <= 20:  # a few points (validation scores): mark each
            for x, y in line:
                draw.ellipse((x - 2, y - 2, x + 2, y + 2), fill=colour)


def draw_curves(panels: Sequence[Panel], panel: tuple[int, int], columns: int) -> Image.Image:
    """One panel (:func:`draw_panel`) of ``panel = (width, height)`` pixels per entry of ``panels``, ``columns`` per
    row."""
    width, height = panel
    rows = math.ceil(len(panels) / columns)
    image = Image.new("RGB", (width * min(columns, len(panels)), height * rows), "white")
    draw = ImageDraw.Draw(image)
    for i, curves in enumerate(panels):
        x0, y0 = (i % columns) * width, (i // columns) * height
        draw_panel(draw, (x0, y0, x0 + width, y0 + height), curves)
    return image


class MetricCurves(Callback):
    """At the end of training, rank zero draws the curves of the main metrics into ``<run>/curves.png``.

    The values are those the run's :class:`~lightning.pytorch.loggers.CSVLogger` wrote (the command line adds one to
    every run that has a logger): its file is flushed, read, and each metric of ``metrics`` that has values gets a
    panel with its name, minimum and maximum, and the first and last step. Without a CSVLogger (``logger: false``)
    nothing is drawn. A resumed run draws the steps of its own CSV file, i.e. those since the resume. Only ``fit``
    draws: ``validate``, ``test`` and ``predict`` do not train.

    Args:
        metrics: the panels to draw, in this order, where logged: a metric name, or names joined by commas to share
            a panel (default :data:`METRICS`).
        filename: the PNG file, relative to ``trainer.default_root_dir`` (the run directory under the command line).
        panel_size: ``(width, height)`` of one panel in pixels.
        columns: panels per row.
    """

    def __init__(
        self,
        metrics: Sequence[str] = METRICS,
        filename: str = "curves.png",
        panel_size: tuple[int, int] = (320, 140),
        columns: int = 2,
    ) -> None:
        if columns < 1 or min(panel_size) < 60:
            raise ValueError(
                f"MetricCurves needs columns >= 1 and panels of at least 60x60, got {columns}, {panel_size}"
            )
        self.metrics = list(metrics)
        self.filename = filename
        self.panel_size = (int(panel_size[0]), int(panel_size[1]))
        self.columns = columns

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Flush the CSV logger, read its file and write the PNG (rank zero; nothing without a CSV logger)."""
        if not trainer.is_global_zero:
            return
        logger = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
        if logger is None:
            return
        logger.save()
        path = Path(logger.log_dir) / ExperimentWriter.NAME_METRICS_FILE
        groups = [[name.strip() for name in entry.split(",")] for entry in self.metrics]
        series = read_metrics(path, [name for group in groups for name in group]) if path.is_file() else {}
        panels = [{name: series[name] for name in group if name in series} for group in groups]
        panels = [curves for curves in panels if curves]
        if not panels:
            return
        out = Path(trainer.default_root_dir) / self.filename
        out.parent.mkdir(parents=True, exist_ok=True)
        draw_curves(panels, self.panel_size, self.columns).save(out)
