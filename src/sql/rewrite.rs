//! AST rewriting from PostgreSQL to SQLite, and recognition of the statements the
//! proxy answers itself (`SET`, `SHOW`, transaction control).

use std::ops::ControlFlow;

use sqlparser::ast::{
    AlterTableOperation, BinaryOperator, CastKind, ColumnDef, ColumnOption, ColumnOptionDef,
    DataType, Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, InTarget,
    LimitClause, ObjectName, ObjectNamePart, ObjectType, OffsetRows, Query, Reset, SelectItem, Set,
    SetExpr, Statement, TableConstraint, TableFactor, UnaryOperator, Value, VisitMut, VisitorMut,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::infer::{object_base_name, pg_type_of};
use super::{CatalogChange, Kind, Stmt};
use crate::error::{PgError, PgResult};
use crate::types::PgType;

/// Recognises statements answered by the session itself rather than SQLite.
pub fn session_command(stmt: &Statement) -> PgResult<Option<Stmt>> {
    Ok(Some(match stmt {
        Statement::StartTransaction { .. } => Stmt::proxy(Kind::Begin, "BEGIN"),
        Statement::Commit { chain: false, .. } => Stmt::proxy(Kind::Commit, "COMMIT"),
        Statement::Rollback {
            chain: false,
            savepoint: None,
        } => Stmt::proxy(Kind::Rollback, "ROLLBACK"),
        Statement::Commit { chain: true, .. } | Statement::Rollback { chain: true, .. } => {
            return Err(PgError::unsupported("AND CHAIN"))
        }
        Statement::Set(set) => match set {
            Set::SingleAssignment {
                scope,
                variable,
                values,
                ..
            } => {
                let value = values
                    .iter()
                    .map(setting_value)
                    .collect::<Vec<_>>()
                    .join(", ");
                let value = if value.eq_ignore_ascii_case("default") {
                    None
                } else {
                    Some(value)
                };
                Stmt::proxy(
                    Kind::Set {
                        name: variable.to_string().to_ascii_lowercase(),
                        value,
                        local: matches!(scope, Some(sqlparser::ast::ContextModifier::Local)),
                    },
                    "SET",
                )
            }
            Set::SetTimeZone { value, .. } => Stmt::proxy(
                Kind::Set {
                    name: "timezone".into(),
                    value: Some(setting_value(value)),
                    local: false,
                },
                "SET",
            ),
            Set::SetNames { charset_name, .. } => Stmt::proxy(
                Kind::Set {
                    name: "client_encoding".into(),
                    value: Some(charset_name.value.clone()),
                    local: false,
                },
                "SET",
            ),
            Set::SetTransaction { .. } => Stmt::proxy(Kind::Noop, "SET"),
            other => return Err(PgError::unsupported(format!("SET form `{other}`"))),
        },
        Statement::ShowVariable { variable } => Stmt::proxy(
            Kind::Show {
                name: variable
                    .iter()
                    .map(|i| i.value.to_ascii_lowercase())
                    .collect::<Vec<_>>()
                    .join(" "),
            },
            "SHOW",
        ),
        Statement::Reset(r) => Stmt::proxy(
            Kind::Reset {
                name: match &r.reset {
                    Reset::ALL => None,
                    Reset::ConfigurationParameter(n) => Some(n.to_string().to_ascii_lowercase()),
                    Reset::SessionAuthorization => Some("session_authorization".into()),
                },
            },
            "RESET",
        ),
        Statement::Prepare {
            name,
            data_types,
            statement,
        } => {
            let param_oids = data_types
                .iter()
                .map(|t| {
                    pg_type_of(t).map(|t| t.oid()).ok_or_else(|| {
                        PgError::unsupported(format!("PREPARE with parameter type `{t}`"))
                    })
                })
                .collect::<PgResult<Vec<u32>>>()?;
            Stmt::proxy(
                Kind::Prepare {
                    name: name.value.clone(),
                    param_oids,
                    query: statement.to_string(),
                },
                "PREPARE",
            )
        }
        Statement::Execute {
            name: Some(name),
            parameters,
            immediate: false,
            ..
        } => {
            let params = parameters
                .iter()
                .map(execute_argument)
                .collect::<PgResult<Vec<_>>>()?;
            Stmt::proxy(
                Kind::Execute {
                    name: object_base_name(name),
                    params,
                },
                "EXECUTE",
            )
        }
        Statement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } => copy_statement(source, *to, target, options, legacy_options)?,
        Statement::Deallocate { name, .. } => Stmt::proxy(
            Kind::Deallocate {
                name: (!name.value.eq_ignore_ascii_case("all") || name.quote_style.is_some())
                    .then(|| name.value.clone()),
            },
            "DEALLOCATE",
        ),
        Statement::Discard { object_type } => {
            if object_type.to_string().eq_ignore_ascii_case("all") {
                Stmt::proxy(Kind::DiscardAll, "DISCARD ALL")
            } else {
                Stmt::proxy(Kind::Noop, "DISCARD")
            }
        }
        _ => return Ok(None),
    }))
}

/// `COPY table [(columns)] FROM STDIN|TO STDOUT [WITH] (option [value], …)` read
/// from tokens, for option spellings the SQL parser refuses (`FREEZE ON`). `None`
/// when the text is not such a COPY.
pub fn parse_copy(sql: &str) -> Option<PgResult<Stmt>> {
    use sqlparser::ast::{CopyOption, CopySource, CopyTarget};
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens: Vec<Token> = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .ok()?
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let word = |t: Option<&Token>| match t {
        Some(Token::Word(w)) => Some(w.value.to_ascii_lowercase()),
        _ => None,
    };
    let mut i = 0;
    if word(tokens.first())? != "copy" {
        return None;
    }
    i += 1;
    // The table name: words separated by periods.
    let mut name = Vec::new();
    while let Some(Token::Word(w)) = tokens.get(i) {
        name.push(Ident {
            value: w.value.clone(),
            quote_style: w.quote_style,
            span: sqlparser::tokenizer::Span::empty(),
        });
        i += 1;
        if tokens.get(i) == Some(&Token::Period) {
            i += 1;
        } else {
            break;
        }
    }
    if name.is_empty() {
        return None;
    }
    let mut columns = Vec::new();
    if tokens.get(i) == Some(&Token::LParen) {
        i += 1;
        while let Some(t) = tokens.get(i) {
            match t {
                Token::Word(w) => columns.push(Ident {
                    value: w.value.clone(),
                    quote_style: w.quote_style,
                    span: sqlparser::tokenizer::Span::empty(),
                }),
                Token::Comma => {}
                Token::RParen => break,
                _ => return None,
            }
            i += 1;
        }
        i += 1;
    }
    let to = match word(tokens.get(i))?.as_str() {
        "from" => false,
        "to" => true,
        _ => return None,
    };
    i += 1;
    let target = match word(tokens.get(i))?.as_str() {
        "stdin" => CopyTarget::Stdin,
        "stdout" => CopyTarget::Stdout,
        _ => return None,
    };
    i += 1;
    if word(tokens.get(i)).as_deref() == Some("with") {
        i += 1;
    }
    let mut options = Vec::new();
    if tokens.get(i) == Some(&Token::LParen) {
        i += 1;
        loop {
            let key = word(tokens.get(i))?;
            i += 1;
            // The option's argument, if any, up to the next comma or `)`.
            let mut arg: Option<String> = None;
            while let Some(t) = tokens.get(i) {
                match t {
                    Token::Comma | Token::RParen => break,
                    Token::Word(w) => arg = Some(w.value.clone()),
                    Token::SingleQuotedString(s) => arg = Some(s.clone()),
                    Token::Number(n, _) => arg = Some(n.clone()),
                    _ => return None,
                }
                i += 1;
            }
            let flag = |a: &Option<String>| {
                !matches!(
                    a.as_deref().map(str::to_ascii_lowercase).as_deref(),
                    Some("off" | "false" | "0")
                )
            };
            let ch = |a: &Option<String>| a.as_deref().and_then(|s| s.chars().next());
            options.push(match key.as_str() {
                "format" => CopyOption::Format(Ident::new(arg?)),
                "freeze" => CopyOption::Freeze(flag(&arg)),
                "header" => CopyOption::Header(flag(&arg)),
                "delimiter" => CopyOption::Delimiter(ch(&arg)?),
                "quote" => CopyOption::Quote(ch(&arg)?),
                "escape" => CopyOption::Escape(ch(&arg)?),
                "null" => CopyOption::Null(arg?),
                "encoding" => CopyOption::Encoding(arg?),
                _ => return None,
            });
            match tokens.get(i) {
                Some(Token::Comma) => i += 1,
                Some(Token::RParen) => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    if !matches!(
        tokens.get(i),
        None | Some(Token::SemiColon) | Some(Token::EOF)
    ) {
        return None;
    }
    let source = CopySource::Table {
        table_name: ObjectName::from(name),
        columns,
    };
    Some(copy_statement(&source, to, &target, &options, &[]))
}

/// `VACUUM [options] [ANALYZE] [table, …]` and `ANALYZE [table, …]`: SQLite's
/// `ANALYZE` of the tables when statistics are asked for; space is reclaimed by
/// SQLite itself (auto-vacuum and checkpoints), so a plain VACUUM does nothing.
pub fn parse_vacuum(sql: &str) -> Option<Stmt> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens: Vec<Token> = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .ok()?
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_) | Token::SemiColon | Token::EOF))
        .collect();
    let first = match tokens.first() {
        Some(Token::Word(w)) => w.value.to_ascii_lowercase(),
        _ => return None,
    };
    if first != "vacuum" && first != "analyze" && first != "analyse" {
        return None;
    }
    let mut analyze = first != "vacuum";
    let mut tables = Vec::new();
    let mut depth = 0;
    for t in &tokens[1..] {
        match t {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Word(w) if depth > 0 => {
                if w.value.eq_ignore_ascii_case("analyze") {
                    analyze = true;
                }
            }
            Token::Word(w)
                if w.quote_style.is_none()
                    && matches!(
                        w.value.to_ascii_lowercase().as_str(),
                        "full" | "freeze" | "verbose" | "analyze" | "analyse"
                    ) =>
            {
                if w.value.to_ascii_lowercase().starts_with("analy") {
                    analyze = true;
                }
            }
            Token::Word(w) => tables.push(Ident {
                value: w.value.clone(),
                quote_style: w.quote_style,
                span: sqlparser::tokenizer::Span::empty(),
            }),
            Token::Comma | Token::Period => {}
            _ => return None,
        }
    }
    let tag = if first == "vacuum" {
        "VACUUM"
    } else {
        "ANALYZE"
    };
    if !analyze {
        return Some(Stmt::proxy(Kind::Noop, tag));
    }
    let mut stmt = Stmt::proxy(Kind::Write, tag);
    let targets: Vec<String> = tables.iter().map(ToString::to_string).collect();
    stmt.sqlite_sql = if targets.is_empty() {
        "ANALYZE".to_string()
    } else {
        format!("ANALYZE {}", targets[0])
    };
    stmt.extra_sql = targets
        .iter()
        .skip(1)
        .map(|t| format!("ANALYZE {t}"))
        .collect();
    Some(stmt)
}

