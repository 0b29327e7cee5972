"""Sample a grid of images from a saved pipeline (a folder or a Hub id).

    python examples/generate.py PIPELINE --num-images 16 --scheduler ddim --steps 50 --seed 0 --out grid.png

Same options as `ddpm-kiit generate`; `--random-init VARIANT` samples from an untrained talk model instead (only
useful to see the machinery run).
"""

import sys
import tempfile

from ddpm_kiit.cli import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if argv[:1] == ["--random-init"]:
        from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel

        variant, argv = argv[1], argv[2:]
        unet = SimpleUNet2DModel.from_seed_variant(variant, in_channels=1, out_channels=1).eval()
        folder = tempfile.mkdtemp(prefix="ddpm-kiit-random-")
        KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler()).save_pretrained(folder)
        argv = [folder] + argv
    sys.exit(main(["generate"] + argv))
