"""Bad input, command by command: every fact type of every domain module is refused with the
exact rule for each way its input can be wrong, and a refusal leaves the log as it was.

One signed world (``Scene``) is built per test module on SQLite: two wards, people in every
role (and in the wrong ones), work items in every state, assessments, adjustments, conduct,
a closed month with late-entry requests, appeals and HR decisions in every state. The clock
then stands at ``NOW``, where each fact type's *baseline* (``BASE``) would be accepted:
``test_each_baseline_would_be_accepted`` checks that with a dry run of every intake check
(key, signature, time window, the handler's rules) that records nothing. Every case changes
one thing about its baseline and expects one rule:

* generated from the fact type's pydantic model: each required field missing, each field of
  the wrong JSON type, an unknown field → ``fact.invalid``, with ``data.<field>`` named;
* written by hand in ``RULES``: for every fact type, one entry per category of
  ``CATEGORIES`` (unknown reference, wrong role, other unit, after a deadline, after close,
  separation of duties, state machine, bounds), holding cases or a ``Skip`` saying why the
  category makes no sense for that command.

``test_every_fact_type_has_bad_input_cases`` fails as soon as a domain module gains a fact
type without cases here. Refused facts record nothing, so all cases share the module's world;
``test_a_subset_on_both_backends`` replays a representative subset on PostgreSQL too.
"""

from __future__ import annotations

import copy
import datetime as dt
import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import domain
from domain.context import Context, Recording
from domain.errors import Refusal
from domain.policy import shipped_policy
from domain.schemas import FactData
from domain.service import DOMAIN_MODULES, Appended, TimeWindow
from signing.dsse import Envelope, Signature
from signing.errors import CanonicalFormError
from signing.facts import read_fact, sign_fact
from signing.keys import SigningKey
from tests.domain.world import World, at, sha

LAN, MAI, THU, KHOA = "lan.nguyen", "mai.tran", "thu.hr", "khoa.le"
NOW = at("2026-02-05")  # 10:00 in Vietnam; January of KH-W1 closed on 2 February
SCORES = {"political": "5", "ethics": "5", "discipline": "5", "competence": "5", "innovation": "4"}
TEXT = "Theo biên bản kiểm tra"


def _domain_handlers() -> dict[str, type[FactData]]:
    """Every fact type of every ``domain`` module that has ``HANDLERS``, with its model."""
    found: dict[str, type[FactData]] = {}
    for info in pkgutil.iter_modules(domain.__path__):
        module = importlib.import_module(f"domain.{info.name}")
        for fact_type, (model, _handler) in getattr(module, "HANDLERS", {}).items():
            found[fact_type] = model
    return found


FACT_TYPES = _domain_handlers()


# --------------------------------------------------------------------------------------------
# The world every case runs in
# --------------------------------------------------------------------------------------------


@dataclass
class Scene:
    """A World and the log positions / nonces of the acts the cases name."""

    w: World
    seq: dict[str, int] = field(default_factory=dict)
    nonce: dict[str, str] = field(default_factory=dict)

    def do(self, name: str | None, who: str, fact_type: str, data: dict[str, Any]) -> Appended:
        out = self.w.do(who, fact_type, data)
        if name is not None:
            assert name not in self.seq, name
            self.seq[name], self.nonce[name] = out.seq, out.nonce
        return out


def build_scene(db_url: str) -> Scene:
    w = World(db_url)
    s = Scene(w)
    w.organise()
    assert w.service.ledger_signer is not None
    w.keys["ledger"] = w.service.ledger_signer  # to sign ledger-only facts in the cases
    # Khánh Hòa's pack (declarations due before the 25th) for ward 2.
    w.do("admin", "policy.published", {"scope": "KH-W2", "document": shipped_policy("khanh-hoa")})
    for name, unit in ((LAN, "KH-W1-OSS"), (MAI, "KH-W1-OSS"), (THU, "KH-W1-OSS"), (KHOA, "KH-W2")):
        w.employ(name, unit)
    for name in ("w2.hr", "w2.sup", "w2.insp", "w2.sys", "vy.sup", "old.rev", "gone.rev", "nobody"):
        w.person(name)
    for principal, role, unit in (
        ("w2.hr", "hr", "KH-W2"),  # HR, supervisor, ... of the other ward: scope.outside
        ("w2.sup", "supervisor", "KH-W2"),
        ("w2.insp", "inspector", "KH-W2"),
        ("w2.sys", "integrator", "KH-W2"),
        ("vy.sup", "supervisor", "KH-W1-OSS"),  # a supervisor who also reviews appeals
        ("vy.sup", "reviewer", "KH-W1"),
        ("old.rev", "reviewer", "KH-W1"),  # loses KH-W1 after being assigned an appeal
        ("old.rev", "reviewer", "KH-W2"),
        ("gone.rev", "reviewer", "KH-W1"),  # loses every reviewer role
        (THU, "hr", "KH-W1"),  # an HR officer who is also an employee of the ward
    ):
        w.do("hoa.hr", "role.granted", {"principal": principal, "role": role, "unit": unit})
    w.do(
        "hoa.hr",
        "employee.leave_recorded",
        {
            "employee": LAN,
            "leave": "lv-1",
            "kind": "sick",
            "start": "2026-03-02",
            "end": "2026-03-06",
        },
    )

    # January: items in every state, then the close.
    w.now = at("2026-01-05")
    jan = ["jan-open", "jan-declared", "jan-approved", "jan-qf", "jan-rej-vy"]
    jan += [f"jan-rej{i}" for i in range(4)] + [f"jan-delay{i}" for i in range(1, 5)]
    for item in jan:
        s.do(
            f"assign:{item}",
            "tuan.sup",
            "work.assigned",
            {
                "item": item,
                "employee": LAN,
                "code": "OSS-01",
                "period": "2026-01",
                "due": "2026-01-25",
            },
        )
    w.now = at("2026-01-20")
    for item in jan[1:]:
        w.do(LAN, "work.declared", {"item": item, "done_at": "2026-01-19T03:00:00Z"})
    w.now = at("2026-01-22")
    for item in ("jan-approved", "jan-qf"):
        s.do(f"approve:{item}", "tuan.sup", "work.approved", {"item": item})
    for i in range(4):
        s.do(
            f"reject:jan-rej{i}",
            "tuan.sup",
            "work.rejected",
            {"item": f"jan-rej{i}", "reason": "x"},
        )
    s.do("reject:jan-rej-vy", "vy.sup", "work.rejected", {"item": "jan-rej-vy", "reason": "x"})
    s.do(
        "qf:jan-qf",
        "tuan.sup",
        "work.quality_failed",
        {"item": "jan-qf", "severity": "major", "reason": "sai mẫu"},
    )
    for i in range(1, 5):
        s.do(
            f"delay:jan-delay{i}",
            "tuan.sup",
            "work.delayed",
            {"item": f"jan-delay{i}", "days": 1, "reason": "trễ"},
        )
    w.do(
        "tuan.sup",
        "assessment.supervisor_assessed",
        {"employee": LAN, "period": "2026-01", "scores": SCORES},
    )
    w.do("hoa.hr", "score.adjustment_proposed", _adjustment("adj-jan", LAN, "general", "0.5", "01"))
    w.now = at("2026-02-02")
    s.do(
        "close",
        "hoa.hr",
        "period.closed",
        {"agency": "KH-W1", "period": "2026-01", "snapshot": sha("jan")},
    )

    # February (open): items, assessments, adjustments, conduct, a rating.
    def feb(item: str, employee: str = LAN, by: str = "tuan.sup", due: str = "2026-02-20") -> None:
        s.do(
            f"assign:{item}",
            by,
            "work.assigned",
            {"item": item, "employee": employee, "code": "OSS-01", "period": "2026-02", "due": due},
        )

    for item in ("feb-assigned", "feb-declared", "feb-approved"):
        feb(item)
    feb("thu-feb", THU)
    feb("feb-sys", by="oss.system")
    feb("w2-feb", KHOA, by="w2.sup", due="2026-02-27")
    w.now = at("2026-02-03")
    for item in ("feb-declared", "feb-approved"):
        w.do(LAN, "work.declared", {"item": item, "done_at": "2026-02-02T09:00:00Z"})
    w.do("tuan.sup", "work.approved", {"item": "feb-approved"})
    w.do("oss.system", "work.declared", {"item": "feb-sys", "done_at": "2026-02-02T09:00:00Z"})
    for who, scores in ((LAN, SCORES), (MAI, {**SCORES, "innovation": "5"}), (THU, SCORES)):
        w.do(
            "tuan.sup",
            "assessment.supervisor_assessed",
            {"employee": who, "period": "2026-02", "scores": scores},
        )
    for adjustment, who, criterion, delta in (
        ("adj-a", LAN, "ethics", "0.5"),
        ("adj-d", LAN, "general", "-1"),
        ("adj-p", LAN, "ethics", "0.5"),
        ("adj-m1", MAI, "ethics", "1"),
        ("adj-m2", MAI, "ethics", "1"),
        ("adj-thu", THU, "ethics", "0.5"),
    ):
        w.do("hoa.hr", "score.adjustment_proposed", _adjustment(adjustment, who, criterion, delta))
    s.do("approve:adj-a", "minh.hr", "score.adjustment_approved", _decided("adj-a", LAN))
    s.do("approve:adj-m1", "minh.hr", "score.adjustment_approved", _decided("adj-m1", MAI))
    w.do("minh.hr", "score.adjustment_declined", {**_decided("adj-d", LAN), "reason": "x"})
    for discipline, who, level in (
        ("d-1", LAN, "reprimand"),
        ("d-2", LAN, "warning"),
        ("d-thu", THU, "reprimand"),
    ):
        w.do(
            "hoa.hr",
            "discipline.imposed",
            {
                "discipline": discipline,
                "employee": who,
                "level": level,
                "decided_on": "2026-02-02",
                "legal_basis": TEXT,
                "reason": TEXT,
            },
        )
    w.do(
        "hoa.hr",
        "discipline.annulled",
        {"discipline": "d-2", "employee": LAN, "reason": TEXT, "legal_basis": TEXT},
    )
    w.do(
        "binh.insp",
        "conduct.concluded",
        {
            "conclusion": "c-1",
            "employee": LAN,
            "kind": "moral_degradation",
            "decided_on": "2026-02-02",
            "legal_basis": TEXT,
        },
    )
    w.do(
        "oss.system",
        "survey.rated",
        {"rating": "r-0", "employee": LAN, "period": "2026-02", "score": "90", "responses": 3},
    )
    w.do(
        "binh.insp",
        "inspection.finding_recorded",
        {"finding": "f-1", "unit": "KH-W1", "severity": "observation", "summary": TEXT},
    )

    # Late entries into the closed January.
    for request, who, employee, until in (
        ("le-ok", LAN, LAN, "2026-03-01T00:00:00Z"),
        ("le-pending", LAN, LAN, "2026-03-01T00:00:00Z"),
        ("le-expired", "tuan.sup", LAN, "2026-02-04T00:00:00Z"),
        ("le-mai", "hoa.hr", MAI, "2026-03-01T00:00:00Z"),
        ("le-thu", "tuan.sup", THU, "2026-03-01T00:00:00Z"),
    ):
        w.do(
            who,
            "period.late_entry_requested",
            {
                "request": request,
                "agency": "KH-W1",
                "period": "2026-01",
                "employee": employee,
                "reason": TEXT,
                "until": until,
            },
        )
    for request in ("le-ok", "le-expired"):
        w.do("hoa.hr", "period.late_entry_approved", {"request": request, "agency": "KH-W1"})

    # HR decisions resting on January.
    for decision, who in (
        ("hd-p", LAN),
        ("hd-w", LAN),
        ("hd-i", LAN),
        ("hd-pc", LAN),
        ("hd-over", LAN),
        ("hd-thu", THU),
        ("hd-mai", MAI),
    ):
        s.do(
            f"propose:{decision}",
            "hoa.hr",
            "hr.decision_proposed",
            {
                "decision": decision,
                "employee": who,
                "kind": "reward",
                "grounds": ["2026-01"],
                "details": TEXT,
            },
        )
    w.do("hoa.hr", "hr.decision_withdrawn", {"decision": "hd-w", "reason": TEXT})
    w.do("minh.hr", "hr.decision_issued", {"decision": "hd-i"})

    # Appeals in every state.
    w.now = at("2026-02-04")

    def appeal(name: str, contested: list[str], who: str = LAN) -> None:
        w.do(
            who,
            "appeal.filed",
            {"appeal": name, "contested": [s.seq[c] for c in contested], "grounds": TEXT},
        )

    def assign(name: str, reviewer: str, who: str = LAN) -> None:
        w.do("hoa.hr", "appeal.assigned", {"appeal": name, "appellant": who, "reviewer": reviewer})

    def decide(name: str, rulings: dict[str, str], who: str = LAN) -> None:
        s.do(
            f"decide:{name}",
            "an.rev",
            "appeal.decided",
            {
                "appeal": name,
                "appellant": who,
                "rulings": [
                    {"act": s.seq[c], "ruling": r, "reason": TEXT} for c, r in rulings.items()
                ],
                "reasons": TEXT,
            },
        )

    appeal("ap-filed", ["reject:jan-rej1", "reject:jan-rej-vy"])
    appeal("ap-decided", ["qf:jan-qf", "reject:jan-rej2"])
    assign("ap-decided", "an.rev")
    decide("ap-decided", {"qf:jan-qf": "upheld", "reject:jan-rej2": "overturned"})
    appeal("ap-assigned", ["delay:jan-delay1", "reject:jan-rej3"])
    assign("ap-assigned", "an.rev")
    appeal("ap-withdrawn", ["delay:jan-delay2"])
    w.do(LAN, "appeal.withdrawn", {"appeal": "ap-withdrawn", "appellant": LAN, "reason": TEXT})
    appeal("ap-oldrev", ["delay:jan-delay3"])
    assign("ap-oldrev", "old.rev")
    appeal("ap-gone", ["delay:jan-delay4"])
    assign("ap-gone", "gone.rev")
    appeal("ap-hd", ["propose:hd-pc"])
    appeal("ap-hd2", ["propose:hd-over"])
    assign("ap-hd2", "an.rev")
    decide("ap-hd2", {"propose:hd-over": "overturned"})
    appeal("ap-mai", ["close"], MAI)  # sets Mai's January classification aside
    assign("ap-mai", "an.rev", MAI)
    decide("ap-mai", {"close": "overturned"}, MAI)
    for principal in ("old.rev", "gone.rev"):
        w.do(
            "hoa.hr",
            "role.revoked",
            {"principal": principal, "role": "reviewer", "unit": "KH-W1"},
        )
    w.now = NOW
    return s


