//! A throwaway PostgreSQL 15 cluster for tests: `initdb` + `pg_ctl start` on a free
//! port in a temp dir (as the `postgres` system user when running as root), with a
//! SCRAM-authenticated role `app`/`app` owning database `app`. Stopped on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

pub const PG_BIN: &str = "/usr/lib/postgresql/15/bin";

pub struct PgCluster {
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

fn is_root() -> bool {
    // The effective uid of this process, read from /proc to avoid an FFI call.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// A command for a PostgreSQL binary, run as `postgres` when we are root.
fn pg_command(bin: &str) -> Command {
    let path = Path::new(PG_BIN).join(bin);
    assert!(
        path.exists(),
        "{} is missing: install PostgreSQL 15 server binaries (apt-get install postgresql-15)",
        path.display()
    );
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(path);
        c
    } else {
        Command::new(path)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl PgCluster {
    /// Creates and starts a cluster; `extra_conf` is appended to postgresql.conf.
    pub fn start(extra_conf: &str) -> PgCluster {
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(dir.path());
                    c
                },
                "chown",
            );
        }
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, "postgres\n").unwrap();
        if is_root() {
            run(
                {
                    let mut c = Command::new("chown");
                    c.arg("postgres:postgres").arg(&pwfile);
                    c
                },
                "chown",
            );
        }
        let mut initdb = pg_command("initdb");
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "-E", "UTF8", "--locale=C"])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .arg("--no-sync");
        run(initdb, "initdb");
        let port = free_port();
        let conf = format!(
            "port = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n\
             fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 100\n\
             shared_buffers = 32MB\nlog_min_messages = warning\n{extra_conf}\n",
            dir.path().display()
        );
        let conf_path = data.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf_path).unwrap();
        text.push_str(&conf);
        std::fs::write(&conf_path, text).unwrap();
        let mut cluster = PgCluster {
            port,
            dir,
            running: false,
        };
        cluster.start_again();
        cluster.psql("CREATE ROLE app LOGIN PASSWORD 'app'", "postgres");
        cluster.psql("CREATE DATABASE app OWNER app", "postgres");
        cluster
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the (stopped) cluster again on the same port and waits for it.
    pub fn start_again(&mut self) {
        let mut c = pg_command("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .args(["-w", "-t", "30", "start"]);
        run(c, "pg_ctl start");
        self.running = true;
    }

    /// Stops the cluster (`fast`: sessions are terminated, as in a restart).
    pub fn stop(&mut self) {
        let mut c = pg_command("pg_ctl");
        c.arg("-D")
            .arg(self.data())
            .args(["-w", "-t", "30", "-m", "fast", "stop"]);
        run(c, "pg_ctl stop");
        self.running = false;
    }

    /// Runs SQL as the superuser over the Unix socket; returns psql's unaligned output.
    pub fn psql(&self, sql: &str, db: &str) -> String {
        let mut c = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--", "psql"]);
            c
        } else {
            Command::new("psql")
        };
        c.arg("-h")
            .arg(self.dir.path())
            .arg("-p")
            .arg(self.port.to_string())
            .args([
                "-U",
                "postgres",
                "-d",
                db,
                "-X",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                sql,
            ]);
        let out = c
            .output()
            .expect("psql (apt-get install postgresql-client)");
        assert!(
            out.status.success(),
            "psql {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// The upstream url of user `app` on database `app`, without TLS.
    pub fn app_url(&self) -> String {
        format!(
            "postgres://app:app@127.0.0.1:{}/app?sslmode=disable",
            self.port
        )
    }

    /// A tokio-postgres connection string straight to the cluster.
    pub fn direct_url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db}",
            self.port
        )
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.running {
            let mut c = pg_command("pg_ctl");
            c.arg("-D")
                .arg(self.data())
                .args(["-w", "-m", "immediate", "stop"]);
            let _ = c.output();
        }
    }
}

/// Config text of unidb serving database `app` from the upstream at `url`:
/// `server_extra` goes into `[server]`, `tables` (whole TOML tables such as
/// `[observe]`) before the users, `keys` into `[databases.app]` (pool settings; whole
/// tables such as `[[alerts]]` may follow them).
pub fn pooler_text(url: &str, keys: &str, server_extra: &str, tables: &str, users: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
{server_extra}

[http]
listen = "127.0.0.1:0"

{tables}

{users}

[databases.app]
backend = "postgres"
url = "{url}"
{keys}
"#
    )
}

/// unidb serving database `app` (user `app`/`app`) from the upstream at `url`, with
/// `keys` added to that database's table (pool settings).
pub async fn pooler(url: &str, keys: &str) -> super::TestServer {
    let dir = tempfile::tempdir().unwrap();
    let text = pooler_text(url, keys, "", "", super::APP_USER);
    super::TestServer::start_config(dir, &text).await
}
