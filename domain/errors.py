"""Refusals: every rule a submitted fact can break, as a typed error that records nothing.

Each refusal names the rule (a stable dotted code clients can switch on), the fact type and
the actor when they are known, and says in words what was wrong. ``docs/domain.md`` lists
every rule code with the fact types that can raise it.
"""

from __future__ import annotations


class Refusal(Exception):
    """A submitted fact was refused; nothing was recorded."""

    rule = "fact.refused"
    screened = False  # refused by the submitter's screen, not by the ledger's intake

    def __init__(
        self,
        detail: str,
        *,
        rule: str | None = None,
        fact_type: str | None = None,
        actor: str | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if rule is not None:
            self.rule = rule
        self.fact_type = fact_type
        self.actor = actor

    def as_dict(self) -> dict[str, str | int | None]:
        return {
            "refused": True,
            "rule": self.rule,
            "detail": self.detail,
            "fact_type": self.fact_type,
            "actor": self.actor,
        }

    def __str__(self) -> str:
        who = f" (actor {self.actor!r}, fact {self.fact_type!r})" if self.actor else ""
        return f"[{self.rule}] {self.detail}{who}"


class MalformedFact(Refusal):
    rule = "envelope.malformed"


class SignatureRefused(Refusal):
    rule = "signature.invalid"


class KeyRefused(Refusal):
    rule = "key.not_valid"


class ReplayRefused(Refusal):
    rule = "envelope.replayed"

    def __init__(self, detail: str, *, original_seq: int | None, **kwargs: str | None) -> None:
        super().__init__(detail, **kwargs)
        self.original_seq = original_seq

    def as_dict(self) -> dict[str, str | int | None]:
        return {**super().as_dict(), "original_seq": self.original_seq}


class UnknownFactType(Refusal):
    rule = "fact.unknown_type"


class InvalidFact(Refusal):
    rule = "fact.invalid"


class AlreadyInitialised(Refusal):
    rule = "ledger.already_initialised"


class RuleBroken(Refusal):
    """A domain rule refused the fact; ``rule`` is one of the codes below."""

    rule = "domain.rule"


# Rule codes of the evaluation domain (the ``rule`` of a RuleBroken).
UNKNOWN_REFERENCE = "reference.unknown"  # names an employee, unit, item... the ledger lacks
ALREADY_EXISTS = "reference.taken"  # creates something whose id is in use
ROLE_MISSING = "role.missing"  # the actor holds no such role
OUTSIDE_SCOPE = "scope.outside"  # the role does not cover the unit concerned
SELF_APPROVAL = "separation.self_approval"  # acting on one's own work or score
SAME_PERSON = "separation.same_person"  # second approver = proposer, requester = approver
NOT_INDEPENDENT = "separation.not_independent"  # appeal reviewer involved in the contested act
WRONG_STATE = "state.invalid"  # the act does not follow from the current state
PERIOD_CLOSED = "period.closed"  # after close, without an approved late-entry request
PERIOD_OPEN = "period.not_ended"  # closing a period that has not ended
DEADLINE_PASSED = "deadline.passed"  # a policy deadline has passed
BOUND_EXCEEDED = "bound.exceeded"  # a criterion above its maximum, an adjustment too large
NO_POLICY = "policy.none"  # no published policy applies to the unit on that day
POLICY_INVALID = "policy.invalid"  # the rule pack does not validate
RETROACTIVE = "publication.retroactive"  # a policy/catalogue taking effect in the past
VERSION_ORDER = "publication.version"  # versions must follow one another
NOT_IN_CATALOGUE = "catalogue.unknown_item"  # no such item in the effective catalogue
APPEAL_LATE = "appeal.late"  # filed after the policy's deadline
SECOND_REVIEW = "appeal.second_review"  # appealing a decided appeal or a decided act
ALREADY_CONTESTED = "appeal.already_contested"  # the act is under a pending appeal
NOT_CONTESTABLE = "appeal.not_contestable"  # the position is no act one can appeal
NOT_ASSIGNED = "appeal.not_assigned"  # decided by someone other than the assigned reviewer
TIME_WINDOW = "time.out_of_window"  # the fact's time is too far from the ledger's clock
IDEMPOTENCY_CONFLICT = "idempotency.conflict"  # a key reused for a different fact
LEDGER_ONLY = "ledger.derived_only"  # a fact type only the ledger itself may sign


class WriteFailed(Exception):
    """A batch could not be written, and the service knows whether any of it was recorded.

    ``recorded`` is False when nothing of the batch reached the log (the failure came before
    the transaction, or the service checked afterwards that none of its envelopes is in the
    log); None when the service cannot tell (the commit's outcome is unknown: the client
    retries with the same envelopes, and a duplicate is answered with its first position);
    True when the batch is stored but its answer could not be made (its positions could not
    be read): the same retry tells the client where it landed.
    """

    def __init__(self, detail: str, *, recorded: bool | None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.recorded = recorded