def _adjustment(
    adjustment: str, employee: str, criterion: str, delta: str, month: str = "02"
) -> dict[str, Any]:
    return {
        "adjustment": adjustment,
        "employee": employee,
        "period": f"2026-{month}",
        "criterion": criterion,
        "delta": delta,
        "reason": TEXT,
        "legal_basis": TEXT,
    }


def _decided(adjustment: str, employee: str, month: str = "02") -> dict[str, Any]:
    return {"adjustment": adjustment, "employee": employee, "period": f"2026-{month}"}


def _ruling(
    s: Scene, act: str, act_type: str, ruling: str, target: dict[str, Any]
) -> dict[str, Any]:
    return {
        "appeal": "ap-x",
        "act": s.seq[act],
        "act_nonce": s.nonce[act],
        "act_type": act_type,
        "ruling": ruling,
        "target": target,
    }


def _policy(**changes: Any) -> dict[str, Any]:
    document = shipped_policy("default")
    document.update({"effective_from": "2026-03-01", **changes})
    return document


def _broken_policy(
    path: str, value: Any = None, *, drop: bool = False
) -> Callable[[Scene], dict[str, Any]]:
    """The baseline policy with the value at dotted ``path`` replaced (or dropped)."""

    def make(_s: Scene) -> dict[str, Any]:
        document = _policy()
        *parents, last = path.split(".")
        node = document
        for key in parents:
            node = node[key]
        if drop:
            del node[last]
        else:
            node[last] = value
        return {"document": document}

    return make


CATALOGUE_ITEM = {
    "code": "OSS-03",
    "name": "Trả kết quả",
    "group": "C",
    "hours": "3",
    "positions": ["officer"],
}


# --------------------------------------------------------------------------------------------
# Baselines: one accepted fact per type, at NOW
# --------------------------------------------------------------------------------------------

Data = Mapping[str, Any] | Callable[[Scene], Mapping[str, Any]]

