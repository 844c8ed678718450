"""Paper-style tables built from the metrics files of runs that really happened, and the
paper's figures from the trained checkpoints (``figures.py``)."""
