//! `orgsync`: the admin CLI of the orgsync daemon, a client of its local API.
//!
//! Exit codes: 0 ok, 1 other failure, 2 bad input (including usage
//! errors), 3 not found, 4 daemon not running.

// Standard output goes through `out!`/`outln!`, which end quietly on a
// closed pipe; `println!` would panic there.
#![deny(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use orgsync_daemon::client::{Client, ClientError};
use orgsync_keytool::{out, outln};
use serde_json::{json, Map, Value as Json};

#[path = "orgsync/admin.rs"]
mod admin;
#[path = "orgsync/doctor.rs"]
mod doctor;
#[path = "orgsync/governance.rs"]
mod governance;
#[path = "orgsync/output.rs"]
mod output;

use output::{print_json, show, Format, Table};

/// The clap id of `--output FORMAT` (not `output`: that is the id of the
/// `-o/--output FILE` of the commands that write a file).
const OUTPUT_ID: &str = "output_format";

/// Admin CLI of the orgsync daemon: read and write records, attach résumés,
/// and watch partners sync. Talks to the `orgsyncd` of the instance
/// directory over its local API socket (DIR/api.sock).
#[derive(Parser)]
#[command(
    name = "orgsync",
    version,
    after_help = "Exit codes: 0 ok, 1 failure, 2 bad input, 3 not found, 4 daemon not running.\n\nExamples:\n  orgsync --dir /srv/orgsync status\n  orgsync list contact --output csv > contacts.csv\n  orgsync --output json partners | jq '.partners[].name'"
)]
struct Args {
    /// Instance directory.
    #[arg(long, env = "ORGSYNC_DIR", global = true)]
    dir: Option<PathBuf>,
    /// Same as `--output json`.
    #[arg(long, global = true)]
    json: bool,
    /// table (aligned columns under a header; the default, on a terminal
    /// and in a pipe alike), json (the local API's answer) or csv (a header
    /// row, then one row per record; every cell quoted, formula-like text
    /// prefixed with '). Commands that only confirm a change (put, set,
    /// delete, share add, inbox approve, ...) print their JSON with json and
    /// their one-line sentence otherwise. Accepted before or after the
    /// command, except after the commands whose -o/--output names a file
    /// (get-resume, backup, export): put it before those.
    #[arg(long = "output", id = OUTPUT_ID, value_enum, value_name = "FORMAT")]
    output: Option<Format>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an object and print its id.
    #[command(
        after_help = "Examples:\n  orgsync put contact --set first_name=Ada --set last_name=Lovelace --custom level=senior\n  orgsync put transaction --set type=hire --set date=2024-05-01 --set amount=1200.50 --set contact=0190...\n  orgsync put contact --set first_name=Ada --custom age:=36 --flag 0190...   (NAME:=JSON gives a typed value)"
    )]
    Put {
        /// Kind: contact, organization, transaction, resume or flag.
        kind: String,
        /// A standard field, `name=value` (or `name:=JSON`).
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
        /// A custom field, `name=value` (or `name:=JSON`).
        #[arg(long = "custom", value_name = "NAME=VALUE")]
        custom: Vec<String>,
        /// Attach a flag (contacts).
        #[arg(long = "flag", value_name = "FLAG_ID")]
        flags: Vec<String>,
    },
    /// Update fields of an object.
    #[command(
        after_help = "Examples:\n  orgsync set 0190... --set email=ada@example.org --unset phone\n  orgsync set 0190... --custom level=junior --unset custom.vip --add-flag 0190..."
    )]
    Set {
        /// The object's id.
        id: String,
        /// A standard field to set, `name=value` (or `name:=JSON`).
        #[arg(long = "set", value_name = "FIELD=VALUE")]
        set: Vec<String>,
        /// A custom field to set, `name=value` (or `name:=JSON`).
        #[arg(long = "custom", value_name = "NAME=VALUE")]
        custom: Vec<String>,
        /// A field to clear: `name`, or `custom.name` for a custom field.
        #[arg(long = "unset", value_name = "FIELD")]
        unset: Vec<String>,
        /// Attach a flag.
        #[arg(long = "add-flag", value_name = "FLAG_ID")]
        add_flags: Vec<String>,
        /// Detach a flag.
        #[arg(long = "remove-flag", value_name = "FLAG_ID")]
        remove_flags: Vec<String>,
    },
    /// Show one object.
    #[command(after_help = "Example:\n  orgsync get 0190a1b2-3c4d-7e5f-8a9b-0c1d2e3f4a5b --json")]
    Get {
        /// The object's id.
        id: String,
    },
    /// List objects, of one kind if given.
    #[command(after_help = "Examples:\n  orgsync list\n  orgsync list contact --json")]
    List {
        /// Kind to list.
        kind: Option<String>,
    },
    /// Delete an object (partners receive the deletion).
    #[command(after_help = "Example:\n  orgsync delete 0190a1b2-3c4d-7e5f-8a9b-0c1d2e3f4a5b")]
    Delete {
        /// The object's id.
        id: String,
    },
    /// Attach a résumé file to a contact and print the résumé's id.
    #[command(
        after_help = "The daemon reads the file itself: it must be a regular file owned by the daemon's user. Symbolic links, directories, FIFOs and other users' files are refused (copy the file instead).\n\nExample:\n  orgsync attach-resume 0190a1b2-3c4d-7e5f-8a9b-0c1d2e3f4a5b ./ada-cv.pdf"
    )]
    AttachResume {
        /// The contact's id.
        contact: String,
        /// The file: a regular file owned by the daemon's user, not a link.
        file: PathBuf,
    },
    /// Write a résumé's content to a file.
    #[command(
        after_help = "Example:\n  orgsync get-resume 0190a1b2-3c4d-7e5f-8a9b-0c1d2e3f4a5b -o ada-cv.pdf"
    )]
    GetResume {
        /// The résumé's id.
        id: String,
        /// Where to write it.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
    /// List partners.
    #[command(after_help = "Example:\n  orgsync partners --json")]
    Partners,
    /// Show this instance and each partner's sync state.
    #[command(after_help = "Example:\n  orgsync status")]
    Status,
    /// Follow changes as they are committed, one line each (Ctrl-C to stop).
    #[command(
        after_help = "One line per change: SEQ ORIGIN KIND ID [deleted]; with --output json the event objects, one a line; with --output csv a SEQ,ORIGIN,KIND,ID,DELETED header then one row per change (a \"fell behind\" notice goes to stderr).\n\nExamples:\n  orgsync watch\n  orgsync watch --after 0 --json   (replay the local log first)\n  orgsync watch --output csv >> changes.csv"
    )]
    Watch {
        /// Replay local log entries after this sequence number first.
        #[arg(long)]
        after: Option<u64>,
    },
    /// Wait until every partner has acknowledged every local change.
    #[command(after_help = "Example:\n  orgsync wait-synced --timeout 2m")]
    WaitSynced {
        /// Give up after this long (e.g. 500ms, 60s, 2m, 1h).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Check this instance: file modes, disk, port, daemon, partners,
    /// pending peers, inbox; one line each, with the fix.
    #[command(
        after_help = "Exit status 1 when a check fails (FAIL); warnings (WARN) alone exit 0. File modes, disk and port are checked without the daemon.\n\nExamples:\n  orgsync doctor\n  orgsync doctor --json | jq '.[] | select(.status != \"OK\")'"
    )]
    Doctor,
    /// Print the daemon's Prometheus metrics.
    #[command(after_help = "Example:\n  orgsync metrics")]
    Metrics,
    /// Outgoing shares: what each partner receives (add, remove, list,
    /// revoke), terms of received shares, share codes.
    #[command(
        after_help = "Examples:\n  orgsync share list\n  orgsync share add Globex --flag 0190... --access on-loan\n  orgsync share revoke 3f2a..."
    )]
    #[command(subcommand)]
    Share(governance::ShareCmd),
    /// Objects from partners waiting for approval.
    #[command(
        after_help = "Examples:\n  orgsync inbox list\n  orgsync inbox approve 0190... --as-new\n  orgsync inbox policy Globex auto"
    )]
    #[command(subcommand)]
    Inbox(governance::InboxCmd),
    /// Share requests between partners.
    #[command(
        after_help = "Examples:\n  orgsync request send Acme --want category:school\n  orgsync request list\n  orgsync request approve 0190... --level category:school --access on-loan"
    )]
    #[command(subcommand)]
    Request(governance::RequestCmd),
    /// Governance settings of partners (subcontractor, child, field map).
    #[command(
        after_help = "Examples:\n  orgsync partner settings\n  orgsync partner pending\n  orgsync partner set Initech --subcontractor true"
    )]
    #[command(subcommand)]
    Partner(governance::PartnerCmd),
    /// Web console accounts (works without a running daemon).
    #[command(
        after_help = "Examples:\n  orgsync admin add ada\n  orgsync admin list\n  orgsync admin totp ada"
    )]
    #[command(subcommand)]
    Admin(admin::AdminCmd),
    /// Write a consistent backup archive of the running instance.
    Backup(orgsync_daemon::backup::cli::BackupArgs),
    /// The audit log of sharing decisions, deliveries, terms and erasures.
    #[command(
        after_help = "Examples:\n  orgsync audit\n  orgsync audit --partner Globex --since 1h --json"
    )]
    Audit {
        /// Only entries about this partner.
        #[arg(long)]
        partner: Option<String>,
        /// Only entries since this long ago (e.g. 10m, 2h) or Unix ms.
        #[arg(long)]
        since: Option<String>,
    },
    /// Export data received from a partner or under a share.
    #[command(
        after_help = "Files are created with mode 0600 (owner only) and never written through a symbolic link.\n\nCSV is made safe to open in a spreadsheet: every cell is quoted, and a text cell starting with =, +, -, @, a tab or a carriage return gets a leading ' so it is shown as text, never run as a formula (e.g. =HYPERLINK(...) is written as '=HYPERLINK(...)). NDJSON is written verbatim.\n\nExamples:\n  orgsync export --partner Acme --format csv -o acme-data/   (one CSV per kind)\n  orgsync export --share 3f2a... --format ndjson -o share.ndjson"
    )]
    Export {
        /// Data received from this partner.
        #[arg(long, required_unless_present = "share")]
        partner: Option<String>,
        /// Data received under this share.
        #[arg(long)]
        share: Option<String>,
        /// csv (a directory with one file per kind) or ndjson (one file).
        #[arg(long, value_enum)]
        format: governance::ExportFormat,
        /// Output directory (csv) or file (ndjson).
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
    },
}

