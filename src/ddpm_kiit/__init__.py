"""ddpm-kiit: the KIIT DDPM talk's models, scheduler and pipeline as a Hugging Face Diffusers extension."""

import diffusers as _diffusers

from .models import SimpleUNet2DModel
from .pipelines import DenoisingRecorder, KiitDDPMPipeline
from .schedulers import KiitDDPMScheduler, KiitDDPMSchedulerOutput

__version__ = "0.1.0"

__all__ = [
    "DenoisingRecorder",
    "KiitDDPMPipeline",
    "KiitDDPMScheduler",
    "KiitDDPMSchedulerOutput",
    "SimpleUNet2DModel",
]


def _register_with_diffusers():
    """Makes `diffusers.DiffusionPipeline.from_pretrained(folder)` find our pipeline class.

    Stock Diffusers resolves a saved pipeline's `_class_name` with `getattr(diffusers, name)` and offers no plugin
    registry; the alternative, a `pipeline.py` in every saved folder, would demand `trust_remote_code=True` even for
    our own files. So importing `ddpm_kiit` adds our public classes to the `diffusers` namespace. Only missing names
    are added; nothing of Diffusers' own is replaced.
    """
    for name in ("KiitDDPMPipeline", "KiitDDPMScheduler", "SimpleUNet2DModel"):
        if name not in vars(_diffusers):
            setattr(_diffusers, name, globals()[name])


_register_with_diffusers()
