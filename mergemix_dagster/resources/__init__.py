"""Dagster resources: the checkpoint store (local directory or S3) and the DuckDB evaluation database."""

from mergemix_dagster.resources.store import CheckpointStore
from mergemix_dagster.resources.database import EvaluationDatabase

__all__ = ["CheckpointStore", "EvaluationDatabase"]