BASE: dict[str, tuple[str, Data]] = {
    "org.unit_created": (
        "hoa.hr",
        {"unit": "KH-W1-NEW", "name": "Tổ mới", "kind": "section", "parent": "KH-W1"},
    ),
    "org.position_defined": ("hoa.hr", {"position": "clerk", "name": "Văn thư", "leader": False}),
    "role.granted": ("hoa.hr", {"principal": "nobody", "role": "inspector", "unit": "KH-W1"}),
    "role.revoked": (
        "hoa.hr",
        {"principal": "tuan.sup", "role": "supervisor", "unit": "KH-W1-OSS"},
    ),
    "employee.registered": (
        "hoa.hr",
        {
            "employee": "new.one",
            "name": "Người mới",
            "unit": "KH-W1-OSS",
            "position": "officer",
            "since": "2026-02-01",
        },
    ),
    "employee.assigned": (
        "hoa.hr",
        {"employee": MAI, "unit": "KH-W1-OSS", "position": "head", "since": "2026-02-01"},
    ),
    "employee.transferred": (
        "hoa.hr",
        {
            "employee": MAI,
            "unit": "KH-W2",
            "position": "officer",
            "since": "2026-02-01",
            "reason": TEXT,
        },
    ),
    "employee.leave_recorded": (
        "hoa.hr",
        {
            "employee": LAN,
            "leave": "lv-2",
            "kind": "maternity",
            "start": "2026-04-01",
            "end": "2026-09-30",
        },
    ),
    "policy.published": ("hoa.hr", lambda s: {"scope": "KH-W1", "document": _policy()}),
    "catalogue.published": (
        "hoa.hr",
        {
            "agency": "KH-W1",
            "version": 2,
            "effective_from": "2026-03-01",
            "items": [CATALOGUE_ITEM],
        },
    ),
    "work.assigned": (
        "tuan.sup",
        {
            "item": "feb-new",
            "employee": LAN,
            "code": "OSS-01",
            "period": "2026-02",
            "due": "2026-02-20",
        },
    ),
    "work.declared": (
        LAN,
        {
            "item": "feb-assigned",
            "done_at": "2026-02-04T03:00:00Z",
            "evidence": [sha("e")],
            "hours": "2",
        },
    ),
    "work.approved": ("tuan.sup", {"item": "feb-declared"}),
    "work.rejected": ("tuan.sup", {"item": "feb-declared", "reason": "thiếu hồ sơ"}),
    "work.quality_failed": (
        "tuan.sup",
        {"item": "feb-approved", "severity": "major", "reason": TEXT},
    ),
    "work.delayed": ("tuan.sup", {"item": "feb-declared", "days": 2, "reason": TEXT}),
    "work.exemption_granted": (
        "hoa.hr",
        {
            "item": "feb-declared",
            "covers": ["progress"],
            "authority": "UBND tỉnh",
            "legal_basis": TEXT,
            "reason": "bão",
        },
    ),
    "work.spot_checked": ("binh.insp", {"item": "feb-approved", "result": "confirmed"}),
    "work.ruling_applied": (
        "ledger",
        lambda s: _ruling(
            s, "delay:jan-delay1", "work.delayed", "exempted", {"item": "jan-delay1"}
        ),
    ),
    "survey.rated": (
        "oss.system",
        {"rating": "r-1", "employee": LAN, "period": "2026-02", "score": "95.5", "responses": 12},
    ),
    "assessment.self_assessed": (LAN, {"employee": LAN, "period": "2026-02", "scores": SCORES}),
    "assessment.supervisor_assessed": (
        "tuan.sup",
        {"employee": LAN, "period": "2026-02", "scores": SCORES},
    ),
    "score.adjustment_proposed": ("hoa.hr", _adjustment("adj-new", LAN, "political", "0.5")),
    "score.adjustment_approved": ("minh.hr", _decided("adj-p", LAN)),
    "score.adjustment_declined": ("minh.hr", {**_decided("adj-p", LAN), "reason": TEXT}),
    "score.ruling_applied": (
        "ledger",
        lambda s: _ruling(
            s,
            "approve:adj-a",
            "score.adjustment_approved",
            "overturned",
            {"employee": LAN, "period": "2026-02", "adjustment": "adj-a"},
        ),
    ),
    "discipline.imposed": (
        "hoa.hr",
        {
            "discipline": "d-new",
            "employee": LAN,
            "level": "reprimand",
            "decided_on": "2026-02-04",
            "legal_basis": TEXT,
            "reason": TEXT,
        },
    ),
    "discipline.annulled": (
        "hoa.hr",
        {"discipline": "d-1", "employee": LAN, "reason": TEXT, "legal_basis": TEXT},
    ),
    "conduct.concluded": (
        "binh.insp",
        {
            "conclusion": "c-new",
            "employee": LAN,
            "kind": "moral_degradation",
            "decided_on": "2026-02-04",
            "legal_basis": TEXT,
        },
    ),
    "inspection.finding_recorded": (
        "binh.insp",
        {
            "finding": "f-new",
            "employee": LAN,
            "period": "2026-02",
            "facts": [3],
            "severity": "minor",
            "summary": TEXT,
        },
    ),
    "period.closed": ("hoa.hr", {"agency": "KH-W2", "period": "2026-01", "snapshot": sha("w2")}),
    "period.late_entry_requested": (
        "tuan.sup",
        {
            "request": "le-new",
            "agency": "KH-W1",
            "period": "2026-01",
            "employee": LAN,
            "reason": TEXT,
            "until": "2026-02-20T00:00:00Z",
        },
    ),
    "period.late_entry_approved": ("hoa.hr", {"request": "le-pending", "agency": "KH-W1"}),
    "period.ruling_applied": (
        "ledger",
        lambda s: _ruling(
            s,
            "close",
            "period.closed",
            "overturned",
            {"agency": "KH-W1", "period": "2026-01", "employee": LAN},
        ),
    ),
    "appeal.filed": (
        LAN,
        lambda s: {"appeal": "ap-new", "contested": [s.seq["reject:jan-rej0"]], "grounds": TEXT},
    ),
    "appeal.assigned": ("hoa.hr", {"appeal": "ap-filed", "appellant": LAN, "reviewer": "an.rev"}),
    "appeal.decided": (
        "an.rev",
        lambda s: {
            "appeal": "ap-assigned",
            "appellant": LAN,
            "rulings": [
                {"act": s.seq["delay:jan-delay1"], "ruling": "exempted", "reason": "lũ"},
                {"act": s.seq["reject:jan-rej3"], "ruling": "overturned", "reason": TEXT},
            ],
            "reasons": TEXT,
        },
    ),
    "appeal.withdrawn": (LAN, {"appeal": "ap-filed", "appellant": LAN, "reason": TEXT}),
    "hr.decision_proposed": (
        "hoa.hr",
        {
            "decision": "hd-new",
            "employee": LAN,
            "kind": "reward",
            "grounds": ["2026-01"],
            "details": TEXT,
        },
    ),
    "hr.decision_issued": ("minh.hr", {"decision": "hd-p"}),
    "hr.decision_withdrawn": ("hoa.hr", {"decision": "hd-p", "reason": TEXT}),
    "hr.ruling_applied": (
        "ledger",
        lambda s: _ruling(
            s, "propose:hd-p", "hr.decision_proposed", "overturned", {"decision": "hd-p"}
        ),
    ),
}


# --------------------------------------------------------------------------------------------
# The cases
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bad:
    """The baseline changed in one way, and the rule that must refuse it.

    ``set`` is merged into the baseline's data (a mapping, or made from the scene), ``drop``
    removes fields, ``edit`` changes a deep copy in place (nested fields); ``who`` signs instead
    of the baseline's actor; ``now`` moves the clock; ``says`` must appear in the refusal.
    """

    label: str
    rule: str
    who: str | None = None
    set: Data | None = None
    drop: tuple[str, ...] = ()
    edit: Callable[[dict[str, Any]], None] | None = None
    now: dt.datetime | None = None
    says: str | None = None


@dataclass(frozen=True)
class Skip:
    """This category of bad input makes no sense for the command, and why."""

    why: str


Entry = list[Bad] | Skip
CATEGORIES = (
    "reference",  # an unknown employee, unit, item, appeal, ... → reference.unknown
    "role",  # an actor without the needed role → role.missing
    "scope",  # the role, but for another agency or section → scope.outside
    "deadline",  # after a policy deadline → appeal.late, deadline.passed
    "closed",  # about a closed period without an approved late entry → period.closed
    "separation",  # self-approval, same person, not independent
    "state",  # the act does not follow from the current state → state.invalid, ...
    "bound",  # a value beyond its bound → bound.exceeded (or fact.invalid from the schema)
)
GENERATED = ("missing", "type", "unknown")

UNKNOWN = "reference.unknown"
INVALID = "fact.invalid"
ROLE = "role.missing"
SCOPE = "scope.outside"
CLOSED = "period.closed"
STATE = "state.invalid"
TAKEN = "reference.taken"
BOUND = "bound.exceeded"
SELF = "separation.self_approval"
SAME = "separation.same_person"
LEDGER = "ledger.derived_only"

NO_DEADLINE = Skip("no policy deadline governs this command")
NO_PERIOD = Skip("the fact concerns no evaluation period, so no close applies")
NO_BOUND = Skip("the data holds no quantity with a bound beyond what the schema checks")
NO_SEPARATION = Skip("the fact concerns no one's own work, score or act")
DERIVED = Skip(
    "signed by the ledger only, derived from an appeal decision that passed its own checks;"
    " any other signer is refused (role)"
)


