//! `MIGRATE …` on the admin console: the `unidb migrate` commands on the server's
//! own databases (on SQLite through the server's own writer, so running sessions
//! see the new schema at once). Progress lines arrive as NOTICEs, results as a table.
//!
//! ```text
//! MIGRATE STATUS [db]
//! MIGRATE UP [db] [TO version] [DRY RUN]
//! MIGRATE DOWN [db] [STEPS n | TO version] [DRY RUN]
//! MIGRATE REDO [db] [DRY RUN]
//! MIGRATE VALIDATE [db]
//! MIGRATE REPAIR [db] [DRY RUN]
//! MIGRATE CREATE [db] name
//! ```

use std::sync::{Arc, Mutex};

use bytes::BytesMut;

use super::{s, Table, I, T};
use crate::error::{code, PgError};
use crate::ops::migrate::{
    DownOptions, DownTo, MigrateError, Migrator, Progress, Status, UpOptions, VersionStyle,
};
use crate::protocol::write as msg;
use crate::server::ServerState;

pub const USAGE: &str =
    "MIGRATE STATUS|UP|DOWN|REDO|VALIDATE|REPAIR|CREATE [db] [TO version] [STEPS n] [DRY RUN]";

/// The parsed arguments of one `MIGRATE` command.
#[derive(Debug, Default, PartialEq, Eq)]
struct Args {
    database: Option<String>,
    to: Option<i64>,
    steps: Option<usize>,
    dry_run: bool,
    name: Option<String>,
}

fn usage(why: &str) -> PgError {
    PgError::new(code::SYNTAX_ERROR, format!("MIGRATE: {why}")).with_hint(USAGE)
}

fn parse_args(words: &[&str], create: bool) -> Result<Args, PgError> {
    let mut a = Args::default();
    let mut i = 0;
    while i < words.len() {
        let w = words[i];
        match w.to_ascii_uppercase().as_str() {
            "TO" => {
                let v = words
                    .get(i + 1)
                    .ok_or_else(|| usage("TO needs a version"))?;
                a.to = Some(
                    v.parse()
                        .map_err(|_| usage(&format!("TO {v}: a version is a number")))?,
                );
                i += 2;
            }
            "STEPS" => {
                let v = words
                    .get(i + 1)
                    .ok_or_else(|| usage("STEPS needs a number"))?;
                a.steps = Some(
                    v.parse()
                        .map_err(|_| usage(&format!("STEPS {v}: not a number")))?,
                );
                i += 2;
            }
            "DRY"
                if words
                    .get(i + 1)
                    .is_some_and(|n| n.eq_ignore_ascii_case("RUN")) =>
            {
                a.dry_run = true;
                i += 2;
            }
            _ => {
                let w = w.trim_matches('"').to_string();
                // CREATE takes [db] name: the last free word is the name.
                if create && a.name.is_none() {
                    a.name = Some(w);
                } else if create {
                    a.database = a.name.replace(w);
                } else if a.database.is_none() {
                    a.database = Some(w);
                } else {
                    return Err(usage(&format!("unexpected `{}`", words[i])));
                }
                i += 1;
            }
        }
    }
    if a.to.is_some() && a.steps.is_some() {
        return Err(usage("give STEPS or TO, not both"));
    }
    Ok(a)
}

/// The database a command names, or the only one configured.
fn database(state: &ServerState, named: Option<String>) -> Result<String, PgError> {
    match named {
        Some(d) if state.databases.contains_key(&d) => Ok(d),
        Some(d) => Err(PgError::new(
            code::INVALID_CATALOG_NAME,
            format!("database \"{d}\" does not exist"),
        )
        .with_hint(format!("configured databases: {}", state.database_names()))),
        None if state.databases.len() == 1 => {
            Ok(state.databases.keys().next().cloned().unwrap_or_default())
        }
        None => Err(usage(&format!(
            "name the database (configured: {})",
            state.database_names()
        ))),
    }
}

/// Runs `MIGRATE <words>`; `who` names the admin user in the ledger.
pub async fn run(
    state: &Arc<ServerState>,
    words: &[&str],
    who: &str,
    out: &mut BytesMut,
) -> Result<(), PgError> {
    let Some((sub, rest)) = words.split_first() else {
        return Err(usage("which command?"));
    };
    let sub = sub.to_ascii_uppercase();
    let args = parse_args(rest, sub == "CREATE")?;
    let db = database(state, args.database.clone())?;
    // std Mutex: pushed to from the progress callback, never held across an await.
    let lines: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = lines.clone();
    let progress: Progress = Arc::new(move |line: &str| {
        sink.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(line.to_string());
    });
    let m = Migrator::new(state.clone(), &db, progress)
        .map_err(to_pg)?
        .with_applied_by(&format!("{who} (admin console)"));
    let result = command(&m, &sub, &args).await;
    for line in lines.lock().unwrap_or_else(|e| e.into_inner()).drain(..) {
        msg::notice(out, &line);
    }
    let table = result?;
    table.write(out, "MIGRATE");
    Ok(())
}

