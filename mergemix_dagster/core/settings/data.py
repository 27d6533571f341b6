"""Where the data comes from and what the stage-0 base is: domains, sub-domains, the model."""

from __future__ import annotations

from pydantic import Field, field_validator, model_serializer, model_validator

from mergemix_dagster.core.settings.base import StrictModel, check_name


class SubdomainSettings(StrictModel):
    """One sub-domain of a domain (e.g. ``repos`` of ``code``); its flat mixture name is ``code/repos``."""

    name: str
    paths: list[str] = Field(default_factory=list, description="jsonl/parquet/txt files or dirs, local or s3://")
    max_chars: int | None = Field(None, gt=0, description="cap on this sub-domain's corpus; default: the domain's")
    weight: float | None = Field(
        None, gt=0, description="share of this sub-domain (by characters) when its domain is used whole, e.g. by "
        "the top-down domain expert; set on every sub-domain of the domain or none (default: natural proportions)",
    )

    @model_serializer(mode="wrap")
    def _dump_without_default_cap(self, handler):
        """Without its own cap or weight a sub-domain dumps as before they existed (settings hashes hold)."""
        data = handler(self)
        for name in ("max_chars", "weight"):
            if getattr(self, name) is None and isinstance(data, dict):
                data.pop(name, None)
        return data

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_name("sub-domain", value)


class DomainSettings(StrictModel):
    """One data domain. With no ``paths`` the embedded default builder of that name is used."""

    name: str
    paths: list[str] = Field(default_factory=list, description="jsonl/parquet/txt files or dirs, local or s3://")
    text_field: str = "text"
    capability: str | None = Field(None, description="the capability this domain feeds: its expert is checked against the base on it (experts_beat_base), and while the benchmarks cannot resolve it the domain keeps its natural share")
    max_chars: int = Field(4_000_000, gt=0, description="cap on corpus size (characters) after loading")
    subdomains: list[SubdomainSettings] = Field(
        default_factory=list, description="optional split into sub-domains, each with its own paths"
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        return check_name("domain", value)

    @model_validator(mode="after")
    def _valid_subdomains(self) -> "DomainSettings":
        names = [s.name for s in self.subdomains]
        if len(set(names)) != len(names):
            raise ValueError(f"domain {self.name!r}: duplicate sub-domain names {names}")
        if self.subdomains and self.paths:
            raise ValueError(
                f"domain {self.name!r} lists both paths and sub-domains; put every path under a sub-domain"
            )
        return self

    @model_serializer(mode="wrap")
    def _flat_dump_unchanged(self, handler):
        """A flat domain dumps as before sub-domains existed, so its settings hash (code version) is unchanged."""
        data = handler(self)
        if not self.subdomains and isinstance(data, dict):
            data.pop("subdomains", None)
        return data

    def leaves(self) -> dict[str, list[str]]:
        """Flat mixture names and their paths: ``{"code/repos": [...], ...}``, or ``{"math": [...]}`` unsplit."""
        if not self.subdomains:
            return {self.name: list(self.paths)}
        return {f"{self.name}/{s.name}": list(s.paths) for s in self.subdomains}


class ModelSettings(StrictModel):
    """The stage-0 base. ``base: embedded`` pre-trains a tiny Llama here; otherwise a local HF dir or hub id."""

    base: str = "embedded"
    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 344
    max_position_embeddings: int = 256
    general_max_chars: int = 2_000_000
    general_paths: list[str] = Field(
        default_factory=list,
        description="the team's own general text (files, dirs, globs; jsonl/parquet/txt, field `text`); "
        "empty: the embedded general corpus",
    )
    offline: bool = Field(
        True,
        description="no request reaches the Hugging Face hub (HF_HUB_OFFLINE and friends are set when the "
        "definitions load); set false to download a base given as a hub id",
    )
