"""Generation side of the engine: sampling, context building, the one decode loop, VQ/image I/O and the tasks."""
