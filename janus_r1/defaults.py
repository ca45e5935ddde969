"""The paper's defaults, written once: the API's signatures, the CLI's options and the nodes' widgets read them.

Plain numbers only (no imports), so every part of the package -- ``model/`` included -- may read this module.
"""

from __future__ import annotations

CFG = 5.0  # text-to-image and regeneration (paper App. B.4)
EDIT_CFG = 4.0  # editing (paper App. B.5)
TEMPERATURE = 1.0  # image tokens (paper App. B.4)
TOP_K = 4096  # image tokens (paper App. B.4); 0 switches top-k off
TOP_P = 1.0  # image tokens; 1 switches nucleus sampling off
TEXT_TOP_K = 50  # reflection tokens (paper App. B.4)
MAX_ROUNDS = 3  # at most three images per prompt (paper App. B.4)
REGEN_MAX_ROUNDS = 2  # regeneration: the input image counts as round 1
MAX_REFLECTION = 256  # tokens; the released one-shot script's 80 truncates SFT-length reasons (B11)
MAX_PROMPT_TOKENS = 200  # the reference's tokenizer budget for a caption prompt
MAX_INSTRUCTION_TOKENS = 90  # editing instructions in SFT
FINAL = "last"  # which attempt a sample returns: the paper's (accepted, else last drawn)
NUM_IMAGES = 1  # samples per prompt
BEST_OF_N = 4  # candidates of best-of-n (beyond the paper)
# Ask / describe (Janus's understanding side; not part of the paper): DeepSeek's own understanding example
ASK_QUESTION = "Describe this image in detail."  # the question of describe() and the Ask node's default
ASK_MAX_NEW_TOKENS = 512  # answer tokens at most (DeepSeek's example)
ASK_TEMPERATURE = 0.0  # 0 = greedy, as DeepSeek's example decodes (do_sample=False)
ASK_TOP_P = 0.95  # nucleus sampling when temperature > 0
ASK_TOP_K = 0  # 0 switches top-k off
ASK_BATCH_SIZE = 8  # CLI: images answered together
