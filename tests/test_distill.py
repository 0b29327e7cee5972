"""Distillation into few-step students: the targets against the stock schedulers' steps, the Accelerate loop (resume,
rounds), the student as a pipeline folder, and the refusals."""

import dataclasses
import json

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DiffusionPipeline, DPMSolverMultistepScheduler, LCMScheduler

from ddpm_kiit import KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.cli import distill_main
from ddpm_kiit.training.distill import (
    DistillConfig,
    _consistency_function,
    _NoiseLevels,
    ddim_step,
    distill,
    learning_rate_at,
    parse_args,
    progressive_target,
    student_scheduler,
    teacher_grid,
    teacher_spans,
)

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")
TINY = {"block_out_channels": (8, 16), "time_embedding_dim": 8, "norm_num_groups": 4, "norm_type": "group"}


def _teacher(folder, num_train_timesteps=40, prediction_type="v_prediction", **unet_config):
    torch.manual_seed(0)
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, **{**TINY, **unet_config})
    scheduler = KiitDDPMScheduler(
        num_train_timesteps=num_train_timesteps, prediction_type=prediction_type, rescale_betas_zero_snr=True
    )
    KiitDDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return folder


def _args(teacher, out, *extra):
    return [
        str(teacher), "--dataset_name", "mnist", "--train_batch_size", "8", "--num_sample_images", "2",
        "--mixed_precision", "no", "--output_dir", str(out), *extra,
    ]  # fmt: skip


def _levels():
    scheduler = KiitDDPMScheduler(prediction_type="v_prediction", rescale_betas_zero_snr=True)
    return scheduler, _NoiseLevels(scheduler.alphas_cumprod, "cpu")


@pytest.mark.parametrize("num_steps", [1, 2, 4, 8])
def test_the_progressive_target_is_the_output_whose_stock_ddim_step_lands_where_the_teacher_landed(num_steps):
    teacher_scheduler, levels = _levels()
    ddim = student_scheduler(teacher_scheduler, "progressive", 64)
    ddim.set_timesteps(num_steps)
    generator = torch.Generator().manual_seed(0)
    for t in ddim.timesteps:
        sample, landed = torch.randn(2, 1, 4, 4, generator=generator), torch.randn(2, 1, 4, 4, generator=generator)
        landing = int(t) - 300 // num_steps
        level, target_level = torch.full((2,), int(t)), torch.full((2,), landing)
        target = progressive_target(sample, landed, level, target_level, levels, "v_prediction")
        stepped = ddim.step(target, int(t), sample).prev_sample
        torch.testing.assert_close(stepped, landed, rtol=1e-4, atol=1e-4)


