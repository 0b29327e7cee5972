from .scheduling_kiit_ddpm import KiitDDPMScheduler, KiitDDPMSchedulerOutput

__all__ = ["KiitDDPMScheduler", "KiitDDPMSchedulerOutput"]
