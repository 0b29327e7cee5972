"""One table of bad inputs across the package: each must raise a ValueError whose message names the problem (and,
where there is one, the fix) before any work starts. The CLI turns them into one line and exit status 2."""

import pytest
import torch

from ddpm_kiit import GaussianBlurScheduler, KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.cli import main as cli
from ddpm_kiit.data import ImageTransform, load_image_dataset
from ddpm_kiit.evaluation.evaluate import feature_network
from ddpm_kiit.evaluation.metrics import frechet_distance, precision_recall
from ddpm_kiit.pipelines import DenoisingRecorder
from ddpm_kiit.sampling import swap_scheduler
from ddpm_kiit.training import parse_args, validate_args

TINY = {"block_out_channels": (8, 16), "time_embedding_dim": 8, "norm_num_groups": 4, "attention_type": None}


def _unet(**overrides):
    return SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, **{**TINY, **overrides})


def _x(batch=1):
    return torch.zeros(batch, 1, 4, 4)


def _pipe():
    return KiitDDPMPipeline(unet=_unet(), scheduler=KiitDDPMScheduler(num_train_timesteps=20))


def _train(*flags):
    return lambda tmp: validate_args(parse_args(["--output_dir", str(tmp / "out"), *flags]))


def _app(call):
    def run(tmp):
        from ddpm_kiit import app

        folder = tmp / "pipe"
        _pipe().save_pretrained(folder)
        return call(app, app.PipelineCache([tmp], app.AppLimits(max_images=4, max_steps=10)), str(folder))

    return run


