"""Text-to-emoji against guidance: does the model draw what the prompt names, and does it copy its training emoji?

    python benchmarks/text_guidance.py PIPELINE [--num-prompts 200] [--scales 0,1,2,3,5,7.5]
        [--scheduler dpm-solver++-sde] [--steps 20] [--judge-seed 1] [--update-card] [--quick]

PIPELINE is a text-to-image pipeline folder trained on the built-in emoji, e.g. the one that
`accelerate launch examples/train.py --dataset_name emoji --conditioning text --output_dir OUT` writes. The script
draws `--num-prompts` captions of the training emoji at random and, for each guidance scale, one image per caption
(the same noise at every scale), and reports:
- prompt fidelity, judged by a second CLIP that did not condition the model (`ddpm_kiit.text.train_clip_model` with
  `--judge-seed`, on the training and the held-out emoji): how often the prompt ranks first, and in the top 5, among
  all the training captions for the image drawn for it. The real emoji of the same captions give the judge's own
  ceiling;
- copying, in pixels: the share of images whose nearest training emoji is the prompt's own emoji, and the share that
  sit closer to a training emoji than that emoji's nearest training neighbour does (`copy_fraction`);
- FID against the training emoji in the judge's image embeddings, beside as many held-out emoji (the floor).
Writes `benchmarks/results/text_guidance.json`, a plot `docs/text_guidance.png` and samples
`docs/text_guidance_samples.png`. `--quick` builds an untrained tiny pipeline and judge and scores a handful of
samples (the smoke test; it writes nothing).
"""

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from ddpm_kiit import KiitDDPMPipeline, KiitTextToImagePipeline
from ddpm_kiit.evaluation import copy_fraction, frechet_distance
from ddpm_kiit.sampling import SCHEDULERS, swap_scheduler
from ddpm_kiit.text import caption_ranks, image_embeddings, train_clip_model

sys.path.insert(0, str(Path(__file__).parent))
from class_guidance import parse_scales  # noqa: E402
from common import card_table, machine, write_card_section  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_ROWS = 8
QUICK_JUDGE = {"hidden_size": 32, "num_layers": 1, "vision_hidden_size": 32, "vision_num_layers": 1}


def captioned_emoji(split: str, resolution: int):
    """The built-in emoji of `split` that have a caption, as images in [-1, 1] and their captions."""
    from ddpm_kiit.data import ImageTransform, dataset_to_tensor, load_image_dataset

    data = load_image_dataset("emoji", split=split)
    data = data.select([index for index, caption in enumerate(data["caption"]) if caption is not None])
    return dataset_to_tensor(data, ImageTransform(resolution, 3)), list(data["caption"])


@torch.no_grad()
def draw(pipe, prompts: list, scale: float, steps: int, seed: int, batch_size: int = 50) -> torch.Tensor:
    """One image in [-1, 1] for each prompt, in seeded batches (the same noise at every scale)."""
    batches = []
    for index, start in enumerate(range(0, len(prompts), batch_size)):
        images = pipe(
            prompt=prompts[start : start + batch_size],
            guidance_scale=scale,
            num_inference_steps=steps,
            generator=torch.Generator().manual_seed(seed * 1_000_003 + index),
            output_type="pt",
        ).images
        batches.append(images.cpu() * 2 - 1)
    return torch.cat(batches)


def fidelity(ranks: torch.Tensor) -> dict:
    return {"top1": (ranks < 1).float().mean().item(), "top5": (ranks < 5).float().mean().item()}


