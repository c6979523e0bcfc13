#!/usr/bin/env python3
"""Client checks with asyncpg against a PostgreSQL-protocol server.

asyncpg speaks only the extended protocol with binary values. Statements made with
conn.prepare() are named server-side statements; they are created once and reused in
many short transactions (`async with conn.transaction()`), so behind a
transaction-pooling server each use may land on a different upstream connection. Also
covered: executemany, a portal read in chunks (cursor with prefetch),
copy_records_to_table (binary COPY FROM STDIN) and copy_from_query (COPY TO STDOUT), a
startup parameter, a failing statement inside a transaction followed by ROLLBACK and
further use, and SET session settings that must stay in effect across transactions.

Connection: UNIDB_HOST, UNIDB_PORT, UNIDB_USER, UNIDB_PASSWORD, UNIDB_DB.
Prints one line per check; exits 1 with a message on the first mismatch.
"""

import asyncio
import datetime as dt
import io
import json
import os
import sys
import uuid
from decimal import Decimal

import asyncpg

TABLE = f"unidb_clients_asyncpg_{os.getpid()}"
COLUMNS = ("id", "i4", "i8", "txt", "flag", "f8", "num", "ts", "blob", "uid", "doc")
COLUMN_TYPES = ("int4", "int4", "int8", "text", "bool", "float8", "numeric",
                "timestamptz", "bytea", "uuid", "jsonb")
COLS = ", ".join(COLUMNS)
UTC = dt.timezone.utc
STARTUP_APP_NAME = "unidb_asyncpg_startup"
APP_NAME = "unidb_asyncpg"
TIMEZONE = "Europe/Paris"
# The SQLite backend keeps and prints timestamptz in UTC whatever TimeZone says.
SQLITE = os.environ.get("UNIDB_BACKEND") == "sqlite"


# Numeric with more significant digits than SQLite's REAL keeps (15) is refused
# there (SQLSTATE 22003) instead of being rounded; the widest exact value is used.
WIDE = "1234567890.12345" if SQLITE else "12345678901234567890.123456789"
# An unconstrained numeric keeps its input's trailing zeros in PostgreSQL, not in
# SQLite's REAL.
TEN_TEN = "10.1" if SQLITE else "10.10"


def in_session_tz(local, utc):
    """The text of a timestamptz as the server under test prints it."""
    return utc if SQLITE else local


def row(id_, i4, i8, txt, flag, f8, num, ts, blob, uid, doc):
    return (id_, i4, i8, txt, flag, f8, num, ts, blob, uid, doc)


# Values as asyncpg returns them: timestamptz in UTC, jsonb as its canonical text.
ROWS = [
    row(1, 2147483647, 9223372036854775807, "héllo 'wörld' ✓ \\ \t tab", True, 0.1,
        Decimal(WIDE),
        dt.datetime(2024, 2, 29, 23, 59, 59, 123456, tzinfo=UTC),
        b"\x00\xff\x10 bin\\ary", uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        '{"a": "x", "b": [1, 2.5, null], "nested": {"k": true}}'),
    row(2, -2147483648, -9223372036854775808, "", False, -1.5e300, Decimal("-0.000000001"),
        dt.datetime(1999, 12, 31, 17, 0, tzinfo=UTC), b"",
        uuid.UUID("00000000-0000-0000-0000-000000000000"), '[1, "two", null]'),
    row(3, 0, 0, None, None, None, None, None, None, None, None),
]
ROLLED_BACK = row(4, 4, 4, "rolled back", True, 4.0, Decimal("4"),
                  dt.datetime(2004, 4, 4, tzinfo=UTC), b"4", uuid.uuid4(), '{"n": 4}')
COPY_ROWS = [
    row(10, 10, 10, "copy\ttext\nline", True, 1.25, Decimal("10.10"),
        dt.datetime(2010, 10, 10, 10, 10, 10, tzinfo=UTC), bytes(range(256)),
        uuid.UUID("10101010-1010-1010-1010-101010101010"), '{"copy": "records"}'),
    row(11, None, None, None, None, None, None, None, None, None, None),
]


