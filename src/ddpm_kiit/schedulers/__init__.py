from .scheduling_gaussian_blur import GaussianBlurScheduler, GaussianBlurSchedulerOutput
from .scheduling_kiit_ddpm import KiitDDPMScheduler, KiitDDPMSchedulerOutput

__all__ = ["GaussianBlurScheduler", "GaussianBlurSchedulerOutput", "KiitDDPMScheduler", "KiitDDPMSchedulerOutput"]