def measure(pipe, args, train_images, train_captions, heldout_images, judge_data) -> dict:
    candidates = sorted(set(train_captions))
    own_emoji = {}  # each caption's first training emoji
    for row, caption in enumerate(train_captions):
        own_emoji.setdefault(caption, row)
    generator = torch.Generator().manual_seed(args.seed)
    prompts = [candidates[i] for i in torch.randperm(len(candidates), generator=generator)[: args.num_prompts]]
    targets = [candidates.index(prompt) for prompt in prompts]
    own = torch.tensor([own_emoji[prompt] for prompt in prompts])

    judge, tokenizer, judge_metrics = train_clip_model(*judge_data, seed=args.judge_seed, **args.judge_sizes)
    print(f"judge CLIP (seed {args.judge_seed}): {judge_metrics}")
    train_features = image_embeddings(judge, train_images)
    heldout = heldout_images[torch.randperm(len(heldout_images), generator=generator)[: len(prompts)]]
    real_ranks = caption_ranks(judge, tokenizer, train_images[own], candidates, targets)
    results = {
        "num_prompts": len(prompts),
        "num_captions": len(candidates),
        "judge": judge_metrics,
        "real": fidelity(real_ranks),
        "floor_fid": frechet_distance(train_features, image_embeddings(judge, heldout)),
        "scales": {},
        "prompts": prompts[:SAMPLE_ROWS],
    }
    print(
        f"real emoji of the same captions: top-1 {results['real']['top1']:.3f}, top-5 {results['real']['top5']:.3f} "
        f"among {len(candidates)} captions; held-out emoji FID {results['floor_fid']:.2f} at n = {len(heldout)}"
    )
    train_pixels = train_images.flatten(1)
    samples = {}
    for scale in args.scales:
        start = time.perf_counter()
        images = draw(pipe, prompts, scale, args.steps, args.seed)
        seconds = time.perf_counter() - start
        nearest = torch.cdist(images.flatten(1), train_pixels).argmin(dim=1)
        row = fidelity(caption_ranks(judge, tokenizer, images, candidates, targets))
        row.update(
            own_emoji_nearest=(nearest == own).float().mean().item(),
            copy_fraction=copy_fraction(train_pixels, images.flatten(1)),
            fid=frechet_distance(train_features, image_embeddings(judge, images)),
            seconds=round(seconds, 1),
        )
        results["scales"][str(scale)] = row
        samples[scale] = images[:SAMPLE_ROWS]
        print(
            f"guidance {scale:g}: top-1 {row['top1']:.3f}, top-5 {row['top5']:.3f}, nearest is own emoji "
            f"{row['own_emoji_nearest']:.3f}, copy fraction {row['copy_fraction']:.3f}, FID {row['fid']:.2f}"
        )
    return results, samples, train_images[own[:SAMPLE_ROWS]]


