"""``kpi-ledger demo``: seed a realistic, signed, deterministic evaluation history.

Usage::

    kpi-ledger demo [--db URL] [--home DIR] [--seed N] [--employees N] [--months N]
                    [--start YYYY-MM] [--keys-out DIR] [--workers N] [--progress]

Defaults: seed 1, 60 employees, 6 months ending in the current month, the usual
``--db``/``--home`` (``$KPI_LEDGER_DB``, ``$KPI_LEDGER_HOME``). ``--employees`` lies in
12..100,000 (below 12 the three agencies cannot each have a head and staff for the stories
below), ``--months`` in 2..12 (a transfer, a leave spanning months and appeals against a closed
month need two).

**The calendar.** The history runs from ``--start`` for ``--months`` months; its last month is
left open, and the month before it is closed with its appeals. Without ``--start`` the last
month is the machine's current month (in Vietnam; during the first two hours of a month, the
month before): ``--start`` is then a function of the date (``default_start``), so give it to
pin a history. The demo never records a fact after the machine's clock: when the last month
is the current one, its story is cut at the present, and the previous month's close, its
appeals (the last one assigned but not yet decided, well within the reviewer's ten working
days), the reprimand's annulment and the reward happen in the three days before the present
(squeezed into the hours since the 1st early in a month) — so the five-day appeal window is
open and appeals can be filed and decided; a last month wholly in the past ends on its 16th.
A ``--start`` whose last month has not begun is refused. The simulated calendar is the
ledger's clock while seeding, for the intake's checks and for ``recorded_at`` alike
(``Sealer.clock``): facts are submitted one day per batch, each recorded at its newest
fact's time, so as-of by time follows the story.

What it does, in order:

1. Refuses (exit 2, nothing changed, nothing created) a database that already holds a ledger,
   a home that is already initialised, or a ``--keys-out`` directory that holds files, lies in
   the home or cannot be created (it is created first, and removed again if the run is
   refused before anything is stored).
2. Creates the home as ``kpi-ledger init`` does (``LedgerHome.create``: checkpoint key,
   ``log.vkey``, ``facts.key``; the administrator's key pair beside them), with the origin
   ``demo.kpi-ledger.local/khanh-hoa/seed-N``, and starts the log on the simulated clock:
   entry 0 the administrator's self-registration, entry 1 the ``ledger`` principal's key;
   then writes the ``--keys-out`` key pairs.
3. Generates the history phase by phase (the setup month, then one phase per month, the last
   one open) and submits it with ``LedgerService.submit_many`` in batches of
   at most 1,000, each phase sorted by the facts' own times, so the log reads in calendar
   order. The service runs with the simulated clock (it reads the time of the batch's newest
   fact) and ``TimeWindow(past=None)``. Every fact must be accepted: a refusal is a bug of the
   demo (or of the domain) and stops the run with exit status 1, naming the fact.
4. Signs a checkpoint of the whole log and prints a summary: entries, facts per type, people,
   refusals (0), time taken, database size, and commands to try next.

**Deterministic.** Everything derives from ``--seed``: each principal's Ed25519 private key
is SHA-256 of ``"{seed}/{name}"`` (``SigningKey.from_seed``), including the administrator and
the ``ledger`` principal whose ``facts.key`` signs derived facts; each nonce is the first 32
hex digits of SHA-256 of ``"kpi-ledger demo/{seed}/{n}"`` for the n-th fact; each time comes
from the simulated calendar; each choice from ``random.Random(seed)``. The same seed, sizes and
``--start`` give byte-identical envelopes and ``recorded_at`` at every position when the
history lies in the past (only the checkpoints, which carry the wall-clock time, differ); a
history that reaches the current month also depends on the present, where it is cut. Only
the checkpoint key (``ledger.key``) is random, as in ``init``: a checkpoint signed with a key
anyone can derive would prove nothing. Every other key is derivable by whoever knows the seed:
the demo's keys are for demonstration only.
``--keys-out DIR`` writes every person's and system's key pair (``NAME.key``/``NAME.pub``) so
that further facts can be signed as them (``kpi-ledger sign``).

**The organisation.** Province ``KH`` (Tỉnh Khánh Hòa) with three agencies: ``KH-NT``, the
People's Committee of Nha Trang ward (its one-stop section ``KH-NT-MC`` first), ``KH-SNV``,
the Department of Home Affairs, and ``KH-STNMT``, the Department of Natural Resources and
Environment. Employees are shared 40/25/35 %; each agency has up to three named departments,
and teams under them (``...-T2``, ...) once a unit would exceed about eight people. Each unit's
first member is its head (position ``head``, a leader), who holds the supervisor role over
it; staff are ``officer`` (one-stop) or ``specialist``. A head's own work is assigned,
approved and assessed by the head of the department above, or by the agency's director. Not
evaluated themselves, but principals with keys: the administrator, two HR officers of the
province (``hoa.tran``, ``minh.le``: one proposes, the other approves), an appeal reviewer
(``an.pham``), an inspector (``binh.vo``), the three directors, the one-stop software
(``motcua.nhatrang``: integrator of the one-stop section) and the satisfaction survey
(``khaosat.nhatrang``: integrator of the ward).

**Rules published** in the setup month (the month before ``--start``): the default policy
(Decree 335/2025) for ``KH`` and the Khánh Hòa hours-based pack for ``KH-STNMT`` (its
declarations are due before the 25th: the demo declares there by the last working day before
it), both effective from the first day of ``--start``; one catalogue per agency (groups A–D,
standard products and hours; group A for heads only). In month ``max(1, months // 2)`` the
administrator publishes version 2 of the default policy, an amendment in force from the next
month (delays and quality failures deduct 0.5 instead of 0.25), so that ``score --policy 1``
and ``--policy 2`` differ. With three months or more, the ward publishes a second catalogue
version in month 2, effective from month 3.

**Each month**, for each employee at work: 8–15 assigned items with due dates (for one-stop
staff, 4–8 of them are dossiers the one-stop software receives, resolves and declares
itself); about 92 % declared with an evidence hash (and hours for hours-based items, now and
then padded); the supervisor approves about 90 % of declarations and rejects the rest with a
reason, half of them re-declared and approved; about 12 % finished after the due day, with a
recorded delay, a quarter of those exempted by HR (an objective cause); quality failures on
about 3 % of approved items; spot checks by the inspector on about 1.5 %; a self-assessment
and the supervisor's assessment of the five general criteria; a satisfaction rating for
one-stop staff; a few adjustments (proposed by one HR officer, approved — or now and then
declined — by the other). The month is closed for each agency on the 2nd of the next month.
Its ``snapshot`` is the hash of the result the projections publish at that moment
(``projections.engine.next_close_snapshot``, ``docs/scoring.md``): the demo signs each close
only once everything before it is in the log, so ``kpi-ledger show snapshot`` finds every
recorded hash equal to the recomputed one.

**After each close**: appeals filed within the policy's five days against standing rejections,
delays, quality failures and approved negative adjustments, assigned by HR to the reviewer and
decided (rejections overturned about half the time, delays exempted or upheld, ...; the ledger
appends the compensating ``*.ruling_applied`` facts). The stories told once: in the first
month's appeals, one appeal partly granted (``KN-00001`` by ``lan.nguyen``, Nguyễn Thị Lan, of
the one-stop section ``KH-NT-MC``: a rejection by her unit's head ``tuan.tran``, Trần Minh Tuấn,
overturned, a delay upheld — the two are named the same in every demo) and one withdrawn before
assignment; a late entry (an item whose approval was forgotten at the close: the supervisor
requests a late entry, HR approves it, the approval cites it); a maternity leave from month 2
for six months, recorded in month 1; a reprimand in month 2 (month 1 of a two-month history),
annulled in the open month; a transfer from ``KH-STNMT`` to the ward from the middle month; and,
after the last close, a reward proposed by one HR officer citing every closed month and issued
by the other.

**Scale.** Memory stays flat: a month is generated, signed and submitted, then dropped; only
the log positions of its contestable acts and its tallies survive to the next month, until
its close and appeals, and then only each employee's sum of marks (for the reward). Signing
runs in a pool of worker processes (``--workers``; by default one for large histories, none
for small ones) while the main process submits. 2,000 employees over 12 months make about
0.9 million facts; docs/performance.md records the time and size.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import math
import multiprocessing
import os
import random
import re
import time
import unicodedata
from collections import Counter
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

from api.progress import ProgressBar
from domain.errors import AlreadyInitialised, Refusal
from domain.policy import Policy, parse_policy, shipped_policy
from domain.schemas import format_decimal
from domain.service import MAX_BATCH, Appended, LedgerService, TimeWindow
from ledger.checkpoints import Checkpointer
from ledger.config import Database
from ledger.home import LEDGER_PRINCIPAL, LedgerHome
from projections.engine import Evaluations, next_close_snapshot, snapshot_hash
from projections.runners import close_view, open_view
from signing.canonical import format_time
from signing.facts import sign_fact
from signing.keyring import KEY_REGISTERED, key_registration_data
from signing.keys import SigningKey, write_key_pair

VN = dt.timezone(dt.timedelta(hours=7))
UTC = dt.UTC
MIN_EMPLOYEES = 12
MAX_EMPLOYEES = 100_000
MIN_MONTHS = 2
MAX_MONTHS = 12
PARALLEL_FROM = 20_000  # expected facts from which signing moves to worker processes
# The facts an employee's month makes, for the estimate above and the progress bar: 8-15
# items (11.5 on average), each assigned, declared and approved (~33 facts); rejections,
# re-declarations, delays, exemptions and checks (~2.5); the self and supervisor
# assessments (2); the survey and a share of the appeals, closes and setup. Seed 1 at the
# default size makes 37.3 entries per employee-month.
FACTS_PER_EMPLOYEE_MONTH = 38
ADMIN = "admin"
HR_A, HR_B = "hoa.tran", "minh.le"
REVIEWER, INSPECTOR = "an.pham", "binh.vo"
ONE_STOP_SYSTEM, SURVEY_SYSTEM = "motcua.nhatrang", "khaosat.nhatrang"
# The first month's appeal story (appeal KN-00001: a rejection overturned, a delay upheld) and
# her supervisor, the head of her unit: named the same in every demo (the docs use them).
STORY_APPELLANT = ("lan.nguyen", "Nguyễn Thị Lan")
STORY_SUPERVISOR = ("tuan.tran", "Trần Minh Tuấn")
GENERAL = ("political", "ethics", "discipline", "competence", "innovation")
LEGAL_BASIS = (
    "Luật Cán bộ, công chức 2025; Nghị định 335/2025/NĐ-CP; "
    "Quy chế đánh giá, xếp loại cán bộ, công chức theo KPI của tỉnh Khánh Hòa"
)


class DemoError(ValueError):
    """Bad input: nothing was created (the CLI exits 2 with the message)."""


class DemoRefused(RuntimeError):
    """The run failed after the ledger was started, leaving it incomplete (the CLI exits 1): a
    generated fact was refused — a bug of the demo or of the domain rules — or the
    ``--keys-out`` key pairs could not be written."""


@dataclass(frozen=True)
class DemoOptions:
    seed: int = 1
    employees: int = 60
    months: int = 6
    start: str | None = None  # None: the last month is the current one (``default_start``)
    keys_out: Path | None = None
    workers: int | None = None  # signing processes; None: automatic
    now: dt.datetime | None = None  # the present the story may not pass; None: the machine's

    def check(self) -> None:
        if not MIN_EMPLOYEES <= self.employees <= MAX_EMPLOYEES:
            raise DemoError(
                f"--employees must be between {MIN_EMPLOYEES} and {MAX_EMPLOYEES:,}, not"
                f" {self.employees} (three agencies each need a head and staff)"
            )
        if not MIN_MONTHS <= self.months <= MAX_MONTHS:
            raise DemoError(
                f"--months must be between {MIN_MONTHS} and {MAX_MONTHS}, not {self.months}"
                " (the stories need two months: a transfer, a leave, appeals after a close)"
            )
        if self.start is not None:
            match = re.fullmatch(r"([0-9]{4})-([0-9]{2})", self.start)
            if match is None or not 1 <= int(match.group(2)) <= 12:
                raise DemoError(f"--start must be a month written YYYY-MM, not {self.start!r}")
            if not 2000 <= int(match.group(1)) <= 2099:
                raise DemoError(f"--start must lie in 2000-01..2099-12, not {self.start}")
        if self.seed < 0:
            raise DemoError(f"--seed must be 0 or more, not {self.seed}")
        if self.workers is not None and not 0 <= self.workers <= 64:
            raise DemoError(f"--workers must be between 0 and 64, not {self.workers}")
        if story_end(self.first_month, self.months, self.present) is None:
            last = add_months(self.first_month, self.months - 1)
            raise DemoError(
                f"--start {self.first_month:%Y-%m} with --months {self.months} ends in"
                f" {last:%Y-%m}, which has not begun yet (the demo records nothing after the"
                " machine's clock): give an earlier --start"
            )

    @property
    def present(self) -> dt.datetime:
        return self.now if self.now is not None else dt.datetime.now(UTC)

    @property
    def first_month(self) -> dt.date:
        if self.start is None:
            return default_start(self.months, self.present)
        year, month = self.start.split("-")
        return dt.date(int(year), int(month), 1)


# The open month's story, when it lies wholly in the past, ends on its 16th (the previous
# month's close on the 2nd, its appeals filed by the 7th and decided, a reward); in the current
# month it ends at the present, the close and appeals moved into the last OPEN_WINDOW before it.
STORY_END_DAY = 16
OPEN_WINDOW = dt.timedelta(days=3)
MIN_OPEN = dt.timedelta(hours=2)  # the least of the current month a history may end in


def month_start(day: dt.date) -> dt.datetime:
    """Midnight in Vietnam at the start of ``day``'s month, as a UTC instant."""
    return at(day.replace(day=1), 0)