def test_ddim_step_is_the_stock_ddim_step():
    teacher_scheduler, levels = _levels()
    ddim = student_scheduler(teacher_scheduler, "progressive", 64)
    ddim.set_timesteps(8)
    sample, output = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4)
    for t in ddim.timesteps[:-1]:
        level, landing = torch.full((3,), int(t)), torch.full((3,), int(t) - 300 // 8)
        ours = ddim_step(output, sample, level, landing, levels, "v_prediction")
        torch.testing.assert_close(ours, ddim.step(output, int(t), sample).prev_sample, rtol=1e-5, atol=1e-5)


def test_the_consistency_function_is_what_lcm_scheduler_step_denoises_to():
    teacher_scheduler, levels = _levels()
    lcm = student_scheduler(teacher_scheduler, "consistency", 50)
    lcm.set_timesteps(4)
    unet = lambda sample, t: type("Out", (), {"sample": torch.sin(sample * 3) + t.float()[:, None, None, None] / 300})  # noqa: E731
    run = type("Run", (), {"scheduler": lcm, "levels": levels, "prediction_type": "v_prediction"})
    sample = torch.randn(1, 1, 4, 4)
    for t in lcm.timesteps:
        timestep = torch.tensor([int(t)])
        expected = lcm.step(unet(sample, timestep).sample, t, sample, generator=torch.manual_seed(0)).denoised
        torch.testing.assert_close(_consistency_function(run, unet, sample, timestep), expected, rtol=1e-5, atol=1e-5)


def test_the_learning_rate_warms_up_and_decays_to_zero_in_each_round():
    config = DistillConfig(
        teacher="t", output_dir="o", steps=4, teacher_steps=16, max_train_steps=100, learning_rate=1.0,
        lr_warmup_steps=5,
    )  # fmt: skip
    assert config.num_rounds == 2 and config.round_bounds() == [0, 50, 100]
    rates = [learning_rate_at(config, step) for step in range(100)]
    assert rates[0] == pytest.approx(1 / 6) and rates[4] == pytest.approx(5 / 6) and rates[5] == pytest.approx(1.0)
    assert rates[49] < 0.01 and rates[50] == pytest.approx(1 / 6) and rates[99] < 0.01
    assert max(rates) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "method,scheduler_class,extra",
    [
        ("progressive", DDIMScheduler, ["--teacher_steps", "8"]),
        ("consistency", LCMScheduler, ["--teacher_steps", "10"]),
    ],
)
def test_a_tiny_teacher_distils_into_a_student_that_reloads_and_samples_in_each_step_count(
    tmp_path, method, scheduler_class, extra
):
    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    code = distill_main(_args(teacher, out, "--method", method, "--steps", "2", "--max_train_steps", "6", *extra))
    assert code == 0
    import ddpm_kiit  # noqa: F401 (registers our classes with Diffusers)

    student = DiffusionPipeline.from_pretrained(out)
    assert isinstance(student, KiitDDPMPipeline) and isinstance(student.scheduler, scheduler_class)
    assert json.loads((out / "model_index.json").read_text())["default_num_inference_steps"] == 2
    calls = []
    student.set_progress_bar_config(disable=True)
    count = lambda pipe, i, t, kwargs: calls.append(int(t)) or {}  # noqa: E731
    for steps in (1, 2, 4, 8):
        calls.clear()
        images = student(num_inference_steps=steps, output_type="np", callback_on_step_end=count).images
        assert images.shape == (1, 16, 16, 1) and len(calls) == steps
    calls.clear()
    student(output_type="np", callback_on_step_end=count)
    assert len(calls) == 2  # the step count it was distilled for
    card = (out / "README.md").read_text()
    assert str(teacher) in card and f"{method} distillation" in card and "ddpm-kiit distill" in card
    assert (out / "samples.png").is_file()
    summary = json.loads((out / "distill_summary.json").read_text())
    assert summary["optimizer_steps"] == 6 and summary["method"] == method


@pytest.mark.parametrize(
    "method,teacher_steps,grid",
    [("progressive", "8", []), ("consistency", "10", []), ("progressive", "4", ["--timesteps", "39,29"])],
)
def test_resuming_equals_an_uninterrupted_run(tmp_path, method, teacher_steps, grid):
    """Progressive: the checkpoint at step 4 lies in the second of two rounds (bounds 0, 3, 6), with its teacher."""
    from ddpm_kiit.training.checkpoints import list_checkpoints

    teacher = _teacher(tmp_path / "teacher")
    common = ["--method", method, "--steps", "2", "--teacher_steps", teacher_steps, "--max_train_steps", "6", *grid]
    whole, pieces = tmp_path / "whole", tmp_path / "pieces"
    assert distill_main(_args(teacher, whole, *common)) == 0
    from conftest import reset_accelerate

    reset_accelerate()
    assert distill_main(_args(teacher, pieces, *common, "--checkpointing_steps", "4")) == 0
    assert [p.name for p in list_checkpoints(pieces)] == ["checkpoint-4", "checkpoint-6"]
    if method == "progressive" and not grid:
        assert (pieces / "checkpoint-4" / "teacher").is_dir()
    for entry in ("model_index.json", "unet", "checkpoint-6"):  # as if the run had been killed after step 4
        path = pieces / entry
        import shutil

        shutil.rmtree(path) if path.is_dir() else path.unlink()
    reset_accelerate()
    assert distill_main(_args(teacher, pieces, *common, "--resume_from_checkpoint", "latest")) == 0
    expected = SimpleUNet2DModel.from_pretrained(whole / "unet").state_dict()
    resumed = SimpleUNet2DModel.from_pretrained(pieces / "unet").state_dict()
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], rtol=0, atol=0)