/// The command line: [`Args`] with `--output FORMAT` offered on every
/// command too (clap's `global` cannot do it: `get-resume`, `backup` and
/// `export` have an `-o/--output FILE` of their own), and the format it
/// settles on.
struct Cli {
    args: Args,
    format: Format,
}

/// Adds the top level's `--output FORMAT` to every command below `cmd` that
/// has no `--output` of its own.
fn output_everywhere(cmd: clap::Command, arg: &clap::Arg) -> clap::Command {
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    names.into_iter().fold(cmd, |cmd, name| {
        cmd.mut_subcommand(name, |sub| {
            let sub = if sub.get_arguments().any(|a| a.get_long() == Some("output")) {
                sub
            } else {
                sub.arg(arg.clone())
            };
            output_everywhere(sub, arg)
        })
    })
}

impl CommandFactory for Cli {
    fn command() -> clap::Command {
        let cmd = Args::command();
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_id() == OUTPUT_ID)
            .cloned();
        match arg {
            Some(arg) => output_everywhere(cmd, &arg),
            None => cmd,
        }
    }

    fn command_for_update() -> clap::Command {
        Self::command()
    }
}

impl FromArgMatches for Cli {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Self::from_arg_matches_mut(&mut m.clone())
    }

    fn from_arg_matches_mut(m: &mut ArgMatches) -> Result<Self, clap::Error> {
        // The innermost command's --output wins, like a later option.
        let mut output = None;
        let mut level = Some(&*m);
        while let Some(at) = level {
            if let Ok(Some(f)) = at.try_get_one::<Format>(OUTPUT_ID) {
                output = Some(*f);
            }
            level = at.subcommand().map(|(_, sub)| sub);
        }
        let args = Args::from_arg_matches_mut(m)?;
        let format = match (args.json, output) {
            (false, f) => f.unwrap_or_default(),
            (true, None | Some(Format::Json)) => Format::Json,
            (true, Some(other)) => {
                return Err(Cli::command().error(
                    clap::error::ErrorKind::ArgumentConflict,
                    format!(
                        "--json means --output json; it cannot be used with --output {}",
                        other
                            .to_possible_value()
                            .map(|v| v.get_name().to_string())
                            .unwrap_or_default()
                    ),
                ))
            }
        };
        Ok(Cli { args, format })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Parser for Cli {}

/// A failure with its exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn bad_input(message: impl Into<String>) -> Self {
        Failure {
            code: 2,
            message: message.into(),
        }
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let code = match &e {
            ClientError::NotRunning { .. } => 4,
            e if e.is_not_found() => 3,
            e if e.is_bad_input() => 2,
            _ => 1,
        };
        let message = match &e {
            ClientError::Api {
                field: Some(field),
                message,
                ..
            } if !message.contains(field.as_str()) => format!("{message} (field {field})"),
            _ => orgsync_keytool::cli::error_chain(&e),
        };
        Failure { code, message }
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure {
            code: 1,
            message: orgsync_keytool::cli::error_chain(e.as_ref()),
        }
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, ""), |i| s.split_at(i));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 60s, 2m, 1h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {s:?} (use ms, s, m or h)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{s:?} is out of range"))
}

