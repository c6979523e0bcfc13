//! Migration files on disk: `<version>_<name>.up.sql` and `.down.sql` in one
//! directory; their header directives, checksums and statements; and `create`.
//!
//! A file's checksum is the SHA-256 of its text with a UTF-8 byte-order mark removed
//! and CRLF line ends read as LF, so a checkout that converts line ends does not
//! count as an edit.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

/// One migration: a version, a name, its up file and (usually) its down file.
#[derive(Debug, Clone)]
pub struct Migration {
    pub version: i64,
    /// The version as written in the file name (`20261125090000`, `0003`).
    pub version_text: String,
    pub name: String,
    pub up: SqlFile,
    pub down: Option<SqlFile>,
}

impl Migration {
    /// `20261125090000_create_projects`, for messages.
    pub fn id(&self) -> String {
        format!("{}_{}", self.version_text, self.name)
    }
}

/// One `.sql` file, read and checked.
#[derive(Debug, Clone)]
pub struct SqlFile {
    pub path: PathBuf,
    /// The text without a byte-order mark.
    pub text: String,
    /// Lower-case hex SHA-256 of the normalised text.
    pub checksum: String,
    pub directives: Directives,
}

/// `-- unidb: …` lines in a file's header (before its first statement).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Directives {
    /// `-- unidb: no-transaction`: the statements run one by one outside a
    /// transaction (for `CREATE INDEX CONCURRENTLY` and the like on PostgreSQL).
    pub no_transaction: bool,
    /// `-- unidb: lock-timeout 10s`: overrides `migrate_lock_timeout` for this file.
    pub lock_timeout: Option<Duration>,
}

/// One statement of a file, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub sql: String,
    /// 1-based line of the statement's first token in the file.
    pub line: usize,
}

/// What is wrong with the migration files (every problem found, not only the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceProblems(pub Vec<String>);

impl std::fmt::Display for SourceProblems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The direction a file runs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Up,
    Down,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "up",
            Direction::Down => "down",
        }
    }
}

/// Reads every migration in `dir`, ordered by version. Files that are not `.sql`
/// are ignored; a `.sql` file whose name does not follow the pattern, two files for
/// one version, a down file without its up file, a file that is not UTF-8 or has a
/// bad directive are problems.
pub fn load(dir: &Path) -> Result<Vec<Migration>, SourceProblems> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(SourceProblems(vec![format!(
                "the migrations directory {} does not exist (create the first migration with `unidb migrate create NAME`, or set `migrations` in the database's config)",
                dir.display()
            )]))
        }
        Err(e) => {
            return Err(SourceProblems(vec![format!(
                "cannot read the migrations directory {}: {e}",
                dir.display()
            )]))
        }
    };
    let mut problems = Vec::new();
    // version → (version text, name, up, down)
    type Pair = (String, String, Option<SqlFile>, Option<SqlFile>);
    let mut found: BTreeMap<i64, Pair> = BTreeMap::new();
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for path in names {
        let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if !file_name.ends_with(".sql") || !path.is_file() {
            continue;
        }
        let (version_text, name, direction) = match parse_file_name(file_name) {
            Ok(p) => p,
            Err(why) => {
                problems.push(format!("{}: {why}", path.display()));
                continue;
            }
        };
        let version: i64 = match version_text.parse() {
            Ok(v) => v,
            Err(_) => {
                problems.push(format!(
                    "{}: version {version_text} is too large (at most 18 digits)",
                    path.display()
                ));
                continue;
            }
        };
        let file = match read_file(&path) {
            Ok(f) => f,
            Err(why) => {
                problems.push(why);
                continue;
            }
        };
        let entry = found
            .entry(version)
            .or_insert_with(|| (version_text.clone(), name.clone(), None, None));
        if entry.0 != version_text || entry.1 != name {
            problems.push(format!(
                "{}: version {version} is also used by {}_{}; every migration needs its own version",
                path.display(),
                entry.0,
                entry.1
            ));
            continue;
        }
        let slot = match direction {
            Direction::Up => &mut entry.2,
            Direction::Down => &mut entry.3,
        };
        *slot = Some(file);
    }
    let mut migrations = Vec::new();
    for (version, (version_text, name, up, down)) in found {
        match up {
            Some(up) => migrations.push(Migration {
                version,
                version_text,
                name,
                up,
                down,
            }),
            None => problems.push(format!(
                "{}: {version_text}_{name}.down.sql has no {version_text}_{name}.up.sql",
                dir.display()
            )),
        }
    }
    if problems.is_empty() {
        Ok(migrations)
    } else {
        Err(SourceProblems(problems))
    }
}

