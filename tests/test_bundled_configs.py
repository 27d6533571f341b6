"""The bundled configs: ``attempt6`` keeps the default that pre-registered validation attempt 1 judged."""

from mergemix_dagster.core.settings import load_settings


def test_attempt6_is_the_default_but_for_what_attempt_7_changed():
    """docs/results.md attempt 7 changed four settings of the default; everything else must stay equal, or
    `--config attempt6` would no longer reproduce attempt 6's mixture and validation attempt 1's figures."""
    old, new = load_settings("attempt6").model_dump(), load_settings("default").model_dump()
    changed = {
        ("experts", "tokens"): (1_000_000, 400_000),
        ("search", "n_candidates"): (40, 24),
    }
    for (section, key), (was, now) in changed.items():
        assert (old[section].pop(key), new[section].pop(key)) == (was, now)
    code = {t["capability"]: t["name"] for t in old["evaluation"]["tasks"]}["code"], \
        {t["capability"]: t["name"] for t in new["evaluation"]["tasks"]}["code"]
    assert code == ("mm_code", "mm_code_bpb")
    assert [t["name"] for t in new["validation"]["heldout_tasks"]] == \
        [t["name"] for t in old["validation"]["heldout_tasks"]] + ["mm_code"]
    for settings in (old, new):
        settings["evaluation"].pop("tasks")
        settings["validation"].pop("heldout_tasks")
    assert old == new


def test_default_heldout_tasks_leave_out_the_searched_ones():
    """A project whose search scores `mm_code` (the code benchmark until attempt 7) keeps the other bundled
    held-out tasks; a held-out list that names a search task is refused at load, before anything trains."""
    import pytest

    from mergemix_dagster.core.errors import ConfigError
    from mergemix_dagster.core.settings import Settings

    domains = [{"name": "math", "capability": "math"}, {"name": "code", "capability": "code"}]
    own = {"tasks": [{"name": "mm_math", "capability": "math", "metric": "gold_prob"},
                     {"name": "mm_code", "capability": "code", "metric": "gold_prob"}]}
    s = Settings(domains=domains, evaluation=own)
    assert [t.name for t in s.validation.heldout_tasks] == ["mm_arith_words", "mm_prose"]
    assert [t.name for t in Settings(domains=domains).validation.heldout_tasks] == \
        ["mm_arith_words", "mm_prose", "mm_code"]
    with pytest.raises((ConfigError, ValueError), match=r"\['mm_code'\] are also search tasks"):
        Settings(domains=domains, evaluation=own,
                 validation={"heldout_tasks": [{"name": "mm_code", "capability": "code", "metric": "gold_prob"}]})
