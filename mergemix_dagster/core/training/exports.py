"""Exports for trainers: the chosen mixture in the formats real training runs read.

Every format is rendered by a pure function from the mixture's weights (flat names: ``math`` or
``code/repos``), the token plan and the data locations in the settings; ``write_exports`` writes the
chosen ones next to ``mixture.json``. Trainer files carry weights rounded to ``export.decimals`` decimals
that sum to exactly 1 (largest remainder), and leave out names whose weight rounds to 0 (such a source is
never sampled). docs/exports.md shows each format and how to consume it.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import yaml

from mergemix_dagster.core.errors import ExportError
from mergemix_dagster.core.mixture import SIMPLEX_TOLERANCE, Mixture
from mergemix_dagster.core.data.subdomains import coarse_weights, split_leaf
from mergemix_dagster.core.data.token_plan import TokenPlan, apportion, plan_tokens
from mergemix_dagster.core.training.hf_layout import hf_parts

if TYPE_CHECKING:  # settings are pydantic only; no import cycle at run time
    from mergemix_dagster.core.settings import Settings

FILE_NAMES = {
    "json": "mixture_plan.json",
    "yaml": "mixture_plan.yaml",
    "hf_yaml": "hf_interleave.yaml",
    "hf_python": "hf_interleave.py",
    "megatron": "megatron_blend.txt",
    "olmo": "olmo_source_mixture.yaml",
}
FORMATS = tuple(FILE_NAMES)


def rounded_weights(weights: Mapping[str, float], decimals: int) -> dict[str, str]:
    """Weights as decimal strings that sum to exactly 1; names rounding to 0 are left out."""
    Mixture.from_dict(weights)
    names = list(weights)
    units = apportion(10**decimals, [max(float(weights[n]), 0.0) for n in names])
    return {n: _decimal(u, decimals) for n, u in zip(names, units) if u > 0}


def _decimal(units: int, decimals: int) -> str:
    return str((Decimal(units) / Decimal(10**decimals)).quantize(Decimal(1).scaleb(-decimals)))


def chosen_weights(mixture: Mapping[str, Any]) -> dict[str, float]:
    """The ``weights`` of a ``mixture.json`` payload, checked to be on the simplex."""
    if "weights" not in mixture or not isinstance(mixture["weights"], Mapping):
        raise ExportError(f"a mixture payload needs 'weights': {{name: weight}}; got keys {sorted(mixture)}")
    weights = {str(k): float(v) for k, v in mixture["weights"].items()}
    Mixture.from_dict(weights)
    return weights


# --- where each name's data lives -------------------------------------------------------------------


def data_locations(settings: Settings) -> dict[str, dict[str, Any]]:
    """Every name a mixture may use (domains and ``domain/sub`` leaves) -> its paths and text field."""
    out: dict[str, dict[str, Any]] = {}
    for domain in settings.domains:
        leaves = domain.leaves()
        for name, paths in leaves.items():
            out[name] = {"paths": paths, "text_field": domain.text_field}
        if domain.subdomains:  # a split domain used whole reads all of its sub-domains
            out[domain.name] = {"paths": [p for ps in leaves.values() for p in ps], "text_field": domain.text_field}
    return out


def _check_names(weights: Mapping[str, float], known: Mapping[str, Any], what: str) -> None:
    unknown = sorted(set(weights) - set(known))
    if unknown:
        raise ExportError(f"{what} names {unknown}, not domains or sub-domains of the settings: {sorted(known)}")


def _in_settings_order(weights: Mapping[str, float], known: Mapping[str, Any]) -> dict[str, float]:
    """Trainer files list names in the order of the settings, whatever order the payload came in."""
    _check_names(weights, known, "the mixture")
    return {name: weights[name] for name in known if name in weights}


def ordered_weights(weights: Mapping[str, float], settings: Settings) -> dict[str, float]:
    """``weights`` in the order of the settings (domains, then their sub-domains); unknown names fail."""
    return _in_settings_order(weights, data_locations(settings))


def _placeholder(name: str, settings: Settings, what: str) -> list[str]:
    if settings.export.strict:
        raise ExportError(f"{name!r} has no {what}; set it in the settings (export.strict is on)")
    return [settings.export.missing_location.format(name=name)]


def _paths_of(name: str, settings: Settings, known: Mapping[str, dict]) -> list[str]:
    return list(known[name]["paths"]) or _placeholder(name, settings, "paths")


def token_plan_for(
    weights: Mapping[str, float],
    settings: Settings,
    available_tokens: Mapping[str, int] | None,
    available_documents: Mapping[str, int] | None = None,
) -> TokenPlan | None:
    """The token plan of ``settings.target`` in settings order, or None without a target or token counts."""
    if settings.target.tokens is None or not available_tokens:
        return None
    return plan_tokens(
        ordered_weights(weights, settings),
        settings.target.tokens,
        available_tokens,
        settings.target.max_epochs,
        available_documents,
    )


# --- renderers (pure: text in, text out) --------------------------------------------------------------


_PLAN_SCALARS = ("stage", "predicted_objective", "verified_objective", "predicted_utility", "verified_utility")


def render_plan(mixture: Mapping[str, Any], plan: TokenPlan | None, fmt: str = "json") -> str:
    """The mixture (both levels when sub-domains are used) and the token plan, as JSON or YAML."""
    weights = chosen_weights(mixture)
    doc: dict[str, Any] = {k: mixture[k] for k in _PLAN_SCALARS if k in mixture}
    doc["weights"] = weights
    if any(split_leaf(n)[1] is not None for n in weights):
        doc["coarse_weights"] = coarse_weights(weights)
    doc["token_plan"] = plan.to_dict() if plan is not None else None
    if fmt == "json":
        return json.dumps(doc, indent=2) + "\n"
    return yaml.safe_dump(doc, sort_keys=False)


def interleave_probabilities(weights: Mapping[str, float], plan: TokenPlan | None) -> tuple[dict[str, float], str]:
    """Per-example probabilities for ``interleave_datasets`` and what they mean.

    ``interleave_datasets`` draws *examples*; a domain of long documents then gets more tokens than its
    weight. With each name's mean document length from the token plan the probabilities are
    ``α_d / L_d`` normalized, so *tokens* follow the mixture; without it they are the token shares as is.
    """
    lengths = {}
    if plan is not None:
        lengths = {a.name: a.mean_document_tokens for a in plan.allocations if a.mean_document_tokens}
    if weights and all(n in lengths for n in weights if weights[n] > 0):
        raw = {n: (w / lengths[n] if w > 0 else 0.0) for n, w in weights.items()}
        total = sum(raw.values())
        return {n: v / total for n, v in raw.items()}, "per document: token shares / mean document tokens"
    return dict(weights), "token shares: the token plan has no document counts"


def hf_sources(weights: Mapping[str, float], settings: Settings, plan: TokenPlan | None) -> list[dict[str, Any]]:
    """The datasets in interleave order: name, probability, and the ``load_dataset`` parts that read it
    (builder, data files, text field, load kwargs, optional; core/training/hf_layout.py)."""
    known = data_locations(settings)
    probabilities, _ = interleave_probabilities(_in_settings_order(weights, known), plan)
    rounded = rounded_weights(probabilities, settings.export.decimals)
    sources = []
    for name, probability in rounded.items():
        if known[name]["paths"]:
            parts = hf_parts(known[name]["paths"], known[name]["text_field"])
        else:  # the placeholder, read as a json file so that load_dataset fails on it by name
            files = _paths_of(name, settings, known)
            parts = [{"builder": "json", "data_files": files, "text_field": "text", "load_kwargs": {}, "optional": False}]
        sources.append({"name": name, "probability": float(probability), "parts": parts})
    return sources


def _yaml_part(part: Mapping[str, Any]) -> dict[str, Any]:
    """A part as the YAML lists it: empty kwargs and a false ``optional`` left out."""
    out = {k: part[k] for k in ("builder", "data_files", "text_field")}
    out.update({k: part[k] for k in ("load_kwargs", "optional") if part[k]})
    return out


def render_hf_yaml(weights: Mapping[str, float], settings: Settings, plan: TokenPlan | None) -> str:
    _, unit = interleave_probabilities(weights, plan)
    sources = hf_sources(weights, settings, plan)
    doc = {
        "interleave_datasets": {
            "probabilities": [s["probability"] for s in sources],
            "stopping_strategy": "all_exhausted",
            "seed": 0,
        },
        "probability_unit": unit,
        "datasets": [{"name": s["name"], "parts": [_yaml_part(p) for p in s["parts"]]} for s in sources],
    }
    head = "# datasets.interleave_datasets(probabilities=...): the datasets below, in this order (docs/exports.md)\n"
    return head + yaml.safe_dump(doc, sort_keys=False)


_HF_SNIPPET = '''"""The mixture as a Hugging Face datasets stream, written by `mergemix export` (docs/exports.md).

