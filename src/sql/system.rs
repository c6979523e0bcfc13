//! Catalog queries on the SQLite backend: `pg_catalog.*` and `information_schema.*`
//! relation names are mapped onto the connection's emulated catalog (TEMP tables and
//! views, see `backend::sqlite::system_catalog`), and the functions and casts catalog
//! queries use (`format_type`, `pg_get_constraintdef`, `::regclass`…) become SQLite
//! expressions over it.

use sqlparser::ast::{
    BinaryOperator, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, Ident,
    JoinOperator, ObjectName, ObjectNamePart, Query, SelectItem, SetExpr, TableFactor, Value,
};

use super::infer::object_base_name;
use super::rewrite::{call_args, parse_query_expr, pg_column_name};
use crate::error::{PgError, PgResult};
use crate::types::PgType;

/// Catalog relations with rows on this backend (TEMP tables and views).
const RELATIONS: &[&str] = &[
    "pg_namespace",
    "pg_class",
    "pg_attribute",
    "pg_attrdef",
    "pg_index",
    "pg_constraint",
    "pg_sequence",
    "pg_type",
    "pg_description",
    "pg_database",
    "pg_roles",
    "pg_user",
    "pg_authid",
    "pg_am",
    "pg_tablespace",
    "pg_settings",
    "pg_proc",
    "pg_tables",
    "pg_views",
    "pg_indexes",
    "pg_sequences",
];

/// Catalog relations that have no rows on this backend.
pub const EMPTY_RELATIONS: &[&str] = &[
    "pg_policy",
    "pg_statistic_ext",
    "pg_publication",
    "pg_publication_namespace",
    "pg_publication_rel",
    "pg_trigger",
    "pg_inherits",
    "pg_collation",
    "pg_auth_members",
    "pg_rewrite",
    "pg_enum",
    "pg_range",
    "pg_extension",
    "pg_foreign_table",
    "pg_foreign_server",
    "pg_foreign_data_wrapper",
    "pg_partitioned_table",
    "pg_event_trigger",
    "pg_depend",
    "pg_shdescription",
    "pg_init_privs",
    "pg_seclabel",
    "pg_opclass",
    "pg_operator",
    "pg_aggregate",
    "pg_conversion",
    "pg_cast",
    "pg_language",
    "pg_matviews",
    "pg_stat_user_tables",
    "pg_statio_user_tables",
];

/// `information_schema` views on this backend.
const INFORMATION_SCHEMA: &[&str] = &[
    "schemata",
    "tables",
    "views",
    "columns",
    "table_constraints",
    "check_constraints",
    "key_column_usage",
    "referential_constraints",
    "constraint_column_usage",
];

/// The emulated relation a table name refers to, if it is a catalog relation.
pub fn relation(name: &ObjectName) -> Option<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p {
            ObjectNamePart::Identifier(i) => i.value.to_ascii_lowercase(),
            other => other.to_string().to_ascii_lowercase(),
        })
        .collect();
    match parts.as_slice() {
        [schema, rel] if schema == "information_schema" => INFORMATION_SCHEMA
            .contains(&rel.as_str())
            .then(|| format!("information_schema_{rel}")),
        [schema, rel] if schema == "pg_catalog" => Some(rel.clone()),
        [rel] if RELATIONS.contains(&rel.as_str()) || EMPTY_RELATIONS.contains(&rel.as_str()) => {
            Some(rel.clone())
        }
        _ => None,
    }
}

fn is_empty_factor(t: &TableFactor) -> bool {
    matches!(t, TableFactor::Table { name, .. }
        if relation(name).is_some_and(|r| EMPTY_RELATIONS.contains(&r.as_str())))
}

const AGGREGATES: &[&str] = &[
    "count",
    "sum",
    "avg",
    "min",
    "max",
    "bool_and",
    "bool_or",
    "every",
    "array_agg",
    "string_agg",
    "json_agg",
    "jsonb_agg",
];

/// Finds an aggregate call of the select itself (not of a subquery inside it).
#[derive(Default)]
struct AggregateFinder {
    depth: usize,
    found: bool,
}

impl sqlparser::ast::Visitor for AggregateFinder {
    type Break = ();

    fn pre_visit_query(&mut self, _: &Query) -> std::ops::ControlFlow<()> {
        self.depth += 1;
        std::ops::ControlFlow::Continue(())
    }

    fn post_visit_query(&mut self, _: &Query) -> std::ops::ControlFlow<()> {
        self.depth -= 1;
        std::ops::ControlFlow::Continue(())
    }

