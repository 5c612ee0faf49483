//! The sharing-governance subcommands of `orgsync`: share, inbox, request,
//! partner, audit, export.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args as ClapArgs, Subcommand, ValueEnum};
use orgsync_daemon::client::{Client, Method};
use orgsync_keytool::outln;
use serde_json::{json, Value as Json};

use super::{
    array, objects_table, parse_duration, print_json, show, summary, text_of, Failure, Format,
    Table,
};

/// Who the audit log names: `--by`, else `$USER`.
fn who(by: &Option<String>) -> String {
    by.clone()
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "admin".into())
}

/// What a share covers (any number of rules; an object matching one is in).
#[derive(ClapArgs, Clone, Default)]
pub struct Rules {
    /// Contacts carrying this flag (and the flag).
    #[arg(long = "flag", value_name = "FLAG_ID")]
    flags: Vec<String>,
    /// Every object of a kind.
    #[arg(long = "kind", value_name = "KIND")]
    kinds: Vec<String>,
    /// Contacts with this role.
    #[arg(long = "role")]
    roles: Vec<String>,
    /// Organizations of this category with their contacts and transactions.
    #[arg(long = "category")]
    categories: Vec<String>,
    /// One organization with its contacts and transactions.
    #[arg(long = "org", value_name = "ORG_ID")]
    orgs: Vec<String>,
    /// Single objects.
    #[arg(long = "object", value_name = "ID")]
    objects: Vec<String>,
    /// Everything.
    #[arg(long = "all")]
    all: bool,
}

impl Rules {
    fn to_strings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.all {
            out.push("all".to_string());
        }
        out.extend(self.flags.iter().map(|x| format!("flag:{x}")));
        out.extend(self.kinds.iter().map(|x| format!("kind:{x}")));
        out.extend(self.roles.iter().map(|x| format!("role:{x}")));
        out.extend(self.categories.iter().map(|x| format!("category:{x}")));
        out.extend(self.orgs.iter().map(|x| format!("organization:{x}")));
        out.extend(self.objects.iter().map(|x| format!("object:{x}")));
        out
    }
}

fn read_terms(path: &Option<PathBuf>) -> Result<Option<String>, Failure> {
    match path {
        None => Ok(None),
        Some(p) => std::fs::read_to_string(p).map(Some).map_err(|e| {
            Failure::bad_input(format!("cannot read terms file {}: {e}", p.display()))
        }),
    }
}