def _items(**change: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["items"][0].update(change)

    return edit


def _no_item_field(name: str) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        del data["items"][0][name]

    return edit


def _rulings(
    edit_list: Callable[[list[dict[str, Any]]], object],
) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        edit_list(data["rulings"])

    return edit


def _ledger_rules(target_unknown: Mapping[str, Any], state: Entry) -> dict[str, Entry]:
    return {
        "reference": [Bad("unknown target", UNKNOWN, set={"target": target_unknown})],
        "role": [
            Bad("signed by HR", LEDGER, who="hoa.hr"),
            Bad("signed by an administrator", LEDGER, who="admin"),
            Bad("signed by the appellant", LEDGER, who=LAN),
        ],
        "scope": DERIVED,
        "deadline": DERIVED,
        "closed": Skip("a ruling compensates acts of closed periods by design"),
        "separation": DERIVED,
        "state": state,
        "bound": [Bad("target lacks its keys", INVALID, set={"target": {}}, says="data.target")],
    }


RULES: dict[str, dict[str, Entry]] = {
    # -- organisation -------------------------------------------------------------------------
    "org.unit_created": {
        "reference": [Bad("unknown parent", UNKNOWN, set={"parent": "KH-NOPE"})],
        "role": [
            Bad("by a supervisor", ROLE, who="tuan.sup"),
            Bad("by nobody in particular", ROLE, who="nobody"),
            Bad("a root unit by HR", ROLE, drop=("parent",), set={"unit": "XX"}),
        ],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": NO_PERIOD,
        "separation": NO_SEPARATION,
        "state": [Bad("unit code in use", TAKEN, set={"unit": "KH-W1-OSS"})],
        "bound": [
            Bad("kind not known", INVALID, set={"kind": "village"}, says="data.kind"),
            Bad("code with a space", INVALID, set={"unit": "KH W1"}, says="data.unit"),
            Bad("empty name", INVALID, set={"name": ""}, says="data.name"),
        ],
    },
    "org.position_defined": {
        "reference": Skip("a position names no other record"),
        "role": [
            Bad("by a supervisor", ROLE, who="tuan.sup"),
            Bad("by nobody", ROLE, who="nobody"),
        ],
        "scope": Skip("positions are defined for the whole ledger by any HR officer"),
        "deadline": NO_DEADLINE,
        "closed": NO_PERIOD,
        "separation": NO_SEPARATION,
        "state": [Bad("position code in use", TAKEN, set={"position": "officer"})],
        "bound": NO_BOUND,
    },
    "role.granted": {
        "reference": [Bad("unknown unit", UNKNOWN, set={"unit": "KH-NOPE"})],
        "role": [
            Bad("by a supervisor", ROLE, who="tuan.sup"),
            Bad("by an inspector", ROLE, who="binh.insp"),
        ],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": NO_PERIOD,
        "separation": [Bad("own role", SELF, set={"principal": "hoa.hr"})],
        "state": [
            Bad(
                "already held",
                STATE,
                set={"principal": "tuan.sup", "role": "supervisor", "unit": "KH-W1-OSS"},
            )
        ],
        "bound": [Bad("no such role", INVALID, set={"role": "boss"}, says="data.role")],
    },
    "role.revoked": {
        "reference": [Bad("unknown unit", UNKNOWN, set={"unit": "KH-NOPE"})],
        "role": [Bad("by a supervisor", ROLE, who="vy.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": NO_PERIOD,
        "separation": [
            Bad("own role", SELF, set={"principal": "hoa.hr", "role": "hr", "unit": "KH"})
        ],
        "state": [
            Bad(
                "not held",
                STATE,
                set={"principal": "gone.rev", "role": "reviewer", "unit": "KH-W1"},
            ),
            Bad("held elsewhere only", STATE, set={"unit": "KH-W1"}),
        ],
        "bound": [Bad("no such role", INVALID, set={"role": "boss"}, says="data.role")],
    },
    # -- employees ---------------------------------------------------------------------------
    "employee.registered": {
        "reference": [
            Bad("unknown unit", UNKNOWN, set={"unit": "KH-NOPE"}),
            Bad("unknown position", UNKNOWN, set={"position": "astronaut"}),
        ],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": Skip("registration starts a history; it changes no closed result"),
        "separation": Skip("registering someone is no verdict on their work"),
        "state": [Bad("already registered", TAKEN, set={"employee": LAN})],
        "bound": [Bad("no such day", INVALID, set={"since": "2026-02-30"}, says="data.since")],
    },
    "employee.assigned": {
        "reference": [
            Bad("unknown employee", UNKNOWN, set={"employee": "ghost"}),
            Bad("unknown unit", UNKNOWN, set={"unit": "KH-NOPE"}),
            Bad("unknown position", UNKNOWN, set={"position": "astronaut"}),
        ],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": Skip("postings are history by their own date; `since` cannot go back"),
        "separation": Skip("a posting is no verdict on anyone's work"),
        "state": [
            Bad("before the current posting", STATE, set={"since": "2025-12-01"}),
            Bad("to another agency", STATE, set={"unit": "KH-W2"}),
        ],
        "bound": NO_BOUND,
    },
    "employee.transferred": {
        "reference": [
            Bad("unknown employee", UNKNOWN, set={"employee": "ghost"}),
            Bad("unknown unit", UNKNOWN, set={"unit": "KH-NOPE"}),
        ],
        "role": [Bad("by a supervisor", ROLE, who="w2.sup")],
        "scope": [
            Bad(
                "HR not covering the receiving unit",
                SCOPE,
                who="w2.hr",
                set={"employee": KHOA, "unit": "KH-W1-OSS"},
            )
        ],
        "deadline": NO_DEADLINE,
        "closed": Skip("postings are history by their own date; `since` cannot go back"),
        "separation": Skip("a posting is no verdict on anyone's work"),
        "state": [
            Bad("within the same agency", STATE, set={"unit": "KH-W1"}),
            Bad("before the current posting", STATE, set={"since": "2025-12-31"}),
        ],
        "bound": NO_BOUND,
    },
    "employee.leave_recorded": {
        "reference": [Bad("unknown employee", UNKNOWN, set={"employee": "ghost"})],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": Skip("leave excludes months from the year; it changes no closed month's result"),
        "separation": Skip("recording leave is no verdict on anyone's work"),
        "state": [
            Bad("ends before it starts", STATE, set={"start": "2026-05-02", "end": "2026-05-01"}),
            Bad("overlaps", STATE, set={"start": "2026-03-05", "end": "2026-03-09"}),
            Bad("leave id in use", TAKEN, set={"leave": "lv-1"}),
        ],
        "bound": [Bad("no such kind", INVALID, set={"kind": "holiday"}, says="data.kind")],
    },
    # -- publications ------------------------------------------------------------------------
    "policy.published": {
        "reference": [Bad("unknown scope", UNKNOWN, set={"scope": "KH-NOPE"})],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": [
            Bad(
                "retroactive",
                "publication.retroactive",
                set={"document": _policy(effective_from="2026-02-04")},
            )
        ],
        "closed": Skip("a policy may not take effect in the past at all (deadline)"),
        "separation": NO_SEPARATION,
        "state": [
            Bad("version gap", "publication.version", set={"document": _policy(version=2)}),
            Bad("version again", "publication.version", set={"scope": "KH"}),
            Bad(
                "unknown key",
                "policy.invalid",
                set={"document": {**_policy(), "surplus": 1}},
                says="data.document.surplus",
            ),
            Bad(
                "missing key",
                "policy.invalid",
                set=_broken_policy("general_criteria", drop=True),
                says="data.document.general_criteria",
            ),
            Bad(
                "negative filing days",
                "policy.invalid",
                set=_broken_policy("appeals.filing.days", -1),
                says="data.document.appeals.filing.days",
            ),
            Bad(
                "malformed decimal",
                "policy.invalid",
                set=_broken_policy("score.general_max", "thirty"),
                says="data.document.score.general_max",
            ),
        ],
        "bound": [
            Bad(
                "criteria exceed the general maximum",
                "policy.invalid",
                set=_broken_policy("score.general_max", "20"),
                says="data.document.",
            )
        ],
    },
    "catalogue.published": {
        "reference": [
            Bad("unknown agency", UNKNOWN, set={"agency": "KH-NOPE"}),
            Bad("unknown position", UNKNOWN, edit=_items(positions=["astronaut"])),
        ],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": [
            Bad("retroactive", "publication.retroactive", set={"effective_from": "2026-02-04"})
        ],
        "closed": Skip("a catalogue may not take effect in the past at all (deadline)"),
        "separation": NO_SEPARATION,
        "state": [
            Bad("version gap", "publication.version", set={"version": 3}),
            Bad("version again", "publication.version", set={"version": 1}),
            Bad("a section", STATE, set={"agency": "KH-W1-OSS"}),
            Bad(
                "item twice",
                STATE,
                edit=lambda d: d["items"].append(dict(d["items"][0])),
            ),
            Bad("no standard", STATE, edit=_no_item_field("hours")),
        ],
        "bound": [
            Bad("zero hours", STATE, edit=_items(hours="0")),
            Bad("negative products", STATE, edit=_items(products="-1")),
            Bad("no items", INVALID, set={"items": []}, says="data.items"),
            Bad("version 0", INVALID, set={"version": 0}, says="data.version"),
            Bad("group E", INVALID, edit=_items(group="E"), says="data.items[0].group"),
            Bad(
                "item name missing", INVALID, edit=_no_item_field("name"), says="data.items[0].name"
            ),
            Bad("hours as a number", INVALID, edit=_items(hours=3), says="data.items[0].hours"),
            Bad(
                "unknown item field",
                INVALID,
                edit=_items(colour="red"),
                says="data.items[0].colour",
            ),
        ],
    },
    # -- work --------------------------------------------------------------------------------
    "work.assigned": {
        "reference": [
            Bad("unknown employee", UNKNOWN, set={"employee": "ghost"}),
            Bad("code not in the catalogue", "catalogue.unknown_item", set={"code": "OSS-99"}),
            Bad("code not for the position", "catalogue.unknown_item", set={"code": "LEAD-01"}),
        ],
        "role": [
            Bad("by an inspector", ROLE, who="binh.insp"),
            Bad("by HR", ROLE, who="hoa.hr"),
        ],
        "scope": [
            Bad("supervisor of the other ward", SCOPE, who="w2.sup"),
            Bad("system of the other ward", SCOPE, who="w2.sys"),
        ],
        "deadline": [Bad("due after the period", STATE, set={"due": "2026-03-01"})],
        "closed": [
            Bad("closed period", CLOSED, set={"period": "2026-01", "due": "2026-01-25"}),
            Bad(
                "late entry not approved",
                CLOSED,
                set={"period": "2026-01", "due": "2026-01-25", "late_entry": "le-pending"},
            ),
            Bad(
                "late entry ran out",
                CLOSED,
                set={"period": "2026-01", "due": "2026-01-25", "late_entry": "le-expired"},
            ),
            Bad(
                "late entry of someone else",
                CLOSED,
                set={"period": "2026-01", "due": "2026-01-25", "late_entry": "le-mai"},
            ),
            Bad(
                "no such late entry",
                CLOSED,
                set={"period": "2026-01", "due": "2026-01-25", "late_entry": "le-nope"},
            ),
        ],
        "separation": Skip("assigning is no verdict: separation applies to the approval"),
        "state": [
            Bad("item id in use", TAKEN, set={"item": "feb-assigned"}),
            Bad("due before the period", STATE, set={"due": "2026-01-31"}),
            Bad(
                "a quarter under a monthly policy",
                INVALID,
                set={"period": "2026-Q1"},
                says="data.period",
            ),
            Bad(
                "period before any policy",
                "policy.none",
                set={"period": "2025-12", "due": "2025-12-20"},
            ),
        ],
        "bound": [
            Bad("zero quantity", BOUND, set={"quantity": "0"}),
            Bad("huge quantity", BOUND, set={"quantity": "10001"}),
            Bad("quantity as a number", INVALID, set={"quantity": 2}, says="data.quantity"),
            Bad(
                "quantity with an exponent", INVALID, set={"quantity": "1e3"}, says="data.quantity"
            ),
            Bad("month 13", INVALID, set={"period": "2026-13"}, says="data.period"),
        ],
    },
    "work.declared": {
        "reference": [Bad("unknown item", UNKNOWN, set={"item": "ghost-item"})],
        "role": [
            Bad("a colleague", ROLE, who=MAI),
            Bad("the supervisor", ROLE, who="tuan.sup"),
            Bad("a system that did not assign it", ROLE, who="oss.system"),
        ],
        "scope": Skip("only the item's employee (or assigning system) declares: others are role"),
        "deadline": [
            Bad(
                "Khánh Hòa: on the 25th",
                "deadline.passed",
                who=KHOA,
                set={"item": "w2-feb", "done_at": "2026-02-20T03:00:00Z"},
                now=at("2026-02-25"),
            ),
            Bad(
                "Khánh Hòa: just at the deadline",
                "deadline.passed",
                who=KHOA,
                set={"item": "w2-feb", "done_at": "2026-02-20T03:00:00Z"},
                now=dt.datetime(2026, 2, 24, 17, 0, tzinfo=dt.UTC),
            ),
        ],
        "closed": [
            Bad("closed period", CLOSED, set={"item": "jan-open"}),
            Bad(
                "late entry not approved",
                CLOSED,
                set={"item": "jan-open", "late_entry": "le-pending"},
            ),
            Bad("late entry ran out", CLOSED, set={"item": "jan-open", "late_entry": "le-expired"}),
        ],
        "separation": Skip("declaring one's own work is the employee's act by design"),
        "state": [
            Bad("already declared", STATE, set={"item": "feb-declared"}),
            Bad("already approved", STATE, set={"item": "feb-approved"}),
            Bad("done in the future", STATE, set={"done_at": "2026-02-06T03:00:00Z"}),
        ],
        "bound": [
            Bad("zero hours", BOUND, set={"hours": "0"}),
            Bad("too many hours", BOUND, set={"hours": "1000.5"}),
            Bad("evidence not a hash", INVALID, set={"evidence": ["abc"]}, says="data.evidence[0]"),
            Bad(
                "a day, not an instant", INVALID, set={"done_at": "2026-02-04"}, says="data.done_at"
            ),
            Bad(
                "no such instant",
                INVALID,
                set={"done_at": "2026-02-30T03:00:00Z"},
                says="data.done_at",
            ),
        ],
    },
    "work.approved": {
        "reference": [Bad("unknown item", UNKNOWN, set={"item": "ghost-item"})],
        "role": [
            Bad("by an inspector", ROLE, who="binh.insp"),
            Bad("by HR", ROLE, who="hoa.hr"),
            Bad("by a system that did not assign it", ROLE, who="oss.system"),
        ],
        "scope": [Bad("supervisor of the other ward", SCOPE, who="w2.sup")],
        "deadline": NO_DEADLINE,
        "closed": [
            Bad("closed period", CLOSED, set={"item": "jan-declared"}),
            Bad(
                "late entry ran out",
                CLOSED,
                set={"item": "jan-declared", "late_entry": "le-expired"},
            ),
        ],
        "separation": [Bad("own work", SELF, who=LAN)],
        "state": [
            Bad("undeclared", STATE, set={"item": "feb-assigned"}),
            Bad("already approved", STATE, set={"item": "feb-approved"}),
        ],
        "bound": NO_BOUND,
    },
    "work.rejected": {
        "reference": [Bad("unknown item", UNKNOWN, set={"item": "ghost-item"})],
        "role": [Bad("by an inspector", ROLE, who="binh.insp")],
        "scope": [Bad("supervisor of the other ward", SCOPE, who="w2.sup")],
        "deadline": NO_DEADLINE,
        "closed": [Bad("closed period", CLOSED, set={"item": "jan-declared"})],
        "separation": [Bad("own work", SELF, who=LAN)],
        "state": [
            Bad("undeclared", STATE, set={"item": "feb-assigned"}),
            Bad("already approved", STATE, set={"item": "feb-approved"}),
        ],
        "bound": [Bad("empty reason", INVALID, set={"reason": ""}, says="data.reason")],
    },
    "work.quality_failed": {
        "reference": [Bad("unknown item", UNKNOWN, set={"item": "ghost-item"})],
        "role": [Bad("by HR", ROLE, who="hoa.hr"), Bad("by a system", ROLE, who="oss.system")],
        "scope": [
            Bad("supervisor of the other ward", SCOPE, who="w2.sup"),
            Bad("inspector of the other ward", SCOPE, who="w2.insp"),
        ],
        "deadline": NO_DEADLINE,
        "closed": [Bad("closed period", CLOSED, set={"item": "jan-approved"})],
        "separation": [Bad("own work", SELF, who=LAN)],
        "state": [Bad("not approved", STATE, set={"item": "feb-declared"})],
        "bound": [Bad("no such severity", INVALID, set={"severity": "huge"}, says="data.severity")],
    },
    "work.delayed": {
        "reference": [Bad("unknown item", UNKNOWN, set={"item": "ghost-item"})],
        "role": [Bad("by an inspector", ROLE, who="binh.insp")],
        "scope": [Bad("supervisor of the other ward", SCOPE, who="w2.sup")],
        "deadline": NO_DEADLINE,
        "closed": [Bad("closed period", CLOSED, set={"item": "jan-declared"})],
        "separation": [Bad("own work", SELF, who=LAN)],
        "state": Skip("a delay may be recorded at any stage of an item's life"),
        "bound": [
            Bad("zero days", INVALID, set={"days": 0}, says="data.days"),
            Bad("ten years and more", INVALID, set={"days": 3661}, says="data.days"),
        ],
    },
    "work.exemption_granted": {
        "reference": [Bad("unknown item", UNKNOWN, set={"item": "ghost-item"})],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": [Bad("closed period", CLOSED, set={"item": "jan-declared"})],
        "separation": [Bad("own work", SELF, who=THU, set={"item": "thu-feb"})],
        "state": [Bad("a deduction twice", STATE, set={"covers": ["progress", "progress"]})],
        "bound": [
            Bad("nothing covered", INVALID, set={"covers": []}, says="data.covers"),
            Bad("unknown deduction", INVALID, set={"covers": ["pay"]}, says="data.covers[0]"),
        ],
    },
    "work.spot_checked": {
        "reference": [Bad("unknown item", UNKNOWN, set={"item": "ghost-item"})],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("inspector of the other ward", SCOPE, who="w2.insp")],
        "deadline": NO_DEADLINE,
        "closed": Skip("spot checks are allowed after the close (accepted: see ACCEPTED)"),
        "separation": [Bad("own work", SELF, who=LAN)],
        "state": [Bad("nothing declared", STATE, set={"item": "feb-assigned"})],
        "bound": [Bad("no such result", INVALID, set={"result": "maybe"}, says="data.result")],
    },
    "work.ruling_applied": _ledger_rules(
        {"item": "ghost-item"},
        [Bad("act not on the item", STATE, set={"act_nonce": "0" * 32})],
    ),
    "survey.rated": {
        "reference": [Bad("unknown employee", UNKNOWN, set={"employee": "ghost"})],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("system of the other ward", SCOPE, who="w2.sys")],
        "deadline": NO_DEADLINE,
        "closed": [Bad("closed period", CLOSED, set={"period": "2026-01"})],
        "separation": Skip("a survey system rates; it has no work of its own"),
        "state": [
            Bad("rating id in use", TAKEN, set={"rating": "r-0"}),
            Bad(
                "a quarter under a monthly policy",
                INVALID,
                set={"period": "2026-Q1"},
                says="data.period",
            ),
        ],
        "bound": [
            Bad("above 100", BOUND, set={"score": "100.5"}),
            Bad("below 0", BOUND, set={"score": "-1"}),
            Bad("no responses", INVALID, set={"responses": 0}, says="data.responses"),
        ],
    },
    # -- assessment --------------------------------------------------------------------------
    "assessment.self_assessed": {
        "reference": [
            Bad("not an employee", UNKNOWN, who="nobody", set={"employee": "nobody"}),
            Bad("unknown criterion", UNKNOWN, set={"scores": {**SCORES, "charm": "5"}}),
            Bad("criterion missing", UNKNOWN, set={"scores": {"political": "5"}}),
        ],
        "role": [
            Bad("for a colleague", ROLE, who=MAI),
            Bad("by the supervisor", ROLE, who="tuan.sup"),
        ],
        "scope": Skip("one assesses only oneself: anyone else is role"),
        "deadline": NO_DEADLINE,
        "closed": [
            Bad("closed period", CLOSED, set={"period": "2026-01"}),
            Bad(
                "late entry not approved",
                CLOSED,
                set={"period": "2026-01", "late_entry": "le-pending"},
            ),
        ],
        "separation": Skip("a self-assessment is one's own by definition; it counts for nothing"),
        "state": Skip("a later self-assessment replaces an earlier one"),
        "bound": [
            Bad("above the maximum", BOUND, set={"scores": {**SCORES, "political": "6.5"}}),
            Bad("negative", BOUND, set={"scores": {**SCORES, "political": "-1"}}),
            Bad("three places", BOUND, set={"scores": {**SCORES, "political": "4.125"}}),
            Bad(
                "score as a number",
                INVALID,
                set={"scores": {**SCORES, "political": 5}},
                says="data.scores.political",
            ),
        ],
    },
    "assessment.supervisor_assessed": {
        "reference": [
            Bad("unknown employee", UNKNOWN, set={"employee": "ghost"}),
            Bad("unknown criterion", UNKNOWN, set={"scores": {**SCORES, "charm": "5"}}),
        ],
        "role": [Bad("by HR", ROLE, who="hoa.hr"), Bad("by an inspector", ROLE, who="binh.insp")],
        "scope": [Bad("supervisor of the other ward", SCOPE, who="w2.sup")],
        "deadline": NO_DEADLINE,
        "closed": [Bad("closed period", CLOSED, set={"period": "2026-01"})],
        "separation": [Bad("oneself", SELF, who=LAN)],
        "state": Skip("a later assessment before the close replaces an earlier one"),
        "bound": [
            Bad("above the maximum", BOUND, set={"scores": {**SCORES, "ethics": "7"}}),
            Bad("three places", BOUND, set={"scores": {**SCORES, "ethics": "4.001"}}),
        ],
    },
    "score.adjustment_proposed": {
        "reference": [
            Bad("unknown employee", UNKNOWN, set={"employee": "ghost"}),
            Bad("criterion not adjustable", UNKNOWN, set={"criterion": "charm"}),
        ],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": [Bad("closed period", CLOSED, set={"period": "2026-01"})],
        "separation": [Bad("own score", SELF, who=THU, set={"employee": THU})],
        "state": [
            Bad("adjustment id in use", TAKEN, set={"adjustment": "adj-p"}),
            Bad("zero delta", STATE, set={"delta": "0"}),
            Bad("nothing assessed yet", STATE, set={"employee": KHOA}, who="w2.hr"),
        ],
        "bound": [
            Bad("above the policy's bound", BOUND, set={"delta": "5.5", "criterion": "general"}),
            Bad("criterion above its maximum", BOUND, set={"delta": "1.5"}),
            Bad("three places", BOUND, set={"delta": "0.125"}),
            Bad("delta as a number", INVALID, set={"delta": 1}, says="data.delta"),
        ],
    },
    "score.adjustment_approved": {
        "reference": [
            Bad("unknown adjustment", UNKNOWN, set={"adjustment": "adj-nope"}),
            Bad("unknown employee", UNKNOWN, set={"employee": "ghost"}),
            Bad("adjustment of another period", UNKNOWN, set={"period": "2026-03"}),
        ],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": [Bad("closed period", CLOSED, set=_decided("adj-jan", LAN, "01"))],
        "separation": [
            Bad("the proposer", SAME, who="hoa.hr"),
            Bad("own score", SELF, who=THU, set=_decided("adj-thu", THU)),
        ],
        "state": [
            Bad("already approved", STATE, set={"adjustment": "adj-a"}),
            Bad("declined", STATE, set={"adjustment": "adj-d"}),
        ],
        "bound": [Bad("exceeds after another approval", BOUND, set=_decided("adj-m2", MAI))],
    },
    "score.adjustment_declined": {
        "reference": [Bad("unknown adjustment", UNKNOWN, set={"adjustment": "adj-nope"})],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": [Bad("closed period", CLOSED, set=_decided("adj-jan", LAN, "01"))],
        "separation": [
            Bad("the proposer", SAME, who="hoa.hr"),
            Bad("own score", SELF, who=THU, set=_decided("adj-thu", THU)),
        ],
        "state": [
            Bad("approved", STATE, set={"adjustment": "adj-a"}),
            Bad("already declined", STATE, set={"adjustment": "adj-d"}),
        ],
        "bound": Skip("a declined adjustment never counts: there is nothing to bound"),
    },
    "score.ruling_applied": _ledger_rules(
        {"employee": KHOA, "period": "2026-02", "adjustment": "adj-a"},
        [Bad("act is no approval of the period", STATE, set={"act_nonce": "0" * 32})],
    ),
    # -- conduct -----------------------------------------------------------------------------
    "discipline.imposed": {
        "reference": [Bad("unknown employee", UNKNOWN, set={"employee": "ghost"})],
        "role": [
            Bad("by a supervisor", ROLE, who="tuan.sup"),
            Bad("by an inspector", ROLE, who="binh.insp"),
        ],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": Skip("discipline concerns the year, read at classification, not a month's work"),
        "separation": [Bad("about oneself", SELF, who=THU, set={"employee": THU})],
        "state": [
            Bad("discipline id in use", TAKEN, set={"discipline": "d-1"}),
            Bad("decided in the future", STATE, set={"decided_on": "2026-02-06"}),
        ],
        "bound": [Bad("no such level", INVALID, set={"level": "fine"}, says="data.level")],
    },
    "discipline.annulled": {
        "reference": [
            Bad("unknown discipline", UNKNOWN, set={"discipline": "d-nope"}),
            Bad("another's discipline", UNKNOWN, set={"discipline": "d-thu"}),
            Bad("unknown employee", UNKNOWN, set={"employee": "ghost"}),
        ],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": Skip("discipline concerns the year, read at classification, not a month's work"),
        "separation": [
            Bad("one's own", SELF, who=THU, set={"employee": THU, "discipline": "d-thu"})
        ],
        "state": [Bad("already annulled", STATE, set={"discipline": "d-2"})],
        "bound": NO_BOUND,
    },
    "inspection.finding_recorded": {
        "reference": [
            Bad("unknown employee", UNKNOWN, set={"employee": "ghost"}),
            Bad("a position not yet in the log", UNKNOWN, set={"facts": [3, 10**9]}),
        ],
        "role": [Bad("by HR", ROLE, who="hoa.hr")],
        "scope": [Bad("inspector of the other ward", SCOPE, who="w2.insp")],
        "deadline": NO_DEADLINE,
        "closed": Skip("a finding changes no score: it may come after a close"),
        "separation": Skip(
            "the subject is someone inspected; HR records an inspector's own conduct"
        ),
        "state": [
            Bad("finding id in use", TAKEN, set={"finding": "f-1"}),
            Bad("an employee and a unit", STATE, set={"unit": "KH-W1"}),
        ],
        "bound": NO_BOUND,
    },
    "conduct.concluded": {
        "reference": [Bad("unknown employee", UNKNOWN, set={"employee": "ghost"})],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [
            Bad("HR of the other ward", SCOPE, who="w2.hr"),
            Bad("inspector of the other ward", SCOPE, who="w2.insp"),
        ],
        "deadline": NO_DEADLINE,
        "closed": Skip("a conclusion concerns the year, read at classification"),
        "separation": [Bad("about oneself", SELF, who=THU, set={"employee": THU})],
        "state": [
            Bad("conclusion id in use", TAKEN, set={"conclusion": "c-1"}),
            Bad("decided in the future", STATE, set={"decided_on": "2026-03-01"}),
        ],
        "bound": [Bad("no such kind", INVALID, set={"kind": "laziness"}, says="data.kind")],
    },
    # -- periods -----------------------------------------------------------------------------
    "period.closed": {
        "reference": [Bad("unknown agency", UNKNOWN, set={"agency": "KH-NOPE"})],
        "role": [Bad("by a supervisor", ROLE, who="w2.sup")],
        "scope": [
            Bad(
                "HR of the other ward",
                SCOPE,
                who="w2.hr",
                set={"agency": "KH-W1", "period": "2026-02"},
            )
        ],
        "deadline": [Bad("before the period ended", "period.not_ended", set={"period": "2026-02"})],
        "closed": [Bad("already closed", STATE, set={"agency": "KH-W1"})],
        "separation": NO_SEPARATION,
        "state": [
            Bad("a section", STATE, set={"agency": "KH-W1-OSS"}),
            Bad("before any policy", "policy.none", set={"period": "2025-12"}),
            Bad(
                "a quarter under a monthly policy",
                INVALID,
                set={"period": "2026-Q1"},
                says="data.period",
            ),
        ],
        "bound": [
            Bad("snapshot not a hash", INVALID, set={"snapshot": "abc"}, says="data.snapshot")
        ],
    },
    "period.late_entry_requested": {
        "reference": [
            Bad("unknown employee", UNKNOWN, set={"employee": "ghost"}),
            Bad("unknown agency", UNKNOWN, set={"agency": "KH-NOPE"}),
            Bad("not in the agency then", UNKNOWN, who="hoa.hr", set={"employee": KHOA}),
        ],
        "role": [Bad("by a colleague", ROLE, who=MAI)],
        "scope": [Bad("supervisor of the other ward", SCOPE, who="w2.sup")],
        "deadline": [Bad("until already past", STATE, set={"until": "2026-02-05T02:00:00Z"})],
        "closed": Skip("a late entry is the way into a closed period"),
        "separation": Skip("anyone may ask; the approval is where separation applies"),
        "state": [
            Bad("period not closed", STATE, set={"period": "2026-02"}),
            Bad("request id in use", TAKEN, set={"request": "le-ok"}),
        ],
        "bound": [
            Bad("until without zone", INVALID, set={"until": "2026-02-20"}, says="data.until")
        ],
    },
    "period.late_entry_approved": {
        "reference": [
            Bad("unknown request", UNKNOWN, set={"request": "le-nope"}),
            Bad("request of another agency", UNKNOWN, set={"agency": "KH-W2"}),
        ],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": NO_DEADLINE,
        "closed": Skip("approving a late entry is the way into a closed period"),
        "separation": [
            Bad("the requester", SAME, set={"request": "le-mai"}),
            Bad("own work", SAME, who=THU, set={"request": "le-thu"}),
        ],
        "state": [Bad("already approved", STATE, set={"request": "le-ok"})],
        "bound": NO_BOUND,
    },
    "period.ruling_applied": _ledger_rules(
        {"agency": "KH-W1-OSS", "period": "2026-01", "employee": LAN},
        Skip("the handler trusts the decision it was derived from for the period's state"),
    ),
    # -- appeals -----------------------------------------------------------------------------
    "appeal.filed": {
        "reference": [
            Bad("no such position", UNKNOWN, set={"contested": [10**6]}),
            Bad("not an employee", UNKNOWN, who="nobody"),
        ],
        "role": [
            Bad("a colleague's act", "appeal.not_contestable", who=MAI),
            Bad(
                "a close of another agency",
                "appeal.not_contestable",
                who=KHOA,
                set=lambda s: {"contested": [s.seq["close"]]},
            ),
        ],
        "scope": Skip("an appellant files on their own docket, about their own acts (role)"),
        "deadline": [
            Bad("after the deadline", "appeal.late", now=at("2026-02-10")),
            Bad(
                "at the deadline", "appeal.late", now=dt.datetime(2026, 2, 9, 17, 0, tzinfo=dt.UTC)
            ),
        ],
        "closed": Skip("appeals run against closed periods by design"),
        "separation": Skip("independence is checked when a reviewer is assigned"),
        "state": [
            Bad("appeal id in use", TAKEN, set={"appeal": "ap-filed"}),
            Bad(
                "a position twice",
                STATE,
                set=lambda s: {"contested": [s.seq["reject:jan-rej0"]] * 2},
            ),
            Bad(
                "not an act one appeals",
                "appeal.not_contestable",
                set=lambda s: {"contested": [s.seq["assign:jan-open"]]},
            ),
            Bad(
                "under a pending appeal",
                "appeal.already_contested",
                set=lambda s: {"contested": [s.seq["delay:jan-delay1"]]},
            ),
            Bad(
                "an appeal decision",
                "appeal.second_review",
                set=lambda s: {"contested": [s.seq["decide:ap-decided"]]},
            ),
            Bad(
                "decided and upheld",
                "appeal.second_review",
                set=lambda s: {"contested": [s.seq["qf:jan-qf"]]},
            ),
            Bad(
                "decided and overturned",
                "appeal.second_review",
                set=lambda s: {"contested": [s.seq["reject:jan-rej2"]]},
            ),
            Bad(
                "an overturned HR decision",
                "appeal.second_review",
                set=lambda s: {"contested": [s.seq["propose:hd-over"]]},
            ),
        ],
        "bound": [
            Bad("nothing contested", INVALID, set={"contested": []}, says="data.contested"),
            Bad(
                "position as a string", INVALID, set={"contested": ["12"]}, says="data.contested[0]"
            ),
        ],
    },
    "appeal.assigned": {
        "reference": [
            Bad("unknown appeal", UNKNOWN, set={"appeal": "ap-nope"}),
            Bad("unknown appellant", UNKNOWN, set={"appellant": "ghost"}),
        ],
        "role": [
            Bad("by a supervisor", ROLE, who="tuan.sup"),
            Bad("reviewer without the role", ROLE, set={"reviewer": "binh.insp"}),
            Bad("reviewer of the other ward", ROLE, set={"reviewer": "old.rev"}),
        ],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": Skip("the answer deadline runs from filing; assignment has none of its own"),
        "closed": Skip("appeals run against closed periods by design"),
        "separation": [
            Bad(
                "reviewer authored a contested act",
                "separation.not_independent",
                set={"reviewer": "vy.sup"},
            )
        ],
        "state": [
            Bad("decided", STATE, set={"appeal": "ap-decided"}),
            Bad("withdrawn", STATE, set={"appeal": "ap-withdrawn"}),
        ],
        "bound": NO_BOUND,
    },
    "appeal.decided": {
        "reference": [Bad("unknown appeal", UNKNOWN, set={"appeal": "ap-nope"})],
        "role": [
            Bad(
                "assigned reviewer lost the role",
                ROLE,
                who="gone.rev",
                set={"appeal": "ap-gone"},
                edit=lambda d: None,
            ),
            Bad("not the assigned reviewer", "appeal.not_assigned", who="minh.hr"),
        ],
        "scope": [
            Bad(
                "assigned reviewer now of the other ward",
                SCOPE,
                who="old.rev",
                set={"appeal": "ap-oldrev"},
            )
        ],
        "deadline": Skip("a late answer is still an answer: the projections flag it"),
        "closed": Skip("appeals run against closed periods by design"),
        "separation": [
            Bad("author of a contested act", "separation.not_independent", who="tuan.sup"),
            Bad("the appellant", "separation.not_independent", who=LAN),
        ],
        "state": [
            Bad("withdrawn", STATE, set={"appeal": "ap-withdrawn"}),
            Bad("already decided", STATE, set={"appeal": "ap-decided"}),
            Bad("not assigned yet", "appeal.not_assigned", set={"appeal": "ap-filed"}),
            Bad("a ruling missing", STATE, edit=_rulings(lambda r: r.pop())),
            Bad(
                "a rejection exempted",
                STATE,
                edit=_rulings(lambda r: r[1].update(ruling="exempted")),
            ),
        ],
        "bound": [
            Bad(
                "no such ruling",
                INVALID,
                edit=_rulings(lambda r: r[0].update(ruling="maybe")),
                says="data.rulings[0].ruling",
            ),
            Bad("no rulings", INVALID, set={"rulings": []}, says="data.rulings"),
        ],
    },
    "appeal.withdrawn": {
        "reference": [
            Bad("unknown appeal", UNKNOWN, set={"appeal": "ap-nope"}),
            Bad("another appellant's", UNKNOWN, set={"appellant": MAI}, who=MAI),
        ],
        "role": [
            Bad("by HR", ROLE, who="hoa.hr"),
            Bad("by the reviewer", ROLE, who="an.rev", set={"appeal": "ap-assigned"}),
        ],
        "scope": Skip("only the appellant withdraws (role)"),
        "deadline": Skip("an appeal may be withdrawn until it is decided (state)"),
        "closed": Skip("appeals run against closed periods by design"),
        "separation": Skip("withdrawing one's own appeal is the appellant's right"),
        "state": [
            Bad("decided", STATE, set={"appeal": "ap-decided"}),
            Bad("already withdrawn", STATE, set={"appeal": "ap-withdrawn"}),
        ],
        "bound": NO_BOUND,
    },
    # -- HR decisions ------------------------------------------------------------------------
    "hr.decision_proposed": {
        "reference": [Bad("unknown employee", UNKNOWN, set={"employee": "ghost"})],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": Skip("an HR decision's 30-day timer is the projections' flag, not a refusal"),
        "closed": [Bad("a ground not closed", "period.not_ended", set={"grounds": ["2026-02"]})],
        "separation": [Bad("about oneself", SELF, who=THU, set={"employee": THU})],
        "state": [
            Bad("decision id in use", TAKEN, set={"decision": "hd-p"}),
            Bad("a ground twice", STATE, set={"grounds": ["2026-01", "2026-01"]}),
            Bad("a ground set aside", STATE, set={"employee": MAI}),
        ],
        "bound": [
            Bad("no grounds", INVALID, set={"grounds": []}, says="data.grounds"),
            Bad("no such kind", INVALID, set={"kind": "exile"}, says="data.kind"),
            Bad("no action without reasons", INVALID, set={"kind": "no_action"}, says="reasons"),
            Bad("reasons on a reward", INVALID, set={"reasons": TEXT}, says="data.reasons"),
        ],
    },
    "hr.decision_issued": {
        "reference": [Bad("unknown decision", UNKNOWN, set={"decision": "hd-nope"})],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": Skip("an HR decision's 30-day timer is the projections' flag, not a refusal"),
        "closed": [Bad("its ground set aside", STATE, set={"decision": "hd-mai"})],
        "separation": [
            Bad("the proposer", SAME, who="hoa.hr"),
            Bad("about oneself", SELF, who=THU, set={"decision": "hd-thu"}),
        ],
        "state": [
            Bad("withdrawn", STATE, set={"decision": "hd-w"}),
            Bad("already issued", STATE, set={"decision": "hd-i"}),
            Bad("overturned", STATE, set={"decision": "hd-over"}),
            Bad("under a pending appeal", "appeal.already_contested", set={"decision": "hd-pc"}),
        ],
        "bound": NO_BOUND,
    },
    "hr.decision_withdrawn": {
        "reference": [Bad("unknown decision", UNKNOWN, set={"decision": "hd-nope"})],
        "role": [Bad("by a supervisor", ROLE, who="tuan.sup")],
        "scope": [Bad("HR of the other ward", SCOPE, who="w2.hr")],
        "deadline": Skip("a proposal may be withdrawn until it is issued (state)"),
        "closed": Skip("withdrawing a proposal changes no period's result"),
        "separation": [Bad("about oneself", SELF, who=THU, set={"decision": "hd-thu"})],
        "state": [
            Bad("already withdrawn", STATE, set={"decision": "hd-w"}),
            Bad("issued", STATE, set={"decision": "hd-i"}),
            Bad("overturned", STATE, set={"decision": "hd-over"}),
        ],
        "bound": NO_BOUND,
    },
    "hr.ruling_applied": _ledger_rules(
        {"decision": "hd-nope"},
        Skip("the handler trusts the decision it was derived from for the decision's state"),
    ),
}

