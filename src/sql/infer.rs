//! Type hints from the statement's AST: the PostgreSQL type of `$n` parameters and
//! of result expressions, where the statement itself tells (casts, literals,
//! aggregates, comparisons with a column). Column references are resolved later
//! against the side catalog, by the backend that holds it.

use sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    InTarget, LimitClause, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, Statement,
    TableFactor, TableObject, TableWithJoins, UnaryOperator, Value,
};

use crate::types::PgType;

/// What is known of a value's type before the statement runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TypeHint {
    Known(PgType),
    /// A column, `table` being resolved from aliases when the statement names it.
    Column {
        table: Option<String>,
        column: String,
    },
    /// The `index`-th column of `table` (INSERT without a column list).
    ColumnAt {
        table: String,
        index: usize,
    },
    /// The type of parameter `$n` (index `n - 1`).
    Param(usize),
    /// `hint`, or `default` when it resolves to nothing (a literal compared with a
    /// column of a CTE or subquery, which the side catalog does not know).
    Fallback {
        hint: Box<TypeHint>,
        default: PgType,
    },
    /// `sum` (or `avg`) of an expression whose type is known only at execution:
    /// float → float8, numeric → numeric, integers → int8 (avg: numeric).
    Aggregate {
        avg: bool,
        arg: Box<TypeHint>,
    },
    /// `min`/`max`: the argument's type, but text for varchar.
    TextIfVarchar(Box<TypeHint>),
    /// A column of a UNION: the widest of its branches' types.
    Widest(Vec<TypeHint>),
    /// `a - b` of two columns: an interval for timestamps, days for dates, else the
    /// wider numeric type.
    Difference(Box<TypeHint>, Box<TypeHint>),
    /// `array_agg(x)`: an array of x's type.
    ArrayOf(Box<TypeHint>),
    /// `a + b` of two columns: date/timestamp/time plus an interval keeps the
    /// date-time type (a date becomes a timestamp), else the wider numeric type.
    Sum(Box<TypeHint>, Box<TypeHint>),
    /// A numeric printed with `scale` decimals (`x::numeric(10,2)`, `round(x, 2)`).
    Scaled {
        hint: Box<TypeHint>,
        scale: u32,
    },
    Unknown,
}

#[derive(Debug, Default)]
pub struct Hints {
    pub scope: Vec<String>,
    pub params: Vec<TypeHint>,
    pub columns: Option<Vec<TypeHint>>,
    /// The argument type of each `pg_typeof(…)`, in the order [`typeof_calls`]
    /// numbers them.
    pub typeof_args: Vec<TypeHint>,
}

/// Visits the `pg_typeof(x)` calls of a statement in a fixed order (before their
/// arguments), giving each its argument.
pub fn typeof_calls(stmt: &Statement, mut f: impl FnMut(&Expr)) {
    let _ = sqlparser::ast::visit_expressions(stmt, |e| {
        if let Expr::Function(func) = e {
            if object_base_name(&func.name) == "pg_typeof" {
                if let sqlparser::ast::FunctionArguments::List(list) = &func.args {
                    if let [sqlparser::ast::FunctionArg::Unnamed(
                        sqlparser::ast::FunctionArgExpr::Expr(arg),
                    )] = list.args.as_slice()
                    {
                        f(arg);
                    }
                }
            }
        }
        std::ops::ControlFlow::<()>::Continue(())
    });
}

/// Last identifier of an object name, lower-cased (PostgreSQL folds unquoted names;
/// SQLite compares names case-insensitively).
pub fn object_base_name(name: &ObjectName) -> String {
    match name.0.last() {
        Some(ObjectNamePart::Identifier(id)) => id.value.to_ascii_lowercase(),
        _ => name.to_string().to_ascii_lowercase(),
    }
}

/// The scale of `numeric(p, s)` (`s`) or `numeric(p)` (0).
pub fn numeric_scale(dt: &DataType) -> Option<u32> {
    use sqlparser::ast::ExactNumberInfo;
    match dt {
        DataType::Numeric(ExactNumberInfo::PrecisionAndScale(_, s))
        | DataType::Decimal(ExactNumberInfo::PrecisionAndScale(_, s))
        | DataType::Dec(ExactNumberInfo::PrecisionAndScale(_, s)) => u32::try_from(*s).ok(),
        DataType::Numeric(ExactNumberInfo::Precision(_))
        | DataType::Decimal(ExactNumberInfo::Precision(_))
        | DataType::Dec(ExactNumberInfo::Precision(_)) => Some(0),
        _ => None,
    }
}