/// `COPY table|(query) FROM STDIN|TO STDOUT [WITH (…)]`.
fn copy_statement(
    source: &sqlparser::ast::CopySource,
    to: bool,
    target: &sqlparser::ast::CopyTarget,
    options: &[sqlparser::ast::CopyOption],
    legacy: &[sqlparser::ast::CopyLegacyOption],
) -> PgResult<Stmt> {
    use sqlparser::ast::{
        CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget,
    };
    match (to, target) {
        (false, CopyTarget::Stdin) | (true, CopyTarget::Stdout) => {}
        _ => {
            return Err(PgError::unsupported("COPY to or from a file or program")
                .with_hint("use COPY … FROM STDIN or COPY … TO STDOUT (psql's \\copy)"))
        }
    }
    let mut spec = crate::sql::CopySpec {
        from_stdin: !to,
        table: String::new(),
        columns: Vec::new(),
        query: String::new(),
        csv: false,
        binary: false,
        delimiter: b'\t',
        null: "\\N".into(),
        header: false,
        quote: b'"',
        escape: b'"',
    };
    let mut delimiter = None;
    let mut null = None;
    let byte = |c: char| -> PgResult<u8> {
        u8::try_from(u32::from(c))
            .ok()
            .filter(u8::is_ascii)
            .ok_or_else(|| PgError::unsupported("a COPY delimiter or quote outside ASCII"))
    };
    for o in options {
        match o {
            CopyOption::Format(f) => match f.value.to_ascii_lowercase().as_str() {
                "csv" => spec.csv = true,
                "text" => spec.csv = false,
                "binary" => spec.binary = true,
                other => return Err(PgError::unsupported(format!("COPY format {other}"))),
            },
            CopyOption::Delimiter(c) => delimiter = Some(byte(*c)?),
            CopyOption::Null(n) => null = Some(n.clone()),
            CopyOption::Header(h) => spec.header = *h,
            CopyOption::Quote(c) => spec.quote = byte(*c)?,
            CopyOption::Escape(c) => spec.escape = byte(*c)?,
            CopyOption::Encoding(e)
                if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
            // Loading into a fresh table is already as cheap as it gets here.
            CopyOption::Freeze(_) => {}
            other => return Err(PgError::unsupported(format!("COPY option {other}"))),
        }
    }
    for o in legacy {
        match o {
            CopyLegacyOption::Delimiter(c) => delimiter = Some(byte(*c)?),
            CopyLegacyOption::Null(n) => null = Some(n.clone()),
            CopyLegacyOption::Csv(csv) => {
                spec.csv = true;
                for c in csv {
                    match c {
                        CopyLegacyCsvOption::Header => spec.header = true,
                        CopyLegacyCsvOption::Quote(q) => spec.quote = byte(*q)?,
                        CopyLegacyCsvOption::Escape(e) => spec.escape = byte(*e)?,
                        other => return Err(PgError::unsupported(format!("COPY option {other}"))),
                    }
                }
            }
            CopyLegacyOption::Binary => spec.binary = true,
            other => return Err(PgError::unsupported(format!("COPY option {other}"))),
        }
    }
    if spec.csv {
        spec.delimiter = delimiter.unwrap_or(b',');
        spec.null = null.unwrap_or_default();
    } else {
        spec.delimiter = delimiter.unwrap_or(b'\t');
        spec.null = null.unwrap_or_else(|| "\\N".into());
    }
    match source {
        CopySource::Table {
            table_name,
            columns,
        } => {
            spec.table = table_name.to_string();
            spec.columns = columns.iter().map(ToString::to_string).collect();
            let list = if columns.is_empty() {
                "*".to_string()
            } else {
                spec.columns.join(", ")
            };
            spec.query = format!("SELECT {list} FROM {table_name}");
        }
        CopySource::Query(q) if to => spec.query = q.to_string(),
        CopySource::Query(_) => {
            return Err(PgError::new(
                crate::error::code::SYNTAX_ERROR,
                "COPY FROM cannot read into a query",
            ))
        }
    }
    Ok(Stmt::proxy(Kind::Copy(Box::new(spec)), "COPY"))
}

/// An argument of `EXECUTE name (…)`: a literal, as the text of a parameter.
fn execute_argument(e: &Expr) -> PgResult<Option<String>> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Null => Ok(None),
            Value::Number(n, _) => Ok(Some(n.clone())),
            Value::Boolean(b) => Ok(Some(b.to_string())),
            Value::SingleQuotedString(s)
            | Value::EscapedStringLiteral(s)
            | Value::DollarQuotedString(sqlparser::ast::DollarQuotedString { value: s, .. }) => {
                Ok(Some(s.clone()))
            }
            _ => Err(PgError::unsupported(format!("EXECUTE argument `{e}`"))),
        },
        Expr::UnaryOp {
            op: UnaryOperator::Minus,
            expr,
        } => Ok(execute_argument(expr)?.map(|v| format!("-{v}"))),
        Expr::Cast { expr, .. } | Expr::Nested(expr) => execute_argument(expr),
        _ => Err(PgError::unsupported(format!("EXECUTE argument `{e}`"))
            .with_hint("pass literals; expressions are evaluated by PostgreSQL only")),
    }
}

fn setting_value(e: &Expr) -> String {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(id) => id.value.clone(),
        other => other.to_string(),
    }
}

/// What rewriting a statement tells besides the rewritten AST.
pub struct Rewritten {
    pub kind: Kind,
    /// Command tag word(s).
    pub tag: &'static str,
    /// Rows come back (a query or RETURNING).
    pub returns_rows: bool,
    pub catalog: Option<CatalogChange>,
    /// SQLite statements run after the main one as part of it.
    pub extra_sql: Vec<String>,
    /// The statement reads the emulated system catalog.
    pub system_catalog: bool,
}

/// `DROP <type> [IF EXISTS] name` for one name.
fn stmt_clone_drop(object_type: &ObjectType, if_exists: bool, name: &ObjectName) -> Statement {
    Statement::Drop {
        object_type: *object_type,
        if_exists,
        names: vec![name.clone()],
        cascade: false,
        restrict: false,
        purge: false,
        temporary: false,
        table: None,
    }
}

/// `pg_typeof(x)` → `pg_typeof_hint(k)`, numbered in the order
/// [`super::infer::typeof_calls`] visits them (`count` of them).
pub fn number_typeof_calls(stmt: &mut Statement, count: usize) {
    struct Numberer {
        next: usize,
        count: usize,
    }
    impl VisitorMut for Numberer {
        type Break = ();
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
            if let Expr::Function(f) = e {
                if object_base_name(&f.name) == "pg_typeof" && self.next < self.count {
                    let k = Expr::Value(Value::Number(self.next.to_string(), false).into());
                    // The argument stays (unused) so that `pg_typeof(count(*))` is
                    // still an aggregate query.
                    let arg = match &f.args {
                        FunctionArguments::List(l) => match l.args.first() {
                            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(a))) => a.clone(),
                            _ => Expr::Value(Value::Null.into()),
                        },
                        _ => Expr::Value(Value::Null.into()),
                    };
                    *e = call_args("pg_typeof_hint", vec![k, arg]);
                    self.next += 1;
                }
            }
            ControlFlow::Continue(())
        }
    }
    if count > 0 {
        let _ = stmt.visit(&mut Numberer { next: 0, count });
    }
}

/// Rewrites `stmt` in place into SQLite's dialect.
pub fn rewrite_statement(stmt: &mut Statement) -> PgResult<Rewritten> {
    let mut catalog = None;
    let mut extras: Vec<Statement> = Vec::new();
    if let Some(r) = rewrite_sequence_statement(stmt)? {
        return Ok(r);
    }
    let (kind, tag, returns_rows) = match stmt {
        Statement::Query(q) => {
            let writes = !q.locks.is_empty();
            // FOR UPDATE/SHARE: the single writer already serialises writers.
            q.locks.clear();
            (
                if writes { Kind::Write } else { Kind::Read },
                "SELECT",
                true,
            )
        }
        Statement::Insert(ins) => {
            extras = rewrite_insert_defaults(ins)?;
            (Kind::Write, "INSERT", ins.returning.is_some())
        }
        Statement::Update(up) => {
            strip_returning_qualifiers(up)?;
            if up.assignments.iter().any(|a| is_default(&a.value)) {
                return Err(
                    PgError::unsupported("SET column = DEFAULT on the SQLite backend")
                        .with_hint("set the column's default value explicitly"),
                );
            }
            (Kind::Write, "UPDATE", up.returning.is_some())
        }
        Statement::Delete(del) => {
            rewrite_delete_using(del)?;
            (Kind::Write, "DELETE", del.returning.is_some())
        }
        Statement::Savepoint { .. } => (Kind::Write, "SAVEPOINT", false),
        Statement::ReleaseSavepoint { .. } => (Kind::Write, "RELEASE", false),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => (Kind::RollbackToSavepoint, "ROLLBACK", false),
        Statement::CreateTable(ct) => {
            catalog = Some(rewrite_create_table(ct)?);
            (Kind::Ddl, "CREATE TABLE", false)
        }
        Statement::CreateIndex(ci) => {
            // SQLite has one index method.
            ci.using = None;
            ci.concurrently = false;
            ci.with.clear();
            (Kind::Ddl, "CREATE INDEX", false)
        }
        // CREATE OR REPLACE VIEW → DROP VIEW IF EXISTS, then CREATE VIEW (one statement).
        Statement::CreateView(v) if v.or_replace => {
            v.or_replace = false;
            catalog = Some(CatalogChange::CreateView {
                view: object_base_name(&v.name),
                query: v.query.to_string(),
            });
            let create = stmt.clone();
            if let Statement::CreateView(v) = &create {
                *stmt = parse_one(&format!("DROP VIEW IF EXISTS {}", v.name))?;
            }
            extras.push(create);
            (Kind::Ddl, "CREATE VIEW", false)
        }
        // The view's column types are recorded from its query, planned as written.
        Statement::CreateView(v) => {
            catalog = Some(CatalogChange::CreateView {
                view: object_base_name(&v.name),
                query: v.query.to_string(),
            });
            (Kind::Ddl, "CREATE VIEW", false)
        }
        // COMMENT ON TABLE/COLUMN/VIEW/INDEX: kept in the side table
        // __unidb_comments for the catalog.
        Statement::Comment {
            object_type,
            object_name,
            comment,
            ..
        } => {
            use sqlparser::ast::CommentObject;
            let parts: Vec<String> = object_name
                .0
                .iter()
                .map(|p| match p {
                    ObjectNamePart::Identifier(i) if i.quote_style.is_some() => i.value.clone(),
                    ObjectNamePart::Identifier(i) => i.value.to_ascii_lowercase(),
                    other => other.to_string(),
                })
                .collect();
            let (kind, object, column) = match (object_type, parts.as_slice()) {
                (CommentObject::Column, [.., t, c]) => ("column", t.clone(), c.clone()),
                (CommentObject::Table, [.., t]) => ("table", t.clone(), String::new()),
                (CommentObject::View, [.., t]) => ("view", t.clone(), String::new()),
                (CommentObject::Index, [.., t]) => ("index", t.clone(), String::new()),
                (other, _) => {
                    return Err(PgError::unsupported(format!(
                        "COMMENT ON {other:?} on the SQLite backend"
                    )))
                }
            };
            let q = |s: &str| format!("'{}'", s.replace('\'', "''"));
            let text = match comment {
                Some(c) => format!(
                    "INSERT OR REPLACE INTO __unidb_comments (object_type, object_name, column_name, description) VALUES ({}, {}, {}, {})",
                    q(kind),
                    q(&object),
                    q(&column),
                    q(c)
                ),
                None => format!(
                    "DELETE FROM __unidb_comments WHERE object_type = {} AND object_name = {} AND column_name = {}",
                    q(kind),
                    q(&object),
                    q(&column)
                ),
            };
            *stmt = Parser::parse_sql(&sqlparser::dialect::SQLiteDialect {}, &text)
                .ok()
                .and_then(|mut v| v.pop())
                .ok_or_else(|| PgError::unsupported("COMMENT ON with this name"))?;
            return Ok(Rewritten {
                kind: Kind::Write,
                tag: "COMMENT",
                returns_rows: false,
                catalog: None,
                extra_sql: Vec::new(),
                system_catalog: false,
            });
        }
        // TRUNCATE t → DELETE FROM t (SQLite's truncate optimisation applies).
        // TRUNCATE a, b → DELETE FROM a; DELETE FROM b (SQLite's truncate
        // optimisation applies), all or nothing.
        Statement::Truncate(t) => {
            if t.identity.is_some() || t.cascade.is_some() {
                return Err(PgError::unsupported(
                    "TRUNCATE … RESTART IDENTITY / CASCADE on the SQLite backend",
                )
                .with_hint("truncate dependent tables first, without options"));
            }
            let mut deletes = t
                .table_names
                .iter()
                .map(|n| {
                    parse_one(&format!("DELETE FROM {}", n.name))
                        .map_err(|_| PgError::unsupported("TRUNCATE of this table name"))
                })
                .collect::<PgResult<Vec<Statement>>>()?;
            if deletes.is_empty() {
                return Err(PgError::new(
                    crate::error::code::SYNTAX_ERROR,
                    "TRUNCATE needs a table",
                ));
            }
            *stmt = deletes.remove(0);
            extras.extend(deletes);
            (Kind::Write, "TRUNCATE TABLE", false)
        }
        Statement::AlterTable(at) => {
            catalog = rewrite_alter_table(at)?;
            (Kind::Ddl, "ALTER TABLE", false)
        }
        Statement::Drop {
            object_type,
            names,
            cascade,
            if_exists,
            ..
        } => {
            let all: Vec<String> = names.iter().map(object_base_name).collect();
            let drop_cascade = *cascade;
            if drop_cascade && *object_type != ObjectType::Table {
                return Err(PgError::unsupported(format!(
                    "DROP {object_type} … CASCADE on the SQLite backend"
                ))
                .with_hint("drop dependent objects first, then drop without CASCADE"));
            }
            // SQLite has no CASCADE: the worker drops the dependents itself.
            *cascade = false;
            // DROP TABLE a, b → one statement per name, all or nothing.
            if names.len() > 1 {
                let rest: Vec<ObjectName> = names.drain(1..).collect();
                for n in &rest {
                    extras.push(stmt_clone_drop(object_type, *if_exists, n));
                }
            }
            match object_type {
                ObjectType::Table => {
                    catalog = Some(CatalogChange::DropTables {
                        tables: all,
                        cascade: drop_cascade,
                    });
                    (Kind::Ddl, "DROP TABLE", false)
                }
                ObjectType::Index => (Kind::Ddl, "DROP INDEX", false),
                ObjectType::View => {
                    catalog = Some(CatalogChange::DropTables {
                        tables: all,
                        cascade: false,
                    });
                    (Kind::Ddl, "DROP VIEW", false)
                }
                other => return Err(PgError::unsupported(format!("DROP {other}"))),
            }
        }
        other => {
            let text = other.to_string();
            let head: String = text
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ");
            return Err(PgError::unsupported(format!("statement `{head}`"))
                .with_hint("the SQLite backend serves queries, DML, common DDL and transactions"));
        }
    };
    name_result_columns(stmt);
    if let Statement::Query(q) = stmt {
        rewrite_distinct_on(q)?;
    }
    let mut rw = ExprRewriter {
        error: None,
        system: false,
    };
    let _ = stmt.visit(&mut rw);
    for extra in &mut extras {
        let _ = extra.visit(&mut rw);
    }
    if let Some(e) = rw.error {
        return Err(e);
    }
    if let (Some(CatalogChange::AddConstraint { constraint, .. }), Statement::AlterTable(at)) =
        (&mut catalog, &*stmt)
    {
        if let Some(AlterTableOperation::AddConstraint { constraint: c, .. }) =
            at.operations.first()
        {
            *constraint = c.to_string();
        }
    }
    Ok(Rewritten {
        kind,
        tag,
        returns_rows,
        catalog,
        extra_sql: extras.iter().map(ToString::to_string).collect(),
        system_catalog: rw.system,
    })
}