# Variants of the baselines that must be ACCEPTED: each marks the edge of a refusal above.
ACCEPTED: list[tuple[str, Bad]] = [
    (
        "hr.decision_proposed",
        Bad("no action, with its reasons", "", set={"kind": "no_action", "reasons": TEXT}),
    ),
    (
        "work.assigned",
        Bad(
            "closed period with an approved late entry",
            "",
            set={"period": "2026-01", "due": "2026-01-25", "late_entry": "le-ok"},
        ),
    ),
    (
        "work.declared",
        Bad(
            "closed period with an approved late entry",
            "",
            set={"item": "jan-open", "late_entry": "le-ok"},
        ),
    ),
    (
        "work.approved",
        Bad(
            "closed period with an approved late entry",
            "",
            set={"item": "jan-declared", "late_entry": "le-ok"},
        ),
    ),
    (
        "work.approved",
        Bad(
            "by the system that assigned it",
            "",
            who="oss.system",
            set={"item": "feb-sys"},
            edit=lambda d: None,
        ),
    ),
    ("work.spot_checked", Bad("after the close", "", set={"item": "jan-approved"})),
    ("work.quality_failed", Bad("by an inspector", "", who="binh.insp")),
    (
        "work.declared",
        Bad(
            "Khánh Hòa: just before the 25th",
            "",
            who=KHOA,
            set={"item": "w2-feb", "done_at": "2026-02-20T03:00:00Z"},
            now=dt.datetime(2026, 2, 24, 16, 59, 59, tzinfo=dt.UTC),
        ),
    ),
    (
        "appeal.filed",
        Bad("on the last day", "", now=dt.datetime(2026, 2, 9, 16, 59, 59, tzinfo=dt.UTC)),
    ),
    (
        "assessment.self_assessed",
        Bad(
            "closed period with an approved late entry",
            "",
            set={"period": "2026-01", "late_entry": "le-ok"},
        ),
    ),
    (
        "score.adjustment_proposed",
        Bad("the policy's bound", "", set={"criterion": "general", "delta": "5"}),
    ),
    ("conduct.concluded", Bad("by HR", "", who="hoa.hr")),
    ("employee.transferred", Bad("by HR of the receiving ward", "", who="w2.hr")),
]


