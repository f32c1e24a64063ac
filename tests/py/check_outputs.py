#!/usr/bin/env python3
"""Reads a skipflow output directory back with pyarrow and DuckDB and checks it
against the spec (tables.md) and schemas/tables.json.

Usage: check_outputs.py OUTPUT_DIR SCHEMAS_JSON EXPECTED_JSON

EXPECTED_JSON (written by tests/readers.rs) holds what the Rust side saw:
  {"tables": {"<table>": {"<dt>": <rows>, ...}, ...},   # Rust Parquet reader, per partition
   "report_rows": {"<table>": <rows>, ...},             # the run report's rows per table
   "final": ["<table>/dt=<dt>", ...]}                   # optional: the partitions that must
                                                        # have _SUCCESS (default: all, as in batch)

Prints one line per table and a summary line; exits 1 with every failure
listed on any problem, 0 when all checks pass.
"""

import json
import os
import sys

import duckdb
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

# Arrow type (as pyarrow prints it) of each type name of schemas/tables.json.
ARROW_TYPES = {
    "string": "string",
    "int32": "int32",
    "int64": "int64",
    "double": "double",
    "date": "date32[day]",
    "timestamp": "timestamp[ms, tz=UTC]",
    "binary": "binary",
}

# DuckDB type of each type name of schemas/tables.json.
DUCKDB_TYPES = {
    "string": "VARCHAR",
    "int32": "INTEGER",
    "int64": "BIGINT",
    "double": "DOUBLE",
    "date": "DATE",
    "timestamp": "TIMESTAMP WITH TIME ZONE",
    "binary": "BLOB",
}

# Tables whose partition value (dt) is a column of every row.
DT_COLUMN = {
    "user_daily": "day",
    "user_track_daily": "day",
    "user_artist_daily": "day",
    "user_profile_28d": "as_of",
}

failures = []

# None: every partition must be final (batch); else the set of "table/dt=D" that must be.
FINAL = None


def fail(msg):
    failures.append(msg)
    print("FAIL: " + msg, flush=True)


def parse_struct_fields(inner):
    """'a:string,b:int64' -> [('a', 'string'), ('b', 'int64')] (no nesting inside structs)."""
    out = []
    for part in inner.split(","):
        name, ty = part.split(":", 1)
        out.append((name.strip(), ty.strip()))
    return out


def arrow_type(decl):
    if decl in ARROW_TYPES:
        return ARROW_TYPES[decl]
    if decl.startswith("list<") and decl.endswith(">"):
        inner = decl[len("list<") : -1]
        if inner.startswith("struct<") and inner.endswith(">"):
            fields = parse_struct_fields(inner[len("struct<") : -1])
            body = ", ".join(f"{n}: {arrow_type(t)}" for n, t in fields)
            return f"list<item: struct<{body}>>"
        return f"list<item: {arrow_type(inner)}>"
    raise ValueError(f"unknown declared type {decl!r}")


def duckdb_type(decl):
    if decl in DUCKDB_TYPES:
        return DUCKDB_TYPES[decl]
    if decl.startswith("list<") and decl.endswith(">"):
        inner = decl[len("list<") : -1]
        if inner.startswith("struct<") and inner.endswith(">"):
            fields = parse_struct_fields(inner[len("struct<") : -1])
            body = ", ".join(f"{n} {duckdb_type(t)}" for n, t in fields)
            return f"STRUCT({body})[]"
        return f"{duckdb_type(inner)}[]"
    raise ValueError(f"unknown declared type {decl!r}")


def sort_value(v):
    """Strings compare byte-wise (UTF-8); everything else as Python compares it."""
    if isinstance(v, str):
        return v.encode("utf-8")
    return v


def qident(name):
    return '"' + name.replace('"', '""') + '"'


def partition_files(table_dir):
    """{dt: [parquet paths]} of one table directory; also flags stray entries."""
    parts = {}
    for entry in sorted(os.listdir(table_dir)):
        path = os.path.join(table_dir, entry)
        if not entry.startswith("dt="):
            fail(f"{table_dir}: unexpected entry {entry!r} (not a dt= partition)")
            continue
        dt = entry[len("dt=") :]
        files = []
        for f in sorted(os.listdir(path)):
            if f == "_SUCCESS":
                continue
            if not f.endswith(".parquet"):
                fail(f"{path}: unexpected file {f!r}")
                continue
            files.append(os.path.join(path, f))
        if not files:
            fail(f"{path}: partition directory without a data file")
        has = os.path.exists(os.path.join(path, "_SUCCESS"))
        name = f"{os.path.basename(table_dir)}/{entry}"
        if FINAL is None and not has:
            fail(f"{path}: no _SUCCESS (batch partitions are final)")
        if FINAL is not None and has != (name in FINAL):
            fail(f"{path}: _SUCCESS {'present' if has else 'missing'}, expected {'final' if name in FINAL else 'open'}")
        parts[dt] = files
    return parts