/// The name PostgreSQL gives an unaliased result expression (`count`, `?column?`…),
/// or `None` for a plain column reference, which SQLite already names alike.
pub(super) fn pg_column_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(i)
            if i.quote_style.is_none()
                && matches!(
                    i.value.to_ascii_lowercase().as_str(),
                    "current_user" | "session_user" | "current_role"
                ) =>
        {
            Some(i.value.to_ascii_lowercase())
        }
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => None,
        Expr::Function(f) => Some(object_base_name(&f.name)),
        Expr::Cast {
            expr, data_type, ..
        } => Some(
            pg_column_name(expr)
                .or_else(|| match expr.as_ref() {
                    Expr::Identifier(id) => Some(id.value.clone()),
                    Expr::CompoundIdentifier(ids) => ids.last().map(|i| i.value.clone()),
                    _ => None,
                })
                .filter(|n| n != "?column?")
                .unwrap_or_else(|| {
                    pg_type_of(data_type).map_or("?column?".into(), |t| t.name().to_string())
                }),
        ),
        Expr::Nested(inner) => pg_column_name(inner),
        Expr::Case { .. } => Some("case".into()),
        Expr::Exists { .. } => Some("exists".into()),
        Expr::Value(v) if matches!(v.value, Value::Boolean(_)) => Some("bool".into()),
        _ => Some("?column?".into()),
    }
}

fn name_items(items: &mut [sqlparser::ast::SelectItem]) {
    use sqlparser::ast::SelectItem;
    for item in items {
        if let SelectItem::UnnamedExpr(e) = item {
            if let Some(name) = pg_column_name(e) {
                *item = SelectItem::ExprWithAlias {
                    expr: e.clone(),
                    alias: Ident::with_quote('"', name),
                };
            }
        }
    }
}

fn name_set_expr(body: &mut sqlparser::ast::SetExpr) {
    use sqlparser::ast::SetExpr;
    match body {
        SetExpr::Select(s) => name_items(&mut s.projection),
        SetExpr::Query(q) => name_set_expr(&mut q.body),
        SetExpr::SetOperation { left, .. } => name_set_expr(left),
        _ => {}
    }
}

/// Gives result columns PostgreSQL's names, as aliases SQLite will report.
fn name_result_columns(stmt: &mut Statement) {
    match stmt {
        Statement::Query(q) => name_set_expr(&mut q.body),
        Statement::Insert(i) => {
            if let Some(r) = &mut i.returning {
                name_items(r);
            }
        }
        Statement::Update(u) => {
            if let Some(r) = &mut u.returning {
                name_items(r);
            }
        }
        Statement::Delete(d) => {
            if let Some(r) = &mut d.returning {
                name_items(r);
            }
        }
        _ => {}
    }
}

/// SQLite storage type for a PostgreSQL column type. Names are chosen for SQLite's
/// affinity rules; the PostgreSQL type itself is kept in the side catalog.
fn sqlite_column_type(t: PgType) -> DataType {
    match t {
        PgType::Bool | PgType::Int2 | PgType::Int4 | PgType::Int8 | PgType::Oid => {
            DataType::Integer(None)
        }
        PgType::Float4 | PgType::Float8 => DataType::Real,
        PgType::Numeric => DataType::Numeric(sqlparser::ast::ExactNumberInfo::None),
        PgType::Bytea => DataType::Blob(None),
        _ => DataType::Text,
    }
}

fn column_pg_type(col: &ColumnDef) -> PgResult<(PgType, bool)> {
    let serial = match &col.data_type {
        DataType::Custom(name, _) => matches!(
            object_base_name(name).as_str(),
            "serial" | "bigserial" | "smallserial" | "serial2" | "serial4" | "serial8"
        ),
        _ => false,
    };
    let identity = col.options.iter().any(|o| {
        matches!(
            o.option,
            ColumnOption::Generated {
                generation_expr: None,
                ..
            } | ColumnOption::Identity(_)
        )
    });
    if let DataType::Array(_) = col.data_type {
        return Err(PgError::unsupported(format!(
            "array column `{}` on the SQLite backend",
            col.name.value
        )));
    }
    let ty = pg_type_of(&col.data_type).ok_or_else(|| {
        PgError::unsupported(format!(
            "type `{}` (column `{}`) on the SQLite backend",
            col.data_type, col.name.value
        ))
    })?;
    Ok((ty, serial || identity))
}

fn autoincrement() -> ColumnOptionDef {
    ColumnOptionDef {
        name: None,
        option: ColumnOption::DialectSpecific(vec![Token::make_keyword("AUTOINCREMENT")]),
    }
}

fn rewrite_create_table(ct: &mut sqlparser::ast::CreateTable) -> PgResult<CatalogChange> {
    if ct.query.is_some() {
        return Err(PgError::unsupported(
            "CREATE TABLE … AS on the SQLite backend",
        ));
    }
    let table = object_base_name(&ct.name);
    // Storage parameters (`WITH (fillfactor = 90)`) tune PostgreSQL's heap only.
    if matches!(
        ct.table_options,
        sqlparser::ast::CreateTableOptions::With(_)
    ) {
        ct.table_options = sqlparser::ast::CreateTableOptions::None;
    }
    let mut columns = Vec::with_capacity(ct.columns.len());
    let mut modifiers = Vec::new();
    // Single-column table-level primary key, which a serial column may take over.
    let table_pk: Option<String> = ct.constraints.iter().find_map(|c| match c {
        TableConstraint::PrimaryKey(pk) if pk.columns.len() == 1 => {
            match &pk.columns[0].column.expr {
                Expr::Identifier(id) => Some(id.value.to_ascii_lowercase()),
                _ => None,
            }
        }
        _ => None,
    });
    let mut moved_pk = false;
    for col in &mut ct.columns {
        let (ty, auto) = column_pg_type(col)?;
        columns.push((col.name.value.to_ascii_lowercase(), ty));
        if let Some(check) = length_check(col) {
            col.options.push(check);
        }
        if let Some(m) = type_modifier(&col.data_type) {
            modifiers.push((col.name.value.to_ascii_lowercase(), m));
        }
        col.data_type = sqlite_column_type(ty);
        col.options.retain(|o| {
            !matches!(
                o.option,
                ColumnOption::Generated {
                    generation_expr: None,
                    ..
                } | ColumnOption::Identity(_)
            )
        });
        for o in &mut col.options {
            if let ColumnOption::Default(e) = &mut o.option {
                // SQLite wants a non-literal default in parentheses.
                if !matches!(e, Expr::Value(_) | Expr::Nested(_)) {
                    *e = Expr::Nested(Box::new(e.clone()));
                }
            }
        }
        if auto {
            let is_pk = col
                .options
                .iter()
                .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)));
            let name = col.name.value.to_ascii_lowercase();
            if is_pk {
                col.options.push(autoincrement());
            } else if table_pk.as_deref() == Some(name.as_str()) {
                col.options.push(ColumnOptionDef {
                    name: None,
                    option: ColumnOption::PrimaryKey(sqlparser::ast::PrimaryKeyConstraint {
                        name: None,
                        index_name: None,
                        index_type: None,
                        columns: Vec::new(),
                        include: Vec::new(),
                        index_options: Vec::new(),
                        characteristics: None,
                    }),
                });
                col.options.push(autoincrement());
                moved_pk = true;
            } else {
                return Err(PgError::unsupported(format!(
                    "SERIAL/IDENTITY column `{}` that is not the primary key on the SQLite backend",
                    col.name.value
                ))
                .with_hint("make it the PRIMARY KEY, or use INTEGER with explicit values"));
            }
        }
    }
    if moved_pk {
        ct.constraints
            .retain(|c| !matches!(c, TableConstraint::PrimaryKey(pk) if pk.columns.len() == 1));
    }
    Ok(CatalogChange::CreateTable {
        table,
        columns,
        modifiers,
    })
}

/// The CHECK that enforces a `varchar(n)`/`char(n)` column's length, named so that
/// a violation is reported as PostgreSQL's `22001`.
fn length_check(col: &ColumnDef) -> Option<ColumnOptionDef> {
    use sqlparser::ast::CharacterLength;
    let (kind, n) = match &col.data_type {
        DataType::Varchar(Some(CharacterLength::IntegerLength { length, .. }))
        | DataType::CharacterVarying(Some(CharacterLength::IntegerLength { length, .. }))
        | DataType::CharVarying(Some(CharacterLength::IntegerLength { length, .. })) => {
            ("varchar", *length)
        }
        DataType::Char(Some(CharacterLength::IntegerLength { length, .. }))
        | DataType::Character(Some(CharacterLength::IntegerLength { length, .. })) => {
            ("bpchar", *length)
        }
        _ => return None,
    };
    let name = &col.name;
    let text = format!(
        "x TEXT CONSTRAINT \"{}{kind}_{n}_{}\" CHECK (length({name}) <= {n})",
        crate::sql::LENGTH_CHECK_PREFIX,
        name.value
    );
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(&text)
        .and_then(|mut p| p.parse_column_def())
        .ok()
        .and_then(|c| c.options.into_iter().next())
}