/// Maps a DDL or cast data type to a PostgreSQL type.
pub fn pg_type_of(dt: &DataType) -> Option<PgType> {
    use sqlparser::ast::TimezoneInfo;
    Some(match dt {
        DataType::Bool | DataType::Boolean => PgType::Bool,
        DataType::SmallInt(_) | DataType::Int2(_) => PgType::Int2,
        DataType::Int(_) | DataType::Integer(_) | DataType::Int4(_) | DataType::MediumInt(_) => {
            PgType::Int4
        }
        DataType::BigInt(_) | DataType::Int8(_) => PgType::Int8,
        DataType::Real | DataType::Float4 => PgType::Float4,
        DataType::Double(_) | DataType::DoublePrecision | DataType::Float8 | DataType::Float(_) => {
            PgType::Float8
        }
        DataType::Numeric(_) | DataType::Decimal(_) | DataType::Dec(_) => PgType::Numeric,
        DataType::Text | DataType::String(_) | DataType::Clob(_) => PgType::Text,
        DataType::Varchar(_)
        | DataType::CharacterVarying(_)
        | DataType::CharVarying(_)
        | DataType::Nvarchar(_) => PgType::Varchar,
        DataType::Char(_) | DataType::Character(_) => PgType::Bpchar,
        DataType::Bytea | DataType::Blob(_) => PgType::Bytea,
        DataType::Date => PgType::Date,
        DataType::Time(_, _) => PgType::Time,
        DataType::Timestamp(_, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => {
            PgType::Timestamptz
        }
        DataType::Timestamp(_, _) | DataType::Datetime(_) => PgType::Timestamp,
        DataType::Interval { .. } => PgType::Interval,
        DataType::JSON => PgType::Json,
        DataType::JSONB => PgType::Jsonb,
        DataType::Uuid => PgType::Uuid,
        DataType::Custom(name, _) => PgType::from_name(&object_base_name(name))?,
        _ => return None,
    })
}

struct Collector {
    /// alias (or table name) → table name
    aliases: Vec<(String, String)>,
    /// Columns whose type the statement itself fixes (`generate_series(…) AS x`,
    /// CTE and subquery outputs): (qualifier, column, type).
    known_columns: Vec<(Option<String>, String, TypeHint)>,
    scope: Vec<String>,
    params: Vec<TypeHint>,
}

impl Collector {
    fn set_param(&mut self, placeholder: &str, hint: TypeHint) {
        let Some(n) = placeholder
            .strip_prefix('$')
            .and_then(|n| n.parse::<usize>().ok())
        else {
            return;
        };
        if n == 0 || n > 65535 {
            return;
        }
        if self.params.len() < n {
            self.params.resize(n, TypeHint::Unknown);
        }
        if self.params[n - 1] == TypeHint::Unknown && !matches!(hint, TypeHint::Param(_)) {
            self.params[n - 1] = hint;
        }
    }

    fn add_tables(&mut self, from: &[TableWithJoins]) {
        for twj in from {
            self.add_factor(&twj.relation);
            for j in &twj.joins {
                self.add_factor(&j.relation);
            }
        }
    }

    fn add_factor(&mut self, f: &TableFactor) {
        if let TableFactor::Table {
            name,
            alias,
            args: Some(args),
            ..
        } = f
        {
            if object_base_name(name) == "generate_series" {
                let column = alias
                    .as_ref()
                    .map(|a| {
                        a.columns
                            .first()
                            .map_or(&a.name.value, |c| &c.name.value)
                            .to_ascii_lowercase()
                    })
                    .unwrap_or_else(|| "generate_series".into());
                let ty = args
                    .args
                    .iter()
                    .filter_map(|a| match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(self.infer(e)),
                        _ => None,
                    })
                    .fold(PgType::Int4, |acc, t| match (acc, t) {
                        // A series of timestamps (an interval step).
                        (PgType::Timestamptz, _) | (_, TypeHint::Known(PgType::Timestamptz)) => {
                            PgType::Timestamptz
                        }
                        (
                            _,
                            TypeHint::Known(PgType::Date | PgType::Timestamp | PgType::Interval),
                        ) => PgType::Timestamp,
                        (acc, TypeHint::Known(t)) => wider(acc, t),
                        (acc, _) => acc,
                    });
                let qual = alias.as_ref().map(|a| a.name.value.to_ascii_lowercase());
                self.known_columns.push((qual, column, TypeHint::Known(ty)));
                return;
            }
        }
        if let TableFactor::Derived {
            subquery, alias, ..
        } = f
        {
            let qual = alias.as_ref().map(|a| a.name.value.to_ascii_lowercase());
            self.learn_columns(subquery, qual);
            return;
        }
        if let TableFactor::Table { name, alias, .. } = f {
            let table = object_base_name(name);
            let key = alias
                .as_ref()
                .map(|a| a.name.value.to_ascii_lowercase())
                .unwrap_or_else(|| table.clone());
            // A CTE under an alias: its known columns under the alias too.
            if key != table {
                let aliased: Vec<_> = self
                    .known_columns
                    .iter()
                    .filter(|(q, _, _)| q.as_deref() == Some(table.as_str()))
                    .map(|(_, c, t)| (Some(key.clone()), c.clone(), t.clone()))
                    .collect();
                self.known_columns.extend(aliased);
            }
            self.aliases.push((key, table.clone()));
            if !self.scope.contains(&table) {
                self.scope.push(table);
            }
        }
    }

    fn column_hint(&self, idents: &[&str]) -> TypeHint {
        let known = match idents {
            [col] => {
                let col = col.to_ascii_lowercase();
                self.known_columns.iter().find(|(_, c, _)| *c == col)
            }
            [.., qual, col] => {
                let (qual, col) = (qual.to_ascii_lowercase(), col.to_ascii_lowercase());
                self.known_columns
                    .iter()
                    .find(|(q, c, _)| q.as_deref() == Some(qual.as_str()) && *c == col)
            }
            [] => None,
        };
        if let Some((_, _, t)) = known {
            return t.clone();
        }
        match idents {
            [col] => TypeHint::Column {
                table: None,
                column: col.to_ascii_lowercase(),
            },
            [.., qual, col] => {
                let qual = qual.to_ascii_lowercase();
                let table = self
                    .aliases
                    .iter()
                    .find(|(a, _)| *a == qual)
                    .map(|(_, t)| t.clone())
                    .unwrap_or(qual);
                TypeHint::Column {
                    table: Some(table),
                    column: col.to_ascii_lowercase(),
                }
            }
            [] => TypeHint::Unknown,
        }
    }

    /// The type of `e` as far as the statement tells.
    fn infer(&self, e: &Expr) -> TypeHint {
        match e {
            Expr::Identifier(id) => self.column_hint(&[id.value.as_str()]),
            Expr::CompoundIdentifier(ids) => {
                let parts: Vec<&str> = ids.iter().map(|i| i.value.as_str()).collect();
                self.column_hint(&parts)
            }
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => TypeHint::Known(if n.contains(['.', 'e', 'E']) {
                    PgType::Numeric
                } else if n.parse::<i32>().is_ok() {
                    PgType::Int4
                } else if n.parse::<i64>().is_ok() {
                    PgType::Int8
                } else {
                    PgType::Numeric
                }),
                Value::SingleQuotedString(_)
                | Value::EscapedStringLiteral(_)
                | Value::DollarQuotedString(_) => TypeHint::Known(PgType::Text),
                Value::Boolean(_) => TypeHint::Known(PgType::Bool),
                Value::Placeholder(p) => p
                    .strip_prefix('$')
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|n| *n >= 1)
                    .map_or(TypeHint::Unknown, |n| TypeHint::Param(n - 1)),
                _ => TypeHint::Unknown,
            },
            Expr::Interval(_) => TypeHint::Known(PgType::Interval),
            Expr::Cast { data_type, .. } => match numeric_scale(data_type) {
                Some(scale) => TypeHint::Scaled {
                    hint: Box::new(TypeHint::Known(PgType::Numeric)),
                    scale,
                },
                None => pg_type_of(data_type).map_or(TypeHint::Unknown, TypeHint::Known),
            },
            Expr::Nested(inner) => self.infer(inner),
            Expr::UnaryOp { op, expr } => match op {
                UnaryOperator::Not => TypeHint::Known(PgType::Bool),
                _ => self.infer(expr),
            },
            Expr::IsNull(_)
            | Expr::IsNotNull(_)
            | Expr::IsTrue(_)
            | Expr::IsFalse(_)
            | Expr::IsNotTrue(_)
            | Expr::IsNotFalse(_)
            | Expr::IsDistinctFrom(_, _)
            | Expr::IsNotDistinctFrom(_, _)
            | Expr::In { .. }
            | Expr::Between { .. }
            | Expr::Like { .. }
            | Expr::ILike { .. }
            | Expr::Exists { .. }
            | Expr::AnyOp { .. }
            | Expr::AllOp { .. } => TypeHint::Known(PgType::Bool),
            Expr::Position { .. } => TypeHint::Known(PgType::Int4),
            Expr::Subquery(q) => match first_select(&q.body) {
                Some(sel) if sel.projection.len() == 1 => {
                    let inner = self.nested(&sel.from);
                    match &sel.projection[0] {
                        SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                            inner.infer(e)
                        }
                        _ => TypeHint::Unknown,
                    }
                }
                _ => TypeHint::Unknown,
            },
            Expr::Ceil { expr, .. } | Expr::Floor { expr, .. } => match self.infer(expr) {
                TypeHint::Known(PgType::Float4 | PgType::Float8) => TypeHint::Known(PgType::Float8),
                _ => TypeHint::Known(PgType::Numeric),
            },
            // extract(epoch|second …) has six decimals in PostgreSQL 15.
            Expr::Extract { field, .. } => {
                let f = field.to_string().to_ascii_lowercase();
                if f == "epoch" || f == "second" {
                    TypeHint::Scaled {
                        hint: Box::new(TypeHint::Known(PgType::Numeric)),
                        scale: 6,
                    }
                } else {
                    TypeHint::Known(PgType::Numeric)
                }
            }
            Expr::TypedString(ts) => {
                pg_type_of(&ts.data_type).map_or(TypeHint::Unknown, TypeHint::Known)
            }
            Expr::Substring { .. } => TypeHint::Known(PgType::Text),
            Expr::BinaryOp { left, op, right } => match op {
                BinaryOperator::Eq
                | BinaryOperator::NotEq
                | BinaryOperator::Lt
                | BinaryOperator::LtEq
                | BinaryOperator::Gt
                | BinaryOperator::GtEq
                | BinaryOperator::And
                | BinaryOperator::Or => TypeHint::Known(PgType::Bool),
                BinaryOperator::StringConcat
                    if json_literal(left).is_some() || json_literal(right).is_some() =>
                {
                    TypeHint::Known(PgType::Jsonb)
                }
                BinaryOperator::StringConcat => TypeHint::Known(PgType::Text),
                BinaryOperator::PGRegexMatch
                | BinaryOperator::PGRegexIMatch
                | BinaryOperator::PGRegexNotMatch
                | BinaryOperator::PGRegexNotIMatch => TypeHint::Known(PgType::Bool),
                BinaryOperator::AtArrow
                | BinaryOperator::ArrowAt
                | BinaryOperator::Question
                | BinaryOperator::QuestionPipe
                | BinaryOperator::QuestionAnd => TypeHint::Known(PgType::Bool),
                BinaryOperator::LongArrow | BinaryOperator::HashLongArrow => {
                    TypeHint::Known(PgType::Text)
                }
                BinaryOperator::Arrow | BinaryOperator::HashArrow => match self.infer(left) {
                    TypeHint::Known(PgType::Json) => TypeHint::Known(PgType::Json),
                    TypeHint::Known(PgType::Jsonb) => TypeHint::Known(PgType::Jsonb),
                    col @ (TypeHint::Column { .. } | TypeHint::ColumnAt { .. }) => col,
                    _ => TypeHint::Known(PgType::Jsonb),
                },
                BinaryOperator::PGExp => match self.infer(left) {
                    TypeHint::Known(PgType::Numeric) => TypeHint::Known(PgType::Numeric),
                    _ => TypeHint::Known(PgType::Float8),
                },
                BinaryOperator::Plus
                | BinaryOperator::Minus
                | BinaryOperator::Multiply
                | BinaryOperator::Divide
                | BinaryOperator::Modulo => {
                    let l = self.infer(left);
                    let r = self.infer(right);
                    let interval = TypeHint::Known(PgType::Interval);
                    let known = |h: &TypeHint| match h {
                        TypeHint::Known(t) => Some(*t),
                        _ => None,
                    };
                    use PgType::*;
                    match (known(&l), op, known(&r)) {
                        (Some(Date), BinaryOperator::Minus, Some(Date)) => {
                            return TypeHint::Known(Int4)
                        }
                        (
                            Some(Date),
                            BinaryOperator::Plus | BinaryOperator::Minus,
                            Some(Int2 | Int4 | Int8),
                        )
                        | (Some(Int2 | Int4 | Int8), BinaryOperator::Plus, Some(Date)) => {
                            return TypeHint::Known(Date)
                        }
                        (
                            Some(Timestamp | Timestamptz),
                            BinaryOperator::Minus,
                            Some(Timestamp | Timestamptz),
                        )
                        | (Some(Interval), BinaryOperator::Multiply | BinaryOperator::Divide, _)
                        | (_, BinaryOperator::Multiply, Some(Interval)) => {
                            return TypeHint::Known(Interval)
                        }
                        // date + interval is a timestamp.
                        (
                            Some(Date),
                            BinaryOperator::Plus | BinaryOperator::Minus,
                            Some(Interval),
                        )
                        | (Some(Interval), BinaryOperator::Plus, Some(Date)) => {
                            return TypeHint::Known(Timestamp)
                        }
                        _ => {}
                    }
                    // timestamp ± interval is the timestamp's type.
                    if matches!(op, BinaryOperator::Plus | BinaryOperator::Minus)
                        && (l == interval || r == interval)
                    {
                        return if l == interval { r } else { l };
                    }
                    if matches!(l, TypeHint::Column { .. }) && matches!(r, TypeHint::Column { .. })
                    {
                        match op {
                            BinaryOperator::Minus => {
                                return TypeHint::Difference(Box::new(l), Box::new(r))
                            }
                            BinaryOperator::Plus => return TypeHint::Sum(Box::new(l), Box::new(r)),
                            _ => {}
                        }
                    }
                    match (&l, &r) {
                        (TypeHint::Known(a), TypeHint::Known(b)) => TypeHint::Known(wider(*a, *b)),
                        (TypeHint::Unknown, _) => r,
                        _ => l,
                    }
                }
                _ => TypeHint::Unknown,
            },
            Expr::Function(f) => {
                let name = object_base_name(&f.name);
                let args: Vec<&Expr> = match &f.args {
                    FunctionArguments::List(list) => list
                        .args
                        .iter()
                        .filter_map(|a| match a {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e),
                            _ => None,
                        })
                        .collect(),
                    _ => Vec::new(),
                };
                let first_arg = args.first().copied();
                let first_type = || first_arg.map_or(TypeHint::Unknown, |a| self.infer(a));
                // Float in, float out; anything else (numeric, integers) gives numeric.
                let float_or_numeric = |default_float: bool| match first_type() {
                    TypeHint::Known(PgType::Float4 | PgType::Float8) => {
                        TypeHint::Known(PgType::Float8)
                    }
                    TypeHint::Known(PgType::Numeric) => TypeHint::Known(PgType::Numeric),
                    _ if default_float => TypeHint::Known(PgType::Float8),
                    _ => TypeHint::Known(PgType::Numeric),
                };
                let widest = || {
                    args.iter()
                        .map(|a| self.infer(a))
                        .fold(TypeHint::Unknown, |acc, t| match (acc, t) {
                            (TypeHint::Known(a), TypeHint::Known(b)) => {
                                TypeHint::Known(wider(a, b))
                            }
                            (TypeHint::Unknown, t) => t,
                            (acc, _) => acc,
                        })
                };
                match name.as_str() {
                    "count" => TypeHint::Known(PgType::Int8),
                    "sum" | "avg" => {
                        let avg = name == "avg";
                        match first_arg.map(|a| self.infer(a)) {
                            Some(TypeHint::Known(PgType::Float4 | PgType::Float8)) => {
                                TypeHint::Known(PgType::Float8)
                            }
                            Some(TypeHint::Known(PgType::Numeric)) => {
                                TypeHint::Known(PgType::Numeric)
                            }
                            Some(arg @ (TypeHint::Column { .. } | TypeHint::ColumnAt { .. })) => {
                                TypeHint::Aggregate {
                                    avg,
                                    arg: Box::new(arg),
                                }
                            }
                            _ if avg => TypeHint::Known(PgType::Numeric),
                            _ => TypeHint::Known(PgType::Int8),
                        }
                    }
                    "row_number" | "rank" | "dense_rank" | "ntile" => TypeHint::Known(PgType::Int8),
                    "percent_rank" | "cume_dist" => TypeHint::Known(PgType::Float8),
                    "lag" | "lead" | "first_value" | "last_value" | "nth_value" => first_type(),
                    // min/max of varchar are text's (varchar has no aggregates).
                    "min" | "max" => first_arg.map_or(TypeHint::Unknown, |a| match self.infer(a) {
                        TypeHint::Known(PgType::Varchar) => TypeHint::Known(PgType::Text),
                        known @ (TypeHint::Known(_) | TypeHint::Unknown) => known,
                        other => TypeHint::TextIfVarchar(Box::new(other)),
                    }),
                    "coalesce" | "abs" => first_arg.map_or(TypeHint::Unknown, |a| self.infer(a)),
                    "age" => TypeHint::Known(PgType::Interval),
                    "array_agg" => match first_arg.map(|a| self.infer(a)) {
                        Some(TypeHint::Known(t)) => TypeHint::Known(PgType::Array(t.oid())),
                        Some(TypeHint::Unknown) | None => {
                            TypeHint::Known(PgType::Array(PgType::Text.oid()))
                        }
                        Some(h) => TypeHint::ArrayOf(Box::new(h)),
                    },
                    // round(x, n) is numeric with n decimals.
                    "round" if args.len() == 2 => match args[1] {
                        Expr::Value(v) => match &v.value {
                            sqlparser::ast::Value::Number(n, _) => match n.parse::<u32>() {
                                Ok(scale) => TypeHint::Scaled {
                                    hint: Box::new(TypeHint::Known(PgType::Numeric)),
                                    scale,
                                },
                                Err(_) => TypeHint::Known(PgType::Numeric),
                            },
                            _ => TypeHint::Known(PgType::Numeric),
                        },
                        _ => TypeHint::Known(PgType::Numeric),
                    },
                    "pg_typeof" => TypeHint::Known(PgType::Regtype),
                    "pg_current_xact_id" => TypeHint::Known(PgType::Int8),
                    "pg_advisory_unlock" | "pg_try_advisory_xact_lock" => {
                        TypeHint::Known(PgType::Bool)
                    }
                    "pg_advisory_lock"
                    | "pg_advisory_xact_lock"
                    | "pg_advisory_unlock_all"
                    | "pg_sleep" => TypeHint::Known(PgType::Void),
                    "now"
                    | "current_timestamp"
                    | "transaction_timestamp"
                    | "statement_timestamp" => TypeHint::Known(PgType::Timestamptz),
                    "current_date" => TypeHint::Known(PgType::Date),
                    "length" | "char_length" | "character_length" | "octet_length" | "strpos"
                    | "position" | "pg_backend_pid" | "jsonb_array_length"
                    | "json_array_length" => TypeHint::Known(PgType::Int4),
                    "bool_and" | "bool_or" | "every" | "pg_try_advisory_lock" => {
                        TypeHint::Known(PgType::Bool)
                    }
                    "lpad" | "rpad" | "initcap" | "split_part" | "left" | "right" | "repeat"
                    | "reverse" | "btrim" | "ltrim" | "rtrim" | "regexp_replace" | "md5"
                    | "encode" | "concat_ws" | "format" | "to_char" | "string_agg" | "chr"
                    | "quote_ident" | "quote_literal" | "translate" => {
                        TypeHint::Known(PgType::Text)
                    }
                    "decode" => TypeHint::Known(PgType::Bytea),
                    "jsonb_build_object" | "jsonb_build_array" | "jsonb_agg"
                    | "jsonb_object_agg" | "to_jsonb" | "jsonb_set" => {
                        TypeHint::Known(PgType::Jsonb)
                    }
                    "json_build_object" | "json_build_array" | "json_agg" | "json_object_agg"
                    | "to_json" | "row_to_json" => TypeHint::Known(PgType::Json),
                    "mod" | "greatest" | "least" => widest(),
                    "sign" => first_type(),
                    "div" => TypeHint::Known(PgType::Numeric),
                    "round" | "trunc" | "ceil" | "ceiling" | "floor" => float_or_numeric(false),
                    "power" | "pow" | "sqrt" | "exp" | "ln" | "log" | "log10" | "cbrt" => {
                        float_or_numeric(true)
                    }
                    "pi" | "date_part" => TypeHint::Known(PgType::Float8),
                    "date_trunc" => match args.get(1).map(|a| self.infer(a)) {
                        Some(TypeHint::Known(PgType::Timestamp)) => {
                            TypeHint::Known(PgType::Timestamp)
                        }
                        _ => TypeHint::Known(PgType::Timestamptz),
                    },
                    "nextval" | "currval" | "setval" | "txid_current" => {
                        TypeHint::Known(PgType::Int8)
                    }
                    "lower" | "upper" | "trim" | "substr" | "substring" | "replace" | "concat"
                    | "version" | "current_database" => TypeHint::Known(PgType::Text),
                    "current_schema" | "current_user" | "session_user" => {
                        TypeHint::Known(PgType::Name)
                    }
                    "jsonb_typeof" | "json_typeof" => TypeHint::Known(PgType::Text),
                    "clock_timestamp" => TypeHint::Known(PgType::Timestamptz),
                    "gen_random_uuid" => TypeHint::Known(PgType::Uuid),
                    "random" => TypeHint::Known(PgType::Float8),
                    _ => TypeHint::Unknown,
                }
            }
            Expr::Case { conditions, .. } => conditions
                .iter()
                .map(|c| self.infer(&c.result))
                .find(|h| *h != TypeHint::Unknown)
                .unwrap_or(TypeHint::Unknown),
            _ => TypeHint::Unknown,
        }
    }

    /// Records parameter hints found anywhere in `e`.
    fn walk(&mut self, e: &Expr) {
        match e {
            Expr::BinaryOp {
                left,
                op:
                    BinaryOperator::Arrow
                    | BinaryOperator::LongArrow
                    | BinaryOperator::HashArrow
                    | BinaryOperator::HashLongArrow,
                right,
            } => {
                // `doc -> $1`: a key or an index, as the parameter itself says.
                self.walk(left);
                self.walk(right);
            }
            Expr::BinaryOp { left, op, right } => {
                // `$1 || x` concatenates text whatever x is.
                let concat = *op == BinaryOperator::StringConcat;
                // Next to a date or an interval in arithmetic, a parameter is a
                // number (days, a factor), not another date.
                let arith = matches!(
                    op,
                    BinaryOperator::Plus | BinaryOperator::Minus | BinaryOperator::Multiply
                );
                let other = |h: TypeHint| match h {
                    TypeHint::Known(PgType::Date | PgType::Interval) if arith => {
                        TypeHint::Known(PgType::Int4)
                    }
                    h => h,
                };
                if let Some(p) = placeholder(left) {
                    let h = if concat {
                        TypeHint::Known(PgType::Text)
                    } else {
                        other(self.infer(right))
                    };
                    self.set_param(p, h);
                }
                if let Some(p) = placeholder(right) {
                    let h = if concat {
                        TypeHint::Known(PgType::Text)
                    } else {
                        other(self.infer(left))
                    };
                    self.set_param(p, h);
                }
                self.walk(left);
                self.walk(right);
            }
            Expr::Cast {
                expr,
                data_type,
                kind,
                ..
            } => {
                if let (Some(p), Some(t), CastKind::Cast | CastKind::DoubleColon) =
                    (placeholder(expr), pg_type_of(data_type), kind)
                {
                    self.set_param(p, TypeHint::Known(t));
                }
                self.walk(expr);
            }
            Expr::In { expr, target, .. } => {
                match target {
                    InTarget::List(list) => {
                        let h = self.infer(expr);
                        for item in list {
                            if let Some(p) = placeholder(item) {
                                self.set_param(p, h.clone());
                            }
                            self.walk(item);
                        }
                    }
                    InTarget::Subquery(q) => self.walk_query(q),
                    _ => {}
                }
                self.walk(expr);
            }
            Expr::Between {
                expr, low, high, ..
            } => {
                let h = self.infer(expr);
                for side in [low, high] {
                    if let Some(p) = placeholder(side) {
                        self.set_param(p, h.clone());
                    }
                    self.walk(side);
                }
                self.walk(expr);
            }
            Expr::Like { expr, pattern, .. } | Expr::ILike { expr, pattern, .. } => {
                if let Some(p) = placeholder(pattern) {
                    self.set_param(p, TypeHint::Known(PgType::Text));
                }
                self.walk(expr);
                self.walk(pattern);
            }
            Expr::Nested(inner)
            | Expr::UnaryOp { expr: inner, .. }
            | Expr::IsNull(inner)
            | Expr::IsNotNull(inner) => self.walk(inner),
            Expr::Function(f) => {
                if let FunctionArguments::List(list) = &f.args {
                    for a in &list.args {
                        if let FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) = a {
                            self.walk(e);
                        }
                    }
                }
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                if let Some(o) = operand {
                    self.walk(o);
                }
                for c in conditions {
                    self.walk(&c.condition);
                    self.walk(&c.result);
                }
                if let Some(e) = else_result {
                    self.walk(e);
                }
            }
            Expr::Subquery(q) | Expr::Exists { subquery: q, .. } => self.walk_query(q),
            _ => {}
        }
    }

    fn walk_query(&mut self, q: &Query) {
        // Columns of CTEs keep the types their defining queries give them.
        if let Some(with) = &q.with {
            for cte in &with.cte_tables {
                self.walk_query(&cte.query);
                let names: Vec<String> = cte
                    .alias
                    .columns
                    .iter()
                    .map(|c| c.name.value.to_ascii_lowercase())
                    .collect();
                self.learn_columns_named(
                    &cte.query,
                    Some(cte.alias.name.value.to_ascii_lowercase()),
                    &names,
                );
            }
        }
        self.walk_set_expr(&q.body);
        if let Some(LimitClause::LimitOffset { limit, offset, .. }) = &q.limit_clause {
            if let Some(p) = limit.as_ref().and_then(placeholder) {
                self.set_param(p, TypeHint::Known(PgType::Int8));
            }
            if let Some(p) = offset.as_ref().and_then(|o| placeholder(&o.value)) {
                self.set_param(p, TypeHint::Known(PgType::Int8));
            }
        }
    }

    fn walk_set_expr(&mut self, body: &SetExpr) {
        match body {
            SetExpr::Select(s) => {
                self.add_tables(&s.from);
                for item in &s.projection {
                    if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } =
                        item
                    {
                        self.walk(e);
                    }
                }
                if let Some(w) = &s.selection {
                    self.walk(w);
                }
                if let Some(h) = &s.having {
                    self.walk(h);
                }
            }
            SetExpr::Query(q) => self.walk_query(q),
            SetExpr::SetOperation { left, right, .. } => {
                self.walk_set_expr(left);
                self.walk_set_expr(right);
            }
            SetExpr::Values(v) => {
                for row in &v.rows {
                    for e in &row.content {
                        self.walk(e);
                    }
                }
            }
            _ => {}
        }
    }

    /// A collector for a subquery over `from`: its own tables, the known columns of
    /// the enclosing query.
    fn nested(&self, from: &[TableWithJoins]) -> Collector {
        let mut inner = Collector {
            known_columns: self.known_columns.clone(),
            aliases: Vec::new(),
            scope: Vec::new(),
            params: Vec::new(),
        };
        inner.add_tables(from);
        inner
    }

    /// Records the known types of a subquery's (or CTE's) output columns by name,
    /// for references to them from the enclosing query.
    fn learn_columns(&mut self, q: &Query, qualifier: Option<String>) {
        self.learn_columns_named(q, qualifier, &[]);
    }

    /// [`Self::learn_columns`], the output columns named by `names` (a CTE's column
    /// list) where given; a VALUES body is typed by its first row.
    fn learn_columns_named(&mut self, q: &Query, qualifier: Option<String>, names: &[String]) {
        let mut body = q.body.as_ref();
        while let SetExpr::SetOperation { left, .. } = body {
            body = left;
        }
        if let SetExpr::Values(v) = body {
            if let Some(row) = v.rows.first() {
                let learned: Vec<_> = row
                    .content
                    .iter()
                    .zip(names)
                    .filter_map(|(e, name)| match self.infer(e) {
                        TypeHint::Unknown => None,
                        h => Some((qualifier.clone(), name.clone(), h)),
                    })
                    .collect();
                self.known_columns.extend(learned);
            }
            return;
        }
        let Some(sel) = first_select(&q.body) else {
            return;
        };
        let inner = self.nested(&sel.from);
        // An unqualified column of the subquery is its own single table's.
        let own = match inner.scope.as_slice() {
            [only] => Some(only.clone()),
            _ => None,
        };
        let qualify = |h: TypeHint| match h {
            TypeHint::Column {
                table: None,
                column,
            } if own.is_some() => TypeHint::Column {
                table: own.clone(),
                column,
            },
            h => h,
        };
        let mut learned = Vec::new();
        for (i, item) in sel.projection.iter().enumerate() {
            let e = match item {
                SelectItem::ExprWithAlias { expr, .. } | SelectItem::UnnamedExpr(expr) => expr,
                _ => continue,
            };
            if let Some(name) = names.get(i) {
                let h = qualify(inner.infer(e));
                if h != TypeHint::Unknown {
                    learned.push((qualifier.clone(), name.clone(), h));
                }
                continue;
            }
            let (name, e) = match item {
                SelectItem::ExprWithAlias { expr, alias } => {
                    (alias.value.to_ascii_lowercase(), expr)
                }
                SelectItem::UnnamedExpr(e @ Expr::Identifier(i)) => {
                    (i.value.to_ascii_lowercase(), e)
                }
                SelectItem::UnnamedExpr(e @ Expr::Function(f)) => (object_base_name(&f.name), e),
                _ => continue,
            };
            let h = qualify(inner.infer(e));
            if h != TypeHint::Unknown {
                learned.push((qualifier.clone(), name, h));
            }
        }
        self.known_columns.extend(learned);
    }

    fn projection(&self, items: &[SelectItem]) -> Option<Vec<TypeHint>> {
        items
            .iter()
            .map(|item| match item {
                SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } => {
                    Some(self.infer(e))
                }
                _ => None,
            })
            .collect()
    }
}