/// Parses `name=value` (a string) or `name:=JSON` (a typed value).
fn parse_assignment(arg: &str, what: &str) -> Result<(String, Json), Failure> {
    if let Some((name, raw)) = arg.split_once(":=") {
        if !name.contains('=') {
            let value = serde_json::from_str(raw).map_err(|e| {
                Failure::bad_input(format!(
                    "--{what} {arg}: the value after := is not JSON ({e})"
                ))
            })?;
            return Ok((name.to_string(), value));
        }
    }
    match arg.split_once('=') {
        Some((name, value)) if !name.is_empty() => {
            Ok((name.to_string(), Json::String(value.to_string())))
        }
        _ => Err(Failure::bad_input(format!(
            "--{what} {arg:?}: expected NAME=VALUE (or NAME:=JSON)"
        ))),
    }
}

fn assignments(args: &[String], what: &str) -> Result<Map<String, Json>, Failure> {
    let mut map = Map::new();
    for a in args {
        let (k, v) = parse_assignment(a, what)?;
        map.insert(k, v);
    }
    Ok(map)
}

fn client_for(dir: &Path) -> Client {
    // The socket may be moved by [api] socket in orgsync.toml; without a
    // readable configuration the default place is the only candidate.
    match orgsync_daemon::config::Config::load(dir) {
        Ok(cfg) => Client::with_socket(dir, cfg.api.socket),
        Err(_) => Client::new(dir),
    }
}

