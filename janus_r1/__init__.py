"""janus_r1 -- Janus-Pro-R1 (arXiv 2506.01480) on transformers' Janus classes.

Generate, self-evaluate, introspectively regenerate, edit and score images. Importing this package is cheap: no
model work and no downloads happen until :meth:`JanusR1.from_pretrained` is called.
"""

from .api import DEFAULT_MODEL, JanusR1
from .errors import Cancelled, JanusR1Error
from .generation.ask import Answer
from .generation.decode import Hooks, StepEvent
from .generation.sampling import Sampling
from .generation.trace import Attempt, Judgement, SampleResult

__all__ = [
    "JanusR1", "JanusR1Error", "Cancelled", "Hooks", "StepEvent", "Sampling", "Attempt", "Judgement",
    "SampleResult", "Answer", "DEFAULT_MODEL",
]
__version__ = "0.1.0"