@dataclass(frozen=True)
class Case:
    fact_type: str
    category: str
    bad: Bad

    @property
    def id(self) -> str:
        return f"{self.fact_type}:{self.category}:{self.bad.label}"


def _wrong(value: Any) -> Any:
    """A JSON value of another type than ``value`` (absent fields get a list of objects)."""
    if isinstance(value, bool):
        return "true"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return 7
    if isinstance(value, list):
        return "x"
    if isinstance(value, dict):
        return ["x"]
    return [{}]


def _generated(fact_type: str, model: type[FactData]) -> Iterator[Case]:
    for name, info in model.model_fields.items():
        if info.is_required():
            yield Case(
                fact_type,
                "missing",
                Bad(name, INVALID, drop=(name,), says=f"data.{name}: Field required"),
            )

    for name in model.model_fields:

        def wrong(data: dict[str, Any], name: str = name) -> None:
            data[name] = _wrong(data.get(name))

        yield Case(fact_type, "type", Bad(name, INVALID, edit=wrong, says=f"data.{name}"))
    yield Case(
        fact_type, "unknown", Bad("extra field", INVALID, set={"surplus": "x"}, says="data.surplus")
    )


def _all_cases() -> list[Case]:
    cases: list[Case] = []
    for fact_type in sorted(FACT_TYPES):
        cases.extend(_generated(fact_type, FACT_TYPES[fact_type]))
        for category, entry in RULES.get(fact_type, {}).items():
            if isinstance(entry, list):
                cases.extend(Case(fact_type, category, bad) for bad in entry)
    return cases