/// `orgsync share ...`
#[derive(Subcommand)]
pub enum ShareCmd {
    /// Share objects with a partner (or with all child accounts, or by a
    /// one-time code). Objects are sent whole; the partner's admin approves them.
    #[command(
        after_help = "Examples:\n  orgsync share add Globex --flag 0190... --access on-loan\n  orgsync share add Globex --org 0190... --access manager --terms dpa.txt\n  orgsync share add --children --kind organization\n  orgsync share add --code --valid 24h --flag 0190..."
    )]
    Add {
        /// The partner (name or account number).
        partner: Option<String>,
        #[command(flatten)]
        rules: Rules,
        /// Share with every partner marked as a child account.
        #[arg(long)]
        children: bool,
        /// operator, manager, subcontractor or on-loan.
        #[arg(long, default_value = "on-loan")]
        access: String,
        /// A data-protection agreement (text file) to accept before release.
        #[arg(long, value_name = "FILE")]
        terms: Option<PathBuf>,
        /// A label for admins.
        #[arg(long)]
        label: Option<String>,
        /// Release by a one-time share code instead of to a partner.
        #[arg(long)]
        code: bool,
        /// How long the code is valid.
        #[arg(long, default_value = "24h", value_parser = parse_duration)]
        valid: Duration,
        /// Name recorded in the audit log (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Remove rules from a share (all when none given): objects leaving it
    /// are withdrawn from the partner.
    #[command(after_help = "Example:\n  orgsync share remove 3f2a... --flag 0190...")]
    Remove {
        /// The share.
        share: String,
        #[command(flatten)]
        rules: Rules,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
    /// List shares given and received.
    #[command(after_help = "Examples:\n  orgsync share list\n  orgsync share list --json")]
    List,
    /// Revoke a share: stop it and have the partner erase its copies.
    #[command(after_help = "Example:\n  orgsync share revoke 3f2a... --by ada")]
    Revoke {
        /// The share.
        share: String,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
    /// Accept the data-protection agreement of a received share.
    #[command(after_help = "Example:\n  orgsync share accept-terms 3f2a... --by ada")]
    AcceptTerms {
        /// The share.
        share: String,
        /// Name recorded (who accepted).
        #[arg(long)]
        by: Option<String>,
    },
    /// Reject a received share: what it sent and sends is dropped (copies
    /// already approved stay), its terms can no longer be accepted.
    #[command(after_help = "Example:\n  orgsync share reject 3f2a... --by ada")]
    Reject {
        /// The share.
        share: String,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
    /// Redeem a one-time share code given by a partner.
    #[command(after_help = "Example:\n  orgsync share redeem Globex 7-lantern-wagon")]
    Redeem {
        /// The partner that gave the code.
        partner: String,
        /// The code.
        code: String,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
}

/// `orgsync inbox ...`
#[derive(Subcommand)]
pub enum InboxCmd {
    /// Objects from partners waiting for a decision.
    #[command(
        after_help = "Examples:\n  orgsync inbox list\n  orgsync inbox list --partner Globex --json"
    )]
    List {
        /// Only from this partner.
        #[arg(long)]
        partner: Option<String>,
    },
    /// Approve objects: as new local objects, or linked to a local object.
    #[command(
        after_help = "Examples:\n  orgsync inbox approve 0190... --as-new --flag 0190...\n  orgsync inbox approve 0190... --link 0190...\n  orgsync inbox approve --all-from Globex"
    )]
    Approve {
        /// The partner's object ids.
        ids: Vec<String>,
        /// Land this object (and its later updates) on a local object.
        #[arg(long, conflicts_with = "as_new")]
        link: Option<String>,
        /// Keep as a new local object (the default).
        #[arg(long)]
        as_new: bool,
        /// Also attach this local flag.
        #[arg(long)]
        flag: Option<String>,
        /// Every waiting object of this partner.
        #[arg(long)]
        all_from: Option<String>,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
    /// Reject objects: they never appear, nor do their updates.
    #[command(
        after_help = "Examples:\n  orgsync inbox reject 0190... 0190...\n  orgsync inbox reject --all-from Globex"
    )]
    Reject {
        /// The partner's object ids.
        ids: Vec<String>,
        /// Every waiting object of this partner.
        #[arg(long)]
        all_from: Option<String>,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
    /// Approve everything from a partner automatically, or ask each time.
    #[command(
        after_help = "Examples:\n  orgsync inbox policy Globex auto\n  orgsync inbox policy Globex manual"
    )]
    Policy {
        /// The partner.
        partner: String,
        /// auto or manual.
        mode: String,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
}

/// `orgsync request ...`
#[derive(Subcommand)]
pub enum RequestCmd {
    /// Ask a partner for data.
    #[command(
        after_help = "Example:\n  orgsync request send Acme --want category:school --suggest category:school --note 'for the fair'"
    )]
    Send {
        /// The owner.
        partner: String,
        /// What you want (rules: flag:ID, kind:K, role:R, category:C, organization:ID, object:ID).
        #[arg(long = "want", required = true)]
        want: Vec<String>,
        /// Suggested level: objects:ID,ID | organization:ID | category:NAME.
        #[arg(long)]
        suggest: Option<String>,
        /// A note for the owner.
        #[arg(long, default_value = "")]
        note: String,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
    /// Requests sent and received, with their status.
    #[command(after_help = "Example:\n  orgsync request list --json")]
    List,
    /// Show exactly what approving with a level would send.
    #[command(after_help = "Example:\n  orgsync request preview 0190... --level category:school")]
    Preview {
        /// The request.
        id: String,
        /// objects:ID,ID | organization:ID | category:NAME.
        #[arg(long)]
        level: String,
        /// Access type (re-share rules apply to what may be sent).
        #[arg(long, default_value = "on-loan")]
        access: String,
    },
    /// Approve with the actual level and access type.
    #[command(
        after_help = "Example:\n  orgsync request approve 0190... --level category:school --access on-loan --terms dpa.txt"
    )]
    Approve {
        /// The request.
        id: String,
        /// objects:ID,ID | organization:ID | category:NAME.
        #[arg(long)]
        level: String,
        /// operator, manager, subcontractor or on-loan.
        #[arg(long)]
        access: String,
        /// Data-protection agreement to accept first.
        #[arg(long, value_name = "FILE")]
        terms: Option<PathBuf>,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
    /// Reject.
    #[command(
        after_help = "Example:\n  orgsync request reject 0190... --reason 'not ours to share'"
    )]
    Reject {
        /// The request.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
}