/// The modifier of a declared type as PostgreSQL writes it: `(10,2)` of
/// `numeric(10, 2)`, `(20)` of `varchar(20)`.
fn type_modifier(dt: &DataType) -> Option<String> {
    use sqlparser::ast::{CharacterLength, ExactNumberInfo};
    match dt {
        DataType::Numeric(ExactNumberInfo::PrecisionAndScale(p, s))
        | DataType::Decimal(ExactNumberInfo::PrecisionAndScale(p, s))
        | DataType::Dec(ExactNumberInfo::PrecisionAndScale(p, s)) => Some(format!("({p},{s})")),
        DataType::Numeric(ExactNumberInfo::Precision(p))
        | DataType::Decimal(ExactNumberInfo::Precision(p))
        | DataType::Dec(ExactNumberInfo::Precision(p)) => Some(format!("({p})")),
        DataType::Varchar(Some(CharacterLength::IntegerLength { length, .. }))
        | DataType::CharacterVarying(Some(CharacterLength::IntegerLength { length, .. }))
        | DataType::CharVarying(Some(CharacterLength::IntegerLength { length, .. }))
        | DataType::Char(Some(CharacterLength::IntegerLength { length, .. }))
        | DataType::Character(Some(CharacterLength::IntegerLength { length, .. })) => {
            Some(format!("({length})"))
        }
        DataType::Char(None) | DataType::Character(None) => Some("(1)".into()),
        _ => None,
    }
}

fn rewrite_alter_table(at: &mut sqlparser::ast::AlterTable) -> PgResult<Option<CatalogChange>> {
    if at.operations.len() != 1 {
        return Err(PgError::unsupported(
            "ALTER TABLE with several operations on the SQLite backend",
        )
        .with_hint("issue one ALTER TABLE statement per change"));
    }
    let table = object_base_name(&at.name);
    let change = match &mut at.operations[0] {
        AlterTableOperation::AddColumn { column_def, .. } => {
            let (ty, auto) = column_pg_type(column_def)?;
            if auto {
                return Err(PgError::unsupported(
                    "adding a SERIAL/IDENTITY column on the SQLite backend",
                ));
            }
            let modifier = type_modifier(&column_def.data_type);
            if let Some(check) = length_check(column_def) {
                column_def.options.push(check);
            }
            column_def.data_type = sqlite_column_type(ty);
            Some(CatalogChange::AddColumn {
                table,
                column: column_def.name.value.to_ascii_lowercase(),
                ty,
                modifier,
            })
        }
        AlterTableOperation::DropColumn { column_names, .. } if column_names.len() == 1 => {
            Some(CatalogChange::DropColumn {
                table,
                column: column_names[0].value.to_ascii_lowercase(),
            })
        }
        AlterTableOperation::RenameColumn {
            old_column_name,
            new_column_name,
        } => Some(CatalogChange::RenameColumn {
            table,
            from: old_column_name.value.to_ascii_lowercase(),
            to: new_column_name.value.to_ascii_lowercase(),
        }),
        AlterTableOperation::RenameTable { table_name } => {
            let to = match table_name {
                sqlparser::ast::RenameTableNameKind::As(n)
                | sqlparser::ast::RenameTableNameKind::To(n) => object_base_name(n),
            };
            Some(CatalogChange::RenameTable { from: table, to })
        }
        // Filled in with the rewritten constraint once expressions are rewritten.
        AlterTableOperation::AddConstraint { .. } => Some(CatalogChange::AddConstraint {
            table,
            constraint: String::new(),
        }),
        other => {
            return Err(PgError::unsupported(format!(
                "ALTER TABLE {other} on the SQLite backend"
            )))
        }
    };
    Ok(change)
}

/// Rewrites expressions: casts, PostgreSQL-only literals and functions.
struct ExprRewriter {
    error: Option<PgError>,
    /// Whether the statement reads the emulated system catalog.
    system: bool,
}

fn parse_expr(sql: &str) -> Result<Expr, sqlparser::parser::ParserError> {
    Parser::new(&PostgreSqlDialect {})
        .try_with_sql(sql)
        .and_then(|mut p| p.parse_expr())
}

/// Parses an expression this crate composed from fixed text and rendered parts.
pub(super) fn parse_query_expr(sql: &str) -> PgResult<Expr> {
    parse_expr(sql).map_err(|e| {
        PgError::unsupported(format!("catalog expression on the SQLite backend ({e})"))
    })
}

fn builtin_expr(sql: &str) -> Expr {
    // Fixed SQL written in this file; it parses.
    parse_expr(sql).expect("built-in expression parses")
}

fn call(name: &str, arg: Expr) -> Expr {
    Expr::Function(Function {
        name: ObjectName(vec![ObjectNamePart::Identifier(Ident::new(name))]),
        uses_odbc_syntax: false,
        parameters: FunctionArguments::None,
        args: FunctionArguments::List(sqlparser::ast::FunctionArgumentList {
            duplicate_treatment: None,
            args: vec![sqlparser::ast::FunctionArg::Unnamed(
                sqlparser::ast::FunctionArgExpr::Expr(arg),
            )],
            clauses: vec![],
        }),
        filter: None,
        null_treatment: None,
        over: None,
        within_group: vec![],
    })
}

