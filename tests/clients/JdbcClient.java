// Client checks with pgjdbc against a PostgreSQL-protocol server.
//
// prepareThreshold=1 makes every PreparedStatement a named server-side statement from its
// first execution; each one is reused across many short transactions
// (setAutoCommit(false) ... commit), so behind a transaction-pooling server each use may
// land on a different upstream connection. Values travel in pgjdbc's binary format where
// it has one (int4, int8, float8, numeric, timestamptz, bytea, uuid) and as text otherwise.
// Also covered: a batch insert, a failing statement and a failing batch inside a
// transaction followed by rollback and further use, a startup parameter, and SET session
// settings that must stay in effect across transactions while SET LOCAL and a
// rolled-back SET must not.
//
// Run (a JDK is needed for single-file source launch):
//   java -cp /usr/share/java/postgresql.jar tests/clients/JdbcClient.java
// Connection: UNIDB_HOST, UNIDB_PORT, UNIDB_USER, UNIDB_PASSWORD, UNIDB_DB.
// Prints one line per check; exits 1 with a message on the first mismatch.

import java.math.BigDecimal;
import java.sql.BatchUpdateException;
import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.sql.Types;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Properties;
import java.util.UUID;
import org.postgresql.PGStatement;

public class JdbcClient {
    static final String TABLE = "unidb_clients_jdbc_" + ProcessHandle.current().pid();
    static final String[] COLUMNS = {"id", "i4", "i8", "txt", "flag", "f8", "num", "ts", "blob", "uid", "doc"};
    static final String[] COLUMN_TYPES = {"int4", "int4", "int8", "text", "bool", "float8", "numeric",
        "timestamptz", "bytea", "uuid", "jsonb"};
    static final Class<?>[] JAVA_TYPES = {Integer.class, Integer.class, Long.class, String.class,
        Boolean.class, Double.class, BigDecimal.class, OffsetDateTime.class, byte[].class, UUID.class,
        String.class};
    static final int[] SQL_TYPES = {Types.INTEGER, Types.INTEGER, Types.BIGINT, Types.VARCHAR,
        Types.BOOLEAN, Types.DOUBLE, Types.NUMERIC, Types.TIMESTAMP_WITH_TIMEZONE, Types.BINARY,
        Types.OTHER, Types.OTHER};
    static final String COLS = String.join(", ", COLUMNS);
    static final String STARTUP_APP_NAME = "unidb_jdbc_startup";
    static final String APP_NAME = "unidb_jdbc";
    static final String TIMEZONE = "Australia/Adelaide";
    /** The SQLite backend keeps and prints timestamptz in UTC whatever TimeZone says. */
    static final boolean SQLITE = "sqlite".equals(System.getenv("UNIDB_BACKEND"));

    /** Numeric wider than the 15 significant digits SQLite's REAL keeps is refused there. */
    static final String WIDE = SQLITE ? "1234567890.12345" : "12345678901234567890.123456789";

    /** What the server under test prints for a timestamptz. */
    static String inSessionTz(String local, String utc) {
        return SQLITE ? utc : local;
    }

