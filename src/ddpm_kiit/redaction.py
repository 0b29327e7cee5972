# Copyright 2026 The ddpm-kiit authors. Licensed under the Apache License, Version 2.0.
"""Keeps secrets (Hub tokens) out of what we record: model cards, tracker configs, logs and reports."""

import re
from typing import Dict, List, Sequence

MASK = "***"
# Flags whose value is a secret: --hub_token, --token, --wandb-api-key, --password ...
_SECRET_FLAG = re.compile(r"^--?[\w-]*(token|secret|password|api[_-]?key)[\w-]*$", re.IGNORECASE)
# Values that look like a token wherever they appear: Hugging Face user/org/api tokens, and long bearer-style keys
# of the trackers people log to (wandb keys are 40 hex digits).
_TOKEN_VALUE = re.compile(r"\b(?:hf_|api_org_)[A-Za-z0-9]{16,}\b|\b[0-9a-f]{40}\b")


def is_secret_name(name: str) -> bool:
    """Whether a flag or config key (`--hub_token`, `hub_token`) holds a secret."""
    return bool(_SECRET_FLAG.match(name if name.startswith("-") else f"--{name}"))


def redact_text(text: str) -> str:
    """`text` with every token-looking value replaced by `***`."""
    return _TOKEN_VALUE.sub(MASK, text)


def redact_argv(argv: Sequence[str]) -> List[str]:
    """The command line as it may be shown or logged: secret flags keep their name, their value becomes `***`."""
    shown, hide_next = [], False
    for part in argv:
        if hide_next:
            shown.append(MASK)
            hide_next = False
            continue
        flag, equals, _ = part.partition("=")
        if is_secret_name(flag) and flag.startswith("-"):
            if equals:
                shown.append(f"{flag}={MASK}")
            else:
                shown.append(part)
                hide_next = True
            continue
        shown.append(redact_text(part))
    return shown


def rerunnable_argv(argv: Sequence[str]) -> List[str]:
    """
    The command line as a model card records it: secret flags and their values left out, so that the command reruns
    with the token taken from `HF_TOKEN` or `hf auth login` (stray token-looking values are still masked).
    """
    kept, skip_next = [], False
    for part in argv:
        if skip_next:
            skip_next = False
            continue
        flag, equals, _ = part.partition("=")
        if flag.startswith("-") and is_secret_name(flag):
            skip_next = not equals
            continue
        kept.append(redact_text(part))
    return kept


def has_secret_flag(argv: Sequence[str]) -> bool:
    return any(part.startswith("-") and is_secret_name(part.partition("=")[0]) for part in argv)


def public_config(values: Dict) -> Dict:
    """A config for trackers (TensorBoard hparams, wandb): secret keys dropped, other values as scalars, redacted."""
    config = {}
    for key, value in values.items():
        if is_secret_name(key):
            continue
        if isinstance(value, (list, tuple)) and all(isinstance(part, str) for part in value):
            value = " ".join(redact_argv(value))
        if not isinstance(value, (int, float, str, bool)):
            value = str(value)
        config[key] = redact_text(value) if isinstance(value, str) else value
    return config
