//! Where a database stands: the migration files against its ledger.

use std::collections::BTreeMap;

use super::ledger::Row;
use super::source::Migration;
use crate::ops::table;

/// The state of one migration on one database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Applied,
    /// Not applied, newer than every applied migration.
    Pending,
    /// Not applied, but older than an applied migration: applying it now would run
    /// it in a different order than on databases that got it in sequence.
    OutOfOrder,
    /// In the ledger, with no file.
    MissingFile,
    /// Applied, but its up file changed since.
    ChecksumDrift,
    /// Started outside a transaction and not finished.
    Failed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Applied => "applied",
            State::Pending => "pending",
            State::OutOfOrder => "pending (out of order)",
            State::MissingFile => "missing file",
            State::ChecksumDrift => "checksum drift",
            State::Failed => "failed",
        }
    }
}

/// One line of `status`.
#[derive(Debug, Clone)]
pub struct Entry {
    pub version: i64,
    pub version_text: String,
    pub name: String,
    pub state: State,
    pub row: Option<Row>,
    /// The migration has no down file.
    pub no_down: bool,
}

impl Entry {
    pub fn id(&self) -> String {
        format!("{}_{}", self.version_text, self.name)
    }
}

/// The files against the ledger of one database.
#[derive(Debug, Clone)]
pub struct Status {
    pub database: String,
    /// `sqlite data/app.db`, `postgres host:5432/app`.
    pub describe: String,
    pub entries: Vec<Entry>,
}

impl Status {
    pub fn new(database: &str, describe: &str, files: &[Migration], rows: &[Row]) -> Status {
        let newest_applied = rows.iter().map(|r| r.version).max();
        let mut by_version: BTreeMap<i64, Entry> = BTreeMap::new();
        for m in files {
            let row = rows.iter().find(|r| r.version == m.version).cloned();
            let state = match &row {
                None if newest_applied.is_some_and(|v| v > m.version) => State::OutOfOrder,
                None => State::Pending,
                Some(r) if !r.success => State::Failed,
                Some(r) if r.checksum != m.up.checksum => State::ChecksumDrift,
                Some(_) => State::Applied,
            };
            by_version.insert(
                m.version,
                Entry {
                    version: m.version,
                    version_text: m.version_text.clone(),
                    name: m.name.clone(),
                    state,
                    row,
                    no_down: m.down.is_none(),
                },
            );
        }
        for r in rows {
            by_version.entry(r.version).or_insert_with(|| Entry {
                version: r.version,
                version_text: r.version.to_string(),
                name: r.name.clone(),
                state: if r.success {
                    State::MissingFile
                } else {
                    State::Failed
                },
                row: Some(r.clone()),
                no_down: true,
            });
        }
        Status {
            database: database.to_string(),
            describe: describe.to_string(),
            entries: by_version.into_values().collect(),
        }
    }

    /// What must be resolved before migrations may run, one line each (empty when
    /// nothing blocks). Out-of-order migrations block `up` only.
    pub fn blocking(&self, for_up: bool) -> Vec<String> {
        let newest = self
            .entries
            .iter()
            .filter(|e| e.row.is_some())
            .map(|e| e.id())
            .next_back()
            .unwrap_or_default();
        self.entries
            .iter()
            .filter_map(|e| match e.state {
                State::ChecksumDrift => Some(format!(
                    "{}: the up file changed after it was applied (checksum drift)",
                    e.id()
                )),
                State::MissingFile => Some(format!(
                    "{}: applied, but its files are missing from the migrations directory",
                    e.id()
                )),
                State::Failed => Some(format!(
                    "{}: ran outside a transaction and did not finish (applied_by {}, at {})",
                    e.id(),
                    e.row.as_ref().map_or("?", |r| r.applied_by.as_str()),
                    e.row.as_ref().map_or("?", |r| r.applied_at.as_str())
                )),
                State::OutOfOrder if for_up => Some(format!(
                    "{}: not applied, but older than the applied {newest}: it would run out of order",
                    e.id()
                )),
                _ => None,
            })
            .collect()
    }

