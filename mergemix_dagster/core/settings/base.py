"""What every settings section shares: unknown keys are errors and a loaded section never changes."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A settings section: a typo in the YAML fails at load, and a loaded value is safe to hash and share."""

    model_config = ConfigDict(extra="forbid", frozen=True)


MAX_NAME = 64


def check_name(what: str, value: str) -> str:
    """A domain or sub-domain name is a mixture key, a partition key and a folder name: keep it plain."""
    if not value or not value.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"{what} name {value!r} must be alphanumeric (with - or _)")
    if len(value) > MAX_NAME:  # it becomes a folder and file names: keep them far below the OS's 255 bytes
        raise ValueError(f"{what} name {value[:20]!r}... is {len(value)} characters; at most {MAX_NAME}")
    return value