CASES = {
    # models
    "norm type": (lambda t: _unet(norm_type="layer"), "`norm_type` must be one of"),
    "activation": (lambda t: _unet(act_fn="gelu"), "`act_fn` must be one of"),
    "attention type": (lambda t: _unet(attention_type="transformer"), "`attention_type` must be one of"),
    "odd time embedding": (lambda t: _unet(time_embedding_dim=5), "must be an even integer >= 4"),
    "one width": (lambda t: _unet(block_out_channels=(8,)), "at least two positive integers"),
    "groups do not divide": (
        lambda t: _unet(norm_type="group", block_out_channels=(6, 16)),
        "divisible by `norm_num_groups`=4",
    ),
    "heads do not divide": (
        lambda t: _unet(attention_type="self_attention", num_attention_heads=3),
        "`num_attention_heads`=3 must be >= 1 and divide",
    ),
    "cbam reduction": (lambda t: _unet(attention_type="cbam", cbam_reduction=64), "leaves no hidden channels"),
    "seed variant": (lambda t: SimpleUNet2DModel.from_seed_variant("huge"), "Unknown seed variant 'huge'"),
    "wrong input channels": (
        lambda t: _unet()(torch.zeros(1, 3, 16, 16), 0),
        "has 3 channels but this model has `in_channels`=1",
    ),
    "3-d sample": (lambda t: _unet()(torch.zeros(1, 16, 16), 0), "must have shape (batch, channels, height, width)"),
    "timesteps per sample": (
        lambda t: _unet()(torch.zeros(2, 1, 16, 16), torch.tensor([1, 2, 3])),
        "one value per sample (2)",
    ),
    # the DDPM scheduler
    "one timestep": (lambda t: KiitDDPMScheduler(num_train_timesteps=1), "`num_train_timesteps` must be an integer"),
    "betas reversed": (lambda t: KiitDDPMScheduler(beta_start=0.02, beta_end=1e-4), "0 < `beta_start` < `beta_end`"),
    "beta schedule": (lambda t: KiitDDPMScheduler(beta_schedule="quadratic"), "`beta_schedule` must be one of"),
    "prediction type": (lambda t: KiitDDPMScheduler(prediction_type="noise"), "`prediction_type` must be one of"),
    "variance type": (lambda t: KiitDDPMScheduler(variance_type="learned_small"), "`variance_type` must be one of"),
    "trained betas length": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=10, trained_betas=[0.1] * 3),
        "`trained_betas` must hold 10 values",
    ),
    "clip range": (lambda t: KiitDDPMScheduler(clip_sample_range=0), "`clip_sample_range` must be positive"),
    "too many steps": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).set_timesteps(50),
        "between 1 and `num_train_timesteps`=20",
    ),
    "timestep out of range": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).step(torch.zeros(1, 1, 4, 4), 20, torch.zeros(1, 1, 4, 4)),
        "`timestep`",
    ),
    "float timesteps": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).step(
            torch.zeros(2, 1, 4, 4), torch.tensor([1.0, 2.0]), torch.zeros(2, 1, 4, 4)
        ),
        "got a float tensor",
    ),
    "add_noise timestep too large": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).add_noise(_x(), _x(), torch.tensor([20])),
        "`timesteps` must hold integers in [0, 19] (the scheduler's `num_train_timesteps` is 20), got 20.",
    ),
    "add_noise timestep -1": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).add_noise(_x(), _x(), torch.tensor([-1])),
        "`timesteps` must hold integers in [0, 19] (the scheduler's `num_train_timesteps` is 20), got -1.",
    ),
    "get_velocity timesteps": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).get_velocity(_x(2), _x(2), torch.tensor([3, 25])),
        "`timesteps` must hold integers in [0, 19]",
    ),
    "per-sample step timesteps": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).step(_x(2), torch.tensor([-2, 5]), _x(2)),
        "`timestep` must hold integers in [0, 19] (the scheduler's `num_train_timesteps` is 20), got -2.",
    ),
    "scale_model_input timestep": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).scale_model_input(_x(), 20),
        "`timestep` must be an integer in [0, 19]",
    ),
    "custom timesteps ascending": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).set_timesteps(timesteps=[3, 9]),
        "`custom_timesteps` must be in descending order",
    ),
    "custom timesteps and a count": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).set_timesteps(2, timesteps=[9, 3]),
        "Can only pass one of `num_inference_steps` or `custom_timesteps`",
    ),
    "custom timesteps too large": (
        lambda t: KiitDDPMScheduler(num_train_timesteps=20).set_timesteps(timesteps=[20, 3]),
        "`timesteps` must start before `self.config.train_timesteps`: 20",
    ),
    "learned variance, one prediction": (
        lambda t: KiitDDPMScheduler(variance_type="learned_range").step(_x(), 5, _x()),
        "needs a model that also predicts the variance: 2 x 1 channels",
    ),
    "thresholding quantile": (
        lambda t: KiitDDPMScheduler(dynamic_thresholding_ratio=99.5),
        "`dynamic_thresholding_ratio` is a quantile and must lie in [0, 1]",
    ),
    "thresholding max": (lambda t: KiitDDPMScheduler(sample_max_value=-1.0), "`sample_max_value` must be positive"),
    # the blur scheduler
    "blur add_noise timestep": (
        lambda t: GaussianBlurScheduler(num_train_timesteps=10).add_noise(_x(8), _x(8), torch.tensor([10])),
        "`timesteps` must hold integers in [0, 9] (the scheduler's `num_train_timesteps` is 10), got 10.",
    ),
    "blur step timestep -1": (
        lambda t: GaussianBlurScheduler(num_train_timesteps=10).step(_x(), -1, _x()),
        "`timestep` must be an integer in [0, 9]",
    ),
    "negative blur": (lambda t: GaussianBlurScheduler(sigma_min=-1.0), "Blur widths must be >= 0"),
    "blur end below start": (
        lambda t: GaussianBlurScheduler(sigma_min=4.0, sigma_max=2.0),
        "`sigma_max` (2.0) must be larger than `sigma_min` (4.0)",
    ),
    "geometric from zero": (lambda t: GaussianBlurScheduler(blur_schedule="geometric"), "needs `sigma_min` > 0"),
    "blur boundary": (lambda t: GaussianBlurScheduler(boundary="zero"), "`boundary` must be one of"),
    "blur prediction type": (
        lambda t: GaussianBlurScheduler(prediction_type="epsilon"),
        "The cold process trains the model to predict 'sample'",
    ),
    "cold start not fitted": (
        lambda t: GaussianBlurScheduler().initial_sample((1, 1, 8, 8)),
        "call `scheduler.fit_initial_distribution(images)`",
    ),
    # pipelines and sampling
    "batch size zero": (lambda t: _pipe()(batch_size=0), "`batch_size` must be a positive integer, got 0"),
    "pipeline steps": (lambda t: _pipe()(num_inference_steps=21), "between 1 and the scheduler's"),
    "output type": (lambda t: _pipe()(output_type="tensor"), "`output_type` must be one of"),
    "callback inputs": (
        lambda t: _pipe()(callback_on_step_end_tensor_inputs=["noise"]),
        "`callback_on_step_end_tensor_inputs` may only name",
    ),
    "scheduler name": (lambda t: swap_scheduler(_pipe(), "magic"), "Unknown scheduler 'magic'"),
    "compare threshold max alone": (
        lambda t: cli_error(["compare-schedulers", str(t), "--sample-max-value", "1.5"]),
        "only apply with thresholding on (--thresholding)",
    ),
    "learned variance, plain model": (
        lambda t: swap_scheduler(_pipe(), "kiit", variance_type="learned"),
        "variance_type='learned' needs a model that predicts its variance too",
    ),
    "recorder steps": (lambda t: DenoisingRecorder([-1]), "`steps` must be a non-empty list of step indices >= 0"),
    "empty recorder": (lambda t: DenoisingRecorder([0]).strip(), "Nothing recorded"),
    # data
    "unknown dataset": (lambda t: load_image_dataset("cifar-11"), "Built-in offline datasets: ['emoji'"),
    "two sources": (
        lambda t: load_image_dataset("mnist", train_data_dir=str(t)),
        "Give exactly one of `dataset_name` and `train_data_dir`",
    ),
    "not a folder": (lambda t: load_image_dataset(train_data_dir=str(t / "missing")), "is not a folder"),
    "folder without images": (lambda t: load_image_dataset(train_data_dir=str(t)), "holds no images"),
    "transform channels": (lambda t: ImageTransform(32, 2), "`channels` must be 1 (greyscale) or 3 (RGB)"),
    "transform resolution": (lambda t: ImageTransform(0, 1), "`resolution` must be a positive integer"),
    # training flags
    "steps and epochs": (
        _train("--num_epochs", "2", "--max_train_steps", "5"),
        "Give --num_epochs or --max_train_steps",
    ),
    "learning rate": (_train("--learning_rate", "0"), "--learning_rate must be positive"),
    "negative snr gamma": (_train("--snr_gamma", "-1"), "--snr_gamma must be >= 0"),
    "zero batch": (_train("--train_batch_size", "0"), "--train_batch_size must be a positive integer"),
    "fp16 on cpu": (_train("--mixed_precision", "fp16"), "--mixed_precision fp16 needs a GPU"),
    # evaluation
    "feature space": (lambda t: feature_network("clip", "mnist"), "`features` must be one of"),
    "feature shapes": (lambda t: frechet_distance(torch.zeros(4, 3), torch.zeros(4, 5)), "with the same d"),
    "one sample": (lambda t: frechet_distance(torch.zeros(1, 3), torch.zeros(1, 3)), "at least 2 samples"),
    "precision k": (lambda t: precision_recall(torch.zeros(3, 2), torch.zeros(3, 2), k=3), "needs more than 3"),
    # conversion
    "missing checkpoint": (
        lambda t: cli_error(["convert-seed", str(t / "nope.pth"), str(t / "out")]),
        "does not exist or is not a file",
    ),
    # the app
    "app images": (lambda t: _app(lambda app, c, p: app.generate(c, p, "ddim", 5, 0, 5))(t), "Number of images"),
    "app steps": (lambda t: _app(lambda app, c, p: app.generate(c, p, "ddim", 10**6, 0, 1))(t), "Steps must be"),
    "app folder outside": (lambda t: _app(lambda app, c, p: c.get("/etc"))(t), "outside the folders"),
    "app blur sampler on noise": (
        lambda t: _app(lambda app, c, p: app.generate(c, p, "blur-naive", 5, 0, 1))(t),
        "is for blur pipelines",
    ),
    "app learned variance, plain model": (
        lambda t: _app(lambda app, c, p: app.generate(c, p, "kiit", 5, 0, 1, variance_type="learned_range"))(t),
        "variance_type='learned_range' needs a model that predicts its variance too",
    ),
    "app quiz guess": (lambda t: _app(lambda app, c, p: app.score_guess(500, 3, 20))(t), "Your guess must be"),
}


def cli_error(argv):
    """The CLI's one-line error, raised as the ValueError it reports."""
    import contextlib
    import io

    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        status = cli(argv)
    lines = stderr.getvalue().strip().splitlines()
    assert status == 2 and len(lines) == 1, (status, lines)
    raise ValueError(lines[0])


def test_there_are_at_least_forty_bad_inputs():
    assert len(CASES) >= 40


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_refused_with_a_message_that_names_it(name, tmp_path):
    call, message = CASES[name]
    if name.startswith("app ") and not _has_gradio():
        pytest.skip("the app needs the [app] extra")
    with pytest.raises(ValueError) as error:
        call(tmp_path)
    assert message in str(error.value), f"{name}: {error.value}"


def _has_gradio():
    try:
        import gradio  # noqa: F401
    except ImportError:
        return False
    return True


def test_the_cli_reports_bad_input_in_one_line_and_exits_2(tmp_path, capsys):
    assert cli(["generate", str(tmp_path / "missing"), "--out", str(tmp_path / "g.png")]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "is not a saved pipeline folder" in error[0]
    assert not (tmp_path / "g.png").exists()