fn text_of(v: &Json) -> String {
    match v {
        Json::String(s) => s.clone(),
        Json::Null => "-".into(),
        other => other.to_string(),
    }
}

/// A short description of an object for lists.
fn summary(obj: &Json) -> String {
    let f = &obj["fields"];
    let get = |k: &str| f.get(k).map(text_of);
    let parts: Vec<String> = match obj["kind"].as_str() {
        Some("contact") => [get("first_name"), get("last_name"), get("email")]
            .into_iter()
            .flatten()
            .collect(),
        Some("transaction") => [get("type"), get("date"), get("amount"), get("currency")]
            .into_iter()
            .flatten()
            .collect(),
        Some("resume") => [get("file_name"), get("size").map(|s| format!("{s} bytes"))]
            .into_iter()
            .flatten()
            .collect(),
        _ => [get("name"), get("city"), get("category")]
            .into_iter()
            .flatten()
            .collect(),
    };
    parts.join(" ")
}

/// One object as FIELD/VALUE rows: id, kind, fields, custom fields
/// (`custom.NAME`), then one `flag` row per flag.
fn object_table(obj: &Json) -> Table {
    let mut t = Table::new(&["FIELD", "VALUE"]);
    t.row(vec![json!("id"), obj["id"].clone()]);
    t.row(vec![json!("kind"), obj["kind"].clone()]);
    for (section, prefix) in [("fields", ""), ("custom", "custom.")] {
        if let Some(map) = obj[section].as_object() {
            for (k, v) in map {
                t.row(vec![json!(format!("{prefix}{k}")), v.clone()]);
            }
        }
    }
    for f in obj["flags"].as_array().into_iter().flatten() {
        t.row(vec![json!("flag"), f.clone()]);
    }
    t
}

