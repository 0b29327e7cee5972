"""The `ddpm-kiit` command."""

import argparse
import os
import sys
from typing import List, Optional

from .sampling import SCHEDULERS


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

    generate = commands.add_parser("generate", help="Sample images from a saved pipeline into one grid image.")
    generate.add_argument("pipeline", help="Pipeline folder or Hub id.")
    generate.add_argument("--num-images", type=_positive_int, default=16)
    generate.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="kiit")
    generate.add_argument("--steps", type=_positive_int, default=None, help="Sampling steps (default: all).")
    generate.add_argument("--seed", type=int, default=0)
    generate.add_argument("--out", default="grid.png")
    generate.add_argument("--strip", default=None, help="Also write the denoising process of image 0 here.")
    generate.add_argument("--device", default="cpu")
    generate.add_argument("--overwrite", action="store_true", help="Replace existing output files.")

    compare = commands.add_parser("compare-schedulers", help="One pipeline, one seed, several schedulers.")
    compare.add_argument("pipeline")
    compare.add_argument("--schedulers", default="kiit,ddpm,ddim,dpm-solver++,euler")
    compare.add_argument("--steps", type=_int_list, default=[10, 50])
    compare.add_argument("--num-images", type=_positive_int, default=4)
    compare.add_argument("--seed", type=int, default=0)
    compare.add_argument("--out", default="compare_schedulers.png")
    compare.add_argument("--device", default="cpu")
    compare.add_argument("--overwrite", action="store_true")

    convert = commands.add_parser(
        "convert-seed", help="Convert a model_weights.pth of the talk's notebook into a pipeline folder."
    )
    convert.add_argument("checkpoint")
    convert.add_argument("output_dir")
    convert.add_argument("--sample-size", type=_positive_int, default=32)
    convert.add_argument("--num-heads", type=_positive_int, default=1)
    convert.add_argument("--overwrite", action="store_true")
    return parser


def _generate(args) -> str:
    import torch

    from .pipelines import DenoisingRecorder
    from .sampling import grid_shape, load_pipeline, swap_scheduler, write_image_atomically

    # Checked before sampling so that a long run is not wasted on an output that cannot be written.
    for path in filter(None, (args.out, args.strip)):
        if not args.overwrite and os.path.exists(path):
            raise ValueError(f"{path!r} already exists; choose another path or pass --overwrite.")
    pipe = swap_scheduler(load_pipeline(args.pipeline, args.device), args.scheduler)
    steps = args.steps or pipe.scheduler.config.num_train_timesteps
    recorder = DenoisingRecorder.evenly(steps) if args.strip else None
    images = pipe(
        batch_size=args.num_images,
        generator=torch.Generator(args.device).manual_seed(args.seed),
        num_inference_steps=steps,
        callback_on_step_end=recorder,
        callback_on_step_end_tensor_inputs=DenoisingRecorder.tensor_inputs if recorder else ["latents"],
    ).images
    from diffusers.utils import make_image_grid

    rows, cols = grid_shape(len(images))
    written = [write_image_atomically(make_image_grid(images, rows, cols), args.out, args.overwrite)]
    if recorder:
        written.append(write_image_atomically(recorder.strip(), args.strip, args.overwrite))
    return "wrote " + ", ".join(map(str, written))


def _compare(args) -> str:
    from .sampling import compare_schedulers, load_pipeline, write_image_atomically

    names = [n.strip() for n in args.schedulers.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCHEDULERS]
    if unknown:
        raise ValueError(f"--schedulers: unknown {unknown}; choose from {sorted(SCHEDULERS)}.")
    pipe = load_pipeline(args.pipeline, args.device)
    result = compare_schedulers(pipe, names, args.steps, args.num_images, args.seed)
    write_image_atomically(result["grid"], args.out, args.overwrite)
    timings = ", ".join(f"{k}: {v:.2f}s" for k, v in result["seconds"].items())
    return f"wrote {args.out} ({timings})"


def _convert(args) -> str:
    from .convert import convert_seed_checkpoint

    folder, variant = convert_seed_checkpoint(
        args.checkpoint, args.output_dir, args.sample_size, args.num_heads, overwrite=args.overwrite
    )
    return f"converted a {variant} SimpleUnet checkpoint to {folder}"


COMMANDS = {"generate": _generate, "compare-schedulers": _compare, "convert-seed": _convert}


def train_main(argv: Optional[List[str]] = None) -> int:
    """`ddpm-kiit train ...` and `examples/train.py ...`: the flags of `ddpm_kiit.training.args`."""
    from .training import NonFiniteLossError, parse_args, train

    args = parse_args(argv if argv is not None else sys.argv[1:])
    try:
        output_dir = train(args)
    except (ValueError, NonFiniteLossError) as error:
        print(f"train: error: {error}", file=sys.stderr)
        return 2
    print(f"Saved the trained pipeline to {output_dir}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        return train_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        message = COMMANDS[args.command](args)
    except (ValueError, OSError) as error:
        print(f"ddpm-kiit {args.command}: error: {error}", file=sys.stderr)
        return 2
    print(message)
    return 0


if __name__ == "__main__":
    sys.exit(main())
