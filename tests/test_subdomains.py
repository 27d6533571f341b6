"""Sub-domains in the settings, and flat mixtures over them (coarse × fine)."""

from __future__ import annotations

import pytest
import yaml

from mergemix_dagster.core.errors import ConfigError, SimplexError
from mergemix_dagster.core.data.subdomains import coarse_weights, fine_weights, flatten_weights, split_leaf
from mergemix_dagster.core.settings import load_settings

HIERARCHICAL = """
domains:
  - name: code
    subdomains:
      - {name: repos, paths: [/data/code/repos/*.jsonl]}
      - {name: competitions, paths: [/data/code/comp.jsonl]}
  - name: math
    paths: [/data/math.jsonl]
"""


def _load(tmp_path, text: str):
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return load_settings(str(path))


def test_subdomains_parse_and_name_flat_leaves(tmp_path):
    s = _load(tmp_path, HIERARCHICAL)
    assert s.domain("code").leaves() == {
        "code/repos": ["/data/code/repos/*.jsonl"],
        "code/competitions": ["/data/code/comp.jsonl"],
    }
    assert s.domain("math").leaves() == {"math": ["/data/math.jsonl"]}


def test_flat_domain_dumps_without_the_new_field(tmp_path):
    """Settings hashes are asset code versions: a flat config must not go stale because the schema grew."""
    s = _load(tmp_path, HIERARCHICAL)
    assert "subdomains" not in s.domain("math").model_dump()
    assert len(s.domain("code").model_dump()["subdomains"]) == 2


@pytest.mark.parametrize(
    "domains, message",
    [
        ([{"name": "code", "subdomains": [{"name": "a"}, {"name": "a"}]}], "duplicate sub-domain"),
        ([{"name": "code", "paths": ["/x"], "subdomains": [{"name": "a"}]}], "both paths and sub-domains"),
        ([{"name": "code", "subdomains": [{"name": "a/b"}]}], "must be alphanumeric"),
    ],
)
def test_invalid_subdomains_fail_with_config_error(tmp_path, domains, message):
    raw = {"domains": domains + [{"name": "math"}]}
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, yaml.safe_dump(raw))


def test_flatten_is_coarse_times_fine_and_inverts():
    coarse = {"code": 0.6, "math": 0.4}
    fine = {"code": {"repos": 0.75, "competitions": 0.25}}
    flat = flatten_weights(coarse, fine)
    assert flat == pytest.approx({"code/repos": 0.45, "code/competitions": 0.15, "math": 0.4})
    assert sum(flat.values()) == pytest.approx(1.0)
    assert coarse_weights(flat) == pytest.approx(coarse)
    assert fine_weights(flat) == {"code": pytest.approx(fine["code"])}
    assert split_leaf("code/repos") == ("code", "repos") and split_leaf("math") == ("math", None)


def test_flatten_rejects_off_simplex_levels_and_unknown_domains():
    with pytest.raises(SimplexError):
        flatten_weights({"code": 0.6, "math": 0.4}, {"code": {"repos": 0.7, "competitions": 0.7}})
    with pytest.raises(SimplexError, match="no coarse weight"):
        flatten_weights({"code": 0.6, "math": 0.4}, {"web": {"a": 1.0}})
