import pytest
import torch
from conftest import SMALL
from diffusers import DDPMPipeline, DDPMScheduler

from ddpm_kiit import SimpleUNet2DModel


@pytest.mark.parametrize(
    "variant, expected", [("simple", 62_438_883), ("self_attention", 75_035_107), ("cbam", 75_256_559)]
)
def test_seed_variants_have_the_talks_parameter_counts(variant, expected):
    model = SimpleUNet2DModel.from_seed_variant(variant)
    assert sum(p.numel() for p in model.parameters()) == expected


def test_unknown_seed_variant_names_the_choices():
    with pytest.raises(ValueError, match="choose one of \\('simple', 'self_attention', 'cbam'\\)"):
        SimpleUNet2DModel.from_seed_variant("attention")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("attention_type", [None, "self_attention", "cbam"])
def test_forward_shapes(channels, size, attention_type):
    model = SimpleUNet2DModel(in_channels=channels, out_channels=channels, attention_type=attention_type, **SMALL)
    out = model.eval()(torch.randn(2, channels, size, size), torch.tensor([3, 250])).sample
    assert out.shape == (2, channels, size, size)
    assert torch.isfinite(out).all()


def test_forward_in_bfloat16():
    model = SimpleUNet2DModel(in_channels=3, out_channels=3, norm_type="group", attention_type="cbam", **SMALL)
    model = model.to(torch.bfloat16).eval()
    out = model(torch.randn(2, 3, 32, 32, dtype=torch.bfloat16), 10).sample
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_forward_under_bf16_autocast_matches_fp32_closely():
    torch.manual_seed(0)
    model = SimpleUNet2DModel(in_channels=1, out_channels=1, norm_type="group", **SMALL).eval()
    x = torch.randn(2, 1, 32, 32)
    reference = model(x, 7).sample
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = model(x, 7).sample
    assert (low.float() - reference).abs().max() < 0.05 * reference.abs().max() + 0.05


@pytest.mark.parametrize("timestep", [5, torch.tensor(5), torch.tensor([5]), torch.tensor([5, 5, 5])])
def test_timestep_forms_give_the_same_output(timestep, small_unet):
    x = torch.randn(3, 1, 16, 16)
    reference = small_unet(x, torch.tensor([5, 5, 5])).sample
    torch.testing.assert_close(small_unet(x, timestep).sample, reference)


def test_return_dict_false_gives_a_tuple(small_unet):
    out = small_unet(torch.randn(1, 1, 16, 16), 0, return_dict=False)
    assert isinstance(out, tuple) and out[0].shape == (1, 1, 16, 16)


def test_eval_and_train_modes_work_and_batch_size_one_in_eval(small_unet):
    # The talk's class defined a `train()` method, so `model.eval()` (which calls `train(False)`) raised.
    small_unet.train()
    assert small_unet.training
    small_unet(torch.randn(2, 1, 16, 16), torch.tensor([1, 2])).sample.sum().backward()
    small_unet.eval()
    assert not small_unet.training
    assert small_unet(torch.randn(1, 1, 16, 16), 3).sample.shape == (1, 1, 16, 16)


def test_forward_keeps_no_state(small_unet):
    # The talk overwrote `num_timesteps` with a tensor inside forward, so a second sampling run returned noise.
    before = {k: v.clone() for k, v in small_unet.state_dict().items()}
    attributes = dict(vars(small_unet))
    x = torch.randn(2, 1, 16, 16)
    first = small_unet(x, 4).sample
    second = small_unet(x, 4).sample
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert vars(small_unet).keys() == attributes.keys()
    for key, value in small_unet.state_dict().items():
        assert torch.equal(value, before[key])


@pytest.mark.parametrize("dim", [4, 6, 32, 34])
def test_time_embedding_matches_the_talk_for_even_dims(dim):
    from talk_reference import SinusoidalPositionEmbeddings

    from ddpm_kiit.models import SinusoidalTimestepEmbedding

    embedding = SinusoidalTimestepEmbedding(dim, torch.nn.Identity())
    t = torch.tensor([0.0, 1.0, 17.0, 299.0])
    with torch.no_grad():
        ours = embedding(t)
        expected = embedding.linear_1(SinusoidalPositionEmbeddings(dim)(t))
    torch.testing.assert_close(ours, expected)


@pytest.mark.parametrize("dim", [2, 3, 31, 0])
def test_bad_time_embedding_dims_are_refused(dim):
    with pytest.raises(ValueError, match=f"even integer >= 4.*got {dim}"):
        SimpleUNet2DModel(time_embedding_dim=dim)


def test_size_not_divisible_names_the_size_and_nearest_valid_ones(small_unet):
    with pytest.raises(ValueError, match=r"height 30 is not divisible by 4.*nearest valid sizes are \[28, 32\]"):
        small_unet(torch.randn(1, 1, 30, 32), 1)
    model = SimpleUNet2DModel(in_channels=1, out_channels=1)  # four down blocks: multiples of 16
    with pytest.raises(ValueError, match=r"width 28 is not divisible by 16.*nearest valid sizes are \[16, 32\]"):
        model(torch.randn(1, 1, 32, 28), 1)


