//! The emulated `pg_catalog` and `information_schema` of a SQLite database.
//!
//! Catalog queries (psql's `\d`, ORM reflection, JDBC metadata) are ordinary SQL over
//! PostgreSQL's system relations. The rewriter maps those relation names onto TEMP
//! tables and views of the connection (`pg_class`, `information_schema_columns`…),
//! and this module fills the tables from SQLite's own schema (`sqlite_schema`,
//! `pragma_table_info`, `pragma_index_list`, the CREATE statements themselves) and
//! the side catalog of declared PostgreSQL types. They are rebuilt lazily: only a
//! statement that reads the catalog checks whether the schema moved since the last
//! build, and the build stamp lives in a TEMP table so that a rolled-back
//! transaction rolls the stamp back with the rows.
//!
//! Object ids: a relation's oid is `16384 + 256 × its sqlite_schema rowid`; its
//! constraints, defaults and synthesised indexes take the oids just above it.

use std::collections::HashMap;

use rusqlite::{params, Connection};
use sqlparser::ast::{
    ColumnOption, CreateIndex, CreateTable, Expr, ReferentialAction, Statement, TableConstraint,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

use crate::types::PgType;

const PUBLIC_OID: i64 = 2200;
const CATALOG_OID: i64 = 11;
const INFO_SCHEMA_OID: i64 = 13000;
const OWNER_OID: i64 = 10;
const FIRST_OID: i64 = 16384;
const SEQUENCE_OIDS: i64 = 1_000_000_000;

/// The TEMP tables filled from the schema. Column declarations use PostgreSQL type
/// names so result columns are described with PostgreSQL's types.
const TABLES: &str = "
CREATE TEMP TABLE IF NOT EXISTS __unidb_catalog_stamp (stamp TEXT);
CREATE TEMP TABLE IF NOT EXISTS __unidb_const (yes bool, no bool, db_oid oid, owner_oid oid,
  encoding int4, tablespace oid, unlimited int4);
DELETE FROM __unidb_const;
INSERT INTO __unidb_const VALUES (1, 0, 16384, 10, 6, 1663, -1);
CREATE TEMP TABLE IF NOT EXISTS pg_am (oid oid, amname name, amhandler text, amtype \"char\");
DELETE FROM pg_am;
INSERT INTO pg_am VALUES (2, 'heap', 'heap_tableam_handler', 't'), (403, 'btree', 'bthandler', 'i');
CREATE TEMP TABLE IF NOT EXISTS pg_tablespace (oid oid, spcname name, spcowner oid, spcacl text,
  spcoptions text);
DELETE FROM pg_tablespace;
INSERT INTO pg_tablespace VALUES (1663, 'pg_default', 10, NULL, NULL);
CREATE TEMP TABLE IF NOT EXISTS pg_namespace (oid oid, nspname name, nspowner oid, nspacl text);
CREATE TEMP TABLE IF NOT EXISTS pg_class (oid oid, relname name, relnamespace oid, reltype oid,
  reloftype oid, relowner oid, relam oid, relfilenode oid, reltablespace oid, relpages int4,
  reltuples float4, relallvisible int4, reltoastrelid oid, relhasindex bool, relisshared bool,
  relpersistence \"char\", relkind \"char\", relnatts int2, relchecks int2, relhasrules bool,
  relhastriggers bool, relhassubclass bool, relrowsecurity bool, relforcerowsecurity bool,
  relispopulated bool, relreplident \"char\", relispartition bool, relrewrite oid,
  relfrozenxid int8, relminmxid int8, relacl text, reloptions text, relpartbound text);
CREATE TEMP TABLE IF NOT EXISTS pg_attribute (attrelid oid, attname name, atttypid oid,
  attstattarget int4, attlen int2, attnum int2, attndims int4, attcacheoff int4, atttypmod int4,
  attbyval bool, attalign \"char\", attstorage \"char\", attcompression \"char\", attnotnull bool,
  atthasdef bool, atthasmissing bool, attidentity \"char\", attgenerated \"char\",
  attisdropped bool, attislocal bool, attinhcount int4, attcollation oid, attacl text,
  attoptions text, attfdwoptions text, attmissingval text);
CREATE TEMP TABLE IF NOT EXISTS pg_attrdef (oid oid, adrelid oid, adnum int2, adbin text);
CREATE TEMP TABLE IF NOT EXISTS pg_index (indexrelid oid, indrelid oid, indnatts int2,
  indnkeyatts int2, indisunique bool, indnullsnotdistinct bool, indisprimary bool,
  indisexclusion bool, indimmediate bool, indisclustered bool, indisvalid bool,
  indcheckxmin bool, indisready bool, indislive bool, indisreplident bool, indkey text,
  indcollation text, indclass text, indoption text, indexprs text, indpred text);
CREATE TEMP TABLE IF NOT EXISTS pg_constraint (oid oid, conname name, connamespace oid,
  contype \"char\", condeferrable bool, condeferred bool, convalidated bool, conrelid oid,
  contypid oid, conindid oid, conparentid oid, confrelid oid, confupdtype \"char\",
  confdeltype \"char\", confmatchtype \"char\", conislocal bool, coninhcount int4,
  connoinherit bool, conkey text, confkey text, conpfeqop text, conppeqop text,
  conffeqop text, confdelsetcols text, conexclop text, conbin text);
CREATE TEMP TABLE IF NOT EXISTS pg_sequence (seqrelid oid, seqtypid oid, seqstart int8,
  seqincrement int8, seqmax int8, seqmin int8, seqcache int8, seqcycle bool);
CREATE TEMP TABLE IF NOT EXISTS __unidb_defs (def_oid INTEGER PRIMARY KEY, def text, pretty text)
  WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS __unidb_numbers (n int4 PRIMARY KEY) WITHOUT ROWID;
INSERT OR IGNORE INTO __unidb_numbers SELECT value FROM generate_series(1, 1600);
CREATE TEMP TABLE IF NOT EXISTS __unidb_column_info (attrelid oid, attnum int2,
  data_type text, udt_name name, character_maximum_length int4, numeric_precision int4,
  numeric_precision_radix int4, numeric_scale int4, datetime_precision int4,
  column_default text);
";

/// Relations that never have rows here, and the fixed rows of the others. Views
/// over the TEMP tables and over the side tables of the main database.
const VIEWS: &str = "
CREATE TEMP VIEW IF NOT EXISTS pg_description AS
  SELECT c.oid AS objoid, 1259 AS classoid,
         CASE WHEN m.column_name = '' THEN 0 ELSE
           (SELECT a.attnum FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attname = m.column_name)
         END AS objsubid,
         m.description AS description
  FROM main.__unidb_comments m JOIN pg_class c ON c.relname = m.object_name;
CREATE TEMP VIEW IF NOT EXISTS pg_database AS
  SELECT k.db_oid AS oid, current_database() AS datname, k.owner_oid AS datdba,
    k.encoding AS encoding, 'c' AS datlocprovider, k.no AS datistemplate,
    k.yes AS datallowconn, k.unlimited AS datconnlimit, 0 AS datfrozenxid, 1 AS datminmxid,
    k.tablespace AS dattablespace, 'C.UTF-8' AS datcollate,
    'C.UTF-8' AS datctype, NULL AS daticulocale, NULL AS datcollversion, NULL AS datacl
  FROM __unidb_const k;
CREATE TEMP VIEW IF NOT EXISTS pg_roles AS
  SELECT pg_session_user() AS rolname, k.yes AS rolsuper, k.yes AS rolinherit,
    k.yes AS rolcreaterole, k.yes AS rolcreatedb, k.yes AS rolcanlogin, k.no AS rolreplication,
    k.unlimited AS rolconnlimit, '********' AS rolpassword, NULL AS rolvaliduntil,
    k.no AS rolbypassrls, NULL AS rolconfig, k.owner_oid AS oid
  FROM __unidb_const k;
CREATE TEMP VIEW IF NOT EXISTS pg_user AS
  SELECT rolname AS usename, oid AS usesysid, rolcreatedb AS usecreatedb, rolsuper AS usesuper,
    rolreplication AS userepl, rolbypassrls AS usebypassrls, rolpassword AS passwd,
    rolvaliduntil AS valuntil, NULL AS useconfig FROM pg_roles;
CREATE TEMP VIEW IF NOT EXISTS pg_authid AS SELECT * FROM pg_roles;
CREATE TEMP VIEW IF NOT EXISTS pg_settings AS
  SELECT name, setting, NULL AS unit, 'Preset Options' AS category, '' AS short_desc,
    NULL AS extra_desc, 'user' AS context, 'string' AS vartype, 'default' AS source,
    NULL AS min_val, NULL AS max_val, NULL AS enumvals, setting AS boot_val,
    setting AS reset_val, NULL AS sourcefile, NULL AS sourceline, k.no AS pending_restart
  FROM __unidb_const k, (SELECT 'server_version' AS name, '15.0' AS setting
    UNION ALL SELECT 'server_encoding', 'UTF8'
    UNION ALL SELECT 'client_encoding', 'UTF8'
    UNION ALL SELECT 'DateStyle', 'ISO, MDY'
    UNION ALL SELECT 'TimeZone', 'UTC'
    UNION ALL SELECT 'integer_datetimes', 'on'
    UNION ALL SELECT 'standard_conforming_strings', 'on'
    UNION ALL SELECT 'max_identifier_length', '63'
    UNION ALL SELECT 'search_path', '\"$user\", public'
    UNION ALL SELECT 'default_transaction_isolation', 'serializable');
CREATE TEMP VIEW IF NOT EXISTS pg_proc AS
  SELECT 0 AS oid, NULL AS proname, 11 AS pronamespace, 10 AS proowner, 0 AS prorettype,
    '' AS proargtypes, 'f' AS prokind, NULL AS prosrc WHERE 0;
CREATE TEMP VIEW IF NOT EXISTS pg_tables AS
  SELECT 'public' AS schemaname, relname AS tablename, pg_session_user() AS tableowner,
    NULL AS tablespace, relhasindex AS hasindexes, relhasrules AS hasrules,
    relhastriggers AS hastriggers, relrowsecurity AS rowsecurity
  FROM pg_class WHERE relkind = 'r';
CREATE TEMP VIEW IF NOT EXISTS pg_views AS
  SELECT 'public' AS schemaname, c.relname AS viewname, pg_session_user() AS viewowner,
    d.def AS definition
  FROM pg_class c LEFT JOIN __unidb_defs d ON d.def_oid = c.oid WHERE c.relkind = 'v';
CREATE TEMP VIEW IF NOT EXISTS pg_indexes AS
  SELECT 'public' AS schemaname, t.relname AS tablename, c.relname AS indexname,
    NULL AS tablespace, d.def AS indexdef
  FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid
    LEFT JOIN __unidb_defs d ON d.def_oid = i.indexrelid;
CREATE TEMP VIEW IF NOT EXISTS pg_sequences AS
  SELECT 'public' AS schemaname, c.relname AS sequencename, pg_session_user() AS sequenceowner,
    'bigint' AS data_type, s.seqstart AS start_value, s.seqmin AS min_value,
    s.seqmax AS max_value, s.seqincrement AS increment_by, s.seqcycle AS cycle,
    s.seqcache AS cache_size, NULL AS last_value
  FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid;
CREATE TEMP VIEW IF NOT EXISTS information_schema_schemata AS
  SELECT current_database() AS catalog_name, nspname AS schema_name,
    pg_session_user() AS schema_owner, NULL AS default_character_set_catalog,
    NULL AS default_character_set_schema, NULL AS default_character_set_name, NULL AS sql_path
  FROM pg_namespace;
CREATE TEMP VIEW IF NOT EXISTS information_schema_tables AS
  SELECT current_database() AS table_catalog, 'public' AS table_schema, relname AS table_name,
    CASE relkind WHEN 'v' THEN 'VIEW' ELSE 'BASE TABLE' END AS table_type,
    NULL AS self_referencing_column_name, NULL AS reference_generation,
    NULL AS user_defined_type_catalog, NULL AS user_defined_type_schema,
    NULL AS user_defined_type_name,
    CASE relkind WHEN 'v' THEN 'NO' ELSE 'YES' END AS is_insertable_into, 'NO' AS is_typed,
    NULL AS commit_action
  FROM pg_class WHERE relkind IN ('r', 'v');
CREATE TEMP VIEW IF NOT EXISTS information_schema_views AS
  SELECT current_database() AS table_catalog, 'public' AS table_schema, c.relname AS table_name,
    d.def AS view_definition, 'NONE' AS check_option, 'NO' AS is_updatable,
    'NO' AS is_insertable_into, 'NO' AS is_trigger_updatable, 'NO' AS is_trigger_deletable,
    'NO' AS is_trigger_insertable_into
  FROM pg_class c LEFT JOIN __unidb_defs d ON d.def_oid = c.oid WHERE c.relkind = 'v';
CREATE TEMP VIEW IF NOT EXISTS information_schema_columns AS
  SELECT current_database() AS table_catalog, 'public' AS table_schema, c.relname AS table_name,
    a.attname AS column_name, a.attnum AS ordinal_position, i.column_default AS column_default,
    CASE WHEN a.attnotnull THEN 'NO' ELSE 'YES' END AS is_nullable, i.data_type AS data_type,
    i.character_maximum_length AS character_maximum_length,
    CASE WHEN i.character_maximum_length IS NOT NULL THEN i.character_maximum_length * 4
         WHEN i.data_type IN ('text', 'character varying', 'character') THEN 1073741824 END
      AS character_octet_length,
    i.numeric_precision AS numeric_precision, i.numeric_precision_radix AS numeric_precision_radix,
    i.numeric_scale AS numeric_scale, i.datetime_precision AS datetime_precision,
    NULL AS interval_type, NULL AS interval_precision, NULL AS character_set_catalog,
    NULL AS character_set_schema, NULL AS character_set_name, NULL AS collation_catalog,
    NULL AS collation_schema, NULL AS collation_name, current_database() AS domain_catalog,
    NULL AS domain_schema, NULL AS domain_name, current_database() AS udt_catalog,
    'pg_catalog' AS udt_schema, i.udt_name AS udt_name, NULL AS scope_catalog,
    NULL AS scope_schema, NULL AS scope_name, NULL AS maximum_cardinality,
    a.attnum AS dtd_identifier, 'NO' AS is_self_referencing,
    CASE WHEN a.attidentity <> '' THEN 'YES' ELSE 'NO' END AS is_identity,
    NULL AS identity_generation, NULL AS identity_start, NULL AS identity_increment,
    NULL AS identity_maximum, NULL AS identity_minimum, NULL AS identity_cycle,
    'NEVER' AS is_generated, NULL AS generation_expression,
    CASE c.relkind WHEN 'v' THEN 'NO' ELSE 'YES' END AS is_updatable
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
    JOIN __unidb_column_info i ON i.attrelid = a.attrelid AND i.attnum = a.attnum
  WHERE c.relkind IN ('r', 'v') AND a.attnum > 0;
CREATE TEMP VIEW IF NOT EXISTS information_schema_table_constraints AS
  SELECT current_database() AS constraint_catalog, 'public' AS constraint_schema,
    k.conname AS constraint_name, current_database() AS table_catalog, 'public' AS table_schema,
    c.relname AS table_name,
    CASE k.contype WHEN 'p' THEN 'PRIMARY KEY' WHEN 'u' THEN 'UNIQUE'
      WHEN 'f' THEN 'FOREIGN KEY' ELSE 'CHECK' END AS constraint_type,
    'NO' AS is_deferrable, 'NO' AS initially_deferred, 'YES' AS enforced,
    CASE WHEN k.contype = 'u' THEN 'YES' END AS nulls_distinct
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid
  UNION ALL
  SELECT current_database(), 'public', '2200_' || c.oid || '_' || a.attnum || '_not_null',
    current_database(), 'public', c.relname, 'CHECK', 'NO', 'NO', 'YES', NULL
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  WHERE c.relkind = 'r' AND a.attnum > 0 AND a.attnotnull;
CREATE TEMP VIEW IF NOT EXISTS information_schema_check_constraints AS
  SELECT current_database() AS constraint_catalog, 'public' AS constraint_schema,
    k.conname AS constraint_name, substr(d.def, 7) AS check_clause
  FROM pg_constraint k JOIN __unidb_defs d ON d.def_oid = k.oid WHERE k.contype = 'c'
  UNION ALL
  SELECT current_database(), 'public', '2200_' || c.oid || '_' || a.attnum || '_not_null',
    a.attname || ' IS NOT NULL'
  FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
  WHERE c.relkind = 'r' AND a.attnum > 0 AND a.attnotnull;
CREATE TEMP VIEW IF NOT EXISTS information_schema_key_column_usage AS
  SELECT current_database() AS constraint_catalog, 'public' AS constraint_schema,
    k.conname AS constraint_name, current_database() AS table_catalog, 'public' AS table_schema,
    c.relname AS table_name, a.attname AS column_name, pos.n AS ordinal_position,
    upos.n AS position_in_unique_constraint
  FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid, json_each(k.conkey) j
    JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = j.value
    JOIN __unidb_numbers pos ON pos.n = j.key + 1
    LEFT JOIN __unidb_numbers upos ON k.contype = 'f' AND upos.n = j.key + 1
  WHERE k.contype IN ('p', 'u', 'f');
CREATE TEMP VIEW IF NOT EXISTS information_schema_referential_constraints AS
  SELECT current_database() AS constraint_catalog, 'public' AS constraint_schema,
    k.conname AS constraint_name, current_database() AS unique_constraint_catalog,
    'public' AS unique_constraint_schema,
    (SELECT u.conname FROM pg_constraint u WHERE u.conrelid = k.confrelid
       AND u.contype IN ('p', 'u') AND u.conkey = k.confkey) AS unique_constraint_name,
    'NONE' AS match_option,
    CASE k.confupdtype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL'
      WHEN 'd' THEN 'SET DEFAULT' WHEN 'r' THEN 'RESTRICT' ELSE 'NO ACTION' END AS update_rule,
    CASE k.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL'
      WHEN 'd' THEN 'SET DEFAULT' WHEN 'r' THEN 'RESTRICT' ELSE 'NO ACTION' END AS delete_rule
  FROM pg_constraint k WHERE k.contype = 'f';
CREATE TEMP VIEW IF NOT EXISTS information_schema_constraint_column_usage AS
  SELECT current_database() AS table_catalog, 'public' AS table_schema, c.relname AS table_name,
    a.attname AS column_name, current_database() AS constraint_catalog,
    'public' AS constraint_schema, k.conname AS constraint_name
  FROM pg_constraint k, json_each(CASE WHEN k.contype = 'f' THEN k.confkey ELSE k.conkey END) j
    JOIN pg_class c ON c.oid = CASE WHEN k.contype = 'f' THEN k.confrelid ELSE k.conrelid END
    JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = j.value
  WHERE k.contype IN ('p', 'u', 'f');
";

/// Type rows: oid, typname, typlen, typcategory, array type oid, format_type name,
/// information_schema data_type.
struct TypeRow {
    oid: i64,
    name: &'static str,
    len: i64,
    category: &'static str,
    array: i64,
    formatted: &'static str,
}

const TYPES: &[TypeRow] = &[
    TypeRow {
        oid: 16,
        name: "bool",
        len: 1,
        category: "B",
        array: 1000,
        formatted: "boolean",
    },
    TypeRow {
        oid: 17,
        name: "bytea",
        len: -1,
        category: "U",
        array: 1001,
        formatted: "bytea",
    },
    TypeRow {
        oid: 18,
        name: "char",
        len: 1,
        category: "Z",
        array: 1002,
        formatted: "\"char\"",
    },
    TypeRow {
        oid: 19,
        name: "name",
        len: 64,
        category: "S",
        array: 1003,
        formatted: "name",
    },
    TypeRow {
        oid: 20,
        name: "int8",
        len: 8,
        category: "N",
        array: 1016,
        formatted: "bigint",
    },
    TypeRow {
        oid: 21,
        name: "int2",
        len: 2,
        category: "N",
        array: 1005,
        formatted: "smallint",
    },
    TypeRow {
        oid: 23,
        name: "int4",
        len: 4,
        category: "N",
        array: 1007,
        formatted: "integer",
    },
    TypeRow {
        oid: 25,
        name: "text",
        len: -1,
        category: "S",
        array: 1009,
        formatted: "text",
    },
    TypeRow {
        oid: 26,
        name: "oid",
        len: 4,
        category: "N",
        array: 1028,
        formatted: "oid",
    },
    TypeRow {
        oid: 114,
        name: "json",
        len: -1,
        category: "U",
        array: 199,
        formatted: "json",
    },
    TypeRow {
        oid: 700,
        name: "float4",
        len: 4,
        category: "N",
        array: 1021,
        formatted: "real",
    },
    TypeRow {
        oid: 701,
        name: "float8",
        len: 8,
        category: "N",
        array: 1022,
        formatted: "double precision",
    },
    TypeRow {
        oid: 705,
        name: "unknown",
        len: -2,
        category: "X",
        array: 0,
        formatted: "unknown",
    },
    TypeRow {
        oid: 1042,
        name: "bpchar",
        len: -1,
        category: "S",
        array: 1014,
        formatted: "character",
    },
    TypeRow {
        oid: 1043,
        name: "varchar",
        len: -1,
        category: "S",
        array: 1015,
        formatted: "character varying",
    },
    TypeRow {
        oid: 1082,
        name: "date",
        len: 4,
        category: "D",
        array: 1182,
        formatted: "date",
    },
    TypeRow {
        oid: 1083,
        name: "time",
        len: 8,
        category: "D",
        array: 1183,
        formatted: "time without time zone",
    },
    TypeRow {
        oid: 1114,
        name: "timestamp",
        len: 8,
        category: "D",
        array: 1115,
        formatted: "timestamp without time zone",
    },
    TypeRow {
        oid: 1184,
        name: "timestamptz",
        len: 8,
        category: "D",
        array: 1185,
        formatted: "timestamp with time zone",
    },
    TypeRow {
        oid: 1186,
        name: "interval",
        len: 16,
        category: "T",
        array: 1187,
        formatted: "interval",
    },
    TypeRow {
        oid: 1700,
        name: "numeric",
        len: -1,
        category: "N",
        array: 1231,
        formatted: "numeric",
    },
    TypeRow {
        oid: 2205,
        name: "regclass",
        len: 4,
        category: "N",
        array: 2210,
        formatted: "regclass",
    },
    TypeRow {
        oid: 2206,
        name: "regtype",
        len: 4,
        category: "N",
        array: 2211,
        formatted: "regtype",
    },
    TypeRow {
        oid: 2950,
        name: "uuid",
        len: 16,
        category: "U",
        array: 2951,
        formatted: "uuid",
    },
    TypeRow {
        oid: 3802,
        name: "jsonb",
        len: -1,
        category: "U",
        array: 3807,
        formatted: "jsonb",
    },
];

/// `format_type(oid, typmod)`: the SQL name of a type, with its modifier.
pub fn format_type(oid: i64, typmod: Option<i64>) -> Option<String> {
    if let Some(t) = TYPES.iter().find(|t| t.oid == oid) {
        let m = typmod.filter(|m| *m >= 0);
        return Some(match (t.oid, m) {
            (1042 | 1043, Some(m)) => format!("{}({})", t.formatted, m - 4),
            (1700, Some(m)) => {
                let m = m - 4;
                format!("numeric({},{})", (m >> 16) & 0xffff, m & 0xffff)
            }
            _ => t.formatted.to_string(),
        });
    }
    TYPES
        .iter()
        .find(|t| t.array == oid)
        .map(|t| format!("{}[]", t.formatted))
}

const PG_TYPE: &str = "CREATE TEMP TABLE IF NOT EXISTS pg_type (oid oid, typname name,
  typnamespace oid, typowner oid, typlen int2, typbyval bool, typtype \"char\",
  typcategory \"char\", typispreferred bool, typisdefined bool, typdelim \"char\",
  typrelid oid, typsubscript text, typelem oid, typarray oid, typinput text, typoutput text,
  typreceive text, typsend text, typmodin text, typmodout text, typanalyze text,
  typalign \"char\", typstorage \"char\", typnotnull bool, typbasetype oid,
  typtypmod int4, typndims int4, typcollation oid, typdefaultbin text, typdefault text,
  typacl text);";

/// The declared type of a column of one of the catalog's TEMP tables, for
/// expressions that carry it out of a subquery (`min(con.indnkeyatts)`).
pub fn system_column_type(table: &str, column: &str) -> Option<PgType> {
    static TYPES_BY_COLUMN: std::sync::OnceLock<HashMap<(String, String), PgType>> =
        std::sync::OnceLock::new();
    let map = TYPES_BY_COLUMN.get_or_init(|| {
        let mut map = HashMap::new();
        let sql = format!("{TABLES}\n{PG_TYPE}");
        for stmt in Parser::parse_sql(&SQLiteDialect {}, &sql).unwrap_or_default() {
            if let Statement::CreateTable(ct) = stmt {
                let t = crate::sql::object_base_name(&ct.name);
                for c in &ct.columns {
                    let decl = c.data_type.to_string().trim_matches('"').to_string();
                    map.insert(
                        (t.clone(), c.name.value.to_ascii_lowercase()),
                        PgType::from_sqlite_decltype(&decl),
                    );
                }
            }
        }
        map
    });
    map.get(&(table.to_ascii_lowercase(), column.to_ascii_lowercase()))
        .copied()
}

/// Creates the catalog's TEMP tables and views on a connection (once).
pub fn install(conn: &Connection) -> rusqlite::Result<()> {
    conn.execute_batch(TABLES)?;
    let mut types = format!("{PG_TYPE}\nDELETE FROM pg_type;");
    for t in TYPES {
        let byval = (1..=8).contains(&t.len);
        let row = |oid: i64, name: &str, len: i64, elem: i64, array: i64, cat: &str| {
            format!(
                "INSERT INTO pg_type VALUES ({oid}, '{name}', 11, 10, {len}, {}, 'b', '{cat}', 0, 1, ',', 0, NULL, {elem}, {array}, '{input}', '{output}', '{n}recv', '{n}send', NULL, NULL, NULL, '{}', '{}', 0, 0, -1, 0, {}, NULL, NULL, NULL);",
                byval as i32,
                if len == 8 { "d" } else { "i" },
                if len > 0 { "p" } else if name == "numeric" { "m" } else { "x" },
                if cat == "S" { 100 } else { 0 },
                n = name.trim_start_matches('_'),
                input = if elem != 0 { "array_in".to_string() } else { format!("{name}in") },
                output = if elem != 0 { "array_out".to_string() } else { format!("{name}out") },
            )
        };
        types.push_str(&row(t.oid, t.name, t.len, 0, t.array, t.category));
        if t.array != 0 {
            types.push_str(&row(t.array, &format!("_{}", t.name), -1, t.oid, 0, "A"));
        }
    }
    conn.execute_batch(&types)?;
    conn.execute_batch(VIEWS)?;
    for name in crate::sql::EMPTY_RELATIONS {
        conn.execute_batch(&format!("CREATE TEMP TABLE IF NOT EXISTS {name} (oid oid)"))?;
    }
    Ok(())
}

/// The stamp the catalog was built from: the schema cookie plus the sequences.
fn current_stamp(conn: &Connection) -> rusqlite::Result<String> {
    let version: i64 = conn.query_row("PRAGMA main.schema_version", [], |r| r.get(0))?;
    let seqs: Option<String> = conn
        .query_row(
            "SELECT group_concat(name, ',') FROM main.__unidb_sequences",
            [],
            |r| r.get(0),
        )
        .unwrap_or(None);
    Ok(format!("{version}:{}", seqs.unwrap_or_default()))
}

/// Rebuilds the catalog's rows if the schema changed since they were built; creates
/// the TEMP tables first if this connection has none (or lost them with a rolled
/// back transaction that created them).
pub fn refresh(conn: &Connection) -> rusqlite::Result<()> {
    let stamp = current_stamp(conn)?;
    let built: Option<String> =
        match conn.query_row("SELECT stamp FROM __unidb_catalog_stamp", [], |r| r.get(0)) {
            Ok(s) => Some(s),
            Err(rusqlite::Error::QueryReturnedNoRows) => None,
            Err(_) => {
                install(conn)?;
                None
            }
        };
    if built.as_deref() == Some(stamp.as_str()) {
        return Ok(());
    }
    let rows = Builder::read(conn)?;
    rows.write(conn)?;
    conn.execute_batch("DELETE FROM __unidb_catalog_stamp")?;
    conn.execute(
        "INSERT INTO __unidb_catalog_stamp (stamp) VALUES (?1)",
        [stamp],
    )?;
    Ok(())
}

struct Column {
    name: String,
    decl: String,
    notnull: bool,
    default: Option<String>,
    /// The declared type of the column a view column shows.
    origin_type: Option<String>,
}

struct Constraint {
    name: String,
    kind: char,
    columns: Vec<String>,
    ref_table: Option<String>,
    ref_columns: Vec<String>,
    on_delete: char,
    on_update: char,
    /// The definition as `pg_get_constraintdef(…, true)` prints it.
    def: String,
    /// A CHECK's expression is a single operation (PostgreSQL then prints it in
    /// double parentheses unless asked for the pretty form).
    bare_check: bool,
}

impl Constraint {
    /// `pg_get_constraintdef(oid)`, without the pretty flag.
    fn plain_def(&self) -> String {
        match self.def.strip_prefix("CHECK (") {
            Some(rest) if self.bare_check => format!("CHECK (({rest})"),
            _ => self.def.clone(),
        }
    }
}

struct Index {
    oid: i64,
    name: String,
    unique: bool,
    primary: bool,
    keys: Vec<i64>,
    exprs: Vec<String>,
    predicate: Option<String>,
    def: String,
    /// `pg_get_indexdef(…, true)`: the predicate without PostgreSQL's parentheses.
    pretty: String,
    constraint: Option<usize>,
}

struct Relation {
    oid: i64,
    name: String,
    kind: char,
    columns: Vec<Column>,
    constraints: Vec<Constraint>,
    indexes: Vec<Index>,
    view_def: Option<String>,
    serial: Option<String>,
}

#[derive(Default)]
struct Builder {
    relations: Vec<Relation>,
    /// (table, column) → declared PostgreSQL type, e.g. `varchar(20)`.
    declared: HashMap<(String, String), String>,
    sequences: Vec<(String, i64)>,
}

fn sqlite_parse(sql: &str) -> Option<Statement> {
    Parser::parse_sql(&SQLiteDialect {}, sql).ok()?.pop()
}

fn ident_list(cols: impl Iterator<Item = String>) -> String {
    cols.collect::<Vec<_>>().join(", ")
}

fn action_code(a: Option<ReferentialAction>) -> char {
    match a {
        Some(ReferentialAction::Cascade) => 'c',
        Some(ReferentialAction::SetNull) => 'n',
        Some(ReferentialAction::SetDefault) => 'd',
        Some(ReferentialAction::Restrict) => 'r',
        _ => 'a',
    }
}

fn action_text(code: char) -> &'static str {
    match code {
        'c' => "CASCADE",
        'n' => "SET NULL",
        'd' => "SET DEFAULT",
        'r' => "RESTRICT",
        _ => "NO ACTION",
    }
}

