#!/usr/bin/env python3
"""Compare two skipflow-style output directories table by table, row by row.

    python3 benches/compare_outputs.py DIR_A DIR_B [--tables t1,t2] [--max-diffs N]

For each of user_daily, user_track_daily, user_artist_daily and
user_profile_28d it reads every DIR/<table>/dt=*/*.parquet file with pyarrow
and checks:

  * both sides have the same set of dt= partitions;
  * every row's day (as_of) column equals its directory's dt value;
  * rows within each file are sorted by the table key, strings byte-wise;
  * the column names and order are the same; the types are the same once
    physical details that do not change values are set aside (timestamp unit,
    nullability, list child names); such details are printed as notes;
  * the rows, matched by key: same key set, no duplicate keys, equal values.
    Floats must be equal or within 1e-12 relative tolerance (the number of
    tolerated, not bit-identical, floats is printed); lists and structs are
    compared element by element; timestamps by instant.

Prints the first differences per table and exits 1 when any table differs,
0 when all are equal.
"""

import argparse
import datetime
import math
import os
import sys

import pyarrow as pa
import pyarrow.parquet as pq

TABLES = {
    "user_daily": (["user_id", "day"], "day"),
    "user_track_daily": (["user_id", "track_id", "day"], "day"),
    "user_artist_daily": (["user_id", "artist_id", "day"], "day"),
    "user_profile_28d": (["user_id", "as_of"], "as_of"),
}
REL_TOL = 1e-12


class Table:
    def __init__(self, root, name, key, day_col, problems):
        self.root = os.path.join(root, name)
        self.schema = None
        self.rows = []
        self.partitions = set()
        self.files = 0
        if not os.path.isdir(self.root):
            problems.append(f"{self.root}: missing")
            return
        for part in sorted(os.listdir(self.root)):
            pdir = os.path.join(self.root, part)
            if not os.path.isdir(pdir):
                continue
            if not part.startswith("dt="):
                problems.append(f"{pdir}: not a dt= partition directory")
                continue
            try:
                dt = datetime.date.fromisoformat(part[3:])
            except ValueError:
                problems.append(f"{pdir}: bad dt value")
                continue
            files = sorted(f for f in os.listdir(pdir) if f.endswith(".parquet"))
            if not files:
                problems.append(f"{pdir}: no parquet file")
            self.partitions.add(dt)
            for f in files:
                path = os.path.join(pdir, f)
                t = pq.read_table(path)
                self.files += 1
                if self.schema is None:
                    self.schema = t.schema
                elif not t.schema.equals(self.schema):
                    problems.append(f"{path}: schema differs from the table's other files")
                rows = t.to_pylist()
                prev = None
                for i, r in enumerate(rows):
                    if r.get(day_col) != dt:
                        problems.append(f"{path}: row {i} has {day_col}={r.get(day_col)} "
                                        f"in partition dt={dt}")
                        break
                    k = sort_key(r, key)
                    if prev is not None and k < prev:
                        problems.append(f"{path}: rows not sorted by key at row {i}")
                        break
                    prev = k
                self.rows.extend(rows)


def sort_key(row, key):
    out = []
    for c in key:
        v = row.get(c)
        out.append(v.encode("utf-8") if isinstance(v, str) else v)
    return tuple(out)


def logical_type(t):
    """The type with value-neutral physical details removed."""
    if pa.types.is_timestamp(t):
        return f"timestamp(tz={t.tz})"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"list<{logical_type(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(
            f"{t.field(i).name}: {logical_type(t.field(i).type)}"
            for i in range(t.num_fields)) + ">"
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    return str(t)


def physical_notes(fa, fb):
    """Value-neutral differences between two fields of the same logical type."""
    out = []
    if fa.nullable != fb.nullable:
        out.append(f"nullable A={fa.nullable} B={fb.nullable}")

    def walk(a, b):
        if pa.types.is_timestamp(a) and a.unit != b.unit:
            out.append(f"timestamp unit A={a.unit} B={b.unit}")
        elif pa.types.is_list(a) or pa.types.is_large_list(a):
            if a.value_field.name != b.value_field.name:
                out.append(f"list item name A={a.value_field.name!r} "
                           f"B={b.value_field.name!r}")
            if a.value_field.nullable != b.value_field.nullable:
                out.append(f"list item nullable A={a.value_field.nullable} "
                           f"B={b.value_field.nullable}")
            walk(a.value_type, b.value_type)
        elif pa.types.is_struct(a):
            for i in range(a.num_fields):
                walk(a.field(i).type, b.field(i).type)
        elif a != b:
            out.append(f"type A={a} B={b}")
    walk(fa.type, fb.type)
    return out


class FloatStats:
    tolerated = 0
    max_rel = 0.0


def values_equal(a, b, stats):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))):
            return False
        if isinstance(a, bool) or isinstance(b, bool):
            return False
        if a == b or (math.isnan(a) and math.isnan(b)):
            return True
        rel = abs(a - b) / max(abs(a), abs(b))
        if rel <= REL_TOL:
            stats.tolerated += 1
            stats.max_rel = max(stats.max_rel, rel)
            return True
        return False
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(values_equal(x, y, stats) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a.keys()) == list(b.keys()) and all(
            values_equal(a[k], b[k], stats) for k in a)
    if type(a) is not type(b) and not (isinstance(a, int) and isinstance(b, int)):
        return False
    return a == b


def short(v, limit=300):
    s = repr(v)
    return s if len(s) <= limit else s[:limit] + "..."