CASES = _all_cases()
CASE_IDS = [c.id for c in CASES]
assert len(set(CASE_IDS)) == len(CASE_IDS), "case labels must be unique"


# --------------------------------------------------------------------------------------------
# Running a case
# --------------------------------------------------------------------------------------------


def _resolve(value: Data | None, s: Scene) -> dict[str, Any]:
    if value is None:
        return {}
    return dict(value(s) if callable(value) else value)


def _case_input(s: Scene, fact_type: str, bad: Bad) -> tuple[str, dict[str, Any]]:
    actor, base = BASE[fact_type]
    data = copy.deepcopy(_resolve(base, s))
    data.update(copy.deepcopy(_resolve(bad.set, s)))
    for name in bad.drop:
        del data[name]
    if bad.edit is not None:
        bad.edit(data)
    return bad.who or actor, data


def would_accept(w: World, who: str, fact_type: str, data: dict[str, Any]) -> Recording:
    """Run every intake check on the fact (key, signature, time window, the handler's rules)
    without recording anything: handlers never change state, they return a recording."""
    fact = read_fact(w.sign(who, fact_type, data), strict=True)
    service = w.service
    size = service.sealed.log_size()
    with service.exclusive_writer():
        service._sync()
        record = service._check(fact, size, service.keyring)
        service._check_time(fact)
        recording = service.handlers[fact.type](Context(service, fact, size, record.admin, {}))
    assert service.sealed.log_size() == size
    return recording


