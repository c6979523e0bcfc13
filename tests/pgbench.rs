//! pgbench, unchanged, against unidb serving a SQLite file: `pgbench -i -s 10`
//! (DROP/CREATE with storage options, multi-table TRUNCATE, COPY FROM STDIN,
//! VACUUM ANALYZE, ALTER TABLE … ADD PRIMARY KEY by table rebuild), then the builtin
//! TPC-B and select-only scripts in all three query protocols, with no failed
//! transaction (pgbench's own VACUUM and TRUNCATE before a run are checked by the
//! load itself). Afterwards the money adds up: every balance equals the sum of the
//! history rows that changed it.

mod common;

use common::TestServer;

/// Runs pgbench to completion; returns its stdout, asserting success.
fn run(port: u16, args: &[&str]) -> String {
    let out = common::pgbench(port, args)
        .wait_with_output()
        .expect("pgbench runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "pgbench {args:?} failed:\n{stdout}\n{stderr}"
    );
    assert!(
        !stderr.contains("error"),
        "pgbench {args:?} reported errors:\n{stderr}"
    );
    stdout
}

/// The transactions pgbench processed, after checking none failed.
fn processed(report: &str) -> u64 {
    assert!(
        report.contains("number of failed transactions: 0 (0.000%)"),
        "failed transactions:\n{report}"
    );
    report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{report}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_init_tpcb_and_select_only_on_sqlite() {
    let server = TestServer::start().await;
    let port = server.addr.port();
    run(port, &["-i", "-s", "10", "-q"]);
    let c = server.connect().await;
    assert_eq!(common::count(&c, "pgbench_accounts").await, 1_000_000);
    assert_eq!(common::count(&c, "pgbench_branches").await, 10);
    assert_eq!(common::count(&c, "pgbench_tellers").await, 100);
    // The primary keys pgbench adds after loading are real constraints.
    let pk: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.table_constraints
             WHERE constraint_type = 'PRIMARY KEY' AND table_name LIKE 'pgbench_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pk, 3);
    let e = c
        .execute(
            "INSERT INTO pgbench_branches (bid, bbalance) VALUES (1, 0)",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(common::sqlstate(&e), "23505");

    // `-n`: no VACUUM and history TRUNCATE before each run, so the history keeps
    // every change since the load.
    for protocol in ["simple", "extended", "prepared"] {
        let tpcb = run(
            port,
            &["-n", "-M", protocol, "-c", "4", "-j", "2", "-T", "4"],
        );
        assert!(processed(&tpcb) > 0, "{tpcb}");
        let select = run(
            port,
            &["-n", "-M", protocol, "-S", "-c", "8", "-j", "2", "-T", "3"],
        );
        assert!(processed(&select) > 0, "{select}");
    }

    // Every TPC-B transaction moved the same delta on an account, a teller and a
    // branch and wrote it to the history.
    let history: i64 = c
        .query_one("SELECT count(*) FROM pgbench_history", &[])
        .await
        .unwrap()
        .get(0);
    assert!(history > 0);
    for (table, column) in [
        ("pgbench_accounts", "abalance"),
        ("pgbench_tellers", "tbalance"),
        ("pgbench_branches", "bbalance"),
    ] {
        let row = c
            .query_one(
                &format!(
                    "SELECT (SELECT sum({column}) FROM {table})::int8,
                            (SELECT sum(delta) FROM pgbench_history)::int8"
                ),
                &[],
            )
            .await
            .unwrap();
        let (balances, deltas): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(balances, deltas, "{table}.{column} against the history");
    }
    server.stop().await;
}
