"""What checkpoint checksums cost next to the save itself (issue 24): seconds per GiB to write a DCP checkpoint,
to hash it once written (``checksums.write_checksums``, on the save's background thread) and to verify it
(``checksums.verify``, before a resume or an export), on this machine's disk, one process.

    python bench/checkpoint_verify.py --gib 1      # prints one JSON line

The save is timed through ``fsync`` (what the saver does before publishing). The file was just written, so the
hash reads it from the page cache: the figure is the hashing cost; a cold read from disk adds the disk's read time,
which a resume pays anyway to load the tensors.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gib", type=float, default=1.0, help="checkpoint size in GiB (fp32 tensors of 64 MiB)")
    ap.add_argument("--dir", default=None, help="where to write (default: a temporary folder)")
    args = ap.parse_args()
    import warnings

    import torch.distributed.checkpoint as dcp

    from janus_r1.training.atomic import fsync_tree
    from janus_r1.training.checksums import verify, write_checksums

    n = max(1, round(args.gib * 16))
    tensors = {f"weights.t{i}": torch.randn(4096, 4096) for i in range(n)}  # 64 MiB each
    root = Path(tempfile.mkdtemp(dir=args.dir, prefix="janus-r1-ckbench-"))
    try:
        ck = root / "step"
        (ck / "dcp").mkdir(parents=True)
        (ck / "state.json").write_text(json.dumps({"step": 1}))
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dcp.save(tensors, checkpoint_id=str(ck / "dcp"), no_dist=True)
        fsync_tree(ck)
        save = time.perf_counter() - t0
        t0 = time.perf_counter()
        size = write_checksums(ck)
        hashed = time.perf_counter() - t0
        t0 = time.perf_counter()
        verify(ck)
        verified = time.perf_counter() - t0
    finally:
        shutil.rmtree(root, ignore_errors=True)
    gib = size / 1024**3
    print(json.dumps({"gib": round(gib, 3), "save_s_per_gib": round(save / gib, 3),
                      "checksum_s_per_gib": round(hashed / gib, 3), "verify_s_per_gib": round(verified / gib, 3),
                      "checksum_over_save": round(hashed / save, 3), "cpu_count": os.cpu_count(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
