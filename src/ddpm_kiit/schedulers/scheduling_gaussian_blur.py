# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""`GaussianBlurScheduler`, kept so that code and saved pipelines from before the blur schedulers were split keep
working. It held both blur processes in one class, switched by `process`; they are now [`ColdDiffusionScheduler`]
(`process="cold"`) and [`BlurringDiffusionScheduler`] (`process="blurring_diffusion"`), with the same numbers."""

import inspect
from typing import Optional

from diffusers.configuration_utils import ConfigMixin
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .scheduling_blurring_diffusion import BlurringDiffusionScheduler
from .scheduling_cold_diffusion import ColdDiffusionScheduler, ColdDiffusionSchedulerOutput

# The old class's step output had the same two fields (prev_sample, pred_original_sample).
GaussianBlurSchedulerOutput = ColdDiffusionSchedulerOutput
PROCESSES = {"cold": ColdDiffusionScheduler, "blurring_diffusion": BlurringDiffusionScheduler}
# Settings the old class accepted for both processes but used only for the cold one.
COLD_ONLY_SETTINGS = ("sampler", "noise_std", "initial_noise_std", "gmm_weights", "gmm_means", "gmm_stds")
# Settings whose None meant "the process's default" in the old class.
PROCESS_DEFAULTS = ("sigma_max", "prediction_type")


def _new_class_and_settings(settings: dict):
    """The scheduler class that an old `GaussianBlurScheduler` config or call means, and the settings for it: without
    `process`, without the settings the old class ignored for that process, and without None for a process default."""
    process = settings.get("process", "cold")
    if process not in PROCESSES:
        raise ValueError(
            f"`process` must be one of {tuple(PROCESSES)}, got {process!r}. Better, use the process's own class: "
            "ColdDiffusionScheduler or BlurringDiffusionScheduler."
        )
    target = PROCESSES[process]
    dropped = {"process"} | (set(COLD_ONLY_SETTINGS) if target is not ColdDiffusionScheduler else set())
    kept = {
        key: value
        for key, value in settings.items()
        if key not in dropped and not (key in PROCESS_DEFAULTS and value is None)
    }
    return target, kept


def _old_signature() -> inspect.Signature:
    """The old class's parameters, in their order: the cold scheduler's (which include all of blurring diffusion's),
    with `process` after `boundary` and None as the default of `sigma_max` and `prediction_type`. ConfigMixin reads
    them (e.g. to drop an old config's keys when another class loads it), and `__new__` binds calls with them."""
    parameters = []
    for parameter in inspect.signature(ColdDiffusionScheduler.__init__).parameters.values():
        if parameter.name in PROCESS_DEFAULTS:
            parameter = parameter.replace(default=None, annotation=Optional[parameter.annotation])
        parameters.append(parameter)
        if parameter.name == "boundary":
            parameters.append(parameter.replace(name="process", default="cold", annotation=str))
    return inspect.Signature(parameters)


class _EitherBlurScheduler(type):
    """`isinstance(scheduler, GaussianBlurScheduler)` holds for both classes that replace it, as it did for the old
    class in either process."""

    def __instancecheck__(cls, instance):
        return isinstance(instance, tuple(PROCESSES.values()))


class GaussianBlurScheduler(SchedulerMixin, ConfigMixin, metaclass=_EitherBlurScheduler):
    """
    Builds and loads the blur schedulers from the settings of the class that once held both: calling it, `from_config`
    and `from_pretrained` return a [`ColdDiffusionScheduler`] for `process="cold"` (the default) and a
    [`BlurringDiffusionScheduler`] for `process="blurring_diffusion"`, with the same numbers as before. Settings the
    old class ignored for blurring diffusion (`sampler`, `noise_std`, `initial_noise_std`, `gmm_*`) are dropped.
    A folder saved from such a scheduler names the new class, so it loads without this one.

    `isinstance(scheduler, GaussianBlurScheduler)` is true for both new classes. New code should use them directly.

    Args:
        process (`str`, defaults to `"cold"`): `"cold"` or `"blurring_diffusion"`.
        The others: as [`ColdDiffusionScheduler`] and [`BlurringDiffusionScheduler`]; `sigma_max=None` and
        `prediction_type=None` mean the process's default.
    """

    def __new__(cls, *args, **kwargs):
        # `__init__`'s signature names the old parameters (ConfigMixin reads it); it maps positional arguments too.
        settings = inspect.signature(cls.__init__).bind(None, *args, **kwargs).arguments
        settings.pop("self")
        target, kept = _new_class_and_settings(settings)
        return target(**kept)  # not an instance of `cls`, so Python does not call `__init__` on it

    def __init__(self, *args, **kwargs):
        raise TypeError("GaussianBlurScheduler builds a ColdDiffusionScheduler or a BlurringDiffusionScheduler.")

    __init__.__signature__ = _old_signature()

    @classmethod
    def from_config(cls, config=None, return_unused_kwargs=False, **kwargs):
        """The new scheduler for an old config (which has `process`) or a new one, through that class's own
        `from_config`; `kwargs` override the config as usual (`process` included)."""
        if not isinstance(config, dict):  # Diffusers' deprecated form: a path; load it first
            config, kwargs = cls.load_config(pretrained_model_name_or_path=config, return_unused_kwargs=True, **kwargs)
        process = _process_of(config, kwargs)
        target, settings = _new_class_and_settings({**config, "process": process})
        settings["_class_name"] = target.__name__
        _, kwargs = _new_class_and_settings({**kwargs, "process": process})
        return target.from_config(settings, return_unused_kwargs, **kwargs)


def _process_of(config: dict, kwargs: dict) -> str:
    """The process an old or new blur config means, `kwargs` first."""
    if "process" in kwargs or "process" in config:
        return kwargs.get("process", config.get("process"))
    by_class = {target.__name__: process for process, target in PROCESSES.items()}
    if config.get("_class_name") in by_class:
        return by_class[config["_class_name"]]
    # The in-memory config of a new scheduler names no class; each process has its own prediction type.
    return "blurring_diffusion" if config.get("prediction_type") == "epsilon" else "cold"
