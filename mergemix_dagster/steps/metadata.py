"""Asset metadata a reader can see in the Dagster UI: typed tables, rounded numbers, inline images.

Plots are embedded as a base64 PNG data URI in a markdown value (as Dagster's own ML examples do), so they
show on the asset page itself rather than as a path on the machine that ran the step. Floats are rounded
to 4 significant digits: ``0.9999999999999999`` and ``4.704683303833008`` carry no more information than
``1`` and ``4.705`` and are harder to read.
"""

from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import dagster as dg
import numpy as np
import pandas as pd

SIGNIFICANT_DIGITS = 4


def rounded(value: float, digits: int = SIGNIFICANT_DIGITS) -> float:
    """``value`` to ``digits`` significant digits (non-finite values unchanged)."""
    value = float(value)
    if not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{digits}g}")


def number(value: float, digits: int = SIGNIFICANT_DIGITS) -> dg.MetadataValue:
    """A rounded float metadata value."""
    return dg.MetadataValue.float(rounded(value, digits))


def _column_type(series: pd.Series) -> str:
    if pd.api.types.is_bool_dtype(series):
        return "bool"
    if pd.api.types.is_integer_dtype(series):
        return "int"
    if pd.api.types.is_float_dtype(series):
        return "float"
    return "string"


def _cell(value: Any, kind: str, digits: int) -> Any:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if kind == "float":
        return rounded(value, digits)
    if kind == "int":
        return int(value)
    if kind == "bool":
        return bool(value)
    if isinstance(value, dict):
        return ", ".join(f"{k}={_short(v, digits)}" for k, v in value.items())
    return _short(value, digits)


def _short(value: Any, digits: int) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{float(value):.{digits}g}"
    return str(value)


def table(
    frame: pd.DataFrame,
    digits: int = SIGNIFICANT_DIGITS,
    descriptions: dict[str, str] | None = None,
) -> dg.TableMetadataValue:
    """``frame`` as a ``MetadataValue.table`` with a ``TableSchema`` (column types from the dtypes)."""
    frame = frame.reset_index(drop=True)
    descriptions = descriptions or {}
    kinds = {str(c): _column_type(frame[c]) for c in frame.columns}
    schema = dg.TableSchema(
        columns=[dg.TableColumn(name, kind, description=descriptions.get(name)) for name, kind in kinds.items()]
    )
    records = [
        dg.TableRecord({str(c): _cell(v, kinds[str(c)], digits) for c, v in row.items()})
        for row in frame.to_dict("records")
    ]
    return dg.MetadataValue.table(records=records, schema=schema)


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def image(source: Path | str | Any, title: str = "plot") -> dg.MarkdownMetadataValue:
    """A PNG file (path) or a matplotlib figure, inline in the asset page as markdown."""
    if isinstance(source, (str, Path)):
        png = Path(source).read_bytes()
    else:  # a matplotlib Figure
        buffer = io.BytesIO()
        source.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        png = buffer.getvalue()
    return dg.MetadataValue.md(f"![{title}]({png_data_uri(png)})")


def loss_curve(curves: Mapping[str, Sequence[float]], title: str = "training loss") -> dg.MarkdownMetadataValue:
    """One line per run of training loss against optimiser step (one point per recorded step), inline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.0, 3.2))
    for label, losses in curves.items():
        ax.plot(range(1, len(losses) + 1), losses, lw=1.2, marker="." if len(losses) <= 50 else None, label=label)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_title(title, fontsize=10)
    if 1 < len(curves) <= 12:
        ax.legend(fontsize=6)
    fig.tight_layout()
    try:
        return image(fig, title)
    finally:
        plt.close(fig)


def corpus_metadata(docs: list[str], fingerprint: str, uri: str, source: str) -> dict:
    """What a corpus page shows: size, identity, where it is stored, where it came from, a preview."""
    preview = docs[0][:400] if docs else ""
    return {
        "documents": dg.MetadataValue.int(len(docs)),
        "characters": dg.MetadataValue.int(sum(len(d) for d in docs)),
        "fingerprint": dg.MetadataValue.text(fingerprint),
        "uri": dg.MetadataValue.path(uri),
        "source": dg.MetadataValue.text(source),
        "preview": dg.MetadataValue.md(f"```\n{preview}\n```"),
    }


def weights_table(rows: list[dict]) -> dg.MetadataValue:
    """Mixture weights as a table: name columns as strings, every other column a float to 4 decimals."""
    columns = list(rows[0]) if rows else []
    return dg.MetadataValue.table(
        [dg.TableRecord({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string" if c in ("name", "domain", "subdomain") else "float")
                                       for c in columns]),
    )


__all__ = [
    "SIGNIFICANT_DIGITS", "rounded", "number", "table", "image", "png_data_uri", "loss_curve",
    "corpus_metadata", "weights_table",
]
