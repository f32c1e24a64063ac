#!/usr/bin/env python3
"""DuckDB peer job: the skipflow batch tables computed with plain DuckDB SQL.

Used as a performance baseline in benchmarks.

    python3 benches/duckdb_job.py INPUT.ndjson OUTPUT_DIR THREADS

Input: NDJSON of CLEAN listen events (every line a valid event, see
/work/shared/spec/events.md); duplicates (same event_id, same UTC day) may
exist and are removed by the contract's rule. Output: the four feature tables
of /work/shared/spec/tables.md as Hive-partitioned Parquet (zstd):

    OUTPUT_DIR/<table>/dt=YYYY-MM-DD/data_N.parquet

for user_daily, user_track_daily, user_artist_daily and user_profile_28d
(as-of range = [first day, last day] of the kept events, as a file batch run
with no range does).

Known physical differences from skipflow's files (values are identical):
DuckDB writes timestamps as TIMESTAMP(MICROS, UTC) rather than MILLIS (the
values are whole milliseconds), and it marks columns optional (nullable)
although none is ever null.
"""

import os
import sys
import time

import duckdb

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
SESSION_GAP_MS = 1_800_000
WINDOW_DAYS = 28
TOP_N = 10


def sql_str(s):
    return "'" + s.replace("'", "''") + "'"


