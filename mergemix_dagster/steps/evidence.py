"""Earlier evaluations of a stage kept when its domains change: which are still valid, and the seed design.

A measured mixture is a point of the new simplex on the face of the domains it weighs (a new domain at 0),
and its rows stay valid evidence only if it is the same merged model: ``layout.face_fingerprint`` (base,
method, and the expert fingerprint and weight of each domain with weight > 0) must be equal under the old and
the current recipe. The old recipe is trusted only where it reproduces the stored ``candidate_fingerprint``
of the rows, so names alone never decide. Valid points keep their rows (copied under the current candidate's
id and fingerprint by ``candidate_evaluations``); points with weight on a removed domain, or on a domain whose
expert changed (or under another base or merge method), are not mixed into the fit. docs/search.md,
"Changing domains".
"""

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from mergemix_dagster.core.mixture import Mixture
from mergemix_dagster.core.search.designs import extend_design, seed_design
from mergemix_dagster.core.settings import Settings
from mergemix_dagster.resources import CheckpointStore, EvaluationDatabase, layout
from mergemix_dagster.resources.layout import candidate_fingerprint, face_fingerprint
from mergemix_dagster.steps.proxy_scoring import finished_fingerprints
from mergemix_dagster.steps.search_inputs import round_kind

SEED_ORIGIN = "seed"
EXTENDED_ORIGIN = "extended"


@dataclass(frozen=True)
class Evidence:
    """One earlier scored model: where its rows are (``candidate_id``, ``fingerprint``, ``kind``), its α and
    its ``face`` (``layout.face_fingerprint`` under the recipe it was merged with)."""

    candidate_id: str
    fingerprint: str
    kind: str
    alpha: dict
    face: str

    def source(self) -> dict:
        return {"candidate_id": self.candidate_id, "fingerprint": self.fingerprint, "kind": self.kind}


def recipe_of(design: dict) -> dict:
    return {k: design[k] for k in ("base", "experts", "method")}


def earlier_evidence(store: CheckpointStore, database: EvaluationDatabase, stage: str, s: Settings) -> list[Evidence]:
    """The models the stage's stored design and rounds scored completely (every configured task), with
    their faces. A candidate whose stored fingerprint the stored recipe does not reproduce is left out (its
    recipe is unknown); one still waiting for its rows to be copied keeps the source it was given."""
    key = layout.candidates_key(stage)
    if not store.exists(key):
        return []
    design = store.get_json(key)
    recipe = recipe_of(design)
    done = finished_fingerprints(database, stage, s)
    listed = [(c, "seed") for c in design["candidates"]]
    r = 1
    while store.exists(layout.round_key(stage, r)):
        listed += [(c, round_kind(r)) for c in store.get_json(layout.round_key(stage, r))["candidates"]]
        r += 1
    out = []
    for c, kind in listed:
        alpha = {d: float(w) for d, w in c["alpha"].items()}
        if done.get(c["candidate_id"]) == c["fingerprint"] and candidate_fingerprint(recipe, alpha) == c["fingerprint"]:
            out.append(Evidence(c["candidate_id"], c["fingerprint"], kind, alpha, face_fingerprint(recipe, alpha)))
        elif "reused" in c and done.get(c["reused"]["candidate_id"]) == c["reused"]["fingerprint"]:
            src = c["reused"]
            out.append(Evidence(src["candidate_id"], src["fingerprint"], src["kind"], alpha, c["face"]))
    return out


def _on(domains: tuple[str, ...], alpha: dict) -> bool:
    """Whether α lies on the simplex of ``domains`` (no weight on another domain)."""
    return all(w <= 0 or d in domains for d, w in alpha.items())


def _next_id(used) -> int:
    numbers = [int(m.group(1)) for cid in used if (m := re.fullmatch(r"c(\d+)", cid))]
    return max(numbers, default=-1) + 1


