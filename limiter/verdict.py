"""Several limits on one request, decided together: all or nothing.

The request is admitted when every enforced limit allows it; then every limit that allows it is charged,
shadow ones too (a shadow limit never changes the answer, and is charged only when the request is
admitted); otherwise none is. ``compose`` is the reference model, the single-limit models composed; both
backends build their Verdict with ``verdict_of`` from what each limit found, so they agree with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from tornado_rate_limiter.limiter.algorithms import AnyPolicy, algorithm_for
from tornado_rate_limiter.limiter.bucket import Decision


class Charge(NamedTuple):
    """One limit of a request: ``cost`` of ``key``'s quota under ``policy``; ``enforced`` False: shadow."""

    key: str
    policy: AnyPolicy
    cost: float = 1
    enforced: bool = True


class Verdict(NamedTuple):
    """The answer to a request with several limits: admitted or not, and each limit's own Decision (in the
    order of the charges; ``allowed`` says whether that limit alone would admit the request)."""

    allowed: bool
    decisions: tuple[Decision, ...]
    charged: tuple[bool, ...]
    degraded: bool = False


class Outcome(NamedTuple):
    """What one limit found: whether it allows, its state after charging (when it allows) and before (a
    backend may leave it None for a limit that is charged: nothing reads it then)."""

    allowed: bool
    after: Any
    before: Any


def check_charges(charges: Sequence[Charge]) -> list[float]:
    """The costs as floats; ValueError for a bad cost, or for one key under one policy name twice."""
    seen: set[tuple[str, str]] = set()
    costs = []
    for charge in charges:
        costs.append(algorithm_for(charge.policy).validate_cost(charge.cost, charge.policy))
        if (charge.key, charge.policy.name) in seen:
            message = f"policy {charge.policy.name!r} is charged twice to {charge.key!r} in one request"
            raise ValueError(message)
        seen.add((charge.key, charge.policy.name))
    return costs


def outcome(charge: Charge, cost: float, state: Any, now: float) -> Outcome:
    """What the model of ``charge``'s algorithm finds for a key in ``state`` (None: fresh) at ``now``."""
    algorithm = algorithm_for(charge.policy)
    allowed, kept = algorithm.take(state, now, charge.policy, cost)
    return Outcome(allowed, kept, state if state is not None else algorithm.fresh(now, charge.policy))


def verdict_of(charges: Sequence[Charge], costs: Sequence[float], outcomes: Sequence[Outcome], now: float) -> Verdict:
    """The Verdict, from each limit's outcome at ``now``."""
    admitted = all(outcome.allowed for outcome, charge in zip(outcomes, charges, strict=True) if charge.enforced)
    decisions, charged = [], []
    for charge, cost, outcome in zip(charges, costs, outcomes, strict=True):
        algorithm = algorithm_for(charge.policy)
        if outcome.allowed and admitted:
            decisions.append(algorithm.decide(True, outcome.after, now, charge.policy, cost))
            charged.append(True)
            continue
        uncharged = algorithm.decide(False, outcome.before, now, charge.policy, cost)
        if outcome.allowed:  # it would admit the request, but another limit denied it: nothing to wait for
            uncharged = uncharged._replace(allowed=True, retry_after=0.0)
        decisions.append(uncharged)
        charged.append(False)
    return Verdict(admitted, tuple(decisions), tuple(charged))


def compose(charges: Sequence[Charge], states: Sequence[Any], now: float) -> tuple[Verdict, list[Any]]:
    """The reference model: the Verdict for keys in ``states`` (model states, None for fresh), and the
    states to keep."""
    costs = check_charges(charges)
    outcomes = [outcome(charge, cost, state, now) for charge, cost, state in zip(charges, costs, states, strict=True)]
    verdict = verdict_of(charges, costs, outcomes, now)
    kept_states = [o.after if charged else s for o, charged, s in zip(outcomes, verdict.charged, states, strict=True)]
    return verdict, kept_states
