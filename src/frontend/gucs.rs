//! Session settings (GUCs) the proxy answers itself: `SET`, `SHOW`, `RESET`, and
//! the values reported to the client in ParameterStatus.

use std::collections::{BTreeMap, HashMap};

use crate::error::{code, PgError, PgResult};

/// Settings PostgreSQL reports to the client whenever they change.
const REPORTED: &[&str] = &[
    "application_name",
    "client_encoding",
    "DateStyle",
    "TimeZone",
    "IntervalStyle",
    "integer_datetimes",
    "is_superuser",
    "server_encoding",
    "server_version",
    "session_authorization",
    "standard_conforming_strings",
];

type Values = HashMap<String, (String, String)>;

pub struct Gucs {
    /// Lower-cased name → (display name, value).
    values: Values,
    defaults: Values,
    /// Inside a transaction: the values to restore on ROLLBACK, and the values
    /// COMMIT keeps (SET LOCAL does not reach them).
    tx: Option<(Values, Values)>,
}

fn canonical(name: &str) -> String {
    REPORTED
        .iter()
        .find(|r| r.eq_ignore_ascii_case(name))
        .map(|r| r.to_string())
        .unwrap_or_else(|| name.to_ascii_lowercase())
}

impl Gucs {
    pub fn new(user: &str, startup: &BTreeMap<String, String>) -> Gucs {
        let mut defaults = HashMap::new();
        for (k, v) in [
            ("application_name", ""),
            ("client_encoding", "UTF8"),
            ("DateStyle", "ISO, MDY"),
            ("TimeZone", "UTC"),
            ("IntervalStyle", "postgres"),
            ("integer_datetimes", "on"),
            ("is_superuser", "on"),
            ("server_encoding", "UTF8"),
            ("server_version", &crate::server_version()),
            ("server_version_num", "150000"),
            ("session_authorization", user),
            ("standard_conforming_strings", "on"),
            ("search_path", "\"$user\", public"),
            ("extra_float_digits", "1"),
            ("transaction_isolation", "serializable"),
            ("default_transaction_isolation", "serializable"),
            ("transaction_read_only", "off"),
            ("max_identifier_length", "63"),
            ("lc_messages", "C"),
            ("statement_timeout", "0"),
            ("default_table_access_method", "heap"),
            ("default_tablespace", ""),
            ("lc_collate", "C.UTF-8"),
            ("lc_ctype", "C.UTF-8"),
            ("idle_in_transaction_session_timeout", "0"),
            ("lock_timeout", "0"),
        ] {
            defaults.insert(k.to_ascii_lowercase(), (k.to_string(), v.to_string()));
        }
        let mut g = Gucs {
            values: defaults.clone(),
            defaults,
            tx: None,
        };
        for (k, v) in startup {
            if matches!(k.as_str(), "user" | "database" | "replication" | "options") {
                continue;
            }
            // Startup parameters are applied like SET; invalid ones are ignored
            // rather than failing the connection.
            let _ = g.set(k, Some(v));
        }
        g
    }

    /// Applies `SET name = value` (`None`: DEFAULT). Returns the ParameterStatus to
    /// send, if the setting is a reported one.
    pub fn set(&mut self, name: &str, value: Option<&str>) -> PgResult<Option<(String, String)>> {
        let key = name.to_ascii_lowercase();
        let display = canonical(name);
        let value = match value {
            None => self
                .defaults
                .get(&key)
                .map(|(_, v)| v.clone())
                .unwrap_or_default(),
            Some(v) => v.to_string(),
        };
        match key.as_str() {
            "client_encoding" | "names" => {
                let norm = value.to_ascii_uppercase().replace(['-', '_'], "");
                if norm != "UTF8" && norm != "UNICODE" {
                    return Err(PgError::new(
                        code::FEATURE_NOT_SUPPORTED,
                        format!(
                            "client_encoding \"{value}\" is not supported: unidb speaks UTF8 only"
                        ),
                    ));
                }
                return self.store("client_encoding", "client_encoding", "UTF8");
            }
            "datestyle" => {
                if !value.to_ascii_uppercase().contains("ISO") {
                    return Err(PgError::new(
                        code::FEATURE_NOT_SUPPORTED,
                        format!("DateStyle \"{value}\" is not supported: unidb writes ISO dates"),
                    ));
                }
                return self.store(&key, "DateStyle", "ISO, MDY");
            }
            "server_version"
            | "server_encoding"
            | "integer_datetimes"
            | "is_superuser"
            | "server_version_num"
            | "max_identifier_length" => {
                return Err(PgError::new(
                    "55P02",
                    format!("parameter \"{name}\" cannot be changed"),
                ));
            }
            "standard_conforming_strings"
                if !matches!(value.to_ascii_lowercase().as_str(), "on" | "true") =>
            {
                return Err(PgError::new(
                    code::FEATURE_NOT_SUPPORTED,
                    "standard_conforming_strings must stay on",
                ));
            }
            _ => {}
        }
        self.store(&key, &display, &value)
    }

    fn store(
        &mut self,
        key: &str,
        display: &str,
        value: &str,
    ) -> PgResult<Option<(String, String)>> {
        self.values
            .insert(key.to_string(), (display.to_string(), value.to_string()));
        Ok(REPORTED
            .contains(&display)
            .then(|| (display.to_string(), value.to_string())))
    }

