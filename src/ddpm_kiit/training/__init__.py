"""Training with Accelerate: `accelerate launch examples/train.py` (or `ddpm-kiit train`)."""

from .args import DEFAULT_MODEL_CONFIG, build_parser, parse_args, validate_args
from .loop import NonFiniteLossError, train

__all__ = ["DEFAULT_MODEL_CONFIG", "NonFiniteLossError", "build_parser", "parse_args", "train", "validate_args"]