/// Objects as ID/KIND/SUMMARY rows (`list`, `request preview`).
fn objects_table(objects: &[Json]) -> Table {
    let mut t = Table::new(&["ID", "KIND", "SUMMARY"]);
    for o in objects {
        t.row(vec![o["id"].clone(), o["kind"].clone(), json!(summary(o))]);
    }
    t
}

/// Partners of `GET /v1/status` or `GET /v1/partners`, one row each.
fn partners_table(partners: &[Json]) -> Table {
    let mut t = Table::new(&[
        "PARTNER",
        "ACCOUNT",
        "STATE",
        "CONNECTED",
        "LAST SYNC",
        "NOT ACKED",
        "LAG",
    ]);
    for p in partners {
        let short = p["account"]
            .as_str()
            .and_then(|a| a.split('-').next())
            .map_or(Json::Null, |a| json!(a));
        t.row(vec![
            p["name"].clone(),
            short,
            p["state"].clone(),
            json!(if p["connected"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            }),
            p["last_sync"].clone(),
            p["not_acked"].clone(),
            json!(format!(
                "{:.1}s",
                p["lag_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
            )),
        ]);
    }
    t
}

fn array(v: &Json, key: &str) -> Vec<Json> {
    v.get(key)
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default()
}

async fn run(dir: PathBuf, format: Format, command: Command) -> Result<(), Failure> {
    let command = match command {
        Command::Admin(c) => {
            return admin::run(&dir, format, c).map_err(|(code, message)| Failure { code, message })
        }
        other => other,
    };
    let client = client_for(&dir);
    match command {
        Command::Share(c) => governance::share(&client, format, c).await?,
        Command::Inbox(c) => governance::inbox(&client, format, c).await?,
        Command::Request(c) => governance::request(&client, format, c).await?,
        Command::Partner(c) => governance::partner(&client, format, c).await?,
        Command::Audit { partner, since } => {
            governance::audit(&client, format, partner, since).await?
        }
        Command::Export {
            partner,
            share,
            format,
            output,
        } => governance::export(&client, partner, share, format, output).await?,
        Command::Put {
            kind,
            set,
            custom,
            flags,
        } => {
            let body = json!({
                "kind": kind,
                "fields": assignments(&set, "set")?,
                "custom": assignments(&custom, "custom")?,
                "flags": flags,
            });
            let obj = client.create(&body).await?;
            if format.is_json() {
                print_json(&obj);
            } else {
                outln!("{}", text_of(&obj["id"]));
            }
        }
        Command::Set {
            id,
            set,
            custom,
            unset,
            add_flags,
            remove_flags,
        } => {
            let mut fields = assignments(&set, "set")?;
            let mut custom = assignments(&custom, "custom")?;
            for name in unset {
                match name.strip_prefix("custom.") {
                    Some(c) => custom.insert(c.to_string(), Json::Null),
                    None => fields.insert(name, Json::Null),
                };
            }
            let body = json!({
                "fields": fields,
                "custom": custom,
                "add_flags": add_flags,
                "remove_flags": remove_flags,
            });
            let obj = client.update(&id, &body).await?;
            if format.is_json() {
                print_json(&obj);
            } else {
                outln!("{}", text_of(&obj["id"]));
            }
        }
        Command::Get { id } => {
            let obj = client.get(&id).await?;
            show(format, &obj, || object_table(&obj));
        }
        Command::List { kind } => {
            let objs = Json::Array(client.list_all(kind.as_deref()).await?);
            show(format, &objs, || {
                objects_table(objs.as_array().map_or(&[][..], Vec::as_slice))
            });
        }
        Command::Delete { id } => {
            let r = client.delete(&id).await?;
            if format.is_json() {
                print_json(&r);
            } else {
                outln!("deleted {}", text_of(&r["id"]));
            }
        }
        Command::AttachResume { contact, file } => {
            // The daemon opens the file itself, so it needs an absolute path.
            // Not canonicalize(): that would resolve a symbolic link here and
            // hand the daemon its target; the daemon refuses links itself.
            let path = std::path::absolute(&file)
                .map_err(|e| Failure::bad_input(format!("cannot read {}: {e}", file.display())))?;
            let obj = client.attach_resume(&contact, &path).await?;
            if format.is_json() {
                print_json(&obj);
            } else {
                outln!("{}", text_of(&obj["id"]));
            }
        }
        Command::GetResume { id, output } => {
            let n = client.download_resume(&id, &output).await?;
            if format.is_json() {
                print_json(&json!({"id": id, "output": output, "size": n}));
            } else {
                eprintln!("wrote {n} bytes to {}", output.display());
            }
        }
        Command::Partners => {
            let r = client.partners().await?;
            let partners = array(&r, "partners");
            show(format, &r, || partners_table(&partners));
            if partners.is_empty() && !format.is_json() {
                eprintln!("no partners (pair one with orgsync-keytool)");
            }
            if format == Format::Table {
                // Not records of this listing: `orgsync partner pending`
                // lists them (in every format).
                let pending = array(&r, "pending");
                if !pending.is_empty() {
                    outln!("\nrefused at the handshake (check the fingerprint with its admin, then pair with orgsync-keytool):");
                    for p in &pending {
                        outln!(
                            "  {}  from {}  attempts {}{}",
                            text_of(&p["fingerprint"]),
                            text_of(&p["address"]),
                            text_of(&p["attempts"]),
                            if p["revoked"].as_bool() == Some(true) {
                                "  (revoked partner)"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
        }
        Command::Status => {
            let s = client.status().await?;
            let partners = array(&s, "partners");
            match format {
                Format::Json => print_json(&s),
                // One row per partner; the instance's own lines are in
                // the table and JSON forms.
                Format::Csv => partners_table(&partners).print(format),
                Format::Table => {
                    outln!("organisation  {}", text_of(&s["org"]));
                    outln!("account       {}", text_of(&s["account"]));
                    outln!("instance      {}", text_of(&s["instance"]));
                    outln!("log head      {}", text_of(&s["log_head"]));
                    outln!();
                    partners_table(&partners).print(format);
                    if partners.is_empty() {
                        eprintln!("no partners");
                    }
                    let errors: Vec<String> = partners
                        .iter()
                        .filter_map(|p| {
                            let err = p["last_error"].as_str()?;
                            Some(format!("{}: last error: {err}", text_of(&p["name"])))
                        })
                        .collect();
                    if !errors.is_empty() {
                        outln!("\n{}", errors.join("\n"));
                    }
                }
            }
        }
        Command::Watch { after } => {
            let mut events = client.events(after).await?;
            if format == Format::Csv {
                out!("{}", output::csv_line(&WATCH_HEADERS.map(Json::from)));
            }
            while let Some(ev) = events.next().await? {
                let line = if format.is_json() {
                    ev.to_string()
                } else if let Some(n) = ev.get("lagged") {
                    let warning = format!("! fell behind: {n} events missed");
                    if format == Format::Csv {
                        // Not a row: the CSV stays one event per row.
                        eprintln!("{warning}");
                        continue;
                    }
                    warning
                } else if format == Format::Csv {
                    let cells = [
                        ev["seq"].clone(),
                        ev["origin"].clone(),
                        ev["kind"].clone(),
                        ev["id"].clone(),
                        json!(ev["deleted"].as_bool() == Some(true)),
                    ];
                    out!("{}", output::csv_line(&cells));
                    continue;
                } else {
                    let origin = match ev["origin"].as_str() {
                        Some("local") | None => "local".to_string(),
                        Some(acct) => format!("from {}", acct.split('-').next().unwrap_or(acct)),
                    };
                    let seq = ev["seq"].as_u64().map_or("-".into(), |s| s.to_string());
                    let what = if ev["deleted"].as_bool() == Some(true) {
                        " deleted"
                    } else {
                        ""
                    };
                    format!(
                        "{seq} {origin} {} {}{what}",
                        text_of(&ev["kind"]),
                        text_of(&ev["id"])
                    )
                };
                // A closed stdout (e.g. `| head`) ends the watch quietly.
                outln!("{line}");
            }
        }
        Command::WaitSynced { timeout } => wait_synced(&client, timeout, format).await?,
        Command::Doctor => doctor::run(&dir, &client, format).await?,
        Command::Metrics => out!("{}", client.get_text("/metrics").await?),
        Command::Backup(args) => eprintln!(
            "{}",
            orgsync_daemon::backup::cli::backup(&client, &args)
                .await
                .map_err(|e| Failure {
                    code: 1,
                    message: e.to_string()
                })?
        ),
        // Handled above, without the API client.
        Command::Admin(_) => {}
    }
    Ok(())
}

/// Columns of `orgsync watch --output csv`, one row per committed change.
const WATCH_HEADERS: [&str; 5] = ["SEQ", "ORIGIN", "KIND", "ID", "DELETED"];

/// Polls status until no paired partner has unacknowledged changes.
async fn wait_synced(client: &Client, timeout: Duration, format: Format) -> Result<(), Failure> {
    let started = Instant::now();
    let tty = std::io::stderr().is_terminal() && !format.is_json();
    let mut bar: Option<indicatif::ProgressBar> = None;
    let mut total = 0u64;
    let mut last_line = String::new();
    loop {
        let status = client.status().await?;
        let pending: BTreeMap<String, u64> = array(&status, "partners")
            .iter()
            .filter(|p| p["state"].as_str() != Some("revoked"))
            .map(|p| (text_of(&p["name"]), p["not_acked"].as_u64().unwrap_or(0)))
            .collect();
        let left: u64 = pending.values().sum();
        if left == 0 {
            if let Some(b) = &bar {
                b.finish_and_clear();
            }
            let msg = if pending.is_empty() {
                "no partners to wait for".to_string()
            } else {
                format!(
                    "synced: {} partner(s) acknowledged everything (log head {}) in {:.1}s",
                    pending.len(),
                    text_of(&status["log_head"]),
                    started.elapsed().as_secs_f64()
                )
            };
            if format.is_json() {
                print_json(
                    &json!({"synced": true, "partners": pending.len(), "log_head": status["log_head"]}),
                );
            } else {
                outln!("{msg}");
            }
            return Ok(());
        }
        total = total.max(left);
        let detail: Vec<String> = pending
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(name, n)| format!("{name}: {n} left"))
            .collect();
        if tty {
            let b = bar.get_or_insert_with(|| {
                let b = indicatif::ProgressBar::new(total);
                if let Ok(style) = indicatif::ProgressStyle::with_template(
                    // wide_bar takes what the terminal has left, so the
                    // line never wraps (a wrapped bar redraws badly).
                    "{spinner} {human_pos}/{human_len} acked [{wide_bar}] {elapsed}, eta {eta} {msg}",
                ) {
                    b.set_style(style.progress_chars("=> "));
                }
                b
            });
            b.set_length(total);
            b.set_position(total - left);
            b.set_message(detail.join(", "));
            b.tick();
        } else {
            let line = format!(
                "waiting: {left} change(s) not yet acknowledged ({})",
                detail.join(", ")
            );
            if line != last_line {
                eprintln!("{line}");
                last_line = line;
            }
        }
        if started.elapsed() >= timeout {
            if let Some(b) = &bar {
                b.abandon();
            }
            return Err(Failure {
                code: 1,
                message: format!(
                    "timed out after {:.1}s: {left} change(s) not yet acknowledged ({})",
                    timeout.as_secs_f64(),
                    detail.join(", ")
                ),
            });
        }
        tokio::time::sleep(
            Duration::from_millis(200).min(timeout.saturating_sub(started.elapsed())),
        )
        .await;
    }
}

fn main() -> ExitCode {
    let Cli { args, format } = orgsync_keytool::cli::parse_args();
    let Some(dir) = args.dir else {
        eprintln!("Error: no instance directory: pass --dir DIR or set ORGSYNC_DIR");
        return ExitCode::from(2);
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime");
    let result = match runtime {
        Ok(rt) => rt.block_on(run(dir, format, args.command)),
        Err(e) => Err(Failure::from(e)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("Error: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}
