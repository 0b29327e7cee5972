"""Issue 10: the pipeline's inference speed-ups, and why BatchNorm is not folded."""

import shutil

import pytest
import torch
import torch.nn.functional as F

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel

SMALL = {"block_out_channels": (16, 32, 64), "time_embedding_dim": 16, "in_channels": 1, "out_channels": 1}


def pipeline(**config) -> KiitDDPMPipeline:
    torch.manual_seed(0)
    unet = SimpleUNet2DModel(**{**SMALL, "norm_type": "group", "norm_num_groups": 8, **config}).eval()
    pipe = KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler(num_train_timesteps=50))
    pipe.set_progress_bar_config(disable=True)
    return pipe


def sample(pipe) -> torch.Tensor:
    return pipe(batch_size=2, num_inference_steps=10, generator=torch.manual_seed(0), output_type="pt").images


def test_channels_last_and_inference_mode_are_exact():
    reference = sample(pipeline())
    fast = pipeline().enable_fast_inference(channels_last=True, autocast_dtype=None, inference_mode=True)
    assert fast.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(sample(fast), reference, rtol=1e-5, atol=1e-5)


@pytest.mark.skipif(
    not any(shutil.which(compiler) for compiler in ("g++", "clang++", "c++")),
    reason="torch.compile on a CPU writes C++ kernels and needs a compiler",
)
def test_compiled_float32_sampling_matches_eager_up_to_rounding():
    reference = sample(pipeline())
    fast = pipeline().enable_fast_inference(channels_last=True, autocast_dtype=None, compile=True)
    torch.testing.assert_close(sample(fast), reference, rtol=1e-4, atol=1e-4)


def test_bf16_autocast_runs_the_unet_in_bf16_and_keeps_the_latents_in_float32():
    seen = []
    pipe = pipeline().enable_fast_inference(autocast_dtype=torch.bfloat16)
    pipe.unet.conv_out.register_forward_hook(lambda module, args, output: seen.append(output.dtype))
    images = sample(pipe)
    assert set(seen) == {torch.bfloat16}
    assert images.dtype == torch.float32
    # Close to float32 but not equal: bf16 keeps 8 bits of mantissa.
    assert (images - sample(pipeline())).abs().max() < 0.1


@pytest.mark.parametrize("inference_mode", [False, True])
def test_sampling_never_tracks_gradients(inference_mode):
    # A regression: `torch.inference_mode(False)` turns gradient tracking on, which kept every step's graph alive.
    grad_enabled = []
    pipe = pipeline().enable_fast_inference(channels_last=False, autocast_dtype=None, inference_mode=inference_mode)
    pipe.unet.conv_out.register_forward_hook(lambda module, args, output: grad_enabled.append(torch.is_grad_enabled()))
    images = sample(pipe)
    assert grad_enabled and not any(grad_enabled)
    assert not images.requires_grad


def test_unsupported_autocast_dtype_is_refused():
    with pytest.raises(ValueError, match="`autocast_dtype` must be .auto., torch.bfloat16, torch.float16 or None"):
        pipeline().enable_fast_inference(autocast_dtype=torch.float64)


def test_folding_the_talks_batchnorm_into_the_next_convolution_is_wrong_at_the_borders():
    # The talk's block: BatchNorm after the ReLU, then a zero-padded 3x3 convolution. BN(x) = a * x + b per channel;
    # folded into the convolution (w' = w * a, b' = conv bias + sum of w * b) it would also add b's contribution
    # where the convolution reads padding, which the unfolded model pads with zeros after BN.
    torch.manual_seed(0)
    norm, conv = torch.nn.BatchNorm2d(4).eval(), torch.nn.Conv2d(4, 3, 3, padding=1)
    norm.running_mean.uniform_(-1, 1), norm.running_var.uniform_(0.5, 2), norm.weight.data.uniform_(0.5, 2)
    norm.bias.data.uniform_(-1, 1)
    scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)
    shift = norm.bias - norm.running_mean * scale
    folded_weight = conv.weight * scale[None, :, None, None]
    folded_bias = conv.bias + (conv.weight * shift[None, :, None, None]).sum(dim=(1, 2, 3))
    x = torch.relu(torch.randn(1, 4, 8, 8))
    with torch.no_grad():
        exact = conv(norm(x))
        folded = F.conv2d(x, folded_weight, folded_bias, padding=1)
    torch.testing.assert_close(folded[..., 1:-1, 1:-1], exact[..., 1:-1, 1:-1], rtol=1e-5, atol=1e-5)
    assert (folded[..., 0, :] - exact[..., 0, :]).abs().max() > 1e-2


def test_auto_autocast_picks_bf16_exactly_where_the_device_computes_it_natively():
    from ddpm_kiit.pipelines.pipeline_kiit_ddpm import native_bf16

    pipe = pipeline().enable_fast_inference()
    assert pipe.autocast_dtype == (torch.bfloat16 if native_bf16("cpu") else None)