impl ExprRewriter {
    fn rewrite(&mut self, expr: &mut Expr) -> PgResult<()> {
        if let Some(touched) = super::system::rewrite_expr(expr)? {
            self.system |= touched;
            // A spelled-out operator continues as the operator itself.
            if !matches!(expr, Expr::BinaryOp { .. }) {
                return Ok(());
            }
        }
        match expr {
            Expr::Cast {
                kind,
                expr: inner,
                data_type,
                ..
            } => {
                if matches!(kind, CastKind::TryCast | CastKind::SafeCast) {
                    return Err(PgError::unsupported("TRY_CAST"));
                }
                let target = pg_type_of(data_type).ok_or_else(|| {
                    PgError::unsupported(format!(
                        "cast to type `{data_type}` on the SQLite backend"
                    ))
                })?;
                // true::text is 'true' (SQLite's booleans are 1 and 0).
                if let (PgType::Text | PgType::Varchar, Expr::Value(v)) = (target, inner.as_ref()) {
                    if let Value::Boolean(b) = v.value {
                        *expr = Expr::Value(Value::SingleQuotedString(b.to_string()).into());
                        return Ok(());
                    }
                }
                let inner = std::mem::replace(inner.as_mut(), Expr::Value(Value::Null.into()));
                *expr = match target {
                    PgType::Int2 => call("pg_int2", inner),
                    PgType::Int4 | PgType::Oid => call("pg_int4", inner),
                    PgType::Int8 => call("pg_int8", inner),
                    PgType::Float4 | PgType::Float8 => call("pg_float8", inner),
                    PgType::Numeric => match super::infer::numeric_scale(data_type) {
                        Some(scale) => call_args(
                            "pg_numeric_scale",
                            vec![
                                inner,
                                Expr::Value(Value::Number(scale.to_string(), false).into()),
                            ],
                        ),
                        None => call("pg_numeric", inner),
                    },
                    PgType::Varchar => match data_type {
                        // An explicit cast to varchar(n) truncates, as in PostgreSQL.
                        DataType::Varchar(Some(
                            sqlparser::ast::CharacterLength::IntegerLength { length, .. },
                        ))
                        | DataType::CharacterVarying(Some(
                            sqlparser::ast::CharacterLength::IntegerLength { length, .. },
                        )) => call_args(
                            "substr",
                            vec![
                                sqlite_cast(inner, DataType::Text),
                                Expr::Value(Value::Number("1".into(), false).into()),
                                Expr::Value(Value::Number(length.to_string(), false).into()),
                            ],
                        ),
                        _ => sqlite_cast(inner, DataType::Text),
                    },
                    PgType::Text | PgType::Bpchar | PgType::Name => {
                        sqlite_cast(inner, DataType::Text)
                    }
                    PgType::Bool => call("pg_bool", inner),
                    PgType::Date => call("pg_date", inner),
                    PgType::Timestamp => call("pg_timestamp", inner),
                    PgType::Timestamptz => call("pg_timestamptz", inner),
                    PgType::Uuid => call("pg_uuid", inner),
                    PgType::Bytea => call("pg_bytea", inner),
                    PgType::Json
                    | PgType::Jsonb
                    | PgType::Unknown
                    | PgType::Regtype
                    | PgType::Void
                    | PgType::Array(_) => Expr::Nested(Box::new(inner)),
                    PgType::Interval => {
                        call_args("pg_interval", vec![inner, Expr::Value(Value::Null.into())])
                    }
                    PgType::Time => {
                        return Err(PgError::unsupported(format!(
                            "cast to {} on the SQLite backend",
                            target.name()
                        )))
                    }
                };
            }
            Expr::Function(f) => {
                if let Some(sqlparser::ast::WindowType::WindowSpec(spec)) = &mut f.over {
                    postgres_null_order(&mut spec.order_by);
                }
                // `pg_catalog.now()` → `now()`
                if f.name.0.len() == 2 {
                    if let Some(ObjectNamePart::Identifier(schema)) = f.name.0.first() {
                        if schema.value.eq_ignore_ascii_case("pg_catalog") {
                            f.name.0.remove(0);
                        }
                    }
                }
                let name = object_base_name(&f.name);
                match name.as_str() {
                    "now"
                    | "current_timestamp"
                    | "transaction_timestamp"
                    | "statement_timestamp"
                    | "localtimestamp" => {
                        *expr = builtin_expr("(strftime('%Y-%m-%d %H:%M:%f', 'now') || '+00')");
                    }
                    "current_date" => *expr = builtin_expr("date('now')"),
                    "current_user" | "session_user" | "current_role"
                        if matches!(f.args, FunctionArguments::None) =>
                    {
                        *expr = call_args("pg_session_user", Vec::new());
                    }
                    "clock_timestamp" => {
                        *expr = builtin_expr("(strftime('%Y-%m-%d %H:%M:%f', 'now') || '+00')");
                    }
                    "jsonb_typeof" | "json_typeof" => {
                        f.name = ObjectName::from(vec![Ident::new("pg_json_typeof")])
                    }
                    // jsonb_set(target, '{a,b}', value) → json_set(target, '$.a.b', json(value))
                    "jsonb_set" => {
                        if let FunctionArguments::List(list) = &mut f.args {
                            if list.args.len() >= 3 {
                                list.args.truncate(3);
                                for (i, wrap) in [(1, "pg_json_path"), (2, "json")] {
                                    if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) =
                                        &mut list.args[i]
                                    {
                                        *e = call(wrap, take(e));
                                    }
                                }
                            }
                        }
                        f.name = ObjectName::from(vec![Ident::new("json_set")]);
                    }
                    // Booleans are stored as 0/1: min/max are bool_and/bool_or.
                    "bool_and" | "every" => f.name = ObjectName::from(vec![Ident::new("min")]),
                    "bool_or" => f.name = ObjectName::from(vec![Ident::new("max")]),
                    // round(double precision) rounds half to even, as PostgreSQL's does.
                    "round"
                        if matches!(&f.args, FunctionArguments::List(l) if l.args.len() == 1
                            && matches!(&l.args[0], FunctionArg::Unnamed(FunctionArgExpr::Expr(a))
                                if known_type(a) == Some(PgType::Float8))) =>
                    {
                        f.name = ObjectName::from(vec![Ident::new("pg_round_half_even")])
                    }
                    // PostgreSQL's text form of the array, typed by the worker.
                    "array_agg" => f.name = ObjectName::from(vec![Ident::new("pg_array_agg_text")]),
                    "char_length" | "character_length" => {
                        f.name = ObjectName::from(vec![Ident::new("length")])
                    }
                    "btrim" => f.name = ObjectName::from(vec![Ident::new("trim")]),
                    "strpos" => f.name = ObjectName::from(vec![Ident::new("instr")]),
                    "ceiling" => f.name = ObjectName::from(vec![Ident::new("ceil")]),
                    // JSON builders and aggregates: SQLite's JSON1 equivalents; the
                    // json/jsonb output format comes from the inferred column type.
                    "jsonb_build_object" | "json_build_object" => {
                        json_literal_values(&mut f.args, true);
                        f.name = ObjectName::from(vec![Ident::new("json_object")])
                    }
                    "jsonb_build_array" | "json_build_array" => {
                        json_literal_values(&mut f.args, false);
                        f.name = ObjectName::from(vec![Ident::new("json_array")])
                    }
                    "jsonb_agg" | "json_agg" => {
                        f.name = ObjectName::from(vec![Ident::new("json_group_array")])
                    }
                    "jsonb_object_agg" | "json_object_agg" => {
                        f.name = ObjectName::from(vec![Ident::new("json_group_object")])
                    }
                    "jsonb_array_length" => {
                        f.name = ObjectName::from(vec![Ident::new("json_array_length")])
                    }
                    _ => {}
                }
            }
            // ILIKE: LIKE on lower-cased operands (LIKE itself is case-sensitive, as
            // in PostgreSQL: connections set case_sensitive_like).
            Expr::ILike {
                negated,
                any,
                expr: e,
                pattern,
                escape_char,
            } => {
                if *any {
                    return Err(PgError::unsupported("ILIKE ANY"));
                }
                *expr = Expr::Like {
                    negated: *negated,
                    any: false,
                    expr: Box::new(call("lower", take(e))),
                    pattern: Box::new(call("lower", take(pattern))),
                    escape_char: Some(escape_char.take().unwrap_or_else(backslash)),
                };
            }
            // PostgreSQL's LIKE escapes with a backslash unless told otherwise.
            Expr::Like { escape_char, .. } if escape_char.is_none() => {
                *escape_char = Some(backslash());
            }
            // Date and timestamp arithmetic on operands whose type the statement
            // shows (literals, casts, current_date): date ± integer, date - date,
            // timestamp - timestamp, interval * number.
            Expr::BinaryOp { left, op, right }
                if matches!(
                    (number_or_param(left), &*op, number_or_param(right)),
                    (
                        Some(PgType::Date),
                        BinaryOperator::Plus | BinaryOperator::Minus,
                        Some(PgType::Int4 | PgType::Int8)
                    ) | (
                        Some(PgType::Int4 | PgType::Int8),
                        BinaryOperator::Plus,
                        Some(PgType::Date)
                    ) | (
                        Some(PgType::Date),
                        BinaryOperator::Minus,
                        Some(PgType::Date)
                    ) | (
                        Some(PgType::Timestamp | PgType::Timestamptz),
                        BinaryOperator::Minus,
                        Some(PgType::Timestamp | PgType::Timestamptz)
                    ) | (Some(PgType::Interval), BinaryOperator::Multiply, Some(_))
                        | (Some(_), BinaryOperator::Multiply, Some(PgType::Interval))
                ) =>
            {
                let (lt, rt) = (number_or_param(left), number_or_param(right));
                let minus = *op == BinaryOperator::Minus;
                let one = |n: &str| Expr::Value(Value::Number(n.into(), false).into());
                *expr = match (lt, rt) {
                    (Some(PgType::Date), Some(PgType::Date)) => {
                        call_args("pg_date_diff", vec![take(left), take(right)])
                    }
                    (Some(PgType::Date), _) => call_args(
                        "pg_date_add",
                        vec![take(left), take(right), one(if minus { "-1" } else { "1" })],
                    ),
                    (_, Some(PgType::Date)) => {
                        call_args("pg_date_add", vec![take(right), take(left), one("1")])
                    }
                    (Some(PgType::Interval), _) => {
                        call_args("pg_interval_mul", vec![take(left), take(right)])
                    }
                    (_, Some(PgType::Interval)) => {
                        call_args("pg_interval_mul", vec![take(right), take(left)])
                    }
                    _ => call_args("pg_timestamp_diff", vec![take(left), take(right)]),
                };
            }
            // column - column: the columns' types are known only when it runs
            // (timestamps subtract to an interval).
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Minus,
                right,
            } if is_column(left) && is_column(right) => {
                *expr = call_args("pg_minus", vec![take(left), take(right)]);
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Plus,
                right,
            } if is_column(left) && is_column(right) => {
                *expr = call_args("pg_plus", vec![take(left), take(right)]);
            }
            // jsonb || '{…}' merges; jsonb - 'key' removes a key (a string on the
            // right of `-` can only be a jsonb key).
            Expr::BinaryOp {
                left,
                op: BinaryOperator::StringConcat,
                right,
            } if super::infer::json_literal(left).is_some()
                || super::infer::json_literal(right).is_some() =>
            {
                *expr = call_args("pg_jsonb_concat", vec![take(left), take(right)]);
            }
            Expr::BinaryOp {
                left,
                op: BinaryOperator::Minus,
                right,
            } if matches!(right.as_ref(), Expr::Value(v)
                if matches!(&v.value, Value::SingleQuotedString(k) if k.trim().parse::<f64>().is_err())) =>
            {
                *expr = call_args("pg_jsonb_delete", vec![take(left), take(right)]);
            }
            // timestamp ± interval, interval ± interval (intervals are
            // `pg_interval(…)` calls by now: children are rewritten first).
            Expr::BinaryOp {
                left,
                op: op @ (BinaryOperator::Plus | BinaryOperator::Minus),
                right,
            } if is_interval(left) || is_interval(right) => {
                let sign = if *op == BinaryOperator::Minus {
                    "-1"
                } else {
                    "1"
                };
                let sign = Expr::Value(Value::Number(sign.into(), false).into());
                *expr = match (is_interval(left), is_interval(right)) {
                    (true, true) => {
                        call_args("pg_interval_sum", vec![take(left), take(right), sign])
                    }
                    (false, true) => {
                        call_args("pg_interval_add", vec![take(left), take(right), sign])
                    }
                    (true, false) if *op == BinaryOperator::Plus => {
                        call_args("pg_interval_add", vec![take(right), take(left), sign])
                    }
                    _ => {
                        return Err(PgError::new(
                            crate::error::code::UNDEFINED_FUNCTION,
                            "operator does not exist: interval - timestamp",
                        ))
                    }
                };
            }
            // A scalar subquery must not return several rows (21000): its one column
            // goes through an aggregate that refuses a second row. One that cannot
            // return two rows (LIMIT 1, an aggregate without GROUP BY) is left alone.
            Expr::Subquery(q) if scalar_may_return_rows(q) => {
                let mut q = q.clone();
                if let SetExpr::Select(sel) = q.body.as_mut() {
                    if let [item] = sel.projection.as_mut_slice() {
                        let e = match item {
                            SelectItem::UnnamedExpr(e)
                            | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
                            _ => return Ok(()),
                        };
                        *item = SelectItem::ExprWithAlias {
                            expr: e,
                            alias: Ident::new("__v"),
                        };
                        *expr = parse_query_expr(&format!(
                            "(SELECT pg_scalar(__v) FROM ({q}) AS __scalar)"
                        ))?;
                    }
                }
            }
            Expr::GroupingSets(_) | Expr::Cube(_) | Expr::Rollup(_) => {
                return Err(PgError::unsupported(
                    "GROUPING SETS / CUBE / ROLLUP on the SQLite backend",
                )
                .with_hint("run one GROUP BY per grouping and combine them with UNION ALL"));
            }
            // -interval
            Expr::UnaryOp {
                op: UnaryOperator::Minus,
                expr: inner,
            } if is_interval(inner) => {
                *expr = call_args(
                    "pg_interval_mul",
                    vec![
                        take(inner),
                        Expr::Value(Value::Number("-1".into(), false).into()),
                    ],
                );
            }
            // INTERVAL '7 days', INTERVAL '7' DAY
            Expr::Interval(iv) => {
                let unit = match &iv.leading_field {
                    Some(f) => Expr::Value(
                        Value::SingleQuotedString(f.to_string().to_ascii_lowercase()).into(),
                    ),
                    None => Expr::Value(Value::Null.into()),
                };
                *expr = call_args("pg_interval", vec![take(&mut iv.value), unit]);
            }
            Expr::BinaryOp { left, op, right } => {
                let regex = match op {
                    BinaryOperator::PGRegexMatch => Some((false, false)),
                    BinaryOperator::PGRegexIMatch => Some((true, false)),
                    BinaryOperator::PGRegexNotMatch => Some((false, true)),
                    BinaryOperator::PGRegexNotIMatch => Some((true, true)),
                    _ => None,
                };
                if let Some((insensitive, negated)) = regex {
                    let flags = if insensitive { "i" } else { "" };
                    let m = call_args(
                        "pg_regex_match",
                        vec![
                            take(left),
                            take(right),
                            Expr::Value(Value::SingleQuotedString(flags.into()).into()),
                        ],
                    );
                    *expr = if negated {
                        Expr::UnaryOp {
                            op: UnaryOperator::Not,
                            expr: Box::new(m),
                        }
                    } else {
                        m
                    };
                } else if let Some(name) = match op {
                    BinaryOperator::AtArrow => Some("pg_jsonb_contains"),
                    BinaryOperator::ArrowAt => Some("pg_jsonb_contained"),
                    BinaryOperator::Question => Some("pg_jsonb_exists"),
                    BinaryOperator::QuestionPipe => Some("pg_jsonb_exists_any"),
                    BinaryOperator::QuestionAnd => Some("pg_jsonb_exists_all"),
                    BinaryOperator::HashArrow => Some("pg_jsonb_path"),
                    BinaryOperator::HashLongArrow => Some("pg_jsonb_path_text"),
                    _ => None,
                } {
                    // jsonb operators SQLite lacks: Rust functions over the JSON text;
                    // an ARRAY['a', 'b'] operand becomes a JSON array.
                    let r = match take(right) {
                        Expr::Array(a) => call_args("json_array", a.elem),
                        other => other,
                    };
                    *expr = call_args(name, vec![take(left), r]);
                } else if *op == BinaryOperator::PGExp {
                    *expr = call_args("power", vec![take(left), take(right)]);
                } else if matches!(op, BinaryOperator::Divide | BinaryOperator::Modulo)
                    && !is_nonzero_literal(right)
                {
                    // SQLite answers NULL for a division by zero; PostgreSQL raises 22012.
                    **right = call("pg_divisor", take(right));
                }
            }
            // `x = ANY (ARRAY[a, b])` → `x IN (a, b)`; `x <> ALL (ARRAY[…])` → NOT IN.
            Expr::AnyOp {
                left,
                compare_op: BinaryOperator::Eq,
                right,
                ..
            } if matches!(right.as_ref(), Expr::Array(_)) => {
                *expr = in_array(left, right, false);
            }
            Expr::AllOp {
                left,
                compare_op: BinaryOperator::NotEq,
                right,
            } if matches!(right.as_ref(), Expr::Array(_)) => {
                *expr = in_array(left, right, true);
            }
            // trim(BOTH 'x' FROM s) → trim(s, 'x'); LEADING → ltrim, TRAILING → rtrim.
            Expr::Trim {
                expr: e,
                trim_where,
                trim_what,
                trim_characters,
            } => {
                let name = match trim_where {
                    Some(sqlparser::ast::TrimWhereField::Leading) => "ltrim",
                    Some(sqlparser::ast::TrimWhereField::Trailing) => "rtrim",
                    _ => "trim",
                };
                let mut args = vec![take(e)];
                if let Some(w) = trim_what.as_mut() {
                    args.push(take(w));
                } else if let Some(chars) = trim_characters.as_mut() {
                    args.extend(chars.drain(..).take(1));
                }
                *expr = call_args(name, args);
            }
            // `timestamp '…'`, `date '…'`: the same as a cast of the string.
            Expr::TypedString(ts) => {
                let cast = Expr::Cast {
                    kind: CastKind::DoubleColon,
                    expr: Box::new(Expr::Value(ts.value.clone())),
                    data_type: ts.data_type.clone(),
                    format: None,
                };
                *expr = cast;
                return self.rewrite(expr);
            }
            // extract(field FROM x) → pg_extract('field', x)
            Expr::Extract { field, expr: e, .. } => {
                let name = field.to_string().to_ascii_lowercase();
                *expr = call_args(
                    "pg_extract",
                    vec![Expr::Value(Value::SingleQuotedString(name).into()), take(e)],
                );
            }
            // current_user / session_user: the session's user, set per statement.
            Expr::Identifier(id)
                if id.quote_style.is_none()
                    && matches!(
                        id.value.to_ascii_lowercase().as_str(),
                        "current_user" | "session_user" | "current_role"
                    ) =>
            {
                *expr = call_args("pg_session_user", Vec::new());
            }
            // position(a IN b) → instr(b, a)
            Expr::Position { expr: needle, r#in } => {
                *expr = call_args("instr", vec![take(r#in), take(needle)]);
            }
            // substring(x FROM a FOR b) → substr(x, a, b)
            Expr::Substring {
                expr: e,
                substring_from,
                substring_for,
                ..
            } => {
                let mut args = vec![take(e)];
                args.push(
                    substring_from
                        .as_mut()
                        .map_or(Expr::Value(Value::Number("1".into(), false).into()), |f| {
                            take(f)
                        }),
                );
                if let Some(n) = substring_for.as_mut() {
                    args.push(take(n));
                }
                *expr = call_args("substr", args);
            }
            Expr::Value(v) => match &v.value {
                Value::EscapedStringLiteral(s)
                | Value::DollarQuotedString(sqlparser::ast::DollarQuotedString {
                    value: s, ..
                }) => {
                    v.value = Value::SingleQuotedString(s.clone());
                }
                _ => {}
            },
            _ => {}
        }
        Ok(())
    }
}

/// `SELECT DISTINCT ON (k) … ORDER BY k, x` → the first row per `k` by a window:
/// `SELECT <columns> FROM (SELECT …, row_number() OVER (PARTITION BY k ORDER BY k, x)
/// AS __unidb_rn FROM …) WHERE __unidb_rn = 1 ORDER BY <the same, by column name>`.
fn rewrite_distinct_on(q: &mut Query) -> PgResult<()> {
    use sqlparser::ast::{Distinct, OrderByKind, SelectItem, SetExpr};
    let SetExpr::Select(sel) = q.body.as_mut() else {
        return Ok(());
    };
    let Some(Distinct::On(keys)) = &sel.distinct else {
        return Ok(());
    };
    let unsupported = |what: &str| {
        PgError::unsupported(format!("DISTINCT ON with {what} on the SQLite backend"))
            .with_hint("list the output columns by name and order by them")
    };
    let mut names = Vec::new();
    for item in &sel.projection {
        names.push(match item {
            SelectItem::ExprWithAlias { alias, .. } => alias.value.clone(),
            SelectItem::UnnamedExpr(Expr::Identifier(i)) => i.value.clone(),
            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(v)) => {
                v.last().map(|i| i.value.clone()).unwrap_or_default()
            }
            _ => return Err(unsupported("`*` or an unnamed expression")),
        });
    }
    let order: Vec<sqlparser::ast::OrderByExpr> = match &q.order_by {
        Some(o) => match &o.kind {
            OrderByKind::Expressions(v) => v.clone(),
            OrderByKind::All(_) => return Err(unsupported("ORDER BY ALL")),
        },
        None => Vec::new(),
    };
    // The outer ORDER BY refers to output columns by name.
    let mut outer_order = Vec::new();
    for o in &order {
        let text = o.expr.to_string();
        let last = match &o.expr {
            Expr::Identifier(i) => Some(i.value.clone()),
            Expr::CompoundIdentifier(v) => v.last().map(|i| i.value.clone()),
            _ => None,
        };
        let pos = sel
            .projection
            .iter()
            .position(|item| match item {
                SelectItem::ExprWithAlias { expr, .. } | SelectItem::UnnamedExpr(expr) => {
                    expr.to_string() == text
                }
                _ => false,
            })
            .or_else(|| last.and_then(|l| names.iter().position(|n| *n == l)));
        let Some(pos) = pos else {
            return Err(unsupported("ORDER BY on a column outside the select list"));
        };
        outer_order.push(format!(
            "{}{}",
            Ident::with_quote('"', names[pos].clone()),
            o.options
        ));
    }
    let partition: Vec<String> = keys.iter().map(ToString::to_string).collect();
    let window_order: Vec<String> = order.iter().map(ToString::to_string).collect();
    let mut inner = sel.as_ref().clone();
    inner.distinct = None;
    let window = format!(
        "row_number() OVER (PARTITION BY {}{})",
        partition.join(", "),
        if window_order.is_empty() {
            String::new()
        } else {
            format!(" ORDER BY {}", window_order.join(", "))
        }
    );
    let window_expr =
        parse_expr(&window).map_err(|e| PgError::internal(format!("DISTINCT ON rewrite: {e}")))?;
    inner.projection.push(SelectItem::ExprWithAlias {
        expr: window_expr,
        alias: Ident::new("__unidb_rn"),
    });
    let columns: Vec<String> = names
        .iter()
        .map(|n| Ident::with_quote('"', n.clone()).to_string())
        .collect();
    let mut sql = format!(
        "SELECT {} FROM ({inner}) AS __unidb_d WHERE __unidb_rn = 1",
        columns.join(", ")
    );
    if !outer_order.is_empty() {
        sql.push_str(&format!(" ORDER BY {}", outer_order.join(", ")));
    }
    let Statement::Query(mut new) = parse_one(&sql)? else {
        return Err(PgError::internal("DISTINCT ON rewrite"));
    };
    new.limit_clause = q.limit_clause.take();
    new.fetch = q.fetch.take();
    new.with = q.with.take();
    *q = *new;
    Ok(())
}

