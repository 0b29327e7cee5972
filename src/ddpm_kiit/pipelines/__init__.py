from .pipeline_kiit_ddpm import DenoisingRecorder, KiitDDPMPipeline, forward_process_strip

__all__ = ["DenoisingRecorder", "KiitDDPMPipeline", "forward_process_strip"]