class CheckFailed(Exception):
    pass


def fail(message):
    raise CheckFailed(message)


def describe(value):
    return f"{value!r} ({type(value).__name__})"


def same(got, want):
    # asyncpg returns its own UUID class, a subclass of uuid.UUID.
    if isinstance(want, uuid.UUID):
        return isinstance(got, uuid.UUID) and got == want
    return type(got) is type(want) and got == want


def check(name, got, want):
    if not same(got, want):
        fail(f"{name}: expected {describe(want)}, got {describe(got)}")
    print(f"ok - {name}")


def check_row(name, got, want):
    if got is None:
        fail(f"{name}: expected a row, got none")
    got = tuple(got)
    if len(got) != len(want):
        fail(f"{name}: expected {len(want)} columns, got {len(got)}")
    for column, g, w in zip(COLUMNS, got, want):
        if not same(g, w):
            fail(f"{name}: column {column}: expected {describe(w)}, got {describe(g)}")
    print(f"ok - {name}")


async def check_raises(name, exc_type, coro):
    try:
        await coro
    except exc_type as e:
        print(f"ok - {name} (SQLSTATE {e.sqlstate})")
        return
    except asyncpg.PostgresError as e:
        fail(f"{name}: expected {exc_type.__name__} ({exc_type.sqlstate}), got "
             f"{type(e).__name__} ({e.sqlstate}): {e}")
    fail(f"{name}: expected {exc_type.__name__} ({exc_type.sqlstate}), but nothing was raised")


async def check_settings(conn, settings_stmt, label):
    async with conn.transaction():
        got = await settings_stmt.fetchrow()
        check(f"{label}: application_name, TimeZone, statement_timeout", tuple(got),
              (APP_NAME, TIMEZONE, "40s"))
        check(f"{label}: SHOW TimeZone", await conn.fetchval("SHOW TimeZone"), TIMEZONE)
        got = await conn.fetchval("SELECT '2024-07-01 12:00:00+00'::timestamptz::text")
        check(f"{label}: timestamptz rendered in {TIMEZONE}", got,
              in_session_tz("2024-07-01 14:00:00+02", "2024-07-01 12:00:00+00"))


