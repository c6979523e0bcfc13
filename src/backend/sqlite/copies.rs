//! Whole-file work on a SQLite database, on blocking threads with connections of
//! its own: a verified copy (online backup API, then `integrity_check` and row
//! counts on the copy), restoring the file from such a copy, and a listing of the
//! schema (to compare a schema before and after a migration is undone).

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use rusqlite::{Connection, OpenFlags, MAIN_DB};

use super::{CancelSlot, SqliteDb};

/// A copy of the database that was read back and checked.
#[derive(Debug, Clone)]
pub struct BackupReport {
    pub path: PathBuf,
    pub bytes: u64,
    /// User tables in the copy (unidb's side tables included).
    pub tables: usize,
    /// Rows in those tables.
    pub rows: u64,
}

impl SqliteDb {
    /// Copies the database to `dest` (which must not exist) as of one consistent
    /// snapshot, then opens the copy and checks it: `PRAGMA integrity_check` must
    /// say `ok` and every table must be readable. A copy that fails the check is
    /// deleted.
    pub async fn backup_verified(&self, dest: &Path) -> anyhow::Result<BackupReport> {
        let src = self.path().to_path_buf();
        let dest = dest.to_path_buf();
        tokio::task::spawn_blocking(move || {
            if dest.exists() {
                anyhow::bail!("backup file {} already exists", dest.display());
            }
            let r = backup_blocking(&src, &dest);
            if r.is_err() {
                let _ = std::fs::remove_file(&dest);
            }
            r
        })
        .await?
    }

    /// Replaces the database's content with the copy at `src` (made by
    /// [`SqliteDb::backup_verified`]). Holds the writer for the duration, so no
    /// transaction of this process runs meanwhile; other processes wait on the
    /// file lock. Sessions see the restored schema at their next statement.
    pub async fn restore_from(self: &Arc<Self>, src: &Path) -> anyhow::Result<()> {
        let cancel = Arc::new(CancelSlot::default());
        let lease = self
            .lease_writer(&cancel)
            .await
            .map_err(|e| anyhow::anyhow!("cannot take the database for the restore: {e}"))?;
        let path = self.path().to_path_buf();
        let src = src.to_path_buf();
        let busy = self.config.busy_timeout;
        let r = tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            verify(&src)?;
            let mut conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(busy)?;
            conn.restore(MAIN_DB, &src, None::<fn(rusqlite::backup::Progress)>)
                .map_err(|e| anyhow::anyhow!("restore from {} failed: {e}", src.display()))?;
            Ok(())
        })
        .await?;
        self.shared.schema_gen.fetch_add(1, Ordering::AcqRel);
        drop(lease);
        r
    }

    /// The schema as sorted lines: every index, table, view and trigger with its
    /// SQL, and the declared PostgreSQL type of every column from the side catalog.
    /// SQLite's and unidb's internal tables are left out, and so are `exclude`.
    pub async fn schema_listing(&self, exclude: &[&str]) -> anyhow::Result<Vec<String>> {
        let path = self.path().to_path_buf();
        let exclude: Vec<String> = exclude.iter().map(|s| s.to_ascii_lowercase()).collect();
        tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<String>> {
            let conn = Connection::open_with_flags(
                &path,
                OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            let mut lines = Vec::new();
            let mut stmt = conn.prepare(
                "SELECT type, name, tbl_name, coalesce(sql, '') FROM sqlite_master \
                 WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE '\\_\\_unidb\\_%' ESCAPE '\\'",
            )?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (kind, name, table, sql): (String, String, String, String) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
                if exclude.contains(&table.to_ascii_lowercase()) {
                    continue;
                }
                lines.push(format!("{kind} {name} on {table}: {sql}"));
            }
            drop(rows);
            let mut stmt = conn.prepare(&format!(
                "SELECT table_name, column_name, pg_type FROM {}",
                super::catalog::TABLE
            ))?;
            let mut rows = stmt.query([])?;
            while let Some(r) = rows.next()? {
                let (table, column, ty): (String, String, String) =
                    (r.get(0)?, r.get(1)?, r.get(2)?);
                if exclude.contains(&table.to_ascii_lowercase()) {
                    continue;
                }
                lines.push(format!("column {table}.{column}: {ty}"));
            }
            lines.sort();
            Ok(lines)
        })
        .await?
    }
}

fn backup_blocking(src: &Path, dest: &Path) -> anyhow::Result<BackupReport> {
    let source = Connection::open_with_flags(
        src,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| anyhow::anyhow!("cannot open {} to back it up: {e}", src.display()))?;
    source.busy_timeout(std::time::Duration::from_secs(30))?;
    if let Some(dir) = dest.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
        }
    }
    let mut copy = Connection::open(dest)
        .map_err(|e| anyhow::anyhow!("cannot create backup file {}: {e}", dest.display()))?;
    {
        let backup = rusqlite::backup::Backup::new(&source, &mut copy)?;
        // All pages in one step: one read transaction, so one consistent snapshot
        // even while other connections write.
        backup
            .step(-1)
            .map_err(|e| anyhow::anyhow!("backup to {} failed: {e}", dest.display()))?;
    }
    // The copy is one self-contained file: no WAL beside it.
    copy.query_row("PRAGMA journal_mode=DELETE", [], |_| Ok(()))?;
    drop(copy);
    let (tables, rows) = verify(dest)?;
    let bytes = std::fs::metadata(dest).map_or(0, |m| m.len());
    Ok(BackupReport {
        path: dest.to_path_buf(),
        bytes,
        tables,
        rows,
    })
}

/// Checks a copy: `integrity_check` says `ok` and every table can be counted.
/// Returns (tables, rows).
fn verify(path: &Path) -> anyhow::Result<(usize, u64)> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| anyhow::anyhow!("cannot open the copy {}: {e}", path.display()))?;
    let check: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    if check != ["ok"] {
        anyhow::bail!(
            "the copy {} failed its integrity check: {}",
            path.display(),
            check.join("; ")
        );
    }
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut rows = 0u64;
    for t in &tables {
        let n: i64 = conn.query_row(
            &format!("SELECT count(*) FROM \"{}\"", t.replace('"', "\"\"")),
            [],
            |r| r.get(0),
        )?;
        rows += n as u64;
    }
    Ok((tables.len(), rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_copy_fails_verification() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("good.db");
        let conn = Connection::open(&good).unwrap();
        conn.execute_batch(
            "CREATE TABLE t (a INTEGER PRIMARY KEY, b TEXT); \
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
             INSERT INTO t SELECT i, hex(randomblob(64)) FROM n;",
        )
        .unwrap();
        drop(conn);
        assert_eq!(verify(&good).unwrap(), (1, 2000));
        let copy = dir.path().join("copy.db");
        let report = backup_blocking(&good, &copy).unwrap();
        assert_eq!((report.tables, report.rows), (1, 2000));
        // Overwrite a page in the middle of the table's b-tree.
        let mut bytes = std::fs::read(&copy).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 4096] {
            *b = 0x5a;
        }
        std::fs::write(&copy, bytes).unwrap();
        assert!(verify(&copy).is_err());
    }
}
