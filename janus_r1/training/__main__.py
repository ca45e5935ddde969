"""``python -m janus_r1.training train-sft|train-grpo ...`` (also ``accelerate launch -m janus_r1.training ...``)."""

import sys

from .cli import main

sys.exit(main())