/// `orgsync partner ...`
#[derive(Subcommand)]
pub enum PartnerCmd {
    /// Governance settings of every partner.
    #[command(after_help = "Example:\n  orgsync partner settings --json")]
    Settings,
    /// Instances that tried to connect but are not paired (fingerprint,
    /// address, time), not dismissed.
    #[command(
        after_help = "Example:\n  orgsync partner pending   (then check the fingerprint with its admin by phone)"
    )]
    Pending,
    /// Pair with a pending instance: its admin's bundle must carry the
    /// fingerprint you checked with them on the phone.
    #[command(
        after_help = "Example:\n  orgsync partner accept 9F3A-...-77C1 --bundle initech.bundle"
    )]
    Accept {
        /// The fingerprint shown by `orgsync partner pending`.
        fingerprint: String,
        /// The bundle file its admin sent (`orgsync-keytool export`).
        #[arg(long)]
        bundle: PathBuf,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
    /// Hide a pending instance for good (it stays refused).
    #[command(after_help = "Example:\n  orgsync partner dismiss 9F3A-...-77C1")]
    Dismiss {
        /// The fingerprint shown by `orgsync partner pending`.
        fingerprint: String,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
    /// Mark a partner as subcontractor, child account or mirror; map custom fields.
    #[command(
        after_help = "Examples:\n  orgsync partner set Initech --subcontractor true\n  orgsync partner set Globex --map level=grade\n  orgsync partner set acme-backup --mirror true   # run on both instances"
    )]
    Set {
        /// The partner.
        partner: String,
        /// Re-shared subcontractor data may go to it.
        #[arg(long)]
        subcontractor: Option<bool>,
        /// It is one of our child accounts.
        #[arg(long)]
        child: Option<bool>,
        /// It is another copy of our own organisation: keep the same records
        /// both ways, each side may edit the other's. Works only once both
        /// sides have set it.
        #[arg(long)]
        mirror: Option<bool>,
        /// Rename a partner's custom field on linked objects: THEIRS=OURS.
        #[arg(long, value_name = "THEIRS=OURS")]
        map: Vec<String>,
        /// Name recorded in the audit log.
        #[arg(long)]
        by: Option<String>,
    },
}

/// Export formats.
#[derive(Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    /// One CSV file per kind in the output directory.
    Csv,
    /// One JSON object per line.
    Ndjson,
}