/// `generate_series(start, stop[, step])` over integers as a derived table.
fn generate_series(
    args: &[FunctionArg],
    alias: Option<&sqlparser::ast::TableAlias>,
) -> PgResult<TableFactor> {
    if !(2..=3).contains(&args.len()) {
        return Err(PgError::unsupported("generate_series with these arguments"));
    }
    let column = alias
        .and_then(|a| a.columns.first().map(|c| c.name.value.clone()))
        .or_else(|| alias.map(|a| a.name.value.clone()))
        .unwrap_or_else(|| "generate_series".to_string());
    let list: Vec<String> = args.iter().map(ToString::to_string).collect();
    // A timestamp series (an interval step): a recursive CTE adding the step with
    // calendar arithmetic; values are normalised timestamps so they compare as text.
    let sql = if list.len() == 3 && list[2].to_ascii_lowercase().contains("interval") {
        let (start, stop, step) = (&list[0], &list[1], &list[2]);
        format!(
            "SELECT v AS {col} FROM (WITH RECURSIVE __gs(v) AS (
               SELECT pg_interval_add({start}, '0 seconds', 1)
               UNION ALL
               SELECT pg_interval_add(v, {step}, 1) FROM __gs
               WHERE pg_interval_add(v, {step}, 1) <= pg_interval_add({stop}, '0 seconds', 1)
             ) SELECT v FROM __gs) AS __series",
            col = Ident::with_quote('"', column.clone()),
        )
    } else {
        format!(
            "SELECT value AS {} FROM generate_series({}) AS __series",
            Ident::with_quote('"', column.clone()),
            list.join(", ")
        )
    };
    let Statement::Query(q) = parse_one(&sql)? else {
        return Err(PgError::internal("generate_series rewrite"));
    };
    Ok(TableFactor::Derived {
        lateral: false,
        subquery: q,
        alias: Some(sqlparser::ast::TableAlias {
            explicit: true,
            name: alias.map_or_else(|| Ident::new("generate_series"), |a| a.name.clone()),
            columns: vec![],
            at: None,
        }),
        sample: None,
    })
}

/// `unnest(array) AS x` in FROM → the elements of the array's JSON form.
fn unnest(
    args: &[FunctionArg],
    alias: Option<&sqlparser::ast::TableAlias>,
) -> PgResult<TableFactor> {
    let [arg] = args else {
        return Err(PgError::unsupported(
            "unnest of several arrays on the SQLite backend",
        ));
    };
    let column = alias
        .and_then(|a| a.columns.first().map(|c| c.name.value.clone()))
        .or_else(|| alias.map(|a| a.name.value.clone()))
        .unwrap_or_else(|| "unnest".to_string());
    let sql = format!(
        "SELECT value AS {} FROM json_each(pg_array_json({arg})) AS __series",
        Ident::with_quote('"', column.clone()),
    );
    let Statement::Query(q) = parse_one(&sql)? else {
        return Err(PgError::internal("unnest rewrite"));
    };
    Ok(TableFactor::Derived {
        lateral: false,
        subquery: q,
        alias: Some(sqlparser::ast::TableAlias {
            explicit: true,
            name: alias.map_or_else(|| Ident::new("unnest"), |a| a.name.clone()),
            columns: vec![],
            at: None,
        }),
        sample: None,
    })
}

