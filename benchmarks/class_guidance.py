"""Class-conditional MNIST against guidance: does the model draw the digit it is asked for, and how well?

    python benchmarks/class_guidance.py PIPELINE [--num-per-class 1000] [--scales 0,1,2,3,5,7.5]
        [--scheduler dpm-solver++-sde] [--steps 20] [--reference mnist-full] [--quick]

PIPELINE is a class-conditional pipeline folder, e.g. the one that
`accelerate launch examples/train.py --conditioning class --dataset_name mnist-full --output_dir OUT` writes. For each
guidance scale and each class c, it draws `--num-per-class` digits with `class_labels=c` and reports:
- accuracy: the share that the shipped MNIST classifier (`ddpm_kiit.evaluation.load_classifier("mnist")`, not the
  model under test) reads as c;
- FID of those digits against the reference set's test digits of class c, in that classifier's features, beside the
  real-vs-real floor of class c at the same n (its training digits of class c against its test digits).
Writes `benchmarks/results/class_guidance.json` and a plot, `docs/class_guidance.png` (`--out`, `--plot`). `--quick`
trains a tiny model for two steps and scores a handful of samples (the smoke test; it writes nothing).
"""

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

from ddpm_kiit import KiitDDPMPipeline
from ddpm_kiit.evaluation import frechet_distance, load_classifier
from ddpm_kiit.evaluation.evaluate import extract_features, reference_images
from ddpm_kiit.pretrained import shipped_pipeline
from ddpm_kiit.sampling import SCHEDULERS, swap_scheduler

sys.path.insert(0, str(Path(__file__).parent))
from common import card_table, machine, train_run, write_card_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
POOLED_PER_CLASS = 200


def parse_scales(text: str) -> list:
    scales = [float(value) for value in text.split(",")]
    if any(scale < 0 for scale in scales):
        raise argparse.ArgumentTypeError(f"guidance scales must be >= 0, got {text!r}")
    return scales


@torch.no_grad()
def draw(pipe, label: Optional[int], count: int, scale: Optional[float], steps: int, seed: int, batch_size: int = 250):
    """`count` digits of class `label` in [-1, 1], in seeded batches (the same noise for every scale); `label=None`
    draws from an unconditional pipeline."""
    conditioning = {} if label is None else {"class_labels": label, "guidance_scale": scale}
    batches = []
    for index, start in enumerate(range(0, count, batch_size)):
        images = pipe(
            batch_size=min(batch_size, count - start),
            **conditioning,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed * 1_000_003 + (label or 0) * 1009 + index),
            output_type="pt",
        ).images
        batches.append(images.cpu() * 2 - 1)
    return torch.cat(batches)


def by_class(dataset: str, split: str, cache_dir=None, seed: int = 0) -> dict:
    """The split's digits of each class, in a seeded random order: MNIST's test split is ordered (its first half comes
    from cleaner writers), so the first n digits of a class are not a fair sample of it."""
    from ddpm_kiit.data import load_image_dataset

    images = reference_images(dataset, split, 1, 32, cache_dir)
    labels = torch.tensor(load_image_dataset(dataset, split=split, cache_dir=cache_dir)["label"])
    generator = torch.Generator().manual_seed(seed)
    classes = {label: images[labels == label] for label in range(10)}
    return {label: digits[torch.randperm(len(digits), generator=generator)] for label, digits in classes.items()}


def measure(pipe, args) -> dict:
    classifier = load_classifier("mnist")
    test, train = by_class(args.reference, "test", seed=args.seed), by_class(args.reference, "train", seed=args.seed)
    n = min(args.num_per_class, *(len(images) for images in test.values()))
    pooled = min(n, POOLED_PER_CLASS)
    results = {"n_per_class": n, "floor_fid": {}, "scales": {}, "pooled_n": 10 * pooled}
    test_features = {c: extract_features(classifier, test[c][:n]) for c in range(10)}
    for c in range(10):
        results["floor_fid"][c] = frechet_distance(test_features[c], extract_features(classifier, train[c][:n]))
    # All ten classes together, `pooled` digits of each (the first of each class's random order), scored against as
    # many test digits of each class: the yardstick the unconditional pipeline is measured with below.
    pooled_test = torch.cat([test_features[c][:pooled] for c in range(10)])
    pooled_train = torch.cat([extract_features(classifier, train[c][:pooled]) for c in range(10)])
    results["pooled_floor_fid"] = frechet_distance(pooled_test, pooled_train)
    if args.unconditional:
        # The target's yardstick, measured here the same way: the unconditional pipeline, same sampler and n.
        unconditional = swap_scheduler(KiitDDPMPipeline.from_pretrained(args.unconditional), args.scheduler)
        unconditional.enable_fast_inference().set_progress_bar_config(disable=True)
        samples = draw(unconditional, None, 10 * pooled, None, args.steps, args.seed)
        results["unconditional"] = {
            "pipeline": args.unconditional,
            "pooled_fid": frechet_distance(pooled_test, extract_features(classifier, samples)),
        }
        print(f"unconditional {args.unconditional}: all-class FID {results['unconditional']['pooled_fid']:.2f}")
    for scale in args.scales:
        start, row, drawn = time.perf_counter(), {"accuracy": {}, "fid": {}}, []
        for c in range(10):
            samples = draw(pipe, c, n, scale, args.steps, args.seed)
            predicted = torch.cat([classifier(samples[i : i + 500]).argmax(1) for i in range(0, n, 500)])
            row["accuracy"][c] = (predicted == c).float().mean().item()
            features = extract_features(classifier, samples)
            row["fid"][c] = frechet_distance(test_features[c], features)
            drawn.append(features[:pooled])
        row["mean_accuracy"] = sum(row["accuracy"].values()) / 10
        row["mean_fid"] = sum(row["fid"].values()) / 10
        row["pooled_fid"] = frechet_distance(pooled_test, torch.cat(drawn))
        row["seconds"] = round(time.perf_counter() - start, 1)
        results["scales"][str(scale)] = row
        print(
            f"guidance {scale:g}: accuracy {row['mean_accuracy']:.4f}, class FID {row['mean_fid']:.2f} (mean of 10), "
            f"all-class FID {row['pooled_fid']:.2f}"
        )
    floor = sum(results["floor_fid"].values()) / 10
    results["mean_floor_fid"] = floor
    print(
        f"real-vs-real: class FID {floor:.2f} (mean of 10) at n = {n} per class, all-class FID "
        f"{results['pooled_floor_fid']:.2f} at n = {10 * pooled}"
    )
    return results