async def run(conn):
    # --- connection, startup parameter, session settings ------------------------
    check("SELECT 1", await conn.fetchval("SELECT 1"), 1)
    check("application_name from the startup packet",
          await conn.fetchval("SHOW application_name"), STARTUP_APP_NAME)
    await conn.execute(f"SET application_name = '{APP_NAME}'")
    await conn.execute(f"SET TimeZone = '{TIMEZONE}'")
    check("ParameterStatus application_name after SET",
          conn.get_settings().application_name, APP_NAME)
    check("ParameterStatus TimeZone after SET", conn.get_settings().TimeZone, TIMEZONE)
    async with conn.transaction():  # a SET inside a committed transaction stays
        await conn.execute("SET statement_timeout = '40s'")
    settings_stmt = await conn.prepare(
        "SELECT current_setting('application_name'), current_setting('TimeZone'), "
        "current_setting('statement_timeout')")
    await check_settings(conn, settings_stmt, "after SET")

    # --- table, prepared INSERT via executemany -----------------------------------
    async with conn.transaction():
        await conn.execute(f"""CREATE TABLE {TABLE} (
            id int4 PRIMARY KEY, i4 int4, i8 int8, txt text, flag bool, f8 float8,
            num numeric, ts timestamptz, blob bytea, uid uuid, doc jsonb)""")
    placeholders = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
    insert = await conn.prepare(f"INSERT INTO {TABLE} ({COLS}) VALUES ({placeholders})")
    check("prepared INSERT parameter types",
          tuple(t.name for t in insert.get_parameters()), COLUMN_TYPES)
    async with conn.transaction():
        await insert.executemany(ROWS)
    select_by_id = await conn.prepare(f"SELECT {COLS} FROM {TABLE} WHERE id = $1")
    check("prepared SELECT parameter types",
          tuple(t.name for t in select_by_id.get_parameters()), ("int4",))
    check("prepared SELECT result types",
          tuple(a.type.name for a in select_by_id.get_attributes()), COLUMN_TYPES)
    check("prepared SELECT result names",
          tuple(a.name for a in select_by_id.get_attributes()), COLUMNS)

    # --- the same prepared statements across many transactions ------------------------
    for round_ in range(1, 4):
        for want in ROWS:
            async with conn.transaction():
                got = await select_by_id.fetchrow(want[0])
            check_row(f"prepared fetchrow, transaction round {round_}, id {want[0]}", got, want)
    count_stmt = await conn.prepare(f"SELECT count(*) FROM {TABLE}")
    for round_ in range(1, 3):
        async with conn.transaction():
            got = await select_by_id.fetch(1)
            check(f"prepared fetch, round {round_}: one row", len(got), 1)
            check(f"prepared fetchval count(*), round {round_}",
                  await count_stmt.fetchval(), len(ROWS))
    got = await select_by_id.fetchrow(2)  # outside an explicit transaction
    check_row("prepared fetchrow outside a transaction", got, ROWS[1])
    by_range = await conn.prepare(f"SELECT id, i8 FROM {TABLE} WHERE id >= $1 ORDER BY id")
    async with conn.transaction():
        got = [tuple(r) async for r in by_range.cursor(1, prefetch=1)]
    check("cursor over a portal, one row per fetch", got, [(r[0], r[2]) for r in ROWS])
    got = await conn.fetchrow("SELECT $1::int8 + 1, $2::numeric * 2, $3::text || '!', "
                              "$4::bytea, $5::uuid, $6::jsonb",
                              41, Decimal("1.25"), "x", b"\x00\x01", ROWS[0][9], '{"z":1}')
    check("binary parameters in expressions", tuple(got),
          (42, Decimal("2.50"), "x!", b"\x00\x01", ROWS[0][9], '{"z": 1}'))

    # --- failing statements inside a transaction, ROLLBACK, continued use ---------
    tr = conn.transaction()
    await tr.start()
    await insert.fetch(*ROLLED_BACK)
    await check_raises("duplicate key inside a transaction", asyncpg.UniqueViolationError,
                       insert.fetch(*ROWS[0]))
    await check_raises("statement in the failed transaction",
                       asyncpg.InFailedSQLTransactionError, select_by_id.fetchrow(1))
    await tr.rollback()
    check("not in a transaction after ROLLBACK", conn.is_in_transaction(), False)
    async with conn.transaction():
        got = await select_by_id.fetchrow(ROLLED_BACK[0])
    check("row inserted before the error was rolled back", got, None)
    async with conn.transaction():
        got = await select_by_id.fetchrow(1)
    check_row("prepared fetchrow after ROLLBACK", got, ROWS[0])

    divide = await conn.prepare("SELECT 100 / $1::int4")
    try:
        async with conn.transaction():
            check("prepared division before the error", await divide.fetchval(4), 25)
            await divide.fetchval(0)
        fail("prepared division by zero: no error raised")
    except asyncpg.DivisionByZeroError as e:
        print(f"ok - prepared division by zero inside a transaction (SQLSTATE {e.sqlstate})")
    for n, want in ((5, 20), (3, 33)):
        async with conn.transaction():
            check(f"same prepared division after ROLLBACK (100/{n})",
                  await divide.fetchval(n), want)
    try:
        async with conn.transaction():
            await insert.executemany([ROLLED_BACK, ROWS[1]])
        fail("executemany with a duplicate key: no error raised")
    except asyncpg.UniqueViolationError as e:
        print(f"ok - executemany with a duplicate key fails whole (SQLSTATE {e.sqlstate})")
    check("executemany with a duplicate key left no row",
          await select_by_id.fetchrow(ROLLED_BACK[0]), None)
    await check_settings(conn, settings_stmt, "after the failed transactions")

    # --- COPY FROM STDIN (copy_records_to_table) and COPY TO STDOUT -------------------
    async with conn.transaction():
        status = await conn.copy_records_to_table(TABLE, records=COPY_ROWS, columns=COLUMNS)
    check("copy_records_to_table status", status, f"COPY {len(COPY_ROWS)}")
    for want in COPY_ROWS:
        async with conn.transaction():
            got = await select_by_id.fetchrow(want[0])
        check_row(f"copied row {want[0]} read back by the prepared SELECT", got, want)
    out = io.BytesIO()
    status = await conn.copy_from_query(
        f"SELECT id, txt, num, doc FROM {TABLE} WHERE id IN (1, 3, 10) ORDER BY id",
        output=out, format="csv")
    check("copy_from_query status", status, "COPY 3")
    check("copy_from_query CSV text", out.getvalue().decode(),
          f"1,héllo 'wörld' ✓ \\ \t tab,{WIDE},"
          '"{""a"": ""x"", ""b"": [1, 2.5, null], ""nested"": {""k"": true}}"\n'
          "3,,,\n"
          f'10,"copy\ttext\nline",{TEN_TEN},"{{""copy"": ""records""}}"\n')

    # --- aggregate, settings once more, drop ----------------------------------------
    every_row = ROWS + COPY_ROWS
    async with conn.transaction():
        got = await conn.fetchrow(f"SELECT count(*), sum(i8), count(doc) FROM {TABLE}")
    check("count, sum(int8) and count(jsonb) over the table", tuple(got),
          (len(every_row), Decimal(sum(r[2] for r in every_row if r[2] is not None)),
           sum(1 for r in every_row if r[10] is not None)))
    doc = await conn.fetchval(f"SELECT doc FROM {TABLE} WHERE id = 1")
    check("jsonb value parses as JSON", json.loads(doc)["nested"], {"k": True})
    await check_settings(conn, settings_stmt, "at the end")

    async with conn.transaction():
        await conn.execute(f"DROP TABLE {TABLE}")
    check("table dropped", await conn.fetchval("SELECT to_regclass($1)::text", TABLE), None)


