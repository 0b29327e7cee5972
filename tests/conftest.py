import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel  # noqa: E402

SMALL = {"block_out_channels": (32, 64, 128), "time_embedding_dim": 16}


def pytest_collection_modifyitems(config, items):
    if os.environ.get("RUN_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow; set RUN_SLOW=1")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def small_unet():
    torch.manual_seed(0)
    return SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, **SMALL).eval()


@pytest.fixture
def small_pipe(small_unet):
    pipe = KiitDDPMPipeline(unet=small_unet, scheduler=KiitDDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe
