"""The aggregate step and what reads its output: tables, plots, MLflow logging and UI, published reference tables, diagnostics, the pilot."""
