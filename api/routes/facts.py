"""Writes: signed facts, one endpoint per command family, and a batch endpoint.

Every write is a DSSE envelope (``docs/integration.md`` shows how to make one) whose signed
payload names the caller as its actor: a token lets a principal in, its key proves each fact.
The fact must belong to the endpoint's family (``POST /v1/work`` takes ``work.*`` facts), and
then goes through the ledger's own checks (signature, key, time, the domain rules). An
accepted fact answers 201 with its log position; the same envelope again (or the same
idempotency key with the same fact) answers 200 with the first result and records nothing.
A refusal is a problem document naming the broken rule; nothing is recorded.

``POST /v1/batch`` takes up to 1,000 envelopes of any family, recorded in one transaction,
each accepted or refused on its own, answered in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from api.deps import PrincipalDep, RuntimeDep
from api.problems import refusal_problem
from api.runtime import MAX_BATCH
from domain.errors import Refusal
from domain.service import SUBMITTED_TYPES, Appended
from signing.facts import Fact

router = APIRouter(prefix="/v1", tags=["facts"])

#: the command families: the endpoint of each fact type, by the prefix of its name
FAMILY_OF_PREFIX: dict[str, str] = {
    "org": "organisation",
    "role": "organisation",
    "employee": "employees",
    "key": "keys",
    "policy": "publications",
    "catalogue": "publications",
    "work": "work",
    "assessment": "assessments",
    "score": "adjustments",
    "survey": "surveys",
    "discipline": "conduct",
    "conduct": "conduct",
    "period": "periods",
    "appeal": "appeals",
    "hr": "hr-decisions",
    "inspection": "inspections",
    "document": "attestations",
}


def family_of(fact_type: str) -> str:
    """The endpoint (``/v1/<family>``) that takes ``fact_type``."""
    return FAMILY_OF_PREFIX[fact_type.split(".", 1)[0]]


#: the fact types each endpoint takes: every type a signer may submit, by family
FAMILIES: dict[str, tuple[str, ...]] = {}
for _type in SUBMITTED_TYPES:
    FAMILIES.setdefault(family_of(_type), ())
    FAMILIES[family_of(_type)] += (_type,)


class Signature(BaseModel):
    model_config = ConfigDict(extra="forbid")
    keyid: str = Field(min_length=1, max_length=256)
    sig: str = Field(min_length=1, max_length=512, description="base64 Ed25519 signature")


class Envelope(BaseModel):
    """A DSSE envelope: the base64 payload (the fact, canonical JSON) and its signature."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "payloadType": "application/vnd.kpi-ledger.fact+json",
                "payload": "eyJhY3RvciI6Imxhbi5uZ3V5ZW4iLC4uLn0=",
                "signatures": [{"keyid": "lan.nguyen+8f2c1a0b", "sig": "MEUCIQ..."}],
            }
        },
    )
    payloadType: str = Field(min_length=1, max_length=200)
    payload: str = Field(min_length=1, max_length=1_000_000)
    signatures: list[Signature] = Field(min_length=1, max_length=8)

    def raw(self) -> bytes:
        return self.model_dump_json().encode()


class Derived(BaseModel):
    seq: int
    type: str


class Accepted(BaseModel):
    """Where an accepted fact landed."""

    seq: int = Field(description="its position in the log")
    type: str
    stream: str
    version: int
    nonce: str
    duplicate: bool = Field(description="true: recorded before, this answer is the first one")
    derived: list[Derived] = Field(description="facts the ledger signed and appended after it")
    receipt: str = Field(description="where its inclusion proof is, once a checkpoint seals it")


class BatchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    envelopes: list[Envelope] = Field(min_length=1, max_length=MAX_BATCH)


class BatchItem(BaseModel):
    index: int
    status: int = Field(description="201 accepted, 200 a duplicate, or the refusal's status")
    accepted: Accepted | None = None
    problem: dict[str, Any] | None = Field(None, description="RFC 9457 problem details")