async fn call(
    client: &Client,
    method: Method,
    path: &str,
    body: Option<&Json>,
) -> Result<Json, Failure> {
    Ok(client.call(method, path, body).await?)
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn partner_label(p: &Json) -> String {
    if p.is_null() {
        return "(code)".into();
    }
    text_of(&p["name"])
}

/// A Unix-ms time as RFC 3339 text (null when absent).
fn ms_text(v: &Json) -> Json {
    v.as_u64()
        .map_or(Json::Null, |ms| json!(orgsync_daemon::json::rfc3339_ms(ms)))
}

/// Shares given and received in one listing, given first; a DIRECTION
/// column tells them apart. OBJECTS counts what a given share holds, or
/// what a received one brought.
fn shares_table(out: &Json) -> Table {
    let mut t = Table::new(&[
        "DIRECTION",
        "SHARE",
        "PARTNER",
        "RULES",
        "ACCESS",
        "OBJECTS",
        "TERMS",
        "STATE",
    ]);
    let terms = |s: &Json| match (&s["terms"], &s["terms_accepted"]) {
        (Json::Null, _) => Json::Null,
        (_, Json::Null) => json!("to accept"),
        (_, a) => json!(format!("accepted by {}", text_of(&a["by"]))),
    };
    for s in out["given"].as_array().into_iter().flatten() {
        let state = if !s["revoked_ms"].is_null() {
            "revoked"
        } else if !s["terms"].is_null() && s["terms_accepted"].is_null() {
            "terms pending"
        } else if s["partner"].is_null() {
            "code not redeemed"
        } else {
            "flowing"
        };
        t.row(vec![
            json!("given"),
            s["id"].clone(),
            json!(partner_label(&s["partner"])),
            json!(words(&s["rules"])),
            s["access"].clone(),
            s["objects"].clone(),
            terms(s),
            json!(state),
        ]);
    }
    for s in out["received"].as_array().into_iter().flatten() {
        let state = if !s["revoked_ms"].is_null() {
            "revoked"
        } else if !s["rejected"].is_null() {
            "rejected"
        } else {
            "active"
        };
        t.row(vec![
            json!("received"),
            s["id"].clone(),
            json!(partner_label(&s["partner"])),
            Json::Null,
            s["access"].clone(),
            s["received"].clone(),
            terms(s),
            json!(state),
        ]);
    }
    t
}

/// The strings of a JSON array, space-separated.
fn words(v: &Json) -> String {
    v.as_array()
        .map(|w| w.iter().map(text_of).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `orgsync share ...`
pub async fn share(client: &Client, format: Format, cmd: ShareCmd) -> Result<(), Failure> {
    match cmd {
        ShareCmd::Add {
            partner,
            rules,
            children,
            access,
            terms,
            label,
            code,
            valid,
            by,
        } => {
            let body = json!({
                "partner": partner,
                "children": children,
                "rules": rules.to_strings(),
                "access": access,
                "terms": read_terms(&terms)?,
                "label": label,
                "code_valid_secs": code.then_some(valid.as_secs().max(1)),
                "by": who(&by),
            });
            let out = call(client, Method::POST, "/v1/shares", Some(&body)).await?;
            if format.is_json() {
                print_json(&out);
            } else {
                for s in out["shares"].as_array().into_iter().flatten() {
                    outln!(
                        "share {}: {} object(s) sent",
                        text_of(s),
                        text_of(&out["objects"])
                    );
                }
                if let Some(c) = out["code"].as_str() {
                    outln!("one-time share code (shown once): {c}");
                }
            }
        }
        ShareCmd::Remove { share, rules, by } => {
            let body = json!({"rules": rules.to_strings(), "by": who(&by)});
            let out = call(
                client,
                Method::POST,
                &format!("/v1/shares/{}/remove", enc(&share)),
                Some(&body),
            )
            .await?;
            if format.is_json() {
                print_json(&out);
            } else {
                outln!(
                    "share {}: {} object(s) remain",
                    share,
                    text_of(&out["objects"])
                );
            }
        }
        ShareCmd::List => {
            let out = call(client, Method::GET, "/v1/shares", None).await?;
            show(format, &out, || shares_table(&out));
            if format == Format::Table {
                for s in out["received"].as_array().into_iter().flatten() {
                    if let (Some(t), true) = (s["terms"].as_str(), s["terms_accepted"].is_null()) {
                        outln!(
                            "\nTerms of share {} (accept with `orgsync share accept-terms {}`):\n{t}",
                            text_of(&s["id"]),
                            text_of(&s["id"])
                        );
                    }
                }
            }
        }
        ShareCmd::Revoke { share, by } => {
            let body = json!({"by": who(&by)});
            let out = call(
                client,
                Method::POST,
                &format!("/v1/shares/{}/revoke", enc(&share)),
                Some(&body),
            )
            .await?;
            if format.is_json() {
                print_json(&out);
            } else {
                outln!("share {share} revoked; the partner was asked to erase its copies");
            }
        }
        ShareCmd::AcceptTerms { share, by } => {
            let body = json!({"by": who(&by)});
            let out = call(
                client,
                Method::POST,
                &format!("/v1/shares/{}/accept-terms", enc(&share)),
                Some(&body),
            )
            .await?;
            if format.is_json() {
                print_json(&out);
            } else {
                outln!("terms of share {share} accepted; the owner releases the data");
            }
        }
        ShareCmd::Reject { share, by } => {
            let body = json!({"by": who(&by)});
            let out = call(
                client,
                Method::POST,
                &format!("/v1/shares/{}/reject", enc(&share)),
                Some(&body),
            )
            .await?;
            if format.is_json() {
                print_json(&out);
            } else {
                outln!("share {share} rejected; what it sends is dropped");
            }
        }
        ShareCmd::Redeem { partner, code, by } => {
            let body = json!({"partner": partner, "code": code, "by": who(&by)});
            call(client, Method::POST, "/v1/shares/redeem", Some(&body)).await?;
            if !format.is_json() {
                outln!("code sent to {partner}; see `orgsync share list` and `orgsync audit`");
            } else {
                print_json(&json!({"sent": true}));
            }
        }
    }
    Ok(())
}

/// `orgsync inbox ...`
pub async fn inbox(client: &Client, format: Format, cmd: InboxCmd) -> Result<(), Failure> {
    let decide = |ids: Vec<String>,
                  all_from: Option<String>,
                  action: &str,
                  link: Option<String>,
                  flag: Option<String>,
                  by: &Option<String>| {
        json!({"ids": ids, "all_from": all_from, "action": action, "link": link, "flag": flag, "by": who(by)})
    };
    let out = match cmd {
        InboxCmd::List { partner } => {
            let path = match &partner {
                Some(p) => format!("/v1/inbox?partner={}", enc(p)),
                None => "/v1/inbox".into(),
            };
            let out = call(client, Method::GET, &path, None).await?;
            show(format, &out, || {
                let mut t = Table::new(&["ID", "FROM", "KIND", "SUMMARY"]);
                for i in out["items"].as_array().into_iter().flatten() {
                    t.row(vec![
                        i["id"].clone(),
                        json!(partner_label(&i["partner"])),
                        i["kind"].clone(),
                        json!(summary(&i["object"])),
                    ]);
                }
                t
            });
            return Ok(());
        }
        InboxCmd::Approve {
            ids,
            link,
            as_new: _,
            flag,
            all_from,
            by,
        } => {
            let body = decide(ids, all_from, "approve", link, flag, &by);
            call(client, Method::POST, "/v1/inbox/decide", Some(&body)).await?
        }
        InboxCmd::Reject { ids, all_from, by } => {
            let body = decide(ids, all_from, "reject", None, None, &by);
            call(client, Method::POST, "/v1/inbox/decide", Some(&body)).await?
        }
        InboxCmd::Policy { partner, mode, by } => {
            let body = json!({"partner": partner, "mode": mode, "by": who(&by)});
            call(client, Method::POST, "/v1/inbox/policy", Some(&body)).await?
        }
    };
    if format.is_json() {
        print_json(&out);
    } else if let Some(n) = out["decided"].as_u64() {
        outln!("{n} object(s) decided");
    } else {
        outln!(
            "inbox policy of {} is now {}",
            partner_label(&out["partner"]),
            text_of(&out["mode"])
        );
    }
    Ok(())
}

fn requests_table(out: &Json) -> Table {
    let mut t = Table::new(&[
        "REQUEST", "PARTNER", "ROLE", "STATUS", "WANTS", "LEVEL", "ACCESS",
    ]);
    for r in out["requests"].as_array().into_iter().flatten() {
        t.row(vec![
            r["id"].clone(),
            json!(partner_label(&r["partner"])),
            r["role"].clone(),
            r["status"].clone(),
            json!(words(&r["wants"])),
            r["level"].clone(),
            r["access"].clone(),
        ]);
    }
    t
}

/// `orgsync request ...`
pub async fn request(client: &Client, format: Format, cmd: RequestCmd) -> Result<(), Failure> {
    let out = match cmd {
        RequestCmd::Send {
            partner,
            want,
            suggest,
            note,
            by,
        } => {
            let body = json!({"partner": partner, "want": want, "suggest": suggest, "note": note, "by": who(&by)});
            call(client, Method::POST, "/v1/requests", Some(&body)).await?
        }
        RequestCmd::List => {
            let out = call(client, Method::GET, "/v1/requests", None).await?;
            show(format, &out, || requests_table(&out));
            return Ok(());
        }
        RequestCmd::Preview { id, level, access } => {
            let body = json!({"level": level, "access": access});
            let out = call(
                client,
                Method::POST,
                &format!("/v1/requests/{}/preview", enc(&id)),
                Some(&body),
            )
            .await?;
            let objects = array(&out, "objects");
            if format == Format::Table {
                outln!("{} object(s) would be sent:", objects.len());
            }
            show(format, &out, || objects_table(&objects));
            return Ok(());
        }
        RequestCmd::Approve {
            id,
            level,
            access,
            terms,
            by,
        } => {
            let body = json!({"level": level, "access": access, "terms": read_terms(&terms)?, "by": who(&by)});
            call(
                client,
                Method::POST,
                &format!("/v1/requests/{}/approve", enc(&id)),
                Some(&body),
            )
            .await?
        }
        RequestCmd::Reject { id, reason, by } => {
            let body = json!({"reason": reason, "by": who(&by)});
            call(
                client,
                Method::POST,
                &format!("/v1/requests/{}/reject", enc(&id)),
                Some(&body),
            )
            .await?
        }
    };
    if format.is_json() {
        print_json(&out);
    } else {
        outln!(
            "request {}: {}",
            text_of(&out["id"]),
            text_of(&out["status"])
        );
    }
    Ok(())
}

/// `orgsync partner ...`
pub async fn partner(client: &Client, format: Format, cmd: PartnerCmd) -> Result<(), Failure> {
    match cmd {
        PartnerCmd::Settings => {
            let out = call(client, Method::GET, "/v1/governance/partners", None).await?;
            show(format, &out, || {
                let mut t = Table::new(&[
                    "PARTNER",
                    "INBOX",
                    "SUBCONTRACTOR",
                    "CHILD",
                    "MIRROR",
                    "FIELD MAP",
                ]);
                for p in out["partners"].as_array().into_iter().flatten() {
                    let map = p["field_map"].as_object().map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}->{}", text_of(v)))
                            .collect::<Vec<_>>()
                            .join(" ")
                    });
                    t.row(vec![
                        p["name"].clone(),
                        p["inbox"].clone(),
                        p["subcontractor"].clone(),
                        p["child"].clone(),
                        p["mirror"].clone(),
                        map.map_or(Json::Null, Json::String),
                    ]);
                }
                t
            });
        }
        PartnerCmd::Pending => {
            let out = call(client, Method::GET, "/v1/governance/pending", None).await?;
            show(format, &out, || {
                let mut t = Table::new(&["FINGERPRINT", "ADDRESS", "LAST SEEN", "ATTEMPTS"]);
                for p in out["pending"].as_array().into_iter().flatten() {
                    t.row(vec![
                        p["fingerprint"].clone(),
                        p["address"].clone(),
                        ms_text(&p["last_seen_ms"]),
                        p["attempts"].clone(),
                    ]);
                }
                t
            });
        }
        PartnerCmd::Accept {
            fingerprint,
            bundle,
            by,
        } => {
            let text = std::fs::read_to_string(&bundle).map_err(|e| {
                Failure::bad_input(format!("cannot read {}: {e}", bundle.display()))
            })?;
            let body = json!({"fingerprint": fingerprint, "bundle": text, "by": who(&by)});
            let out = call(
                client,
                Method::POST,
                "/v1/governance/pending/accept",
                Some(&body),
            )
            .await?;
            if format.is_json() {
                print_json(&out);
            } else {
                outln!("paired with {}", text_of(&out["paired"]));
            }
        }
        PartnerCmd::Dismiss { fingerprint, by } => {
            let body = json!({"fingerprint": fingerprint, "by": who(&by)});
            let out = call(
                client,
                Method::POST,
                "/v1/governance/pending/dismiss",
                Some(&body),
            )
            .await?;
            if format.is_json() {
                print_json(&out);
            } else {
                outln!("dismissed {fingerprint}");
            }
        }
        PartnerCmd::Set {
            partner,
            subcontractor,
            child,
            mirror,
            map,
            by,
        } => {
            let mut m = BTreeMap::new();
            for pair in &map {
                let (a, b) = pair.split_once('=').ok_or_else(|| {
                    Failure::bad_input(format!("--map takes THEIRS=OURS, not {pair:?}"))
                })?;
                m.insert(a.trim().to_string(), b.trim().to_string());
            }
            let body = json!({"partner": partner, "subcontractor": subcontractor, "child": child, "mirror": mirror, "map": m, "by": who(&by)});
            let out = call(client, Method::POST, "/v1/governance/partners", Some(&body)).await?;
            if format.is_json() {
                print_json(&out);
            } else {
                outln!(
                    "{partner}: subcontractor={} child={} mirror={}",
                    text_of(&out["subcontractor"]),
                    text_of(&out["child"]),
                    text_of(&out["mirror"])
                );
            }
        }
    }
    Ok(())
}