    /// What to do about each kind of problem present.
    pub fn hints(&self) -> Vec<&'static str> {
        let mut v = Vec::new();
        if self.count(State::ChecksumDrift) > 0 {
            v.push("checksum drift: restore the up file as it was applied; if the edit is intended (comments, formatting, or a change already made by hand), record the new checksum with `unidb migrate repair`");
        }
        if self.count(State::MissingFile) > 0 {
            v.push("missing files: restore them (e.g. from version control), or remove their rows from the ledger with `unidb migrate repair`");
        }
        if self.count(State::Failed) > 0 {
            v.push("failed: undo or finish its statements by hand, then `unidb migrate repair` clears the mark so that `up` runs it again");
        }
        if self.count(State::OutOfOrder) > 0 {
            v.push("out of order: rename the migration's two files to a version after the newest applied one");
        }
        v
    }

    pub fn pending(&self) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .filter(|e| matches!(e.state, State::Pending | State::OutOfOrder))
    }

    /// Applied migrations (drifted or failed ones included), newest first.
    pub fn applied_newest_first(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().rev().filter(|e| e.row.is_some())
    }

    pub fn count(&self, state: State) -> usize {
        self.entries.iter().filter(|e| e.state == state).count()
    }

    pub const COLUMNS: [&'static str; 7] = [
        "version",
        "name",
        "state",
        "applied_at (UTC)",
        "execution_ms",
        "applied_by",
        "down",
    ];

    /// The table's rows as text.
    pub fn rows(&self) -> Vec<Vec<String>> {
        self.entries
            .iter()
            .map(|e| {
                let r = e.row.as_ref();
                vec![
                    e.version_text.clone(),
                    e.name.clone(),
                    e.state.as_str().to_string(),
                    r.map(|r| r.applied_at.chars().take(19).collect())
                        .unwrap_or_default(),
                    r.map(|r| r.execution_ms.to_string()).unwrap_or_default(),
                    r.map(|r| r.applied_by.clone()).unwrap_or_default(),
                    if e.no_down { "no" } else { "yes" }.to_string(),
                ]
            })
            .collect()
    }

    /// The summary line: counts per state.
    pub fn summary(&self) -> String {
        let mut parts = vec![
            format!("{} applied", self.count(State::Applied)),
            format!(
                "{} pending",
                self.count(State::Pending) + self.count(State::OutOfOrder)
            ),
        ];
        for s in [State::ChecksumDrift, State::MissingFile, State::Failed] {
            let n = self.count(s);
            if n > 0 {
                parts.push(format!("{n} {}", s.as_str()));
            }
        }
        format!(
            "database {} ({}): {}",
            self.database,
            self.describe,
            parts.join(", ")
        )
    }

    /// The whole report: summary, table, and what to do about problems.
    pub fn render(&self) -> String {
        let mut out = self.summary();
        out.push('\n');
        if self.entries.is_empty() {
            out.push_str("no migrations\n");
        } else {
            out.push_str(&table::render(&Self::COLUMNS, &self.rows()));
        }
        for hint in self.hints() {
            out.push_str(&format!("hint: {hint}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::migrate::source::{Directives, SqlFile};

    fn file(text: &str) -> SqlFile {
        SqlFile {
            path: "x.sql".into(),
            text: text.into(),
            checksum: crate::ops::migrate::source::checksum(text),
            directives: Directives::default(),
        }
    }

    fn migration(version: i64, name: &str, text: &str) -> Migration {
        Migration {
            version,
            version_text: format!("{version:04}"),
            name: name.into(),
            up: file(text),
            down: Some(file("SELECT 1;")),
        }
    }

    fn row(m: &Migration, success: bool) -> Row {
        Row {
            version: m.version,
            name: m.name.clone(),
            checksum: m.up.checksum.clone(),
            applied_at: "2026-11-25 09:00:00.123+00".into(),
            execution_ms: 3,
            success,
            applied_by: "me@host".into(),
        }
    }

    #[test]
    fn states_from_files_and_ledger() {
        let a = migration(1, "a", "CREATE TABLE a (x int);");
        let b = migration(2, "b", "CREATE TABLE b (x int);");
        let c = migration(3, "c", "CREATE TABLE c (x int);");
        let d = migration(4, "d", "CREATE TABLE d (x int);");
        let mut drifted = row(&b, true);
        drifted.checksum = "0".repeat(64);
        let gone = Row {
            version: 5,
            name: "gone".into(),
            ..row(&a, true)
        };
        // a applied, b drifted, c pending but older than the applied d... and a row
        // without files.
        let files = [a.clone(), b.clone(), c.clone(), d.clone()];
        let rows = [row(&a, true), drifted, row(&d, true), gone];
        let st = Status::new("app", "sqlite app.db", &files, &rows);
        let states: Vec<State> = st.entries.iter().map(|e| e.state).collect();
        assert_eq!(
            states,
            [
                State::Applied,
                State::ChecksumDrift,
                State::OutOfOrder,
                State::Applied,
                State::MissingFile
            ]
        );
        assert_eq!(st.blocking(true).len(), 3);
        assert_eq!(st.blocking(false).len(), 2, "out of order blocks up only");
        assert_eq!(st.hints().len(), 3);
        assert_eq!(st.applied_newest_first().next().unwrap().version, 5);
        let text = st.render();
        assert!(text.starts_with("database app (sqlite app.db): 2 applied, 1 pending, 1 checksum drift, 1 missing file"), "{text}");
        assert!(text.contains("2026-11-25 09:00:00 |"), "{text}");

        let failed = Status::new("app", "x", std::slice::from_ref(&a), &[row(&a, false)]);
        assert_eq!(failed.entries[0].state, State::Failed);
        assert!(failed.blocking(false)[0].contains("did not finish"));
        let fresh = Status::new("app", "x", &[a, b], &[]);
        assert_eq!(fresh.pending().count(), 2);
        assert!(fresh.blocking(true).is_empty());
    }
}