/// `<version>_<name>.up.sql` → (version, name, direction).
fn parse_file_name(file_name: &str) -> Result<(String, String, Direction), String> {
    let pattern = "expected <version>_<name>.up.sql or <version>_<name>.down.sql, with a numeric version (YYYYMMDDHHMMSS or a zero-padded integer) and a name of letters, digits and underscores";
    let (stem, direction) = if let Some(s) = file_name.strip_suffix(".up.sql") {
        (s, Direction::Up)
    } else if let Some(s) = file_name.strip_suffix(".down.sql") {
        (s, Direction::Down)
    } else {
        return Err(pattern.to_string());
    };
    let (version, name) = stem.split_once('_').ok_or_else(|| pattern.to_string())?;
    if version.is_empty() || !version.bytes().all(|b| b.is_ascii_digit()) {
        return Err(pattern.to_string());
    }
    if name.is_empty()
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(pattern.to_string());
    }
    Ok((version.to_string(), name.to_string(), direction))
}

fn read_file(path: &Path) -> Result<SqlFile, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| format!("{}: not UTF-8 text ({e})", path.display()))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text).to_string();
    let checksum = checksum(&text);
    let directives = directives(&text).map_err(|why| format!("{}: {why}", path.display()))?;
    Ok(SqlFile {
        path: path.to_path_buf(),
        text,
        checksum,
        directives,
    })
}

/// SHA-256 of `text` with CRLF read as LF, in lower-case hex.
pub fn checksum(text: &str) -> String {
    let mut h = Sha256::new();
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut rest = text;
    while let Some(i) = rest.find("\r\n") {
        h.update(&rest.as_bytes()[..i]);
        h.update(b"\n");
        rest = &rest[i + 2..];
    }
    h.update(rest.as_bytes());
    let mut hex = String::with_capacity(64);
    for b in h.finalize() {
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

const DIRECTIVE: &str = "-- unidb:";

/// The header directives: `-- unidb: …` comment lines before the first statement.
/// A directive after the first statement, or one unidb does not know, is an error.
fn directives(text: &str) -> Result<Directives, String> {
    let mut d = Directives::default();
    let mut in_header = true;
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        let lower = t.to_ascii_lowercase();
        if let Some(rest) = lower.strip_prefix(DIRECTIVE) {
            if !in_header {
                return Err(format!(
                    "line {}: `{t}` must come before the first statement",
                    i + 1
                ));
            }
            let mut words = rest.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("no-transaction"), None, _) => d.no_transaction = true,
                (Some("lock-timeout"), Some(v), None) => {
                    let timeout = humantime::parse_duration(v).map_err(|e| {
                        format!("line {}: lock-timeout `{v}`: {e} (e.g. 10s, 500ms)", i + 1)
                    })?;
                    d.lock_timeout = Some(timeout);
                }
                _ => {
                    return Err(format!(
                        "line {}: unknown directive `{t}` (known: `-- unidb: no-transaction`, `-- unidb: lock-timeout 10s`)",
                        i + 1
                    ))
                }
            }
            continue;
        }
        if !(t.is_empty() || t.starts_with("--")) {
            in_header = false;
        }
    }
    Ok(d)
}

/// Splits a file into statements at top-level semicolons, with the tokenizer the
/// rewriting uses (strings, quoted identifiers, dollar quoting and comments are
/// understood). Each statement keeps its text as written, without the comments
/// before it; statements that are only comments are dropped.
pub fn statements(text: &str) -> Result<Vec<Statement>, String> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| {
            format!(
                "line {}, column {}: {}",
                e.location.line, e.location.column, e.message
            )
        })?;
    let offsets = LineOffsets::new(text);
    let mut out = Vec::new();
    let mut start: Option<(usize, usize)> = None; // (byte offset, line)
    for t in &tokens {
        match &t.token {
            Token::Whitespace(_) => {}
            Token::SemiColon => {
                if let Some((from, line)) = start.take() {
                    let to = offsets.offset(t.span.start.line, t.span.start.column);
                    push_statement(&mut out, &text[from..to], line);
                }
            }
            _ => {
                if start.is_none() {
                    let line = t.span.start.line as usize;
                    start = Some((offsets.offset(t.span.start.line, t.span.start.column), line));
                }
            }
        }
    }
    if let Some((from, line)) = start {
        push_statement(&mut out, &text[from..], line);
    }
    Ok(out)
}

fn push_statement(out: &mut Vec<Statement>, sql: &str, line: usize) {
    let sql = sql.trim_end();
    if !sql.is_empty() {
        out.push(Statement {
            sql: sql.to_string(),
            line,
        });
    }
}