def stage_design(
    s: Settings, recipe: dict, previous: dict | None, evidence: list[Evidence], prior: Mixture, used_ids,
) -> tuple[list[dict], dict]:
    """The stage's seed candidates and what ``mixture.json`` says about their evidence.

    With no stored design, or one over the same domains that was not extended, the seed design of the
    settings (as always). When the domains differ from the stored design's (or it was extended), its points
    that lie on the current simplex are kept with their ids, earlier round mixtures that are still valid join
    them, and ``extend_design`` adds only the missing points (each new domain's vertex, midpoints, interior
    points) under ids never used in the stage. Every candidate whose face an earlier scored model shares gets
    ``reused`` (the rows to copy) unless its own rows are that model already.
    """
    domains = tuple(s.domain_names)
    n, seed = s.search.n_candidates, s.search.seed
    plain = previous is None or (tuple(previous["domains"]) == domains and previous.get("origin", SEED_ORIGIN) == SEED_ORIGIN)
    by_face = {}
    for e in evidence:
        by_face.setdefault(e.face, e)
    if plain:
        points = seed_design(domains, n, seed=seed, priors=[prior])
        listed = [(f"c{i:03d}", m.as_dict(), None) for i, m in enumerate(points)]
        new_domains: list[str] = []
    else:
        old = tuple(previous["domains"])
        new_domains = [d for d in domains if d not in old]
        listed = [(c["candidate_id"], {d: float(c["alpha"].get(d, 0.0)) for d in domains}, c)
                  for c in previous["candidates"] if _on(domains, c["alpha"])]
        have = {tuple(np.round([a[d] for d in domains], 9)) for _, a, _ in listed}
        next_id = _next_id([*used_ids, *(cid for cid, _, _ in listed)])
        for e in evidence:  # earlier rounds' mixtures on this simplex, still the same models
            alpha = {d: float(e.alpha.get(d, 0.0)) for d in domains}
            point = tuple(np.round([alpha[d] for d in domains], 9))
            if e.kind != "seed" and _on(domains, e.alpha) and point not in have \
                    and face_fingerprint(recipe, alpha) == e.face:
                listed.append((f"c{next_id:03d}", alpha, None))
                have.add(point)
                next_id += 1
        measured = np.array([[a[d] for d in domains] for _, a, _ in listed]).reshape(-1, len(domains))
        for p in extend_design(domains, measured, new_domains, n, seed=seed, priors=[prior]):
            listed.append((f"c{next_id:03d}", Mixture.from_array(domains, p).as_dict(), None))
            next_id += 1
    candidates, reused, new = [], [], []
    for cid, alpha, before in listed:
        c = {"candidate_id": cid, "alpha": alpha, "fingerprint": candidate_fingerprint(recipe, alpha)}
        face = face_fingerprint(recipe, alpha)
        e = by_face.get(face)
        if e is not None and (e.candidate_id, e.fingerprint) != (cid, c["fingerprint"]):
            c |= {"reused": e.source(), "face": face}
        elif before is not None and "reused" in before and before["fingerprint"] == c["fingerprint"]:
            c |= {"reused": before["reused"], "face": face}  # copied on an earlier run: still reused evidence
        (reused if "reused" in c else new).append(c)
        candidates.append(c)
    kept = {face_fingerprint(recipe, c["alpha"]) for c in candidates}
    not_used = [{**e.source(), "why": _why_not(e, domains, recipe, previous)}
                for e in evidence if e.face not in kept and not (e.kind != "seed" and plain)]
    summary = {
        "origin": SEED_ORIGIN if plain else EXTENDED_ORIGIN,
        "new_domains": new_domains,
        "removed_domains": [d for d in (previous or {}).get("domains", []) if d not in domains],
        "reused": [{"candidate_id": c["candidate_id"], "from": c["reused"]} for c in reused],
        "new": [c["candidate_id"] for c in new],
        "not_used": not_used,
    }
    return candidates, summary


