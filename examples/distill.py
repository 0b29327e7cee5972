"""Distil a saved pipeline into a few-step student with Accelerate.

    accelerate launch examples/distill.py mnist --method progressive --steps 4 --output_dir outputs/mnist-4-step
    accelerate launch examples/distill.py PIPELINE --method consistency --steps 4 --output_dir OUT

`python examples/distill.py --help` lists every flag; `ddpm-kiit distill` takes the same ones.
"""

import sys

from ddpm_kiit.cli import distill_main

if __name__ == "__main__":
    sys.exit(distill_main(sys.argv[1:]))
