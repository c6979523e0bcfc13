//! Literal normalisation of simple-protocol statements: `SELECT … WHERE id = 42`
//! becomes `SELECT … WHERE id = $1` with `42` as a bound value, so that statements
//! differing only in their literals share one plan, one SQLite prepared statement
//! and one fingerprint. Whitespace and comments fold to one space.
//!
//! Only single DML/query statements are normalised, and only literals in value
//! positions: ordinals (`ORDER BY 1`), type modifiers (`varchar(20)`), typed literals
//! (`DATE '…'`, `INTERVAL '…'`) and anything after an unusual token stay as written.
//! A statement with a token this module does not know is left alone.

use std::fmt::Write;

use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::tokenizer::{Token, Tokenizer};

use crate::types::PgType;

/// A literal lifted out of a statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Number(String),
    Str(String),
}

impl Literal {
    /// The type PostgreSQL gives the literal when nothing around it decides.
    pub fn default_type(&self) -> PgType {
        match self {
            Literal::Str(_) => PgType::Text,
            Literal::Number(n) if n.contains(['.', 'e', 'E']) => PgType::Numeric,
            Literal::Number(n) if n.parse::<i32>().is_ok() => PgType::Int4,
            Literal::Number(n) if n.parse::<i64>().is_ok() => PgType::Int8,
            Literal::Number(_) => PgType::Numeric,
        }
    }

    pub fn text(&self) -> &str {
        match self {
            Literal::Number(s) | Literal::Str(s) => s,
        }
    }
}

/// A statement with its literals replaced by `$n`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    /// The statement text with placeholders; also its fingerprint.
    pub sql: String,
    pub literals: Vec<Literal>,
}

impl Normalized {
    /// Cache key: the text plus the literal kinds, since `= 5` and `= '5'` type
    /// their parameter differently.
    pub fn key(&self) -> String {
        let mut k = String::with_capacity(self.sql.len() + self.literals.len() + 1);
        k.push_str(&self.sql);
        k.push('\0');
        for l in &self.literals {
            k.push(match l {
                Literal::Number(_) => 'n',
                Literal::Str(_) => 's',
            });
        }
        k
    }
}

/// Keywords after which a literal is a plain value.
fn value_keyword(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::SELECT
            | Keyword::WHERE
            | Keyword::AND
            | Keyword::OR
            | Keyword::NOT
            | Keyword::WHEN
            | Keyword::THEN
            | Keyword::ELSE
            | Keyword::LIKE
            | Keyword::ILIKE
            | Keyword::BETWEEN
            | Keyword::LIMIT
            | Keyword::OFFSET
            | Keyword::RETURNING
            | Keyword::HAVING
            | Keyword::IS
            | Keyword::DISTINCT
    )
}

/// Type names whose parenthesised arguments are modifiers, not values.
fn type_keyword(k: Keyword) -> bool {
    matches!(
        k,
        Keyword::VARCHAR
            | Keyword::CHAR
            | Keyword::CHARACTER
            | Keyword::VARYING
            | Keyword::NUMERIC
            | Keyword::DECIMAL
            | Keyword::DEC
            | Keyword::TIMESTAMP
            | Keyword::TIME
            | Keyword::INTERVAL
            | Keyword::FLOAT
            | Keyword::BIT
            | Keyword::VARBIT
            | Keyword::NVARCHAR
    )
}

enum Prev<'a> {
    Start,
    Word(Keyword),
    Token(&'a Token),
}

/// Normalises `sql`, or `None` when it should be planned as written.
/// A JSON object or array literal.
fn looks_like_json(s: &str) -> bool {
    let t = s.trim_start();
    (t.starts_with('{') || t.starts_with('['))
        && serde_json::from_str::<serde_json::Value>(s).is_ok()
}

