#!/usr/bin/env python3
"""Client checks with psycopg 3 against a PostgreSQL-protocol server.

Named server-side prepared statements (prepare_threshold = 0 and prepare=True) are
created once and reused across many short transactions, so behind a transaction-pooling
server each use may land on a different upstream connection. Also covered: text and
binary results and parameters, executemany (pipelined) with RETURNING, COPY FROM STDIN
and COPY TO STDOUT in text and binary format, a failing statement inside a transaction
followed by ROLLBACK and further use, and session settings (SET) that must stay in
effect across later transactions while SET LOCAL and a rolled-back SET must not.

Connection: UNIDB_HOST, UNIDB_PORT, UNIDB_USER, UNIDB_PASSWORD, UNIDB_DB.
Prints one line per check; exits 1 with a message on the first mismatch.
"""

import datetime as dt
import os
import sys
import uuid
from decimal import Decimal

import psycopg
from psycopg import errors
from psycopg.pq import TransactionStatus
from psycopg.types.json import Jsonb

TABLE = f"unidb_clients_psycopg_{os.getpid()}"
COLUMNS = ("id", "i4", "i8", "txt", "flag", "f8", "num", "ts", "blob", "uid", "doc")
COLUMN_TYPES = ("int4", "int4", "int8", "text", "bool", "float8", "numeric",
                "timestamptz", "bytea", "uuid", "jsonb")
COLS = ", ".join(COLUMNS)
UTC = dt.timezone.utc
APP_NAME = "unidb_psycopg"
TIMEZONE = "Asia/Tokyo"
# The SQLite backend keeps and prints timestamptz in UTC whatever TimeZone says.
SQLITE = os.environ.get("UNIDB_BACKEND") == "sqlite"


# Numeric with more significant digits than SQLite's REAL keeps (15) is refused
# there (SQLSTATE 22003) instead of being rounded; the widest exact value is used.
WIDE = "1234567890.12345" if SQLITE else "12345678901234567890.123456789"


def in_session_tz(local, utc):
    """What the server under test prints for a timestamptz."""
    return utc if SQLITE else local


def row(id_, i4, i8, txt, flag, f8, num, ts, blob, uid, doc):
    return (id_, i4, i8, txt, flag, f8, num, ts, blob, uid, doc)


# Values as psycopg returns them (jsonb comes back parsed, bytea as bytes).
ROWS = [
    row(1, 2147483647, 9223372036854775807, "héllo 'wörld' ✓ \\ \t tab", True, 0.1,
        Decimal(WIDE),
        dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC),
        b"\x00\xff\x10 bin\\ary", uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        {"a": "x", "b": [1, 2.5, None], "nested": {"k": True}}),
    row(2, -2147483648, -9223372036854775808, "", False, -1.5e300,
        Decimal("-0.000000001"),
        dt.datetime(1999, 12, 31, 12, 0, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        b"", uuid.UUID("00000000-0000-0000-0000-000000000000"), [1, "two", None]),
    row(3, 0, 0, None, None, None, None, None, None, None, None),
]
# Inserted inside a transaction that is rolled back: must never be seen.
ROLLED_BACK = row(4, 4, 4, "rolled back", True, 4.0, Decimal("4"),
                  dt.datetime(2004, 4, 4, tzinfo=UTC), b"4", uuid.uuid4(), {"n": 4})
# Inserted through a binary cursor with binary parameters.
BINARY_ROW = row(5, 55, 5_000_000_000, "binary params", False, 2.5e-10, Decimal("55.50"),
                 dt.datetime(2030, 1, 1, 0, 0, 0, 1, tzinfo=UTC), bytes(range(256)),
                 uuid.UUID("f47ac10b-58cc-4372-a567-0e02b2c3d479"), {"bin": [True, False]})
# Loaded with COPY FROM STDIN, text format then binary format.
COPY_TEXT_ROWS = [
    row(10, 10, 10, "copy\ttext\nline", True, 1.25, Decimal("10.10"),
        dt.datetime(2010, 10, 10, 10, 10, 10, tzinfo=UTC), b"\x01\x02\\",
        uuid.UUID("10101010-1010-1010-1010-101010101010"), {"copy": "text"}),
    row(11, None, None, None, None, None, None, None, None, None, None),
]
COPY_BINARY_ROWS = [
    row(12, 12, -12, "copy binary", False, -0.0, Decimal("-12.000"),
        dt.datetime(2012, 12, 12, 12, 12, 12, 120000, tzinfo=UTC), b"\x00" * 3,
        uuid.UUID("12121212-1212-1212-1212-121212121212"), {"copy": "binary", "n": 12}),
]

