//! What one query may cost beyond its rows and time: how deep its expressions nest, how many
//! bytes of string constants it carries, and the memory of the values its functions build.
//!
//! - **Depth.** Planning and evaluating an expression recurse once per level, and a left-deep
//!   chain (`1+1+...`, a long `OR`) parses without recursing, so the parser's own limit does not
//!   see it: 800 terms overflowed a thread's stack. [`check_statement`] measures the parsed
//!   statement (stopping at the limit) before anything plans it.
//! - **Values built by functions.** The memory pool bounds what operators buffer (sorts, joins,
//!   aggregates), not the arrays expressions produce: `repeat(s, 400000000)` over eight rows took
//!   3.6 GB. Every scalar function of the session is wrapped ([`Charged`]): before it runs, the
//!   functions that can build large values from small inputs (repeat, lpad, rpad, replace,
//!   regexp_replace, overlay, concat, concat_ws, and `||`, which [`ConcatOperator`] turns into
//!   a function) reserve their output's size, computed from their arguments; after it runs, any
//!   string or binary output is charged to the query's memory pool for as long as the values
//!   live (the reservation is released when the arrays are dropped). A query over its memory
//!   limit fails with `resources exhausted`, naming the function.
//! - **Constants.** A string constant is copied into every row of a batch where a projection
//!   returns it, so the statement's string constants (outside `IN` lists) may total
//!   [`MAX_CONSTANT_BYTES`].

use std::any::Any;
use std::hash::{Hash, Hasher};
use std::ops::ControlFlow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, make_array};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, FieldRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Result, ScalarValue, exec_err, resources_datafusion_err};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryPool, MemoryReservation};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::simplify::{ExprSimplifyResult, SimplifyContext};
use datafusion::logical_expr::{
    BinaryExpr, ColumnarValue, Expr, LogicalPlan, Operator, ReturnFieldArgs, ScalarFunctionArgs,
    ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{self as sql, Visit, Visitor};

/// How deep expressions may nest. Deeper is refused before planning.
pub(crate) const MAX_DEPTH: usize = 128;

/// How many bytes of string constants a statement may carry (`IN` lists excepted).
pub(crate) const MAX_CONSTANT_BYTES: usize = 64 * 1024;

/// Refuses a statement whose expressions nest deeper than [`MAX_DEPTH`] or whose string
/// constants exceed [`MAX_CONSTANT_BYTES`]. The walk stops at the limit: it recurses at most
/// [`MAX_DEPTH`] expressions deep, whatever the statement.
pub(crate) fn check_statement(statement: &Statement) -> Result<(), String> {
    let mut measure = Measure::default();
    let walked = match statement {
        Statement::Statement(s) => s.visit(&mut measure),
        Statement::Explain(e) => return check_statement(&e.statement),
        Statement::CopyTo(c) => match &c.source {
            datafusion::sql::parser::CopyToSource::Query(q) => q.visit(&mut measure),
            datafusion::sql::parser::CopyToSource::Relation(_) => ControlFlow::Continue(()),
        },
        // Refused later, before anything runs.
        Statement::CreateExternalTable(_) | Statement::Reset(_) => ControlFlow::Continue(()),
    };
    if let ControlFlow::Break(e) = walked {
        return Err(e);
    }
    let constants = measure.constant_bytes.saturating_sub(measure.listed_bytes);
    if constants > MAX_CONSTANT_BYTES {
        return Err(format!(
            "the query's string constants total {constants} bytes; at most {MAX_CONSTANT_BYTES} are allowed (each is copied into every row that returns it)"
        ));
    }
    Ok(())
}

#[derive(Default)]
struct Measure {
    depth: usize,
    constant_bytes: usize,
    /// Bytes of constants that are items of `IN` lists (matched, never copied into rows).
    listed_bytes: usize,
}

fn constant_len(e: &sql::Expr) -> usize {
    match e {
        sql::Expr::Value(v) => match &v.value {
            sql::Value::SingleQuotedString(s)
            | sql::Value::DoubleQuotedString(s)
            | sql::Value::EscapedStringLiteral(s)
            | sql::Value::NationalStringLiteral(s)
            | sql::Value::HexStringLiteral(s)
            | sql::Value::SingleQuotedByteStringLiteral(s)
            | sql::Value::DoubleQuotedByteStringLiteral(s)
            | sql::Value::DollarQuotedString(sql::DollarQuotedString { value: s, .. }) => s.len(),
            _ => 0,
        },
        _ => 0,
    }
}

impl Visitor for Measure {
    type Break = String;

    fn pre_visit_expr(&mut self, expr: &sql::Expr) -> ControlFlow<String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return ControlFlow::Break(format!(
                "the query's expressions nest more than {MAX_DEPTH} levels deep (a long chain of AND, OR or arithmetic counts one level per operator): write it with IN, a CASE or a join, or split it"
            ));
        }
        self.constant_bytes += constant_len(expr);
        if let sql::Expr::InList { list, .. } = expr {
            self.listed_bytes += list.iter().map(constant_len).sum::<usize>();
        }
        ControlFlow::Continue(())
    }

    fn post_visit_expr(&mut self, _: &sql::Expr) -> ControlFlow<String> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Wraps every scalar function of the session so that the values it builds count against the