def check_pyarrow(out, table, decl, key, expected_parts):
    """Per-file schema, nulls, dt == day, key order, row counts; returns {dt: rows}."""
    table_dir = os.path.join(out, table)
    names = [c["name"] for c in decl]
    want_types = [arrow_type(c["type"]) for c in decl]
    nullable = {c["name"]: bool(c.get("nullable", False)) for c in decl}
    parts = partition_files(table_dir)
    counts = {}
    for dt, files in parts.items():
        n = 0
        for path in files:
            t = pq.read_table(path)
            got_names = t.schema.names
            if got_names != names:
                fail(f"{path}: columns {got_names}, expected {names}")
                continue
            for f, want in zip(t.schema, want_types):
                if str(f.type) != want:
                    fail(f"{path}: column {f.name} has Arrow type {f.type}, expected {want}")
                if f.nullable != nullable[f.name]:
                    fail(f"{path}: column {f.name} nullable={f.nullable}, declared nullable={nullable[f.name]}")
                if not nullable[f.name] and t.column(f.name).null_count:
                    fail(f"{path}: non-nullable column {f.name} has {t.column(f.name).null_count} nulls")
            n += t.num_rows
            dt_col = DT_COLUMN.get(table)
            if dt_col is not None:
                bad = [v for v in t.column(dt_col).to_pylist() if v is None or v.isoformat() != dt]
                if bad:
                    fail(f"{path}: {len(bad)} rows whose {dt_col} differs from dt={dt}, e.g. {bad[0]}")
            keys = list(zip(*[[sort_value(v) for v in t.column(k).to_pylist()] for k in key]))
            for i in range(1, len(keys)):
                if not keys[i - 1] < keys[i]:
                    fail(
                        f"{path}: rows {i - 1} and {i} are not in strictly increasing key order {key} "
                        f"(byte-wise): {keys[i - 1]!r} then {keys[i]!r}"
                    )
                    break
            if table == "user_daily":
                rows = t.select(["user_id", "listens", "listens_by_hour"]).to_pylist()
                for r in rows:
                    h = r["listens_by_hour"]
                    if h is None or len(h) != 24 or sum(h) != r["listens"]:
                        fail(
                            f"{path}: user {r['user_id']!r}: listens_by_hour {h} is not 24 counts summing "
                            f"to listens={r['listens']}"
                        )
                        break
            if table in ("user_daily", "user_profile_28d"):
                rows = t.select(["user_id", "listens", "skips", "skip_rate"]).to_pylist()
                for r in rows:
                    if r["listens"] <= 0 or r["skip_rate"] != r["skips"] / r["listens"]:
                        fail(
                            f"{path}: user {r['user_id']!r}: skip_rate {r['skip_rate']!r} != skips/listens "
                            f"= {r['skips']}/{r['listens']}"
                        )
                        break
        counts[dt] = n
    if counts != expected_parts:
        fail(f"{table}: rows per partition read by pyarrow {counts} != Rust reader {expected_parts}")

    # The whole table as one Hive-partitioned dataset.
    dset = ds.dataset(table_dir, format="parquet", partitioning="hive")
    if dset.schema.names != names + ["dt"]:
        fail(f"{table}: pyarrow dataset columns {dset.schema.names}, expected {names + ['dt']}")
    dcounts = {}
    scanned = dset.to_table(columns=["dt"]).column("dt").to_pylist()
    for v in scanned:
        k = v.isoformat() if hasattr(v, "isoformat") else str(v)
        dcounts[k] = dcounts.get(k, 0) + 1
    if dcounts != counts:
        fail(f"{table}: rows per dt via pyarrow.dataset {dcounts} != per-file counts {counts}")
    return counts


