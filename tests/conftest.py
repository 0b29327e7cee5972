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


def reset_accelerate():
    """Accelerate keeps its state in process-wide singletons; a second training run in one process needs them reset."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()


@pytest.fixture
def fresh_accelerate_state():
    """Use with `pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")` in modules that train."""
    yield
    reset_accelerate()


@pytest.fixture
def small_unet():
    torch.manual_seed(0)
    return SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, **SMALL).eval()


@pytest.fixture
def small_pipe(small_unet):
    pipe = KiitDDPMPipeline(unet=small_unet, scheduler=KiitDDPMScheduler())
    pipe.set_progress_bar_config(disable=True)
    return pipe
