"""ddpm-kiit: the KIIT DDPM talk's models, scheduler and pipeline as a Hugging Face Diffusers extension."""

import functools as _functools
import inspect as _inspect
import os as _os

import diffusers as _diffusers
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines import pipeline_loading_utils as _loading
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .models import SimpleUNet2DModel
from .pipelines import DenoisingRecorder, KiitDDPMPipeline, KiitTextToImagePipeline
from .remote_code import LEGACY_REMOTE_MODULES as _LEGACY_REMOTE_MODULES
from .remote_code import REMOTE_MODULES as _REMOTE_MODULES
from .schedulers import (
    BlurringDiffusionScheduler,
    BlurringDiffusionSchedulerOutput,
    ColdDiffusionScheduler,
    ColdDiffusionSchedulerOutput,
    GaussianBlurScheduler,
    KiitDDPMScheduler,
    KiitDDPMSchedulerOutput,
)

__version__ = "0.1.0"

__all__ = [
    "BlurringDiffusionScheduler",
    "BlurringDiffusionSchedulerOutput",
    "ColdDiffusionScheduler",
    "ColdDiffusionSchedulerOutput",
    "DenoisingRecorder",
    "GaussianBlurScheduler",
    "ModelMixin",
    "SchedulerMixin",
    "KiitDDPMPipeline",
    "KiitDDPMScheduler",
    "KiitDDPMSchedulerOutput",
    "KiitTextToImagePipeline",
    "SimpleUNet2DModel",
]


def _register_with_diffusers():
    """Makes stock `diffusers.DiffusionPipeline.from_pretrained` load our pipelines, from folders and Hub ids.

    Diffusers has no plugin registry. It resolves a saved pipeline's `_class_name` with `getattr(diffusers, name)`,
    and it accepts a component library (`["ddpm_kiit", "SimpleUNet2DModel"]` in `model_index.json`) only if the
    library is one of its `LOADABLE_CLASSES` or the repository ships the component's code, which then needs
    `trust_remote_code=True` even for a local folder. So importing `ddpm_kiit`:
    - adds our public classes to the `diffusers` namespace (only missing names; nothing of Diffusers' is replaced);
    - declares `ddpm_kiit` a loadable library whose models and schedulers save and load like Diffusers' own, the
      way Diffusers itself declares `transformers`, so folders saved before issue 23 (which name
      `["ddpm_kiit", "SimpleUNet2DModel"]` and `_class_name: "KiitDDPMPipeline"`) keep loading;
    - makes Diffusers use our classes for the modules that `save_pretrained` now writes beside the weights (see
      `_use_installed_classes_for_generated_modules`), so those folders load with no `trust_remote_code`.
    """
    for name in (
        "KiitDDPMPipeline",
        "KiitTextToImagePipeline",
        "KiitDDPMScheduler",
        "ColdDiffusionScheduler",
        "BlurringDiffusionScheduler",
        "GaussianBlurScheduler",
        "SimpleUNet2DModel",
    ):
        if name not in vars(_diffusers):
            setattr(_diffusers, name, globals()[name])
    _loading.LOADABLE_CLASSES.setdefault(
        __name__,
        {
            "ModelMixin": ["save_pretrained", "from_pretrained"],
            "SchedulerMixin": ["save_pretrained", "from_pretrained"],
        },
    )
    _use_installed_classes_for_generated_modules()


def _use_installed_classes_for_generated_modules():
    """Resolves the module files that ddpm-kiit generates to the installed package's classes.

    A folder saved by `KiitDDPMPipeline.save_pretrained` names `_class_name: ["pipeline_kiit_ddpm", ...]` and
    `"unet": ["unet_kiit_simple", "SimpleUNet2DModel"]` with those files beside the weights, for stock Diffusers
    (`ddpm_kiit.remote_code`). Diffusers loads every such module through
    `diffusers.pipelines.pipeline_loading_utils.get_class_from_dynamic_module` (a module global, looked up at each
    call by `_get_custom_pipeline_class` and `get_class_obj_and_candidates`), which refuses without
    `trust_remote_code=True`. Diffusers 0.42 has no public hook for this, so that global is wrapped: a (file name,
    class name) pair from `REMOTE_MODULES` (or from `LEGACY_REMOTE_MODULES`, which older versions wrote) returns our
    class, and nothing from the folder or repository runs; every other call goes to Diffusers' function unchanged.
    Wrapping twice is a no-op.
    """
    original = _loading.get_class_from_dynamic_module
    if getattr(original, "_ddpm_kiit_original", None) is not None:
        return
    ours = {}
    for class_name, module in {**_REMOTE_MODULES, **_LEGACY_REMOTE_MODULES}.items():
        ours[(f"{module}.py", class_name)] = globals()[class_name]
    ours[(f"{_REMOTE_MODULES['KiitDDPMPipeline']}.py", None)] = KiitDDPMPipeline  # `custom_pipeline=` finds it

    signature = _inspect.signature(original)

    @_functools.wraps(original)
    def get_class_from_dynamic_module(*args, **kwargs):
        arguments = signature.bind(*args, **kwargs).arguments
        cls = ours.get((_os.path.basename(str(arguments["module_file"])), arguments.get("class_name")))
        if cls is not None:
            return cls
        return original(*args, **kwargs)

    get_class_from_dynamic_module._ddpm_kiit_original = original
    _loading.get_class_from_dynamic_module = get_class_from_dynamic_module


_register_with_diffusers()