/// Whether a statement manages transactions itself (`BEGIN`, `COMMIT`, …): not
/// allowed in a migration, which unidb runs in its own transaction.
pub fn is_transaction_control(sql: &str) -> bool {
    let dialect = PostgreSqlDialect {};
    let Ok(tokens) = Tokenizer::new(&dialect, sql).tokenize() else {
        return false;
    };
    let mut words = tokens.iter().filter_map(|t| match t {
        Token::Whitespace(_) => None,
        Token::Word(w) => Some(w.keyword),
        _ => Some(Keyword::NoKeyword),
    });
    match words.next() {
        Some(
            Keyword::BEGIN | Keyword::COMMIT | Keyword::ROLLBACK | Keyword::END | Keyword::ABORT,
        ) => true,
        Some(Keyword::START) => words.next() == Some(Keyword::TRANSACTION),
        _ => false,
    }
}

/// Byte offsets of (line, column) positions, where columns count characters.
struct LineOffsets<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                starts.push(i + 1);
            }
        }
        LineOffsets { text, starts }
    }

    fn offset(&self, line: u64, column: u64) -> usize {
        let line_start = self
            .starts
            .get((line.max(1) - 1) as usize)
            .copied()
            .unwrap_or(self.text.len());
        let rest = &self.text[line_start..];
        let skip = (column.max(1) - 1) as usize;
        rest.char_indices()
            .nth(skip)
            .map_or(self.text.len(), |(i, _)| line_start + i)
    }
}

/// How `create` numbers a new migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VersionStyle {
    /// Sequential when the existing migrations are numbered sequentially, else a
    /// UTC timestamp.
    #[default]
    Auto,
    Timestamp,
    Sequential,
}