    fn pre_visit_expr(&mut self, e: &Expr) -> std::ops::ControlFlow<()> {
        if let Expr::Function(f) = e {
            if self.depth == 0
                && f.over.is_none()
                && AGGREGATES.contains(&object_base_name(&f.name).as_str())
            {
                self.found = true;
            }
        }
        std::ops::ControlFlow::Continue(())
    }
}

fn has_aggregate(items: &[SelectItem]) -> bool {
    use sqlparser::ast::Visit;
    let mut finder = AggregateFinder::default();
    for item in items {
        if let SelectItem::UnnamedExpr(e) | SelectItem::ExprWithAlias { expr: e, .. } = item {
            let _ = e.visit(&mut finder);
        }
    }
    finder.found
}

/// A select that inner-joins a catalog relation with no rows has no rows: it becomes
/// `SELECT NULL AS <name>, … FROM <that relation>`, so expressions only PostgreSQL
/// could evaluate (over policies, triggers, publications…) are never translated.
/// Returns whether the whole body is now empty.
fn empty_body(body: &mut SetExpr) -> bool {
    match body {
        SetExpr::Select(sel) => {
            let empty = sel.from.iter().find_map(|twj| {
                if is_empty_factor(&twj.relation) {
                    return Some(twj.relation.clone());
                }
                twj.joins.iter().find_map(|j| {
                    let inner = matches!(
                        j.join_operator,
                        JoinOperator::Join(_)
                            | JoinOperator::Inner(_)
                            | JoinOperator::CrossJoin(_)
                            | JoinOperator::StraightJoin(_)
                    );
                    (inner && is_empty_factor(&j.relation)).then(|| j.relation.clone())
                })
            });
            let Some(relation) = empty else {
                return false;
            };
            if sel.group_by == sqlparser::ast::GroupByExpr::Expressions(vec![], vec![])
                && has_aggregate(&sel.projection)
            {
                return false;
            }
            for item in &mut sel.projection {
                let name = match item {
                    SelectItem::ExprWithAlias { alias, .. } => Some(alias.clone()),
                    SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i.clone()),
                    SelectItem::UnnamedExpr(Expr::CompoundIdentifier(ids)) => ids.last().cloned(),
                    SelectItem::UnnamedExpr(e) => Some(Ident::with_quote(
                        '"',
                        pg_column_name(e).unwrap_or_default(),
                    )),
                    _ => None,
                };
                if let Some(alias) = name {
                    *item = SelectItem::ExprWithAlias {
                        expr: Expr::Value(Value::Null.into()),
                        alias,
                    };
                }
            }
            sel.from = vec![sqlparser::ast::TableWithJoins {
                relation,
                joins: vec![],
            }];
            sel.selection = None;
            sel.having = None;
            sel.group_by = sqlparser::ast::GroupByExpr::Expressions(vec![], vec![]);
            sel.named_window.clear();
            true
        }
        SetExpr::SetOperation { left, right, .. } => {
            let l = empty_body(left);
            let r = empty_body(right);
            l && r
        }
        SetExpr::Query(q) => empty_query(q),
        _ => false,
    }
}

/// Applies [`empty_body`] to a query; an empty result needs no ordering.
pub fn empty_query(q: &mut Query) -> bool {
    let empty = empty_body(&mut q.body);
    if empty {
        q.order_by = None;
    }
    empty
}

