//! Export of received data: the objects partners gave this organisation,
//! as one CSV per kind. Shared by `orgsync export` (through
//! `GET /v1/received`) and the web console's Export page, so both write the
//! same columns and neutralise the same cells.

use std::collections::BTreeMap;
use std::io::Write;

use orgsync_protocol::authority::Source;
use orgsync_protocol::model::{Object, ObjectId, OrgId};
use orgsync_protocol::share::ShareId;
use serde_json::Value as Json;

use crate::governance::db::ProvRecord;
use crate::governance::{GovError, Governance};

/// A received copy and the partner it came from.
pub struct Received {
    /// The live object.
    pub object: Object,
    /// The partner that sent it (a share's giver, or a mirror).
    pub from: OrgId,
    /// The organisation that created it.
    pub owner: OrgId,
}

/// Every live object received from a partner (under a share or from a
/// mirror), optionally only from `partner` and only under `share`. Own
/// objects are never included. In provenance-key (object id) order.
pub fn received(
    g: &Governance,
    partner: Option<OrgId>,
    share: Option<ShareId>,
) -> Result<Vec<Received>, GovError> {
    let mut out = Vec::new();
    for kv in g.db().prov.iter() {
        let (k, v) = kv.map_err(|source| GovError::Db {
            op: "read provenance",
            source,
        })?;
        let r: ProvRecord = crate::governance::db::decode("provenance", &v)?;
        let (from, under) = match r.prov.source {
            Source::Share { from, share, .. } => (from, Some(share)),
            Source::Mirror { from } => (from, None),
            Source::Own => continue,
        };
        if partner.is_some_and(|p| p != from) || share.is_some_and(|s| Some(s) != under) {
            continue;
        }
        let Ok(id) = <[u8; 16]>::try_from(k.as_ref()) else {
            continue;
        };
        if let Some(object) = g.store().get(ObjectId(id))?.filter(|o| !o.is_deleted()) {
            out.push(Received {
                object,
                from,
                owner: r.prov.owner,
            });
        }
    }
    Ok(out)
}

/// Objects (as [`crate::json::object_to_json`] renders them) grouped by
/// their `kind`, kinds in name order.
pub fn by_kind(objects: &[Json]) -> BTreeMap<String, Vec<&Json>> {
    let mut out: BTreeMap<String, Vec<&Json>> = BTreeMap::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or("unknown").to_string();
        out.entry(kind).or_default().push(o);
    }
    out
}

/// The columns of a kind's CSV: `id`, then every field seen (custom fields
/// as `custom.NAME`), sorted, then `flags` when any object has one.
pub fn csv_columns(objects: &[&Json]) -> Vec<String> {
    let mut cols = std::collections::BTreeSet::new();
    for o in objects {
        for section in ["fields", "custom"] {
            if let Some(m) = o[section].as_object() {
                for k in m.keys() {
                    cols.insert(if section == "custom" {
                        format!("custom.{k}")
                    } else {
                        k.clone()
                    });
                }
            }
        }
    }
    let mut out = vec!["id".to_string()];
    out.extend(cols);
    if objects
        .iter()
        .any(|o| o["flags"].as_array().is_some_and(|f| !f.is_empty()))
    {
        out.push("flags".into());
    }
    out
}

fn cell(o: &Json, col: &str) -> String {
    let v = match col {
        "id" => &o["id"],
        "flags" => {
            return o["flags"]
                .as_array()
                .map(|f| {
                    let ids: Vec<&str> = f.iter().filter_map(Json::as_str).collect();
                    neutralise_cell(&ids.join(";"))
                })
                .unwrap_or_default();
        }
        c => match c.strip_prefix("custom.") {
            Some(name) => &o["custom"][name],
            None => &o["fields"][c],
        },
    };
    match v {
        Json::Null => String::new(),
        // Text is what a partner typed: neutralised. JSON numbers and
        // booleans are written as they are (a spreadsheet reads "-2" or
        // "1e5" as a number, not a formula).
        Json::String(s) => neutralise_cell(s),
        other => other.to_string(),
    }
}

/// A CSV cell that a spreadsheet will not run as a formula (OWASP "CSV
/// injection"): text starting with `=`, `+`, `-`, `@`, a tab or a carriage
/// return gets a leading `'`. Every cell of an export is quoted as well
/// ([`csv::QuoteStyle::Always`]), so the `'` stays part of the text.
pub fn neutralise_cell(s: &str) -> String {
    match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_string(),
    }
}

/// Writes one kind's objects as CSV to `w`: a header row of
/// [`csv_columns`], then one row per object; every cell quoted and
/// neutralised (header names too: custom field names are a partner's).
pub fn write_csv<W: Write>(w: W, objects: &[&Json]) -> Result<(), csv::Error> {
    let cols = csv_columns(objects);
    let mut w = csv::WriterBuilder::new()
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(w);
    w.write_record(cols.iter().map(|c| neutralise_cell(c)))?;
    for o in objects {
        w.write_record(cols.iter().map(|c| cell(o, c)))?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn csv_neutralises_formulas_and_keeps_numbers() {
        let objs = [
            json!({"id": "a", "kind": "contact", "fields": {"first_name": "=HYPERLINK(\"x\")", "age": -2},
                   "custom": {"@lvl": "+1"}, "flags": ["f1", "f2"]}),
            json!({"id": "b", "kind": "contact", "fields": {"first_name": "Bo"}, "custom": {}, "flags": []}),
        ];
        let refs: Vec<&Json> = objs.iter().collect();
        let mut out = Vec::new();
        write_csv(&mut out, &refs).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "\"id\",\"age\",\"custom.@lvl\",\"first_name\",\"flags\"\n\
             \"a\",\"-2\",\"'+1\",\"'=HYPERLINK(\"\"x\"\")\",\"f1;f2\"\n\
             \"b\",\"\",\"\",\"Bo\",\"\"\n"
        );
    }
}
