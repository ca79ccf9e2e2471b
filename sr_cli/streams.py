"""Named random streams: every random draw of sr-cli comes from one of these.

A stream is a CPU ``torch.Generator`` seeded from the run's ``seed``, the stream's *name* and
the integers that identify the draw (the iteration and rank of a training batch, the index of a
validation image). Two places that draw for the same purpose use the same name and therefore
the same numbers: validation during training and ``sr-eval`` (and ``sr-report``) make the same
stochastic LQ of validation image ``i`` from ``stream_generator(seed, "val_degradation", i)``.
A resumed run draws exactly what the uninterrupted one would, because the training streams are
keyed on the iteration.

======================  ========================================  ============================
name                    what it draws                             keyed on
======================  ========================================  ============================
``train_degradation``   degradation parameters of a training      iteration, rank
                        batch
``val_degradation``     degradation parameters of an evaluation   image index (in its folder)
                        image (training validation, sr-eval,
                        sr-report)
``augmentation``        on-device flips/rotations/CutBlur of a    iteration, rank
                        training batch
``translational_crop``  the crop pair of the translational loss   step
``eval_replay``         parameters of a checkpoint's own          image index, row
                        degradation when sr-eval replays it on
                        SR made from another degradation's LQ
======================  ========================================  ============================

This module is a leaf (it imports only numpy and torch), so data, degradations, losses, the
trainer and the evaluation commands can all use it.
"""

from __future__ import annotations

import numpy as np
import torch

from sr_cli.errors import ConfigError

#: The stream names, each with a fixed code mixed into the seed. Never renumber an entry: the
#: code, not the position, decides the numbers drawn.
STREAMS: dict[str, int] = {
    "train_degradation": 1,
    "val_degradation": 2,
    "augmentation": 3,
    "translational_crop": 4,
    "eval_replay": 5,
}


def stream_generator(seed: int, stream: str, *parts: int) -> torch.Generator:
    """A CPU ``torch.Generator`` for one draw of a named stream.

    Args:
        seed: the run's (or the evaluation's) seed.
        stream: one of :data:`STREAMS`.
        parts: the integers that identify the draw (see the table in the module docstring).

    Example:
        >>> a = stream_generator(0, "val_degradation", 3)
        >>> b = stream_generator(0, "val_degradation", 3)
        >>> bool(torch.equal(torch.rand(2, generator=a), torch.rand(2, generator=b)))
        True
    """
    if stream not in STREAMS:
        raise ConfigError(f"unknown random stream {stream!r}; the streams are {sorted(STREAMS)}")
    words = [int(seed) & 0xFFFFFFFF, STREAMS[stream], *(int(p) & 0xFFFFFFFF for p in parts)]
    state = np.random.SeedSequence(words).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))