fn args(list: &mut FunctionArguments) -> Vec<Expr> {
    match list {
        FunctionArguments::List(l) => l
            .args
            .iter()
            .filter_map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Some(e.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn subquery(sql: String, arg: Expr) -> PgResult<Expr> {
    // `sql` is fixed text from this file with `$x` standing for the argument.
    let text = sql.replace("$x", &format!("({arg})"));
    parse_query_expr(&text)
}

/// `pg_get_*def(oid [, pretty])`: the stored definition, pretty or PostgreSQL's
/// plain form by the flag.
fn definition(oid: Expr, pretty: Option<&Expr>) -> PgResult<Expr> {
    let column = match pretty {
        Some(p) => format!("CASE WHEN ({p}) THEN pretty ELSE def END"),
        None => "def".to_string(),
    };
    parse_query_expr(&format!(
        "(SELECT {column} FROM __unidb_defs WHERE def_oid = ({oid}))"
    ))
}

fn string_literal(e: &Expr) -> Option<&str> {
    match e {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) => Some(s),
            _ => None,
        },
        _ => None,
    }
}

fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The fixed oid of one of PostgreSQL's catalog relations.
fn catalog_oid(name: &str) -> Option<u32> {
    Some(match name {
        "pg_type" => 1247,
        "pg_attribute" => 1249,
        "pg_proc" => 1255,
        "pg_class" => 1259,
        "pg_database" => 1262,
        "pg_attrdef" => 2604,
        "pg_constraint" => 2606,
        "pg_index" => 2610,
        "pg_description" => 2609,
        "pg_namespace" => 2615,
        "pg_am" => 2601,
        "pg_trigger" => 2620,
        "pg_rewrite" => 2618,
        "pg_sequence" => 2224,
        _ => return None,
    })
}

/// Casts to the `reg*` types; `None` when the cast is not one of them.
fn reg_cast(inner: &Expr, data_type: &DataType) -> Option<PgResult<Expr>> {
    let ty = match data_type {
        DataType::Custom(name, _) => object_base_name(name),
        DataType::Regclass => "regclass".to_string(),
        _ => return None,
    };
    let literal = string_literal(inner);
    let unquote = |s: &str| {
        let s = s.rsplit('.').next().unwrap_or(s);
        match s.strip_prefix('"').and_then(|s| s.strip_suffix('"')) {
            Some(q) => q.to_string(),
            None => s.to_ascii_lowercase(),
        }
    };
    Some(match (ty.as_str(), literal) {
        ("regclass", Some(s)) if s.bytes().all(|b| b.is_ascii_digit()) && !s.is_empty() => {
            Ok(Expr::Value(Value::Number(s.to_string(), false).into()))
        }
        // PostgreSQL's own catalog relations have fixed oids.
        ("regclass", Some(s)) if catalog_oid(&unquote(s)).is_some() => Ok(Expr::Value(
            Value::Number(
                catalog_oid(&unquote(s)).unwrap_or_default().to_string(),
                false,
            )
            .into(),
        )),
        ("regclass", Some(s)) => parse_query_expr(&format!(
            "coalesce((SELECT oid FROM pg_class WHERE relname = {}), pg_undefined_relation({}))",
            quote(&unquote(s)),
            quote(s)
        )),
        // An oid prints as its relation's name; a name (text) becomes the oid.
        ("regclass", None) => subquery(
            "CASE WHEN typeof($x) = 'text'
               THEN (SELECT __r.oid FROM pg_class __r WHERE __r.relname = pg_unqualify($x))
               ELSE coalesce((SELECT def FROM __unidb_defs WHERE def_oid = -($x)), $x) END"
                .into(),
            inner.clone(),
        ),
        ("regtype", Some(s)) => match PgType::from_name(&unquote(s)) {
            Some(t) => Ok(Expr::Value(
                Value::Number(t.oid().to_string(), false).into(),
            )),
            None => Err(PgError::new(
                crate::error::code::UNDEFINED_OBJECT,
                format!("type \"{s}\" does not exist"),
            )),
        },
        ("regtype", None) => Ok(call_args(
            "format_type",
            vec![inner.clone(), Expr::Value(Value::Null.into())],
        )),
        ("regnamespace", Some(s)) => parse_query_expr(&format!(
            "(SELECT oid FROM pg_namespace WHERE nspname = {})",
            quote(&unquote(s))
        )),
        ("regnamespace", None) => subquery(
            "CASE $x WHEN 2200 THEN 'public' WHEN 11 THEN 'pg_catalog'
               WHEN 13000 THEN 'information_schema' ELSE $x END"
                .into(),
            inner.clone(),
        ),
        ("regrole", Some(_)) => Ok(Expr::Value(Value::Number("10".into(), false).into())),
        ("regrole", None) => Ok(call_args("pg_session_user", Vec::new())),
        ("regproc" | "regprocedure" | "regoper" | "regoperator" | "regconfig", Some(s)) => {
            let name = s.strip_prefix("pg_catalog.").unwrap_or(s);
            Ok(Expr::Value(
                Value::SingleQuotedString(name.to_string()).into(),
            ))
        }
        ("regproc" | "regprocedure" | "regoper" | "regoperator" | "regconfig", None) => {
            Ok(inner.clone())
        }
        _ => return None,
    })
}

/// Rewrites catalog functions, casts and operators. Returns `Some(true)` when the
/// expression touched the catalog and was rewritten, `Some(false)` when it was
/// rewritten without the catalog, `None` when it is none of these.
pub fn rewrite_expr(expr: &mut Expr) -> PgResult<Option<bool>> {
    match expr {
        Expr::Cast {
            expr: inner,
            data_type,
            ..
        } => match reg_cast(inner, data_type) {
            Some(e) => {
                *expr = e?;
                Ok(Some(true))
            }
            None => Ok(None),
        },
        // `pg_catalog.pg_class.relname` → `pg_class.relname`;
        // `public.t.c` → `t.c`.
        Expr::CompoundIdentifier(ids) if ids.len() == 3 => {
            let schema = ids[0].value.to_ascii_lowercase();
            let relation = match schema.as_str() {
                "pg_catalog" | "information_schema" => {
                    let name = ObjectName(vec![
                        ObjectNamePart::Identifier(ids[0].clone()),
                        ObjectNamePart::Identifier(ids[1].clone()),
                    ]);
                    match super::system::relation(&name) {
                        Some(r) => Ident::new(r),
                        None => return Ok(None),
                    }
                }
                "public" => ids[1].clone(),
                _ => return Ok(None),
            };
            let column = ids[2].clone();
            *expr = Expr::CompoundIdentifier(vec![relation, column]);
            Ok(Some(schema != "public"))
        }
        // `OPERATOR(pg_catalog.~)` is the operator itself.
        Expr::BinaryOp { op, .. } => {
            let BinaryOperator::PGCustomBinaryOperator(parts) = op else {
                return Ok(None);
            };
            *op = match parts.last().map(String::as_str) {
                Some("~") => BinaryOperator::PGRegexMatch,
                Some("~*") => BinaryOperator::PGRegexIMatch,
                Some("!~") => BinaryOperator::PGRegexNotMatch,
                Some("!~*") => BinaryOperator::PGRegexNotIMatch,
                Some("=") => BinaryOperator::Eq,
                Some("<>") => BinaryOperator::NotEq,
                Some("<") => BinaryOperator::Lt,
                Some(">") => BinaryOperator::Gt,
                Some("<=") => BinaryOperator::LtEq,
                Some(">=") => BinaryOperator::GtEq,
                Some("||") => BinaryOperator::StringConcat,
                _ => {
                    return Err(PgError::unsupported(format!(
                        "operator OPERATOR({}) on the SQLite backend",
                        parts.join(".")
                    )))
                }
            };
            Ok(Some(false))
        }
        // `(keys).x` of an expanded array (pgjdbc's `_pg_expandarray`): the element,
        // which the expansion already made the value.
        Expr::CompoundFieldAccess { root, access_chain }
            if matches!(access_chain.as_slice(),
                [sqlparser::ast::AccessExpr::Dot(Expr::Identifier(f))] if f.value.eq_ignore_ascii_case("x")) =>
        {
            *expr = super::rewrite::take(root);
            Ok(Some(false))
        }
        // `array[i]`: an element of an array's text (1-based).
        Expr::CompoundFieldAccess { root, access_chain } => {
            let mut e = super::rewrite::take(root);
            for access in access_chain.iter() {
                // `t.col[i]` arrives as `t` then `.col` then `[i]`.
                if let sqlparser::ast::AccessExpr::Dot(Expr::Identifier(field)) = access {
                    e = match e {
                        Expr::Identifier(base) => {
                            Expr::CompoundIdentifier(vec![base, field.clone()])
                        }
                        Expr::CompoundIdentifier(mut ids) => {
                            ids.push(field.clone());
                            Expr::CompoundIdentifier(ids)
                        }
                        _ => {
                            return Err(PgError::unsupported(
                                "field access of a composite value on the SQLite backend",
                            ))
                        }
                    };
                    continue;
                }
                match access {
                    sqlparser::ast::AccessExpr::Subscript(sqlparser::ast::Subscript::Index {
                        index,
                    }) => e = call_args("pg_array_element", vec![e, index.clone()]),
                    _ => {
                        return Err(PgError::unsupported(
                            "array slices and field access on the SQLite backend",
                        ))
                    }
                }
            }
            *expr = e;
            Ok(Some(false))
        }
        // Catalog queries collate names with the database default: SQLite's BINARY.
        Expr::Collate {
            expr: inner,
            collation,
        } => {
            let c = object_base_name(collation);
            if matches!(c.as_str(), "default" | "c" | "posix") {
                *expr = super::rewrite::take(inner);
                return Ok(Some(false));
            }
            Ok(None)
        }
        // `x = ANY (array_column)`: membership in the array's text.
        Expr::AnyOp {
            left,
            compare_op: BinaryOperator::Eq,
            right,
            ..
        } if !matches!(right.as_ref(), Expr::Array(_)) => {
            *expr = call_args(
                "pg_array_contains",
                vec![super::rewrite::take(right), super::rewrite::take(left)],
            );
            Ok(Some(false))
        }
        Expr::Function(f) => {
            let name = object_base_name(&f.name);
            // ARRAY(SELECT …): the subquery's first column as a PostgreSQL array.
            if name == "array" {
                if let FunctionArguments::Subquery(q) = &mut f.args {
                    let mut q = q.clone();
                    if let SetExpr::Select(sel) = q.body.as_mut() {
                        if let Some(first) = sel.projection.first_mut() {
                            let e = match first {
                                SelectItem::UnnamedExpr(e)
                                | SelectItem::ExprWithAlias { expr: e, .. } => e.clone(),
                                _ => return Err(PgError::unsupported("ARRAY(SELECT *)")),
                            };
                            *first = SelectItem::ExprWithAlias {
                                expr: e,
                                alias: Ident::new("__elem"),
                            };
                        }
                    }
                    *expr = parse_query_expr(&format!(
                        "(SELECT pg_array_agg_text(__elem) FROM ({q}) AS __array)"
                    ))?;
                    return Ok(Some(false));
                }
                return Ok(None);
            }
            let a = args(&mut f.args);
            let arg = |i: usize| a.get(i).cloned().unwrap_or(Expr::Value(Value::Null.into()));
            let truth = Expr::Value(Value::Boolean(true).into());
            let new = match name.as_str() {
                "pg_table_is_visible" | "pg_type_is_visible" | "pg_function_is_visible" => truth,
                n if n.starts_with("has_") && n.ends_with("_privilege") => truth,
                "pg_get_userbyid" => call_args("pg_session_user", Vec::new()),
                "pg_get_expr" => arg(0),
                "pg_partition_ancestors" | "pg_partition_root" => arg(0),
                "pg_relation_is_publishable" => Expr::Value(Value::Boolean(false).into()),
                "pg_get_statisticsobjdef_columns" | "shobj_description" => {
                    Expr::Value(Value::Null.into())
                }
                // The sequence behind a serial column (`t_c_seq`), if there is one.
                "pg_get_serial_sequence" => parse_query_expr(&format!(
                    "(SELECT 'public.' || __s.relname FROM pg_class __s
                      WHERE __s.relkind = 'S' AND __s.relname = pg_unqualify({}) || '_' || ({}) || '_seq')",
                    arg(0),
                    arg(1)
                ))?,
                "to_regtype" => parse_query_expr(&format!(
                    "(SELECT __t.oid FROM pg_type __t WHERE __t.typname = pg_unqualify({}))",
                    arg(0)
                ))?,
                "to_regclass" => parse_query_expr(&format!(
                    "(SELECT __c.relname FROM pg_class __c WHERE __c.relname = pg_unqualify({}))",
                    arg(0)
                ))?,
                "pg_encoding_to_char" => Expr::Value(Value::SingleQuotedString("UTF8".into()).into()),
                "pg_get_constraintdef" | "pg_get_viewdef" | "pg_get_triggerdef"
                | "pg_get_ruledef" => definition(arg(0), a.get(1))?,
                "pg_get_indexdef" if a.len() < 2 => definition(arg(0), None)?,
                "pg_get_indexdef" => parse_query_expr(&format!(
                    "CASE WHEN ({n}) = 0 THEN {whole}
                     ELSE (SELECT __a.attname FROM pg_index __i,
                             json_each('[' || replace(__i.indkey, ' ', ',') || ']') __k
                           JOIN pg_attribute __a ON __a.attrelid = __i.indrelid
                             AND __a.attnum = __k.value
                           WHERE __i.indexrelid = ({x}) AND __k.key = ({n}) - 1) END",
                    whole = definition(arg(0), a.get(2))?,
                    x = arg(0),
                    n = arg(1)
                ))?,
                "obj_description" => {
                    subquery(
                        "(SELECT description FROM pg_description WHERE objoid = $x AND objsubid = 0)"
                            .into(),
                        arg(0),
                    )?
                }
                "col_description" => parse_query_expr(&format!(
                    "(SELECT description FROM pg_description WHERE objoid = ({}) AND objsubid = ({}))",
                    arg(0),
                    arg(1)
                ))?,
                "pg_relation_size" | "pg_table_size" | "pg_total_relation_size"
                | "pg_indexes_size" => Expr::Value(Value::Number("0".into(), false).into()),
                _ => return Ok(None),
            };
            *expr = new;
            Ok(Some(true))
        }
        _ => Ok(None),
    }
}