def card_section(results: dict, command: str, title: str = "Asking for a class") -> str:
    """The card's `title` section: the table of `results`, with the command that measured it."""
    intro = (
        f"Measured by `{command}` ({results['scheduler']}, {results['steps']} steps, {results['n_per_class']} digits "
        f"per class; accuracy: the share the shipped MNIST classifier reads as the asked class; class FID: against "
        f"that class's {results['reference']} test digits in the classifier's features, mean of the 10 classes; "
        f"all-class FID: {results['pooled_n']} digits, {results['pooled_n'] // 10} per class, against as many test "
        f"digits)."
    )
    rows = [
        [
            f"{float(scale):g}",
            f"{100 * row['mean_accuracy']:.1f}%",
            f"{row['mean_fid']:.2f}",
            f"{row['pooled_fid']:.2f}",
        ]
        for scale, row in results["scales"].items()
    ]
    if "unconditional" in results:
        unconditional = results["unconditional"]
        rows.append(
            [f"unconditional `{Path(unconditional['pipeline']).name}`", "", "", f"{unconditional['pooled_fid']:.2f}"]
        )
    rows.append(
        [
            "real vs real",
            "",
            f"{results['mean_floor_fid']:.2f}",
            f"{results['pooled_floor_fid']:.2f}",
        ]
    )
    header = ["guidance scale", "accuracy", "class FID", "all-class FID"]
    return card_table(title, intro, header, rows)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [float(s) for s in results["scales"]]
    rows = list(results["scales"].values())
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.4))
    left.plot(scales, [100 * row["mean_accuracy"] for row in rows], marker="o")
    left.set(xlabel="guidance scale", ylabel="asked class, % (shipped classifier)", title="Class accuracy")
    right.plot(scales, [row["mean_fid"] for row in rows], marker="o", color="C0", label="per class (mean of 10)")
    right.axhline(results["mean_floor_fid"], color="C0", linestyle="--", label="per class, real vs real")
    if all("pooled_fid" in row for row in rows):
        right.plot(scales, [row["pooled_fid"] for row in rows], marker="s", color="C1", label="all classes")
        right.axhline(results["pooled_floor_fid"], color="C1", linestyle="--", label="all classes, real vs real")
    if "unconditional" in results:
        right.axhline(
            results["unconditional"]["pooled_fid"], color="C2", linestyle=":", label="unconditional model, all"
        )
    right.set(xlabel="guidance scale", ylabel="FID (log scale)", title="Quality")
    right.set_yscale("log")
    right.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.02, 1))
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", nargs="?", default=None, help="A class-conditional pipeline folder.")
    parser.add_argument("--num-per-class", type=int, default=1000)
    parser.add_argument("--scales", type=parse_scales, default=[0.0, 1.0, 2.0, 3.0, 5.0, 7.5])
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="dpm-solver++-sde")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--reference", default="mnist-full", help="Where the per-class test and train digits come from."
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--unconditional",
        default=str(shipped_pipeline("mnist")),
        help="The unconditional pipeline whose all-class FID is the target's yardstick, drawn with the same sampler "
        "and n (default: the shipped mnist; '' skips it).",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--update-card", action="store_true", help="Write the table into the pipeline's model card (its README.md)."
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "class_guidance.json"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "class_guidance.png"), help="Where the plot goes.")
    parser.add_argument(
        "--card-section", default="Asking for a class", help="The title of the card section --update-card writes."
    )
    args = parser.parse_args(argv)
    argv_used = [part for part in (sys.argv[1:] if argv is None else argv) if part != "--update-card"]
    with tempfile.TemporaryDirectory() as scratch:
        if args.quick:
            args.pipeline = str(Path(scratch) / "tiny")
            train_run(args.pipeline, 2, ["--conditioning", "class", "--resolution", "32"], quick=True)
            args.num_per_class, args.scales, args.steps, args.reference = 4, [1.0, 3.0], 2, "mnist"
            args.unconditional = ""
        if args.pipeline is None:
            parser.error("name a class-conditional pipeline folder (or pass --quick)")
        pipe = KiitDDPMPipeline.from_pretrained(args.pipeline).enable_fast_inference()
        if pipe.unet.config.num_class_embeds is None:
            parser.error(f"{args.pipeline} is not class-conditional; train one with --conditioning class")
        pipe = swap_scheduler(pipe, args.scheduler)
        pipe.set_progress_bar_config(disable=True)
        results = measure(pipe, args)
    if not args.quick:
        command = " ".join(["python benchmarks/class_guidance.py", *argv_used])
        results.update(
            pipeline=args.pipeline, scheduler=args.scheduler, steps=args.steps, reference=args.reference,
            machine=machine(torch.device("cpu")), command=command,
        )  # fmt: skip
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        plot(results, Path(args.plot))
        if args.update_card:
            section = card_section(results, results["command"], args.card_section)
            write_card_section(Path(args.pipeline), args.card_section, section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
