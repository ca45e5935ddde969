"""Training that produces Janus-Pro-R1-style weights: SFT (Task-I/II/III, editing) and GRPO, on accelerate.

Nothing heavy is imported here; ``janus_r1.training.trainer`` imports accelerate when a run starts.
"""