def test_a_student_of_a_student_records_the_whole_chain_and_its_total_minutes(tmp_path, capsys):
    # The shipped 2-step student is one more round on a student sampled at twice its steps: its summary must say what
    # the whole chain cost (issue 28's 60 minutes) and from which pipeline it started.
    teacher = _teacher(tmp_path / "teacher")
    first, second = tmp_path / "first", tmp_path / "second"
    common = ["--steps", "2", "--max_train_steps", "2"]
    assert distill_main(_args(teacher, first, *common, "--teacher_steps", "4")) == 0
    from conftest import reset_accelerate

    reset_accelerate()
    assert distill_main(_args(first, second, *common, "--teacher_steps", "4")) == 0
    earlier = json.loads((first / "distill_summary.json").read_text())
    summary = json.loads((second / "distill_summary.json").read_text())
    assert "first_teacher" not in earlier and earlier["teacher"] == str(teacher)
    assert summary["teacher"] == str(first) and summary["first_teacher"] == str(teacher)
    assert summary["teacher_distillation"] == earlier
    total = summary["train_seconds"] + earlier["train_seconds"]
    assert summary["total_train_seconds"] == pytest.approx(total, abs=0.02)
    assert f"With its teacher's distillation from {teacher}:" in capsys.readouterr().out


def test_the_student_learns_its_teachers_two_steps_in_one(tmp_path):
    """After distillation, one student step from pure noise lands nearer the teacher's two DDIM steps than the
    teacher's own single step does (the student starts as the teacher)."""
    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    args = ["--steps", "1", "--teacher_steps", "2", "--max_train_steps", "120", "--learning_rate", "3e-3"]
    assert distill_main(_args(teacher, out, *args, "--no-use_ema")) == 0
    teacher_pipe = KiitDDPMPipeline.from_pretrained(teacher)
    teacher_pipe.scheduler = DDIMScheduler.from_config(
        teacher_pipe.scheduler.config, timestep_spacing="trailing", clip_sample=False
    )
    student_pipe = KiitDDPMPipeline.from_pretrained(out)

    def images(pipe, steps):
        pipe.set_progress_bar_config(disable=True)
        return pipe(batch_size=64, num_inference_steps=steps, generator=torch.manual_seed(1), output_type="pt").images

    two_steps = images(teacher_pipe, 2)
    before = (images(teacher_pipe, 1) - two_steps).pow(2).mean()
    after = (images(student_pipe, 1) - two_steps).pow(2).mean()
    assert after < 0.5 * before


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--steps", "3", "--teacher_steps", "64"], "--steps times a power of two"),
        (["--steps", "4", "--teacher_steps", "4"], "--steps times a power of two"),
        (["--method", "consistency", "--steps", "8", "--teacher_steps", "4"], "is too many"),
        (["--method", "consistency", "--steps", "2", "--teacher_steps", "6"], "choose a divisor of 40, e.g. 2, 4, 5"),
        (["--steps", "2", "--teacher_steps", "64"], "exceeds the teacher's 40 timesteps"),
        (["--steps", "0"], "--steps must be a positive integer"),
        (["--teacher_steps", "64", "--max_train_steps", "2"], "fewer than the 4 rounds"),
        (["--ema_max_decay", "1"], "--ema_max_decay must be in (0, 1)"),
        (["--resume_from_checkpoint", "latest"], "there is no checkpoint-* folder"),
        (["--steps", "2", "--teacher_steps", "4", "--timesteps", "39"], "one timestep per step"),
        (["--steps", "2", "--teacher_steps", "4", "--timesteps", "29,19"], "starting at 39 (pure noise"),
        (["--steps", "2", "--teacher_steps", "4", "--timesteps", "39,30"], "points of the teacher's 4-step DDIM grid"),
        (["--steps", "2", "--teacher_steps", "4", "--timesteps", "39,9,19"], "one timestep per step"),
        (["--steps", "3", "--teacher_steps", "4", "--timesteps", "39,9,19"], "from the noisiest down"),
        (["--steps", "2", "--teacher_steps", "2", "--timesteps", "39,19"], "must exceed --steps 2"),
        (["--method", "consistency", "--steps", "2", "--timesteps", "39,29"], "use --method progressive"),
    ],
)
def test_bad_arguments_are_refused_before_any_work(tmp_path, capsys, extra, message):
    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    assert distill_main(_args(teacher, out, *extra)) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_timesteps_that_are_not_integers_are_refused_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["mnist", "--output_dir", "out", "--timesteps", "39;29"])
    assert exit_info.value.code == 2
    assert "expected comma-separated integers such as 299,224, got '39;29'" in capsys.readouterr().err


