"""The `ddpm-kiit` command."""

import argparse
import os
import shlex
import sys
from typing import List, Optional

from .devices import resolve_device
from .pretrained import SHIPPED, resolve_pipeline
from .redaction import redact_argv
from .sampling import SCHEDULERS, VARIANCE_TYPES

SHIPPED_NAMES = ", ".join(SHIPPED)
DEVICE_HELP = "auto (the default: CUDA, then MPS, then the CPU), cpu, cuda, cuda:N or mps."


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return number


def _int_list(value: str) -> List[int]:
    return [_positive_int(v) for v in value.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddpm-kiit", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("train", help="Train a pipeline (same flags as examples/train.py; see `ddpm-kiit train -h`).")
    commands.add_parser(
        "distill", help="Distil a pipeline into a few-step student (flags of examples/distill.py; see `-h`)."
    )
    for add_command in (_add_generate, _add_compare, _add_app, _add_evaluate, _add_utilities):
        add_command(commands)
    return parser


def _add_generate(commands) -> None:
    generate = commands.add_parser("generate", help="Sample images from a saved pipeline into one grid image.")
    generate.add_argument(
        "pipeline",
        nargs="?",
        default=None,
        help=f"Pipeline folder, Hub id, or the name of a shipped one ({SHIPPED_NAMES}; default: mnist). A shipped "
        "name with --class or --prompt draws from its -class or -text sibling (mnist --class 7 is mnist-class).",
    )
    generate.add_argument(
        "--fast",
        action="store_true",
        help="Draw from the shipped pipeline's distilled few-step sibling (mnist: mnist-fast, 4 steps).",
    )
    generate.add_argument("--num-images", type=_positive_int, default=16)
    generate.add_argument(
        "--scheduler", choices=sorted(SCHEDULERS), default=None, help="Default: the pipeline's own scheduler."
    )
    generate.add_argument(
        "--steps",
        type=_positive_int,
        default=None,
        help="Sampling steps (default: the pipeline's own count, e.g. 4 for a distilled student; otherwise all).",
    )
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", default="grid.png")
    generate.add_argument("--strip", default=None, help="Also write the denoising process of image 0 here.")
    generate.add_argument("--device", default="auto", help=DEVICE_HELP)
    generate.add_argument("--overwrite", action="store_true", help="Replace existing output files.")
    generate.add_argument(
        "--fast-inference",
        action="store_true",
        help="bf16 autocast where the device computes it natively, channels_last and inference_mode: about 2x on a "
        "recent CPU (benchmarks/inference_speed.py); close to, not exactly, the float32 images.",
    )
    generate.add_argument(
        "--class", dest="class_label", type=int, default=None, help="The class to draw (class-conditional pipelines)."
    )
    generate.add_argument("--prompt", default=None, help="What to draw (text-to-image pipelines).")
    generate.add_argument("--negative-prompt", default=None, help="What guidance steers away from (text pipelines).")
    generate.add_argument(
        "--guidance-scale",
        type=float,
        default=None,
        help="Classifier-free guidance (1: none; default: the pipeline's).",
    )


def _add_compare(commands) -> None:
    compare = commands.add_parser("compare-schedulers", help="One pipeline, one seed, several schedulers.")
    compare.add_argument("pipeline", help=f"Pipeline folder, Hub id, or the name of a shipped one ({SHIPPED_NAMES}).")
    compare.add_argument("--schedulers", default="kiit,ddpm,ddim,dpm-solver++,dpm-solver++-sde,euler")
    compare.add_argument("--steps", type=_int_list, default=[10, 50])
    compare.add_argument("--num-images", type=_positive_int, default=4)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--out", default="compare_schedulers.png")
    compare.add_argument(
        "--variance-type",
        choices=VARIANCE_TYPES,
        default=None,
        help="variance_type of the DDPM schedulers (kiit, ddpm); default: the pipeline's. learned and learned_range "
        "need a model that predicts its variance too (out_channels = 2 x in_channels).",
    )
    compare.add_argument(
        "--thresholding",
        action="store_true",
        help="Dynamic thresholding of the predicted x0 (Imagen), in every scheduler that has it (not the Euler ones).",
    )
    compare.add_argument(
        "--sample-max-value",
        type=float,
        default=None,
        help="With --thresholding: the largest threshold (default 1.0, which is plain clipping; DeepFloyd IF: 1.5).",
    )
    compare.add_argument(
        "--dynamic-thresholding-ratio",
        type=float,
        default=None,
        help="With --thresholding: the quantile of |x0| taken as the threshold (default 0.995).",
    )
    compare.add_argument("--device", default="auto", help=DEVICE_HELP)
    compare.add_argument("--overwrite", action="store_true")


def _add_app(commands) -> None:
    app = commands.add_parser("app", help="Serve the Gradio app: generate, compare schedulers, learn the processes.")
    app.add_argument(
        "--pipeline",
        default=None,
        help=f"Pipeline folder, Hub id or shipped name ({SHIPPED_NAMES}) shown when the page opens (default: "
        "mnist-fast, the distilled student that samples in 4 steps).",
    )
    app.add_argument("--host", default="127.0.0.1", help="Interface to bind (0.0.0.0 serves your whole network).")
    app.add_argument("--port", type=_positive_int, default=7860)
    app.add_argument(
        "--allow-dir",
        action="append",
        default=[],
        help="A folder whose pipelines the app may load (repeatable; default: the current folder and --pipeline's).",
    )
    app.add_argument(
        "--allow-hub",
        action="store_true",
        help="Let visitors load any Hub id (each checked first: one of our pipelines, at most --max-download-mb).",
    )
    app.add_argument(
        "--allow-repo",
        action="append",
        default=[],
        metavar="REPO_ID",
        help="A Hub repository visitors may load even without --allow-hub (repeatable).",
    )
    app.add_argument("--max-download-mb", type=float, default=200.0, help="Largest Hub pipeline the app downloads.")
    app.add_argument("--no-hub", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old scripts
    app.add_argument("--device", default="auto", help=DEVICE_HELP)
    app.add_argument(
        "--fast-inference",
        action="store_true",
        help="Sample with bf16 autocast where the device supports it, channels_last and inference_mode (about 2x).",
    )


def _add_evaluate(commands) -> None:
    evaluate = commands.add_parser("evaluate", help="FID/KID/precision/recall/copy check against held-out images.")
    evaluate.add_argument("pipeline", help=f"Pipeline folder, Hub id, or the name of a shipped one ({SHIPPED_NAMES}).")
    evaluate.add_argument("--dataset", default="mnist")
    evaluate.add_argument("--num-samples", type=_positive_int, default=1000)
    evaluate.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None, help="Default: the pipeline's own.")
    evaluate.add_argument("--steps", type=_positive_int, default=None)
    evaluate.add_argument("--features", choices=("classifier", "inception"), default="classifier")
    evaluate.add_argument("--batch-size", type=_positive_int, default=250)
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--samples-cache", default=None, help="Folder to keep generated samples in, for re-scoring.")
    evaluate.add_argument("--out", default=None, help="Write the JSON report here.")
    evaluate.add_argument("--device", default="auto", help=DEVICE_HELP)
    evaluate.add_argument("--overwrite", action="store_true")
    evaluate.add_argument("--update-card", action="store_true", help="Write the scores into the folder's model card.")
    evaluate.add_argument(
        "--fast-inference",
        action="store_true",
        help="Sample with the pipeline's fast-inference settings (bf16 autocast where supported, channels_last).",
    )


def _add_utilities(commands) -> None:
    """convert-seed, floor, push and train-classifier."""
    convert = commands.add_parser(
        "convert-seed", help="Convert a model_weights.pth of the talk's notebook into a pipeline folder."
    )
    convert.add_argument("checkpoint")
    convert.add_argument("output_dir")
    convert.add_argument("--sample-size", type=_positive_int, default=32)
    convert.add_argument("--num-heads", type=_positive_int, default=1)
    convert.add_argument("--overwrite", action="store_true")

    floor = commands.add_parser("floor", help="Real-vs-real scores of a dataset at several n (what perfect scores).")
    floor.add_argument("--dataset", default="mnist")
    floor.add_argument("--num-samples", type=_int_list, default=[500])
    floor.add_argument("--features", choices=("classifier", "inception"), default="classifier")
    floor.add_argument("--seed", type=int, default=0)

    push = commands.add_parser("push", help="Upload a saved pipeline folder to the Hugging Face Hub.")
    push.add_argument("folder")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true")
    push.add_argument("--token", default=None)

    classifier = commands.add_parser("train-classifier", help="Retrain a shipped feature classifier.")
    classifier.add_argument("--dataset", choices=("mnist", "fashion-mnist"), default="mnist")
    classifier.add_argument("--epochs", type=_positive_int, default=20)
    classifier.add_argument("--seed", type=int, default=0)
    classifier.add_argument("--out", default=None, help="Default: the package's weights folder.")


def _evaluate(args) -> str:

    from .evaluation import evaluate_pipeline, format_report
    from .sampling import load_pipeline, swap_scheduler

    if args.out and os.path.exists(args.out) and not args.overwrite:
        raise ValueError(f"{args.out!r} already exists; choose another --out or pass --overwrite.")
    pipe = load_pipeline(args.pipeline, args.device)
    if args.scheduler:
        swap_scheduler(pipe, args.scheduler)
    if args.fast_inference:
        pipe.enable_fast_inference()
    report = evaluate_pipeline(
        pipe,
        dataset=args.dataset,
        num_samples=args.num_samples,
        features=args.features,
        batch_size=args.batch_size,
        seed=args.seed,
        num_inference_steps=args.steps,
        samples_cache=args.samples_cache,
    )
    report["command"] = "ddpm-kiit " + shlex.join(redact_argv(args.argv))
    if args.out:
        from .io_utils import write_json_atomically

        write_json_atomically(args.out, report)
    if args.update_card:
        from .hub import update_card_quality

        update_card_quality(args.pipeline, report)
    return format_report(report)


def _floor(args) -> str:
    from .evaluation import real_floor
    from .evaluation.evaluate import EvaluationCache

    cache = EvaluationCache()  # one feature network for every n
    rows = [f"{'n':>6}{'FID':>10}{'KID':>12}{'precision':>11}{'recall':>9}"]
    for n in args.num_samples:
        s = real_floor(args.dataset, n, args.features, args.seed, cache=cache)
        rows.append(f"{n:>6}{s['fid']:>10.3f}{s['kid_mean']:>12.5f}{s['precision']:>11.3f}{s['recall']:>9.3f}")
    return f"real vs real on {args.dataset} ({args.features} features)\n" + "\n".join(rows)


def _push(args) -> str:
    from .hub import push_folder

    return f"pushed {args.folder} to {push_folder(args.folder, args.repo_id, token=args.token, private=args.private)}"


def _train_classifier(args) -> str:
    from .evaluation.train_classifier import train_classifier

    result = train_classifier(args.dataset, epochs=args.epochs, seed=args.seed, output=args.out)
    return (
        f"{args.dataset} classifier: held-out accuracy {result['test_accuracy']:.4f} "
        f"(train {result['train_accuracy']:.4f}), saved to {result['path']}"
    )


def _generate(args) -> str:
    import torch

    from .sampling import condition_kwargs, load_pipeline, swap_scheduler, write_image_atomically
    from .visualize import DenoisingRecorder, image_grid

    # Checked before sampling so that a long run is not wasted on an output that cannot be written.
    for path in filter(None, (args.out, args.strip)):
        if not args.overwrite and os.path.exists(path):
            raise ValueError(f"{path!r} already exists; choose another path or pass --overwrite.")
    pipe = load_pipeline(args.pipeline, args.device)
    if args.scheduler:
        swap_scheduler(pipe, args.scheduler)
    if args.fast_inference:
        pipe.enable_fast_inference()
    steps = args.steps or pipe.default_inference_steps
    recorder = DenoisingRecorder.evenly(steps) if args.strip else None
    images = pipe(
        **condition_kwargs(
            pipe, args.num_images, args.class_label, args.prompt, args.negative_prompt, args.guidance_scale
        ),
        generator=torch.Generator("cpu").manual_seed(args.seed),  # the same images on every device
        num_inference_steps=steps,
        callback_on_step_end=recorder,
        callback_on_step_end_tensor_inputs=DenoisingRecorder.tensor_inputs if recorder else ["latents"],
    ).images
    written = [write_image_atomically(image_grid(images), args.out, args.overwrite)]
    if recorder:
        written.append(write_image_atomically(recorder.strip(), args.strip, args.overwrite))
    return "wrote " + ", ".join(map(str, written))


def _compare(args) -> str:
    from .sampling import check_scheduler_options, compare_schedulers, load_pipeline, write_image_atomically

    names = [n.strip() for n in args.schedulers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCHEDULERS]
    if unknown:
        raise ValueError(f"--schedulers: unknown {unknown}; choose from {sorted(SCHEDULERS)}.")
    options = check_scheduler_options(
        {
            "variance_type": args.variance_type,
            "thresholding": args.thresholding or None,
            "sample_max_value": args.sample_max_value,
            "dynamic_thresholding_ratio": args.dynamic_thresholding_ratio,
        }
    )
    pipe = load_pipeline(args.pipeline, args.device)
    result = compare_schedulers(pipe, names, args.steps, args.num_images, args.seed, options)
    write_image_atomically(result["grid"], args.out, args.overwrite)
    timings = ", ".join(f"{k}: {v:.2f}s" for k, v in result["seconds"].items())
    return f"wrote {args.out} ({timings})"


def _convert(args) -> str:
    from .convert import convert_seed_checkpoint

    folder, variant = convert_seed_checkpoint(
        args.checkpoint, args.output_dir, args.sample_size, args.num_heads, overwrite=args.overwrite
    )
    return f"converted a {variant} SimpleUnet checkpoint to {folder}"


def _app(args) -> str:
    from .app import AppLimits, launch

    try:
        import gradio  # noqa: F401
    except ImportError as error:
        raise ValueError("The app needs Gradio: `pip install 'ddpm-kiit[app]'`.") from error
    launch(
        args.pipeline,
        args.host,
        args.port,
        args.allow_dir or ["."],
        allow_hub=args.allow_hub and not args.no_hub,
        allowed_repos=args.allow_repo,
        limits=AppLimits(max_download_mb=args.max_download_mb),
        fast_inference=args.fast_inference,
        device=args.device,
    )
    return "app stopped"


COMMANDS = {
    "app": _app,
    "generate": _generate,
    "compare-schedulers": _compare,
    "convert-seed": _convert,
    "evaluate": _evaluate,
    "floor": _floor,
    "train-classifier": _train_classifier,
    "push": _push,
}


def show_package_logs() -> None:
    """Shows the INFO records of our own loggers (threads, device, data, rounds), as Diffusers' training scripts show
    theirs, without turning on every other library's INFO output."""
    import logging

    package_logger = logging.getLogger("ddpm_kiit")
    package_logger.setLevel(logging.INFO)
    if not package_logger.handlers and not logging.getLogger().handlers:  # an application's own set-up wins
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s - %(levelname)s - %(name)s - %(message)s"))
        package_logger.addHandler(handler)


def train_main(argv: Optional[List[str]] = None) -> int:
    """`ddpm-kiit train ...` and `examples/train.py ...`: the flags of `ddpm_kiit.training.args`."""
    from .training import NonFiniteLossError, parse_args, train

    args = parse_args(argv if argv is not None else sys.argv[1:])
    show_package_logs()
    try:
        output_dir = train(args)
    except (ValueError, NonFiniteLossError) as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 2
    summary_file = output_dir / "train_summary.json"
    if int(os.environ.get("RANK", "0")) == 0 and summary_file.is_file():  # the main process writes and reports it
        import json

        summary = json.loads(summary_file.read_text())
        print(
            f"Trained {summary['steps']} steps in {summary['train_seconds'] / 60:.1f} min "
            f"({summary['images_per_second']:.0f} images/s, {summary['num_processes']} process(es), "
            f"CPU threads per process {summary['threads_per_process']}, mixed precision {summary['mixed_precision']})."
        )
        print(f"Samples: {output_dir / 'samples.png'} (and {output_dir / 'samples'}/)")
        print(f"Pipeline: {output_dir} (load with KiitDDPMPipeline.from_pretrained)")
    return 0


def distill_main(argv: Optional[List[str]] = None) -> int:
    """`ddpm-kiit distill ...` and `examples/distill.py ...`: the flags of `ddpm_kiit.training.distill`."""
    import json

    from .training.distill import distill, parse_args

    config = parse_args(argv if argv is not None else sys.argv[1:])
    show_package_logs()
    try:
        output_dir = distill(config)
    except ValueError as error:
        print(f"distill: error: {error}", file=sys.stderr)
        return 2
    summary_file = output_dir / "distill_summary.json"
    if int(os.environ.get("RANK", "0")) != 0 or not summary_file.is_file():  # the main process reports
        return 0
    summary = json.loads(summary_file.read_text())
    print(
        f"Distilled a {summary['steps']}-step student in {summary['train_seconds'] / 60:.1f} min "
        f"({summary['optimizer_steps']} steps, {summary['images_per_second']:.0f} images/s)."
    )
    if "first_teacher" in summary:  # the teacher was itself distilled (`chain_summary`)
        print(
            f"With its teacher's distillation from {summary['first_teacher']}: "
            f"{summary['total_train_seconds'] / 60:.1f} min in all."
        )
    print(f"Student: {output_dir} (samples: {output_dir / 'samples.png'})")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return train_main(argv[1:])
    if argv[:1] == ["distill"]:
        return distill_main(argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = argv
    try:
        if args.command in ("generate", "compare-schedulers", "evaluate") or getattr(args, "pipeline", None):
            asked = {key: getattr(args, key, None) for key in ("class_label", "prompt")}
            asked["fast"] = getattr(args, "fast", False)
            args.pipeline = resolve_pipeline(args.pipeline, **asked)
        if hasattr(args, "device"):
            args.device = resolve_device(args.device)
        message = COMMANDS[args.command](args)
    except (ValueError, OSError) as error:
        print(f"ddpm-kiit {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