fn expr_columns(e: &Expr) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let _ = sqlparser::ast::visit_expressions(e, |x| {
        if let Expr::Identifier(id) = x {
            let n = id.value.to_ascii_lowercase();
            if !out.contains(&n) {
                out.push(n);
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
    out
}

fn fk_def(c: &Constraint) -> String {
    let mut def = format!(
        "FOREIGN KEY ({}) REFERENCES {}({})",
        c.columns.join(", "),
        c.ref_table.as_deref().unwrap_or(""),
        c.ref_columns.join(", ")
    );
    if c.on_update != 'a' {
        def.push_str(&format!(" ON UPDATE {}", action_text(c.on_update)));
    }
    if c.on_delete != 'a' {
        def.push_str(&format!(" ON DELETE {}", action_text(c.on_delete)));
    }
    def
}

/// The table's constraints from its CREATE TABLE, named as PostgreSQL names them.
fn table_constraints(table: &str, ct: &CreateTable) -> Vec<Constraint> {
    let mut out: Vec<Constraint> = Vec::new();
    let mut push = |name: Option<String>, kind: char, columns: Vec<String>, rest: Constraint| {
        let name = name.unwrap_or_else(|| {
            let suffix = match kind {
                'p' => "pkey",
                'u' => "key",
                'f' => "fkey",
                _ => "check",
            };
            let base = if kind == 'p' || (kind == 'c' && columns.len() != 1) {
                format!("{table}_{suffix}")
            } else {
                format!("{table}_{}_{suffix}", columns.join("_"))
            };
            let mut name = base.clone();
            let mut n = 1;
            while out.iter().any(|c| c.name == name) {
                name = format!("{base}{n}");
                n += 1;
            }
            name
        });
        out.push(Constraint {
            name,
            kind,
            columns: if kind == 'c' { Vec::new() } else { columns },
            ..rest
        });
    };
    let blank = |def: String| Constraint {
        name: String::new(),
        kind: ' ',
        columns: Vec::new(),
        ref_table: None,
        ref_columns: Vec::new(),
        on_delete: 'a',
        on_update: 'a',
        def,
        bare_check: false,
    };
    let check = |e: &Expr| Constraint {
        bare_check: !matches!(e, Expr::Identifier(_) | Expr::Function(_) | Expr::Nested(_)),
        ..blank(format!("CHECK ({e})"))
    };
    for col in &ct.columns {
        let cname = col.name.value.to_ascii_lowercase();
        for o in &col.options {
            let name = o.name.as_ref().map(|n| n.value.clone());
            match &o.option {
                ColumnOption::PrimaryKey(_) => push(
                    name,
                    'p',
                    vec![cname.clone()],
                    blank(format!("PRIMARY KEY ({cname})")),
                ),
                ColumnOption::Unique(_) => push(
                    name,
                    'u',
                    vec![cname.clone()],
                    blank(format!("UNIQUE ({cname})")),
                ),
                ColumnOption::Check(c) => push(name, 'c', expr_columns(&c.expr), check(&c.expr)),
                ColumnOption::ForeignKey(fk) => {
                    let mut c = blank(String::new());
                    c.ref_table = Some(crate::sql::object_base_name(&fk.foreign_table));
                    c.ref_columns = fk
                        .referred_columns
                        .iter()
                        .map(|i| i.value.to_ascii_lowercase())
                        .collect();
                    c.on_delete = action_code(fk.on_delete);
                    c.on_update = action_code(fk.on_update);
                    c.columns = vec![cname.clone()];
                    c.def = fk_def(&c);
                    push(name, 'f', vec![cname.clone()], c)
                }
                _ => {}
            }
        }
    }
    for tc in &ct.constraints {
        match tc {
            TableConstraint::PrimaryKey(pk) => {
                let cols: Vec<String> = pk.columns.iter().map(|c| c.to_string()).collect();
                let def = format!("PRIMARY KEY ({})", cols.join(", "));
                push(
                    pk.name.as_ref().map(|n| n.value.clone()),
                    'p',
                    cols,
                    blank(def),
                )
            }
            TableConstraint::Unique(u) => {
                let cols: Vec<String> = u.columns.iter().map(|c| c.to_string()).collect();
                let def = format!("UNIQUE ({})", cols.join(", "));
                push(
                    u.name.as_ref().map(|n| n.value.clone()),
                    'u',
                    cols,
                    blank(def),
                )
            }
            TableConstraint::Check(c) => push(
                c.name.as_ref().map(|n| n.value.clone()),
                'c',
                expr_columns(&c.expr),
                check(&c.expr),
            ),
            TableConstraint::ForeignKey(fk) => {
                let cols: Vec<String> = fk
                    .columns
                    .iter()
                    .map(|i| i.value.to_ascii_lowercase())
                    .collect();
                let mut c = blank(String::new());
                c.ref_table = Some(crate::sql::object_base_name(&fk.foreign_table));
                c.ref_columns = fk
                    .referred_columns
                    .iter()
                    .map(|i| i.value.to_ascii_lowercase())
                    .collect();
                c.on_delete = action_code(fk.on_delete);
                c.on_update = action_code(fk.on_update);
                c.columns = cols.clone();
                c.def = fk_def(&c);
                push(fk.name.as_ref().map(|n| n.value.clone()), 'f', cols, c)
            }
            _ => {}
        }
    }
    out
}

/// The modifier of a declared type: `varchar(20)` → 24, `numeric(10,2)` → PostgreSQL's
/// packed precision and scale; -1 for none.
fn typmod(declared: &str) -> i64 {
    let Some((base, rest)) = declared.split_once('(') else {
        return -1;
    };
    let args: Vec<i64> = rest
        .trim_end_matches(')')
        .split(',')
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    match (PgType::from_name(base), args.as_slice()) {
        (Some(PgType::Varchar | PgType::Bpchar), [n]) => n + 4,
        (Some(PgType::Numeric), [p]) => (p << 16) + 4,
        (Some(PgType::Numeric), [p, s]) => ((p << 16) | s) + 4,
        _ => -1,
    }
}

/// The PostgreSQL type a column was declared with, from the side catalog or SQLite's
/// declared type for tables made elsewhere.
fn column_type(declared: Option<&String>, decl: &str) -> (PgType, String) {
    match declared {
        Some(d) => {
            // Older side catalogs record a numeric scale as `numeric:2`.
            let name = d.split(':').next().unwrap_or(d);
            (PgType::from_name(name).unwrap_or(PgType::Text), d.clone())
        }
        None => {
            let t = PgType::from_sqlite_decltype(decl);
            (t, t.name().to_string())
        }
    }
}

impl Builder {
    fn read(conn: &Connection) -> rusqlite::Result<Builder> {
        let mut b = Builder::default();
        {
            let mut stmt =
                conn.prepare("SELECT table_name, column_name, pg_type FROM main.__unidb_columns")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                b.declared
                    .insert((r.get::<_, String>(0)?, r.get::<_, String>(1)?), r.get(2)?);
            }
        }
        let mut objects: Vec<(i64, String, String, String, Option<String>)> = Vec::new();
        {
            let mut stmt = conn.prepare(
                "SELECT rowid, type, name, tbl_name, sql FROM main.sqlite_schema
                 WHERE type IN ('table', 'view', 'index') AND name NOT LIKE '__unidb%'
                   AND name NOT LIKE 'sqlite_stat%' AND name <> 'sqlite_sequence'
                 ORDER BY rowid",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                objects.push((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?));
            }
        }
        for (rowid, ty, name, _, sql) in objects.iter().filter(|o| o.1 != "index") {
            let oid = FIRST_OID + rowid * 256;
            let mut columns = Vec::new();
            {
                let mut stmt = conn.prepare(
                    "SELECT name, type, \"notnull\", dflt_value, pk FROM pragma_table_info(?1)",
                )?;
                let mut rows = stmt.query([name])?;
                while let Some(r) = rows.next()? {
                    let default: Option<String> = r.get(3)?;
                    columns.push(Column {
                        name: r.get(0)?,
                        decl: r.get::<_, Option<String>>(1)?.unwrap_or_default(),
                        notnull: r.get::<_, i64>(2)? != 0 || r.get::<_, i64>(4)? > 0,
                        default: default.map(|d| {
                            d.strip_prefix('(')
                                .and_then(|d| d.strip_suffix(')'))
                                .map(str::to_string)
                                .unwrap_or(d)
                        }),
                        origin_type: None,
                    });
                }
            }
            if ty == "view" {
                // A view column that shows a table column has that column's type.
                if let Ok(stmt) =
                    conn.prepare(&format!("SELECT * FROM \"{}\"", name.replace('"', "\"\"")))
                {
                    for (col, meta) in columns.iter_mut().zip(stmt.columns_with_metadata()) {
                        if let (Some(t), Some(c)) = (meta.table_name(), meta.origin_name()) {
                            col.origin_type = b
                                .declared
                                .get(&(t.to_ascii_lowercase(), c.to_ascii_lowercase()))
                                .cloned();
                        }
                    }
                }
            }
            let parsed = sql.as_deref().and_then(sqlite_parse);
            let (constraints, view_def, serial) = match &parsed {
                Some(Statement::CreateTable(ct)) => {
                    let mut ct = ct.clone();
                    // The length checks unidb adds for varchar(n) are the type's own.
                    for c in &mut ct.columns {
                        c.options.retain(|o| {
                            !o.name.as_ref().is_some_and(|n| {
                                n.value.starts_with(crate::sql::LENGTH_CHECK_PREFIX)
                            })
                        });
                    }
                    let ct = &ct;
                    let serial = ct
                        .columns
                        .iter()
                        .find(|c| {
                            c.options.iter().any(|o| {
                                matches!(&o.option, ColumnOption::DialectSpecific(t)
                                    if t.iter().any(|t| t.to_string().eq_ignore_ascii_case("AUTOINCREMENT")))
                            })
                        })
                        .map(|c| c.name.value.to_ascii_lowercase());
                    (table_constraints(name, ct), None, serial)
                }
                Some(Statement::CreateView(v)) => (Vec::new(), Some(format!("{};", v.query)), None),
                _ => (Vec::new(), None, None),
            };
            b.relations.push(Relation {
                oid,
                name: name.clone(),
                kind: if ty == "view" { 'v' } else { 'r' },
                columns,
                constraints,
                indexes: Vec::new(),
                view_def,
                serial,
            });
        }
        let unique_constraints: std::collections::HashSet<String> = conn
            .prepare("SELECT index_name FROM main.__unidb_constraints WHERE kind = 'u'")
            .and_then(|mut stmt| {
                stmt.query_map([], |r| r.get::<_, String>(0))
                    .and_then(|rows| rows.collect())
            })
            .unwrap_or_default();
        // Indexes: those SQLite made for PRIMARY KEY / UNIQUE take the constraint's
        // name, an INTEGER PRIMARY KEY (the rowid) gets the index PostgreSQL has.
        for rel in b.relations.iter_mut().filter(|r| r.kind == 'r') {
            let mut list: Vec<(String, bool, String, bool)> = Vec::new();
            {
                let mut stmt = conn.prepare(
                    "SELECT name, \"unique\", origin, partial FROM pragma_index_list(?1) ORDER BY seq DESC",
                )?;
                let mut rows = stmt.query([&rel.name])?;
                while let Some(r) = rows.next()? {
                    list.push((
                        r.get(0)?,
                        r.get::<_, i64>(1)? != 0,
                        r.get(2)?,
                        r.get::<_, i64>(3)? != 0,
                    ));
                }
            }
            let mut next_oid = rel.oid + 128;
            for (iname, unique, origin, _) in list {
                let rowid = objects.iter().find(|o| o.2 == iname).map(|o| o.0);
                let oid = match rowid {
                    Some(r) => FIRST_OID + r * 256,
                    None => {
                        next_oid += 1;
                        next_oid
                    }
                };
                let mut cols: Vec<(i64, Option<String>)> = Vec::new();
                {
                    let mut stmt = conn.prepare(
                        "SELECT cid, name FROM pragma_index_xinfo(?1) WHERE key = 1 ORDER BY seqno",
                    )?;
                    let mut rows = stmt.query([&iname])?;
                    while let Some(r) = rows.next()? {
                        cols.push((r.get(0)?, r.get(1)?));
                    }
                }
                let keys: Vec<i64> = cols
                    .iter()
                    .map(|(cid, _)| if *cid >= 0 { cid + 1 } else { 0 })
                    .collect();
                let names: Vec<String> = cols
                    .iter()
                    .map(|(_, n)| n.clone().unwrap_or_default())
                    .collect();
                let sql = objects
                    .iter()
                    .find(|o| o.2 == iname)
                    .and_then(|o| o.4.clone());
                let (exprs, predicate, def_cols) = match sql.as_deref().and_then(sqlite_parse) {
                    Some(Statement::CreateIndex(CreateIndex {
                        columns, predicate, ..
                    })) => {
                        let items: Vec<String> =
                            columns.iter().map(|c| c.column.to_string()).collect();
                        let exprs = columns
                            .iter()
                            .filter(|c| !matches!(c.column.expr, Expr::Identifier(_)))
                            .map(|c| c.column.expr.to_string())
                            .collect();
                        // PostgreSQL prints a predicate other than a bare column or
                        // call in parentheses.
                        let predicate = predicate.map(|p| match p {
                            Expr::Identifier(_) | Expr::Function(_) | Expr::Nested(_) => {
                                (p.to_string(), p.to_string())
                            }
                            other => (format!("({other})"), other.to_string()),
                        });
                        (exprs, predicate, items)
                    }
                    _ => (Vec::new(), None, names.clone()),
                };
                let constraint = if origin == "pk" || origin == "u" {
                    let kind = if origin == "pk" { 'p' } else { 'u' };
                    rel.constraints
                        .iter()
                        .position(|c| c.kind == kind && c.columns == names)
                } else if unique_constraints.contains(&iname) {
                    // A UNIQUE constraint added by ALTER TABLE is this index.
                    rel.constraints.push(Constraint {
                        name: iname.clone(),
                        kind: 'u',
                        columns: names.clone(),
                        ref_table: None,
                        ref_columns: Vec::new(),
                        on_delete: 'a',
                        on_update: 'a',
                        def: format!("UNIQUE ({})", names.join(", ")),
                        bare_check: false,
                    });
                    Some(rel.constraints.len() - 1)
                } else {
                    None
                };
                let name = match constraint {
                    Some(i) => rel.constraints[i].name.clone(),
                    None => iname.clone(),
                };
                let mut def = format!(
                    "CREATE {}INDEX {name} ON public.{} USING btree ({})",
                    if unique { "UNIQUE " } else { "" },
                    rel.name,
                    def_cols.join(", ")
                );
                let mut pretty = def.clone();
                if let Some((wrapped, bare)) = &predicate {
                    def.push_str(&format!(" WHERE {wrapped}"));
                    pretty.push_str(&format!(" WHERE {bare}"));
                }
                let predicate = predicate.map(|p| p.0);
                rel.indexes.push(Index {
                    oid,
                    name,
                    unique,
                    primary: origin == "pk",
                    keys,
                    exprs,
                    predicate,
                    def,
                    pretty,
                    constraint,
                });
            }
            // INTEGER PRIMARY KEY is the rowid: SQLite has no index, PostgreSQL has.
            if !rel.indexes.iter().any(|i| i.primary) {
                if let Some(i) = rel.constraints.iter().position(|c| c.kind == 'p') {
                    let cols = rel.constraints[i].columns.clone();
                    let keys = cols
                        .iter()
                        .filter_map(|c| {
                            rel.columns
                                .iter()
                                .position(|x| x.name.eq_ignore_ascii_case(c))
                        })
                        .map(|p| p as i64 + 1)
                        .collect();
                    let name = rel.constraints[i].name.clone();
                    let def = format!(
                        "CREATE UNIQUE INDEX {name} ON public.{} USING btree ({})",
                        rel.name,
                        cols.join(", ")
                    );
                    rel.indexes.push(Index {
                        oid: rel.oid + 127,
                        pretty: def.clone(),
                        def,
                        name,
                        unique: true,
                        primary: true,
                        keys,
                        exprs: Vec::new(),
                        predicate: None,
                        constraint: Some(i),
                    });
                }
            }
        }
        {
            let mut stmt =
                conn.prepare("SELECT name, increment FROM main.__unidb_sequences ORDER BY name")?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                b.sequences.push((r.get(0)?, r.get(1)?));
            }
        }
        Ok(b)
    }

    fn write(&self, conn: &Connection) -> rusqlite::Result<()> {
        conn.execute_batch(
            "DELETE FROM pg_namespace; DELETE FROM pg_class; DELETE FROM pg_attribute;
             DELETE FROM pg_attrdef; DELETE FROM pg_index; DELETE FROM pg_constraint;
             DELETE FROM pg_sequence; DELETE FROM __unidb_defs; DELETE FROM __unidb_column_info;",
        )?;
        conn.execute_batch(&format!(
            "INSERT INTO pg_namespace VALUES ({CATALOG_OID}, 'pg_catalog', {OWNER_OID}, NULL),
               ({PUBLIC_OID}, 'public', {OWNER_OID}, NULL),
               ({INFO_SCHEMA_OID}, 'information_schema', {OWNER_OID}, NULL);"
        ))?;
        let mut class = conn.prepare(
            "INSERT INTO pg_class VALUES (?1, ?2, 2200, 0, 0, 10, ?3, ?1, 0, 0, -1, 0, 0, ?4, 0,
               'p', ?5, ?6, ?7, 0, ?8, 0, 0, 0, 1, 'd', 0, 0, 0, 1, NULL, NULL, NULL)",
        )?;
        let mut attr = conn.prepare(
            "INSERT INTO pg_attribute VALUES (?1, ?2, ?3, -1, ?4, ?5, 0, -1, ?6, ?7, 'i', ?8, '',
               ?9, ?10, 0, ?11, '', 0, 1, 0, ?12, NULL, NULL, NULL, NULL)",
        )?;
        let mut info = conn.prepare(
            "INSERT INTO __unidb_column_info VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
        )?;
        let mut index_attr = conn.prepare(
            "INSERT INTO pg_attribute SELECT ?1, attname, atttypid, attstattarget, attlen, ?2,
               attndims, attcacheoff, atttypmod, attbyval, attalign, attstorage, attcompression,
               0, 0, 0, '', '', 0, 1, 0, attcollation, NULL, NULL, NULL, NULL
             FROM pg_attribute WHERE attrelid = ?3 AND attnum = ?4",
        )?;
        let mut attrdef = conn.prepare("INSERT INTO pg_attrdef VALUES (?1, ?2, ?3, ?4)")?;
        let mut defs = conn.prepare("INSERT OR REPLACE INTO __unidb_defs VALUES (?1, ?2, ?3)")?;
        let mut con = conn.prepare(
            "INSERT INTO pg_constraint VALUES (?1, ?2, 2200, ?3, 0, 0, 1, ?4, 0, ?5, 0, ?6, ?7, ?8,
               's', 1, 0, 0, ?9, ?10, NULL, NULL, NULL, NULL, NULL, ?11)",
        )?;
        let mut index = conn.prepare(
            "INSERT INTO pg_index VALUES (?1, ?2, ?3, ?3, ?4, 0, ?5, 0, 1, 0, 1, 0, 1, 1, 0, ?6,
               ?9, ?9, ?9, ?7, ?8)",
        )?;
        let mut seq = conn.prepare(
            "INSERT INTO pg_sequence VALUES (?1, 20, 1, ?2, 9223372036854775807, 1, 1, 0)",
        )?;
        let by_name: HashMap<&str, &Relation> = self
            .relations
            .iter()
            .map(|r| (r.name.as_str(), r))
            .collect();
        for rel in &self.relations {
            let checks = rel.constraints.iter().filter(|c| c.kind == 'c').count() as i64;
            class.execute(params![
                rel.oid,
                rel.name,
                if rel.kind == 'r' { 2 } else { 0 },
                !rel.indexes.is_empty(),
                rel.kind.to_string(),
                rel.columns.len() as i64,
                checks,
                // Foreign keys are triggers in PostgreSQL; psql looks for them then.
                rel.constraints.iter().any(|c| c.kind == 'f')
                    || self.relations.iter().any(|o| o.constraints.iter().any(
                        |c| c.kind == 'f' && c.ref_table.as_deref() == Some(rel.name.as_str())
                    ))
            ])?;
            if let Some(v) = &rel.view_def {
                defs.execute(params![rel.oid, v, v])?;
            }
            let lower = rel.name.to_ascii_lowercase();
            for (i, c) in rel.columns.iter().enumerate() {
                let num = i as i64 + 1;
                let key = (lower.clone(), c.name.to_ascii_lowercase());
                // A view column showing a table column has that column's declared
                // type (with its modifier); a computed one, the view's recorded type.
                let (ty, declared) =
                    column_type(c.origin_type.as_ref().or(self.declared.get(&key)), &c.decl);
                let row = TYPES.iter().find(|t| t.oid == ty.oid() as i64);
                let len = row.map_or(-1, |t| t.len);
                let tmod = typmod(&declared);
                let serial = rel.serial.as_deref() == Some(key.1.as_str());
                let default = if serial {
                    Some(format!("nextval('{}_{}_seq'::regclass)", rel.name, c.name))
                } else {
                    c.default.clone()
                };
                attr.execute(params![
                    rel.oid,
                    c.name,
                    ty.oid(),
                    len,
                    num,
                    tmod,
                    (1..=8).contains(&len),
                    if len > 0 {
                        "p"
                    } else if ty == PgType::Numeric {
                        "m"
                    } else {
                        "x"
                    },
                    c.notnull,
                    default.is_some(),
                    "",
                    if matches!(ty, PgType::Text | PgType::Varchar | PgType::Bpchar) {
                        100
                    } else {
                        0
                    }
                ])?;
                if let Some(d) = &default {
                    attrdef.execute(params![rel.oid + 64 + num, rel.oid, num, d])?;
                }
                let formatted = row.map_or("text", |t| t.formatted);
                let (max_len, precision, radix, scale, dt_precision) = match ty {
                    PgType::Varchar | PgType::Bpchar => {
                        (Some(tmod - 4).filter(|n| *n >= 0), None, None, None, None)
                    }
                    PgType::Int2 => (None, Some(16), Some(2), Some(0), None),
                    PgType::Int4 => (None, Some(32), Some(2), Some(0), None),
                    PgType::Int8 => (None, Some(64), Some(2), Some(0), None),
                    PgType::Float4 => (None, Some(24), Some(2), None, None),
                    PgType::Float8 => (None, Some(53), Some(2), None, None),
                    PgType::Numeric if tmod >= 0 => (
                        None,
                        Some(((tmod - 4) >> 16) & 0xffff),
                        Some(10),
                        Some((tmod - 4) & 0xffff),
                        None,
                    ),
                    PgType::Numeric => (None, None, Some(10), None, None),
                    PgType::Date => (None, None, None, None, Some(0)),
                    PgType::Time | PgType::Timestamp | PgType::Timestamptz | PgType::Interval => {
                        (None, None, None, None, Some(6))
                    }
                    _ => (None, None, None, None, None),
                };
                info.execute(params![
                    rel.oid,
                    num,
                    formatted.trim_matches('"'),
                    row.map_or("text", |t| t.name),
                    max_len,
                    precision,
                    radix,
                    scale,
                    dt_precision,
                    default
                ])?;
            }
            if let Some(col) = &rel.serial {
                let seq_oid = rel.oid + 255;
                class.execute(params![
                    seq_oid,
                    format!("{}_{col}_seq", rel.name),
                    0,
                    false,
                    "S",
                    3,
                    0,
                    false
                ])?;
                seq.execute(params![seq_oid, 1])?;
            }
            let colnum = |table: &Relation, name: &str| {
                table
                    .columns
                    .iter()
                    .position(|c| c.name.eq_ignore_ascii_case(name))
                    .map_or(0, |p| p as i64 + 1)
            };
            for (k, c) in rel.constraints.iter().enumerate() {
                let oid = rel.oid + 1 + k as i64;
                let keys: Vec<i64> = c.columns.iter().map(|n| colnum(rel, n)).collect();
                let target = c.ref_table.as_deref().and_then(|t| by_name.get(t).copied());
                let fkeys: Vec<i64> = match target {
                    Some(t) => c.ref_columns.iter().map(|n| colnum(t, n)).collect(),
                    None => Vec::new(),
                };
                let index_oid = rel
                    .indexes
                    .iter()
                    .find(|i| i.constraint == Some(k))
                    .map_or(0, |i| i.oid);
                let array = |v: &[i64]| {
                    (!v.is_empty()).then(|| {
                        format!(
                            "[{}]",
                            v.iter()
                                .map(|n| n.to_string())
                                .collect::<Vec<_>>()
                                .join(",")
                        )
                    })
                };
                con.execute(params![
                    oid,
                    c.name,
                    c.kind.to_string(),
                    rel.oid,
                    index_oid,
                    target.map_or(0, |t| t.oid),
                    if c.kind == 'f' {
                        c.on_update.to_string()
                    } else {
                        " ".into()
                    },
                    if c.kind == 'f' {
                        c.on_delete.to_string()
                    } else {
                        " ".into()
                    },
                    array(&keys),
                    array(&fkeys),
                    (c.kind == 'c').then(|| c.def.clone())
                ])?;
                defs.execute(params![oid, c.plain_def(), c.def])?;
            }
            for ix in &rel.indexes {
                class.execute(params![
                    ix.oid,
                    ix.name,
                    403,
                    false,
                    "i",
                    ix.keys.len() as i64,
                    0,
                    false
                ])?;
                index.execute(params![
                    ix.oid,
                    rel.oid,
                    ix.keys.len() as i64,
                    ix.unique,
                    ix.primary,
                    ident_list(ix.keys.iter().map(|k| k.to_string())).replace(", ", " "),
                    (!ix.exprs.is_empty()).then(|| ix.exprs.join(", ")),
                    ix.predicate,
                    // indcollation, indclass, indoption: defaults for every key.
                    vec!["0"; ix.keys.len()].join(" ")
                ])?;
                defs.execute(params![ix.oid, ix.def, ix.pretty])?;
                // The index's own columns, as psql's `\d index` lists them.
                for (n, key) in ix.keys.iter().enumerate() {
                    if *key > 0 {
                        index_attr.execute(params![ix.oid, n as i64 + 1, rel.oid, key])?;
                    } else {
                        attr.execute(params![
                            ix.oid,
                            "expr",
                            25,
                            -1,
                            n as i64 + 1,
                            -1,
                            false,
                            "x",
                            false,
                            false,
                            "",
                            100
                        ])?;
                    }
                }
            }
        }
        for (i, (name, increment)) in self.sequences.iter().enumerate() {
            let oid = SEQUENCE_OIDS + i as i64;
            class.execute(params![oid, name, 0, false, "S", 3, 0, false])?;
            seq.execute(params![oid, increment])?;
        }
        // `oid::regclass` reads a relation's name here, under the negated oid.
        conn.execute_batch(
            "INSERT OR REPLACE INTO __unidb_defs SELECT -oid, relname, relname FROM pg_class",
        )?;
        Ok(())
    }
}
