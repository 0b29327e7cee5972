"""One pipeline, one seed: our scheduler against stock ones (DDIM, DPM-Solver++, ...) at chosen step counts.

    python examples/compare_schedulers.py PIPELINE --schedulers kiit,ddim,dpm-solver++,dpm-solver++-sde --steps 10,50 \
        --num-images 4 --seed 0 --out compare_schedulers.png

Writes one labelled row per scheduler and step count, and prints the seconds each took.
"""

import sys

from ddpm_kiit.cli import main

if __name__ == "__main__":
    sys.exit(main(["compare-schedulers"] + sys.argv[1:]))
