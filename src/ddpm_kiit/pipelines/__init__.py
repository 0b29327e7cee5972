from .pipeline_kiit_ddpm import DenoisingRecorder, KiitDDPMPipeline

__all__ = ["DenoisingRecorder", "KiitDDPMPipeline"]