    // Values as read back with getObject(column, JAVA_TYPES[i]) (getBytes for bytea, getString for
    // text and jsonb); jsonb as its canonical text.
    static final Object[][] ROWS = {
        {1, 2147483647, 9223372036854775807L, "héllo 'wörld' ✓ \\ \t tab", true, 0.1,
            new BigDecimal(WIDE),
            OffsetDateTime.of(2024, 2, 29, 23, 59, 59, 123456000, ZoneOffset.UTC),
            new byte[] {0, (byte) 0xff, 0x10, 'b', '\\'}, UUID.fromString("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            "{\"a\": \"x\", \"b\": [1, 2.5, null], \"nested\": {\"k\": true}}"},
        {2, -2147483648, -9223372036854775808L, "", false, -1.5e300, new BigDecimal("-0.000000001"),
            OffsetDateTime.of(1999, 12, 31, 12, 0, 0, 0, ZoneOffset.ofHours(-5)), new byte[0],
            UUID.fromString("00000000-0000-0000-0000-000000000000"), "[1, \"two\", null]"},
        {3, 0, 0L, null, null, null, null, null, null, null, null},
    };
    static final Object[] ROLLED_BACK = {4, 4, 4L, "rolled back", true, 4.0, new BigDecimal("4"),
        OffsetDateTime.of(2004, 4, 4, 0, 0, 0, 0, ZoneOffset.UTC), new byte[] {4}, UUID.randomUUID(),
        "{\"n\": 4}"};

    static final class CheckFailed extends Exception {
        CheckFailed(String message) {
            super(message);
        }
    }

    static String describe(Object v) {
        if (v == null) return "null";
        String text = v instanceof byte[] ? Arrays.toString((byte[]) v) : v.toString();
        return text + " (" + v.getClass().getSimpleName() + ")";
    }

    static boolean same(Object got, Object want) {
        if (got == null || want == null) return got == want;
        if (got.getClass() != want.getClass()) return false;
        if (want instanceof byte[]) return Arrays.equals((byte[]) got, (byte[]) want);
        if (want instanceof OffsetDateTime) return ((OffsetDateTime) got).isEqual((OffsetDateTime) want);
        return got.equals(want);
    }

    static void check(String name, Object got, Object want) throws CheckFailed {
        if (!same(got, want)) {
            throw new CheckFailed(name + ": expected " + describe(want) + ", got " + describe(got));
        }
        System.out.println("ok - " + name);
    }

    static void checkRow(String name, Object[] got, Object[] want) throws CheckFailed {
        if (got == null) throw new CheckFailed(name + ": expected a row, got none");
        for (int i = 0; i < want.length; i++) {
            if (!same(got[i], want[i])) {
                throw new CheckFailed(name + ": column " + COLUMNS[i] + ": expected " + describe(want[i])
                    + ", got " + describe(got[i]));
            }
        }
        System.out.println("ok - " + name);
    }

    interface SqlAction {
        void run() throws SQLException;
    }

    static void checkSqlState(String name, String sqlState, SqlAction action) throws CheckFailed {
        try {
            action.run();
        } catch (SQLException e) {
            if (!sqlState.equals(e.getSQLState())) {
                throw new CheckFailed(name + ": expected SQLSTATE " + sqlState + ", got " + e.getSQLState()
                    + ": " + e.getMessage());
            }
            System.out.println("ok - " + name + " (SQLSTATE " + e.getSQLState() + ")");
            return;
        }
        throw new CheckFailed(name + ": expected SQLSTATE " + sqlState + ", but no error was raised");
    }

    static void bindRow(PreparedStatement ps, Object[] row) throws SQLException {
        for (int i = 0; i < row.length; i++) {
            if (row[i] == null) {
                ps.setNull(i + 1, SQL_TYPES[i]);
            } else if (i == 10) {
                ps.setObject(i + 1, row[i], Types.OTHER); // jsonb from its text
            } else {
                ps.setObject(i + 1, row[i]);
            }
        }
    }

    /** The row with the given id read through the prepared SELECT, or null if there is none. */
    static Object[] fetchRow(PreparedStatement select, int id) throws SQLException {
        select.setInt(1, id);
        try (ResultSet rs = select.executeQuery()) {
            if (!rs.next()) return null;
            Object[] row = new Object[COLUMNS.length];
            for (int i = 0; i < row.length; i++) {
                // pgjdbc 42.5 converts neither bytea to byte[].class nor jsonb to String.class
                if (JAVA_TYPES[i] == byte[].class) {
                    row[i] = rs.getBytes(i + 1);
                } else if (JAVA_TYPES[i] == String.class) {
                    row[i] = rs.getString(i + 1);
                } else {
                    row[i] = rs.getObject(i + 1, JAVA_TYPES[i]);
                }
            }
            if (rs.next()) throw new SQLException("more than one row for id " + id);
            return row;
        }
    }

    static Object scalar(Connection conn, String sql) throws SQLException {
        try (Statement st = conn.createStatement(); ResultSet rs = st.executeQuery(sql)) {
            rs.next();
            return rs.getObject(1);
        }
    }

    static void checkSettings(Connection conn, PreparedStatement settings, String label)
            throws SQLException, CheckFailed {
        try (ResultSet rs = settings.executeQuery()) {
            rs.next();
            check(label + ": application_name, TimeZone, statement_timeout",
                rs.getString(1) + " | " + rs.getString(2) + " | " + rs.getString(3),
                APP_NAME + " | " + TIMEZONE + " | 40s");
        }
        check(label + ": SHOW application_name", scalar(conn, "SHOW application_name"), APP_NAME);
        check(label + ": timestamptz rendered in " + TIMEZONE,
            scalar(conn, "SELECT '2024-01-02 03:04:05+00'::timestamptz::text"),
            inSessionTz("2024-01-02 13:34:05+10:30", "2024-01-02 03:04:05+00"));
        conn.commit();
    }

    static void run(Connection conn) throws SQLException, CheckFailed {
        // --- connection, startup parameter, session settings ---------------------------
        conn.setAutoCommit(true);
        check("SELECT 1", scalar(conn, "SELECT 1"), 1);
        check("application_name from the startup packet", scalar(conn, "SHOW application_name"),
            STARTUP_APP_NAME);
        try (Statement st = conn.createStatement()) {
            st.execute("SET application_name = '" + APP_NAME + "'");
            st.execute("SET TimeZone = '" + TIMEZONE + "'");
        }
        check("ParameterStatus application_name after SET", conn.getClientInfo("ApplicationName"), APP_NAME);
        conn.setAutoCommit(false);
        try (Statement st = conn.createStatement()) {
            st.execute("SET statement_timeout = '40s'"); // committed: stays
            conn.commit();
            st.execute("SET LOCAL application_name = 'set_local'"); // ends with its transaction
            check("SET LOCAL visible inside its transaction", scalar(conn, "SHOW application_name"), "set_local");
            conn.commit();
            st.execute("SET statement_timeout = '41s'"); // rolled back: undone
            conn.rollback();
        }
        PreparedStatement settings = conn.prepareStatement("SELECT current_setting('application_name'), "
            + "current_setting('TimeZone'), current_setting('statement_timeout')");
        checkSettings(conn, settings, "after SET LOCAL and rolled-back SET");

        // --- table and batch insert ----------------------------------------------------------
        try (Statement st = conn.createStatement()) {
            st.execute("CREATE TABLE " + TABLE + " (id int4 PRIMARY KEY, i4 int4, i8 int8, txt text, "
                + "flag bool, f8 float8, num numeric, ts timestamptz, blob bytea, uid uuid, doc jsonb)");
        }
        conn.commit();
        String marks = String.join(", ", java.util.Collections.nCopies(COLUMNS.length, "?"));
        PreparedStatement insert = conn.prepareStatement(
            "INSERT INTO " + TABLE + " (" + COLS + ") VALUES (" + marks + ")");
        for (Object[] row : ROWS) {
            bindRow(insert, row);
            insert.addBatch();
        }
        int[] counts = insert.executeBatch();
        conn.commit();
        check("batch insert update counts", Arrays.toString(counts), "[1, 1, 1]");

        // --- DatabaseMetaData: the catalog as tools read it ----------------------------------
        java.sql.DatabaseMetaData meta = conn.getMetaData();
        try (ResultSet rs = meta.getTables(null, "public", TABLE, new String[] {"TABLE"})) {
            List<String> tables = new ArrayList<>();
            while (rs.next()) tables.add(rs.getString("TABLE_NAME") + ":" + rs.getString("TABLE_TYPE"));
            check("getTables", String.join(",", tables), TABLE + ":TABLE");
        }
        try (ResultSet rs = meta.getColumns(null, "public", TABLE, null)) {
            List<String> cols = new ArrayList<>();
            while (rs.next()) {
                cols.add(rs.getString("COLUMN_NAME") + " " + rs.getString("TYPE_NAME") + " "
                    + rs.getInt("DATA_TYPE") + " " + rs.getString("IS_NULLABLE"));
            }
            check("getColumns", String.join(", ", cols),
                "id int4 4 NO, i4 int4 4 YES, i8 int8 -5 YES, txt text 12 YES, flag bool -7 YES, "
                + "f8 float8 8 YES, num numeric 2 YES, ts timestamptz 93 YES, blob bytea -2 YES, "
                + "uid uuid 1111 YES, doc jsonb 1111 YES");
        }
        try (ResultSet rs = meta.getPrimaryKeys(null, "public", TABLE)) {
            List<String> keys = new ArrayList<>();
            while (rs.next()) keys.add(rs.getString("COLUMN_NAME") + "#" + rs.getInt("KEY_SEQ"));
            check("getPrimaryKeys", String.join(",", keys), "id#1");
        }
        try (ResultSet rs = meta.getIndexInfo(null, "public", TABLE, false, false)) {
            List<String> idx = new ArrayList<>();
            while (rs.next()) {
                idx.add(rs.getString("COLUMN_NAME") + (rs.getBoolean("NON_UNIQUE") ? " non-unique" : " unique"));
            }
            check("getIndexInfo", String.join(",", idx), "id unique");
        }
        conn.commit();

        // --- one prepared SELECT reused across transactions ---------------------------------
        PreparedStatement select = conn.prepareStatement("SELECT " + COLS + " FROM " + TABLE + " WHERE id = ?");
        for (int round = 1; round <= 3; round++) {
            for (Object[] want : ROWS) {
                Object[] got = fetchRow(select, (Integer) want[0]);
                conn.commit();
                checkRow("prepared SELECT, transaction round " + round + ", id " + want[0], got, want);
            }
        }
        check("SELECT runs as a named server-side statement",
            select.unwrap(PGStatement.class).isUseServerPrepare(), true);
        check("INSERT runs as a named server-side statement",
            insert.unwrap(PGStatement.class).isUseServerPrepare(), true);
        select.setInt(1, 1);
        try (ResultSet rs = select.executeQuery()) {
            ResultSetMetaData md = rs.getMetaData();
            List<String> types = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) types.add(md.getColumnTypeName(i));
            check("result column types", String.join(",", types), String.join(",", COLUMN_TYPES));
            rs.next();
            List<String> classes = new ArrayList<>();
            for (int i = 1; i <= md.getColumnCount(); i++) classes.add(rs.getObject(i).getClass().getSimpleName());
            check("getObject classes", String.join(",", classes),
                "Integer,Integer,Long,String,Boolean,Double,BigDecimal,Timestamp,byte[],UUID,PGobject");
            // pgjdbc reads timestamptz in binary and renders it in TimeZone itself.
            check("getString of timestamptz in the session TimeZone", rs.getString("ts"),
                "2024-03-01 10:29:59.123456+10:30");
        }
        conn.commit();
        PreparedStatement expr = conn.prepareStatement("SELECT ?::int8 + 1, ?::numeric * 2, ?::text || '!'");
        for (int round = 1; round <= 2; round++) {
            expr.setLong(1, 41);
            expr.setBigDecimal(2, new BigDecimal("1.25"));
            expr.setString(3, "x");
            try (ResultSet rs = expr.executeQuery()) {
                rs.next();
                check("typed parameters in expressions, round " + round,
                    rs.getLong(1) + " " + rs.getBigDecimal(2) + " " + rs.getString(3),
                    // SQLite computes numeric in REAL: 1.25 * 2 has no trailing zero.
                    SQLITE ? "42 2.5 x!" : "42 2.50 x!");
            }
            conn.commit();
        }

        // --- failing statements inside a transaction, rollback, continued use ------------
        bindRow(insert, ROLLED_BACK);
        check("insert before the error", insert.executeUpdate(), 1);
        bindRow(insert, ROWS[0]);
        checkSqlState("duplicate key inside a transaction", "23505", insert::executeUpdate);
        checkSqlState("statement in the failed transaction", "25P02", () -> fetchRow(select, 1));
        conn.rollback();
        check("row inserted before the error was rolled back", fetchRow(select, (Integer) ROLLED_BACK[0]), null);
        conn.commit();
        checkRow("prepared SELECT after rollback", fetchRow(select, 1), ROWS[0]);
        conn.commit();

        PreparedStatement divide = conn.prepareStatement("SELECT 100 / ?::int4");
        divide.setInt(1, 4);
        check("prepared division before the error", scalarOf(divide), 25);
        divide.setInt(1, 0);
        checkSqlState("prepared division by zero inside a transaction", "22012", () -> scalarOf(divide));
        conn.rollback();
        for (int[] c : new int[][] {{5, 20}, {3, 33}}) {
            divide.setInt(1, c[0]);
            check("same prepared division after rollback (100/" + c[0] + ")", scalarOf(divide), c[1]);
            conn.commit();
        }

        bindRow(insert, ROLLED_BACK);
        insert.addBatch();
        bindRow(insert, ROWS[1]);
        insert.addBatch();
        try {
            insert.executeBatch();
            throw new CheckFailed("batch with a duplicate key: no error raised");
        } catch (BatchUpdateException e) {
            String state = e.getNextException() != null ? e.getNextException().getSQLState() : e.getSQLState();
            check("batch with a duplicate key fails (SQLSTATE)", state, "23505");
        }
        conn.rollback();
        check("failed batch left no row", fetchRow(select, (Integer) ROLLED_BACK[0]), null);
        conn.commit();
        checkSettings(conn, settings, "after the failed transactions");

        // --- aggregate, settings once more, drop -----------------------------------------------
        try (Statement st = conn.createStatement();
             ResultSet rs = st.executeQuery("SELECT count(*), sum(i8), count(doc) FROM " + TABLE)) {
            rs.next();
            check("count, sum(int8) and count(jsonb) over the table",
                rs.getLong(1) + " " + rs.getBigDecimal(2) + " " + rs.getLong(3), "3 -1 2");
        }
        conn.commit();
        checkSettings(conn, settings, "at the end");
        try (Statement st = conn.createStatement()) {
            st.execute("DROP TABLE " + TABLE);
        }
        conn.commit();
        PreparedStatement regclass = conn.prepareStatement("SELECT to_regclass(?)::text");
        regclass.setString(1, TABLE);
        check("table dropped", scalarOf(regclass), null);
        conn.commit();
    }

    static Object scalarOf(PreparedStatement ps) throws SQLException {
        try (ResultSet rs = ps.executeQuery()) {
            rs.next();
            return rs.getObject(1);
        }
    }

    static String env(String name) {
        String v = System.getenv(name);
        return v == null ? "" : v;
    }

    public static void main(String[] args) {
        for (String v : new String[] {"UNIDB_HOST", "UNIDB_PORT", "UNIDB_USER", "UNIDB_DB"}) {
            if (env(v).isEmpty()) {
                System.err.println("FAIL - missing environment variable " + v);
                System.exit(2);
            }
        }
        String url = "jdbc:postgresql://" + env("UNIDB_HOST") + ":" + env("UNIDB_PORT") + "/" + env("UNIDB_DB")
            + "?prepareThreshold=1";
        Properties props = new Properties();
        props.setProperty("user", env("UNIDB_USER"));
        props.setProperty("password", env("UNIDB_PASSWORD"));
        props.setProperty("sslmode", "disable");
        props.setProperty("connectTimeout", "10");
        props.setProperty("ApplicationName", STARTUP_APP_NAME);
        System.out.println("pgjdbc " + org.postgresql.util.DriverInfo.DRIVER_VERSION + ", table " + TABLE);

        int status = 0;
        try (Connection conn = DriverManager.getConnection(url, props)) {
            try {
                run(conn);
            } catch (CheckFailed e) {
                System.err.println("FAIL - " + e.getMessage());
                status = 1;
            } catch (SQLException e) {
                System.err.println("FAIL - unexpected SQLException (SQLSTATE " + e.getSQLState() + "): " + e.getMessage());
                status = 1;
            } finally {
                try {
                    if (!conn.getAutoCommit()) conn.rollback();
                    conn.setAutoCommit(true);
                    try (Statement st = conn.createStatement()) {
                        st.execute("DROP TABLE IF EXISTS " + TABLE);
                    }
                } catch (SQLException e) {
                    System.err.println("warning - could not drop " + TABLE + ": " + e.getMessage());
                }
            }
        } catch (SQLException e) {
            System.err.println("FAIL - connect: " + e.getMessage());
            status = 1;
        }
        if (status == 0) System.out.println("jdbc: all checks passed");
        System.exit(status);
    }
}
