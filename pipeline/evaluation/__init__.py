"""The evaluate step: scorings (dot, DN, ...), evaluation protocols, significance tests, query banks."""
