//! The internal do-not-call list: storage, CSV import/export.
//!
//! Owns: the `dnc` table (sql/0006_consent.sql) and its CSV form
//! (`number,source,added_at`, RFC 4180 quoting). Every node caches the list
//! with the catalog ([`crate::catalog::cache`]); the `dnc` table's trigger
//! makes every node reload after a change.
//!
//! Must never: store a number that is not E.164 (a number in another
//! spelling would silently not match a caller), or delete on import.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;

use crate::phone::E164;

/// The source written for an IVR opt-out.
pub const SOURCE_IVR_OPT_OUT: &str = "ivr opt-out";

/// Longest accepted source label.
const MAX_SOURCE_LEN: usize = 200;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DncEntry {
    pub number: String,
    pub source: String,
    pub added_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum DncError {
    #[error("line {line}: {message}")]
    Csv { line: usize, message: String },
    #[error("{0:?} is not a phone number")]
    NotANumber(String),
    #[error("source: {0}")]
    BadSource(String),
    #[error(transparent)]
    Db(#[from] tokio_postgres::Error),
}

/// A number as an operator or a file gives it: E.164 or a NANP national form.
pub fn parse_number(text: &str) -> Result<E164, DncError> {
    E164::normalize(text).ok_or_else(|| DncError::NotANumber(text.to_string()))
}

/// A source label: printable, at most 200 characters.
pub fn parse_source(text: &str) -> Result<String, DncError> {
    crate::compliance::consent::printable(text, MAX_SOURCE_LEN)
        .map(str::to_string)
        .map_err(|e| DncError::BadSource(e.to_string()))
}

/// Splits CSV text into records (RFC 4180: `"` quotes a field, `""` is a
/// quote inside one, quoted fields may hold commas and line breaks). Each
/// record comes with the line it started on.
pub fn csv_records(text: &str) -> Result<Vec<(usize, Vec<String>)>, DncError> {
    let mut out = Vec::new();
    let mut record: Vec<String> = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut field_started_quoted = false;
    let mut line = 1;
    let mut record_line = 1;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    field.push('"');
                }
                '"' => quoted = false,
                '\n' => {
                    line += 1;
                    field.push(c);
                }
                _ => field.push(c),
            }
            continue;
        }
        match c {
            '"' if field.is_empty() && !field_started_quoted => {
                quoted = true;
                field_started_quoted = true;
            }
            '"' => {
                return Err(DncError::Csv {
                    line,
                    message: "quote inside an unquoted field".into(),
                });
            }
            ',' => {
                record.push(std::mem::take(&mut field));
                field_started_quoted = false;
            }
            '\r' if chars.peek() == Some(&'\n') => {}
            '\n' => {
                record.push(std::mem::take(&mut field));
                field_started_quoted = false;
                if !(record.len() == 1 && record[0].trim().is_empty()) {
                    out.push((record_line, std::mem::take(&mut record)));
                }
                record.clear();
                line += 1;
                record_line = line;
            }
            _ => {
                if field_started_quoted {
                    return Err(DncError::Csv {
                        line,
                        message: "text after a closing quote".into(),
                    });
                }
                field.push(c)
            }
        }
    }
    if quoted {
        return Err(DncError::Csv {
            line: record_line,
            message: "unterminated quoted field".into(),
        });
    }
    if !field.is_empty() || field_started_quoted || !record.is_empty() {
        record.push(field);
        out.push((record_line, record));
    }
    Ok(out)
}