async def main():
    sys.stdout.reconfigure(line_buffering=True)  # keep check lines ordered with stderr
    missing = [v for v in ("UNIDB_HOST", "UNIDB_PORT", "UNIDB_USER", "UNIDB_DB")
               if not os.environ.get(v)]
    if missing:
        print(f"FAIL - missing environment variables: {', '.join(missing)}", file=sys.stderr)
        return 2
    print(f"asyncpg {asyncpg.__version__}, table {TABLE}")
    try:
        conn = await asyncpg.connect(
            host=os.environ["UNIDB_HOST"], port=int(os.environ["UNIDB_PORT"]),
            user=os.environ["UNIDB_USER"], password=os.environ.get("UNIDB_PASSWORD", ""),
            database=os.environ["UNIDB_DB"], ssl=False, timeout=10, command_timeout=60,
            server_settings={"application_name": STARTUP_APP_NAME})
    except (OSError, asyncpg.PostgresError) as e:
        print(f"FAIL - connect: {e}", file=sys.stderr)
        return 1
    status = 0
    try:
        await run(conn)
    except CheckFailed as e:
        print(f"FAIL - {e}", file=sys.stderr)
        status = 1
    except (asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        print(f"FAIL - unexpected {type(e).__name__} "
              f"(SQLSTATE {getattr(e, 'sqlstate', '-')}): {e}", file=sys.stderr)
        status = 1
    finally:
        try:
            if conn.is_in_transaction():
                await conn.execute("ROLLBACK")
            await conn.execute(f"DROP TABLE IF EXISTS {TABLE}")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
            print(f"warning - could not drop {TABLE}: {e}", file=sys.stderr)
        await conn.close()
    if status == 0:
        print("asyncpg: all checks passed")
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