def main(argv):
    if len(argv) != 4:
        print("usage: duckdb_job.py INPUT.ndjson OUTPUT_DIR THREADS", file=sys.stderr)
        return 2
    input_path, out_dir, threads = argv[1], argv[2], int(argv[3])
    if threads < 1:
        print("THREADS must be >= 1", file=sys.stderr)
        return 2
    os.makedirs(out_dir, exist_ok=True)

    started = time.monotonic()
    con = duckdb.connect()  # in-memory; spills to a temp dir if needed
    con.execute(f"SET threads = {threads}")
    # Instants are UTC; byte-wise string comparison is DuckDB's default
    # (no COLLATE anywhere).
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET default_collation = ''")

    def run(sql):
        con.execute(sql)

    # ---- input and dedup -------------------------------------------------
    # Kept events: of each (event_id, UTC day) group keep the smallest by
    # (ts, event_type, user_id, track_id, artist_id, ms_played,
    # track_duration_ms), strings byte-wise.
    run(f"""
    CREATE TEMP TABLE kept AS
    SELECT event_id, event_type, user_id, track_id, artist_id, ts, ms_played,
           track_duration_ms, dnum,
           CAST((ts % {DAY_MS}) // {HOUR_MS} AS INTEGER) AS hour
    FROM (
        SELECT *, CAST(ts // {DAY_MS} AS INTEGER) AS dnum
        FROM read_json({sql_str(input_path)},
            format = 'newline_delimited',
            columns = {{
                event_id: 'VARCHAR', event_type: 'VARCHAR', user_id: 'VARCHAR',
                track_id: 'VARCHAR', artist_id: 'VARCHAR', ts: 'BIGINT',
                ms_played: 'BIGINT', track_duration_ms: 'BIGINT'
            }})
    )
    QUALIFY row_number() OVER (
        PARTITION BY event_id, dnum
        ORDER BY ts, event_type, user_id, track_id, artist_id, ms_played,
                 track_duration_ms) = 1
    """)

    # ---- user_artist_daily -------------------------------------------------
    run("""
    CREATE TEMP TABLE uad AS
    SELECT user_id, artist_id, dnum,
           count(*)                                  AS listens,
           count(*) FILTER (WHERE event_type = 'play') AS plays,
           count(*) FILTER (WHERE event_type = 'skip') AS skips,
           CAST(sum(ms_played) AS BIGINT)            AS ms_played,
           count(DISTINCT track_id)                  AS distinct_tracks
    FROM kept
    GROUP BY user_id, artist_id, dnum
    """)

    # ---- user_track_daily ----------------------------------------------------
    run("""
    CREATE TEMP TABLE utd AS
    SELECT user_id, track_id, dnum,
           min(artist_id)                                         AS artist_id,
           count(*)                                               AS listens,
           count(*) FILTER (WHERE event_type = 'play') AS plays,
           count(*) FILTER (WHERE event_type = 'skip') AS skips,
           count(*) FILTER (WHERE event_type = 'skip' AND ms_played < 30000) AS early_skips,
           CAST(sum(ms_played) AS BIGINT)                         AS ms_played,
           CAST(CAST(sum(least(ms_played, track_duration_ms)) AS BIGINT) AS DOUBLE)
             / CAST(CAST(sum(track_duration_ms) AS BIGINT) AS DOUBLE) AS completion,
           min(ts)                                                AS first_ts,
           max(ts)                                                AS last_ts
    FROM kept
    GROUP BY user_id, track_id, dnum
    """)

    # ---- user_daily ------------------------------------------------------------
    by_hour = ", ".join(f"count(*) FILTER (WHERE hour = {h})" for h in range(24))
    run(f"""
    CREATE TEMP TABLE ud_base AS
    SELECT user_id, dnum,
           count(*)                                               AS listens,
           count(*) FILTER (WHERE event_type = 'play') AS plays,
           count(*) FILTER (WHERE event_type = 'skip') AS skips,
           count(*) FILTER (WHERE event_type = 'skip' AND ms_played < 30000) AS early_skips,
           CAST(sum(ms_played) AS BIGINT)                         AS ms_played,
           CAST(CAST(sum(least(ms_played, track_duration_ms)) AS BIGINT) AS DOUBLE)
             / CAST(CAST(sum(track_duration_ms) AS BIGINT) AS DOUBLE) AS completion,
           count(DISTINCT track_id)                               AS distinct_tracks,
           count(DISTINCT artist_id)                              AS distinct_artists,
           min(ts)                                                AS first_ts,
           max(ts)                                                AS last_ts,
           [{by_hour}]                                            AS listens_by_hour
    FROM kept
    GROUP BY user_id, dnum
    """)

    # Sessions and skip streaks, in the order (ts, event_id) within a user-day.
    # sess: running count of session starts (a start is the first listen or a
    #       gap > 30 min); play_grp: running count of plays, so consecutive
    #       skips share one play_grp value.
    run(f"""
    CREATE TEMP TABLE seq AS
    SELECT user_id, dnum, is_skip,
           sum(new_sess) OVER w AS sess,
           sum(1 - is_skip) OVER w AS play_grp
    FROM (
        SELECT user_id, dnum, ts, event_id,
               CAST(event_type = 'skip' AS INTEGER) AS is_skip,
               CASE WHEN lag(ts) OVER w0 IS NULL
                      OR ts - lag(ts) OVER w0 > {SESSION_GAP_MS}
                    THEN 1 ELSE 0 END AS new_sess
        FROM kept
        WINDOW w0 AS (PARTITION BY user_id, dnum ORDER BY ts, event_id)
    )
    WINDOW w AS (PARTITION BY user_id, dnum ORDER BY ts, event_id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW)
    """)
    run("""
    CREATE TEMP TABLE ud_sess AS
    SELECT user_id, dnum, count(*) AS sessions, max(n) AS longest_session
    FROM (SELECT user_id, dnum, sess, count(*) AS n
          FROM seq GROUP BY user_id, dnum, sess)
    GROUP BY user_id, dnum
    """)
    run("""
    CREATE TEMP TABLE ud_streak AS
    SELECT user_id, dnum, max(n) AS max_skip_streak
    FROM (SELECT user_id, dnum, play_grp, count(*) AS n
          FROM seq WHERE is_skip = 1 GROUP BY user_id, dnum, play_grp)
    GROUP BY user_id, dnum
    """)
    run("""
    CREATE TEMP TABLE ud_top AS
    SELECT user_id, dnum, artist_id AS top_artist_id, listens AS top_artist_listens
    FROM uad
    QUALIFY row_number() OVER (PARTITION BY user_id, dnum
                               ORDER BY listens DESC, artist_id ASC) = 1
    """)
    run("""
    CREATE TEMP TABLE ud AS
    SELECT b.user_id, b.dnum, b.listens, b.plays, b.skips, b.early_skips,
           CAST(b.skips AS DOUBLE) / CAST(b.listens AS DOUBLE) AS skip_rate,
           b.ms_played, b.completion, b.distinct_tracks, b.distinct_artists,
           s.sessions, s.longest_session,
           coalesce(k.max_skip_streak, 0) AS max_skip_streak,
           b.first_ts, b.last_ts, b.listens_by_hour,
           t.top_artist_id, t.top_artist_listens
    FROM ud_base b
    JOIN ud_sess s USING (user_id, dnum)
    JOIN ud_top t USING (user_id, dnum)
    LEFT JOIN ud_streak k USING (user_id, dnum)
    """)
    run("DROP TABLE seq; DROP TABLE ud_base; DROP TABLE ud_sess; "
        "DROP TABLE ud_streak; DROP TABLE ud_top")

    # ---- user_profile_28d ------------------------------------------------------
    # As-of days: [first day, last day] of the kept events. A daily row of
    # day d contributes to as_of d .. d+27 (clipped to the last day).
    bounds = con.execute("SELECT min(dnum), max(dnum) FROM kept").fetchone()
    run("DROP TABLE kept")
    if bounds[0] is None:
        print("no events in input", file=sys.stderr)
        return 1
    last = bounds[1]
    expand = f"CROSS JOIN range({WINDOW_DAYS}) k(off) WHERE d.dnum + k.off <= {last}"

    run(f"""
    CREATE TEMP TABLE prof_base AS
    SELECT d.user_id, CAST(d.dnum + k.off AS INTEGER) AS asn,
           count(*)                         AS active_days,
           CAST(sum(d.listens) AS BIGINT)   AS listens,
           CAST(sum(d.plays) AS BIGINT)     AS plays,
           CAST(sum(d.skips) AS BIGINT)     AS skips,
           CAST(sum(d.ms_played) AS BIGINT) AS ms_played
    FROM ud d {expand}
    GROUP BY ALL
    """)

    def top_list(daily, id_col, name):
        # Per (user, as_of, id) window sums; distinct count; top 10 by
        # plays desc, skips asc, id asc among ids with at least one play.
        run(f"""
        CREATE TEMP TABLE {name}_w AS
        SELECT d.user_id, CAST(d.dnum + k.off AS INTEGER) AS asn, d.{id_col},
               CAST(sum(d.plays) AS BIGINT) AS plays,
               CAST(sum(d.skips) AS BIGINT) AS skips
        FROM {daily} d {expand}
        GROUP BY ALL
        """)
        run(f"""
        CREATE TEMP TABLE {name}_distinct AS
        SELECT user_id, asn, count(*) AS n FROM {name}_w GROUP BY user_id, asn
        """)
        run(f"""
        CREATE TEMP TABLE {name}_top AS
        SELECT user_id, asn,
               list(struct_pack({id_col} := {id_col}, plays := plays, skips := skips)
                    ORDER BY plays DESC, skips ASC, {id_col} ASC) AS top
        FROM (
            SELECT * FROM {name}_w WHERE plays > 0
            QUALIFY row_number() OVER (PARTITION BY user_id, asn
                     ORDER BY plays DESC, skips ASC, {id_col} ASC) <= {TOP_N}
        )
        GROUP BY user_id, asn
        """)
        run(f"DROP TABLE {name}_w")

    top_list("uad", "artist_id", "pa")
    top_list("utd", "track_id", "pt")

    run("""
    CREATE TEMP TABLE prof AS
    SELECT b.user_id, b.asn, b.active_days, b.listens, b.plays, b.skips,
           CAST(b.skips AS DOUBLE) / CAST(b.listens AS DOUBLE) AS skip_rate,
           b.ms_played,
           dt.n AS distinct_tracks,
           da.n AS distinct_artists,
           coalesce(ta.top,
                    CAST([] AS STRUCT(artist_id VARCHAR, plays BIGINT, skips BIGINT)[]))
             AS top_artists,
           coalesce(tt.top,
                    CAST([] AS STRUCT(track_id VARCHAR, plays BIGINT, skips BIGINT)[]))
             AS top_tracks
    FROM prof_base b
    JOIN pt_distinct dt USING (user_id, asn)
    JOIN pa_distinct da USING (user_id, asn)
    LEFT JOIN pa_top ta USING (user_id, asn)
    LEFT JOIN pt_top tt USING (user_id, asn)
    """)

    # ---- write -----------------------------------------------------------------
    def day(col):
        return f"(DATE '1970-01-01' + {col})"

    def ts(col):
        return f"CAST(epoch_ms({col}) AS TIMESTAMPTZ)"

    outputs = {
        "user_daily": (f"""
            SELECT user_id, {day('dnum')} AS day, listens, plays, skips,
                   early_skips, skip_rate, ms_played, completion,
                   distinct_tracks, distinct_artists, sessions,
                   longest_session, max_skip_streak,
                   {ts('first_ts')} AS first_listen_at,
                   {ts('last_ts')} AS last_listen_at,
                   listens_by_hour, top_artist_id, top_artist_listens,
                   {day('dnum')} AS dt
            FROM ud""", "user_id"),
        "user_track_daily": (f"""
            SELECT user_id, track_id, {day('dnum')} AS day, artist_id, listens,
                   plays, skips, early_skips, ms_played, completion,
                   {ts('first_ts')} AS first_listen_at,
                   {ts('last_ts')} AS last_listen_at,
                   {day('dnum')} AS dt
            FROM utd""", "user_id, track_id"),
        "user_artist_daily": (f"""
            SELECT user_id, artist_id, {day('dnum')} AS day, listens, plays,
                   skips, ms_played, distinct_tracks,
                   {day('dnum')} AS dt
            FROM uad""", "user_id, artist_id"),
        "user_profile_28d": (f"""
            SELECT user_id, {day('asn')} AS as_of, active_days, listens, plays,
                   skips, skip_rate, ms_played, distinct_tracks,
                   distinct_artists, top_artists, top_tracks,
                   {day('asn')} AS dt
            FROM prof""", "user_id"),
    }
    for table, (select, order) in outputs.items():
        target = os.path.join(out_dir, table)
        # ORDER_BY sorts the rows of each written file by the table key
        # (within a partition the day is constant); an ORDER BY in the query
        # is not kept by a multi-threaded partitioned write.
        run(f"""
        COPY ({select})
        TO {sql_str(target)}
        (FORMAT PARQUET, PARTITION_BY (dt), ORDER_BY ({order}),
         COMPRESSION zstd, OVERWRITE)
        """)

    rows = {t: con.execute(f"SELECT count(*) FROM {n}").fetchone()[0]
            for t, n in [("user_daily", "ud"), ("user_track_daily", "utd"),
                         ("user_artist_daily", "uad"), ("user_profile_28d", "prof")]}
    print(f"duckdb_job: {time.monotonic() - started:.2f}s, threads={threads}, "
          + ", ".join(f"{t}={n}" for t, n in rows.items()), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
