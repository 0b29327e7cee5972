"""A Hub token given on the command line never reaches a file, a log, a tracker or the Hub."""

import logging
import secrets as stdlib_secrets
import string

import pytest
from fake_hub import fake_hub_fixture  # noqa: F401
from test_training import tiny_args

from ddpm_kiit.cli import train_main
from ddpm_kiit.redaction import public_config, redact_argv, rerunnable_argv

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def _planted_token() -> str:
    return "hf_" + "".join(stdlib_secrets.choice(string.ascii_letters + string.digits) for _ in range(34))


def test_a_token_on_the_command_line_is_found_nowhere(fake_hub, tmp_path, capsys, caplog):
    token = _planted_token()
    fake_hub.tokens[token] = "test-user"  # a real, working token for the loopback Hub
    repo_id = "test-user/ddpm-kiit-secret"
    argv = tiny_args(tmp_path, "--max_train_steps", "2", "--logger", "tensorboard", "--save_images_steps", "1")
    argv += ["--push_to_hub", "--hub_model_id", repo_id, f"--hub_token={token}"]
    with caplog.at_level(logging.DEBUG):
        assert train_main(argv) == 0
    captured = capsys.readouterr()

    pushed = fake_hub.repos[repo_id].files
    assert "unet/diffusion_pytorch_model.safetensors" in pushed  # the push really happened, with that token
    output_files = [path for path in (tmp_path / "out").rglob("*") if path.is_file()]
    assert any(path.parent.name == "logs" or "logs" in path.parts for path in output_files)  # TensorBoard wrote
    leaks = [str(path) for path in output_files if token.encode() in path.read_bytes()]
    leaks += [f"hub:{name}" for name, content in pushed.items() if token.encode() in content]
    leaks += [name for name, text in (("stdout", captured.out), ("stderr", captured.err)) if token in text]
    leaks += ["log records" for record in caplog.records if token in record.getMessage()]
    assert not leaks, f"the token leaked into {leaks}"

    card = pushed["README.md"].decode()
    assert "--hub_token" not in card and "set HF_TOKEN or run `hf auth login`" in card
    assert f"--hub_model_id {repo_id}" in card  # the rest of the command is recorded, rerunnable


def test_redaction_masks_values_of_secret_flags_and_token_lookalikes():
    token = _planted_token()
    argv = ["--hub_token", token, "--wandb_api_key=abc", "--note", f"x{token[:0]} {token}", "--lr", "1e-3"]
    assert redact_argv(argv) == ["--hub_token", "***", "--wandb_api_key=***", "--note", "x ***", "--lr", "1e-3"]
    assert rerunnable_argv(argv) == ["--note", "x ***", "--lr", "1e-3"]
    config = public_config({"hub_token": token, "command_line": argv, "learning_rate": 1e-3, "path": None})
    assert "hub_token" not in config and token not in str(config)
    assert config["learning_rate"] == 1e-3 and config["path"] == "None"
