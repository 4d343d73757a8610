"""Generative gradient pre-training of a classification ConvNet, and class-conditional sampling from it.

Dai, Lu and Wu, "Generative Modeling of Convolutional Neural Networks", ICLR 2015 (docs/methods.md).
Each class score ``f_k`` of a classifier defines ``p(x | k) ∝ exp(f_k(x)) q(x)``, an exponential tilting of a
reference distribution q; Bayes' rule on these K models gives back the softmax classifier.
"""

import bisect
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics.classification import MulticlassAccuracy

from lightning_ebm.methods.base import EBMModule
from lightning_ebm.mixins import AcceptanceTracker, HMCMixin, LangevinMixin
from lightning_ebm.nets.classifiers import ClassifierFactory, ConvClassifier


def generative_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """Minus the mean log-likelihood ``log p(x_i | k_i)`` with q the mini-batch's empirical distribution.

    With ``q`` uniform over the batch's images ``x_1 … x_B``, ``Z_k = (1/B) Σ_j exp(f_k(x_j))``, so
    ``log p(x_i | k) = f_k(x_i) − logsumexp_j f_k(x_j) + log B``. Its gradient is the generative gradient
    ``∂f_k(x_i)/∂w − Σ_j ω_j ∂f_k(x_j)/∂w`` with importance weights ``ω_j = softmax_j f_k(x_j)``: the model's
    expectation of ``∂f_k/∂w`` estimated by importance sampling over the mini-batch. The paper's abstract describes
    exactly this estimate; its normalisation (the mean over the batch's examples, every image of the batch in q) is
    derived from the model here, not read from the authors' code.

    Args:
        scores: ``(B, K)`` class scores of the batch.
        labels: ``(B,)`` classes.
    """
    own = scores.gather(1, labels[:, None]).squeeze(1)  # f_{k_i}(x_i)
    log_z = torch.logsumexp(scores[:, labels], dim=0)  # column i: log Σ_j exp f_{k_i}(x_j)
    return -(own - log_z + torch.log(torch.tensor(float(len(labels))))).mean()