def default_start(months: int, now: dt.datetime) -> dt.date:
    """The first month when ``--start`` is not given: the history's last (open) month is the
    month of ``now`` in Vietnam, or the month before during the first MIN_OPEN hours of a
    month (too little time for the previous month's close and appeals)."""
    local = now.astimezone(VN)
    current = dt.date(local.year, local.month, 1)
    if now - month_start(current) < MIN_OPEN:
        current = add_months(current, -1)
    return add_months(current, -(months - 1))


def story_end(start: dt.date, months: int, now: dt.datetime) -> dt.datetime | None:
    """When the story of the history from ``start`` ends: the present (less a minute) if its
    last month is the present's, else that month's 16th; None if it has hardly begun."""
    last = add_months(start, months - 1)
    if now >= month_start(add_months(last, 1)):
        return at(last.replace(day=STORY_END_DAY), 0)
    until = now - dt.timedelta(minutes=1)
    if until - month_start(last) < MIN_OPEN:
        return None
    return until


@functools.cache
def demo_key(seed: int, name: str) -> SigningKey:
    """The demo's key for ``name``: private key bytes = SHA-256 of ``"{seed}/{name}"``.

    Cached: the setup registers every key, ``--keys-out`` writes it and the signer signs with
    it (each worker process has its own cache). ``run_demo`` clears it when done."""
    return SigningKey.from_seed(name, hashlib.sha256(f"{seed}/{name}".encode()).digest())


def demo_nonce(seed: int, n: int) -> str:
    return hashlib.sha256(f"kpi-ledger demo/{seed}/{n}".encode()).hexdigest()[:32]


# -- calendar helpers --------------------------------------------------------------------------


def add_months(day: dt.date, months: int) -> dt.date:
    index = day.year * 12 + day.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def at(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    """``hour:minute`` in Vietnam on ``day``, as a UTC instant."""
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=VN).astimezone(UTC)


def sha(*parts: object) -> str:
    return hashlib.sha256("/".join(str(p) for p in parts).encode()).hexdigest()


def _ascii(text: str) -> str:
    text = text.replace("đ", "d").replace("Đ", "D")
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).lower()


# -- the organisation ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A catalogue entry: ``dossier`` items are handled by the one-stop software."""

    code: str
    name: str
    group: str
    products: str
    hours: str
    leader: bool = False
    dossier: bool = False

    def as_data(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "name": self.name,
            "group": self.group,
            "products": self.products,
            "hours": self.hours,
            "positions": ["head"] if self.leader else [],
        }


def _shared(prefix: str) -> list[Item]:
    return [
        Item(f"{prefix}-A01", "Chỉ đạo, điều hành hoạt động của đơn vị", "A", "3", "16", True),
        Item(
            f"{prefix}-A02", "Kiểm tra, đôn đốc tiến độ công việc của đơn vị", "A", "1", "4", True
        ),
        Item(f"{prefix}-B01", "Soạn thảo văn bản hành chính", "B", "1", "4"),
        Item(f"{prefix}-B02", "Tham mưu báo cáo định kỳ", "B", "2", "8"),
        Item(f"{prefix}-B03", "Tham dự họp, hội nghị, tập huấn", "B", "0.5", "3"),
        Item(f"{prefix}-D01", "Nhiệm vụ đột xuất được giao", "D", "1", "4"),
    ]


CATALOGUES: dict[str, list[Item]] = {
    "KH-NT": [
        *_shared("NT"),
        Item(
            "NT-C01",
            "Tiếp nhận, trả kết quả hồ sơ thủ tục hành chính",
            "C",
            "0.25",
            "1",
            dossier=True,
        ),
        Item("NT-C02", "Chứng thực bản sao, chữ ký", "C", "0.2", "0.5", dossier=True),
        Item("NT-C03", "Thẩm định hồ sơ cấp giấy phép xây dựng", "C", "2", "8"),
        Item("NT-C04", "Giải quyết đơn thư, kiến nghị của công dân", "C", "1.5", "6"),
        Item("NT-C05", "Kiểm tra trật tự xây dựng, đô thị trên địa bàn", "C", "1", "5"),
    ],
    "KH-SNV": [
        *_shared("SNV"),
        Item("SNV-C01", "Thẩm định đề án vị trí việc làm", "C", "3", "16"),
        Item("SNV-C02", "Thẩm định hồ sơ tuyển dụng, nâng ngạch công chức", "C", "2", "8"),
        Item("SNV-C03", "Cập nhật cơ sở dữ liệu cán bộ, công chức", "C", "1", "4"),
        Item("SNV-C04", "Tham mưu công tác thi đua, khen thưởng", "C", "2", "8"),
    ],
    "KH-STNMT": [
        *_shared("TNMT"),
        Item("TNMT-C01", "Đo đạc, chỉnh lý bản đồ địa chính thửa đất", "C", "1", "7"),
        Item("TNMT-C02", "Thẩm định hồ sơ cấp giấy chứng nhận quyền sử dụng đất", "C", "1", "6"),
        Item("TNMT-C03", "Kiểm tra hiện trạng sử dụng đất", "C", "1", "5"),
        Item("TNMT-C04", "Thẩm định báo cáo đánh giá tác động môi trường", "C", "3", "16"),
        Item("TNMT-C05", "Xử lý phản ánh, kiến nghị về ô nhiễm môi trường", "C", "1", "4"),
    ],
}
# The ward's second catalogue (from month 3): certification merged into reception, a new
# item for online public services, building-permit appraisal re-timed.
CATALOGUE_V2_NT: list[Item] = [
    *[i for i in CATALOGUES["KH-NT"] if i.code not in ("NT-C02", "NT-C03")],
    Item("NT-C03", "Thẩm định hồ sơ cấp giấy phép xây dựng", "C", "2", "6"),
    Item("NT-C06", "Hướng dẫn, hỗ trợ dịch vụ công trực tuyến", "C", "0.5", "2", dossier=True),
]