def test_wrong_channel_count_is_refused(small_unet):
    with pytest.raises(ValueError, match="has 3 channels but this model has `in_channels`=1"):
        small_unet(torch.randn(1, 3, 16, 16), 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"norm_type": "layer"}, "`norm_type` must be one of"),
        ({"attention_type": "gates"}, "`attention_type` must be one of"),
        ({"sample_size": 30}, "`sample_size` 30 is not divisible by 16"),
        ({"block_out_channels": (64,)}, "at least two positive integers"),
        ({"norm_type": "group", "block_out_channels": (48, 64)}, r"\[48\] are not"),
        ({"attention_type": "self_attention", "num_attention_heads": 3}, "must be >= 1 and divide the 1024"),
    ],
)
def test_bad_configs_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimpleUNet2DModel(**kwargs)


def test_patches_are_folded_into_channels_and_unfolded_again():
    torch.manual_seed(0)
    patched = SimpleUNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, patch_size=2, attention_resolutions=(8,), **SMALL
    ).eval()
    # The same network without patches, on the folded 12-channel 16x16 maps, with the same weights.
    folded = SimpleUNet2DModel(sample_size=16, in_channels=12, out_channels=12, attention_resolutions=(8,), **SMALL)
    folded.load_state_dict(patched.state_dict())
    x = torch.randn(2, 3, 32, 32)
    expected = torch.nn.functional.pixel_shuffle(folded.eval()(torch.nn.functional.pixel_unshuffle(x, 2), 7).sample, 2)
    output = patched(x, 7).sample
    assert output.shape == (2, 3, 32, 32)
    assert torch.equal(output, expected)


def test_patch_size_sets_the_sizes_the_model_accepts():
    model = SimpleUNet2DModel(sample_size=32, in_channels=1, out_channels=1, patch_size=2, **SMALL)
    assert model.downsample_factor == 8  # patches of 2, then two down blocks
    with pytest.raises(ValueError, match=r"height 28 is not divisible by 8 \(`patch_size` times .*\[24, 32\]"):
        model(torch.randn(1, 1, 28, 32), 1)
    with pytest.raises(ValueError, match=r"`sample_size` 36 is not divisible by 8"):
        SimpleUNet2DModel(sample_size=36, patch_size=2, **SMALL)
    # Attention resolutions name the folded maps' sizes: 16 and 8 for 32x32 images in patches of 2.
    with pytest.raises(ValueError, match=r"\[16, 8\] for `sample_size`=32, `patch_size`=2"):
        SimpleUNet2DModel(sample_size=32, patch_size=2, attention_resolutions=(32,), **SMALL)
    with pytest.raises(ValueError, match="`patch_size` must be a positive integer, got 0"):
        SimpleUNet2DModel(patch_size=0, **SMALL)


@pytest.mark.parametrize("norm_type", ["batch", "group"])
def test_save_and_load_is_bit_exact_including_batchnorm_statistics(tmp_path, norm_type):
    model = SimpleUNet2DModel(
        in_channels=3, out_channels=3, norm_type=norm_type, attention_type="cbam", num_attention_heads=4, **SMALL
    )
    model.train()
    for _ in range(3):  # move the BatchNorm running statistics away from their initial values
        model(torch.randn(4, 3, 16, 16), torch.randint(0, 300, (4,)))
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").is_file()
    loaded = SimpleUNet2DModel.from_pretrained(tmp_path).eval()
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key]), key
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(model(x, 9).sample, loaded(x, 9).sample)
    assert loaded.config.num_attention_heads == 4


def test_from_pretrained_honours_torch_dtype(tmp_path, small_unet):
    small_unet.save_pretrained(tmp_path)
    loaded = SimpleUNet2DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    assert loaded.dtype == torch.bfloat16
    assert torch.equal(loaded.conv_in.weight, small_unet.conv_in.weight.to(torch.bfloat16))


def test_scale_shift_time_embedding_changes_features_multiplicatively():
    model = SimpleUNet2DModel(norm_type="group", act_fn="silu", time_embedding_norm="scale_shift", **SMALL)
    block = model.down_blocks[0]
    assert block.time_proj.out_features == 2 * 64
    x = torch.randn(1, 3, 32, 32)
    assert not torch.equal(model(x, 1).sample, model(x, 200).sample)


def test_multi_head_attention_matches_nn_multihead_attention():
    from ddpm_kiit.models import SelfAttentionBlock

    torch.manual_seed(0)
    block = SelfAttentionBlock(32, num_heads=4).eval()
    reference = torch.nn.MultiheadAttention(32, 4, batch_first=True).eval()
    reference.in_proj_weight.data.copy_(block.to_qkv.weight)
    reference.in_proj_bias.data.copy_(block.to_qkv.bias)
    reference.out_proj.load_state_dict(block.to_out.state_dict())
    x = torch.randn(2, 32, 4, 4)
    tokens = x.flatten(2).transpose(1, 2)
    normed = block.norm1(tokens)
    expected = tokens + reference(normed, normed, normed, need_weights=False)[0]
    expected = expected + block.ff(block.norm2(expected))
    torch.testing.assert_close(block(x), expected.transpose(1, 2).reshape(2, 32, 4, 4), rtol=1e-5, atol=1e-5)


def test_stock_ddpm_pipeline_drives_our_model(small_unet):
    pipe = DDPMPipeline(unet=small_unet, scheduler=DDPMScheduler(num_train_timesteps=300))
    pipe.set_progress_bar_config(disable=True)
    images = pipe(batch_size=2, num_inference_steps=5, generator=torch.manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 1)
    assert ((images >= 0) & (images <= 1)).all()
