-- Client checks with psql against a PostgreSQL-protocol server.
--
-- Run:  psql -X -q -v ON_ERROR_STOP=1 -v tbl=TABLE_NAME -f tests/clients/psql_client.sql
-- (tests/clients/run.sh psql does this with the UNIDB_* connection variables).
--
-- SQL-level prepared statements (PREPARE / EXECUTE) are created once and executed in
-- several transactions, so behind a transaction-pooling server each EXECUTE may land on
-- a different upstream connection. Also covered: \set and \gset, COPY FROM STDIN with
-- inline data, a failing statement inside a transaction followed by ROLLBACK and
-- further use, and SET session settings that must stay in effect across transactions
-- while SET LOCAL and a rolled-back SET must not. Each check is psql_check.sql: it
-- prints one line, and on a mismatch it stops the script with a non-zero exit status.

\set ON_ERROR_STOP on
\set QUIET on
\if :{?tbl}
\else
  SELECT 'unidb_clients_psql_' || substr(md5(random()::text), 1, 8) AS tbl \gset
\endif
\echo psql :VERSION_NAME '- table' :tbl

-- --- connection and session settings ---------------------------------------------
SELECT 1 AS got \gset
\set name 'SELECT 1'
\set want 1
\ir psql_check.sql

SET application_name = 'unidb_psql';
SET TimeZone = 'America/Sao_Paulo';
BEGIN;
SET statement_timeout = '40s';
COMMIT;
BEGIN;
SET LOCAL application_name = 'set_local';
SHOW application_name \gset got_
\set got :got_application_name
\set name 'SET LOCAL visible inside its transaction'
\set want set_local
\ir psql_check.sql
COMMIT;
BEGIN;
SET statement_timeout = '41s';
ROLLBACK;

-- The settings, checked now and again after the other transactions below.
-- The SQLite backend keeps and prints timestamptz in UTC whatever TimeZone says.
\set backend postgres
\getenv backend UNIDB_BACKEND
SELECT :'backend' = 'sqlite' AS utc_backend \gset
\if :utc_backend
\set want_settings 'unidb_psql|America/Sao_Paulo|40s|2024-01-02 03:04:05+00'
\set want_ts '2010-10-10 10:10:10+00'
-- Numeric wider than the 15 significant digits SQLite's REAL keeps is refused there.
\set wide 1234567890.12345
-- An unconstrained numeric keeps no trailing zeros in SQLite's REAL.
\set ten_ten 10.1
\set want_ts1 '2024-02-29 23:59:59.123456+00'
\set want_ts2 '1999-12-31 17:00:00+00'
\else
\set want_settings 'unidb_psql|America/Sao_Paulo|40s|2024-01-02 00:04:05-03'
\set want_ts '2010-10-10 07:10:10-03'
\set wide 12345678901234567890.123456789
\set ten_ten 10.10
\set want_ts1 '2024-02-29 20:59:59.123456-03'
\set want_ts2 '1999-12-31 15:00:00-02'
\endif
\set settings_query 'SELECT concat_ws(''|'', current_setting(''application_name''), current_setting(''TimeZone''), current_setting(''statement_timeout''), ''2024-01-02 03:04:05+00''::timestamptz) AS got'
BEGIN;
:settings_query \gset
COMMIT;
\set name 'after SET LOCAL and rolled-back SET: application_name, TimeZone, statement_timeout, timestamptz text'
\set want :want_settings
\ir psql_check.sql

-- --- table, prepared INSERT --------------------------------------------------------
CREATE TABLE :"tbl" (
    id int4 PRIMARY KEY, i4 int4, i8 int8, txt text, flag bool, f8 float8,
    num numeric, ts timestamptz, blob bytea, uid uuid, doc jsonb);

PREPARE ins (int4, int4, int8, text, bool, float8, numeric, timestamptz, bytea, uuid, jsonb) AS
    INSERT INTO :"tbl" (id, i4, i8, txt, flag, f8, num, ts, blob, uid, doc)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11);
PREPARE sel (int4) AS
    SELECT id, i4, i8, txt, flag, f8, num, ts, blob, uid, doc FROM :"tbl" WHERE id = $1;

