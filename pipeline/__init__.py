"""infonce-bench: memory-efficient InfoNCE training and Distribution-Normalized evaluation
of dense retrievers on BEIR-format data. Each pipeline stage is `python -m pipeline.<step>`."""

__version__ = "0.1.0"