`build_mixture()` returns an endless stream with a single `text` column whose examples are drawn from the
sources below with PROBABILITIES ({unit}).
Each source repeats when exhausted (a planned epoch count above 1 needs that): stop after your token
budget{budget}.
"""

import json

import fsspec
from datasets import Features, IterableDataset, Value, concatenate_datasets, interleave_datasets, load_dataset

# name -> its load_dataset parts (builder, data files, text field, load kwargs, optional), in the order of
# PROBABILITIES; an optional part (a folder whose file types were not known at export) may match no file
SOURCES = {sources}
PROBABILITIES = {probabilities}


def _matches(pattern):
    fs, path = fsspec.core.url_to_fs(pattern)
    return bool(fs.glob(path))


def _remote_gzip_lines(files, field):
    """Gzipped JSON lines on a remote store, read through fsspec: `datasets` cannot stream a compressed file
    from S3 (huggingface/datasets#7295, aiobotocore refuses the aiohttp options it passes)."""
    for pattern in files:
        for opened in fsspec.open_files(pattern, mode="rt", compression="gzip"):
            with opened as lines:
                for line in lines:
                    if line.strip():
                        yield {{"text": str(json.loads(line)[field])}}


def load_source(name, parts):
    """One name's documents as a stream with a single `text` column (its parts concatenated)."""
    loaded = []
    for builder, files, field, kwargs, optional in parts:
        files = [f for f in files if _matches(f)] if optional else files
        if not files:
            continue
        remote_gzip = [f for f in files if builder == "json" and "://" in f and f.endswith(".gz")]
        if remote_gzip:
            loaded.append(IterableDataset.from_generator(
                _remote_gzip_lines, gen_kwargs={{"files": remote_gzip, "field": field}},
                features=Features({{"text": Value("string")}})))
            files = [f for f in files if f not in remote_gzip]
            if not files:
                continue
        part = load_dataset(builder, data_files=files, split="train", streaming=True, **kwargs)
        part = part.select_columns([field])
        part = part if field == "text" else part.rename_column(field, "text")
        if part.features is not None and part.features["text"] != Value("string"):
            part = part.cast_column("text", Value("string"))  # parquet may hold large_string: one type to interleave
        loaded.append(part)
    if not loaded:
        raise FileNotFoundError(f"{{name}}: no data file in {{[files for _, files, *_ in parts]}}")
    return loaded[0] if len(loaded) == 1 else concatenate_datasets(loaded)


def build_mixture(seed=0):
    sources = [load_source(name, parts).repeat(None) for name, parts in SOURCES]
    return interleave_datasets(sources, probabilities=PROBABILITIES, seed=seed)


if __name__ == "__main__":
    for example in build_mixture().take(3):
        print(example["text"][:80])
'''


def _python_part(part: Mapping[str, Any]) -> str:
    fields = (part["builder"], part["data_files"], part["text_field"], part["load_kwargs"], part["optional"])
    return "(" + ", ".join(repr(f) for f in fields) + ")"


def render_hf_python(weights: Mapping[str, float], settings: Settings, plan: TokenPlan | None) -> str:
    _, unit = interleave_probabilities(weights, plan)
    sources = hf_sources(weights, settings, plan)
    listed = "[\n" + "".join(
        f"    ({s['name']!r}, [\n" + "".join(f"        {_python_part(p)},\n" for p in s["parts"]) + "    ]),\n"
        for s in sources
    ) + "]"
    budget = f" ({plan.target_tokens:,} tokens in the token plan)" if plan is not None else ""
    return _HF_SNIPPET.format(
        unit=unit, budget=budget, sources=listed, probabilities=repr([s["probability"] for s in sources])
    )


def megatron_blend(weights: Mapping[str, float], settings: Settings) -> list[tuple[str, str]]:
    """``(weight, prefix)`` pairs over every dataset prefix; weights sum to exactly 1.

    A name with a list of prefixes splits its weight evenly over them; with a ``{prefix: tokens}`` map, in
    proportion to the tokens.
    """
    known = data_locations(settings)
    weights = _in_settings_order(weights, known)
    configured = settings.export.megatron_prefixes
    _check_names(configured, known, "export.megatron_prefixes")
    per_prefix: dict[str, float] = {}
    for name, weight in weights.items():
        if weight <= 0:
            continue
        spec = configured.get(name) or _placeholder(name, settings, "Megatron prefix (export.megatron_prefixes)")
        shares = dict(spec) if isinstance(spec, Mapping) else {p: 1 for p in spec}
        total = sum(shares.values())
        if total <= 0:
            raise ExportError(f"Megatron prefixes of {name!r} have no tokens: {shares}")
        for prefix, share in shares.items():
            _check_prefix(prefix, per_prefix)
            per_prefix[prefix] = weight * share / total
    rounded = rounded_weights(per_prefix, settings.export.decimals)
    return [(w, p) for p, w in rounded.items()]


def _check_prefix(prefix: str, seen: Mapping[str, float]) -> None:
    if not prefix or any(c.isspace() for c in prefix):
        raise ExportError(f"Megatron prefix {prefix!r} is empty or has whitespace; --data-path splits on spaces")
    try:
        float(prefix)
    except ValueError:
        pass
    else:
        raise ExportError(f"Megatron prefix {prefix!r} reads as a number; Megatron would take it for a weight")
    if prefix in seen:
        raise ExportError(f"Megatron prefix {prefix!r} is listed for two names")


def render_megatron(weights: Mapping[str, float], settings: Settings) -> str:
    """One line ``w1 prefix1 w2 prefix2 ...``: the value of ``--data-path``, or a ``--data-args-path`` file."""
    return " ".join(f"{w} {p}" for w, p in megatron_blend(weights, settings)) + "\n"


def render_olmo(weights: Mapping[str, float], settings: Settings, plan: TokenPlan | None) -> str:
    """An OLMo-core ``SourceMixtureList`` (``sources``: name, target ratio, paths, repetition caps)."""
    known = data_locations(settings)
    weights = _in_settings_order(weights, known)
    _check_names(settings.export.olmo_paths, known, "export.olmo_paths")
    max_epochs = settings.target.max_epochs
    sources = []
    for name, ratio in rounded_weights(weights, settings.export.decimals).items():
        paths = list(settings.export.olmo_paths.get(name) or _paths_of(name, settings, known))
        sources.append(
            {
                "source_name": name,
                "target_ratio": float(ratio),
                "paths": paths,
                # OLMo caps repetition >= 1 and the used fraction <= 1: together they express any epoch cap
                "max_repetition_ratio": max(1.0, float(max_epochs)),
                "max_source_fraction": min(1.0, float(max_epochs)),
            }
        )
    head = "# OLMo-core SourceMixtureList (olmo_core.data.source_mixture); docs/exports.md\n"
    if plan is not None:
        head += f"# requested_tokens for SourceMixtureDatasetConfig: {plan.target_tokens}\n"
    return head + yaml.safe_dump({"sources": sources}, sort_keys=False)


# --- writing ------------------------------------------------------------------------------------------


def render(fmt: str, mixture: Mapping[str, Any], plan: TokenPlan | None, settings: Settings) -> str:
    """The text of one format."""
    if fmt in ("json", "yaml"):
        return render_plan(mixture, plan, fmt)
    weights = chosen_weights(mixture)
    if fmt == "hf_yaml":
        return render_hf_yaml(weights, settings, plan)
    if fmt == "hf_python":
        return render_hf_python(weights, settings, plan)
    if fmt == "megatron":
        return render_megatron(weights, settings)
    if fmt == "olmo":
        return render_olmo(weights, settings, plan)
    raise ExportError(f"unknown export format {fmt!r}; known: {list(FORMATS)}")


def _same_weights(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return set(a) == set(b) and all(abs(a[n] - b[n]) <= SIMPLEX_TOLERANCE for n in a)


def write_exports(
    mixture: Mapping[str, Any],
    token_plan: TokenPlan | None,
    settings: Settings,
    out_dir: str | Path,
    formats: Sequence[str] | None = None,
) -> dict[str, Path]:
    """Write each format (default: ``settings.export.formats``) into ``out_dir``; returns format -> file.

    ``mixture`` is the ``mixture.json`` payload (``{"weights": {name: weight}, ...}``). Everything is
    rendered before anything is written, so a bad setting leaves no half-written set of files.
    """
    chosen = list(formats if formats is not None else settings.export.formats)
    unknown = [f for f in chosen if f not in FILE_NAMES]
    if unknown:
        raise ExportError(f"unknown export formats {unknown}; known: {list(FORMATS)}")
    mixture = {**mixture, "weights": ordered_weights(chosen_weights(mixture), settings)}
    if token_plan is not None and not _same_weights(token_plan.weights, mixture["weights"]):
        raise ExportError(f"the token plan is for {token_plan.weights}, not this mixture {mixture['weights']}")
    texts = {fmt: render(fmt, mixture, token_plan, settings) for fmt in chosen}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for fmt, text in texts.items():
        path = out / FILE_NAMES[fmt]
        path.write_text(text)
        written[fmt] = path
    return written