def check_duckdb(con, out, table, decl, expected_parts):
    names = [c["name"] for c in decl]
    src = f"read_parquet('{out}/{table}/*/*.parquet', hive_partitioning=true)"
    described = con.execute(f"DESCRIBE SELECT * FROM {src}").fetchall()
    got = [(r[0], r[1]) for r in described]
    want = [(c["name"], duckdb_type(c["type"])) for c in decl]
    if [g[0] for g in got] != names + ["dt"]:
        fail(f"{table}: DuckDB columns {[g[0] for g in got]}, expected {names + ['dt']}")
    for g, w in zip(got, want):
        if g != w:
            fail(f"{table}: DuckDB column {g[0]} has type {g[1]}, expected {w[0]} {w[1]}")
    rows = con.execute(f"SELECT CAST(dt AS VARCHAR), count(*) FROM {src} GROUP BY 1").fetchall()
    counts = {r[0]: r[1] for r in rows}
    if counts != expected_parts:
        fail(f"{table}: rows per dt via DuckDB {counts} != Rust reader {expected_parts}")
    for c in decl:
        if not c.get("nullable", False):
            (n,) = con.execute(f"SELECT count(*) FROM {src} WHERE {qident(c['name'])} IS NULL").fetchone()
            if n:
                fail(f"{table}: DuckDB finds {n} nulls in non-nullable column {c['name']}")
    dt_col = DT_COLUMN.get(table)
    if dt_col is not None:
        (n,) = con.execute(
            f"SELECT count(*) FROM {src} WHERE CAST(dt AS VARCHAR) IS DISTINCT FROM CAST({dt_col} AS VARCHAR)"
        ).fetchone()
        if n:
            fail(f"{table}: DuckDB finds {n} rows whose {dt_col} differs from dt")
    if table == "user_daily":
        (n,) = con.execute(
            f"SELECT count(*) FROM {src} WHERE len(listens_by_hour) <> 24 "
            f"OR list_sum(listens_by_hour) <> listens"
        ).fetchone()
        if n:
            fail(f"{table}: DuckDB finds {n} rows whose listens_by_hour is not 24 counts summing to listens")
    if table in ("user_daily", "user_profile_28d"):
        (n,) = con.execute(f"SELECT count(*) FROM {src} WHERE skip_rate <> skips / listens").fetchone()
        if n:
            fail(f"{table}: DuckDB finds {n} rows whose skip_rate differs from skips / listens")
    return counts


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    out, schemas_path, expected_path = sys.argv[1:]
    out = os.path.abspath(out)
    with open(schemas_path) as f:
        schemas = json.load(f)
    with open(expected_path) as f:
        expected = json.load(f)
    exp_tables = expected["tables"]
    report_rows = expected["report_rows"]
    global FINAL
    if expected.get("final") is not None:
        FINAL = set(expected["final"])

    con = duckdb.connect()
    checked = []
    for tdef in schemas["tables"]:
        table = tdef["name"]
        table_dir = os.path.join(out, table)
        exp_parts = exp_tables.get(table, {})
        if not os.path.isdir(table_dir):
            if exp_parts:
                fail(f"{table}: no directory, but the Rust reader read {exp_parts}")
            continue
        decl = tdef["columns"]
        before = len(failures)
        pa_counts = check_pyarrow(out, table, decl, tdef["key"], exp_parts)
        dd_counts = check_duckdb(con, out, table, decl, exp_parts)
        total = sum(pa_counts.values())
        if table in report_rows and total != report_rows[table]:
            fail(f"{table}: {total} rows read, the run report says {report_rows[table]}")
        if sum(dd_counts.values()) != total:
            fail(f"{table}: DuckDB reads {sum(dd_counts.values())} rows, pyarrow {total}")
        verdict = "ok" if len(failures) == before else f"{len(failures) - before} failures"
        print(f"{table}: {len(pa_counts)} partitions, {total} rows: {verdict}", flush=True)
        checked.append(table)
    for table in exp_tables:
        if table not in checked and exp_tables[table]:
            fail(f"{table}: read by the Rust reader but not checked here")
    for must in ("user_daily", "user_track_daily", "user_artist_daily", "user_profile_28d", "rejected_events"):
        if must not in checked:
            fail(f"{must}: no such table in {out}")

    if failures:
        print(f"check_outputs: {len(failures)} FAILURES in {out} (pyarrow {pa.__version__}, "
              f"duckdb {duckdb.__version__})", flush=True)
        return 1
    print(f"check_outputs: OK: {len(checked)} tables checked with pyarrow {pa.__version__} "
          f"and duckdb {duckdb.__version__}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