/// Writes `<version>_<name>.up.sql` and `.down.sql` into `dir` (created if needed)
/// and returns their paths. The name is lower-cased, with spaces and hyphens as
/// underscores.
pub fn create(
    dir: &Path,
    name: &str,
    style: VersionStyle,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(PathBuf, PathBuf), String> {
    let name: String = name
        .trim()
        .chars()
        .map(|c| match c {
            ' ' | '-' => '_',
            c => c.to_ascii_lowercase(),
        })
        .collect();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(format!(
            "migration name `{name}`: use letters, digits, underscores (e.g. add_videos_codec)"
        ));
    }
    let existing = if dir.exists() {
        load(dir).map_err(|p| format!("fix the existing migrations first:\n{p}"))?
    } else {
        Vec::new()
    };
    let last = existing.last();
    let sequential = match style {
        VersionStyle::Sequential => true,
        VersionStyle::Timestamp => false,
        VersionStyle::Auto => last.is_some_and(|m| m.version_text.len() < 14),
    };
    let version_text = if sequential {
        let next = last.map_or(1, |m| m.version + 1);
        let width = last.map_or(4, |m| m.version_text.len()).max(4);
        format!("{next:0width$}")
    } else {
        let stamp: i64 = now
            .format("%Y%m%d%H%M%S")
            .to_string()
            .parse()
            .map_err(|e| format!("cannot format the time: {e}"))?;
        // Two migrations created within one second still get increasing versions.
        let v = last.map_or(stamp, |m| stamp.max(m.version + 1));
        format!("{v:014}")
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let up = dir.join(format!("{version_text}_{name}.up.sql"));
    let down = dir.join(format!("{version_text}_{name}.down.sql"));
    let up_text = format!(
        "-- {version_text}_{name}: the change, in PostgreSQL's dialect. It runs in one transaction\n\
         -- with its ledger row; add `-- unidb: no-transaction` above for statements that\n\
         -- cannot (CREATE INDEX CONCURRENTLY).\n"
    );
    let down_text = format!("-- {version_text}_{name}: undoes the up file.\n");
    for (path, text) in [(&up, up_text), (&down, down_text)] {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok((up, down))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(text: &str) -> Vec<(String, usize)> {
        statements(text)
            .unwrap()
            .into_iter()
            .map(|s| (s.sql, s.line))
            .collect()
    }

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        let text = "-- header\n\nCREATE TABLE a (x text DEFAULT 'a;b');\n\
                    /* c; */ INSERT INTO a VALUES ($$x;y$$) ;\n\
                    CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql;\n\
                    -- trailing comment only\n";
        assert_eq!(
            split(text),
            vec![
                ("CREATE TABLE a (x text DEFAULT 'a;b')".to_string(), 3),
                ("INSERT INTO a VALUES ($$x;y$$)".to_string(), 4),
                (
                    "CREATE FUNCTION f() RETURNS int AS $body$ SELECT 1; $body$ LANGUAGE sql"
                        .to_string(),
                    5
                ),
            ]
        );
        assert_eq!(
            split("SELECT 'é'; SELECT \"q;\" FROM t"),
            vec![
                ("SELECT 'é'".to_string(), 1),
                ("SELECT \"q;\" FROM t".to_string(), 1)
            ]
        );
        assert!(split("-- nothing\n;;\n").is_empty());
        assert!(statements("SELECT 'unterminated").is_err());
    }

    #[test]
    fn crlf_and_bom_do_not_change_the_checksum() {
        let lf = "CREATE TABLE t (a int);\nDROP TABLE t;\n";
        let crlf = "\u{feff}CREATE TABLE t (a int);\r\nDROP TABLE t;\r\n";
        assert_eq!(checksum(lf), checksum(crlf));
        assert_ne!(
            checksum(lf),
            checksum("CREATE TABLE t (a bigint);\nDROP TABLE t;\n")
        );
        assert_eq!(checksum(lf).len(), 64);
        assert_eq!(
            split(crlf.strip_prefix('\u{feff}').unwrap()),
            vec![
                ("CREATE TABLE t (a int)".to_string(), 1),
                ("DROP TABLE t".to_string(), 2)
            ]
        );
    }

    #[test]
    fn header_directives() {
        let d = directives("-- unidb: no-transaction\n-- unidb: lock-timeout 10s\n\nCREATE INDEX CONCURRENTLY i ON t (a);").unwrap();
        assert!(d.no_transaction);
        assert_eq!(d.lock_timeout, Some(Duration::from_secs(10)));
        assert_eq!(directives("SELECT 1;").unwrap(), Directives::default());
        assert!(directives("-- unidb: no-transactions\n")
            .unwrap_err()
            .contains("unknown directive"));
        assert!(directives("SELECT 1;\n-- unidb: no-transaction\n")
            .unwrap_err()
            .contains("before the first statement"));
        assert!(directives("-- unidb: lock-timeout soon\n").is_err());
    }

    #[test]
    fn file_names() {
        assert_eq!(
            parse_file_name("20261125090000_create_projects.up.sql").unwrap(),
            (
                "20261125090000".into(),
                "create_projects".into(),
                Direction::Up
            )
        );
        assert_eq!(
            parse_file_name("0002_add-index.down.sql").unwrap(),
            ("0002".into(), "add-index".into(), Direction::Down)
        );
        for bad in [
            "init.up.sql",
            "v1_init.up.sql",
            "0001_.up.sql",
            "0001_init.sql",
            "0001_in it.up.sql",
        ] {
            assert!(parse_file_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn transaction_control_is_recognised() {
        for s in [
            "BEGIN",
            "commit",
            "ROLLBACK",
            "START TRANSACTION",
            "END",
            "  begin isolation level serializable",
        ] {
            assert!(is_transaction_control(s), "{s}");
        }
        for s in [
            "CREATE TABLE begin_x (a int)",
            "SELECT 1",
            "INSERT INTO t VALUES (1)",
        ] {
            assert!(!is_transaction_control(s), "{s}");
        }
    }

    #[test]
    fn load_reports_every_problem() {
        let dir = tempfile::tempdir().unwrap();
        let w = |n: &str, t: &str| std::fs::write(dir.path().join(n), t).unwrap();
        w("0001_a.up.sql", "SELECT 1;");
        w("0001_a.down.sql", "SELECT 1;");
        w("0001_b.up.sql", "SELECT 1;");
        w("0002_c.down.sql", "SELECT 1;");
        w("notes.txt", "ignored");
        w("third.sql", "SELECT 1;");
        let p = load(dir.path()).unwrap_err();
        assert_eq!(p.0.len(), 3, "{p}");
        let text = p.to_string();
        assert!(text.contains("also used by 0001_a"), "{text}");
        assert!(text.contains("has no 0002_c.up.sql"), "{text}");
        assert!(text.contains("third.sql"), "{text}");
        assert!(load(&dir.path().join("nope"))
            .unwrap_err()
            .to_string()
            .contains("does not exist"));
    }

    #[test]
    fn create_numbers_like_the_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-25T09:30:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let (up, down) = create(dir.path(), "Add videos-codec", VersionStyle::Auto, now).unwrap();
        assert!(
            up.ends_with("20261125093000_add_videos_codec.up.sql"),
            "{}",
            up.display()
        );
        assert!(down.ends_with("20261125093000_add_videos_codec.down.sql"));
        // Same second: the next version still sorts after it.
        let (up2, _) = create(dir.path(), "second", VersionStyle::Auto, now).unwrap();
        assert!(
            up2.ends_with("20261125093001_second.up.sql"),
            "{}",
            up2.display()
        );
        assert!(create(dir.path(), "bad/name", VersionStyle::Auto, now).is_err());

        let seq = tempfile::tempdir().unwrap();
        let (a, _) = create(seq.path(), "first", VersionStyle::Sequential, now).unwrap();
        assert!(a.ends_with("0001_first.up.sql"));
        let (b, _) = create(seq.path(), "second", VersionStyle::Auto, now).unwrap();
        assert!(b.ends_with("0002_second.up.sql"), "{}", b.display());
        let m = load(seq.path()).unwrap();
        assert_eq!(m.len(), 2);
        assert!(m.iter().all(|m| m.down.is_some()));
    }
}
