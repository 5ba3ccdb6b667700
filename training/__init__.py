"""Data loading, training pipelines and the MLflow model lifecycle (CLI: ``python -m training``).

Importing this package does not import torch; the training modules do so themselves.
"""