def card_section(results: dict, command: str) -> str:
    """The card's "Prompt fidelity" section: the table of `results`, with the command that measured it."""
    intro = (
        f"Measured by `{command}` ({results['scheduler']}, {results['steps']} steps, one image for each of "
        f"{results['num_prompts']} training captions drawn at random; top-1 / top-5: how often a second CLIP, "
        f"trained apart from the one that conditions this model, ranks the prompt first / in the top 5 among all "
        f"{results['num_captions']} training captions; own emoji: the share of images whose nearest training emoji "
        "in pixels is the prompt's own; FID: against the training emoji in that CLIP's image embeddings)."
    )
    rows = [
        [
            f"{float(scale):g}",
            f"{100 * row['top1']:.1f}%",
            f"{100 * row['top5']:.1f}%",
            f"{100 * row['own_emoji_nearest']:.1f}%",
            f"{row['copy_fraction']:.3f}",
            f"{row['fid']:.2f}",
        ]  # fmt: skip
        for scale, row in results["scales"].items()
    ]
    real = results["real"]
    rows.append(
        [
            "real emoji",
            f"{100 * real['top1']:.1f}%",
            f"{100 * real['top5']:.1f}%",
            "100%",
            "",
            f"{results['floor_fid']:.2f} (held out)",
        ]
    )
    header = ["guidance scale", "top-1", "top-5", "own emoji nearest", "copy fraction", "FID"]
    return card_table("Prompt fidelity", intro, header, rows)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = [float(s) for s in results["scales"]]
    rows = list(results["scales"].values())
    figure, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.4))
    for key, colour in (("top1", "C0"), ("top5", "C1")):
        left.plot(scales, [100 * row[key] for row in rows], marker="o", color=colour, label=f"samples, {key}")
        left.axhline(100 * results["real"][key], color=colour, linestyle="--", label=f"real emoji, {key}")
    left.set(xlabel="guidance scale", ylabel="prompt ranked, %", title="Prompt fidelity (second CLIP)")
    left.legend(fontsize=7)
    middle.plot(scales, [100 * row["own_emoji_nearest"] for row in rows], marker="o", label="nearest is own emoji")
    middle.plot(scales, [100 * row["copy_fraction"] for row in rows], marker="o", label="copy fraction")
    middle.set(xlabel="guidance scale", ylabel="% of samples", title="Copying (pixels)")
    middle.legend(fontsize=7)
    right.plot(scales, [row["fid"] for row in rows], marker="o", label="samples")
    right.axhline(results["floor_fid"], color="grey", linestyle="--", label="held-out emoji")
    right.set(xlabel="guidance scale", ylabel="FID (CLIP image embeddings)", title="Quality")
    right.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def sample_sheet(samples: dict, real: torch.Tensor, prompts: list, path: Path, size: int = 64) -> None:
    """A header row naming the columns, then one row per prompt: its training emoji (labelled with the prompt) and
    the image drawn for it at each guidance scale."""
    from diffusers.utils import make_image_grid
    from PIL import Image

    from ddpm_kiit.images import tensor_to_pil
    from ddpm_kiit.visualize import label_width, labelled

    columns = [("training emoji", real), *((f"guidance {scale:g}", images) for scale, images in samples.items())]
    width = max(label_width(text) for text in [*prompts, *(name for name, _ in columns)])
    blank = Image.new("RGB", (size, size), "white")
    cells = [labelled(blank, name, width) for name, _ in columns]
    for row, prompt in enumerate(prompts):
        for column, (_, images) in enumerate(columns):
            tile = tensor_to_pil(images[row]).resize((size, size), Image.NEAREST)
            cells.append(labelled(tile, prompt if column == 0 else "", width))
    make_image_grid(cells, rows=len(prompts) + 1, cols=len(columns)).save(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pipeline", nargs="?", default=None, help="A text-to-image pipeline folder (emoji).")
    parser.add_argument("--num-prompts", type=int, default=200)
    parser.add_argument("--scales", type=parse_scales, default=[0.0, 1.0, 2.0, 3.0, 5.0, 7.5])
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default="dpm-solver++-sde")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--judge-seed", type=int, default=1, help="Seed of the judge CLIP (training's is 0).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument(
        "--update-card", action="store_true", help="Write the table into the pipeline's model card (its README.md)."
    )
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "text_guidance.json"))
    args = parser.parse_args(argv)
    args.judge_sizes = {}
    if args.quick:
        pipe = tiny_pipeline()
        args.num_prompts, args.scales, args.steps = 6, [1.0, 3.0], 2
        args.judge_sizes = {**QUICK_JUDGE, "num_train_steps": 2, "show_progress": False}
    elif args.pipeline is None:
        parser.error("name a text-to-image pipeline folder (or pass --quick)")
    else:
        pipe = KiitDDPMPipeline.from_pretrained(args.pipeline).enable_fast_inference()
    if not isinstance(pipe, KiitTextToImagePipeline):
        parser.error(f"{args.pipeline} is not a text-to-image pipeline; train one with --conditioning text")
    pipe = swap_scheduler(pipe, args.scheduler)
    pipe.set_progress_bar_config(disable=True)
    resolution = pipe.unet.config.sample_size
    train_images, train_captions = captioned_emoji("train", resolution)
    heldout_images, heldout_captions = captioned_emoji("test", resolution)
    if args.quick:
        train_images, train_captions = train_images[:40], train_captions[:40]
    judge_data = (torch.cat([train_images, heldout_images]), train_captions + heldout_captions)
    results, samples, real = measure(pipe, args, train_images, train_captions, heldout_images, judge_data)
    if not args.quick:
        results.update(
            pipeline=args.pipeline, scheduler=args.scheduler, steps=args.steps, judge_seed=args.judge_seed,
            machine=machine(torch.device("cpu")),
        )  # fmt: skip
        Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
        plot(results, ROOT / "docs" / "text_guidance.png")
        sample_sheet(samples, real, results["prompts"], ROOT / "docs" / "text_guidance_samples.png")
        if args.update_card:
            command = "python benchmarks/text_guidance.py"
            write_card_section(Path(args.pipeline), "Prompt fidelity", card_section(results, command))
    return 0


def tiny_pipeline() -> KiitTextToImagePipeline:
    """An untrained text-to-image pipeline of 16-pixel images over the emoji captions (the smoke test's)."""
    from ddpm_kiit import KiitDDPMScheduler, SimpleUNet2DModel
    from ddpm_kiit.text import new_text_encoder, train_caption_tokenizer

    _, captions = captioned_emoji("train", 16)
    tokenizer = train_caption_tokenizer(captions[:40], max_length=8)
    torch.manual_seed(0)
    text_encoder = new_text_encoder(tokenizer, hidden_size=16, num_layers=1, num_heads=2)
    unet = SimpleUNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16), time_embedding_dim=8,
        norm_num_groups=4, attention_type=None, cross_attention_dim=16,
    )  # fmt: skip
    return KiitTextToImagePipeline(unet, KiitDDPMScheduler(num_train_timesteps=40), text_encoder, tokenizer)


if __name__ == "__main__":
    sys.exit(main())
