"""Serve the Gradio app: generate with any scheduler, watch the forward and reverse processes, play the quiz.

    python examples/app.py --pipeline PIPELINE [--host 127.0.0.1] [--port 7860] [--allow-dir DIR]

Same options as `ddpm-kiit app`. Needs the app extra: `pip install -e ".[app]"`.
"""

import sys

from ddpm_kiit.cli import main

if __name__ == "__main__":
    sys.exit(main(["app"] + sys.argv[1:]))
