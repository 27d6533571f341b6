"""The checkpoint store: a local directory or an S3 prefix holding checkpoints, corpora and JSON pointers.

Keys are ``/``-separated paths relative to ``root``. A *directory* object (a checkpoint, a surrogate
bundle) is complete only once its ``_COMPLETE`` marker exists: the marker is written last, so an
interrupted upload is never mistaken for a finished one. Local directories are staged in a hidden
temporary sibling and renamed into place; S3 uploads write every file, then the marker.

S3 goes through ``dagster_aws.s3.S3Resource(endpoint_url=..., region_name=...).get_client()``;
credentials come from the usual AWS environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``,
``AWS_PROFILE``, instance roles, ...). ``AWS_ENDPOINT_URL`` is honoured by boto3 when
``endpoint_url`` is not set (MinIO, moto, ...).

Modules: ``resource`` (the Dagster resource, every public method written once), ``local`` and ``s3`` (what
differs: atomic renames vs. marker-last uploads, in-place reads vs. an ETag-checked download cache),
``common`` (key rules, the marker, the cache location).
"""

from mergemix_dagster.resources.store.common import COMPLETE_MARKER
from mergemix_dagster.resources.store.resource import CheckpointStore

__all__ = ["COMPLETE_MARKER", "CheckpointStore"]