/// query's memory pool ([`Charged`]), and adds `||` as such a function ([`ConcatOperator`]).
pub(crate) fn charge_functions(ctx: &SessionContext, pool: &Arc<dyn MemoryPool>) {
    let state = ctx.state();
    let batch_rows = state.config().batch_size();
    for f in state.scalar_functions().values() {
        ctx.register_udf(Charged::wrap(f.as_ref().clone(), pool, batch_rows));
    }
    let concat = Charged::wrap(ScalarUDF::new_from_impl(ConcatOperator::new()), pool, batch_rows);
    ctx.add_analyzer_rule(Arc::new(ConcatAsFunction { func: Arc::new(concat) }));
}

/// A scalar function whose results count against the query's memory pool.
#[derive(Debug)]
struct Charged {
    inner: ScalarUDF,
    pool: Arc<dyn MemoryPool>,
    /// Rows per batch: a scalar result stands for that many copies once a projection returns it.
    batch_rows: usize,
    /// How the function's output size is bounded before it runs, if it can amplify its input.
    bound: Option<Bound>,
}

#[derive(Debug, Clone, Copy)]
enum Bound {
    /// `repeat(s, n)`: `len(s) * n`.
    Repeat,
    /// `lpad`/`rpad(s, n [, fill])`: `n` characters of at most four bytes.
    Pad,
    /// `replace(s, from, to)`: `len(s)` plus, per occurrence of `from`, `len(to)`.
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`: at most `len(s) + 1` matches, each
    /// replaced by the replacement's text and its group references (which together copy at most
    /// `len(s)` bytes per reference).
    RegexpReplace,
    /// The sum of every argument's bytes (`concat`, `||`, `overlay`), with `concat_ws`'s
    /// separator counted between each pair.
    Sum { separator_first: bool },
}

impl Bound {
    fn of(name: &str) -> Option<Bound> {
        Some(match name {
            "repeat" => Bound::Repeat,
            "lpad" | "rpad" => Bound::Pad,
            "replace" => Bound::Replace,
            "regexp_replace" => Bound::RegexpReplace,
            "concat" | "overlay" | CONCAT_OPERATOR => Bound::Sum { separator_first: false },
            "concat_ws" => Bound::Sum { separator_first: true },
            _ => return None,
        })
    }

    /// An upper bound of the output's bytes for these arguments (`rows` rows; a scalar argument
    /// stands for that many copies).
    fn bytes(self, args: &[ColumnarValue], rows: usize) -> usize {
        let mut total = 0usize;
        for row in 0..rows {
            let len = |i: usize| args.get(i).map_or(0, |a| str_len(a, row));
            let n = |i: usize| args.get(i).and_then(|a| int_at(a, row)).unwrap_or(0).max(0);
            let row_bytes = match self {
                Bound::Repeat => len(0).saturating_mul(n(1) as usize),
                Bound::Pad => (n(1) as usize).saturating_mul(4),
                Bound::Replace => {
                    let (s, from) =
                        (str_at(&args[0], row), args.get(1).and_then(|a| str_at(a, row)));
                    let occurrences = match (s, from) {
                        (Some(s), Some(from)) => s.matches(from).count(),
                        _ => 0,
                    };
                    len(0).saturating_add(occurrences.saturating_mul(len(2)))
                }
                Bound::RegexpReplace => {
                    let replacement = args.get(2).and_then(|a| str_at(a, row)).unwrap_or("");
                    let references =
                        replacement.bytes().filter(|b| *b == b'$' || *b == b'\\').count();
                    let s = len(0);
                    s.saturating_add((s + 1).saturating_mul(replacement.len()))
                        .saturating_add(references.saturating_mul(s))
                }
                Bound::Sum { separator_first } => {
                    let parts: usize = (0..args.len()).map(len).fold(0, usize::saturating_add);
                    if separator_first && args.len() > 2 {
                        // The separator once per pair of values, on top of itself.
                        parts.saturating_add(len(0).saturating_mul(args.len() - 3))
                    } else {
                        parts
                    }
                }
            };
            total = total.saturating_add(row_bytes);
            if total == usize::MAX {
                break;
            }
        }
        total
    }
}

impl Charged {
    fn wrap(inner: ScalarUDF, pool: &Arc<dyn MemoryPool>, batch_rows: usize) -> ScalarUDF {
        // Wrapping twice would charge twice.
        if is_charged(&inner) {
            return inner;
        }
        let bound = Bound::of(inner.name());
        ScalarUDF::new_from_impl(Charged { inner, pool: pool.clone(), batch_rows, bound })
    }

    fn reservation(&self) -> MemoryReservation {
        MemoryConsumer::new(format!("values built by {}", self.inner.name())).register(&self.pool)
    }

    fn exhausted(&self, bytes: usize) -> datafusion::error::DataFusionError {
        let name = match self.inner.name() {
            CONCAT_OPERATOR => "||".to_string(),
            other => format!("{other}()"),
        };
        resources_datafusion_err!(
            "{name} would build {bytes} bytes of values, more than the query's memory limit leaves ({} of {} bytes in use)",
            self.pool.reserved(),
            match self.pool.memory_limit() {
                datafusion::execution::memory_pool::MemoryLimit::Finite(n) => n,
                _ => usize::MAX,
            }
        )
    }
}

impl PartialEq for Charged {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl Eq for Charged {}

impl Hash for Charged {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.inner.hash(state);
    }
}

impl ScalarUDFImpl for Charged {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn schema_name(&self, args: &[Expr]) -> Result<String> {
        self.inner.inner().schema_name(args)
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        self.inner.return_field_from_args(args)
    }

    fn with_updated_config(&self, config: &ConfigOptions) -> Option<ScalarUDF> {
        let updated = self.inner.inner().with_updated_config(config)?;
        Some(Charged::wrap(updated, &self.pool, self.batch_rows))
    }

    fn is_nullable(&self, args: &[Expr], schema: &dyn datafusion::common::ExprSchema) -> bool {
        #[allow(deprecated)]
        self.inner.inner().is_nullable(args, schema)
    }

    fn short_circuits(&self) -> bool {
        self.inner.short_circuits()
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn output_ordering(
        &self,
        inputs: &[datafusion::logical_expr::sort_properties::ExprProperties],
    ) -> Result<datafusion::logical_expr::sort_properties::SortProperties> {
        self.inner.output_ordering(inputs)
    }

    fn documentation(&self) -> Option<&datafusion::logical_expr::Documentation> {
        self.inner.documentation()
    }

    /// The wrapped function's simplification, with any function it calls wrapped in turn.
    fn simplify(&self, args: Vec<Expr>, info: &SimplifyContext) -> Result<ExprSimplifyResult> {
        match self.inner.simplify(args, info)? {
            ExprSimplifyResult::Simplified(expr) => {
                let (pool, rows) = (&self.pool, self.batch_rows);
                let expr = expr
                    .transform_up(|e| match e {
                        Expr::ScalarFunction(f) if !is_charged(&f.func) => {
                            let func = Arc::new(Charged::wrap(f.func.as_ref().clone(), pool, rows));
                            Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                                func, f.args,
                            ))))
                        }
                        other => Ok(Transformed::no(other)),
                    })?
                    .data;
                Ok(ExprSimplifyResult::Simplified(expr))
            }
            original => Ok(original),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let reservation = self.reservation();
        let scalar_only = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        // A result of scalars is one value standing for a batch of copies.
        let rows = if scalar_only { self.batch_rows } else { args.number_rows };
        if let Some(bound) = self.bound {
            let bytes = if scalar_only {
                bound.bytes(&args.args, 1).saturating_mul(rows)
            } else {
                bound.bytes(&args.args, rows)
            };
            reservation.try_grow(bytes).map_err(|_| self.exhausted(bytes))?;
        }
        let output = self.inner.invoke_with_args(args)?;
        match output {
            ColumnarValue::Array(array) if is_variable_width(array.data_type()) => {
                let bytes = array.get_buffer_memory_size();
                reservation.try_resize(bytes).map_err(|_| self.exhausted(bytes))?;
                Ok(ColumnarValue::Array(charged(array, reservation)?))
            }
            ColumnarValue::Scalar(value) if is_variable_width(&value.data_type()) => {
                let bytes = value.size().saturating_mul(rows);
                reservation.try_resize(bytes).map_err(|_| self.exhausted(bytes))?;
                Ok(ColumnarValue::Scalar(value))
            }
            other => Ok(other),
        }
    }
}

fn is_charged(f: &ScalarUDF) -> bool {
    (f.inner().as_ref() as &dyn Any).is::<Charged>()
}

fn is_variable_width(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Binary
            | DataType::LargeBinary
            | DataType::BinaryView
    )
}

/// A buffer of values and the reservation that counts it: the reservation is released when the
/// last array holding the buffer is dropped.
struct Counted {
    buffer: Buffer,
    _reservation: Arc<MemoryReservation>,
}

impl AsRef<[u8]> for Counted {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_slice()
    }
}

/// The same values, in buffers that hold `reservation` while they live.
fn charged(array: ArrayRef, reservation: MemoryReservation) -> Result<ArrayRef> {
    let reservation = Arc::new(reservation);
    let data = array.to_data();
    let buffers = data
        .buffers()
        .iter()
        .map(|buffer| {
            let counted = Counted { buffer: buffer.clone(), _reservation: reservation.clone() };
            Buffer::from(bytes::Bytes::from_owner(counted))
        })
        .collect();
    let data = data.into_builder().buffers(buffers).build()?;
    Ok(make_array(data))
}

/// A string argument's byte length at `row` (a scalar's at every row); 0 for null or another type.
fn str_len(arg: &ColumnarValue, row: usize) -> usize {
    str_at(arg, row).map_or(0, str::len)
}

fn str_at(arg: &ColumnarValue, row: usize) -> Option<&str> {
    match arg {
        ColumnarValue::Scalar(s) => s.try_as_str().flatten(),
        ColumnarValue::Array(a) if a.is_null(row) => None,
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Utf8 => Some(a.as_string::<i32>().value(row)),
            DataType::LargeUtf8 => Some(a.as_string::<i64>().value(row)),
            DataType::Utf8View => Some(a.as_string_view().value(row)),
            _ => None,
        },
    }
}

fn int_at(arg: &ColumnarValue, row: usize) -> Option<i64> {
    match arg {
        ColumnarValue::Scalar(ScalarValue::Int64(v)) => *v,
        ColumnarValue::Scalar(ScalarValue::Int32(v)) => v.map(i64::from),
        ColumnarValue::Array(a) if a.is_null(row) => None,
        ColumnarValue::Array(a) => match a.data_type() {
            DataType::Int64 => Some(a.as_primitive::<arrow::datatypes::Int64Type>().value(row)),
            DataType::Int32 => {
                Some(i64::from(a.as_primitive::<arrow::datatypes::Int32Type>().value(row)))
            }
            _ => None,
        },
        _ => None,
    }
}

/// The name `||` takes as a function, so that the values it builds are charged like any other.
const CONCAT_OPERATOR: &str = "plinth_concat_operator";

/// `a || b`: null when either side is, else the two side by side (Arrow's kernel, as DataFusion
/// evaluates the operator).
#[derive(Debug, PartialEq, Eq, Hash)]
struct ConcatOperator {
    signature: Signature,
}

impl ConcatOperator {
    fn new() -> Self {
        ConcatOperator { signature: Signature::any(2, Volatility::Immutable) }
    }
}

impl ScalarUDFImpl for ConcatOperator {
    fn name(&self) -> &str {
        CONCAT_OPERATOR
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        match arg_types {
            [left, _] => Ok(left.clone()),
            _ => exec_err!("|| takes two operands"),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = args.args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_)));
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [left, right] = arrays.as_slice() else {
            return exec_err!("|| takes two operands");
        };
        let out = arrow::compute::kernels::concat_elements::concat_elements_dyn(left, right)?;
        if scalar {
            Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
        } else {
            Ok(ColumnarValue::Array(out))
        }
    }
}

/// Rewrites `a || b` of strings or bytes into [`ConcatOperator`] (charged), keeping every
/// column's name.
#[derive(Debug)]
struct ConcatAsFunction {
    func: Arc<ScalarUDF>,
}

impl AnalyzerRule for ConcatAsFunction {
    fn name(&self) -> &str {
        "plinth_concat_as_function"
    }

    fn analyze(&self, plan: LogicalPlan, _: &ConfigOptions) -> Result<LogicalPlan> {
        let func = &self.func;
        plan.transform_up_with_subqueries(|plan| {
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|e| {
                let saved = names.save(&e);
                let rewritten = e.transform_up(|e| match e {
                    Expr::BinaryExpr(BinaryExpr { left, op: Operator::StringConcat, right }) => {
                        Ok(Transformed::yes(Expr::ScalarFunction(ScalarFunction::new_udf(
                            func.clone(),
                            vec![*left, *right],
                        ))))
                    }
                    other => Ok(Transformed::no(other)),
                })?;
                Ok(rewritten.update_data(|e| saved.restore(e)))
            })
        })
        .map(|t| t.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(sql: &str) -> Statement {
        let ctx = SessionContext::new();
        let state = ctx.state();
        state.sql_to_statement(sql, &state.config().options().sql_parser.dialect).expect("parses")
    }

    #[test]
    fn deep_expressions_and_large_constants_are_refused_before_planning() {
        let chain = |n: usize, op: &str| {
            format!("SELECT {}", (0..n).map(|_| "1").collect::<Vec<_>>().join(op))
        };
        assert!(check_statement(&statement(&chain(MAX_DEPTH / 2, "+"))).is_ok());
        for (n, op) in [(800, "+"), (1000, " OR "), (MAX_DEPTH + 1, " AND ")] {
            let e = check_statement(&statement(&chain(n, op))).unwrap_err();
            assert!(e.contains("nest more than"), "{e}");
        }
        let big = "x".repeat(MAX_CONSTANT_BYTES + 1);
        let e = check_statement(&statement(&format!("SELECT '{big}'"))).unwrap_err();
        assert!(e.contains("string constants"), "{e}");
        // Items of an IN list are matched, never copied: they do not count.
        let items: Vec<String> = (0..10_000).map(|i| format!("'item-{i:08}'")).collect();
        let listed = format!("SELECT 1 WHERE 'a' IN ({})", items.join(", "));
        assert!(check_statement(&statement(&listed)).is_ok());
    }

    #[test]
    fn bounds_cover_what_the_functions_build() {
        let s = |v: &str| ColumnarValue::Scalar(ScalarValue::Utf8(Some(v.to_string())));
        let n = |v: i64| ColumnarValue::Scalar(ScalarValue::Int64(Some(v)));
        let cases: Vec<(Bound, Vec<ColumnarValue>, usize)> = vec![
            (Bound::Repeat, vec![s("ab"), n(5)], "ababababab".len()),
            (Bound::Pad, vec![s("ab"), n(5), s("é")], "ééé".len() + 2),
            (Bound::Replace, vec![s("aXbXc"), s("X"), s("yyy")], "ayyybyyyc".len()),
            (Bound::Sum { separator_first: false }, vec![s("ab"), s("cd")], 4),
            (Bound::Sum { separator_first: true }, vec![s(", "), s("a"), s("b"), s("c")], 7),
            (Bound::RegexpReplace, vec![s("abc"), s("(b)"), s("[$1$1]")], "a[bb]c".len()),
        ];
        for (bound, args, built) in cases {
            assert!(
                bound.bytes(&args, 1) >= built,
                "{bound:?}: {} < {built}",
                bound.bytes(&args, 1)
            );
        }
        assert_eq!(Bound::Repeat.bytes(&[s("x"), n(400_000_000)], 8), 3_200_000_000);
    }
}