    /// A transaction began: later SETs are undone if it rolls back.
    pub fn begin(&mut self) {
        self.tx = Some((self.values.clone(), self.values.clone()));
    }

    /// The transaction ended: ROLLBACK restores the settings it began with, COMMIT
    /// keeps session-level SETs and drops SET LOCAL. Returns the ParameterStatus
    /// messages for reported settings that changed.
    pub fn end(&mut self, committed: bool) -> Vec<(String, String)> {
        let Some((at_begin, at_commit)) = self.tx.take() else {
            return Vec::new();
        };
        let target = if committed { at_commit } else { at_begin };
        let changed = target
            .iter()
            .filter(|(k, (display, v))| {
                REPORTED.contains(&display.as_str())
                    && self.values.get(*k).map(|(_, cur)| cur) != Some(v)
            })
            .map(|(_, (d, v))| (d.clone(), v.clone()))
            .collect();
        self.values = target;
        changed
    }

    /// `SET [LOCAL]` inside or outside a transaction. `SET LOCAL` outside one has no
    /// effect (PostgreSQL warns); the warning text is returned as the error side.
    pub fn set_scoped(
        &mut self,
        name: &str,
        value: Option<&str>,
        local: bool,
    ) -> PgResult<Result<Option<(String, String)>, &'static str>> {
        if local && self.tx.is_none() {
            return Ok(Err("SET LOCAL can only be used in transaction blocks"));
        }
        let before = self.values.clone();
        let reported = self.set(name, value)?;
        if !local {
            self.carry_to_commit(&before);
        }
        Ok(Ok(reported))
    }

    /// Session-level changes made inside a transaction survive its COMMIT.
    fn carry_to_commit(&mut self, before: &Values) {
        if let Some((_, at_commit)) = &mut self.tx {
            for (k, v) in &self.values {
                if before.get(k) != Some(v) {
                    at_commit.insert(k.clone(), v.clone());
                }
            }
        }
    }

    /// Every setting by lower-cased name, for `current_setting()` in statements.
    pub fn all(&self) -> HashMap<String, String> {
        self.values
            .iter()
            .map(|(k, (_, v))| (k.clone(), v.clone()))
            .collect()
    }

    pub fn get(&self, name: &str) -> PgResult<String> {
        // `SHOW TRANSACTION ISOLATION LEVEL`, `SHOW TIME ZONE`: SQL-standard spellings.
        let key = match name.to_ascii_lowercase().as_str() {
            "transaction isolation level" => "transaction_isolation".to_string(),
            "time zone" => "timezone".to_string(),
            "session authorization" => "session_authorization".to_string(),
            other => other.to_string(),
        };
        self.values
            .get(&key)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| {
                PgError::new(
                    code::UNDEFINED_OBJECT,
                    format!("unrecognized configuration parameter \"{name}\""),
                )
            })
    }

    /// `RESET name` / `RESET ALL`: the ParameterStatus messages to send.
    pub fn reset(&mut self, name: Option<&str>) -> Vec<(String, String)> {
        let before = self.values.clone();
        let out = self.reset_values(name);
        self.carry_to_commit(&before);
        out
    }

    fn reset_values(&mut self, name: Option<&str>) -> Vec<(String, String)> {
        let keys: Vec<String> = match name {
            Some(n) => vec![n.to_ascii_lowercase()],
            None => self.values.keys().cloned().collect(),
        };
        let mut changed = Vec::new();
        for k in keys {
            if let Some(d) = self.defaults.get(&k).cloned() {
                if self.values.get(&k) != Some(&d) && REPORTED.contains(&d.0.as_str()) {
                    changed.push(d.clone());
                }
                self.values.insert(k, d);
            } else {
                self.values.remove(&k);
            }
        }
        changed
    }

    /// Every reported setting, for the start of a session.
    pub fn reported(&self) -> Vec<(String, String)> {
        REPORTED
            .iter()
            .filter_map(|r| self.values.get(&r.to_ascii_lowercase()).cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_reset() {
        let mut startup = BTreeMap::new();
        startup.insert("application_name".to_string(), "psql".to_string());
        let mut g = Gucs::new("app", &startup);
        assert_eq!(g.get("APPLICATION_NAME").unwrap(), "psql");
        assert_eq!(
            g.set("application_name", Some("x")).unwrap(),
            Some(("application_name".into(), "x".into()))
        );
        assert_eq!(g.set("extra_float_digits", Some("3")).unwrap(), None);
        assert_eq!(g.get("extra_float_digits").unwrap(), "3");
        assert!(g.set("client_encoding", Some("LATIN1")).is_err());
        assert!(g.set("client_encoding", Some("utf-8")).is_ok());
        assert!(g.get("nope").is_err());
        assert_eq!(
            g.get("transaction isolation level").unwrap(),
            "serializable"
        );
        assert_eq!(g.get("time zone").unwrap(), "UTC");
        g.set("my.custom", Some("1")).unwrap();
        let changed = g.reset(None);
        assert!(changed.contains(&("application_name".into(), "".into())));
        assert!(g.get("my.custom").is_err());
        assert!(g
            .reported()
            .iter()
            .any(|(k, v)| k == "server_version" && v.starts_with("15.0 (unidb")));
    }
}