pub fn wider(a: PgType, b: PgType) -> PgType {
    use PgType::*;
    let rank = |t: PgType| match t {
        Int2 => 1,
        Int4 => 2,
        Int8 => 3,
        Numeric => 4,
        Float4 => 5,
        Float8 => 6,
        _ => 0,
    };
    // real combined with an integer is double precision (the integer is cast).
    if matches!(
        (a, b),
        (Float4, Int2 | Int4 | Int8 | Numeric) | (Int2 | Int4 | Int8 | Numeric, Float4)
    ) {
        return Float8;
    }
    if rank(a) == 0 {
        b
    } else if rank(b) == 0 || rank(a) >= rank(b) {
        a
    } else {
        b
    }
}

/// A string literal holding a JSON object or array (`x || '{"a": 1}'` is jsonb).
pub fn json_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            sqlparser::ast::Value::SingleQuotedString(s) => {
                let t = s.trim_start();
                ((t.starts_with('{') || t.starts_with('['))
                    && serde_json::from_str::<serde_json::Value>(s).is_ok())
                .then_some(s.as_str())
            }
            _ => None,
        },
        Expr::Cast { expr, .. } | Expr::Nested(expr) => json_literal(expr),
        _ => None,
    }
}

fn placeholder(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::Placeholder(p) => Some(p.as_str()),
            _ => None,
        },
        Expr::Nested(inner) => placeholder(inner),
        _ => None,
    }
}