AGENCIES: list[dict[str, Any]] = [
    {
        "code": "KH-NT",
        "name": "Ủy ban nhân dân phường Nha Trang",
        "share": 40,
        "director": ("thanh.ho", "Hồ Văn Thành", "Chủ tịch UBND phường Nha Trang"),
        "departments": [
            ("MC", "Bộ phận Một cửa", "section"),
            ("KT", "Phòng Kinh tế, Hạ tầng và Đô thị", "department"),
            ("VX", "Phòng Văn hóa - Xã hội", "department"),
        ],
    },
    {
        "code": "KH-SNV",
        "name": "Sở Nội vụ tỉnh Khánh Hòa",
        "share": 25,
        "director": ("quang.nguyen", "Nguyễn Văn Quang", "Giám đốc Sở Nội vụ"),
        "departments": [
            ("TCBC", "Phòng Tổ chức, biên chế và tổ chức phi chính phủ", "department"),
            ("CCVC", "Phòng Công chức, viên chức", "department"),
            ("VP", "Văn phòng Sở", "department"),
        ],
    },
    {
        "code": "KH-STNMT",
        "name": "Sở Tài nguyên và Môi trường tỉnh Khánh Hòa",
        "share": 35,
        "director": ("dung.huynh", "Huỳnh Tấn Dũng", "Giám đốc Sở Tài nguyên và Môi trường"),
        "departments": [
            ("DD", "Phòng Quản lý đất đai", "department"),
            ("BD", "Phòng Đo đạc, bản đồ và viễn thám", "department"),
            ("MT", "Phòng Bảo vệ môi trường", "department"),
        ],
    },
]
OFFICIALS: list[tuple[str, str, str]] = [
    (HR_A, "Trần Thị Hoa", "HR officer, Sở Nội vụ"),
    (HR_B, "Lê Văn Minh", "HR officer, Sở Nội vụ"),
    (REVIEWER, "Phạm Văn An", "appeal reviewer, Hội đồng giải quyết kiến nghị tỉnh"),
    (INSPECTOR, "Võ Thị Bình", "inspector, Thanh tra tỉnh"),
]
SYSTEMS: list[tuple[str, str]] = [
    (ONE_STOP_SYSTEM, "Phần mềm Một cửa điện tử phường Nha Trang"),
    (SURVEY_SYSTEM, "Hệ thống khảo sát sự hài lòng của người dân"),
]

FAMILY = [
    ("Nguyễn", 30), ("Trần", 11), ("Lê", 9), ("Phạm", 7), ("Hoàng", 5), ("Huỳnh", 5),
    ("Phan", 4), ("Vũ", 3), ("Võ", 5), ("Đặng", 3), ("Bùi", 3), ("Đỗ", 3), ("Hồ", 3),
    ("Ngô", 2), ("Dương", 2), ("Lý", 1), ("Đinh", 2), ("Trương", 2), ("Lâm", 1), ("Mai", 1),
]  # fmt: skip
MIDDLE = {
    False: ["Văn", "Hữu", "Đức", "Minh", "Quốc", "Thanh", "Công", "Ngọc", "Xuân", "Gia"],
    True: ["Thị", "Thị", "Ngọc", "Thu", "Thanh", "Minh", "Kim", "Hoài", "Bảo", "Mỹ"],
}
GIVEN = {
    False: [
        "An", "Bảo", "Bình", "Cường", "Dũng", "Duy", "Đạt", "Hải", "Hiếu", "Hoàng", "Hùng",
        "Huy", "Khang", "Khánh", "Kiên", "Long", "Lộc", "Minh", "Nam", "Nghĩa", "Phong",
        "Phúc", "Quang", "Quân", "Sơn", "Tài", "Thắng", "Thành", "Thịnh", "Toàn", "Trí",
        "Trung", "Tuấn", "Tùng", "Việt", "Vinh",
    ],
    True: [
        "Anh", "Châu", "Chi", "Dung", "Giang", "Hà", "Hạnh", "Hằng", "Hiền", "Hoa", "Hồng",
        "Huyền", "Hương", "Lan", "Linh", "Loan", "Mai", "My", "Nga", "Ngân", "Nhung", "Oanh",
        "Phương", "Quyên", "Tâm", "Thảo", "Thu", "Thủy", "Trang", "Trinh", "Uyên", "Vân",
        "Vy", "Yến",
    ],
}  # fmt: skip

REJECT_REASONS = [
    "Thiếu minh chứng kết quả thực hiện",
    "Minh chứng không khớp với nội dung công việc được giao",
    "Văn bản chưa đúng thể thức theo Nghị định 30/2020/NĐ-CP",
    "Số liệu báo cáo chưa đầy đủ, đề nghị bổ sung",
    "Sản phẩm chưa được lãnh đạo phòng thông qua",
]
QUALITY_REASONS = [
    "Sai sót về thể thức văn bản phải ban hành lại",
    "Số liệu trong báo cáo không khớp với cơ sở dữ liệu",
    "Hồ sơ thiếu thành phần theo quy định, phải bổ sung",
    "Kết quả đo đạc sai lệch vượt mức cho phép",
]
DELAY_REASONS = [
    "Hoàn thành sau thời hạn được giao",
    "Trả kết quả hồ sơ trễ hạn so với phiếu hẹn",
    "Chậm tiến độ do chưa bố trí công việc hợp lý",
]
EXEMPTION_REASONS = [
    "Mất điện diện rộng, hệ thống phần mềm ngừng hoạt động hai ngày",
    "Ảnh hưởng của bão, thực hiện phòng chống thiên tai theo chỉ đạo",
    "Chờ ý kiến của cơ quan chuyên môn cấp trên theo quy định",
    "Người dân đề nghị tạm dừng giải quyết hồ sơ để bổ sung giấy tờ",
]


@dataclass(eq=False)
class Unit:
    code: str
    name: str
    kind: str
    parent: str
    agency: Agency
    base: Unit | None = None  # the department above a team
    one_stop: bool = False
    head: str = ""


@dataclass(eq=False)
class Agency:
    code: str
    name: str
    director: str
    director_title: str
    hours: bool  # under the hours-based Khánh Hòa pack
    units: list[Unit] = field(default_factory=list)


@dataclass(eq=False)
class Person:
    code: str
    name: str
    postings: list[tuple[int, Unit, str]]  # (from month index, unit, position)
    leave: tuple[int, int] | None = None  # month indices on leave, inclusive

    def posting(self, month: int) -> tuple[Unit, str]:
        found = self.postings[0]
        for posting in self.postings:
            if posting[0] <= month:
                found = posting
        return found[1], found[2]

    def at_work(self, month: int) -> bool:
        return self.leave is None or not self.leave[0] <= month <= self.leave[1]


# -- what the generator produces ----------------------------------------------------------------


@dataclass(slots=True)
class Spec:
    """One fact to sign: ``tag`` asks for its log position back (a contestable act)."""

    time: dt.datetime
    order: int
    actor: str
    type: str
    data: dict[str, Any]
    tag: Hashable | None = None


