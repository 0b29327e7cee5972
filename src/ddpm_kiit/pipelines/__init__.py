from ..visualize import DenoisingRecorder, forward_process_strip
from .pipeline_kiit_ddpm import KiitDDPMPipeline
from .pipeline_kiit_text2img import KiitTextToImagePipeline

__all__ = ["DenoisingRecorder", "KiitDDPMPipeline", "KiitTextToImagePipeline", "forward_process_strip"]
