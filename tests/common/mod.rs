//! Test harness: starts unidb in-process on port 0 over a SQLite file in a temp
//! directory, and connects real PostgreSQL clients to it.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

pub mod pg;

use tokio::sync::oneshot;
use unidb::config::Config;

pub struct TestServer {
    pub addr: SocketAddr,
    pub state: Arc<unidb::server::ServerState>,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// Config text for a server with user `app`/`app` and database `app`, with
/// `extra` appended to `[server]`.
pub fn config_text(dir: &std::path::Path, server_extra: &str, users: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
shutdown_grace = "5s"
{server_extra}

{users}

[http]
listen = "127.0.0.1:0"

[databases.app]
backend = "sqlite"
path = "{}/app.db"
readers = 3
busy_timeout = "2s"
"#,
        dir.display()
    )
}

pub const APP_USER: &str = "[[users]]\nname = \"app\"\npassword = \"app\"\n";

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with("", APP_USER).await
    }

    pub async fn start_with(server_extra: &str, users: &str) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        let text = config_text(dir.path(), server_extra, users);
        Self::start_config(dir, &text).await
    }

    pub async fn start_config(dir: tempfile::TempDir, text: &str) -> TestServer {
        // Server logs go to the test's captured output (shown when a test fails).
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_test_writer()
            .try_init();
        let config = Config::parse(text, "test.toml", &[]).unwrap();
        let state = unidb::server::ServerState::new(config).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(unidb::server::run(listener, state.clone(), async {
            let _ = rx.await;
        }));
        TestServer {
            addr,
            state,
            dir,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Base URL of the HTTP endpoint (waits for it to listen).
    pub async fn http(&self) -> String {
        for _ in 0..200 {
            if let Some(a) = self.state.http_addr.get() {
                return format!("http://{a}");
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("the HTTP endpoint did not start (is [http] listen set?)");
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={user} password={password} dbname={db} connect_timeout=10",
            self.addr.port()
        )
    }

    pub async fn connect(&self) -> tokio_postgres::Client {
        self.try_connect("app", "app", "app").await.unwrap()
    }

    pub async fn try_connect(
        &self,
        user: &str,
        password: &str,
        db: &str,
    ) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.url(user, password, db), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    /// Stops the server and waits for a clean shutdown.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
    }
}

pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

pub type Shared<T> = Arc<T>;

/// `SELECT count(*) FROM table`.
pub async fn count(c: &impl tokio_postgres::GenericClient, table: &str) -> i64 {
    c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Starts pgbench as user `app` (password `app`) on database `app` of the server at
/// 127.0.0.1:`port`, with its output captured.
pub fn pgbench(port: u16, args: &[&str]) -> std::process::Child {
    std::process::Command::new("pgbench")
        .env("PGPASSWORD", "app")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "app"])
        .args(args)
        .arg("app")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pgbench (installed with PostgreSQL)")
}

/// A raw protocol 3.0 connection as user and database `app`, past startup (the
/// server must trust the user): AuthenticationOk, then up to ReadyForQuery.
pub async fn raw_session(s: &TestServer) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut tcp = tokio::net::TcpStream::connect(s.addr).await.unwrap();
    let mut body = Vec::new();
    body.extend_from_slice(&196608i32.to_be_bytes());
    for kv in ["user", "app", "database", "app"] {
        body.extend_from_slice(kv.as_bytes());
        body.push(0);
    }
    body.push(0);
    let mut msg = ((body.len() + 4) as i32).to_be_bytes().to_vec();
    msg.extend(body);
    tcp.write_all(&msg).await.unwrap();
    let buf = read_until(&mut tcp, b'Z').await;
    assert!(buf.contains(&b'Z'), "no ReadyForQuery in {buf:?}");
    assert_eq!(buf.first(), Some(&b'R'), "no AuthenticationOk in {buf:?}");
    tcp
}

/// Reads messages until one of type `ty` or EOF; returns everything read.
pub async fn read_until(tcp: &mut tokio::net::TcpStream, ty: u8) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut all = Vec::new();
    let mut pos = 0;
    loop {
        while all.len() >= pos + 5 {
            let len = i32::from_be_bytes(all[pos + 1..pos + 5].try_into().unwrap()) as usize;
            if all.len() < pos + 1 + len {
                break;
            }
            if all[pos] == ty {
                return all;
            }
            pos += 1 + len;
        }
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return all,
            Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("timed out waiting for message {}", ty as char),
        }
    }
}
