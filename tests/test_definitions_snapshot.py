"""The reorganised package keeps every asset key, partitions definition, code version, dependency and
cache-key input it had before (tests/snapshots/definitions.json, written before the move of issue 17):
a home built before a refactor is fresh after it, and no artifact is looked for under a new key."""

import json
from pathlib import Path

from tests.definitions_snapshot import collect

SNAPSHOT = Path(__file__).parent / "snapshots" / "definitions.json"


def _diff(expected, actual, path="") -> list[str]:
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = []
        for key in sorted(set(expected) | set(actual)):
            if key not in actual:
                out.append(f"{path}/{key}: missing now")
            elif key not in expected:
                out.append(f"{path}/{key}: new")
            else:
                out += _diff(expected[key], actual[key], f"{path}/{key}")
        return out
    return [] if expected == actual else [f"{path}: {expected!r} -> {actual!r}"]


def test_definitions_and_cache_keys_match_the_snapshot():
    differences = _diff(json.loads(SNAPSHOT.read_text()), collect())
    assert not differences, "\n".join(differences[:40])
