"""The public API stays: every name the package exported before the code was reorganised (and before conditioning
was added) still imports from where it did, and every CLI command and flag still parses."""

import importlib

import pytest

# module -> names importable from it before the reorganisation (its __all__ then, and the names scripts used).
EARLIER_NAMES = {
    "ddpm_kiit": [
        "DenoisingRecorder", "GaussianBlurScheduler", "ModelMixin", "SchedulerMixin", "KiitDDPMPipeline",
        "KiitDDPMScheduler", "KiitDDPMSchedulerOutput", "SimpleUNet2DModel",
    ],
    "ddpm_kiit.schedulers": [
        "GaussianBlurScheduler", "GaussianBlurSchedulerOutput", "KiitDDPMScheduler", "KiitDDPMSchedulerOutput",
    ],
    "ddpm_kiit.pipelines": ["DenoisingRecorder", "KiitDDPMPipeline", "forward_process_strip"],
    "ddpm_kiit.models": [
        "CBAM", "IMPROVED_CONFIG", "SelfAttentionBlock", "SimpleUNet2DModel", "SinusoidalTimestepEmbedding",
        "SkipAttentionGate",
    ],
    "ddpm_kiit.training": [
        "DEFAULT_MODEL_CONFIG", "NonFiniteLossError", "build_parser", "parse_args", "train", "validate_args",
    ],
    "ddpm_kiit.training.loop": [
        "build_scheduler", "training_target", "loss_weights", "sampling_pipeline", "sample_grid",
        "configure_cpu_threads", "default_mixed_precision", "latest_checkpoint", "list_checkpoints",
    ],
    "ddpm_kiit.training.args": ["TrainingConfig", "latest_checkpoint", "list_checkpoints", "load_model_config"],
    "ddpm_kiit.sampling": [
        "SCHEDULERS", "VARIANCE_TYPES", "swap_scheduler", "compare_schedulers", "load_pipeline", "grid_shape",
        "label_width", "labelled", "write_image_atomically",
    ],
    "ddpm_kiit.evaluation": [
        "DigitClassifier", "InceptionFeatures", "copy_fraction", "edge_share", "evaluate_pipeline", "format_report",
        "frechet_distance", "kernel_inception_distance", "load_classifier", "precision_recall", "real_floor",
        "score_samples",
    ],
    "ddpm_kiit.hub": ["push_folder", "render_model_card", "write_model_card", "update_card_quality"],
    "ddpm_kiit.app": ["AppLimits", "PipelineCache", "build_app", "launch", "generate", "forward", "reverse"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(EARLIER_NAMES))
def test_earlier_names_still_import(module):
    imported = importlib.import_module(module)
    missing = [name for name in EARLIER_NAMES[module] if not hasattr(imported, name)]
    assert not missing, f"{module} lost {missing}"


def test_the_old_blur_output_is_the_step_output_of_the_blur_schedulers():
    from ddpm_kiit.schedulers import ColdDiffusionScheduler, GaussianBlurSchedulerOutput

    assert ColdDiffusionScheduler.output_class is GaussianBlurSchedulerOutput
    assert set(GaussianBlurSchedulerOutput.__dataclass_fields__) == {"prev_sample", "pred_original_sample"}


def test_every_cli_command_still_parses():
    from ddpm_kiit.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    expected = {"train", "generate", "compare-schedulers", "convert-seed", "app", "evaluate", "floor", "push"}
    assert expected | {"train-classifier"} <= set(commands)
    parser.parse_args(["generate", "mnist", "--steps", "5", "--strip", "s.png", "--fast-inference"])
    parser.parse_args(["compare-schedulers", "mnist", "--thresholding", "--variance-type", "fixed_large"])
    parser.parse_args(["app", "--allow-hub", "--allow-repo", "a/b", "--no-hub", "--max-download-mb", "5"])
    parser.parse_args(["evaluate", "mnist", "--features", "inception", "--update-card", "--samples-cache", "c"])
