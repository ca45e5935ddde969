"""A tiny synthetic data set in the released formats (real PNG files), for tests, demos and smoke runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

PROMPTS = ["a red cat", "two green apples", "a blue chair", "an astronaut riding a horse"]
PROBS = [0.92, 0.85, 0.75, 0.3, 0.1, 0.05]


def _png(path: Path, seed: int, size: int) -> str:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)
    return path.name


def write_toy_t2i(root, n_prompts: int = 3, size: int = 64) -> Path:
    """``root/labels.jsonl`` + PNGs: per prompt two generation positives, a judge positive, three negatives."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for p in range(n_prompts):
        data = []
        for k, prob in enumerate(PROBS):
            name = _png(root / f"p{p}_{k}.png", 100 * p + k, size)
            reason = ("Yes, the image matches the prompt." if prob >= 0.5
                      else "No, the image does not match the prompt. Reason: the dog is missing.")
            data.append({"id": k, "img_path": name, "reason": reason, "prob": prob, "state": 4 if prob >= 0.7 else 0})
        lines.append(json.dumps({"promptid": p, "prompt": PROMPTS[p % len(PROMPTS)] + f" {p}", "data": data}))
    (root / "labels.jsonl").write_text("\n".join(lines) + "\n")
    return root / "labels.jsonl"


def write_toy_edit(root, n: int = 2, size: int = 64) -> Path:
    """``root/edit.jsonl`` with ``sample_id, text, input, output`` (and ``image1`` for RL) + PNGs."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        src, dst = _png(root / f"in{i}.png", 1000 + i, size), _png(root / f"out{i}.png", 2000 + i, size)
        lines.append(json.dumps({"sample_id": i, "text": "make the sky purple", "input": src, "output": dst}))
    (root / "edit.jsonl").write_text("\n".join(lines) + "\n")
    return root / "edit.jsonl"


def write_toy_prompts(root) -> Path:
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    return root / "prompts.txt"
