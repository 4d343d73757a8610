"""Lightning callbacks: sample grids, monitors, prediction writers, checkpointing, a step progress bar and an iteration
timer. They work on rank zero, write under the run directory and hand images to whatever logger is attached (wandb
first)."""

from callbacks.audio_samples import AudioSamples
from callbacks.chain_animation import ChainAnimation
from callbacks.checkpoint import RunCheckpoint
from callbacks.energy_monitor import EnergyMonitor
from callbacks.iteration_timer import IterationTimer
from callbacks.metric_curves import MetricCurves
from callbacks.progress import StepProgressBar
from callbacks.requeue import SlurmRequeue
from callbacks.run_directory import SharedRunDirectory
from callbacks.sample_grid import SampleGrid
from callbacks.sample_quality import SampleQuality
from callbacks.sample_writer import SampleWriter

__all__ = [
    "AudioSamples",
    "ChainAnimation",
    "EnergyMonitor",
    "IterationTimer",
    "MetricCurves",
    "RunCheckpoint",
    "SampleGrid",
    "SampleQuality",
    "SampleWriter",
    "SharedRunDirectory",
    "SlurmRequeue",
    "StepProgressBar",
]
