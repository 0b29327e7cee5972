"""ddpm-kiit: the KIIT DDPM talk's models, scheduler and pipeline as a Hugging Face Diffusers extension."""

import diffusers as _diffusers
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines import pipeline_loading_utils as _loading
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .models import SimpleUNet2DModel
from .pipelines import DenoisingRecorder, KiitDDPMPipeline
from .schedulers import GaussianBlurScheduler, KiitDDPMScheduler, KiitDDPMSchedulerOutput

__version__ = "0.1.0"

__all__ = [
    "DenoisingRecorder",
    "GaussianBlurScheduler",
    "ModelMixin",
    "SchedulerMixin",
    "KiitDDPMPipeline",
    "KiitDDPMScheduler",
    "KiitDDPMSchedulerOutput",
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
      way Diffusers itself declares `transformers`. Saved folders then name the stable top-level `ddpm_kiit`, not
      a module path that a refactoring would break.
    """
    for name in ("KiitDDPMPipeline", "KiitDDPMScheduler", "GaussianBlurScheduler", "SimpleUNet2DModel"):
        if name not in vars(_diffusers):
            setattr(_diffusers, name, globals()[name])
    _loading.LOADABLE_CLASSES.setdefault(
        __name__,
        {
            "ModelMixin": ["save_pretrained", "from_pretrained"],
            "SchedulerMixin": ["save_pretrained", "from_pretrained"],
        },
    )


_register_with_diffusers()