fn parse_one(sql: &str) -> PgResult<Statement> {
    Parser::parse_sql(&PostgreSqlDialect {}, sql)
        .ok()
        .and_then(|mut v| v.pop())
        .ok_or_else(|| PgError::internal(format!("rewritten statement does not parse: {sql}")))
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Sequences live in the side table `__unidb_sequences`: CREATE/DROP SEQUENCE, and
/// `SELECT nextval('s')`, `setval('s', n)`, `currval('s')` as the only item of a
/// FROM-less SELECT (an UPDATE … RETURNING for the first two).
fn rewrite_sequence_statement(stmt: &mut Statement) -> PgResult<Option<Rewritten>> {
    use sqlparser::ast::SequenceOptions;
    let done = |tag: &'static str, returns_rows: bool| Rewritten {
        kind: Kind::Write,
        tag,
        returns_rows,
        catalog: None,
        extra_sql: Vec::new(),
        system_catalog: false,
    };
    match stmt {
        Statement::CreateSequence {
            if_not_exists,
            name,
            sequence_options,
            ..
        } => {
            let mut start: Option<String> = None;
            let mut increment = "1".to_string();
            for o in sequence_options.iter() {
                match o {
                    SequenceOptions::StartWith(e, _) => start = Some(e.to_string()),
                    SequenceOptions::IncrementBy(e, _) => increment = e.to_string(),
                    SequenceOptions::DataType(_)
                    | SequenceOptions::Cache(_)
                    | SequenceOptions::OwnedBy(_) => {}
                    SequenceOptions::MinValue(None) | SequenceOptions::MaxValue(None) => {}
                    SequenceOptions::Cycle(false) => {}
                    other => {
                        return Err(PgError::unsupported(format!(
                            "sequence option `{other}` on the SQLite backend"
                        )))
                    }
                }
            }
            for v in [&start, &Some(increment.clone())].into_iter().flatten() {
                if v.parse::<i64>().is_err() {
                    return Err(PgError::unsupported(format!("sequence value `{v}`")));
                }
            }
            let start = start.unwrap_or_else(|| {
                if increment.starts_with('-') {
                    "-1".into()
                } else {
                    "1".into()
                }
            });
            let verb = if *if_not_exists {
                "INSERT OR IGNORE"
            } else {
                "INSERT"
            };
            *stmt = parse_one(&format!(
                "{verb} INTO __unidb_sequences (name, value, increment, called) VALUES ({}, {start}, {increment}, 0)",
                quote_literal(&object_base_name(name))
            ))?;
            Ok(Some(done("CREATE SEQUENCE", false)))
        }
        Statement::Drop {
            object_type: ObjectType::Sequence,
            names,
            ..
        } => {
            let list: Vec<String> = names
                .iter()
                .map(|n| quote_literal(&object_base_name(n)))
                .collect();
            *stmt = parse_one(&format!(
                "DELETE FROM __unidb_sequences WHERE name IN ({})",
                list.join(", ")
            ))?;
            Ok(Some(done("DROP SEQUENCE", false)))
        }
        Statement::Query(q) => {
            let sqlparser::ast::SetExpr::Select(sel) = q.body.as_ref() else {
                return Ok(None);
            };
            if !sel.from.is_empty() || sel.projection.len() != 1 {
                return Ok(None);
            }
            let (e, alias) = match &sel.projection[0] {
                sqlparser::ast::SelectItem::UnnamedExpr(e) => (e, None),
                sqlparser::ast::SelectItem::ExprWithAlias { expr, alias } => {
                    (expr, Some(alias.value.clone()))
                }
                _ => return Ok(None),
            };
            let Expr::Function(f) = e else {
                return Ok(None);
            };
            let func = object_base_name(&f.name);
            if !matches!(func.as_str(), "nextval" | "setval" | "currval") {
                return Ok(None);
            }
            let FunctionArguments::List(list) = &f.args else {
                return Ok(None);
            };
            let args: Vec<String> = list.args.iter().map(ToString::to_string).collect();
            let name = args.first().cloned().unwrap_or_default();
            let alias = alias.unwrap_or_else(|| func.clone());
            let col = Ident::with_quote('"', alias).to_string();
            let sql = match (func.as_str(), args.len()) {
                ("nextval", 1) => format!(
                    "UPDATE __unidb_sequences SET value = CASE WHEN called THEN value + increment ELSE value END, called = 1 WHERE name = {name} RETURNING value AS {col}"
                ),
                ("setval", 2) => format!(
                    "UPDATE __unidb_sequences SET value = {}, called = 1 WHERE name = {name} RETURNING value AS {col}",
                    args[1]
                ),
                ("currval", 1) => {
                    format!("SELECT value AS {col} FROM __unidb_sequences WHERE name = {name} AND called")
                }
                _ => return Ok(None),
            };
            *stmt = parse_one(&sql)?;
            Ok(Some(if func == "currval" {
                Rewritten {
                    kind: Kind::Read,
                    ..done("SELECT", true)
                }
            } else {
                done("SELECT", true)
            }))
        }
        _ => Ok(None),
    }
}

/// SQLite's RETURNING names the updated table's columns unqualified and cannot see
/// the other tables of `UPDATE … FROM`.
fn strip_returning_qualifiers(up: &mut sqlparser::ast::Update) -> PgResult<()> {
    let Some(returning) = up.returning.as_mut() else {
        return Ok(());
    };
    let mut own = Vec::new();
    if let TableFactor::Table { name, alias, .. } = &up.table.relation {
        own.push(object_base_name(name));
        if let Some(a) = alias {
            own.push(a.name.value.to_ascii_lowercase());
        }
    }
    let mut error = None;
    let _ = returning.visit(&mut FnVisitor(|e: &mut Expr| {
        if let Expr::CompoundIdentifier(parts) = e {
            if parts.len() == 2 {
                if own.contains(&parts[0].value.to_ascii_lowercase()) {
                    *e = Expr::Identifier(parts[1].clone());
                } else {
                    error = Some(PgError::unsupported(
                        "RETURNING columns of another table in UPDATE … FROM on the SQLite backend",
                    ));
                }
            }
        }
    }));
    error.map_or(Ok(()), Err)
}

/// Runs a closure on every expression, after its children.
struct FnVisitor<F: FnMut(&mut Expr)>(F);

impl<F: FnMut(&mut Expr)> VisitorMut for FnVisitor<F> {
    type Break = ();
    fn post_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<()> {
        (self.0)(e);
        ControlFlow::Continue(())
    }
}

fn backslash() -> Box<Expr> {
    Box::new(Expr::Value(Value::SingleQuotedString("\\".into()).into()))
}

/// A numeric literal other than zero: no division check needed.
/// Set-returning functions in a select list over one array, as catalog queries use
/// them (`unnest(indkey) AS attnum, generate_subscripts(indkey, 1) AS ord`): the array's
/// elements joined in FROM (`json_each`), one row per element, in step.
fn set_returning_projection(sel: &mut sqlparser::ast::Select) -> PgResult<()> {
    // `(information_schema._pg_expandarray(a)).x` / `.n` (pgjdbc): the element and its
    // position, as `unnest` and `generate_subscripts` give them.
    let srf = |e: &Expr| -> Option<(String, Expr)> {
        let (e, field) = match e {
            Expr::CompoundFieldAccess { root, access_chain } => match access_chain.as_slice() {
                [sqlparser::ast::AccessExpr::Dot(Expr::Identifier(f))] => {
                    let inner = match root.as_ref() {
                        Expr::Nested(i) => i.as_ref(),
                        other => other,
                    };
                    (inner, Some(f.value.to_ascii_lowercase()))
                }
                _ => return None,
            },
            other => (other, None),
        };
        let Expr::Function(f) = e else { return None };
        let mut name = object_base_name(&f.name);
        if name == "_pg_expandarray" {
            name = if field.as_deref() == Some("n") {
                "generate_subscripts".into()
            } else {
                "unnest".into()
            };
        } else if field.is_some() {
            return None;
        }
        if name != "unnest" && name != "generate_subscripts" {
            return None;
        }
        let FunctionArguments::List(list) = &f.args else {
            return None;
        };
        match list.args.first() {
            Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(a))) => Some((name, a.clone())),
            _ => None,
        }
    };
    // The first array drives the rows; other arrays are read in step by position.
    let mut array: Option<Expr> = None;
    for item in &sel.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            let _ = sqlparser::ast::visit_expressions(e, |x| {
                if let Some((_, a)) = srf(x) {
                    array = Some(a);
                    return ControlFlow::Break(());
                }
                ControlFlow::Continue(())
            });
        }
        if array.is_some() {
            break;
        }
    }
    let Some(array) = array else {
        return Ok(());
    };
    let Statement::Query(q) = parse_one(&format!(
        "SELECT 1 FROM json_each(pg_array_json({array})) AS __srf"
    ))?
    else {
        return Err(PgError::internal("set-returning rewrite"));
    };
    let SetExpr::Select(helper) = *q.body else {
        return Err(PgError::internal("set-returning rewrite"));
    };
    sel.from.extend(helper.from);
    // Every occurrence, also inside other expressions (`pg_get_indexdef(…, (…).n)`).
    struct Replace<'a, F: Fn(&Expr) -> Option<(String, Expr)>> {
        srf: F,
        array: &'a Expr,
    }
    impl<F: Fn(&Expr) -> Option<(String, Expr)>> VisitorMut for Replace<'_, F> {
        type Break = PgError;
        fn pre_visit_expr(&mut self, e: &mut Expr) -> ControlFlow<PgError> {
            if let Some((name, a)) = (self.srf)(e) {
                let text = match (name.as_str(), a == *self.array) {
                    ("unnest", true) => "__srf.value".to_string(),
                    ("unnest", false) => format!("pg_array_element({a}, __srf.key + 1)"),
                    _ => "(__srf.key + 1)".to_string(),
                };
                match parse_expr(&text) {
                    Ok(new) => *e = new,
                    Err(_) => {
                        return ControlFlow::Break(PgError::internal("set-returning rewrite"))
                    }
                }
            }
            ControlFlow::Continue(())
        }
    }
    let mut replace = Replace { srf, array: &array };
    for item in &mut sel.projection {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            if let ControlFlow::Break(err) = e.visit(&mut replace) {
                return Err(err);
            }
        }
    }
    Ok(())
}

/// `row_to_json(t)` where `t` is a subquery in FROM whose columns are named:
/// `json_object('a', t.a, …)` (SQLite has no row values to convert).
fn row_to_json_of_subqueries(sel: &mut sqlparser::ast::Select) {
    let mut subqueries: Vec<(String, Vec<String>)> = Vec::new();
    for twj in &sel.from {
        for factor in std::iter::once(&twj.relation).chain(twj.joins.iter().map(|j| &j.relation)) {
            if let TableFactor::Derived {
                subquery,
                alias: Some(alias),
                ..
            } = factor
            {
                if let SetExpr::Select(inner) = subquery.body.as_ref() {
                    let names: Option<Vec<String>> = inner
                        .projection
                        .iter()
                        .map(|item| match item {
                            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
                            SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i.value.clone()),
                            SelectItem::UnnamedExpr(Expr::CompoundIdentifier(ids)) => {
                                ids.last().map(|i| i.value.clone())
                            }
                            _ => None,
                        })
                        .collect();
                    if let Some(names) = names {
                        subqueries.push((alias.name.value.clone(), names));
                    }
                }
            }
        }
    }
    if subqueries.is_empty() {
        return;
    }
    for item in &mut sel.projection {
        let e = match item {
            SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => e,
            _ => continue,
        };
        let Expr::Function(f) = e else { continue };
        let name = object_base_name(&f.name);
        if name != "row_to_json" && name != "to_json" && name != "to_jsonb" {
            continue;
        }
        let FunctionArguments::List(list) = &f.args else {
            continue;
        };
        let [FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Identifier(t)))] =
            list.args.as_slice()
        else {
            continue;
        };
        let Some((alias, columns)) = subqueries
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(&t.value))
        else {
            continue;
        };
        let mut args = Vec::new();
        for c in columns {
            args.push(Expr::Value(Value::SingleQuotedString(c.clone()).into()));
            args.push(Expr::CompoundIdentifier(vec![
                Ident::new(alias.clone()),
                Ident::with_quote('"', c.clone()),
            ]));
        }
        *e = call_args("json_object", args);
    }
}

/// In a JSON builder, `true`/`false` are JSON booleans (SQLite would give 1/0) and a
/// decimal literal keeps its digits (`0.50`, as PostgreSQL's numeric does). For
/// objects only the values (odd arguments) are touched.
fn json_literal_values(args: &mut FunctionArguments, object: bool) {
    let FunctionArguments::List(list) = args else {
        return;
    };
    for (i, arg) in list.args.iter_mut().enumerate() {
        if object && i % 2 == 0 {
            continue;
        }
        let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = arg else {
            continue;
        };
        let text = match e {
            Expr::Value(v) => match &v.value {
                Value::Boolean(b) => b.to_string(),
                Value::Number(n, _) if n.contains(['.', 'e', 'E']) => n.clone(),
                _ => continue,
            },
            _ => continue,
        };
        *e = call("json", Expr::Value(Value::SingleQuotedString(text).into()));
    }
}

/// Whether a scalar subquery could return more than one row: a plain SELECT without
/// `LIMIT 1` that is not an aggregate over all its rows.
fn scalar_may_return_rows(q: &Query) -> bool {
    let SetExpr::Select(sel) = q.body.as_ref() else {
        return false;
    };
    if let Some(LimitClause::LimitOffset {
        limit: Some(Expr::Value(v)),
        ..
    }) = &q.limit_clause
    {
        if matches!(&v.value, Value::Number(n, _) if n == "1" || n == "0") {
            return false;
        }
    }
    let no_group =
        matches!(&sel.group_by, sqlparser::ast::GroupByExpr::Expressions(g, _) if g.is_empty());
    let aggregate = sel.projection.iter().any(|item| match item {
        SelectItem::UnnamedExpr(Expr::Function(f))
        | SelectItem::ExprWithAlias {
            expr: Expr::Function(f),
            ..
        } => {
            f.over.is_none()
                && matches!(
                    object_base_name(&f.name).as_str(),
                    "count"
                        | "sum"
                        | "avg"
                        | "min"
                        | "max"
                        | "bool_and"
                        | "bool_or"
                        | "every"
                        | "string_agg"
                        | "json_agg"
                        | "jsonb_agg"
                        | "json_group_array"
                        | "json_group_object"
                        | "group_concat"
                        | "total"
                )
        }
        _ => false,
    });
    !(sel.from.is_empty() || no_group && aggregate) && sel.projection.len() == 1
}

