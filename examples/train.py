"""Train a SimpleUNet DDPM with Accelerate.

    accelerate launch examples/train.py                       # built-in MNIST, small CPU-friendly model
    accelerate launch examples/train.py --dataset_name fashion-mnist --model_variant self_attention
    accelerate launch --num_processes 2 examples/train.py ... # data-parallel

`python examples/train.py --help` lists every flag; they follow Diffusers' train_unconditional.py.
"""

import sys

from ddpm_kiit.cli import train_main

if __name__ == "__main__":
    sys.exit(train_main(sys.argv[1:]))