@dataclass
class Tally:
    """What the demo remembers of one employee's month while generating it: the agency,
    the supervisor's marks (adjustments stay within them), the survey score and the acts
    an appeal may contest."""

    agency: str
    marks: dict[str, Decimal] = field(default_factory=dict)
    survey: str | None = None
    # contestable acts: (tag, type) of standing rejections, unexempted delays, failures
    contestable: list[tuple[Hashable, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Month:
    index: int  # months from --start (-1: the setup month)
    period: str
    first: dt.date
    last: dt.date
    working: list[dt.date]  # working days of the month (policy calendar)


@dataclass(frozen=True)
class Menu:
    """What an agency's staff, leaders or not, may be assigned in a month, and the days on
    which they may declare: the same for all of them, so made once per month."""

    dossiers: list[Item]  # handled by the one-stop software
    by_group: dict[str, list[Item]]  # the other items a person may be given, by group
    declarable: list[dt.date]  # working days on which declarations are still accepted

    @classmethod
    def of(cls, catalogue: list[Item], declarable: list[dt.date], *, leader: bool) -> Menu:
        by_group: dict[str, list[Item]] = {}
        for item in catalogue:
            if not item.dossier and (leader or not item.leader):
                by_group.setdefault(item.group, []).append(item)
        return cls([i for i in catalogue if i.dossier], by_group, declarable)


class History:
    """Generates the history phase by phase (``phases``), learning the log positions of the
    previous phase's contestable acts between phases (``learn``)."""

    def __init__(self, options: DemoOptions) -> None:
        self.options = options
        self.seed = options.seed
        self.rng = random.Random(options.seed)
        self.order = 0
        self.start = options.first_month
        until = story_end(self.start, options.months, options.present)
        assert until is not None  # DemoOptions.check
        self.until = until
        # The story is cut at the present: its last month is the current one.
        self.current = options.present < month_start(add_months(self.start, options.months))
        documents = {name: shipped_policy(name) for name in ("default", "khanh-hoa")}
        for document in documents.values():
            document["effective_from"] = self.start.isoformat()
        # The amendment: version 2 of the default pack, published in the middle of the history
        # and in force from the month after (``score --policy 2``: the same facts under it).
        self.amendment_month = max(0, options.months // 2 - 1)
        amended = shipped_policy("default")
        amended["version"] = 2
        amended["effective_from"] = add_months(self.start, self.amendment_month + 1).isoformat()
        amended["name"] = f"{amended['name']} (amended: delays and quality failures count double)"
        amended["task"]["delay_deduction"] = "0.5"
        amended["task"]["quality_failure_deduction"] = "0.5"
        documents["amendment"] = amended
        self.documents = documents
        self.policies: dict[str, Policy] = {k: parse_policy(v) for k, v in documents.items()}
        self.calendar = self.policies["default"].calendar
        self.agencies: list[Agency] = []
        self.units: list[Unit] = []
        self.people: dict[str, Person] = {}
        # What survives a phase: the log positions of its contestable acts (appeals contest
        # only acts of the month just closed), the tallies of the month until its close, and
        # the supervisors' marks summed over the closed months (for the reward).
        self.positions: dict[Hashable, int] = {}
        self.tallies: dict[str, Tally] = {}  # employee -> tally
        self.mark_totals: Counter[str] = Counter()  # employee -> sum of monthly marks x 100
        self.item_counter = 0
        self.adjustment_counter = 0
        self.appeal_counter = 0
        self.pending_late: tuple[str, str, str] | None = None  # employee, item, period
        self._organise()

    # -- structure ------------------------------------------------------------------------
    def _organise(self) -> None:
        rng = self.rng
        n = self.options.employees
        shares = [a["share"] for a in AGENCIES]
        counts = [n * s // 100 for s in shares]
        remainders = sorted(range(3), key=lambda i: (-(n * shares[i] % 100), i))
        for i in remainders[: n - sum(counts)]:
            counts[i] += 1
        slots: list[tuple[Unit, str]] = []  # (unit, position) per employee, heads first
        for spec, count in zip(AGENCIES, counts, strict=True):
            director, _, title = spec["director"]
            agency = Agency(spec["code"], spec["name"], director, title, spec["code"] == "KH-STNMT")
            self.agencies.append(agency)
            n_units = max(1, min(math.ceil(count / 8), count // 2))
            bases: list[Unit] = []
            for short, name, kind in spec["departments"][:n_units]:
                bases.append(
                    Unit(
                        f"{agency.code}-{short}",
                        name,
                        kind,
                        agency.code,
                        agency,
                        None,
                        short == "MC",
                    )
                )
            units = list(bases)
            for k in range(n_units - len(bases)):
                base = bases[k % len(bases)]
                number = k // len(bases) + 2
                units.append(
                    Unit(
                        f"{base.code}-T{number}",
                        f"{base.name} - Tổ công tác số {number}",
                        "section",
                        base.code,
                        agency,
                        base,
                        base.one_stop,
                    )
                )
            agency.units = units
            self.units.extend(units)
            members: list[list[tuple[Unit, str]]] = [[] for _ in units]
            for k in range(count):
                u = k % len(units)
                unit = units[u]
                if not members[u]:
                    position = "head"
                else:
                    position = "officer" if unit.one_stop else "specialist"
                members[u].append((unit, position))
            for group in members:
                slots.extend(group)
        # Story roles, chosen among staff before names are drawn (the leave needs a woman).
        staff = [i for i, (_, position) in enumerate(slots) if position != "head"]
        tnmt = [i for i in staff if slots[i][0].agency.code == "KH-STNMT"]
        story: dict[str, int] = {"transfer": rng.choice(tnmt)}
        others = [i for i in staff if i != story["transfer"]]
        rng.shuffle(others)
        # The appeal story's civil servant is an officer of the ward's one-stop section, under
        # the default pack (``--policy 2`` applies to her) and the one-stop software; she and
        # her unit's head have fixed names (the docs use them).
        first = next(i for i in others if slots[i][0].one_stop)
        others.remove(first)
        others.insert(0, first)
        for role, index in zip(
            ("appeal", "withdrawn", "late_entry", "discipline", "maternity"), others, strict=False
        ):
            story[role] = index
        taken = {ADMIN, HR_A, HR_B, REVIEWER, INSPECTOR, ONE_STOP_SYSTEM, SURVEY_SYSTEM}
        taken |= {a["director"][0] for a in AGENCIES}
        taken.add(LEDGER_PRINCIPAL)
        appeal_unit = slots[story["appeal"]][0]
        head_of = next(i for i, s in enumerate(slots) if s == (appeal_unit, "head"))
        fixed = {story["appeal"]: STORY_APPELLANT, head_of: STORY_SUPERVISOR}
        taken |= {code for code, _ in fixed.values()}
        self.codes: list[str] = []
        for i, (unit, position) in enumerate(slots):
            female = True if i == story["maternity"] else rng.random() < 0.55
            family = rng.choices([f for f, _ in FAMILY], [w for _, w in FAMILY])[0]
            middle = rng.choice(MIDDLE[female])
            given = rng.choice(GIVEN[female])
            base_code = f"{_ascii(given)}.{_ascii(family)}"
            if i in fixed:
                code, name = fixed[i]
                person = Person(code, name, [(0, unit, position)])
                self.people[code] = person
                self.codes.append(code)
                if position == "head":
                    unit.head = code
                continue
            code, k = base_code, 1
            while code in taken:
                k += 1
                code = f"{base_code}.{k}"
            taken.add(code)
            person = Person(code, f"{family} {middle} {given}", [(0, unit, position)])
            self.people[code] = person
            self.codes.append(code)
            if position == "head":
                unit.head = code
        self.story_codes = {role: self.codes[i] for role, i in story.items()}
        months = self.options.months
        mother = self.people[self.story_codes["maternity"]]
        mother.leave = (1, 6)  # six months from the second month
        self.transfer_month = max(1, months // 2)
        ward = self.agencies[0]
        target = next((u for u in reversed(ward.units) if not u.one_stop), ward.units[-1])
        moved = self.people[self.story_codes["transfer"]]
        moved.postings.append((self.transfer_month, target, "specialist"))

    def month(self, index: int) -> Month:
        period = f"{add_months(self.start, index):%Y-%m}"
        first, last = self.policies["default"].period_bounds(period)
        days = (first + dt.timedelta(days=d) for d in range((last - first).days + 1))
        working = [d for d in days if self.calendar.is_working_day(d)]
        return Month(index, period, first, last, working)

    def supervisor(self, code: str, month: int) -> str:
        unit, _ = self.people[code].posting(month)
        if unit.head != code:
            return unit.head
        if unit.base is not None:
            return unit.base.head
        return unit.agency.director

    def catalogue(self, agency: Agency, month: int) -> list[Item]:
        if agency.code == "KH-NT" and self.options.months >= 3 and month >= 2:
            return CATALOGUE_V2_NT
        return CATALOGUES[agency.code]

    # -- principals -----------------------------------------------------------------------
    def principals(self) -> list[str]:
        """Everyone who signs, in registration order (the ledger's key is entry 1)."""
        directors = [a["director"][0] for a in AGENCIES]
        return [
            ADMIN,
            *[o[0] for o in OFFICIALS],
            *directors,
            *[s[0] for s in SYSTEMS],
            *self.codes,
        ]

    # -- spec helpers ---------------------------------------------------------------------
    def spec(
        self,
        when: dt.datetime,
        actor: str,
        fact_type: str,
        data: dict[str, Any],
        tag: Hashable | None = None,
    ) -> Spec:
        self.order += 1
        return Spec(when, self.order, actor, fact_type, data, tag)

    def learn(self, positions: dict[Hashable, int]) -> None:
        """The log positions of the tagged acts of the phase just submitted: the month the
        next phase closes (the earlier ones are not contested any more)."""
        self.positions = dict(positions)

    def phases(self) -> Iterator[tuple[str, list[Spec]]]:
        yield "setup", self.setup()
        for m in range(self.options.months - 1):
            yield self.month(m).period, self.work_month(m)
        last = self.options.months - 1
        yield self.month(last).period, self.open_month(last)

    def open_month(self, m: int) -> list[Spec]:
        """The last month, left open: its work up to the story's end (``until``); the previous
        month's close and appeals (the last appeal left undecided, within its deadline), the
        reprimand's annulment and the reward, moved, when the month is the current one, into
        the last OPEN_WINDOW before the present (its appeal window still open)."""
        month = self.month(m)
        specials: list[Spec] = []
        work = self.work_month(m, specials)
        specials.append(self.annulment(self.working_from(month, 8)[0]))
        specials += self.reward(month)
        cut = self.until - dt.timedelta(minutes=5)
        if self.current:
            first = min(s.time for s in specials)
            last = max(s.time for s in specials)
            end = cut - dt.timedelta(minutes=5)
            begin = max(month_start(month.first) + dt.timedelta(minutes=30), end - OPEN_WINDOW)
            span, room = last - first, end - begin
            for spec in specials:
                if span <= room:
                    spec.time += end - last
                else:
                    spec.time = begin + (spec.time - first) * (room / span)
                if spec.type == "period.late_entry_requested":
                    spec.data["until"] = spec.time + dt.timedelta(days=5)
        return [s for s in work if s.time <= cut] + specials

    # -- the setup month ------------------------------------------------------------------
    def setup(self) -> list[Spec]:
        """Keys, organisation, roles, rules and employees, in the month before the start."""
        working = self.month(-1).working
        day = iter(working[1:])
        specs: list[Spec] = []
        t = at(working[0], 8, 5)
        for name in self.principals()[1:]:
            data = key_registration_data(demo_key(self.seed, name).verifier())
            specs.append(self.spec(t, ADMIN, KEY_REGISTERED, data))
        # The organisation (code, name, kind, parent): the province, each agency, its units.
        tree: list[tuple[str, str, str, str | None]] = [("KH", "Tỉnh Khánh Hòa", "province", None)]
        for agency in self.agencies:
            tree.append((agency.code, agency.name, "agency", "KH"))
            tree += [(u.code, u.name, u.kind, u.parent) for u in agency.units]
        created = [
            {
                "unit": code,
                "name": name,
                "kind": kind,
                **({"parent": parent} if parent is not None else {}),
            }
            for code, name, kind, parent in tree
        ]
        d1 = next(day)
        t = at(d1, 8)
        specs.append(self.spec(t, ADMIN, "org.unit_created", created[0]))  # the province
        for who, role, scope in (
            (HR_A, "hr", "KH"),
            (HR_B, "hr", "KH"),
            (REVIEWER, "reviewer", "KH"),
            (INSPECTOR, "inspector", "KH"),
        ):
            t += dt.timedelta(minutes=2)
            specs.append(
                self.spec(t, ADMIN, "role.granted", {"principal": who, "role": role, "unit": scope})
            )
        t = at(d1, 9)
        for data in created[1:]:  # by HR: 3 minutes before each agency, 1 before each unit
            t += dt.timedelta(minutes=3 if data["kind"] == "agency" else 1)
            specs.append(self.spec(t, HR_A, "org.unit_created", data))
        t = at(d1, 14)
        for code, name, leader in (
            ("head", "Trưởng phòng, trưởng bộ phận, tổ trưởng", True),
            ("specialist", "Chuyên viên", False),
            ("officer", "Công chức tiếp nhận và trả kết quả (một cửa)", False),
        ):
            t += dt.timedelta(minutes=1)
            specs.append(
                self.spec(
                    t,
                    HR_A,
                    "org.position_defined",
                    {"position": code, "name": name, "leader": leader},
                )
            )
        d2 = next(day)
        t = at(d2, 8)
        grants: list[tuple[str, str, str]] = [
            (a.director, "supervisor", a.code) for a in self.agencies
        ]
        grants += [(u.head, "supervisor", u.code) for u in self.units]
        grants.append((ONE_STOP_SYSTEM, "integrator", "KH-NT-MC"))
        grants.append((SURVEY_SYSTEM, "integrator", "KH-NT"))
        for who, role, scope in grants:
            t += dt.timedelta(seconds=20)
            specs.append(
                self.spec(t, HR_B, "role.granted", {"principal": who, "role": role, "unit": scope})
            )
        d3 = next(day)
        specs.append(
            self.spec(
                at(d3, 9),
                ADMIN,
                "policy.published",
                {"scope": "KH", "document": self.documents["default"]},
            )
        )
        specs.append(
            self.spec(
                at(d3, 9, 30),
                HR_B,
                "policy.published",
                {"scope": "KH-STNMT", "document": self.documents["khanh-hoa"]},
            )
        )
        t = at(d3, 10)
        for agency in self.agencies:
            t += dt.timedelta(minutes=10)
            specs.append(
                self.spec(
                    t,
                    HR_A,
                    "catalogue.published",
                    {
                        "agency": agency.code,
                        "version": 1,
                        "effective_from": self.start,
                        "items": [i.as_data() for i in CATALOGUES[agency.code]],
                    },
                )
            )
        d4 = next(day)
        t = at(d4, 8)
        for i, code in enumerate(self.codes):
            person = self.people[code]
            unit, position = person.posting(0)
            t += dt.timedelta(seconds=15)
            specs.append(
                self.spec(
                    t,
                    HR_A if i % 2 == 0 else HR_B,
                    "employee.registered",
                    {
                        "employee": code,
                        "name": person.name,
                        "unit": unit.code,
                        "position": position,
                        "since": self.start,
                    },
                )
            )
        return specs

    # -- one month --------------------------------------------------------------------------
    def work_month(self, m: int, specials: list[Spec] | None = None) -> list[Spec]:
        """Month ``m``'s facts, the previous month's close and appeals first (into
        ``specials`` when given: the open month's)."""
        month = self.month(m)
        specs: list[Spec] = []
        if m >= 1:
            closing = self.close_and_appeal(m - 1, month)
            if specials is None:
                specs += closing
            else:
                specials += closing
        specs += self.stories(month)
        rng = self.rng
        menus: dict[tuple[str, bool], Menu] = {}  # (agency, leader?) -> the month's menu
        for agency in self.agencies:
            catalogue = self.catalogue(agency, m)
            declarable = self._decl_days(month, agency)
            for leader in (False, True):
                menus[agency.code, leader] = Menu.of(catalogue, declarable, leader=leader)
        tallies: dict[str, Tally] = {}
        self.tallies = tallies
        for code in self.codes:
            person = self.people[code]
            if not person.at_work(m):
                continue
            unit, position = person.posting(m)
            leader = position == "head"
            tally = Tally(unit.agency.code)
            tallies[code] = tally
            menu = menus[unit.agency.code, leader]
            specs += self.employee_month(month, person, unit, leader, menu, tally)
        # The satisfaction survey rates one-stop staff at the end of the month.
        for code, tally in tallies.items():
            unit, _ = self.people[code].posting(m)
            if unit.one_stop:
                score = Decimal(rng.randint(700, 1000)) / 10
                tally.survey = format_decimal(score)
                specs.append(
                    self.spec(
                        at(month.last, 20, rng.randint(0, 59)),
                        SURVEY_SYSTEM,
                        "survey.rated",
                        {
                            "rating": f"KS/{month.period}/{code}",
                            "employee": code,
                            "period": month.period,
                            "score": tally.survey,
                            "responses": rng.randint(5, 80),
                        },
                    )
                )
        specs += self.assessments(month, tallies)
        return specs

    def _decl_days(self, month: Month, agency: Agency) -> list[dt.date]:
        """Working days on which declarations are still accepted in ``agency``."""
        if not agency.hours:
            return month.working
        policy = self.policies["khanh-hoa"]
        deadline = policy.declaration_deadline(month.period)
        assert deadline is not None
        return [d for d in month.working if d < deadline.date()]

    def employee_month(
        self, month: Month, person: Person, unit: Unit, leader: bool, menu: Menu, tally: Tally
    ) -> list[Spec]:
        rng = self.rng
        m = month.index
        agency = unit.agency
        count = rng.randint(8, 15)
        system_count = rng.randint(4, 8) if unit.one_stop and not leader else 0
        force: dict[int, str] = {}
        if m == 0 and person.code == self.story_codes.get("appeal"):
            force = {0: "reject", 1: "late"}
        elif m == 0 and person.code == self.story_codes.get("withdrawn"):
            force = {0: "reject"}
        elif m == 0 and person.code == self.story_codes.get("late_entry"):
            force = {count - 1: "pending"}
        specs: list[Spec] = []
        supervisor = self.supervisor(person.code, m)
        for k in range(count):
            if k < system_count:
                item = rng.choice(menu.dossiers)
                assigner = ONE_STOP_SYSTEM
            else:
                if leader and k < system_count + 2:
                    group = "A"
                else:
                    group = rng.choices(["B", "C", "D"], [35, 55, 10])[0]
                item = rng.choice(menu.by_group[group])
                assigner = supervisor
            specs += self.item_life(
                month,
                menu.declarable,
                person.code,
                agency,
                item,
                assigner,
                supervisor,
                tally,
                force.get(k),
            )
        return specs

    def item_life(
        self,
        month: Month,
        declarable: list[dt.date],  # working days on which declarations are accepted
        employee: str,
        agency: Agency,
        item: Item,
        assigner: str,
        supervisor: str,
        tally: Tally,
        force: str | None,
    ) -> list[Spec]:
        """Every fact of one assigned item in its month."""
        rng = self.rng
        wd = month.working
        last = len(wd) - 1
        last_decl = len(declarable) - 1
        system = assigner == ONE_STOP_SYSTEM
        self.item_counter += 1
        code = (
            f"HS-{month.period.replace('-', '')}-{self.item_counter:07d}"
            if system
            else f"{agency.code}/{month.period}/{employee}/{self.item_counter:07d}"
        )
        a = rng.randint(0, max(0, last_decl // 2))
        d = rng.randint(min(a + 2, last_decl), last_decl)
        if force == "late":
            d = max(a, last_decl - 2)  # leave room to finish late
        quantity = "1" if system or rng.random() < 0.85 else str(rng.randint(2, 3))
        assigned_at = at(wd[a], 7, rng.randint(30, 59))
        specs = [
            self.spec(
                assigned_at,
                assigner,
                "work.assigned",
                {
                    "item": code,
                    "employee": employee,
                    "code": item.code,
                    "period": month.period,
                    "due": wd[d],
                    **({"quantity": quantity} if quantity != "1" else {}),
                },
            )
        ]
        if force is None and rng.random() < 0.08:
            return specs  # not done this month
        late = force == "late" or (force is None and rng.random() < (0.07 if system else 0.12))
        if late and d + 1 <= last_decl:
            done_day = rng.randint(d + 1, min(d + 4, last_decl))
        else:
            late = False
            done_day = rng.randint(a, d)
        done_at = at(wd[done_day], rng.randint(8, 14), rng.randint(0, 59))
        declared_at = done_at + dt.timedelta(minutes=rng.randint(5, 90))
        declarer = ONE_STOP_SYSTEM if system else employee
        hours: str | None = None
        if not system and (agency.hours or rng.random() < 0.4):
            factor = Decimal(rng.randint(6, 13)) / 10
            if rng.random() < 0.01:
                factor = Decimal(2)  # padded hours: a flag for the projections
            hours = format_decimal(
                (Decimal(item.hours) * Decimal(quantity) * factor).quantize(Decimal("0.1"))
            )
            if Decimal(hours) <= 0:
                hours = "0.5"
        specs.append(self.declaration(declared_at, declarer, code, done_at, hours))
        if late:
            days = (wd[done_day] - wd[d]).days
            reason = DELAY_REASONS[1] if system else rng.choice(DELAY_REASONS[::2])
            delay_at = declared_at + dt.timedelta(minutes=1 if system else 3)
            delay_tag = ("delay", code)
            specs.append(
                self.spec(
                    delay_at,
                    ONE_STOP_SYSTEM if system else supervisor,
                    "work.delayed",
                    {"item": code, "days": days, "reason": reason},
                    delay_tag,
                )
            )
            if force is None and rng.random() < 0.25 and done_day < last:
                specs.append(
                    self.spec(
                        at(wd[done_day + 1], 10, rng.randint(0, 59)),
                        rng.choice((HR_A, HR_B)),
                        "work.exemption_granted",
                        {
                            "item": code,
                            "covers": ["progress"],
                            "authority": agency.director_title,
                            "legal_basis": LEGAL_BASIS,
                            "reason": rng.choice(EXEMPTION_REASONS),
                        },
                    )
                )
            else:
                tally.contestable.append((delay_tag, "work.delayed"))
        if force == "pending":
            self.pending_late = (employee, code, month.period)
            return specs
        verdict_day = min(done_day + rng.randint(0, 2), last)
        verdict_at = self._after(declared_at, wd[verdict_day])
        reject = force == "reject" or (force is None and rng.random() < 0.08)
        if reject:
            reject_tag = ("reject", code)
            specs.append(
                self.spec(
                    verdict_at,
                    supervisor,
                    "work.rejected",
                    {"item": code, "reason": rng.choice(REJECT_REASONS)},
                    reject_tag,
                )
            )
            redo = verdict_day + 1
            # Half the rejected items are redone (before the declaration deadline).
            if force is None and rng.random() < 0.5 and redo <= last_decl:
                redone_at = at(wd[redo], rng.randint(8, 11), rng.randint(0, 59))
                done_again = redone_at - dt.timedelta(minutes=20)
                specs.append(
                    self.declaration(redone_at, declarer, code, done_again, hours, again=True)
                )
                verdict_day = min(redo + 1, last)
                verdict_at = self._after(redone_at, wd[verdict_day])
            else:
                tally.contestable.append((reject_tag, "work.rejected"))
                return specs
        specs.append(self.spec(verdict_at, supervisor, "work.approved", {"item": code}))
        cursor = verdict_at
        if rng.random() < 0.03:
            check_day = min(verdict_day + rng.randint(1, 2), last)
            cursor = self._after(cursor, wd[check_day])
            by_inspector = rng.random() < 0.2
            fail_tag = ("quality", code)
            specs.append(
                self.spec(
                    cursor,
                    INSPECTOR if by_inspector else supervisor,
                    "work.quality_failed",
                    {
                        "item": code,
                        "severity": "major" if rng.random() < 0.7 else "minor",
                        "reason": rng.choice(QUALITY_REASONS),
                    },
                    fail_tag,
                )
            )
            tally.contestable.append((fail_tag, "work.quality_failed"))
        if rng.random() < 0.015:
            check_day = min(verdict_day + rng.randint(1, 3), last)
            cursor = self._after(cursor, wd[check_day])
            confirmed = rng.random() < 0.85
            specs.append(
                self.spec(
                    cursor,
                    INSPECTOR,
                    "work.spot_checked",
                    {
                        "item": code,
                        "result": "confirmed" if confirmed else "not_confirmed",
                        "note": "Kiểm tra xác suất hồ sơ, đối chiếu minh chứng"
                        if confirmed
                        else "Minh chứng không phản ánh đúng kết quả đã kê khai",
                        "evidence": [sha(self.seed, code, "spot-check")],
                    },
                )
            )
        return specs

    def declaration(
        self,
        when: dt.datetime,
        declarer: str,
        item: str,
        done_at: dt.datetime,
        hours: str | None,
        *,
        again: bool = False,
    ) -> Spec:
        """``work.declared``: declared ``again`` after a rejection, with more evidence."""
        evidence = [sha(self.seed, item, "evidence")]
        data: dict[str, Any] = {"item": item, "done_at": done_at, "evidence": evidence}
        if hours is not None:
            data["hours"] = hours
        if again:
            evidence.append(sha(self.seed, item, "evidence", 2))
            data["note"] = "Bổ sung minh chứng theo yêu cầu"
        return self.spec(when, declarer, "work.declared", data)

    def _after(self, previous: dt.datetime, day: dt.date) -> dt.datetime:
        """A time on ``day`` after ``previous``: office hours, or just after ``previous``."""
        rng = self.rng
        candidate = at(day, rng.randint(8, 16), rng.randint(0, 59))
        if candidate > previous:
            return candidate
        return previous + dt.timedelta(minutes=rng.randint(5, 30))

    def assessments(self, month: Month, tallies: dict[str, Tally]) -> list[Spec]:
        """Self and supervisor assessments at the month's end, then a few adjustments."""
        rng = self.rng
        wd = month.working
        self_day, sup_day, adj_day = wd[-3], wd[-2], wd[-1]
        specs: list[Spec] = []
        for code, tally in tallies.items():
            own = {c: Decimal(rng.randint(18, 24)) / 4 for c in GENERAL}  # 4.5 .. 6
            marks = {c: max(Decimal(3), v - Decimal(rng.randint(0, 4)) / 4) for c, v in own.items()}
            tally.marks = marks
            specs.append(
                self.spec(
                    at(self_day, rng.randint(8, 16), rng.randint(0, 59)),
                    code,
                    "assessment.self_assessed",
                    {
                        "employee": code,
                        "period": month.period,
                        "scores": {c: format_decimal(v) for c, v in own.items()},
                    },
                )
            )
            specs.append(
                self.spec(
                    at(sup_day, rng.randint(8, 16), rng.randint(0, 59)),
                    self.supervisor(code, month.index),
                    "assessment.supervisor_assessed",
                    {
                        "employee": code,
                        "period": month.period,
                        "scores": {c: format_decimal(v) for c, v in marks.items()},
                    },
                )
            )
        candidates = sorted(tallies)
        for code in rng.sample(candidates, max(1, len(candidates) // 30)):
            tally = tallies[code]
            proposer, approver = (HR_A, HR_B) if rng.random() < 0.5 else (HR_B, HR_A)
            if rng.random() < 0.6 and tally.marks["innovation"] <= Decimal("5.5"):
                criterion, delta = "innovation", Decimal("0.5")
                reason = "Sáng kiến cải tiến quy trình được Hội đồng sáng kiến công nhận"
            else:
                criterion, delta = "discipline", -min(Decimal(1), tally.marks["discipline"])
                reason = "Vi phạm quy định về thời giờ làm việc, đã được nhắc nhở bằng văn bản"
            self.adjustment_counter += 1
            adjustment = f"DC-{month.period}-{self.adjustment_counter:05d}"
            data = {
                "adjustment": adjustment,
                "employee": code,
                "period": month.period,
            }
            specs.append(
                self.spec(
                    at(adj_day, 9, rng.randint(0, 59)),
                    proposer,
                    "score.adjustment_proposed",
                    {
                        **data,
                        "criterion": criterion,
                        "delta": format_decimal(delta),
                        "reason": reason,
                        "legal_basis": LEGAL_BASIS,
                    },
                )
            )
            when = at(adj_day, 14, rng.randint(0, 59))
            if rng.random() < 0.85:
                tag = ("adjustment", adjustment)
                specs.append(self.spec(when, approver, "score.adjustment_approved", data, tag))
                if delta < 0:
                    tally.contestable.append((tag, "score.adjustment_approved"))
            else:
                specs.append(
                    self.spec(
                        when,
                        approver,
                        "score.adjustment_declined",
                        {**data, "reason": "Chưa đủ căn cứ, đề nghị bổ sung hồ sơ"},
                    )
                )
        return specs

    # -- closes and appeals -----------------------------------------------------------------
    def working_from(self, month: Month, day: int) -> list[dt.date]:
        """Working days of ``month`` from its ``day``-th on (at least its last three)."""
        found = [d for d in month.working if d.day >= day]
        return found if len(found) >= 3 else month.working[-3:]

    def close_and_appeal(self, closed: int, now: Month) -> list[Spec]:
        """On the 2nd of ``now``: close month ``closed`` everywhere; then its appeals. Then
        its tallies are dropped, their marks added to ``mark_totals``."""
        rng = self.rng
        period = self.month(closed).period
        tallies = self.tallies
        specs: list[Spec] = []
        close_day = now.first.replace(day=2)
        for k, agency in enumerate(self.agencies):
            specs.append(
                self.spec(
                    at(close_day, 16, 5 * k),
                    HR_A if closed % 2 == 0 else HR_B,
                    "period.closed",
                    {
                        "agency": agency.code,
                        "period": period,
                        "snapshot": "",  # filled in by the Submitter, from the projections
                    },
                )
            )
        days = self.working_from(now, 3)
        if closed == 0 and self.pending_late is not None:
            specs += self.late_entry(days[0])
        stories: list[str] = []
        if closed == 0:
            stories = [self.story_codes["appeal"], self.story_codes["withdrawn"]]
        eligible = sorted(c for c, t in tallies.items() if t.contestable and c not in stories)
        wanted = max(1, round(len(tallies) / 40))
        appellants = stories + rng.sample(eligible, min(wanted, len(eligible)))
        # The close in the open month leaves its last appeal (not a story's) undecided.
        pending = appellants[-1] if closed == self.options.months - 2 else None
        for appellant in appellants:
            acts = tallies[appellant].contestable
            if appellant in stories:
                acts = acts[:2]
            else:
                acts = rng.sample(acts, min(len(acts), rng.randint(1, 3)))
            withdraw = closed == 0 and appellant == stories[1]
            undecided = appellant == pending and appellant not in stories
            specs += self.appeal(appellant, acts, days, withdraw=withdraw, undecided=undecided)
        for code, tally in tallies.items():
            if tally.marks:
                self.mark_totals[code] += int(sum(tally.marks.values()) * 100)
        self.tallies = {}
        return specs

    def appeal(
        self,
        appellant: str,
        acts: list[tuple[Hashable, str]],
        days: list[dt.date],
        *,
        withdraw: bool,
        undecided: bool = False,
    ) -> list[Spec]:
        rng = self.rng
        self.appeal_counter += 1
        appeal = f"KN-{self.appeal_counter:05d}"
        contested = sorted(self.positions[tag] for tag, _ in acts)
        types = {self.positions[tag]: fact_type for tag, fact_type in acts}
        candidates = [d for d in days[:2] if d.day <= 7] or days[:1]
        filed_at = at(rng.choice(candidates), rng.randint(8, 15), rng.randint(0, 59))
        specs = [
            self.spec(
                filed_at,
                appellant,
                "appeal.filed",
                {
                    "appeal": appeal,
                    "contested": contested,
                    "grounds": "Đề nghị xem xét lại: đã hoàn thành đúng yêu cầu, có minh chứng"
                    " kèm theo; nguyên nhân chậm trễ là khách quan",
                },
            )
        ]
        if withdraw:
            specs.append(
                self.spec(
                    filed_at + dt.timedelta(hours=20),
                    appellant,
                    "appeal.withdrawn",
                    {
                        "appeal": appeal,
                        "appellant": appellant,
                        "reason": "Đã trao đổi, thống nhất với lãnh đạo phòng; rút kiến nghị",
                    },
                )
            )
            return specs
        assigned_at = filed_at + dt.timedelta(hours=rng.randint(2, 24))
        specs.append(
            self.spec(
                assigned_at,
                rng.choice((HR_A, HR_B)),
                "appeal.assigned",
                {"appeal": appeal, "appellant": appellant, "reviewer": REVIEWER},
            )
        )
        if undecided:
            return specs
        story = self.appeal_counter == 1
        rulings = []
        for n, seq in enumerate(contested):
            fact_type = types[seq]
            if story:
                ruling = "overturned" if fact_type == "work.rejected" else "upheld"
            elif fact_type == "work.rejected":
                ruling = "overturned" if rng.random() < 0.5 else "upheld"
            elif fact_type == "work.delayed":
                ruling = "exempted" if rng.random() < 0.4 else "upheld"
            else:
                ruling = "overturned" if rng.random() < 0.3 else "upheld"
            reason = {
                "overturned": "Minh chứng bổ sung cho thấy sản phẩm đạt yêu cầu",
                "exempted": "Chậm trễ do nguyên nhân khách quan đã được xác minh",
                "upheld": "Không có căn cứ để chấp nhận kiến nghị",
            }[ruling]
            rulings.append({"act": seq, "ruling": ruling, "reason": f"{reason} (mục {n + 1})"})
        specs.append(
            self.spec(
                assigned_at + dt.timedelta(days=rng.randint(2, 5), minutes=rng.randint(0, 300)),
                REVIEWER,
                "appeal.decided",
                {
                    "appeal": appeal,
                    "appellant": appellant,
                    "rulings": rulings,
                    "reasons": "Đã xem xét hồ sơ, minh chứng và ý kiến của các bên liên quan",
                },
            )
        )
        return specs

    def late_entry(self, day: dt.date) -> list[Spec]:
        """The approval forgotten at the close: requested, approved, recorded late."""
        assert self.pending_late is not None
        employee, item, period = self.pending_late
        person = self.people[employee]
        unit, _ = person.posting(0)
        supervisor = self.supervisor(employee, 0)
        request = f"BS-{period}-{employee}"
        # The snapshot was taken at the close: the late approval is not in it.
        return [
            self.spec(
                at(day, 8, 30),
                supervisor,
                "period.late_entry_requested",
                {
                    "request": request,
                    "agency": unit.agency.code,
                    "period": period,
                    "employee": employee,
                    "reason": "Sản phẩm đã kê khai trước khi khóa kỳ nhưng chưa được duyệt",
                    "until": at(day, 8, 30) + dt.timedelta(days=5),
                },
            ),
            self.spec(
                at(day, 9, 30),
                HR_B,
                "period.late_entry_approved",
                {"request": request, "agency": unit.agency.code},
            ),
            self.spec(
                at(day, 10, 30),
                supervisor,
                "work.approved",
                {"item": item, "late_entry": request},
            ),
        ]

    # -- the stories told once --------------------------------------------------------------
    def stories(self, month: Month) -> list[Spec]:
        rng = self.rng
        m = month.index
        months = self.options.months
        specs: list[Spec] = []
        day20 = self.working_from(month, 18)[0]
        if m == 0:
            mother = self.people[self.story_codes["maternity"]]
            first = add_months(self.start, 1)
            last = add_months(first, 6) - dt.timedelta(days=1)
            specs.append(
                self.spec(
                    at(day20, 10),
                    HR_A,
                    "employee.leave_recorded",
                    {
                        "employee": mother.code,
                        "leave": f"TS-{mother.code}-{first:%Y%m}",
                        "kind": "maternity",
                        "start": first,
                        "end": last,
                    },
                )
            )
        if m == 1 and months >= 3:
            specs.append(
                self.spec(
                    at(day20, 15),
                    HR_B,
                    "catalogue.published",
                    {
                        "agency": "KH-NT",
                        "version": 2,
                        "effective_from": add_months(self.start, 2),
                        "items": [i.as_data() for i in CATALOGUE_V2_NT],
                    },
                )
            )
        if m == self.transfer_month - 1:
            moved = self.people[self.story_codes["transfer"]]
            unit, position = moved.posting(self.transfer_month)
            specs.append(
                self.spec(
                    at(self.working_from(month, 24)[0], 16),
                    HR_A,
                    "employee.transferred",
                    {
                        "employee": moved.code,
                        "unit": unit.code,
                        "position": position,
                        "since": add_months(self.start, self.transfer_month),
                        "reason": "Điều động theo Quyết định của Chủ tịch UBND tỉnh"
                        " về luân chuyển công chức",
                    },
                )
            )
        if m == self.amendment_month:
            specs.append(
                self.spec(
                    at(day20, 11),
                    ADMIN,
                    "policy.published",
                    {"scope": "KH", "document": self.documents["amendment"]},
                )
            )
        code = self.story_codes["discipline"]
        if m == min(1, months - 2):
            day = self.working_from(month, 10)[0]
            specs.append(
                self.spec(
                    at(day, 15, rng.randint(0, 59)),
                    HR_A,
                    "discipline.imposed",
                    {
                        "discipline": f"KL-{code}-1",
                        "employee": code,
                        "level": "reprimand",
                        "decided_on": day,
                        "legal_basis": "Luật Cán bộ, công chức 2025; Nghị định về xử lý kỷ luật"
                        " cán bộ, công chức",
                        "reason": "Vi phạm quy định về thời giờ làm việc nhiều lần",
                    },
                )
            )
        return specs

    def annulment(self, day: dt.date) -> Spec:
        code = self.story_codes["discipline"]
        return self.spec(
            at(day, 10),
            HR_B,
            "discipline.annulled",
            {
                "discipline": f"KL-{code}-1",
                "employee": code,
                "reason": "Quyết định kỷ luật bị hủy theo kết quả giải quyết khiếu nại",
                "legal_basis": "Luật Khiếu nại 2011",
            },
        )

    def reward(self, now: Month) -> list[Spec]:
        """After the last close: a reward for the best marks over the closed months, among
        staff outside the stories, proposed by one HR officer and issued by the other."""
        closed = self.options.months - 1
        story = set(self.story_codes.values())
        totals = {code: total for code, total in self.mark_totals.items() if code not in story}
        best = min(totals, key=lambda c: (-totals[c], c))
        periods = [self.month(m).period for m in range(closed)]
        decision = f"QD-KT-{now.period}-001"
        days = self.working_from(now, 5)
        return [
            self.spec(
                at(days[0], 9),
                HR_A,
                "hr.decision_proposed",
                {
                    "decision": decision,
                    "employee": best,
                    "kind": "reward",
                    "grounds": periods,
                    "details": "Đề nghị tặng Giấy khen của Chủ tịch UBND tỉnh: hoàn thành xuất"
                    f" sắc nhiệm vụ {len(periods)} tháng liên tục",
                },
            ),
            self.spec(at(days[2], 15), HR_B, "hr.decision_issued", {"decision": decision}),
        ]


# -- signing and submitting ---------------------------------------------------------------------

Row = tuple[str, str, dict[str, Any], dt.datetime, str]  # actor, type, data, time, nonce
_WORKER_SEED = 0


def _worker_init(seed: int) -> None:
    global _WORKER_SEED
    _WORKER_SEED = seed


def _sign_chunk(chunk: Sequence[Row]) -> list[bytes]:
    return _sign_rows(_WORKER_SEED, chunk)


def _sign_rows(seed: int, rows: Sequence[Row]) -> list[bytes]:
    return [
        sign_fact(demo_key(seed, actor), fact_type, data, time=when, nonce=nonce).to_bytes()
        for actor, fact_type, data, when, nonce in rows
    ]


class SimulatedClock:
    """The ledger's clock during the demo: the time of the newest fact handed to it."""

    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


class Submitter:
    """Signs each phase (in worker processes, or here) and submits it in order; ``counts``
    holds the facts appended, derived ones included, by type."""

    def __init__(
        self,
        service: LedgerService,
        seed: int,
        clock: SimulatedClock,
        workers: int,
        progress: ProgressBar,
        expected: int,
    ) -> None:
        self.service = service
        self.seed = seed
        self.clock = clock
        self.counter = 0
        self.counts: Counter[str] = Counter()
        self.progress = progress
        self.expected = expected  # facts, for the progress bar
        self.evaluations: Evaluations | None = None  # the projection the closes' snapshots use
        self.pool = (
            multiprocessing.get_context("spawn").Pool(workers, _worker_init, (seed,))
            if workers
            else None
        )
        if self.pool is None:
            _worker_init(seed)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool.join()
        self._close_views()

    def terminate(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
        self._close_views()

    def _close_views(self) -> None:
        if self.evaluations is not None:
            close_view(self.evaluations.view)
            self.evaluations = None

    def run(self, specs: list[Spec]) -> dict[Hashable, int]:
        """Sign and submit ``specs`` in time order. A ``period.closed`` is signed here, once
        everything before it is in the log: its ``snapshot`` is the hash of the result the
        projections compute then (``projections.engine.next_close_snapshot``)."""
        specs.sort(key=lambda s: (s.time, s.order))
        positions: dict[Hashable, int] = {}
        segment: list[Spec] = []
        for spec in specs:
            if spec.type != "period.closed":
                segment.append(spec)
                continue
            self._submit(segment, positions)
            segment = []
            spec.data["snapshot"] = self._snapshot(spec.data["agency"], spec.data["period"])
            self._submit([spec], positions, here=True)
        self._submit(segment, positions)
        return positions

    def _snapshot(self, agency: str, period: str) -> str:
        if self.evaluations is None:
            self.evaluations = Evaluations(open_view(self.service.database))
        self.evaluations.catch_up()
        return snapshot_hash(next_close_snapshot(self.evaluations.view, agency, period))

    def _submit(
        self, specs: list[Spec], positions: dict[Hashable, int], *, here: bool = False
    ) -> None:
        # A batch is recorded at one time (its newest fact's): one batch per day at most, so
        # that the recorded times follow the story day by day.
        chunks: list[list[Spec]] = []
        day: dt.date | None = None
        for spec in specs:
            today = spec.time.astimezone(VN).date()
            if not chunks or today != day or len(chunks[-1]) >= MAX_BATCH:
                chunks.append([])
                day = today
            chunks[-1].append(spec)
        work = []
        for chunk in chunks:
            rows: list[Row] = []
            for spec in chunk:
                self.counter += 1
                nonce = demo_nonce(self.seed, self.counter)
                rows.append((spec.actor, spec.type, spec.data, spec.time, nonce))
            work.append(rows)
        signed: Iterator[list[bytes]]
        if here or self.pool is None:
            signed = (_sign_rows(self.seed, rows) for rows in work)
        else:
            signed = self.pool.imap(_sign_chunk, work)
        for chunk, envelopes in zip(chunks, signed, strict=True):
            self.clock.now = chunk[-1].time
            outcomes = self.service.submit_many(envelopes)
            for spec, outcome in zip(chunk, outcomes, strict=True):
                if isinstance(outcome, Refusal):
                    raise DemoRefused(
                        f"the ledger refused a generated fact — a bug in the demo or the"
                        f" domain rules: {outcome}\n  fact: {spec.type} by {spec.actor} at"
                        f" {format_time(spec.time)}: {spec.data}"
                    )
                self._count(spec, outcome)
                if spec.tag is not None:
                    positions[spec.tag] = outcome.seq
            self.progress(self.counts.total(), self.expected)

    def _count(self, spec: Spec, outcome: Appended) -> None:
        self.counts[spec.type] += 1
        for derived in outcome.derived:
            self.counts[derived.type] += 1


# -- the command --------------------------------------------------------------------------------


@dataclass
class DemoResult:
    entries: int
    counts: Counter[str]
    principals: int
    seconds: float
    database_bytes: int
    checkpoint_size: int
    units: int
    periods: tuple[str, str]


def _make_keys_dir(keys_out: Path, home: LedgerHome) -> list[Path]:
    """Check ``--keys-out`` and create it, with its missing parents, before anything is stored:
    a new or empty directory outside the home. Returns the directories created."""
    where = keys_out.resolve()
    if where.is_relative_to(home.path.resolve()):
        raise DemoError(
            f"--keys-out {keys_out} lies in the home {home.path}, which holds the ledger's own"
            " keys: give a directory outside it; nothing was changed"
        )
    created: list[Path] = []
    try:
        for path in (*reversed(where.parents), where):
            if not path.is_dir():
                path.mkdir()
                created.append(path)
        if not created and any(where.iterdir()):
            raise DemoError(
                f"--keys-out {keys_out} must be a new or empty directory; nothing was changed"
            )
        if not os.access(where, os.W_OK | os.X_OK):
            raise DemoError(f"--keys-out {keys_out} is not writable; nothing was changed")
    except OSError as exc:
        _remove_empty(created)
        problem = (
            f"{exc.filename} is not a directory"
            if isinstance(exc, FileExistsError)
            else f"{exc.strerror}: {exc.filename}"
        )
        raise DemoError(f"--keys-out {keys_out}: {problem}; nothing was changed") from None
    return created


def _remove_empty(directories: list[Path]) -> None:
    """Remove the directories ``_make_keys_dir`` created, innermost first, while empty."""
    for path in reversed(directories):
        try:
            path.rmdir()
        except OSError:
            return


def _postgres_bytes(service: LedgerService) -> int:
    datastore = service.sealed.datastore  # type: ignore[attr-defined]
    with datastore.get_connection() as conn:
        row = conn.execute("SELECT pg_database_size(current_database())").fetchone()
    return int(row[0] if not isinstance(row, dict) else next(iter(row.values())))


def _sqlite_bytes(database: Database) -> int:
    """The database file and its write-ahead log (after closing: the log folded in)."""
    path = Path(database.env["SQLITE_DBNAME"])
    return sum(p.stat().st_size for p in (path, Path(f"{path}-wal")) if p.exists())


def run_demo(
    database: Database, home: LedgerHome, options: DemoOptions, *, progress: bool | None = None
) -> DemoResult:
    """Seed ``database`` and ``home`` with the demo history (see the module docstring)."""
    # the machine's clock read once: the checks, the start month and the story's end must
    # agree on one present, also when a month turns while the demo runs
    options = dataclasses.replace(options, now=options.present)
    options.check()
    if home.exists():
        raise DemoError(f"{home.path} is already an initialised ledger home; nothing was changed")
    keys_out = options.keys_out
    new_dirs = _make_keys_dir(keys_out, home) if keys_out is not None else []
    history = History(options)
    started = time.monotonic()
    bootstrap_at = at(add_months(options.first_month, -1), 8)
    clock = SimulatedClock(bootstrap_at)
    service: LedgerService | None = None
    submitter: Submitter | None = None
    try:
        service = LedgerService(database, clock=clock, window=TimeWindow(past=None))
        service.sealed.sealer.clock = clock  # recorded times follow the story too
        admin = demo_key(options.seed, ADMIN)
        try:
            service.initialise(
                home,
                f"demo.kpi-ledger.local/khanh-hoa/seed-{options.seed}",
                admin,
                facts_key=demo_key(options.seed, LEDGER_PRINCIPAL),
                time=bootstrap_at,
                nonces=(demo_nonce(options.seed, -1), demo_nonce(options.seed, -2)),
            )
        except AlreadyInitialised as exc:
            raise DemoError(str(exc)) from None
        except Refusal as refusal:
            raise DemoRefused(f"the ledger refused its own start: {refusal}") from None
        bootstrapped = service.sealed.log_size()  # key registrations (entries 0 and 1)
        ledger_key = home.ledger_key()
        write_key_pair(admin, home.path)
        if keys_out is not None:
            try:
                for name in history.principals():
                    write_key_pair(demo_key(options.seed, name), keys_out)
            except OSError as exc:
                raise DemoRefused(f"cannot write the key pairs to --keys-out: {exc}") from None
        expected = options.employees * options.months * FACTS_PER_EMPLOYEE_MONTH
        workers = options.workers
        if workers is None:
            workers = 1 if expected >= PARALLEL_FROM and (os.cpu_count() or 1) > 1 else 0
        bar = ProgressBar("demo", enabled=progress)
        submitter = Submitter(service, options.seed, clock, workers, bar, expected)
        first_period = last_period = ""
        try:
            for label, specs in history.phases():
                if label != "setup":
                    first_period = first_period or label
                    last_period = label
                history.learn(submitter.run(specs))
        finally:
            bar.close()
        submitter.close()
        signed = Checkpointer(service.sealed, ledger_key, home.state_path).checkpoint()
        entries = service.sealed.log_size()
        made = bootstrapped + submitter.counts.total()
        if entries != made:
            raise DemoRefused(f"the log holds {entries} entries, the demo made {made}")
        counts = submitter.counts
        counts[KEY_REGISTERED] += bootstrapped
        # PostgreSQL is measured through the open connection, SQLite once closed.
        size = None if database.backend == "sqlite" else _postgres_bytes(service)
    except BaseException as exc:
        _remove_empty(new_dirs)  # if nothing was written to them
        if submitter is not None:
            submitter.terminate()
        if isinstance(exc, DemoRefused):
            raise DemoRefused(
                f"{exc}\n  the ledger in {database.display} and {home.path} is incomplete:"
                " start again with a new database and home"
            ) from None
        raise
    finally:
        if service is not None:
            service.close()
        demo_key.cache_clear()
    return DemoResult(
        entries=entries,
        counts=counts,
        principals=len(history.principals()) + 1,
        seconds=time.monotonic() - started,
        database_bytes=_sqlite_bytes(database) if size is None else size,
        checkpoint_size=signed.checkpoint.size,
        units=len(history.units),
        periods=(first_period, last_period),
    )


def _mb(n: int) -> str:
    return f"{n / 1_000_000:,.1f} MB"


def print_summary(
    result: DemoResult,
    database: Database,
    home: LedgerHome,
    options: DemoOptions,
    *,
    db_flag: str | None,
    home_flag: str | None,
    out: TextIO,
) -> None:
    w = out.write
    first, last = result.periods
    officials = len(OFFICIALS) + len(AGENCIES)
    w(f"demo history written to {database.display} (seed {options.seed})\n")
    w(
        f"  history:    {first} .. {last} ({options.months} months, {last} open), province KH,"
        f" {len(AGENCIES)} agencies, {result.units} units\n"
    )
    w(
        f"  people:     {options.employees} employees, {officials} officials, the administrator,"
        f" {len(SYSTEMS)} systems and the ledger: {result.principals} keys\n"
    )
    w(f"  entries:    {result.entries:,} (refusals: 0)\n")
    w(f"  checkpoint: size {result.checkpoint_size:,}, signed with {home.ledger_key_path}\n")
    seconds = result.seconds
    w(f"  time:       {seconds:,.1f} s ({result.entries / max(seconds, 1e-9):,.0f} entries/s)\n")
    w(f"  database:   {_mb(result.database_bytes)}\n")
    w("  facts by type:\n")
    for fact_type, n in sorted(result.counts.items()):
        w(f"    {fact_type:<30} {n:>10,}\n")
    w(
        f'  keys:       derived from the seed (SHA-256 of "{options.seed}/<name>"): demo only;'
        + (
            f" key pairs in {options.keys_out}\n"
            if options.keys_out
            else " --keys-out DIR writes them\n"
        )
    )
    flags = "".join(
        f" {name} {value}" for name, value in (("--db", db_flag), ("--home", home_flag)) if value
    )
    vkey = home.vkey_path
    w("next:\n")
    w("  # verify the whole log against the database: signatures, seals, order\n")
    w(f"  kpi-ledger verify{flags}\n")
    w("  # export the bundle an inspector takes away, and verify it offline\n")
    w(f"  kpi-ledger export demo-bundle{flags}\n")
    w(f"  kpi-ledger verify demo-bundle --log-key {vkey}\n")
    w("  # a receipt: the inclusion proof of the last entry under the checkpoint\n")
    w(f"  kpi-ledger receipt {result.entries - 1}{flags}\n")
