//! Ad-hoc read-only SQL over the catalogue (`gl sql "SELECT …"`), rendered as an aligned text
//! table, CSV or JSON.
//!
//! Results travel through Arrow (DuckDB's own export), so every type DuckDB can return —
//! integers, HUGEINT, decimals, doubles, strings, timestamps, lists, structs, maps, enums, NULL —
//! is rendered without a case per type: Arrow's display formatter for text and CSV, arrow-json
//! for JSON (a column arrow-json cannot encode falls back to its text form).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::str::FromStr;
use std::sync::Arc;

use anyhow::Context as _;
use duckdb::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use duckdb::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use duckdb::arrow::error::ArrowError;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};

use super::Catalog;

/// How `gl sql` prints a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OutputFormat {
    /// Column names, a rule, then rows; numbers right-aligned, NULL shown as `NULL`.
    #[default]
    Table,
    /// RFC 4180: header row, fields quoted when needed, NULL as an empty field, `""` for "".
    Csv,
    /// An array of objects, one row per line, keys in column order, NULL as `null`.
    Json,
}

impl FromStr for OutputFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "table" => Ok(Self::Table),
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            other => Err(format!(
                "unknown output format {other:?} (table, csv or json)"
            )),
        }
    }
}

/// Errors specific to `gl sql` (DuckDB's own errors pass through with context).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error(
        "catalogue {0} is open for writing; `gl sql` needs Catalog::open_read_only so that no \
         statement can change it"
    )]
    NotReadOnly(String),
    #[error("fetching the result of {sql:?}: {message}")]
    Fetch { sql: String, message: String },
    #[error("{rule} (catalogue {path}): {why}: {sql}", rule = RULE)]
    Refused {
        path: String,
        why: String,
        sql: String,
    },
}

/// What `gl sql` may do, said in every refusal.
pub const RULE: &str = "`gl sql` is read-only: it runs one query (SELECT, WITH, FROM, VALUES, \
                        TABLE, DESCRIBE, SHOW, SUMMARIZE, or PIVOT … IN (…)) on a snapshot \
                        of the catalogue, reads no file outside the data directory, writes none, \
                        attaches no database, changes no setting and loads no extension";

/// Settings that make the connection safe for arbitrary SQL: no file outside the data
/// directory (the catalogue's) is read (`read_csv('/etc/passwd')`) and none is written (`COPY … TO`,
/// `EXPORT DATABASE` and `ATTACH` are refused before they run, as statements that are not
/// queries), no extension is installed or loaded, and no later statement can undo this.
fn lock_down_sql(data_dir: &str) -> String {
    format!(
        "SET allowed_directories = ['{}/']; SET enable_external_access = false; \
         SET autoinstall_known_extensions = false; SET autoload_known_extensions = false; \
         SET lock_configuration = true;",
        data_dir.trim_end_matches('/').replace('\'', "''")
    )
}

/// Applies [`lock_down_sql`] to the catalogue's database (once: the configuration is then
/// locked).
fn lock_down(cat: &Catalog, path: &str) -> anyhow::Result<()> {
    let conn = cat.connection();
    let locked: String = conn
        .query_row(
            "SELECT current_setting('lock_configuration')::VARCHAR",
            [],
            |r| r.get(0),
        )
        .with_context(|| format!("reading the settings of catalogue {path}"))?;
    if locked != "true" {
        let data_dir = std::path::absolute(cat.path())
            .with_context(|| format!("resolving {path}"))?
            .parent()
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        conn.execute_batch(&lock_down_sql(&data_dir))
            .with_context(|| format!("locking down the settings of catalogue {path}"))?;
    }
    Ok(())
}

