"""The learning-rate schedule of the reference (whwu95/Text4Vis): ``WarmupCosineAnnealingLR``
(utils/lr_scheduler.py) as its train.py steps it.

- The schedule is a function of a fractional epoch: during ``warmup_epochs`` the rate rises
  linearly from 0 (``last_epoch / warmup_epochs``: the very first iterations train at lr 0), then
  follows a cosine from the base rate to 0 at ``total_epochs``.
- train.py sets it at an iteration's start, at the first iteration of each epoch and then every
  10th (``if (i + 1) == 1 or (i + 1) % 10 == 0: lr_scheduler.step(epoch + i / len(train_loader))``),
  ``i`` counting the loader's batches (micro-batches, with gradient accumulation); between two
  settings the rate stays as it was.
"""

from __future__ import annotations

import math
from typing import Any

import torch

STEP_EVERY = 10  # iterations between two settings of the rate (and the first of each epoch)


def warmup_cosine_factor(epoch: float, warmup_epochs: float, total_epochs: float) -> float:
    """The factor of the base rate at (fractional) ``epoch``: ``WarmupLR.get_lr`` with the
    reference's defaults (``warmup_powers=1``, ``warmup_lrs=0``, ``final_factor=0``)."""
    if epoch < warmup_epochs:
        return epoch / warmup_epochs
    if total_epochs <= warmup_epochs:  # all warm-up (the reference never reaches this: its epochs end first)
        return 1.0
    progress = min((epoch - warmup_epochs) / (total_epochs - warmup_epochs), 1.0)
    return (math.cos(math.pi * progress) + 1) / 2


def sets_rate(iteration: int) -> bool:
    """Whether train.py sets the rate before iteration ``iteration`` (0-based) of an epoch."""
    return iteration == 0 or (iteration + 1) % STEP_EVERY == 0


class WarmupCosine:
    """The rate of each of ``optimizer``'s groups (their ``lr`` when it was made is the base)."""

    def __init__(self, optimizer: torch.optim.Optimizer, total_epochs: int, warmup_epochs: int) -> None:
        self.optimizer = optimizer
        self.total_epochs, self.warmup_epochs = total_epochs, warmup_epochs
        self.base_lrs = [float(group["lr"]) for group in optimizer.param_groups]
        self.last_epoch = 0.0
        self.step(0.0)  # as the reference's constructor: the rate of epoch 0 (0 with a warm-up)

    def step(self, epoch: float) -> None:
        """Set every group's rate to the schedule's at ``epoch`` (``epoch + i / iterations``)."""
        self.last_epoch = epoch
        factor = warmup_cosine_factor(epoch, self.warmup_epochs, self.total_epochs)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs, strict=True):
            group["lr"] = base * factor

    def get_last_lr(self) -> list[float]:
        return [float(group["lr"]) for group in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"base_lrs": self.base_lrs, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.base_lrs = [float(x) for x in state["base_lrs"]]
        self.step(float(state["last_epoch"]))
