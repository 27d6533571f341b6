"""What ``mergemix check`` looked at, as three short tables: the domains (documents, characters and an
estimate of tokens each), the base (architecture, parameters), and the benchmarks per capability (tasks,
items scored).

Why estimates: the exact token count needs the base's tokenizer over every corpus, which is the corpora job's
work (``mergemix run`` records it in ``mixture.json``). Here each local corpus is read as the pipeline reads it,
up to its ``max_chars`` (at most ``READ_LIMIT`` characters), and tokens are characters / ``CHARS_PER_TOKEN``.
Parameters are counted on a model built on PyTorch's ``meta`` device (no memory, no weights read).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from mergemix_dagster.core.settings import Settings

READ_LIMIT = 8_000_000  # characters read per domain at most, whatever its max_chars
CHARS_PER_TOKEN = 4  # the usual English BPE ratio: an estimate, said so in the table


@dataclass
class CheckSummary:
    domains: list[dict]
    base: dict
    capabilities: list[dict]

    def lines(self) -> list[str]:
        import pandas as pd

        out = [f"domains (tokens ≈ characters / {CHARS_PER_TOKEN}; the corpora job counts them exactly):"]
        out += ["  " + x for x in pd.DataFrame(self.domains).to_string(index=False).splitlines()]
        out += ["base:"] + ["  " + x for x in pd.DataFrame([self.base]).to_string(index=False).splitlines()]
        out += ["benchmarks per capability:"]
        out += ["  " + x for x in pd.DataFrame(self.capabilities).to_string(index=False).splitlines()]
        return out


def _count(n: float | None, approx: bool = False) -> str:
    if n is None:
        return "-"
    return ("≈" if approx else "") + f"{int(round(n)):,}"


def domain_row(name: str, capability: str | None, paths: list[str], text_field: str, max_chars: int) -> dict:
    from mergemix_dagster.core.data.corpora import expand_paths, read_documents

    row = {"domain": name, "capability": capability or "-"}
    if not paths:
        return row | {"source": "embedded", "files": "-", "documents": "-", "characters": f"≤{max_chars:,}",
                      "tokens": _count(max_chars / CHARS_PER_TOKEN, approx=True)}
    if any("://" in str(p) and not str(p).startswith("file://") for p in paths):
        return row | {"source": "remote (read by the run)", "files": "-", "documents": "-", "characters": "-",
                      "tokens": "-"}
    try:
        files = expand_paths(paths)
        docs = read_documents(paths, text_field, min(max_chars, READ_LIMIT))
    except Exception as exc:  # check_settings names the problem; the summary only says it has no figures
        return row | {"source": "unreadable", "files": "-", "documents": "-", "characters": "-",
                      "tokens": f"({type(exc).__name__})"}
    chars = sum(len(d) for d in docs)
    more = "+" if chars >= READ_LIMIT and max_chars > READ_LIMIT else ""  # read stopped before max_chars
    cut = " (max_chars)" if chars >= max_chars else ""
    return row | {"source": ", ".join(sorted({f.suffix or f.name for f in files})), "files": f"{len(files):,}",
                  "documents": f"{len(docs):,}{more}", "characters": f"{chars:,}{more}{cut}",
                  "tokens": _count(chars / CHARS_PER_TOKEN, approx=True) + more}


def base_row(s: Settings) -> dict:
    """Architecture and parameter count of the base (embedded: the tiny Llama the settings describe)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    m = s.model
    try:
        if m.base == "embedded":
            config = LlamaConfig(vocab_size=m.vocab_size, hidden_size=m.hidden_size,
                                 intermediate_size=m.intermediate_size, num_hidden_layers=m.num_layers,
                                 num_attention_heads=m.num_heads, num_key_value_heads=m.num_heads,
                                 max_position_embeddings=m.max_position_embeddings, tie_word_embeddings=True)
            where = "embedded, pre-trained by the run"
        else:
            config = AutoConfig.from_pretrained(str(Path(m.base).expanduser()) if Path(m.base).expanduser().exists() else m.base)
            where = m.base
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config)
        params = sum(p.numel() for p in model.parameters())
        at_most = "≤" if m.base == "embedded" else ""  # its vocabulary is the trained tokenizer's, ≤ model.vocab_size
        return {"base": where, "architecture": type(model).__name__, "layers": getattr(config, "num_hidden_layers", "-"),
                "hidden": getattr(config, "hidden_size", "-"), "parameters": f"{at_most}{params:,}"}
    except Exception as exc:  # named by check_settings
        return {"base": m.base, "architecture": f"unreadable ({type(exc).__name__})", "parameters": "-"}


def capability_rows(s: Settings) -> list[dict]:
    """Per capability: its tasks and the items each scores (``evaluation.limit`` applied)."""
    from mergemix_dagster.core.evaluation.harness import Evaluator, TaskSpec

    tasks_dir = Path(s.evaluation.tasks_dir) if s.evaluation.tasks_dir else None
    items: dict[str, int | None] = {}
    for t in s.evaluation.tasks:
        try:
            ev = Evaluator([TaskSpec(t.name, t.capability, t.metric)], tasks_dir=tasks_dir, limit=s.evaluation.limit)
            items[t.name] = ev.items(t.name)
        except Exception:  # named by check_settings
            items[t.name] = None
    rows = []
    for cap in s.capabilities:
        names = [t.name for t in s.evaluation.tasks if t.capability == cap]
        counts = [items[n] for n in names]
        total = None if any(c is None for c in counts) else sum(counts)
        rows.append({"capability": cap, "tasks": ", ".join(f"{n} ({_count(items[n])})" for n in names),
                     "items": _count(total),
                     "domains": ", ".join(d.name for d in s.domains if d.capability == cap) or "-"})
    return rows


def check_summary(s: Settings) -> CheckSummary:
    domains = [domain_row(d.name, d.capability, list(d.paths) or [p for sub in d.subdomains for p in sub.paths],
                          d.text_field, d.max_chars) for d in s.domains]
    if s.model.general_paths:
        domains.append(domain_row("(general)", None, list(s.model.general_paths), "text", s.model.general_max_chars))
    return CheckSummary(domains, base_row(s), capability_rows(s))


__all__ = ["CHARS_PER_TOKEN", "READ_LIMIT", "CheckSummary", "check_summary"]