def _why_not(e: Evidence, domains: tuple[str, ...], recipe: dict, previous: dict | None) -> str:
    removed = sorted(d for d, w in e.alpha.items() if w > 0 and d not in domains)
    if removed:
        return f"weighs removed domain(s) {removed}"
    old = (previous or {}).get("experts", {})
    changed = sorted(d for d, w in e.alpha.items() if w > 0 and old.get(d) != recipe["experts"].get(d))
    if changed:
        return f"merged from an earlier expert of {changed}"
    if previous is not None and (previous.get("base"), previous.get("method")) != (recipe["base"], recipe["method"]):
        return "merged from another base or merge method"
    return "not a point of the current design"


def evidence_lines(summary: dict) -> list[str]:
    """What the stage's seed design reuses, for the log, ``mergemix report`` and the run summary."""
    if summary.get("origin", SEED_ORIGIN) == SEED_ORIGIN and not summary.get("reused"):
        return []
    lines = [f"seed design {summary['origin']}: {len(summary['reused'])} mixtures reused from earlier evaluations, "
             f"{len(summary['new'])} new"
             + (f"; new domains {summary['new_domains']}" if summary.get("new_domains") else "")
             + (f"; removed domains {summary['removed_domains']}" if summary.get("removed_domains") else "")]
    if summary["reused"]:
        lines.append("reused: " + ", ".join(f"{r['candidate_id']} <- {r['from']['candidate_id']} ({r['from']['kind']})"
                                            for r in summary["reused"]))
    if summary["new"]:
        lines.append("new: " + ", ".join(summary["new"]))
    if summary.get("not_used"):
        lines.append("not mixed into the fit: " + "; ".join(f"{e['candidate_id']} ({e['kind']}): {e['why']}"
                                                            for e in summary["not_used"]))
    return lines


def copy_reused_rows(database: EvaluationDatabase, stage: str, s: Settings, candidates: list[dict]) -> list[str]:
    """Write the rows of each ``reused`` candidate not yet done from its source's rows (same model: same face
    fingerprint, checked when the design was made) under the candidate's id, fingerprint, α and kind ``seed``.
    Returns the ids copied; a source whose rows are gone or incomplete is left to be scored."""
    from mergemix_dagster.resources.artifacts import configured_rows

    done = finished_fingerprints(database, stage, s)
    wanted = [c for c in candidates if "reused" in c and done.get(c["candidate_id"]) != c["fingerprint"]
              and done.get(c["reused"]["candidate_id"]) == c["reused"]["fingerprint"]]
    if not wanted:
        return []
    rows = configured_rows(database.evaluations(stage), s)
    copied, frames = [], []
    for c in wanted:
        src = c["reused"]
        part = rows[(rows["candidate_id"] == src["candidate_id"]) & (rows["model_fingerprint"] == src["fingerprint"])]
        part = part.assign(candidate_id=c["candidate_id"], kind="seed", model_fingerprint=c["fingerprint"])
        part["alpha"] = [dict(c["alpha"])] * len(part)
        frames.append(part)
        copied.append(c["candidate_id"])
    database.upsert_evaluations(pd.concat(frames, ignore_index=True))
    return copied


def mixture_evidence(design: dict, measured_ids) -> dict:
    """``mixture.json``'s ``evidence``: of the mixtures the fit used (``measured_ids``: seed design and rounds),
    which were reused from earlier evaluations (and from where) and which were scored for this design, with
    counts; the earlier evaluations not mixed into the fit, and why; the domains added and removed."""
    summary = design.get("evidence") or {"origin": SEED_ORIGIN, "new_domains": [], "removed_domains": [],
                                         "reused": [], "not_used": []}
    measured = [str(c) for c in measured_ids]
    reused = [r for r in summary["reused"] if r["candidate_id"] in set(measured)]
    new = [c for c in measured if c not in {r["candidate_id"] for r in reused}]
    return {"origin": summary["origin"], "new_domains": summary["new_domains"],
            "removed_domains": summary["removed_domains"],
            "counts": {"reused": len(reused), "new": len(new), "not_used": len(summary["not_used"])},
            "reused": reused, "new": new, "not_used": summary["not_used"]}