def test_a_teacher_that_is_not_a_pipeline_is_refused(tmp_path, capsys):
    (tmp_path / "weights").mkdir()
    assert distill_main(_args(tmp_path / "weights", tmp_path / "student")) == 2
    assert "is not a saved pipeline (no model_index.json" in capsys.readouterr().err


@pytest.mark.parametrize(
    "teacher_kwargs,message",
    [
        ({"prediction_type": "epsilon"}, "predicts the noise"),
        ({"num_class_embeds": 10}, "class- or text-conditional teacher"),
    ],
)
def test_teachers_that_cannot_be_distilled_are_refused_with_the_reason(tmp_path, capsys, teacher_kwargs, message):
    teacher = _teacher(tmp_path / "teacher", **teacher_kwargs)
    assert distill_main(_args(teacher, tmp_path / "student")) == 2
    assert message in capsys.readouterr().err


def test_a_finished_student_is_not_overwritten(tmp_path, capsys):
    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    args = _args(teacher, out, "--steps", "2", "--teacher_steps", "4", "--max_train_steps", "2")
    assert distill_main(args) == 0
    before = (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    from conftest import reset_accelerate

    reset_accelerate()
    assert distill_main(args) == 2
    assert "already holds a trained pipeline" in capsys.readouterr().err
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").read_bytes() == before


def test_the_teachers_dataset_comes_from_its_card(tmp_path):
    teacher = _teacher(tmp_path / "teacher")
    card = teacher / "README.md"
    card.write_text(card.read_text().replace("---\n", "---\ndatasets:\n- mnist\n", 1))
    config = parse_args([str(teacher), "--output_dir", str(tmp_path / "out"), "--steps", "2", "--teacher_steps", "4"])
    config = config.replace(max_train_steps=2, train_batch_size=8, mixed_precision="no", num_sample_images=1)
    out = distill(config)
    assert "datasets:\n- mnist\n" in (out / "README.md").read_text()


def test_a_student_loads_without_the_package_and_keeps_its_step_count(tmp_path):
    from no_package import check, run_without_package

    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    assert distill_main(_args(teacher, out, "--steps", "2", "--teacher_steps", "4", "--max_train_steps", "2")) == 0
    student = KiitDDPMPipeline.from_pretrained(out)
    student.set_progress_bar_config(disable=True)
    expected = student(batch_size=2, generator=torch.manual_seed(0), output_type="np").images
    check(
        run_without_package(
            f"""
            from diffusers import DiffusionPipeline

            pipe = DiffusionPipeline.from_pretrained({str(out)!r}, trust_remote_code=True)
            assert type(pipe).__module__.startswith("diffusers_modules")
            pipe.set_progress_bar_config(disable=True)
            calls = []
            images = pipe(
                batch_size=2, generator=torch.manual_seed(0), output_type="np",
                callback_on_step_end=lambda pipe, i, t, kwargs: calls.append(int(t)) or {{}},
            ).images
            assert len(calls) == 2, calls
            np.save("images.npy", images)
            """,
            tmp_path,
        )
    )
    np.testing.assert_array_equal(np.load(tmp_path / "images.npy"), expected)


def test_generate_samples_a_student_with_its_own_scheduler_and_step_count(tmp_path):
    """`ddpm-kiit generate STUDENT` without --scheduler/--steps draws what the student's own call draws: DDIM in the
    step count it was distilled for, not the 300-step DDPM sampler of an undistilled pipeline."""
    from ddpm_kiit.cli import main
    from ddpm_kiit.visualize import image_grid

    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    assert distill_main(_args(teacher, out, "--steps", "2", "--teacher_steps", "4", "--max_train_steps", "2")) == 0
    grid = tmp_path / "grid.png"
    assert main(["generate", str(out), "--num-images", "2", "--out", str(grid)]) == 0
    student = KiitDDPMPipeline.from_pretrained(out)
    student.set_progress_bar_config(disable=True)
    calls = []
    images = student(
        batch_size=2, generator=torch.Generator("cpu").manual_seed(0),
        callback_on_step_end=lambda pipe, i, t, kwargs: calls.append(int(t)) or {},
    ).images  # fmt: skip
    assert len(calls) == 2
    from PIL import Image

    np.testing.assert_array_equal(np.asarray(Image.open(grid)), np.asarray(image_grid(images)))


def test_a_student_packages_in_half_precision_with_its_whole_command_chain(tmp_path, monkeypatch):
    """`package_pipeline` (how `mnist-fast` entered the package): fp16 weights, the step count and the scheduler kept,
    the distillation summary copied, and the card's command block in order: the teacher's, the student's, after."""
    from types import SimpleNamespace

    import ddpm_kiit.pretrained as pretrained

    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    assert distill_main(_args(teacher, out, "--steps", "2", "--teacher_steps", "4", "--max_train_steps", "2")) == 0
    monkeypatch.setitem(pretrained.SHIPPED, "tiny-fast", "ddpm-kiit-tiny-fast")
    monkeypatch.setattr(pretrained, "resources", SimpleNamespace(files=lambda package: tmp_path / "package"))
    folder = pretrained.package_pipeline(out, "tiny-fast", "ddpm-kiit evaluate tiny-fast", "python make_teacher.py")
    assert folder == tmp_path / "package" / "ddpm-kiit-tiny-fast"
    assert [p.name for p in (folder / "unet").glob("*.safetensors")] == ["diffusion_pytorch_model.fp16.safetensors"]
    assert json.loads((folder / "distill_summary.json").read_text()) == json.loads(
        (out / "distill_summary.json").read_text()
    )
    index = json.loads((folder / "model_index.json").read_text())
    assert index["default_num_inference_steps"] == 2 and "_name_or_path" not in index
    card = (folder / "README.md").read_text()
    block = card[card.index("```bash\n", card.index("## Training")) :].split("```")[1].splitlines()
    assert block[1] == "python make_teacher.py" and block[2].startswith("ddpm-kiit distill ")
    assert block[3] == "ddpm-kiit evaluate tiny-fast" and len(block) == 4
    pipe = DiffusionPipeline.from_pretrained(folder, variant="fp16")
    assert isinstance(pipe.scheduler, DDIMScheduler) and pipe.unet.dtype == torch.float32


def test_the_default_recipe_is_the_shipped_students(tmp_path):
    """`ddpm-kiit distill mnist --steps 2 --output_dir OUT` with nothing else trains what `mnist-fast` was trained
    with: the flags its card records differ from the defaults only in --steps and where checkpoints go."""
    import shlex

    from ddpm_kiit.pretrained import shipped_pipeline
    from ddpm_kiit.training.distill import validate

    card = (shipped_pipeline("mnist-fast") / "README.md").read_text()
    command = next(line for line in card.splitlines() if line.startswith("ddpm-kiit distill "))
    recorded = validate(parse_args(shlex.split(command)[2:]).replace(output_dir=str(tmp_path / "a")))
    default = validate(parse_args(["mnist", "--steps", "2", "--output_dir", str(tmp_path / "b")]))
    assert default.teacher_steps == 16 and default.num_rounds == 3 and default.round_bounds() == [0, 1200, 2400, 3600]
    assert validate(parse_args(["mnist", "--output_dir", str(tmp_path / "c")])).teacher_steps == 32
    ignored = {"output_dir", "checkpointing_steps", "checkpoints_total_limit", "command_line"}
    differing = {
        field.name
        for field in dataclasses.fields(DistillConfig)
        if getattr(recorded, field.name) != getattr(default, field.name)
    }
    assert differing <= ignored, differing - ignored


def test_packaging_can_give_a_student_the_step_count_it_measured_best_at(tmp_path, monkeypatch):
    """A progressive student sampled at twice its steps can beat itself at its own (mnist-fast: trained for 2, FID
    34.5 at 2 and 9.7 at 4), so `package_pipeline` may set its default: model_index and card both say it."""
    from types import SimpleNamespace

    import ddpm_kiit.pretrained as pretrained

    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    assert distill_main(_args(teacher, out, "--steps", "2", "--teacher_steps", "4", "--max_train_steps", "2")) == 0
    monkeypatch.setitem(pretrained.SHIPPED, "tiny-fast", "ddpm-kiit-tiny-fast")
    monkeypatch.setattr(pretrained, "resources", SimpleNamespace(files=lambda package: tmp_path / "package"))
    folder = pretrained.package_pipeline(out, "tiny-fast", default_num_inference_steps=4)
    assert json.loads((folder / "model_index.json").read_text())["default_num_inference_steps"] == 4
    card = " ".join((folder / "README.md").read_text().split())
    assert "it samples in 4 steps by default (trained for 2, it measured better at 4; `num_inference_steps`" in card
    calls = []
    pipe = DiffusionPipeline.from_pretrained(folder, variant="fp16")
    pipe.set_progress_bar_config(disable=True)
    pipe(output_type="np", callback_on_step_end=lambda p, i, t, kwargs: calls.append(int(t)) or {})
    assert len(calls) == 4
    from PIL import Image

    assert Image.open(folder / "samples.png").size == (4 * 16, 4 * 16)  # redrawn: 16 images, not the run's 2
    with pytest.raises(ValueError, match="is not a distilled student"):
        pretrained.package_pipeline(teacher, "tiny-fast", default_num_inference_steps=4)


def test_packaging_can_ship_the_sampler_that_measured_better(tmp_path, monkeypatch):
    """The shipped `mnist` scores FID 5.98 with SDE-DPM-Solver++ in 20 steps and 7.23 with the 300-step ancestral
    sampler it was trained with, so `package_pipeline` can make the solver its own: the saved pipeline loads with it
    and its step count, the card says so, and the trained sampler comes back from the saved config unchanged."""
    from types import SimpleNamespace

    import ddpm_kiit.pretrained as pretrained
    from ddpm_kiit.hub import update_card_usage, write_model_card

    teacher = _teacher(tmp_path / "teacher")
    trained = KiitDDPMPipeline.from_pretrained(teacher)
    write_model_card(trained, teacher, training_command="accelerate launch examples/train.py --max_train_steps 2")
    monkeypatch.setitem(pretrained.SHIPPED, "tiny", "ddpm-kiit-tiny")
    monkeypatch.setattr(pretrained, "resources", SimpleNamespace(files=lambda package: tmp_path / "package"))
    with pytest.raises(ValueError, match="Pass `default_num_inference_steps`"):
        pretrained.package_pipeline(teacher, "tiny", scheduler="dpm-solver++-sde")
    folder = pretrained.package_pipeline(teacher, "tiny", default_num_inference_steps=3, scheduler="dpm-solver++-sde")
    index = json.loads((folder / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "DPMSolverMultistepScheduler"]
    assert index["default_num_inference_steps"] == 3
    assert not (folder / "scheduler" / "scheduling_kiit_ddpm.py").exists()  # a stock class needs no code of ours
    pipe = DiffusionPipeline.from_pretrained(folder, variant="fp16")
    assert isinstance(pipe.scheduler, DPMSolverMultistepScheduler)
    assert pipe.scheduler.config.algorithm_type == "sde-dpmsolver++"
    calls = []
    pipe.set_progress_bar_config(disable=True)
    pipe(output_type="np", callback_on_step_end=lambda p, i, t, kwargs: calls.append(int(t)) or {})
    assert len(calls) == 3
    back = KiitDDPMScheduler.from_config(pipe.scheduler.config)
    trained_config = {k: v for k, v in trained.scheduler.config.items() if not k.startswith("_")}
    assert {k: back.config.get(k) for k in trained_config} == trained_config
    said = (
        "## Training It samples with `DPMSolverMultistepScheduler` (`dpm-solver++-sde` in ddpm-kiit's commands) in 3 "
        "steps by default: on these weights it measured better than the `KiitDDPMScheduler` the model was trained with"
    )
    card = " ".join((folder / "README.md").read_text().split())
    assert "driven by `DPMSolverMultistepScheduler`" in card and said in card
    assert "`num_inference_steps=40` (`--scheduler kiit --steps 40` on the command line)." in card
    update_card_usage(folder, pipe)  # what `refresh_saved_folder` does when the package's source changes
    assert said in " ".join((folder / "README.md").read_text().split())


def test_a_grid_of_its_own_splits_the_teachers_steps_between_the_student_steps():
    grid = teacher_grid(KiitDDPMScheduler().config, 4)
    assert grid == [299, 224, 149, 74]  # DDIM's trailing grid, as the uniform rounds use
    assert teacher_spans((299, 224), grid) == [(0, 1), (1, 4)]  # one teacher step, then the last three
    assert teacher_spans((299, 149), grid) == [(0, 2), (2, 4)]  # the uniform round: two each


def test_the_stock_scheduler_of_a_grid_student_lands_where_its_targets_say():
    """The custom-grid student samples with first-order DPM-Solver++ on its own timesteps, DDIM's update: a
    progressive target stepped by it lands on the teacher's landing. At t = 299 the scheduler clips the zero-SNR
    schedule's alpha_bar to 2**-24 where ours is 0, a difference far below an 8-bit level."""
    teacher_scheduler, levels = _levels()
    dpm = student_scheduler(teacher_scheduler, "progressive", 4, (299, 224))
    dpm.set_timesteps(timesteps=[299, 224])
    generator = torch.Generator().manual_seed(0)
    sample = torch.randn(2, 1, 4, 4, generator=generator)
    for t, landing, tolerance in [(299, 224, 5e-3), (224, -1, 1e-5)]:
        landed = torch.randn(2, 1, 4, 4, generator=generator)
        target = progressive_target(
            sample, landed, torch.full((2,), t), torch.full((2,), landing), levels, "v_prediction"
        )
        torch.testing.assert_close(dpm.step(target, t, sample).prev_sample, landed, rtol=0, atol=tolerance)
        sample = landed


def test_a_student_on_a_grid_of_its_own_reloads_and_samples_on_it(tmp_path):
    from diffusers import DPMSolverMultistepScheduler

    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    args = ["--steps", "2", "--teacher_steps", "4", "--timesteps", "39,29", "--max_train_steps", "3"]
    assert distill_main(_args(teacher, out, *args)) == 0
    import ddpm_kiit  # noqa: F401

    student = DiffusionPipeline.from_pretrained(out)
    assert isinstance(student.scheduler, DPMSolverMultistepScheduler)
    assert student.scheduler.config.solver_order == 1 and student.scheduler.config.final_sigmas_type == "zero"
    index = json.loads((out / "model_index.json").read_text())
    assert index["default_timesteps"] == [39, 29] and index["default_num_inference_steps"] == 2
    student.set_progress_bar_config(disable=True)
    calls = []
    count = lambda pipe, i, t, kwargs: calls.append(int(t)) or {}  # noqa: E731
    student(output_type="np", callback_on_step_end=count)
    assert calls == [39, 29]
    calls.clear()
    student(num_inference_steps=2, output_type="np", callback_on_step_end=count)
    assert calls == [39, 29]  # its step count means its grid
    calls.clear()
    student(num_inference_steps=4, output_type="np", callback_on_step_end=count)
    assert calls == [39, 29, 19, 9]  # other counts: the scheduler's own trailing grid
    summary = json.loads((out / "distill_summary.json").read_text())
    assert summary["timesteps"] == [39, 29]
    card = (out / "README.md").read_text()
    assert "--timesteps 39,29" in card and "| timesteps | 39,29 |" in card and "on the timesteps [39, 29]" in card


def test_the_student_learns_its_teachers_last_steps_in_one(tmp_path):
    """On the grid 39 -> 29 -> clean, the student's step from 29 replaces the teacher's three (29 -> 19 -> 9 -> clean):
    after distillation, from where the teacher's first step lands, it lands nearer the teacher's three steps than the
    teacher's own single step from 29 to the clean image does."""
    teacher = _teacher(tmp_path / "teacher")
    out = tmp_path / "student"
    args = ["--steps", "2", "--teacher_steps", "4", "--timesteps", "39,29", "--max_train_steps", "240"]
    assert distill_main(_args(teacher, out, *args, "--learning_rate", "3e-3", "--no-use_ema")) == 0
    teacher_pipe = KiitDDPMPipeline.from_pretrained(teacher)
    student_unet = KiitDDPMPipeline.from_pretrained(out).unet
    levels = _NoiseLevels(teacher_pipe.scheduler.alphas_cumprod, "cpu")

    @torch.no_grad()
    def step(unet, sample, t, to):
        t, to = torch.full((len(sample),), t), torch.full((len(sample),), to)
        return ddim_step(unet(sample, t).sample, sample, t, to, levels, "v_prediction")

    noise = torch.randn(64, 1, 16, 16, generator=torch.manual_seed(1))
    at_29 = step(teacher_pipe.unet, noise, 39, 29)
    three_steps = step(
        teacher_pipe.unet, step(teacher_pipe.unet, step(teacher_pipe.unet, at_29, 29, 19), 19, 9), 9, -1
    )
    before = (step(teacher_pipe.unet, at_29, 29, -1) - three_steps).pow(2).mean()
    after = (step(student_unet, at_29, 29, -1) - three_steps).pow(2).mean()
    assert after < 0.5 * before
