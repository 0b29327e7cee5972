# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""Timestep checks for our schedulers, cheap enough to run on every `step` of a pipeline.

A timestep indexes the schedule: it must be an integer in [0, T - 1] (the blur scheduler's `blur` also takes -1, "no
blur"). Left unchecked, T or more fails with an IndexError deep inside the scheduler and a negative value silently
reads the schedule from its end (-1 gives the last timestep's alpha_bar).

Cost. A Python or NumPy integer, or a 0-d CPU tensor (what a pipeline iterating a CPU `scheduler.timesteps` passes),
is compared on the host. Any other tensor needs one min/max reduction and one copy of its two results to the host,
which on CUDA waits for the device (a sync). Two kinds of tensor skip that: views of the scheduler's own `timesteps`
(valid by construction: `set_timesteps` checked them; their version counter shows they were not modified in place
since), which is what pipelines pass to `step` and `scale_model_input` on every step; and the last tensor checked, if
unchanged since, which a training step passes to `add_noise` and then to `get_velocity`.
"""

from typing import Optional, Union

import numpy as np
import torch

_SHOWN = 8  # bad values named in an error


def _stamp(tensor: torch.Tensor):
    """What identifies `tensor`'s data and its state: (tensor, storage address, version), or None where the version
    is not tracked (tensors made under `torch.inference_mode`)."""
    if tensor.is_inference():
        return None
    return tensor, tensor.untyped_storage().data_ptr(), tensor._version


class TimestepCheck:
    """Validates the timesteps entering a scheduler with `num_train_timesteps` levels (see the module docstring)."""

    def __init__(self, num_train_timesteps: int):
        self.total = num_train_timesteps
        self._trusted = None  # the scheduler's own timesteps: (tensor, storage address, version)
        self._last = None  # the last tensor checked: (tensor, storage address, version, low)

    def trust(self, timesteps: torch.Tensor) -> None:
        """Marks `timesteps`, built valid by the scheduler itself, and every view of it as checked."""
        self._trusted = _stamp(timesteps)

    def _known(self, tensor: torch.Tensor, low: int) -> bool:
        if tensor.is_inference():
            return False
        trusted = self._trusted
        if (
            trusted is not None
            and low <= 0
            and tensor.dtype == trusted[0].dtype
            and tensor.untyped_storage().data_ptr() == trusted[1]
            and tensor._version == trusted[2]
        ):
            return True
        last = self._last
        return last is not None and tensor is last[0] and tensor._version == last[2] and low <= last[3]

    def __call__(self, timesteps, name: str, batch: Optional[int] = None, low: int = 0) -> Union[int, torch.Tensor]:
        """Returns `timesteps` as an int (for a Python or NumPy integer or a 0-d CPU tensor) or as a tensor of 1 or
        `batch` values (flattened); raises ValueError naming `name`, the bad values and the range [low, T - 1]."""
        total = self.total
        allowed = f"[{low}, {total - 1}] (the scheduler's `num_train_timesteps` is {total})"
        if isinstance(timesteps, (int, np.integer)) and not isinstance(timesteps, (bool, np.bool_)):
            if not low <= timesteps < total:
                raise ValueError(f"`{name}` must be an integer in {allowed}, got {int(timesteps)}.")
            return int(timesteps)
        if not torch.is_tensor(timesteps):
            raise ValueError(
                f"`{name}` must be an integer or a tensor of integers in {allowed}, got {type(timesteps).__name__} "
                f"{timesteps!r:.60}."
            )
        if timesteps.is_floating_point() or timesteps.is_complex() or timesteps.dtype == torch.bool:
            raise ValueError(
                f"`{name}` must hold integers in {allowed} (indices into the schedule), got a float tensor "
                f"({timesteps.dtype}); pass integer timesteps, e.g. `{name}.long()`."
                if timesteps.is_floating_point()
                else f"`{name}` must hold integers in {allowed}, got a {timesteps.dtype} tensor."
            )
        if timesteps.ndim == 0 and timesteps.device.type == "cpu":
            value = int(timesteps)
            if not low <= value < total:
                raise ValueError(f"`{name}` must be an integer in {allowed}, got {value}.")
            return value
        if timesteps.ndim > 1:
            timesteps = timesteps.reshape(-1)
        if batch is not None and timesteps.numel() not in (1, batch):
            raise ValueError(
                f"`{name}` must be a scalar or hold one value per sample ({batch}), got {timesteps.numel()} values "
                f"(shape {tuple(timesteps.shape)})."
            )
        if timesteps.numel() == 0 or self._known(timesteps, low):
            return timesteps
        smallest, largest = torch.stack(torch.aminmax(timesteps)).tolist()  # one reduction, one copy to the host
        if smallest < low or largest >= total:
            bad = timesteps[(timesteps < low) | (timesteps >= total)].unique().tolist()
            shown = ", ".join(map(str, bad[:_SHOWN])) + (f" and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")
            raise ValueError(f"`{name}` must hold integers in {allowed}, got {shown}.")
        stamp = _stamp(timesteps)
        self._last = None if stamp is None else (*stamp, low)
        return timesteps


class UnscaledModelInput:
    """`scale_model_input` of the schedulers whose model input is the sample itself (DDPM, the blur processes): the
    sample unchanged, after the same check of a given `timestep` as `step` makes. Needs `self._check_timesteps`."""

    def scale_model_input(self, sample: torch.Tensor, timestep: Optional[int] = None) -> torch.Tensor:
        if timestep is not None:
            self._check_timesteps(timestep, "timestep", sample.shape[0] if sample.ndim else None)
        return sample