class GenerativeGradient(HMCMixin, LangevinMixin, EBMModule):
    """A classifier trained with a schedule of generative and discriminative gradients; samples by class.

    Each training step minimises ``w · L_gen + (1 − w) · L_disc`` on a labelled batch: ``L_gen`` is
    :func:`generative_loss` (the generative gradient) and ``L_disc`` the cross-entropy of the softmax classifier
    (the discriminative gradient). ``w`` follows ``generative_schedule``, piecewise linear in the training step:
    the default, ``[[0, 1], [500, 1], [500, 0]]``, is 500 steps of generative pre-training followed by ordinary
    discriminative training (the paper's use); ``[[0, 0]]`` is discriminative training alone.

    :meth:`sample` draws class-conditional samples from ``p(x | k) ∝ exp(f_k(x)) N(x; 0, σ² I)`` by HMC (the paper's
    sampler; ``sampler="langevin"`` for Langevin), cycling through the classes: sample ``i`` is of class ``i mod K``;
    the draw's final acceptance rate and mean step size are left in ``sampler_stats`` (sample grids log them).
    :meth:`score` is ``log Σ_k exp f_k(x)``, the tilted model of all classes together, which ``visualize`` samples
    as the node ``score``.

    Args:
        net: builds the classifier from the sample shape; its output ``(B, K)`` are the class scores.
        generative_schedule: ``[[step, weight], ...]`` points of the generative weight ``w`` in [0, 1], steps
            non-decreasing (two points at one step make a jump); constant before the first and after the last.
        sampler: ``"hmc"`` (``hmc_*`` settings) or ``"langevin"`` (``langevin_*`` settings) for :meth:`sample`.
        **kwargs: ``hmc_*``, ``langevin_*``, ``sample_shape``, ``optimizer``, ``lr_scheduler``.
    """

    SAMPLING = (*EBMModule.SAMPLING, "sample_classes")

    def __init__(
        self,
        net: ClassifierFactory = ConvClassifier,
        *,
        generative_schedule: Sequence[Sequence[float]] = ((0, 1.0), (500, 1.0), (500, 0.0)),
        sampler: Literal["hmc", "langevin"] = "hmc",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters("generative_schedule", "sampler")
        points = [(float(s), float(w)) for s, w in generative_schedule]
        steps = [s for s, _ in points]
        if not points or steps != sorted(steps) or any(not 0 <= w <= 1 for _, w in points):
            raise ValueError(
                f"generative_schedule must be [[step, weight], ...] with non-decreasing steps and weights in [0, 1]; "
                f"got {generative_schedule}"
            )
        self.schedule = points
        self.net = net(self.sample_shape)
        with torch.no_grad():
            self.num_classes = int(self.net(torch.zeros(1, *self.sample_shape)).shape[1])
        self.sampler_stats: dict[str, float] = {}  # the last HMC draw's acceptance rate and step size
        self.val_accuracy = MulticlassAccuracy(self.num_classes, average="micro")
        self.test_accuracy = MulticlassAccuracy(self.num_classes, average="micro")

    # ----------------------------------------------------------------------------------------------- model
    def class_scores(self, x: Tensor) -> Tensor:
        """``f(x): (B, *sample_shape) -> (B, K)``, the class scores (logits)."""
        return self.net(x)

    def score(self, x: Tensor) -> Tensor:
        """``log Σ_k exp f_k(x)``, ``(B,)``: the score of the tilted model of all classes together."""
        return torch.logsumexp(self.class_scores(x), dim=1)

    def score_nets(self) -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
        """The classifier, for ``visualize``."""
        return {"net": (self.net, self.sample_shape)}

    def generative_weight(self, step: int) -> float:
        """``w`` at training step ``step``: linear between the schedule's points."""
        points = self.schedule
        i = bisect.bisect_right([s for s, _ in points], step)
        if i == 0:
            return points[0][1]
        if i == len(points):
            return points[-1][1]
        (s0, w0), (s1, w1) = points[i - 1], points[i]
        return w0 + (w1 - w0) * (step - s0) / (s1 - s0)

    def sample_classes(self, labels: Tensor, *, rng: torch.Generator | None = None) -> Tensor:
        """Samples of ``p(x | k) ∝ exp(f_k(x)) N(0, σ² I)``, one per entry of ``labels (n,)``, from N(0, σ² I)
        starts; ``(n, *sample_shape)`` clamped to [-1, 1]."""
        g = self.seeded_rng() if rng is None else rng
        labels = labels.to(self.device)
        sigma = self.hparams.hmc_sigma if self.hparams.sampler == "hmc" else self.hparams.langevin_sigma
        x0 = sigma * torch.randn((len(labels), *self.sample_shape), generator=g, device=self.device)

        def f(x: Tensor) -> Tensor:
            return self.class_scores(x).gather(1, labels[:, None]).squeeze(1)

        if self.hparams.sampler == "langevin":
            return self.langevin(x0, f=f, rng=g).clamp(-1, 1)
        tracker = AcceptanceTracker()
        x = self.hmc(x0, f=f, rng=g, callback=tracker)
        self.sampler_stats = {"hmc_acceptance": tracker.accept_prob, "hmc_step_size": tracker.step_size}
        return x.clamp(-1, 1)

    def sample(self, n: int, *, rng: torch.Generator | None = None) -> Tensor:
        """``n`` class-conditional samples ``(n, *sample_shape)``, sample ``i`` of class ``i mod K``."""
        return self.sample_classes(torch.arange(n) % self.num_classes, rng=rng)

    # -------------------------------------------------------------------------------------------- training
    @staticmethod
    def labelled(batch: Any) -> tuple[Tensor, Tensor]:
        """The images and labels of a batch (``{"image", "label"}`` dicts or ``(x, y)`` pairs)."""
        if isinstance(batch, dict) and batch.get("label") is not None:
            return batch["image"], batch["label"]
        if isinstance(batch, (list, tuple)) and len(batch) == 2:
            return batch[0], batch[1]
        raise ValueError(
            "GenerativeGradient trains a classifier, so batches need labels: {'image', 'label'} dicts (digits, "
            "CIFAR-10, ImageNet and image folders give them) or (x, y) pairs"
        )

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        """``w · L_gen + (1 − w) · L_disc`` on the batch, ``w`` from the schedule at this step."""
        x, y = self.labelled(batch)
        scores = self.class_scores(x)
        gen, disc = generative_loss(scores, y), F.cross_entropy(scores, y)
        w = self.generative_weight(self.global_step)
        loss = w * gen + (1 - w) * disc
        self.check_finite(loss, "the classifier loss")
        if not self.logs_this_step():
            return loss
        accuracy = (scores.argmax(1) == y).float().mean()
        self.log_dict(
            {
                "train/loss": loss,
                "train/generative_loss": gen,
                "train/cross_entropy": disc,
                "train/accuracy": accuracy,
                "train/generative_weight": w,
            },
            prog_bar=True,
        )
        return loss

    def _evaluate(self, batch: Any, stage: str, accuracy: MulticlassAccuracy) -> None:
        x, y = self.labelled(batch)
        scores = self.class_scores(x)
        accuracy(scores, y)
        self.log(f"{stage}/accuracy", accuracy)
        self.log(f"{stage}/cross_entropy", F.cross_entropy(scores, y), sync_dist=True)
        self.log(f"{stage}/generative_loss", generative_loss(scores, y), sync_dist=True)

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        """Held-out accuracy (over the whole set, across processes), cross-entropy and generative loss."""
        self._evaluate(batch, "val", self.val_accuracy)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        """As :meth:`validation_step`, under ``test/``."""
        self._evaluate(batch, "test", self.test_accuracy)