/// `orgsync audit`
pub async fn audit(
    client: &Client,
    format: Format,
    partner: Option<String>,
    since: Option<String>,
) -> Result<(), Failure> {
    let mut q = Vec::new();
    if let Some(p) = &partner {
        q.push(format!("partner={}", enc(p)));
    }
    if let Some(s) = &since {
        let ms = match s.parse::<u64>() {
            Ok(ms) => ms,
            Err(_) => {
                let ago = parse_duration(s).map_err(|e| {
                    Failure::bad_input(format!("--since: {e} (or Unix milliseconds)"))
                })?;
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                now.saturating_sub(ago.as_millis() as u64)
            }
        };
        q.push(format!("since={ms}"));
    }
    let path = if q.is_empty() {
        "/v1/audit".to_string()
    } else {
        format!("/v1/audit?{}", q.join("&"))
    };
    let out = call(client, Method::GET, &path, None).await?;
    show(format, &out, || {
        let mut t = Table::new(&["WHEN", "WHO", "ACTION", "PARTNER", "SHARE", "DETAIL"]);
        for e in out["entries"].as_array().into_iter().flatten() {
            t.row(vec![
                ms_text(&e["at_ms"]),
                // A partner's claim is shown as such, next to the actor.
                match e["claimed_by"].as_str() {
                    Some(c) => json!(format!("{} (claims {c:?})", text_of(&e["who"]))),
                    None => e["who"].clone(),
                },
                e["action"].clone(),
                e["partner_name"].clone(),
                e["share"]
                    .as_str()
                    .map_or(Json::Null, |s| json!(s.chars().take(8).collect::<String>())),
                e["detail"].clone(),
            ]);
        }
        t
    });
    Ok(())
}

