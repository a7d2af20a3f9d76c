"""A person's published result: what the unit view (the quota) and the close made of a score.

The score view keeps the grade the points (and period overrides) earn; the quota is applied
by the unit view and published by the close's snapshot (``projections/engine.py``). These pure
functions bring the two together for the person concerned, at read time, so that nothing is
written per score when a unit view changes:

* ``published(score, unit, snapshot)``: the grade as published, the quota reading, the
  person's rank among the group's holders, the population, the cut-off, and the close she
  was published in (its position, hash, and her row in it);
* ``published_lines(published)``: the same as trace lines, appended after the score's own;
* ``unit_diff(before, after)``: two unit views of one agency and period side by side (as of
  two positions, under two policy versions): each row's total and grade on each side, each
  quota check's reading, population, allowed and cut-off on each side;
  ``own_unit_diff`` keeps her own row only;
* ``own_unit(unit, employee)`` / ``own_snapshot(snapshot, employee)``: the unit view or the
  snapshot as a person in it may read them: the count, the distribution and the quota checks
  as counts with their cut-off (no names, no mean: with the count it gives the others' sum),
  and her own row only (None when she has no row).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from projections.score import Line, show


def _row(rows: list[dict[str, Any]], employee: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["employee"] == employee), None)


def published(
    score: dict[str, Any], unit: dict[str, Any] | None, snapshot: dict[str, Any] | None
) -> dict[str, Any] | None:
    """The published side of ``score`` (a score document), from the unit view of its agency
    and period and the close snapshot (either may be None); None if the unit view has no row
    for the person (it is not computed yet)."""
    employee = score["employee"]
    row = _row(unit["results"], employee) if unit is not None else None
    if unit is None or row is None:
        return None
    quota = None
    index = row.get("quota_check")
    if index is not None:
        check = unit["quota"][index]
        moved = [k for k in check if k.startswith("moved_to_")]
        quota = {
            "reading": check.get("reading", "population"),
            "group": check["group"],
            "population": check["population"],
            "allowed": check["allowed"],
            "holders": check["holders"],
            "rank": row.get("rank"),
            "cut_off": check.get("cut_off"),
            "kept": row.get("rank") is not None and employee in check["kept"],
            "moved": bool(moved) and employee in check[moved[0]],
            "rule": check["rule"],
        }
    close = None
    if snapshot is not None:
        mine = _row(snapshot["published"]["results"], employee)
        close = {
            "close_seq": snapshot["close_seq"],
            "closed_at": snapshot["closed_at"],
            "recorded": snapshot["recorded"],
            "matches": snapshot["matches"],
            "grade": mine["grade"] if mine is not None else None,
            "total": mine["total"] if mine is not None else None,
            "set_aside": employee in snapshot.get("set_aside", []),
        }
    return {
        "grade": row["grade"],
        "score_grade": score["grade"],
        "moved_by_quota": row["grade"] != score["grade"],
        "policy": unit["policy"],
        "unit_as_of": unit["as_of"],
        "quota": quota,
        "snapshot": close,
    }


def published_lines(pub: dict[str, Any] | None) -> list[Line]:
    """Trace lines for a published result: the quota's decision, then the close."""
    if pub is None:
        return []
    lines = []
    q = pub["quota"]
    if q is not None:
        where = (
            f"rank {q['rank']} of {q['holders']} holding it"
            if q["rank"] is not None
            else f"not one of the {q['holders']} holding it"
        )
        cut = f", cut-off total {show_exact(q['cut_off'])}" if q["cut_off"] is not None else ""
        if pub["moved_by_quota"]:
            outcome = f"moved from {pub['score_grade']} to {pub['grade']}"
        else:
            outcome = f"published {pub['grade']}"
        lines.append(
            Line(
                None,
                "",
                "quota",
                f"quota ({q['reading']}): {where}, {q['allowed']} allowed in a population of"
                f" {q['population']}{cut}: {outcome}",
                q["rule"],
            )
        )
    s = pub["snapshot"]
    if s is not None:
        if s["grade"] is None:
            effect = "not in the close's snapshot"
        else:
            effect = f"published at the close: {s['grade']} (total {show_exact(s['total'])})"
        if s["set_aside"]:
            effect += "; the classification was set aside by an appeal"
        lines.append(
            Line(s["close_seq"], "period.closed", "published", effect, f"snapshot {s['recorded']}")
        )
    return lines


def show_exact(text: str) -> str:
    """An exact number string shown with two decimals."""
    return show(Fraction(text))


# What the own-row scope leaves out: the mean, an aggregate of totals (with the count and her
# own total it gives the others' sum: in a two-person unit the other's exact total). Each
# quota check's cut-off stays: it is what tells her why she was moved (the total she needed
# to keep the grade; issue 13 grants it with the distribution), though it is the lowest kept
# holder's total. Counts stay (the count, the distribution per grade, each check's
# population, allowed, holders, kept and moved counts, its rule): they say how many hold a
# grade, never what anyone scored.
OWN_ROW_WITHHELD = ("mean",)
OWN_ROW_CHECK_WITHHELD: tuple[str, ...] = ()


