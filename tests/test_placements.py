"""Issue 8: attention, CBAM and attention-gate placements are configuration of one model class."""

import json

import pytest
import torch

from ddpm_kiit.models import IMPROVED_CONFIG, SimpleUNet2DModel

# Each placement written for a model whose blocks run at `resolutions` (largest first).
PLACEMENTS = {
    "talk_bottleneck_attention": lambda r: {"attention_type": "self_attention"},
    "talk_cbam": lambda r: {"attention_type": "cbam", "cbam_reduction": 4},
    "attention_at_resolutions": lambda r: {"attention_resolutions": list(r[1:]), "num_attention_heads": 4},
    "cbam_residual_branch": lambda r: {"cbam_placement": "residual_branch", "cbam_reduction": 4},
    "cbam_at_resolutions": lambda r: {
        "cbam_placement": "residual_branch",
        "cbam_reduction": 4,
        "cbam_resolutions": [r[-1]],
    },
    "gates_decoder": lambda r: {"skip_attention_gates": "decoder"},
    "gates_decoder_time": lambda r: {"skip_attention_gates": "decoder_time"},
    "improved": lambda r: {**IMPROVED_CONFIG, "attention_resolutions": [r[-1]]},
}


def build(placement: str, size: int, channels: int) -> SimpleUNet2DModel:
    # 28 px allows two stride-2 stages (28 -> 14 -> 7); 32 and 64 take three.
    widths = (16, 32, 32) if size == 28 else (16, 32, 32, 64)
    resolutions = [size // 2**i for i in range(len(widths) - 1)]
    config = {"norm_type": "group", "norm_num_groups": 8, **PLACEMENTS[placement](resolutions)}
    config.update(block_out_channels=widths, sample_size=size, in_channels=channels, out_channels=channels)
    return SimpleUNet2DModel(**config)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_placement_builds_trains_a_step_and_reloads_bit_exactly(tmp_path, placement, size, channels):
    torch.manual_seed(0)
    model = build(placement, size, channels)
    sample = torch.randn(2, channels, size, size)
    timesteps = torch.tensor([3, 250])
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(sample, timesteps).sample.square().mean()
    loss.backward()
    optimizer.step()
    assert model(sample, timesteps).sample.shape == sample.shape
    assert any(not torch.equal(before[name], p) for name, p in model.named_parameters()), "the step changed nothing"

    model.save_pretrained(tmp_path)
    loaded = SimpleUNet2DModel.from_pretrained(tmp_path)
    public = lambda config: json.loads(json.dumps({k: v for k, v in config.items() if not k.startswith("_")}))  # noqa: E731
    assert public(loaded.config) == public(model.config)
    for (name, p), (_, q) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(p, q), name
    model.eval(), loaded.eval()
    with torch.no_grad():
        assert torch.equal(model(sample, timesteps).sample, loaded(sample, timesteps).sample)


@pytest.mark.parametrize(
    "extra", [{"attention_resolutions": [16, 8], "num_attention_heads": 4}, {"skip_attention_gates": "decoder_time"}]
)
def test_zero_initialised_attention_and_open_gates_leave_the_output_unchanged_at_initialisation(extra):
    base = {"block_out_channels": (16, 32, 32, 64), "norm_type": "group", "norm_num_groups": 8}
    torch.manual_seed(0)
    plain = SimpleUNet2DModel(**base).eval()
    with_attention = SimpleUNet2DModel(**base, **extra).eval()
    # Copy every shared weight; the new layers keep their initialisation.
    missing, unexpected = with_attention.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing
    sample, timesteps = torch.randn(2, 3, 32, 32), torch.tensor([10, 200])
    with torch.no_grad():
        torch.testing.assert_close(with_attention(sample, timesteps).sample, plain(sample, timesteps).sample)


def test_attention_at_16_and_8_sits_in_the_blocks_that_run_at_those_sizes():
    model = SimpleUNet2DModel(
        block_out_channels=(16, 32, 32, 64), norm_type="group", norm_num_groups=8, attention_resolutions=[16, 8]
    )
    down = [block.attention is not None for block in model.down_blocks]
    up = [block.attention is not None for block in model.up_blocks]
    assert down == [False, True, True]  # down blocks convolve at 32, 16, 8
    assert up == [False, True, True]  # up blocks convolve at 4 (the bottleneck), 8, 16
    assert model.down_blocks[1].attention.num_heads == 1  # num_attention_heads defaults to 1


def test_cbam_residual_branch_adds_the_gated_branch_to_the_shortcut():
    torch.manual_seed(0)
    model = SimpleUNet2DModel(
        block_out_channels=(16, 32, 32, 64),
        norm_type="group",
        norm_num_groups=8,
        block_type="residual",
        time_embedding_norm="default",
        cbam_placement="residual_branch",
        cbam_reduction=4,
    ).eval()
    block = model.down_blocks[0]
    assert block.cbam.max_pool  # Woo et al.'s channel gate pools by average and max
    x, temb = torch.randn(2, 16, 32, 32), torch.randn(2, 32)
    with torch.no_grad():
        branch = block.conv1(block.act(block.norm1(x)))
        branch = block.norm2(branch + block.time_proj(temb)[:, :, None, None])
        branch = block.conv2(block.act(branch))
        expected = block.transform(block.shortcut(x) + block.cbam(branch))
        torch.testing.assert_close(block(x, temb), expected)


def test_talk_cbam_keeps_the_talks_average_pooled_main_path_gate():
    model = SimpleUNet2DModel.from_seed_variant("cbam", block_out_channels=(16, 32, 64), cbam_reduction=4)
    assert all(block.cbam is not None and not block.cbam.max_pool for block in model.down_blocks)
    assert model.mid_attention is not None


def test_time_gated_skip_gate_depends_on_the_timestep():
    torch.manual_seed(0)
    model = SimpleUNet2DModel(
        block_out_channels=(16, 32, 64), norm_type="group", norm_num_groups=8, skip_attention_gates="decoder_time"
    )
    for gate in model.skip_gates:
        torch.nn.init.normal_(gate.psi.weight)
    gate = model.skip_gates[0]
    skip, gating = torch.randn(1, 64, 8, 8), torch.randn(1, 64, 8, 8)
    early, late = model.time_embedding(torch.tensor([1])), model.time_embedding(torch.tensor([290]))
    assert not torch.allclose(gate(skip, gating, early), gate(skip, gating, late))


def test_full_resolution_skip_feeds_conv_in_features_to_the_output_block():
    model = SimpleUNet2DModel(block_out_channels=(16, 32, 64), norm_type="group", norm_num_groups=8, skip_conv_in=True)
    assert model.out_block.conv1.in_channels == 2 * 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"attention_resolutions": [12]}, "`attention_resolutions` must list feature-map sizes"),
        ({"cbam_resolutions": [2]}, "`cbam_resolutions` must list feature-map sizes"),
        ({"cbam_placement": "everywhere"}, "`cbam_placement` must be one of"),
        ({"skip_attention_gates": "time"}, "`skip_attention_gates` must be one of"),
        ({"block_type": "resnet"}, "`block_type` must be one of"),
    ],
)
def test_bad_placements_are_refused_with_the_valid_choices(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SimpleUNet2DModel(block_out_channels=(16, 32, 64), **kwargs)


def test_improved_default_is_a_few_million_parameters():
    model = SimpleUNet2DModel(in_channels=3, out_channels=3, **IMPROVED_CONFIG)
    assert 1e6 < sum(p.numel() for p in model.parameters()) < 4e6