/// Parses an import file: `number[,source[,added_at]]` per line, an
/// optional header line starting with `number`. A row without a source gets
/// `default_source`; without a time, now.
pub fn parse_csv(
    text: &str,
    default_source: &str,
    now: DateTime<Utc>,
) -> Result<Vec<DncEntry>, DncError> {
    let mut out = Vec::new();
    for (i, (line, fields)) in csv_records(text)?.into_iter().enumerate() {
        let first = fields.first().map(|f| f.trim()).unwrap_or_default();
        if i == 0 && first.eq_ignore_ascii_case("number") {
            continue;
        }
        let csv_err = |message: String| DncError::Csv { line, message };
        if fields.len() > 3 {
            return Err(csv_err(format!(
                "{} fields; expected number,source,added_at",
                fields.len()
            )));
        }
        let number = parse_number(first).map_err(|e| csv_err(e.to_string()))?;
        let source = match fields.get(1).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            Some(s) => parse_source(s).map_err(|e| csv_err(e.to_string()))?,
            None => default_source.to_string(),
        };
        let added_at = match fields.get(2).map(|s| s.trim()).filter(|s| !s.is_empty()) {
            Some(t) => DateTime::parse_from_rfc3339(t)
                .map_err(|e| csv_err(format!("added_at {t:?}: {e}")))?
                .with_timezone(&Utc),
            None => now,
        };
        out.push(DncEntry {
            number: number.to_string(),
            source,
            added_at,
        });
    }
    Ok(out)
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The list as CSV with a header line (what `parse_csv` reads back).
pub fn render_csv(entries: &[DncEntry]) -> String {
    let mut out = String::from("number,source,added_at\n");
    for e in entries {
        out.push_str(&format!(
            "{},{},{}\n",
            csv_field(&e.number),
            csv_field(&e.source),
            e.added_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ));
    }
    out
}

/// Adds entries; existing numbers keep their first source and time.
/// Returns how many were new.
pub async fn insert(db: &impl GenericClient, entries: &[DncEntry]) -> Result<u64, DncError> {
    if entries.is_empty() {
        return Ok(0);
    }
    let numbers: Vec<&str> = entries.iter().map(|e| e.number.as_str()).collect();
    let sources: Vec<&str> = entries.iter().map(|e| e.source.as_str()).collect();
    let times: Vec<DateTime<Utc>> = entries.iter().map(|e| e.added_at).collect();
    Ok(db
        .execute(
            "INSERT INTO dnc (number, source, added_at)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::timestamptz[])
             ON CONFLICT (number) DO NOTHING",
            &[&numbers, &sources, &times],
        )
        .await?)
}

/// Removes a number; false when it was not on the list.
pub async fn remove(db: &impl GenericClient, number: &E164) -> Result<bool, DncError> {
    Ok(db
        .execute(
            "DELETE FROM dnc WHERE number = $1::text",
            &[&number.as_str()],
        )
        .await?
        > 0)
}

/// The whole list, in number order.
pub async fn list(db: &impl GenericClient) -> Result<Vec<DncEntry>, DncError> {
    let rows = db
        .query(
            "SELECT number, source, added_at FROM dnc ORDER BY number",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(DncEntry {
                number: r.try_get(0)?,
                source: r.try_get(1)?,
                added_at: r.try_get(2)?,
            })
        })
        .collect()
}

/// One number's entry, if listed.
pub async fn get(db: &impl GenericClient, number: &E164) -> Result<Option<DncEntry>, DncError> {
    let row = db
        .query_opt(
            "SELECT number, source, added_at FROM dnc WHERE number = $1::text",
            &[&number.as_str()],
        )
        .await?;
    row.map(|r| {
        Ok(DncEntry {
            number: r.try_get(0)?,
            source: r.try_get(1)?,
            added_at: r.try_get(2)?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quoting_and_round_trip() {
        let now = Utc::now();
        let text = "number,source,added_at\r\n+13125550100,\"list, \"\"A\"\"\",2026-01-01T00:00:00Z\n(312) 555-0101\n\n\"+13125550102\",import\n";
        let got = parse_csv(text, "import", now).expect("parses");
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].source, "list, \"A\"");
        assert_eq!(got[1].number, "+13125550101");
        assert_eq!(got[1].source, "import");
        assert_eq!(got[2].number, "+13125550102");
        let again = parse_csv(&render_csv(&got), "x", now).expect("round trip");
        assert_eq!(again[0], got[0]);
        assert_eq!(again.len(), 3);
    }

    #[test]
    fn csv_errors_name_the_line() {
        let err = parse_csv("+13125550100\nnot-a-number\n", "x", Utc::now()).unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        assert!(parse_csv("\"+13125550100\n", "x", Utc::now()).is_err());
        assert!(parse_csv("+1312\"5550100\n", "x", Utc::now()).is_err());
    }
}