SELECT_BY_ID = f"SELECT {COLS} FROM {TABLE} WHERE id = %s"
INSERT = f"INSERT INTO {TABLE} ({COLS}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
INSERT_BINARY = f"INSERT INTO {TABLE} ({COLS}) VALUES ({', '.join(['%b'] * len(COLUMNS))})"


class CheckFailed(Exception):
    pass


def fail(message):
    raise CheckFailed(message)


def describe(value):
    return f"{value!r} ({type(value).__name__})"


def check(name, got, want):
    """Equal value and same Python type (so 1 != 1.0 != Decimal(1) != True)."""
    if type(got) is not type(want) or got != want:
        fail(f"{name}: expected {describe(want)}, got {describe(got)}")
    print(f"ok - {name}")


def check_row(name, got, want):
    """Compares a whole row column by column; one line for the row."""
    if got is None:
        fail(f"{name}: expected a row, got none")
    if len(got) != len(want):
        fail(f"{name}: expected {len(want)} columns, got {len(got)}")
    for column, g, w in zip(COLUMNS, got, want):
        if type(g) is not type(w) or g != w:
            fail(f"{name}: column {column}: expected {describe(w)}, got {describe(g)}")
    print(f"ok - {name}")


def check_raises(name, exc_type, sqlstate, fn):
    try:
        fn()
    except exc_type as e:
        if e.sqlstate != sqlstate:
            fail(f"{name}: expected SQLSTATE {sqlstate}, got {e.sqlstate}: {e}")
        print(f"ok - {name} (SQLSTATE {e.sqlstate})")
        return
    except psycopg.Error as e:
        fail(f"{name}: expected {exc_type.__name__} ({sqlstate}), got "
             f"{type(e).__name__} ({e.sqlstate}): {e}")
    fail(f"{name}: expected {exc_type.__name__} ({sqlstate}), but no error was raised")


def as_jsonb(r):
    """A row ready to be sent: the jsonb value wrapped for psycopg's jsonb dumper."""
    return r[:-1] + (None if r[-1] is None else Jsonb(r[-1]),)


def check_settings(conn, label):
    """The session settings made at the start, seen from inside a transaction."""
    with conn.transaction():
        got = conn.execute("SELECT current_setting('application_name'), "
                           "current_setting('TimeZone'), current_setting('statement_timeout')",
                           prepare=True).fetchone()
        check(f"{label}: application_name, TimeZone, statement_timeout", got,
              (APP_NAME, TIMEZONE, "40s"))
        got = conn.execute("SELECT '2024-01-02 03:04:05+00'::timestamptz::text").fetchone()[0]
        check(f"{label}: timestamptz rendered in {TIMEZONE}", got,
              in_session_tz("2024-01-02 12:04:05+09", "2024-01-02 03:04:05+00"))
        check(f"{label}: SHOW application_name",
              conn.execute("SHOW application_name").fetchone()[0], APP_NAME)


