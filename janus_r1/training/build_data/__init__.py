"""``janus-r1 build-data``: the paper's data-building stage (spec §3.1) -- prompts -> M images per prompt from
several image sources -> a judge's score S and a reason per image -> the label files ``train-sft`` reads.

Pipeline (every step resumable; a killed run started again continues and writes no duplicate):

1. **Prompts** from a text or JSONL file (``janus_r1.batch.read_prompts``; prompt i has ``promptid`` i). With
   ``--expand openai:URL?model=NAME`` each short prompt is rewritten into a long one (3-5 sentences naming colour,
   shape, texture, spatial relations) by a chat server, with the paper's instruction and ``Short:``/``Long:``
   few-shot examples. The prompt list is kept in ``OUT/prompts.jsonl`` so a resumed run uses the same texts.
2. **Images**, per source:

   * ``--engine [NAME=]MODEL`` -- the engine draws M images per prompt (plain text-to-image, the paper's sampling
     defaults) with ``janus-r1 batch``'s machinery, data-parallel under ``accelerate launch`` / ``torchrun``, into
     ``OUT/images/NAME/`` (written atomically per prompt);
   * ``--folder [NAME=]DIR`` -- images made by another generator, in the GenEval layout that ``janus-r1 batch``
     itself writes: ``DIR/<promptid:05d>/samples/*.png`` (or .jpg/.jpeg/.webp; every image of the folder is
     used, in name order). An optional ``DIR/<promptid:05d>/metadata.jsonl`` whose ``prompt`` differs from the
     prompt (short or long) is an error -- a folder made from another prompt file would label wrong pairs.

3. **Scores and reasons** from any judge the trainer accepts (``make_reward``: ``openai:``, ``vlm:``, ``self:PATH``
   and whatever specs it learns later): S = P(yes)/(P(yes)+P(no)) for the paper's question, then a short reason
   from the same judge asked to justify the verdict S implies (so the reason agrees with S), in the released form
   ``"Yes, ..."`` / ``"No, ... Reason: ..."``, and the released ``state`` code. A judge with its own
   ``explain(images, prompts, scores) -> list[str]`` or ``judge(images, prompts) -> [(S, reason)]`` method (a rule
   judge) supplies its reasons itself.
4. **Output**: one label file per source, ``OUT/<NAME>_<thre>.jsonl`` (or ``.parquet``), one row per prompt,
   ``{"promptid", "prompt", "data": [{"id", "img_path", "reason", "prob", "state"}]}`` with the images sorted by
   S descending (the released files' form, spec §3.1), plus ``OUT/summary.json``.

Editing data (``--edit META.jsonl``): each ``{"sample_id", "text", "input", "output"}`` pair is scored with the
two questions of spec §4.7 and kept only if S_follow >= thre and S_preserve >= thre (paper: 0.7), into
``OUT/edit_<thre>.jsonl`` in the editing SFT format.

Resume: scored rows go to a journal ``OUT/.journal/<NAME>.jsonl``, one complete line per prompt, flushed and
fsynced; on start a torn last line (a kill mid-write) is cut off and the prompts already there are skipped. The
label files are rewritten from the journal atomically at the end of every run, so they never hold a half row.
"""

from .prompts import EXPAND_INSTRUCTION, clean_expansion, expansion_message
from .reasons import NO_DEFAULT, NO_PREFIX, YES_DEFAULT, explain, released_reason, state_code
from .run import add_build_data_command, cmd_build_data

__all__ = ["EXPAND_INSTRUCTION", "NO_DEFAULT", "NO_PREFIX", "YES_DEFAULT", "add_build_data_command", "clean_expansion",
           "cmd_build_data", "expansion_message", "explain", "released_reason", "state_code"]
