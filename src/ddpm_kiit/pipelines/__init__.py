from ..visualize import DenoisingRecorder, forward_process_strip
from .pipeline_kiit_ddpm import KiitDDPMPipeline

__all__ = ["DenoisingRecorder", "KiitDDPMPipeline", "forward_process_strip"]