def run(conn):
    cur = conn.cursor()

    # --- connection and session settings ---------------------------------------
    check("SELECT 1", conn.execute("SELECT 1").fetchone()[0], 1)
    check("server_version reported", conn.info.server_version > 0, True)
    conn.execute(f"SET application_name = '{APP_NAME}'")
    conn.execute(f"SET TimeZone = '{TIMEZONE}'")
    check("ParameterStatus application_name after SET",
          conn.info.parameter_status("application_name"), APP_NAME)
    check("ParameterStatus TimeZone after SET", conn.info.parameter_status("TimeZone"), TIMEZONE)
    with conn.transaction():  # a SET inside a committed transaction stays
        conn.execute("SET statement_timeout = '40s'")
    with conn.transaction():  # SET LOCAL ends with its transaction
        conn.execute("SET LOCAL application_name = 'set_local'")
        check("SET LOCAL visible inside its transaction",
              conn.execute("SHOW application_name").fetchone()[0], "set_local")
    conn.execute("BEGIN")  # a SET inside a rolled-back transaction is undone
    conn.execute("SET statement_timeout = '41s'")
    conn.execute("ROLLBACK")
    check_settings(conn, "after SET LOCAL and rolled-back SET")

    # --- table and pipelined executemany with prepared INSERT ... RETURNING -------
    with conn.transaction():
        conn.execute(f"""CREATE TABLE {TABLE} (
            id int4 PRIMARY KEY, i4 int4, i8 int8, txt text, flag bool, f8 float8,
            num numeric, ts timestamptz, blob bytea, uid uuid, doc jsonb)""")
    with conn.transaction():
        cur.executemany(INSERT + " RETURNING id", [as_jsonb(r) for r in ROWS], returning=True)
        ids = []
        while True:
            ids.extend(r[0] for r in cur.fetchall())
            if not cur.nextset():
                break
        check("executemany INSERT ... RETURNING ids", ids, [r[0] for r in ROWS])

    # --- one prepared SELECT reused across transactions, text results ------------
    for round_ in range(1, 4):
        for want in ROWS:
            with conn.transaction():
                got = cur.execute(SELECT_BY_ID, (want[0],), prepare=True).fetchone()
            check_row(f"prepared SELECT, text, transaction round {round_}, id {want[0]}", got, want)
    with conn.transaction():
        got = cur.execute(f"SELECT ts FROM {TABLE} WHERE id = 1", prepare=True).fetchone()[0]
    # psycopg converts binary timestamptz to the session's TimeZone itself.
    check("timestamptz value carries +09:00", got.utcoffset(), dt.timedelta(hours=9))
    with conn.transaction():
        types = [c.type_code for c in
                 cur.execute(SELECT_BY_ID, (1,), prepare=True).description]
    names = [conn.adapters.types.get(oid).name for oid in types]
    check("result column types", tuple(names), COLUMN_TYPES)

    # --- binary cursor: binary results and binary parameters ---------------------
    bcur = conn.cursor(binary=True)
    with conn.transaction():
        bcur.execute(INSERT_BINARY, as_jsonb(BINARY_ROW), prepare=True)
        check("binary INSERT rowcount", bcur.rowcount, 1)
    for round_ in range(1, 3):
        for want in ROWS + [BINARY_ROW]:
            with conn.transaction():
                got = bcur.execute(SELECT_BY_ID, (want[0],), prepare=True).fetchone()
            check_row(f"prepared SELECT, binary, transaction round {round_}, id {want[0]}",
                      got, want)
    with conn.transaction():
        got = bcur.execute(f"SELECT %b::int8 + 1, %b::numeric * 2, %b::text || '!'",
                           (41, Decimal("1.25"), "x"), prepare=True).fetchone()
    check("binary parameters in expressions", got, (42, Decimal("2.50"), "x!"))

    # --- failing statements inside a transaction, ROLLBACK, continued use ---------
    conn.execute("BEGIN")
    cur.execute(INSERT, as_jsonb(ROLLED_BACK), prepare=True)
    check_raises("duplicate key inside a transaction", errors.UniqueViolation, "23505",
                 lambda: cur.execute(INSERT, as_jsonb(ROWS[0]), prepare=True))
    check("transaction status after the error", conn.info.transaction_status,
          TransactionStatus.INERROR)
    check_raises("statement in the failed transaction", errors.InFailedSqlTransaction, "25P02",
                 lambda: cur.execute(SELECT_BY_ID, (1,), prepare=True))
    conn.execute("ROLLBACK")
    check("transaction status after ROLLBACK", conn.info.transaction_status,
          TransactionStatus.IDLE)
    with conn.transaction():
        got = cur.execute(SELECT_BY_ID, (ROLLED_BACK[0],), prepare=True).fetchone()
    check("row inserted before the error was rolled back", got, None)
    with conn.transaction():
        got = cur.execute(SELECT_BY_ID, (1,), prepare=True).fetchone()
    check_row("prepared SELECT after ROLLBACK", got, ROWS[0])

    divide = "SELECT 100 / %s::int4"
    conn.execute("BEGIN")
    check("prepared division before the error",
          cur.execute(divide, (4,), prepare=True).fetchone()[0], 25)
    check_raises("prepared division by zero inside a transaction", errors.DivisionByZero,
                 "22012", lambda: cur.execute(divide, (0,), prepare=True))
    conn.execute("ROLLBACK")
    for n, want in ((5, 20), (3, 33)):
        with conn.transaction():
            got = cur.execute(divide, (n,), prepare=True).fetchone()[0]
        check(f"same prepared division after ROLLBACK (100/{n})", got, want)
    check_settings(conn, "after the failed transactions")

    # --- COPY FROM STDIN, text and binary -----------------------------------------
    with conn.transaction():
        with cur.copy(f"COPY {TABLE} ({COLS}) FROM STDIN") as copy:
            for r in COPY_TEXT_ROWS:
                copy.write_row(as_jsonb(r))
    check("COPY FROM STDIN (text) rowcount", cur.rowcount, len(COPY_TEXT_ROWS))
    with conn.transaction():
        with cur.copy(f"COPY {TABLE} ({COLS}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(list(COLUMN_TYPES))
            for r in COPY_BINARY_ROWS:
                copy.write_row(as_jsonb(r))
    check("COPY FROM STDIN (binary) rowcount", cur.rowcount, len(COPY_BINARY_ROWS))
    for want in COPY_TEXT_ROWS + COPY_BINARY_ROWS:
        with conn.transaction():
            got = cur.execute(SELECT_BY_ID, (want[0],), prepare=True).fetchone()
        check_row(f"COPY-loaded row {want[0]} read back by the prepared SELECT", got, want)

    # --- COPY TO STDOUT, text and binary ------------------------------------------
    every_row = sorted(ROWS + [BINARY_ROW] + COPY_TEXT_ROWS + COPY_BINARY_ROWS)
    for fmt in ("TEXT", "BINARY"):
        with conn.transaction():
            with cur.copy(f"COPY (SELECT {COLS} FROM {TABLE} ORDER BY id) "
                          f"TO STDOUT (FORMAT {fmt})") as copy:
                copy.set_types(list(COLUMN_TYPES))
                # psycopg's binary COPY loader hands bytea out as memoryview.
                got = [tuple(bytes(v) if isinstance(v, memoryview) else v for v in r)
                       for r in copy.rows()]
        check(f"COPY TO STDOUT ({fmt.lower()}) row count", len(got), len(every_row))
        for g, w in zip(got, every_row):
            check_row(f"COPY TO STDOUT ({fmt.lower()}) row {w[0]}", g, w)

    # --- aggregate over everything, then the settings once more -------------------
    with conn.transaction():
        got = cur.execute(f"SELECT count(*), sum(i8), count(doc) FROM {TABLE}",
                          prepare=True).fetchone()
    check("count, sum(int8) and count(jsonb) over the table", got,
          (len(every_row), Decimal(sum(r[2] for r in every_row if r[2] is not None)),
           sum(1 for r in every_row if r[10] is not None)))
    check_settings(conn, "at the end")

    with conn.transaction():
        conn.execute(f"DROP TABLE {TABLE}")
    check("table dropped",
          conn.execute("SELECT to_regclass(%s)::text", (TABLE,)).fetchone()[0], None)


def main():
    sys.stdout.reconfigure(line_buffering=True)  # keep check lines ordered with stderr
    missing = [v for v in ("UNIDB_HOST", "UNIDB_PORT", "UNIDB_USER", "UNIDB_DB")
               if not os.environ.get(v)]
    if missing:
        print(f"FAIL - missing environment variables: {', '.join(missing)}", file=sys.stderr)
        return 2
    conninfo = dict(host=os.environ["UNIDB_HOST"], port=os.environ["UNIDB_PORT"],
                    user=os.environ["UNIDB_USER"], password=os.environ.get("UNIDB_PASSWORD", ""),
                    dbname=os.environ["UNIDB_DB"], sslmode="disable", connect_timeout=10)
    print(f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}), table {TABLE}")
    try:
        conn = psycopg.connect(**conninfo, autocommit=True)
    except psycopg.Error as e:
        print(f"FAIL - connect: {e}", file=sys.stderr)
        return 1
    status = 0
    with conn:
        conn.prepare_threshold = 0  # every statement is a named server-side statement
        try:
            run(conn)
        except CheckFailed as e:
            print(f"FAIL - {e}", file=sys.stderr)
            status = 1
        except psycopg.Error as e:
            print(f"FAIL - unexpected {type(e).__name__} (SQLSTATE {e.sqlstate}): {e}",
                  file=sys.stderr)
            status = 1
        finally:
            if not conn.closed:
                try:
                    if conn.info.transaction_status != TransactionStatus.IDLE:
                        conn.execute("ROLLBACK")
                    conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
                except psycopg.Error as e:
                    print(f"warning - could not drop {TABLE}: {e}", file=sys.stderr)
    if status == 0:
        print("psycopg: all checks passed")
    return status


if __name__ == "__main__":
    sys.exit(main())
