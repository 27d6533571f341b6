"""The validation protocol's record: its hash, the ledger of attempts, and RegMix's independent swarm.

**Hash.** ``protocol_hash`` digests the protocol (metric, seeds, arms, confidence, swarm) together with the
settings that decide its runs (base, corpora, recipe, trainer, benchmarks, search, the chosen mixture). It is
written into the report header and stored with every quality run.

**Ledger.** One per stage: the attempts judged (or registered) on it, oldest first, each with its hash, the
protocol, the UTC time it was registered and judged and its reason. ``register_attempt`` is called before
any quality run trains:

- the same hash as an earlier attempt: that attempt goes on (resume, or the same judgment again);
- a new hash while the latest attempt is not judged yet (nothing seen): a new attempt, the old one kept as
  ``superseded``;
- a new hash after the latest attempt was judged: ``ProtocolChangedError``, unless ``reason`` (settings:
  ``validation.protocol.new_attempt``) names a new attempt; it is then recorded, dated, beside the old ones.

**Swarm.** RegMix proper fits its regressor on its own trained runs: ``regmix_swarm`` draws them from
Dirichlet(c · prior) with a fixed seed. It reads neither the validation design nor the search's candidates, and
a draw within ``SWARM_MIN_L1`` (L1) of the chosen mixture is drawn again, so the peer is never handed the
answer it is compared with.
"""

from __future__ import annotations

import copy
import hashlib
import json
from typing import Mapping, Sequence

import numpy as np

from mergemix_dagster.core.errors import ProtocolChangedError, ProtocolError

#: a swarm draw this close (L1) to the chosen mixture is redrawn
SWARM_MIN_L1 = 0.05
#: draws tried per swarm run before giving up (only a prior concentrated on the chosen mixture gets there)
SWARM_MAX_TRIES = 1000


def protocol_hash(identity: Mapping) -> str:
    """16 hex digits of the SHA-256 of ``identity`` as canonical JSON (sorted keys)."""
    text = json.dumps(identity, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def register_attempt(
    ledger: Mapping | None, digest: str, protocol: Mapping, reason: str | None, now: str
) -> tuple[dict, dict]:
    """The ledger with the attempt for ``digest`` registered, and that attempt (see the module docstring)."""
    out = copy.deepcopy(dict(ledger)) if ledger else {"attempts": []}
    attempts = out.setdefault("attempts", [])
    for attempt in attempts:
        if attempt["hash"] == digest:
            return out, attempt
    latest = attempts[-1] if attempts else None
    if latest is not None and latest.get("judged_at"):
        used = {a.get("reason") for a in attempts}
        if not reason or reason in used:
            raise ProtocolChangedError(
                f"the validation protocol changed (hash {latest['hash']} -> {digest}) after attempt "
                f"{latest['number']} was judged on {latest['judged_at']}: judging the same runs on another "
                "yardstick is a new attempt. Set validation.protocol.new_attempt to its reason (a reason not "
                f"used before: {sorted(r for r in used if r)}) to record it, dated, beside the old one; the "
                "old attempt's results stay as they were"
            )
    if latest is not None and not latest.get("judged_at"):
        latest["superseded_at"] = now
    attempt = {
        "number": len(attempts) + 1,
        "hash": digest,
        "protocol": dict(protocol),
        "reason": reason or ("first attempt" if not attempts else "protocol changed before any result was judged"),
        "registered_at": now,
        "judged_at": None,
    }
    attempts.append(attempt)
    return out, attempt


def mark_judged(ledger: Mapping, digest: str, now: str, runs: Sequence[str]) -> dict:
    """The ledger with attempt ``digest`` judged at ``now`` (the first time only) on ``runs`` (run ids)."""
    out = copy.deepcopy(dict(ledger))
    for attempt in out.get("attempts", []):
        if attempt["hash"] == digest:
            attempt["judged_at"] = attempt.get("judged_at") or now
            attempt["runs"] = sorted(set(runs))
            return out
    raise ProtocolError(f"attempt {digest} is not registered in the ledger; register it before judging")


def regmix_swarm(
    domains: Sequence[str],
    prior: Mapping[str, float],
    n: int,
    concentration: float,
    seed: int,
    exclude: Sequence[Mapping[str, float]] = (),
) -> list[dict[str, float]]:
    """``n`` mixtures drawn from Dirichlet(concentration · prior) with ``seed``; a draw within ``SWARM_MIN_L1``
    of a mixture in ``exclude`` (the chosen one) is drawn again. The draws depend on nothing else."""
    if n < 1:
        raise ProtocolError(f"a RegMix swarm needs at least 1 run, got {n}")
    if not concentration > 0:
        raise ProtocolError(f"the swarm's Dirichlet concentration must be positive, got {concentration}")
    p = np.array([float(prior.get(d, 0.0)) for d in domains])
    if not (np.isfinite(p).all() and p.sum() > 0 and (p >= 0).all()):
        raise ProtocolError(f"the swarm's prior must be non-negative with a positive sum, got {dict(prior)}")
    alpha = np.clip(concentration * p / p.sum(), 1e-3, None)  # a domain with no tokens still gets a sliver
    away = np.array([[float(m.get(d, 0.0)) for d in domains] for m in exclude]).reshape(-1, len(domains))
    rng = np.random.default_rng(seed)
    out: list[dict[str, float]] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > SWARM_MAX_TRIES * n:
            raise ProtocolError(f"no swarm draw lands {SWARM_MIN_L1} (L1) away from the chosen mixture in "
                                f"{tries - 1} tries; raise validation.protocol.regmix_concentration's spread")
        x = rng.dirichlet(alpha)
        x = x / x.sum()
        if len(away) and np.abs(away - x).sum(axis=1).min() < SWARM_MIN_L1:
            continue
        out.append({d: float(v) for d, v in zip(domains, x)})
    return out


__all__ = ["SWARM_MIN_L1", "protocol_hash", "register_attempt", "mark_judged", "regmix_swarm"]
