"""Refusals: every rule a submitted fact can break, as a typed error that records nothing.

Each refusal names the rule (a stable dotted code clients can switch on), the fact type and
the actor when they are known, and says in words what was wrong.
"""

from __future__ import annotations


class Refusal(Exception):
    """A submitted fact was refused; nothing was recorded."""

    rule = "fact.refused"

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
