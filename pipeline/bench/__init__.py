"""Benchmarks and hardware checks outside the workflow: memory/time per method, encoding and training throughput, the GPU check, scale measurements."""
