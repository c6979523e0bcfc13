//! The `unidb` binary as a process: durability across SIGKILL, graceful SIGTERM,
//! psql as a client, and the CLI.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, port: u16, synchronous: &str) -> std::path::PathBuf {
    let path = dir.join("unidb.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[server]
listen = "127.0.0.1:{port}"
shutdown_grace = "10s"

[http]
listen = "127.0.0.1:0"

[[users]]
name = "app"
password = "app"

[databases.app]
backend = "sqlite"
path = "{}/app.db"
synchronous = "{synchronous}"
"#,
            dir.display()
        ),
    )
    .unwrap();
    path
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(config: &Path) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_unidb"))
        .args(["serve", "--config"])
        .arg(config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start unidb");
    Proc(child)
}

async fn connect(port: u16) -> tokio_postgres::Client {
    let url = format!("host=127.0.0.1 port={port} user=app password=app dbname=app");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match tokio_postgres::connect(&url, tokio_postgres::NoTls).await {
            Ok((c, conn)) => {
                tokio::spawn(conn);
                return c;
            }
            Err(e) if Instant::now() > deadline => panic!("unidb did not start: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A `unidb serve` process on a fresh database, and a client connected to it.
struct Started {
    dir: tempfile::TempDir,
    port: u16,
    config: std::path::PathBuf,
    proc: Proc,
    client: tokio_postgres::Client,
}

async fn start_binary(synchronous: &str) -> Started {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = write_config(dir.path(), port, synchronous);
    let proc = spawn(&config);
    let client = connect(port).await;
    Started {
        dir,
        port,
        config,
        proc,
        client,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_loses_no_acknowledged_commit() {
    let Started {
        dir: _dir,
        port,
        config,
        mut proc,
        client: c,
    } = start_binary("full").await;
    c.batch_execute("CREATE TABLE acked (id INT PRIMARY KEY, payload TEXT NOT NULL)")
        .await
        .unwrap();
    let writer = tokio::spawn(async move {
        let mut acked = Vec::new();
        for i in 0..100_000i32 {
            let r = if i % 3 == 0 {
                c.batch_execute(&format!(
                    "BEGIN; INSERT INTO acked VALUES ({i}, 'tx'); COMMIT"
                ))
                .await
            } else {
                c.execute("INSERT INTO acked VALUES ($1, 'auto')", &[&i])
                    .await
                    .map(|_| ())
            };
            match r {
                Ok(()) => acked.push(i),
                Err(_) => break,
            }
        }
        acked
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    proc.0.kill().unwrap(); // SIGKILL
    proc.0.wait().unwrap();
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 50,
        "too few commits before the kill: {}",
        acked.len()
    );
    let _proc = spawn(&config);
    let c = connect(port).await;
    let rows = c
        .query("SELECT id FROM acked ORDER BY id", &[])
        .await
        .unwrap();
    let present: std::collections::HashSet<i32> = rows.iter().map(|r| r.get(0)).collect();
    let missing: Vec<&i32> = acked.iter().filter(|i| !present.contains(i)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged rows lost, first {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    // At most the one in-flight statement may have committed without its ack.
    assert!(present.len() <= acked.len() + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_lets_the_open_transaction_finish_and_checkpoints() {
    let Started {
        dir,
        port,
        config,
        mut proc,
        client: c,
    } = start_binary("normal").await;
    c.batch_execute("CREATE TABLE t (i INT); BEGIN; INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let status = Command::new("kill")
        .args(["-TERM", &proc.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New clients are refused while the transaction finishes.
    let url =
        format!("host=127.0.0.1 port={port} user=app password=app dbname=app connect_timeout=2");
    assert!(tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .is_err());
    c.batch_execute("INSERT INTO t VALUES (2); COMMIT")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let code = loop {
        if let Some(s) = proc.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "unidb did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "exit status {code}");
    let wal = dir.path().join("app.db-wal");
    assert!(
        !wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0,
        "WAL not checkpointed"
    );
    let _proc = spawn(&config);
    let c = connect(port).await;
    let n: i64 = common::count(&c, "t").await;
    assert_eq!(n, 2);
}

fn psql(port: u16, args: &[&str]) -> std::process::Output {
    psql_sslmode(port, "prefer", args)
}

/// psql as user `app` against `port`, with `PGSSLMODE` set to `sslmode`.
fn psql_sslmode(port: u16, sslmode: &str, args: &[&str]) -> std::process::Output {
    let out = Command::new("psql")
        .env("PGPASSWORD", "app")
        .env("PGSSLMODE", sslmode)
        .args([
            "-X",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-U",
            "app",
            "-d",
            "app",
        ])
        .args(args)
        .output();
    match out {
        Ok(o) => o,
        Err(e) => panic!("psql is needed for this test ({e}); install it with: apt-get install -y postgresql-client"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn psql_session_as_a_new_user_would() {
    let s = common::TestServer::start().await;
    let port = s.addr.port();
    let out = tokio::task::spawn_blocking(move || {
        psql(port, &[
            "-c", "CREATE TABLE projects (id SERIAL PRIMARY KEY, name TEXT NOT NULL, active BOOLEAN DEFAULT true, created_at TIMESTAMPTZ DEFAULT now())",
            "-c", "INSERT INTO projects (name) VALUES ('alpha'), ('beta') RETURNING id, name, active",
            "-c", "UPDATE projects SET active = false WHERE name = 'beta'",
            "-c", "BEGIN", "-c", "DELETE FROM projects", "-c", "ROLLBACK",
        ])
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("  1 | alpha | t"), "{stdout}");
    assert!(stdout.contains("INSERT 0 2"), "{stdout}");
    assert!(stdout.contains("UPDATE 1"), "{stdout}");
    assert!(stdout.contains("DELETE 2"), "{stdout}");
    let out = tokio::task::spawn_blocking(move || {
        psql(
            port,
            &[
                "-A",
                "-t",
                "-c",
                "SELECT id, name, active FROM projects ORDER BY id",
            ],
        )
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout, "1|alpha|t\n2|beta|f\n");
    // A failing statement reports its SQLSTATE-backed message and exits non-zero.
    let out = tokio::task::spawn_blocking(move || {
        psql(port, &["-c", "INSERT INTO projects (name) VALUES (NULL)"])
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("null value violates not-null constraint"),
        "{stderr}"
    );
    s.stop().await;
}

#[test]
fn cli_version_and_config_check() {
    let out = Command::new(env!("CARGO_BIN_EXE_unidb"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("unidb "));
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/unidb.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_unidb"))
        .args(["config", "check"])
        .arg(&shipped)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("password = \"********\""), "{stdout}");
    assert!(!stdout.contains("password = \"app\""));
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[server]\nlisten = 5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_unidb"))
        .args(["config", "check"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad.toml:2:"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_psql_sslmode_require() {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("server.crt");
    let key = dir.path().join("server.key");
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(Stdio::null())
        .status()
        .expect("openssl is needed to make a test certificate (apt-get install -y openssl)");
    assert!(status.success());
    let extra = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        cert.display(),
        key.display()
    );
    let text = common::config_text(dir.path(), "", common::APP_USER)
        .replace("\n[[users]]", &format!("\n{extra}\n[[users]]"));
    let s = common::TestServer::start_config(tempfile::tempdir().unwrap(), &text).await;
    let port = s.addr.port();
    let out = tokio::task::spawn_blocking(move || {
        psql_sslmode(port, "require", &["-A", "-t", "-c", "SELECT 40 + 2"])
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    s.stop().await;
    // Without TLS configured, sslmode=require is refused.
    let plain = common::TestServer::start().await;
    let port = plain.addr.port();
    let out =
        tokio::task::spawn_blocking(move || psql_sslmode(port, "require", &["-c", "SELECT 1"]))
            .await
            .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("SSL"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    plain.stop().await;
}