def run_case(s: Scene, case: Case) -> Refusal:
    who, data = _case_input(s, case.fact_type, case.bad)
    s.w.now = case.bad.now or NOW
    try:
        refusal = s.w.refused(who, case.fact_type, data, case.bad.rule)
    finally:
        s.w.now = NOW
    if case.bad.says is not None:
        assert case.bad.says in refusal.detail, refusal.detail
    return refusal


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    path: Path = tmp_path_factory.mktemp("bad-input") / "ledger.db"
    built = build_scene(f"sqlite:///{path}")
    yield built
    built.w.service.close()


# --------------------------------------------------------------------------------------------
# The tests
# --------------------------------------------------------------------------------------------


def test_every_fact_type_has_bad_input_cases() -> None:
    registered = {t for m in DOMAIN_MODULES for t in m.HANDLERS}
    assert set(FACT_TYPES) == registered, "a domain module with HANDLERS is not registered"
    assert set(BASE) == set(FACT_TYPES), "each fact type needs an accepted baseline"
    assert set(RULES) == set(FACT_TYPES), "each fact type needs its bad-input cases"
    for fact_type, entries in RULES.items():
        assert set(entries) == set(CATEGORIES), f"{fact_type}: address every category"
        for category, entry in entries.items():
            if isinstance(entry, Skip):
                assert entry.why.strip(), f"{fact_type}:{category}: say why it is skipped"
            else:
                assert entry, f"{fact_type}:{category}: no cases (use Skip and say why)"
    covered = {c.fact_type for c in CASES}
    for kind in GENERATED:
        assert {c.fact_type for c in CASES if c.category == kind} == covered


@pytest.mark.parametrize("fact_type", sorted(BASE))
def test_each_baseline_would_be_accepted(scene: Scene, fact_type: str) -> None:
    who, data = _case_input(scene, fact_type, Bad("baseline", ""))
    would_accept(scene.w, who, fact_type, data)


@pytest.mark.parametrize(("fact_type", "ok"), ACCEPTED, ids=[f"{t}:{b.label}" for t, b in ACCEPTED])
def test_the_edge_of_a_refusal_is_accepted(scene: Scene, fact_type: str, ok: Bad) -> None:
    who, data = _case_input(scene, fact_type, ok)
    scene.w.now = ok.now or NOW
    try:
        would_accept(scene.w, who, fact_type, data)
    finally:
        scene.w.now = NOW


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_bad_input_is_refused_and_records_nothing(scene: Scene, case: Case) -> None:
    run_case(scene, case)


SUBSET = [
    "work.approved:missing:item",
    "work.approved:type:item",
    "work.approved:unknown:extra field",
    "work.approved:separation:own work",
    "work.approved:role:by HR",
    "work.approved:scope:supervisor of the other ward",
    "work.approved:closed:closed period",
    "work.approved:state:undeclared",
    "work.assigned:reference:unknown employee",
    "work.assigned:bound:quantity as a number",
    "work.declared:deadline:Khánh Hòa: on the 25th",
    "appeal.filed:deadline:after the deadline",
    "appeal.decided:state:withdrawn",
    "appeal.assigned:separation:reviewer authored a contested act",
    "score.adjustment_approved:separation:the proposer",
    "score.adjustment_approved:bound:exceeds after another approval",
    "policy.published:deadline:retroactive",
    "policy.published:state:negative filing days",
    "hr.decision_issued:state:withdrawn",
    "hr.decision_issued:state:under a pending appeal",
    "period.late_entry_approved:separation:the requester",
    "work.ruling_applied:role:signed by HR",
]


def test_a_subset_on_both_backends(db_url: str) -> None:
    s = build_scene(db_url)
    try:
        by_id = {c.id: c for c in CASES}
        for case_id in SUBSET:
            run_case(s, by_id[case_id])
        for fact_type in ("work.approved", "appeal.decided", "score.adjustment_approved"):
            who, data = _case_input(s, fact_type, Bad("baseline", ""))
            would_accept(s.w, who, fact_type, data)
    finally:
        s.w.service.close()


def test_envelope_refusals(scene: Scene) -> None:
    w = scene.w
    who, data = _case_input(scene, "work.approved", Bad("baseline", ""))
    key = w.keys[who]
    w.refused_raw(b'{"payloadType":', "envelope.malformed")
    w.refused_raw(b"not json at all", "envelope.malformed")
    good = sign_fact(key, "work.approved", data, time=NOW)
    stranger = SigningKey.generate(who)  # same name, key never registered
    forged = Envelope(
        good.payload_type, good.payload, (Signature(key.keyid, stranger.sign(good.pae())),)
    )
    w.refused_raw(forged.to_bytes(), "signature.invalid")
    unsigned = Envelope(good.payload_type, good.payload, ())
    w.refused_raw(unsigned.to_bytes(), "envelope.malformed")
    w.refused_raw(sign_fact(stranger, "work.approved", data, time=NOW).to_bytes(), "key.not_valid")
    other = w.keys["tuan.sup"]
    impostor = sign_fact(other, "work.approved", data, time=NOW, actor="hoa.hr")
    w.refused_raw(impostor.to_bytes(), "key.not_valid")
    w.refused(who, "work.teleported", data, "fact.unknown_type")
    reused = scene.nonce["approve:jan-approved"]  # tuan.sup's nonce, for another fact
    replayed = sign_fact(key, "work.approved", data, time=NOW, nonce=reused)
    assert w.refused_raw(replayed.to_bytes(), "envelope.replayed").actor == who
    with pytest.raises(CanonicalFormError, match="float"):
        sign_fact(key, "work.assigned", {"item": "x", "quantity": 1.5})
    with pytest.raises(CanonicalFormError, match="float"):
        sign_fact(key, "survey.rated", {"score": 95.5})
    with pytest.raises(CanonicalFormError, match="naive datetime"):  # a time without its zone
        sign_fact(key, "work.declared", {"item": "x", "done_at": "2026-02-04T03:00:00"})

    # The ledger's clock is NOW; a real window accepts 72 hours back and 5 minutes ahead.
    window = w.service.window
    w.service.window = TimeWindow()
    try:
        for time in (NOW - dt.timedelta(hours=73), NOW + dt.timedelta(minutes=6), at("2020-01-01")):
            w.refused_raw(
                sign_fact(key, "work.approved", data, time=time).to_bytes(), "time.out_of_window"
            )
        for time in (NOW - dt.timedelta(hours=71), NOW + dt.timedelta(minutes=4)):
            fact = read_fact(sign_fact(key, "work.approved", data, time=time).to_bytes())
            w.service._check_time(fact)  # inside the window: no refusal
    finally:
        w.service.window = window