fn export_err(path: &Path, e: impl std::fmt::Display) -> Failure {
    Failure {
        code: 1,
        message: format!("cannot write {}: {e}", path.display()),
    }
}

/// Mode of exported files: created with it (never chmod'ed afterwards), so
/// partner data is not readable by other local users at any moment.
const EXPORT_FILE_MODE: u32 = 0o600;

/// `orgsync export`: files are created 0600 without following a link; CSV
/// cells are neutralised against formula injection
/// ([`orgsync_daemon::export::neutralise_cell`]);
/// NDJSON is written verbatim.
pub async fn export(
    client: &Client,
    partner: Option<String>,
    share: Option<String>,
    format: ExportFormat,
    output: PathBuf,
) -> Result<(), Failure> {
    let mut q = Vec::new();
    if let Some(p) = &partner {
        q.push(format!("partner={}", enc(p)));
    }
    if let Some(s) = &share {
        q.push(format!("share={}", enc(s)));
    }
    if q.is_empty() {
        return Err(Failure::bad_input(
            "say what to export: --partner P or --share S",
        ));
    }
    let out = call(
        client,
        Method::GET,
        &format!("/v1/received?{}", q.join("&")),
        None,
    )
    .await?;
    let objects = out["objects"].as_array().cloned().unwrap_or_default();
    let bar = indicatif::ProgressBar::new(objects.len() as u64);
    if objects.len() < 1000 || !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    match format {
        ExportFormat::Ndjson => {
            // NDJSON is data, not a spreadsheet: written verbatim, 0600.
            let file = orgsync_daemon::localfile::create_private(&output, EXPORT_FILE_MODE)
                .map_err(|e| export_err(&output, e))?;
            let mut w = std::io::BufWriter::new(file);
            for o in &objects {
                writeln!(w, "{o}").map_err(|e| export_err(&output, e))?;
                bar.inc(1);
            }
            w.flush().map_err(|e| export_err(&output, e))?;
            bar.finish_and_clear();
            outln!(
                "{} object(s) written to {}",
                objects.len(),
                output.display()
            );
        }
        ExportFormat::Csv => {
            // A new export directory is the owner's only (0700), like its files.
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&output)
                .map_err(|e| export_err(&output, e))?;
            if objects.is_empty() {
                outln!("nothing received to export");
            }
            for (kind, list) in &orgsync_daemon::export::by_kind(&objects) {
                let path = output.join(format!("{kind}.csv"));
                let file = orgsync_daemon::localfile::create_private(&path, EXPORT_FILE_MODE)
                    .map_err(|e| export_err(&path, e))?;
                orgsync_daemon::export::write_csv(file, list).map_err(|e| export_err(&path, e))?;
                bar.inc(list.len() as u64);
                outln!("{}: {} {kind}(s)", path.display(), list.len());
            }
            bar.finish_and_clear();
        }
    }
    Ok(())
}