async fn command(m: &Migrator, sub: &str, a: &Args) -> Result<Table, PgError> {
    match sub {
        "STATUS" => Ok(status_table(&m.status().await.map_err(to_pg)?)),
        "UP" => {
            let r = m
                .up(&UpOptions {
                    to: a.to,
                    dry_run: a.dry_run,
                    restore_on_failure: false,
                })
                .await
                .map_err(to_pg)?;
            Ok(done_table(&r))
        }
        "DOWN" => {
            let to = match (a.steps, a.to) {
                (_, Some(v)) => DownTo::Version(v),
                (Some(n), None) => DownTo::Steps(n),
                (None, None) => DownTo::Steps(1),
            };
            let r = m
                .down(&DownOptions {
                    to,
                    dry_run: a.dry_run,
                    restore_on_failure: false,
                })
                .await
                .map_err(to_pg)?;
            Ok(done_table(&r))
        }
        "REDO" => Ok(done_table(&m.redo(a.dry_run, false).await.map_err(to_pg)?)),
        "REPAIR" => {
            let changes = m.repair(a.dry_run).await.map_err(to_pg)?;
            let mut t = Table::new(&[("change", T)]);
            for c in changes {
                t.push(vec![s(c)]);
            }
            Ok(t)
        }
        "VALIDATE" => {
            let r = m.validate().await.map_err(to_pg)?;
            let mut t = Table::new(&[("result", T), ("detail", T)]);
            for p in &r.passed {
                t.push(vec![s("ok"), s(p)]);
            }
            for w in &r.warnings {
                t.push(vec![s("warning"), s(w)]);
            }
            for e in &r.errors {
                t.push(vec![s("error"), s(e)]);
            }
            if !r.ok() {
                return Err(PgError::new(
                    code::OBJECT_NOT_IN_PREREQUISITE_STATE,
                    format!("validation failed: {}", r.errors.join("; ")),
                ));
            }
            Ok(t)
        }
        "CREATE" => {
            let name = a
                .name
                .as_deref()
                .ok_or_else(|| usage("CREATE needs a name"))?;
            let (up, down) = m.create(name, VersionStyle::Auto).map_err(to_pg)?;
            let mut t = Table::new(&[("file", T)]);
            t.push(vec![s(up.display())]);
            t.push(vec![s(down.display())]);
            Ok(t)
        }
        other => Err(usage(&format!("unknown command {other}"))),
    }
}

fn status_table(st: &Status) -> Table {
    const COLUMNS: [(&str, crate::types::PgType); 7] = [
        ("version", T),
        ("name", T),
        ("state", T),
        ("applied_at", T),
        ("execution_ms", T),
        ("applied_by", T),
        ("down", T),
    ];
    let mut t = Table::new(&COLUMNS);
    for row in st.rows() {
        t.push(
            row.into_iter()
                .map(|v| Some(v).filter(|v| !v.is_empty()))
                .collect(),
        );
    }
    t
}

fn done_table(r: &crate::ops::migrate::RunReport) -> Table {
    let mut t = Table::new(&[("migration", T), ("direction", T), ("execution_ms", I)]);
    for (id, d, ms) in &r.done {
        t.push(vec![s(id), s(d.as_str()), s(ms)]);
    }
    t
}

/// A migration error as the console's ErrorResponse.
fn to_pg(e: MigrateError) -> PgError {
    let sqlstate = match &e {
        MigrateError::Failed(f) => f.code.as_deref().map_or(code::INTERNAL_ERROR, code::lookup),
        // Not a lost connection (08…, which drivers take for a dead session).
        MigrateError::Database(_) => code::INTERNAL_ERROR,
        MigrateError::Lock(_) => code::LOCK_NOT_AVAILABLE,
        MigrateError::Source(_) | MigrateError::Refused { .. } => {
            code::OBJECT_NOT_IN_PREREQUISITE_STATE
        }
    };
    PgError::new(sqlstate, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments() {
        assert_eq!(
            parse_args(&["app", "TO", "20261125090100", "DRY", "RUN"], false).unwrap(),
            Args {
                database: Some("app".into()),
                to: Some(20261125090100),
                dry_run: true,
                ..Args::default()
            }
        );
        assert_eq!(
            parse_args(&["steps", "2"], false).unwrap(),
            Args {
                steps: Some(2),
                ..Args::default()
            }
        );
        let c = parse_args(&["app", "add_codec"], true).unwrap();
        assert_eq!(
            (c.database.as_deref(), c.name.as_deref()),
            (Some("app"), Some("add_codec"))
        );
        let c = parse_args(&["add_codec"], true).unwrap();
        assert_eq!((c.database, c.name.as_deref()), (None, Some("add_codec")));
        assert!(parse_args(&["TO"], false).is_err());
        assert!(parse_args(&["TO", "x"], false).is_err());
        assert!(parse_args(&["STEPS", "1", "TO", "3"], false).is_err());
        assert!(parse_args(&["a", "b"], false).is_err());
    }
}