def list_diff(a, b, stats):
    """Where two lists first differ, for a readable message."""
    if not isinstance(a, list) or not isinstance(b, list):
        return ""
    for i, (x, y) in enumerate(zip(a, b)):
        if not values_equal(x, y, stats):
            return f" (first difference at element {i}: {short(x)} vs {short(y)})"
    if len(a) != len(b):
        return f" (lengths {len(a)} vs {len(b)})"
    return ""


def compare_table(name, dir_a, dir_b, max_diffs):
    key, day_col = TABLES[name]
    diffs, notes = [], {}
    pa_problems, pb_problems = [], []
    ta = Table(dir_a, name, key, day_col, pa_problems)
    tb = Table(dir_b, name, key, day_col, pb_problems)
    diffs += [f"A: {p}" for p in pa_problems] + [f"B: {p}" for p in pb_problems]

    only_a = sorted(ta.partitions - tb.partitions)
    only_b = sorted(tb.partitions - ta.partitions)
    if only_a:
        diffs.append(f"partitions only in A: {[str(d) for d in only_a[:10]]}"
                     f"{' ...' if len(only_a) > 10 else ''} ({len(only_a)})")
    if only_b:
        diffs.append(f"partitions only in B: {[str(d) for d in only_b[:10]]}"
                     f"{' ...' if len(only_b) > 10 else ''} ({len(only_b)})")

    cols = None
    if ta.schema is not None and tb.schema is not None:
        na, nb = ta.schema.names, tb.schema.names
        if na != nb:
            diffs.append(f"columns differ:\n      A: {na}\n      B: {nb}")
        for f in ta.schema:
            if f.name not in nb:
                continue
            g = tb.schema.field(f.name)
            if logical_type(f.type) != logical_type(g.type):
                diffs.append(f"column {f.name}: type {logical_type(f.type)} vs "
                             f"{logical_type(g.type)}")
            else:
                for kind in physical_notes(f, g):
                    notes.setdefault(kind, []).append(f.name)
        cols = [c for c in na if c in nb]

    stats = FloatStats()
    ia = {}
    dup_a = dup_b = 0
    for r in ta.rows:
        k = sort_key(r, key)
        if k in ia:
            dup_a += 1
        ia[k] = r
    ib = {}
    for r in tb.rows:
        k = sort_key(r, key)
        if k in ib:
            dup_b += 1
        ib[k] = r
    if dup_a:
        diffs.append(f"A has {dup_a} duplicate keys")
    if dup_b:
        diffs.append(f"B has {dup_b} duplicate keys")

    def fmt_key(k):
        return "(" + ", ".join(
            x.decode("utf-8") if isinstance(x, bytes) else str(x) for x in k) + ")"

    keys = sorted(set(ia) | set(ib))
    row_diffs = 0
    missing_a = missing_b = 0
    for k in keys:
        ra, rb = ia.get(k), ib.get(k)
        if ra is None or rb is None:
            if ra is None:
                missing_a += 1
            else:
                missing_b += 1
            row_diffs += 1
            if row_diffs <= max_diffs:
                diffs.append(f"key {fmt_key(k)}: only in {'B' if ra is None else 'A'}")
            continue
        bad = [c for c in (cols or []) if not values_equal(ra.get(c), rb.get(c), stats)]
        if bad:
            row_diffs += 1
            if row_diffs <= max_diffs:
                lines = [f"key {fmt_key(k)}:"]
                for c in bad:
                    lines.append(f"      {c}: A={short(ra.get(c))}\n"
                                 f"      {' ' * len(c)}  B={short(rb.get(c))}"
                                 f"{list_diff(ra.get(c), rb.get(c), FloatStats())}")
                diffs.append("\n".join(lines))
    if row_diffs > max_diffs:
        diffs.append(f"... {row_diffs - max_diffs} more differing rows")
    if row_diffs:
        diffs.append(f"rows: A={len(ta.rows)} B={len(tb.rows)}, only in A={missing_b}, "
                     f"only in B={missing_a}, differing rows in total={row_diffs}")

    summary = (f"{name}: rows A={len(ta.rows)} B={len(tb.rows)}, "
               f"partitions A={len(ta.partitions)} B={len(tb.partitions)}, "
               f"files A={ta.files} B={tb.files}")
    if stats.tolerated:
        summary += (f", {stats.tolerated} floats equal only within tolerance "
                    f"(max rel diff {stats.max_rel:.3g})")
    return summary, diffs, notes


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir_a")
    ap.add_argument("dir_b")
    ap.add_argument("--tables", default=",".join(TABLES),
                    help="comma-separated tables (default: the four feature tables)")
    ap.add_argument("--max-diffs", type=int, default=10,
                    help="differing rows to print per table (default 10)")
    args = ap.parse_args()

    any_diff = False
    for name in args.tables.split(","):
        if name not in TABLES:
            print(f"unknown table {name}", file=sys.stderr)
            return 2
        summary, diffs, notes = compare_table(name, args.dir_a, args.dir_b, args.max_diffs)
        status = "DIFFERENT" if diffs else "EQUAL"
        print(f"[{status}] {summary}")
        for d in diffs:
            print(f"    {d}")
        for kind, columns in notes.items():
            print(f"    note (physical only, values unaffected): {kind}: "
                  f"{', '.join(columns)}")
        any_diff = any_diff or bool(diffs)
    print("RESULT: " + ("outputs differ" if any_diff else "all tables equal"))
    return 1 if any_diff else 0


if __name__ == "__main__":
    sys.exit(main())