def own_unit(unit: dict[str, Any], employee: str) -> dict[str, Any] | None:
    """The unit view as ``employee`` may read it: counts, the quota checks without names (with
    their cut-off), no mean, and her own row (None when she has none)."""
    row = _row(unit["results"], employee)
    if row is None:
        return None
    checks = []
    for check in unit["quota"]:
        named = {k for k in check if k == "kept" or k.startswith("moved_to_")}
        hidden = named.union(OWN_ROW_CHECK_WITHHELD)
        out = {k: v for k, v in check.items() if k not in hidden}
        out.update({f"{k}_count": len(check[k]) for k in sorted(named)})
        checks.append(out)
    kept = {k: v for k, v in unit.items() if k not in OWN_ROW_WITHHELD}
    return {**kept, "quota": checks, "results": [row], "scope": "own row"}


def own_snapshot(snapshot: dict[str, Any], employee: str) -> dict[str, Any] | None:
    """The close snapshot as ``employee`` may read it: the close, both hashes, and her own row
    of the published document (None when she has none)."""
    doc = snapshot["published"]
    row = _row(doc["results"], employee)
    if row is None:
        return None
    return {
        **snapshot,
        "published": {**doc, "results": [row]},
        "set_aside": [e for e in snapshot.get("set_aside", []) if e == employee],
        "scope": "own row",
    }


# -- two unit results side by side -----------------------------------------------------------

ROW_KEYS = ("total", "points_grade", "grade", "policy", "catalogue", "quota_check", "rank")


def _check_side(check: dict[str, Any]) -> dict[str, Any]:
    """A quota check as a diff shows it: its reading, counts and cut-off, no names."""
    moved = next((k for k in check if k.startswith("moved_to_")), None)
    return {
        "reading": check.get("reading", "population"),
        "population": check["population"],
        "allowed": check["allowed"],
        "holders": check["holders"],
        "cut_off": check.get("cut_off"),
        "kept_count": len(check["kept"]),
        "moved_count": len(check[moved]) if moved is not None else 0,
        "rule": check["rule"],
    }


def unit_diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What separates two unit views of the same agency and period (as of two positions,
    under two policy versions): each person's row on each side (total, points grade, grade
    after the quota, rank; None where she has no row) with the fields that ``changed``, and
    each quota group's check on each side (reading, population, allowed, holders, cut-off),
    matched by group."""
    rows_before = {r["employee"]: r for r in before["results"]}
    rows_after = {r["employee"]: r for r in after["results"]}
    rows = []
    for employee in sorted(rows_before.keys() | rows_after.keys()):
        sides = [rows_before.get(employee), rows_after.get(employee)]
        a, b = ({k: r[k] for k in ROW_KEYS} if r is not None else None for r in sides)
        changed = ["row"] if a is None or b is None else [k for k in ROW_KEYS if a[k] != b[k]]
        rows.append({"employee": employee, "before": a, "after": b, "changed": changed})

    def groups(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {_group_key(c["group"]): c for c in doc["quota"]}

    checks_before, checks_after = groups(before), groups(after)
    quota = []
    for key in sorted(checks_before.keys() | checks_after.keys()):
        sides = [checks_before.get(key), checks_after.get(key)]
        group = next(c["group"] for c in sides if c is not None)
        a, b = (_check_side(c) if c is not None else None for c in sides)
        quota.append({"group": group, "before": a, "after": b, "changed": a != b})
    return {
        "agency": after["agency"],
        "period": after["period"],
        "policy": {"before": before["policy"], "after": after["policy"]},
        "as_of": {"before": before["as_of"], "after": after["as_of"]},
        "count": {"before": before["count"], "after": after["count"]},
        "mean": {"before": before["mean"], "after": after["mean"]},
        "distribution": {"before": before["distribution"], "after": after["distribution"]},
        "quota": quota,
        "rows": rows,
    }


def _group_key(group: dict[str, Any]) -> str:
    return "\x1f".join(f"{k}={group[k]}" for k in sorted(group))


def own_unit_diff(difference: dict[str, Any], employee: str) -> dict[str, Any] | None:
    """A unit diff as ``employee`` may read it: everything that names no one, except what
    ``own_unit`` leaves out (the mean), and her own row (None when she has a row on neither
    side)."""
    mine = [r for r in difference["rows"] if r["employee"] == employee]
    if not mine:
        return None

    def side(check: dict[str, Any] | None) -> dict[str, Any] | None:
        if check is None:
            return None
        return {k: v for k, v in check.items() if k not in OWN_ROW_CHECK_WITHHELD}

    quota = []
    for q in difference["quota"]:
        before, after = side(q["before"]), side(q["after"])
        quota.append({**q, "before": before, "after": after, "changed": before != after})
    kept = {k: v for k, v in difference.items() if k not in OWN_ROW_WITHHELD}
    return {**kept, "quota": quota, "rows": mine, "scope": "own row"}