/// Refuses `sql` unless it is exactly one query: DuckDB's own parser says so
/// (`json_serialize_sql` serialises SELECT statements only), so a COPY, ATTACH, SET, INSTALL,
/// PRAGMA, CREATE or a second statement hidden after a `;` is refused before anything runs.
fn check_one_query(cat: &Catalog, path: &str, sql: &str) -> anyhow::Result<()> {
    let refused = |why: &str| QueryError::Refused {
        path: path.to_string(),
        why: why.to_string(),
        sql: sql.to_string(),
    };
    let (error, statements, message): (bool, Option<i64>, Option<String>) = cat
        .connection()
        .query_row(
            "SELECT (j->>'error')::BOOLEAN, json_array_length(j->'statements'), \
             j->>'error_message' FROM (SELECT json_serialize_sql(?::VARCHAR)::JSON AS j)",
            [sql],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .with_context(|| format!("parsing SQL on catalogue {path}: {sql}"))?;
    let message = message.unwrap_or_default();
    if error && message.starts_with("Only SELECT") {
        return Err(refused("this statement is not a query").into());
    }
    if error {
        // Not parseable: DuckDB's own error says where.
        cat.connection()
            .prepare(sql)
            .with_context(|| format!("preparing SQL on catalogue {path}: {sql}"))?;
        return Err(refused(&message).into());
    }
    match statements {
        Some(1) => Ok(()),
        _ => Err(refused("give exactly one statement").into()),
    }
}

/// Runs one query on a read-only catalogue and renders its result in `format`.
///
/// Anything else is refused naming [`RULE`]: a statement that is not a query (INSERT, CREATE,
/// COPY, ATTACH, SET, INSTALL, …) before it runs, and access to any other file by the
/// connection's settings, which this locks first (so the connection stays locked after).
pub fn query(cat: &Catalog, sql: &str, format: OutputFormat) -> anyhow::Result<String> {
    let path = cat.path().display().to_string();
    if !cat.is_read_only() {
        return Err(QueryError::NotReadOnly(path).into());
    }
    lock_down(cat, &path)?;
    check_one_query(cat, &path, sql)?;
    // A file or setting the lock-down refused: say the rule, not only DuckDB's words.
    let failed = |doing: &str| {
        let path = &path;
        let doing = doing.to_string();
        move |e: duckdb::Error| {
            let rule = match e.to_string().contains("Permission Error") {
                true => format!(" ({RULE})"),
                false => String::new(),
            };
            anyhow::Error::new(e).context(format!("{doing} SQL on catalogue {path}{rule}: {sql}"))
        }
    };
    let mut stmt = cat.connection().prepare(sql).map_err(failed("preparing"))?;
    let arrow = stmt.query_arrow([]).map_err(failed("running"))?;
    let schema = arrow.get_schema();
    // The duckdb crate panics when a chunk cannot be fetched or converted after execution;
    // turn that into an error rather than aborting `gl`.
    let batches: Vec<RecordBatch> =
        catch_unwind(AssertUnwindSafe(|| arrow.collect())).map_err(|panic| QueryError::Fetch {
            sql: sql.to_string(),
            message: panic_message(panic.as_ref()),
        })?;
    let rendered = match format {
        OutputFormat::Table => render_table(&schema, &batches),
        OutputFormat::Csv => render_csv(&schema, &batches),
        OutputFormat::Json => render_json(&batches),
    };
    rendered.with_context(|| format!("formatting the result of {sql:?}"))
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "the duckdb crate panicked".to_string())
}

/// Text options shared by the table and CSV renderers: DuckDB-like timestamps (space, not `T`);
/// `NULL` inside lists and structs (a top-level NULL is handled by each renderer).
fn text_options() -> FormatOptions<'static> {
    FormatOptions::default()
        .with_null("NULL")
        .with_date_format(Some("%Y-%m-%d"))
        .with_timestamp_format(Some("%Y-%m-%d %H:%M:%S%.f"))
        .with_timestamp_tz_format(Some("%Y-%m-%d %H:%M:%S%.f%:z"))
}

/// Every cell of every column as text (`None` for NULL), column-major.
fn text_columns(
    schema: &SchemaRef,
    batches: &[RecordBatch],
    options: &FormatOptions,
) -> Result<Vec<Vec<Option<String>>>, ArrowError> {
    let mut columns = vec![Vec::new(); schema.fields().len()];
    for batch in batches {
        for (cells, array) in columns.iter_mut().zip(batch.columns()) {
            let formatter = ArrayFormatter::try_new(array.as_ref(), options)?;
            for row in 0..array.len() {
                cells.push(if array.is_null(row) {
                    None
                } else {
                    Some(formatter.value(row).try_to_string()?)
                });
            }
        }
    }
    Ok(columns)
}

