"""infonce-bench: memory-efficient InfoNCE training and Distribution-Normalized evaluation
of dense retrievers on BEIR-format data. Each stage is a package (core <- sources, models <- training, retrieval <- evaluation <- results <- export, bench;
docs/architecture.md); its step runs as `python -m pipeline.<stage>.<step>`."""

__version__ = "0.1.0"
