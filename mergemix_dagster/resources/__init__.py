"""What is kept or computed outside a step: the checkpoint store (``store/``, local or S3) and where each
artifact lives in it (``layout``, read back through ``artifacts``), the DuckDB evaluation database, the trainers
(``trainers/``), Dagster concurrency pools and the settings as a Dagster resource (``settings``)."""

from mergemix_dagster.resources.store import CheckpointStore
from mergemix_dagster.resources.database import EvaluationDatabase

__all__ = ["CheckpointStore", "EvaluationDatabase"]