\set label 'from a psql variable, it''s quoted'
BEGIN;
EXECUTE ins(1, 2147483647, 9223372036854775807, 'héllo ''wörld'' ✓ \', true, 0.1,
            :wide, '2024-02-29 23:59:59.123456+00', '\x00ff10',
            'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{"nested": {"k": true}, "b": [1, 2.5, null], "a": "x"}');
EXECUTE ins(2, -2147483648, -9223372036854775808, :'label', false, -1.5e300,
            -0.000000001, '1999-12-31 12:00:00-05', '', '00000000-0000-0000-0000-000000000000',
            '[1, "two", null]');
EXECUTE ins(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
COMMIT;

-- Each row as the text psql receives, joined with '|'.
\set row1 '1|2147483647|9223372036854775807|héllo ''wörld'' ✓ \\|t|0.1|' :wide '|' :want_ts1 '|\\x00ff10|a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11|{"a": "x", "b": [1, 2.5, null], "nested": {"k": true}}'
\set row2 '2|-2147483648|-9223372036854775808|from a psql variable, it''s quoted|f|-1.5e+300|-0.000000001|' :want_ts2 '|\\x|00000000-0000-0000-0000-000000000000|[1, "two", null]'
\set row3 '3|FALSE|FALSE|FALSE|FALSE|FALSE|FALSE|FALSE|FALSE|FALSE|FALSE'

-- --- the same prepared SELECT in several transactions ----------------------------------
BEGIN;
EXECUTE sel(1) \gset r_
COMMIT;
\set got :r_id '|' :r_i4 '|' :r_i8 '|' :r_txt '|' :r_flag '|' :r_f8 '|' :r_num '|' :r_ts '|' :r_blob '|' :r_uid '|' :r_doc
\set name 'EXECUTE sel, transaction 1, row 1'
\set want :row1
\ir psql_check.sql

BEGIN;
EXECUTE sel(2) \gset r_
COMMIT;
\set got :r_id '|' :r_i4 '|' :r_i8 '|' :r_txt '|' :r_flag '|' :r_f8 '|' :r_num '|' :r_ts '|' :r_blob '|' :r_uid '|' :r_doc
\set name 'EXECUTE sel, transaction 2, row 2'
\set want :row2
\ir psql_check.sql

BEGIN;
EXECUTE sel(3) \gset r_
COMMIT;
\set got :r_id '|' :{?r_i4} '|' :{?r_i8} '|' :{?r_txt} '|' :{?r_flag} '|' :{?r_f8} '|' :{?r_num} '|' :{?r_ts} '|' :{?r_blob} '|' :{?r_uid} '|' :{?r_doc}
\set name 'EXECUTE sel, transaction 3, row 3 (all NULL but the id)'
\set want :row3
\ir psql_check.sql

BEGIN;
EXECUTE sel(1) \gset r_
COMMIT;
\set got :r_id '|' :r_i4 '|' :r_i8 '|' :r_txt '|' :r_flag '|' :r_f8 '|' :r_num '|' :r_ts '|' :r_blob '|' :r_uid '|' :r_doc
\set name 'EXECUTE sel, transaction 4, row 1 again'
\set want :row1
\ir psql_check.sql

SELECT concat_ws(',', pg_typeof(id), pg_typeof(i8), pg_typeof(txt), pg_typeof(flag),
                 pg_typeof(f8), pg_typeof(num), pg_typeof(ts), pg_typeof(blob), pg_typeof(uid),
                 pg_typeof(doc)) AS got
FROM :"tbl" WHERE id = 1 \gset
\set name 'column types'
\set want 'integer,bigint,text,boolean,double precision,numeric,timestamp with time zone,bytea,uuid,jsonb'
\ir psql_check.sql

-- --- failing statements inside a transaction, ROLLBACK, continued use -------------------
\set ON_ERROR_STOP off
\set VERBOSITY sqlstate
\echo '(two errors expected next: 23505, then 25P02)'
BEGIN;
EXECUTE ins(4, 4, 4, 'rolled back', true, 4, 4, '2004-04-04 00:00:00+00', '\x04', '44444444-4444-4444-4444-444444444444', '{"n": 4}');
EXECUTE ins(1, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
\set dup_state :SQLSTATE
SELECT 1;
\set aborted_state :SQLSTATE
ROLLBACK;
\set ON_ERROR_STOP on
\set VERBOSITY default

\set name 'duplicate key inside a transaction: SQLSTATE'
\set got :dup_state
\set want 23505
\ir psql_check.sql
\set name 'statement in the failed transaction: SQLSTATE'
\set got :aborted_state
\set want 25P02
\ir psql_check.sql

SELECT count(*) AS got FROM :"tbl" WHERE id = 4 \gset
\set name 'row inserted before the error was rolled back'
\set want 0
\ir psql_check.sql

BEGIN;
EXECUTE sel(1) \gset r_
COMMIT;
\set got :r_id '|' :r_i4 '|' :r_i8 '|' :r_txt '|' :r_flag '|' :r_f8 '|' :r_num '|' :r_ts '|' :r_blob '|' :r_uid '|' :r_doc
\set name 'EXECUTE sel after ROLLBACK'
\set want :row1
\ir psql_check.sql

PREPARE divide (int4) AS SELECT 100 / $1 AS got;
\set ON_ERROR_STOP off
\set VERBOSITY sqlstate
\echo '(one error expected next: 22012)'
BEGIN;
EXECUTE divide(4) \gset
\set before_error :got
EXECUTE divide(0);
\set div_state :SQLSTATE
ROLLBACK;
\set ON_ERROR_STOP on
\set VERBOSITY default
\set name 'prepared division before the error'
\set got :before_error
\set want 25
\ir psql_check.sql
\set name 'prepared division by zero inside a transaction: SQLSTATE'
\set got :div_state
\set want 22012
\ir psql_check.sql
BEGIN;
EXECUTE divide(5) \gset
COMMIT;
\set name 'same prepared division after ROLLBACK (100/5)'
\set want 20
\ir psql_check.sql

BEGIN;
:settings_query \gset
COMMIT;
\set name 'after the failed transactions: application_name, TimeZone, statement_timeout, timestamptz text'
\set want :want_settings
\ir psql_check.sql

-- --- COPY FROM STDIN with inline data ----------------------------------------------------
BEGIN;
COPY :"tbl" (id, i4, i8, txt, flag, f8, num, ts, blob, uid, doc) FROM STDIN (FORMAT csv);
10,10,10,"copy, csv ""quoted""",true,1.25,10.10,2010-10-10 10:10:10+00,\x0102,10101010-1010-1010-1010-101010101010,"{""copy"": ""csv""}"
11,,,,,,,,,,
\.
COMMIT;
SELECT count(*) AS got FROM :"tbl" WHERE id IN (10, 11) \gset
\set name 'COPY FROM STDIN loaded two rows'
\set want 2
\ir psql_check.sql

BEGIN;
EXECUTE sel(10) \gset r_
COMMIT;
\set got :r_id '|' :r_i4 '|' :r_i8 '|' :r_txt '|' :r_flag '|' :r_f8 '|' :r_num '|' :r_ts '|' :r_blob '|' :r_uid '|' :r_doc
\set name 'COPY-loaded row 10 read back with EXECUTE sel'
\set want '10|10|10|copy, csv "quoted"|t|1.25|' :ten_ten '|' :want_ts '|\\x0102|10101010-1010-1010-1010-101010101010|{"copy": "csv"}'
\ir psql_check.sql

-- --- aggregate, settings once more, clean up ---------------------------------------------
SELECT concat_ws('|', count(*), sum(i8), count(doc)) AS got FROM :"tbl" \gset
\set name 'count, sum(int8) and count(jsonb) over the table'
\set want '5|9|3'
\ir psql_check.sql

BEGIN;
:settings_query \gset
COMMIT;
\set name 'at the end: application_name, TimeZone, statement_timeout, timestamptz text'
\set want :want_settings
\ir psql_check.sql

DEALLOCATE ins;
DEALLOCATE sel;
DEALLOCATE divide;
DROP TABLE :"tbl";
SELECT to_regclass(:'tbl') IS NULL AS got \gset
\set name 'table dropped'
\set want t
\ir psql_check.sql

\echo 'psql: all checks passed'