fn all_selects<'a>(body: &'a SetExpr, out: &mut Vec<&'a sqlparser::ast::Select>) {
    match body {
        SetExpr::Select(s) => out.push(s),
        SetExpr::Query(q) => all_selects(&q.body, out),
        SetExpr::SetOperation { left, right, .. } => {
            all_selects(left, out);
            all_selects(right, out);
        }
        _ => {}
    }
}

fn first_select(body: &SetExpr) -> Option<&sqlparser::ast::Select> {
    match body {
        SetExpr::Select(s) => Some(s),
        SetExpr::Query(q) => first_select(&q.body),
        SetExpr::SetOperation { left, .. } => first_select(left),
        _ => None,
    }
}

/// Collects scope, parameter hints and result-column hints of one statement.
pub fn collect(stmt: &Statement) -> Hints {
    let mut c = Collector {
        known_columns: Vec::new(),
        aliases: Vec::new(),
        scope: Vec::new(),
        params: Vec::new(),
    };
    let mut columns = None;
    match stmt {
        Statement::Query(q) => {
            c.walk_query(q);
            if let Some(s) = first_select(&q.body) {
                columns = c.projection(&s.projection);
            }
            // UNION/INTERSECT/EXCEPT: each column is the widest of the branches'.
            if matches!(q.body.as_ref(), SetExpr::SetOperation { .. }) {
                let mut selects = Vec::new();
                all_selects(&q.body, &mut selects);
                let branches: Vec<Option<Vec<TypeHint>>> = selects
                    .iter()
                    .map(|s| {
                        let branch = c.nested(&s.from);
                        // An unqualified column is the branch's own table's.
                        let own = match branch.scope.as_slice() {
                            [only] => Some(only.clone()),
                            _ => None,
                        };
                        branch.projection(&s.projection).map(|hints| {
                            hints
                                .into_iter()
                                .map(|h| match h {
                                    TypeHint::Column {
                                        table: None,
                                        column,
                                    } if own.is_some() => TypeHint::Column {
                                        table: own.clone(),
                                        column,
                                    },
                                    h => h,
                                })
                                .collect()
                        })
                    })
                    .collect();
                if let Some(Some(first)) = branches.first() {
                    let n = first.len();
                    if branches
                        .iter()
                        .all(|b| b.as_ref().is_some_and(|b| b.len() == n))
                    {
                        columns = Some(
                            (0..n)
                                .map(|i| {
                                    TypeHint::Widest(
                                        branches.iter().flatten().map(|b| b[i].clone()).collect(),
                                    )
                                })
                                .collect(),
                        );
                    }
                }
            }
        }
        Statement::Insert(ins) => {
            let table = match &ins.table {
                TableObject::TableName(n) => Some(object_base_name(n)),
                _ => None,
            };
            if let Some(t) = &table {
                c.aliases.push((t.clone(), t.clone()));
                if let Some(a) = &ins.table_alias {
                    c.aliases
                        .push((a.alias.value.to_ascii_lowercase(), t.clone()));
                }
                c.scope.push(t.clone());
            }
            if let (Some(table), Some(source)) = (&table, &ins.source) {
                if let SetExpr::Values(v) = source.body.as_ref() {
                    for row in &v.rows {
                        for (i, e) in row.content.iter().enumerate() {
                            if let Some(p) = placeholder(e) {
                                let hint = match ins.columns.get(i) {
                                    Some(col) => TypeHint::Column {
                                        table: Some(table.clone()),
                                        column: object_base_name(col),
                                    },
                                    None if ins.columns.is_empty() => TypeHint::ColumnAt {
                                        table: table.clone(),
                                        index: i,
                                    },
                                    None => TypeHint::Unknown,
                                };
                                c.set_param(p, hint);
                            }
                        }
                    }
                }
                c.walk_query(source);
            }
            if let Some(ret) = &ins.returning {
                columns = c.projection(ret);
            }
        }
        Statement::Update(up) => {
            c.add_tables(std::slice::from_ref(&up.table));
            for a in &up.assignments {
                if let sqlparser::ast::AssignmentTarget::ColumnName(col) = &a.target {
                    if let Some(p) = placeholder(&a.value) {
                        let hint = c.column_hint(&[object_base_name(col).as_str()]);
                        c.set_param(p, hint);
                    }
                }
                c.walk(&a.value);
            }
            if let Some(w) = &up.selection {
                c.walk(w);
            }
            if let Some(ret) = &up.returning {
                columns = c.projection(ret);
            }
        }
        Statement::Delete(del) => {
            let from = match &del.from {
                sqlparser::ast::FromTable::WithFromKeyword(t)
                | sqlparser::ast::FromTable::WithoutKeyword(t) => t,
            };
            c.add_tables(from);
            if let Some(w) = &del.selection {
                c.walk(w);
            }
            if let Some(ret) = &del.returning {
                columns = c.projection(ret);
            }
        }
        _ => {}
    }
    let mut typeof_args = Vec::new();
    typeof_calls(stmt, |arg| typeof_args.push(c.infer(arg)));
    Hints {
        scope: c.scope,
        params: c.params,
        columns,
        typeof_args,
    }
}