fn render_table(schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<String> {
    let columns = text_columns(schema, batches, &text_options())?;
    let names: Vec<String> = schema.fields().iter().map(|f| one_line(f.name())).collect();
    let cells: Vec<Vec<String>> = columns
        .into_iter()
        .map(|col| {
            col.into_iter()
                .map(|c| c.map_or_else(|| "NULL".to_string(), |s| one_line(&s)))
                .collect()
        })
        .collect();
    let widths: Vec<usize> = names
        .iter()
        .zip(&cells)
        .map(|(name, col)| {
            col.iter()
                .map(|c| c.chars().count())
                .chain([name.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let right: Vec<bool> = schema
        .fields()
        .iter()
        .map(|f| f.data_type().is_numeric())
        .collect();
    let n_rows = cells.first().map_or(0, Vec::len);
    let mut out = String::new();
    let mut push_line = |items: &mut dyn Iterator<Item = String>| {
        let line = items.collect::<Vec<_>>().join("  ");
        out.push_str(line.trim_end());
        out.push('\n');
    };
    push_line(
        &mut names
            .iter()
            .enumerate()
            .map(|(i, n)| pad(n, widths[i], right[i])),
    );
    push_line(&mut widths.iter().map(|w| "-".repeat(*w)));
    for row in 0..n_rows {
        push_line(
            &mut cells
                .iter()
                .enumerate()
                .map(|(i, col)| pad(&col[row], widths[i], right[i])),
        );
    }
    Ok(out)
}

/// Newlines and tabs would break the alignment; show them escaped.
fn one_line(s: &str) -> String {
    s.replace('\n', "\\n")
        .replace('\r', "\\r")
        .replace('\t', "\\t")
}

fn pad(s: &str, width: usize, right: bool) -> String {
    let fill = " ".repeat(width.saturating_sub(s.chars().count()));
    if right {
        format!("{fill}{s}")
    } else {
        format!("{s}{fill}")
    }
}

fn render_csv(schema: &SchemaRef, batches: &[RecordBatch]) -> anyhow::Result<String> {
    let columns = text_columns(schema, batches, &text_options())?;
    let mut out = String::new();
    let header: Vec<String> = schema
        .fields()
        .iter()
        .map(|f| csv_field(f.name()))
        .collect();
    out.push_str(&header.join(","));
    out.push('\n');
    let n_rows = columns.first().map_or(0, Vec::len);
    for row in 0..n_rows {
        let fields: Vec<String> = columns
            .iter()
            .map(|col| col[row].as_deref().map_or_else(String::new, csv_field))
            .collect();
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    Ok(out)
}

/// Quotes a field when it is empty (to tell "" from NULL) or holds a delimiter, quote, line
/// break or edge space; quotes inside are doubled.
fn csv_field(s: &str) -> String {
    let needs_quotes = s.is_empty()
        || s.contains([',', '"', '\n', '\r'])
        || s.starts_with(' ')
        || s.ends_with(' ');
    if needs_quotes {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn render_json(batches: &[RecordBatch]) -> anyhow::Result<String> {
    let mut rows: Vec<String> = Vec::new();
    for batch in batches {
        let encoded = match json_lines(batch) {
            Ok(lines) => lines,
            Err(_) => json_lines(&stringify_unencodable(batch)?)?,
        };
        rows.extend(encoded.lines().map(str::to_string));
    }
    if rows.is_empty() {
        return Ok("[]\n".to_string());
    }
    Ok(format!("[\n{}\n]\n", rows.join(",\n")))
}

/// One JSON object per row, nulls written explicitly so every object has every column.
fn json_lines(batch: &RecordBatch) -> Result<String, ArrowError> {
    let mut writer = arrow_json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, arrow_json::writer::LineDelimited>(Vec::new());
    writer.write(batch)?;
    writer.finish()?;
    String::from_utf8(writer.into_inner()).map_err(|e| ArrowError::JsonError(e.to_string()))
}

/// Replaces each column arrow-json cannot encode (e.g. intervals) by its text form.
fn stringify_unencodable(batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
    let schema = batch.schema();
    let mut fields = Vec::with_capacity(batch.num_columns());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let single = RecordBatch::try_new(
            Arc::new(Schema::new(vec![field.as_ref().clone()])),
            vec![array.clone()],
        )?;
        if json_lines(&single).is_ok() {
            fields.push(field.as_ref().clone());
            arrays.push(array.clone());
            continue;
        }
        let formatter = ArrayFormatter::try_new(array.as_ref(), &text_options())?;
        let text: StringArray = (0..array.len())
            .map(|row| {
                (!array.is_null(row))
                    .then(|| formatter.value(row).try_to_string())
                    .transpose()
            })
            .collect::<Result<_, _>>()?;
        fields.push(Field::new(field.name(), DataType::Utf8, true));
        arrays.push(Arc::new(text));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_only_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field(""), "\"\"");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(" edge"), "\" edge\"");
    }

    #[test]
    fn output_format_parses_case_insensitively() {
        assert_eq!("CSV".parse::<OutputFormat>(), Ok(OutputFormat::Csv));
        assert!("xml".parse::<OutputFormat>().is_err());
    }
}
