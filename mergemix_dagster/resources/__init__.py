"""Dagster resources: the checkpoint store (local directory or S3) and the DuckDB evaluation database."""

from .checkpoint_store import CheckpointStore
from .database import EvaluationDatabase

__all__ = ["CheckpointStore", "EvaluationDatabase"]
