from .blur_operator import BlurSchedulerMixin, GaussianBlur
from .scheduling_blurring_diffusion import BlurringDiffusionScheduler, BlurringDiffusionSchedulerOutput
from .scheduling_cold_diffusion import ColdDiffusionScheduler, ColdDiffusionSchedulerOutput
from .scheduling_gaussian_blur import GaussianBlurScheduler, GaussianBlurSchedulerOutput
from .scheduling_kiit_ddpm import KiitDDPMScheduler, KiitDDPMSchedulerOutput

__all__ = [
    "BlurSchedulerMixin",
    "BlurringDiffusionScheduler",
    "BlurringDiffusionSchedulerOutput",
    "ColdDiffusionScheduler",
    "ColdDiffusionSchedulerOutput",
    "GaussianBlur",
    "GaussianBlurScheduler",
    "GaussianBlurSchedulerOutput",
    "KiitDDPMScheduler",
    "KiitDDPMSchedulerOutput",
]