/// PostgreSQL sorts NULLs last ascending and first descending; SQLite the other way
/// round. Each sort key without `NULLS FIRST/LAST` gets PostgreSQL's (SQLite still
/// walks an index for it).
fn postgres_null_order(items: &mut [sqlparser::ast::OrderByExpr]) {
    for item in items {
        if item.options.nulls_first.is_none() {
            let desc = matches!(item.options.sort, Some(sqlparser::ast::OrderBySort::Desc));
            item.options.nulls_first = Some(desc);
        }
    }
}

/// [`known_type`], with a parameter taken for an integer (a lifted literal next to
/// a date or an interval is a day count or a factor).
fn number_or_param(e: &Expr) -> Option<PgType> {
    match e {
        Expr::Value(v) if matches!(v.value, Value::Placeholder(_)) => Some(PgType::Int8),
        Expr::Nested(inner) => number_or_param(inner),
        other => known_type(other),
    }
}

fn is_column(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(_) | Expr::CompoundIdentifier(_))
}

/// The type of an already rewritten expression when its form shows it: a cast
/// (`pg_date(…)`), `current_date`, an interval, an integer literal.
fn known_type(e: &Expr) -> Option<PgType> {
    match e {
        Expr::Nested(inner) => known_type(inner),
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) if n.parse::<i64>().is_ok() => Some(PgType::Int4),
            Value::Number(_, _) => Some(PgType::Numeric),
            _ => None,
        },
        Expr::Function(f) => match object_base_name(&f.name).as_str() {
            "pg_date" | "pg_date_add" => Some(PgType::Date),
            "date" if matches!(&f.args, FunctionArguments::List(l) if l.args.len() == 1) => {
                Some(PgType::Date)
            }
            "pg_timestamp" => Some(PgType::Timestamp),
            "pg_timestamptz" => Some(PgType::Timestamptz),
            "pg_interval" | "pg_interval_sum" | "pg_interval_mul" | "pg_timestamp_diff" => {
                Some(PgType::Interval)
            }
            "pg_int2" | "pg_int4" => Some(PgType::Int4),
            "pg_int8" => Some(PgType::Int8),
            "pg_float8" => Some(PgType::Float8),
            "pg_numeric" | "pg_numeric_scale" => Some(PgType::Numeric),
            _ => None,
        },
        _ => None,
    }
}

/// An interval-valued expression, after rewriting: `pg_interval(…)` or a sum of them.
fn is_interval(e: &Expr) -> bool {
    match e {
        Expr::Function(f) => matches!(
            object_base_name(&f.name).as_str(),
            "pg_interval" | "pg_interval_sum" | "pg_interval_mul" | "pg_timestamp_diff"
        ),
        Expr::Nested(inner) => is_interval(inner),
        _ => false,
    }
}

fn is_nonzero_literal(e: &Expr) -> bool {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Number(n, _) => n.parse::<f64>().is_ok_and(|f| f != 0.0),
            _ => false,
        },
        Expr::Nested(inner) => is_nonzero_literal(inner),
        _ => false,
    }
}

fn is_default(e: &Expr) -> bool {
    matches!(e, Expr::Identifier(id) if id.quote_style.is_none() && id.value.eq_ignore_ascii_case("default"))
}

/// `DEFAULT` in a VALUES list: SQLite has no such keyword, so a defaulted column is
/// left out of the column list. Rows that default different columns become
/// separate INSERTs (consecutive rows with the same defaults stay together, so row
/// order is kept); the first stays in `ins`, the others are returned and run after
/// it as one statement.
fn rewrite_insert_defaults(ins: &mut sqlparser::ast::Insert) -> PgResult<Vec<Statement>> {
    let Some(source) = ins.source.as_mut() else {
        return Ok(Vec::new());
    };
    let sqlparser::ast::SetExpr::Values(values) = source.body.as_mut() else {
        return Ok(Vec::new());
    };
    let masks: Vec<Vec<bool>> = values
        .rows
        .iter()
        .map(|r| r.content.iter().map(is_default).collect())
        .collect();
    if !masks.iter().flatten().any(|d| *d) {
        return Ok(Vec::new());
    }
    let width = masks.first().map_or(0, Vec::len);
    if ins.columns.len() != width {
        return Err(PgError::unsupported(
            "DEFAULT in VALUES without a column list on the SQLite backend",
        )
        .with_hint("list the columns and leave the defaulted ones out"));
    }
    if masks.iter().any(|m| m.iter().all(|d| *d)) {
        return Err(PgError::unsupported(
            "a VALUES row made only of DEFAULT on the SQLite backend",
        )
        .with_hint("write INSERT INTO … DEFAULT VALUES"));
    }
    // Consecutive rows with the same defaulted columns.
    let mut groups: Vec<(Vec<bool>, Vec<usize>)> = Vec::new();
    for (i, m) in masks.iter().enumerate() {
        match groups.last_mut() {
            Some((mask, rows)) if mask == m => rows.push(i),
            _ => groups.push((m.clone(), vec![i])),
        }
    }
    let all_rows = std::mem::take(&mut values.rows);
    let template = ins.clone();
    let mut statements = Vec::new();
    for (mask, rows) in &groups {
        let mut part = template.clone();
        part.columns = template
            .columns
            .iter()
            .zip(mask)
            .filter(|(_, d)| !**d)
            .map(|(c, _)| c.clone())
            .collect();
        if let Some(src) = part.source.as_mut() {
            if let sqlparser::ast::SetExpr::Values(v) = src.body.as_mut() {
                v.rows = rows
                    .iter()
                    .map(|&r| {
                        let mut row = all_rows[r].clone();
                        row.content = row
                            .content
                            .into_iter()
                            .zip(mask)
                            .filter(|(_, d)| !**d)
                            .map(|(e, _)| e)
                            .collect();
                        row
                    })
                    .collect();
            }
        }
        statements.push(part);
    }
    let mut parts = statements.into_iter();
    if let Some(first) = parts.next() {
        *ins = first;
    }
    Ok(parts.map(Statement::Insert).collect())
}

/// `DELETE FROM t d USING s WHERE cond` → `DELETE FROM t AS d WHERE EXISTS (SELECT 1
/// FROM s WHERE cond)`: SQLite has no USING.
fn rewrite_delete_using(del: &mut sqlparser::ast::Delete) -> PgResult<()> {
    let Some(using) = del.using.take() else {
        return Ok(());
    };
    let from: Vec<String> = using.iter().map(ToString::to_string).collect();
    let cond = del
        .selection
        .take()
        .map_or_else(|| "true".to_string(), |c| c.to_string());
    let text = format!("EXISTS (SELECT 1 FROM {} WHERE {cond})", from.join(", "));
    let expr = parse_expr(&text)
        .map_err(|e| PgError::unsupported(format!("DELETE … USING of this form ({e})")))?;
    del.selection = Some(expr);
    Ok(())
}

pub(super) fn call_args(name: &str, args: Vec<Expr>) -> Expr {
    let mut f = call(name, Expr::Value(Value::Null.into()));
    if let Expr::Function(func) = &mut f {
        if let FunctionArguments::List(list) = &mut func.args {
            list.args = args
                .into_iter()
                .map(|a| FunctionArg::Unnamed(FunctionArgExpr::Expr(a)))
                .collect();
        }
    }
    f
}

/// `left [NOT] IN (elements of the ARRAY[…] in right)`.
fn in_array(left: &mut Expr, right: &mut Expr, negated: bool) -> Expr {
    let list = match take(right) {
        Expr::Array(a) => a.elem,
        other => vec![other],
    };
    Expr::In {
        expr: Box::new(take(left)),
        target: InTarget::List(list),
        negated,
        global: false,
    }
}

pub(super) fn take(e: &mut Expr) -> Expr {
    std::mem::replace(e, Expr::Value(Value::Null.into()))
}

fn sqlite_cast(inner: Expr, data_type: DataType) -> Expr {
    Expr::Cast {
        kind: CastKind::Cast,
        expr: Box::new(inner),
        data_type,
        format: None,
    }
}

impl VisitorMut for ExprRewriter {
    type Break = ();

    /// `FETCH FIRST n ROWS ONLY` and `OFFSET n ROWS` → `LIMIT n OFFSET m`; PostgreSQL's
    /// NULL ordering made explicit.
    fn post_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
        if let Some(sqlparser::ast::OrderBy {
            kind: sqlparser::ast::OrderByKind::Expressions(items),
            ..
        }) = &mut q.order_by
        {
            postgres_null_order(items);
        }
        if let Some(LimitClause::LimitOffset {
            offset: Some(o), ..
        }) = &mut q.limit_clause
        {
            o.rows = OffsetRows::None;
        }
        if let Some(fetch) = q.fetch.take() {
            if fetch.with_ties || fetch.percent {
                self.error = Some(PgError::unsupported("FETCH … WITH TIES / PERCENT"));
                return ControlFlow::Break(());
            }
            let n = fetch
                .quantity
                .unwrap_or(Expr::Value(Value::Number("1".into(), false).into()));
            match &mut q.limit_clause {
                Some(LimitClause::LimitOffset { limit, .. }) => *limit = Some(n),
                _ => {
                    q.limit_clause = Some(LimitClause::LimitOffset {
                        limit: Some(n),
                        offset: None,
                        limit_by: vec![],
                    })
                }
            }
        }
        ControlFlow::Continue(())
    }

    /// SQLite needs `AS` before a table alias in UPDATE and DELETE; and
    /// `generate_series(…) AS x` becomes a subquery whose column is named `x`, as
    /// PostgreSQL names it (SQLite's series table calls it `value`).
    /// A select over a catalog relation that has no rows here has no rows;
    /// `row_to_json(t)` of a subquery `t` names its columns.
    fn pre_visit_query(&mut self, q: &mut Query) -> ControlFlow<()> {
        super::system::empty_query(q);
        if let SetExpr::Select(sel) = q.body.as_mut() {
            row_to_json_of_subqueries(sel);
            if let Err(e) = set_returning_projection(sel) {
                self.error = Some(e);
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn pre_visit_table_factor(&mut self, t: &mut TableFactor) -> ControlFlow<()> {
        if matches!(
            t,
            TableFactor::Derived { lateral: true, .. }
                | TableFactor::Function { lateral: true, .. }
        ) {
            self.error = Some(
                PgError::unsupported("LATERAL on the SQLite backend")
                    .with_hint("use a correlated subquery in the select list, or a join"),
            );
            return ControlFlow::Break(());
        }
        if let TableFactor::Table {
            name, alias, args, ..
        } = t
        {
            // pg_catalog.pg_class → the connection's emulated pg_class.
            if let Some(rel) = super::system::relation(name).filter(|_| args.is_none()) {
                *name = ObjectName::from(vec![Ident::new(rel)]);
                self.system = true;
            }
            if let Some(a) = alias.as_mut() {
                a.explicit = true;
            }
            if let Some(args) = args {
                // The series inside the rewritten subquery is aliased `__series`.
                let inner = alias.as_ref().is_some_and(|a| a.name.value == "__series");
                let base = object_base_name(name);
                if (base == "generate_series" || base == "unnest") && !inner {
                    let derived = if base == "unnest" {
                        unnest(&args.args, alias.as_ref())
                    } else {
                        generate_series(&args.args, alias.as_ref())
                    };
                    match derived {
                        Ok(derived) => *t = derived,
                        Err(e) => {
                            self.error = Some(e);
                            return ControlFlow::Break(());
                        }
                    }
                }
            }
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, expr: &mut Expr) -> ControlFlow<()> {
        if let Err(e) = self.rewrite(expr) {
            self.error = Some(e);
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    }
}