pub fn normalize(sql: &str) -> Option<Normalized> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, sql).tokenize().ok()?;
    let first = tokens.iter().find(|t| !matches!(t, Token::Whitespace(_)))?;
    match first {
        Token::Word(w)
            if matches!(
                w.keyword,
                Keyword::SELECT
                    | Keyword::INSERT
                    | Keyword::UPDATE
                    | Keyword::DELETE
                    | Keyword::WITH
            ) => {}
        _ => return None,
    }
    let mut out = String::with_capacity(sql.len());
    let mut literals = Vec::new();
    let mut prev = Prev::Start;
    let mut depth: i32 = 0;
    // Paren depths whose literals stay as written (type modifiers and the like).
    let mut typmod_depths: Vec<i32> = Vec::new();
    // Paren depth of an ORDER BY / GROUP BY list being read.
    let mut ordinal_list: Option<i32> = None;
    let mut after_order_or_group = false;
    let mut pending_space = false;
    let mut last_significant: Option<&Token> = None;
    for (i, tok) in tokens.iter().enumerate() {
        if let Token::Whitespace(_) = tok {
            pending_space = true;
            continue;
        }
        if pending_space && !out.is_empty() {
            out.push(' ');
        }
        pending_space = false;
        let in_typmod = typmod_depths.last() == Some(&depth);
        let next_word = tokens[i + 1..]
            .iter()
            .find(|t| !matches!(t, Token::Whitespace(_)))
            .and_then(|t| match t {
                Token::Word(w) => Some(w.keyword),
                _ => None,
            });
        let value_position = match prev {
            Prev::Start => false,
            Prev::Word(k) => value_keyword(k),
            Prev::Token(t) => match t {
                Token::Comma => ordinal_list != Some(depth),
                Token::LParen => true,
                Token::LBracket
                | Token::DoubleColon
                | Token::Period
                | Token::RParen
                | Token::RBracket => false,
                Token::Number(..) | Token::SingleQuotedString(_) | Token::Placeholder(_) => false,
                _ => true,
            },
        } && !in_typmod
            && !matches!(
                next_word,
                Some(Keyword::PRECEDING | Keyword::FOLLOWING | Keyword::ROWS | Keyword::ROW)
            );
        match tok {
            Token::Number(n, false) if value_position => {
                literals.push(Literal::Number(n.clone()));
                out.push('$');
                out.push_str(itoa::Buffer::new().format(literals.len()));
            }
            // A JSON document stays in the text: the rewrite reads it (`doc || '{…}'`
            // is a jsonb merge).
            // After `-` a string can only be a jsonb key (`doc - 'key'`): kept.
            Token::SingleQuotedString(s)
                if value_position
                    && !looks_like_json(s)
                    && !matches!(last_significant, Some(Token::Minus)) =>
            {
                literals.push(Literal::Str(s.clone()));
                out.push('$');
                out.push_str(itoa::Buffer::new().format(literals.len()));
            }
            Token::SingleQuotedString(s) => {
                out.push('\'');
                out.push_str(&s.replace('\'', "''"));
                out.push('\'');
            }
            Token::Word(w) => {
                if let Some(q) = w.quote_style {
                    if q != '"' || w.value.contains('"') {
                        return None;
                    }
                }
                // Writing to a String cannot fail.
                let _ = write!(out, "{tok}");
            }
            Token::Number(_, false)
            | Token::Comma
            | Token::Eq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::LParen
            | Token::RParen
            | Token::Period
            | Token::DoubleColon
            | Token::LBracket
            | Token::RBracket
            | Token::Arrow
            | Token::LongArrow
            | Token::HashArrow
            | Token::HashLongArrow
            | Token::AtArrow
            | Token::ArrowAt
            | Token::Tilde
            | Token::TildeAsterisk
            | Token::ExclamationMarkTilde
            | Token::ExclamationMarkTildeAsterisk => {
                let _ = write!(out, "{tok}");
            }
            // `;` only at the end: one statement per normalised query.
            Token::SemiColon => {
                if tokens[i + 1..]
                    .iter()
                    .any(|t| !matches!(t, Token::Whitespace(_)))
                {
                    return None;
                }
                continue;
            }
            // Placeholders (`$1` in a simple query), exotic literals and operators:
            // plan the statement as written.
            _ => return None,
        }
        // Track parentheses, type modifiers and ORDER/GROUP BY lists.
        match tok {
            Token::LParen => {
                depth += 1;
                if let Some(Token::Word(w)) = last_significant {
                    // Literals that shape the result stay as written: type modifiers,
                    // the scale of round/trunc, values a JSON builder keeps verbatim.
                    if type_keyword(w.keyword)
                        || matches!(
                            w.value.to_ascii_lowercase().as_str(),
                            "round"
                                | "trunc"
                                | "to_char"
                                | "json_build_object"
                                | "jsonb_build_object"
                                | "json_build_array"
                                | "jsonb_build_array"
                        )
                    {
                        typmod_depths.push(depth);
                    }
                }
            }
            Token::RParen => {
                if typmod_depths.last() == Some(&depth) {
                    typmod_depths.pop();
                }
                if ordinal_list == Some(depth) {
                    ordinal_list = None;
                }
                depth -= 1;
                if ordinal_list.is_some_and(|d| d > depth) {
                    ordinal_list = None;
                }
            }
            Token::Word(w) => match w.keyword {
                Keyword::ORDER | Keyword::GROUP => after_order_or_group = true,
                Keyword::BY if after_order_or_group => {
                    ordinal_list = Some(depth);
                    after_order_or_group = false;
                }
                Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::FETCH
                | Keyword::HAVING
                | Keyword::WINDOW
                | Keyword::FOR
                | Keyword::UNION
                | Keyword::EXCEPT
                | Keyword::INTERSECT
                | Keyword::RETURNING
                    if ordinal_list == Some(depth) =>
                {
                    ordinal_list = None;
                }
                _ => after_order_or_group = false,
            },
            _ => {}
        }
        prev = match tok {
            Token::Word(w) => Prev::Word(w.keyword),
            other => Prev::Token(other),
        };
        last_significant = Some(tok);
    }
    if literals.is_empty() {
        return None;
    }
    Some(Normalized { sql: out, literals })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(sql: &str, want: Option<(&str, &[&str])>) {
        let got = normalize(sql);
        match (got, want) {
            (None, None) => {}
            (Some(n), Some((text, lits))) => {
                assert_eq!(n.sql, text, "{sql}");
                let l: Vec<&str> = n.literals.iter().map(|l| l.text()).collect();
                assert_eq!(l, lits, "{sql}");
            }
            (got, want) => panic!("{sql}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn lifts_value_literals() {
        check(
            "SELECT abalance FROM accounts WHERE aid = 42;",
            Some(("SELECT abalance FROM accounts WHERE aid = $1", &["42"])),
        );
        check("select 1", Some(("select $1", &["1"])));
        check(
            "INSERT INTO t (a, b)\n  VALUES ('it''s', -2.5) -- note\n RETURNING id",
            Some((
                "INSERT INTO t (a, b) VALUES ($1, -$2) RETURNING id",
                &["it's", "2.5"],
            )),
        );
        check(
            "UPDATE t SET v = v + 1, s = 'x' WHERE id IN (1, 2) AND n LIKE 'a%'",
            Some((
                "UPDATE t SET v = v + $1, s = $2 WHERE id IN ($3, $4) AND n LIKE $5",
                &["1", "x", "1", "2", "a%"],
            )),
        );
        check(
            "SELECT * FROM t LIMIT 10 OFFSET 5",
            Some(("SELECT * FROM t LIMIT $1 OFFSET $2", &["10", "5"])),
        );
        check(
            "SELECT '2024-01-01'::date",
            Some(("SELECT $1::date", &["2024-01-01"])),
        );
    }

    #[test]
    fn keeps_structural_literals() {
        check(
            "SELECT a, b FROM t ORDER BY 2, 1 LIMIT 3",
            Some(("SELECT a, b FROM t ORDER BY 2, 1 LIMIT $1", &["3"])),
        );
        check("SELECT a FROM t GROUP BY 1", None);
        check(
            "SELECT CAST(a AS VARCHAR(20)) FROM t WHERE b = 1",
            Some(("SELECT CAST(a AS VARCHAR(20)) FROM t WHERE b = $1", &["1"])),
        );
        check("SELECT a::numeric(10, 2) FROM t", None);
        check("SELECT DATE '2024-01-01', INTERVAL '1 day'", None);
        check(
            "SELECT sum(a) OVER (ORDER BY b ROWS 2 PRECEDING) FROM t",
            None,
        );
        check(
            "SELECT ORDER_X FROM (SELECT 1 AS ORDER_X) s ORDER BY 1",
            Some((
                "SELECT ORDER_X FROM (SELECT $1 AS ORDER_X) s ORDER BY 1",
                &["1"],
            )),
        );
    }

    #[test]
    fn leaves_other_statements_alone() {
        for sql in [
            "CREATE TABLE t (a VARCHAR(10) DEFAULT 'x')",
            "SET application_name = 'x'",
            "SELECT 1; SELECT 2",
            "SELECT $1",
            "SELECT E'a\\nb'",
            "SELECT $$x$$",
            "BEGIN",
            "SELECT a FROM t",
        ] {
            assert_eq!(normalize(sql), None, "{sql}");
        }
    }

    #[test]
    fn key_distinguishes_literal_kinds() {
        let a = normalize("SELECT a FROM t WHERE b = 5").unwrap();
        let b = normalize("SELECT a FROM t WHERE b = '5'").unwrap();
        assert_eq!(a.sql, b.sql);
        assert_ne!(a.key(), b.key());
    }
}