class BatchOut(BaseModel):
    accepted: int
    refused: int
    results: list[BatchItem]


def accepted(outcome: Appended) -> Accepted:
    return Accepted(
        seq=outcome.seq,
        type=outcome.type,
        stream=outcome.stream,
        version=outcome.version,
        nonce=outcome.nonce,
        duplicate=outcome.duplicate,
        derived=[Derived(seq=d.seq, type=d.type) for d in outcome.derived],
        receipt=f"/v1/receipts/{outcome.seq}",
    )


def _screen(caller: str, family: str | None) -> Callable[[Fact], None]:
    """Refuse a fact not signed by the caller, or not of the endpoint's family."""
    types = FAMILIES.get(family, ()) if family is not None else None

    def screen(fact: Fact) -> None:
        if fact.actor != caller:
            raise Refusal(
                f"the fact is signed as {fact.actor!r} but the token is {caller!r}'s:"
                " a principal submits only facts it signs itself",
                rule="principal.not_the_actor",
                fact_type=fact.type,
                actor=fact.actor,
            )
        if types is not None and fact.type not in types:
            where = FAMILY_OF_PREFIX.get(fact.type.split(".", 1)[0])
            hint = f"; post it to /v1/{where}" if where else ""
            raise Refusal(
                f"/v1/{family} takes {', '.join(types)}, not {fact.type}{hint}",
                rule="request.wrong_endpoint",
                fact_type=fact.type,
                actor=fact.actor,
            )

    return screen


async def _write_one(
    rt: Any, caller: str, family: str, envelope: Envelope, response: Response
) -> Accepted:
    prepared = await run_in_threadpool(rt.service.precheck, [envelope.raw()])
    [outcome] = await rt.writer.submit_async(prepared, _screen(caller, family))
    if isinstance(outcome, Refusal):
        raise refusal_problem(outcome)
    response.status_code = 200 if outcome.duplicate else 201
    return accepted(outcome)


def _family_route(family: str) -> None:
    types = FAMILIES[family]

    async def write(
        envelope: Envelope, rt: RuntimeDep, caller: PrincipalDep, response: Response
    ) -> Accepted:
        return await _write_one(rt, caller, family, envelope, response)

    router.add_api_route(
        f"/{family}",
        write,
        methods=["POST"],
        status_code=201,
        response_model=Accepted,
        operation_id=f"post_{family.replace('-', '_')}",
        summary=f"Record a {family} fact",
        description=f"Takes a DSSE envelope of one of: {', '.join(types)}.",
        responses={
            200: {"description": "already recorded: the first result", "model": Accepted},
            401: {"description": "no valid token"},
            403: {"description": "signed by someone else, or a role or scope the rules need"},
            409: {"description": "replayed nonce, or a rule on the ledger's state"},
            422: {"description": "malformed envelope, bad signature or key, invalid fact"},
        },
    )


for _family in FAMILIES:
    _family_route(_family)


@router.post(
    "/batch",
    response_model=BatchOut,
    operation_id="post_batch",
    summary="Record up to 1,000 facts of any family, each accepted or refused on its own",
)
async def batch(body: BatchIn, rt: RuntimeDep, caller: PrincipalDep) -> BatchOut:
    prepared = await run_in_threadpool(rt.service.precheck, [e.raw() for e in body.envelopes])
    outcomes = await rt.writer.submit_async(prepared, _screen(caller, None))
    results = []
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, Refusal):
            problem = refusal_problem(outcome)
            results.append(BatchItem(index=i, status=problem.status, problem=problem.body()))
        else:
            status = 200 if outcome.duplicate else 201
            results.append(
                BatchItem(index=i, status=status, accepted=accepted(outcome), problem=None)
            )
    refused = sum(1 for r in results if r.problem is not None)
    return BatchOut(accepted=len(results) - refused, refused=refused, results=results)
