//! `orgsync-keytool`: create an instance's identity and pair it with partner
//! organisations. See `orgsync-keytool --help`.

// Standard output goes through `out!`/`outln!`, which end quietly on a
// closed pipe; `println!` would panic there.
#![deny(clippy::print_stdout)]

use std::io::{BufRead, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use orgsync_keytool::bundle::Bundle;
use orgsync_keytool::instance::{self, DEFAULT_LISTEN};
use orgsync_keytool::pairing::{self, InviteListener, InviteParams, JoinParams};
use orgsync_keytool::partners::{self, ImportPlan};
use orgsync_keytool::{cli, outln};
use orgsync_keytool::{fsutil, timefmt, words, Identity, InstanceDir, Partner, PartnerState};
use orgsync_protocol::model::OrgId;

const ABOUT: &str = "Create an orgsync instance's identity and pair it with partner organisations.";

const LONG_ABOUT: &str = "\
Create an orgsync instance's identity and pair it with partner organisations.

An instance directory holds the organisation's x25519 key (per key epoch),
the instance's TLS certificate, the daemon configuration and the list of
partners. Secrets live in DIR/secrets (0700, files 0600); every command
refuses secret files that other users can read.

Two ways to pair with a partner:
  * export / import: exchange one-line public bundles (by mail, chat, USB)
    and compare fingerprints by phone;
  * invite / join: one side prints a one-time code, the other types it in;
    SPAKE2 over QUIC authenticates the exchange.";

const AFTER_HELP: &str = "\
Examples:
  orgsync-keytool --dir /var/lib/orgsync init --org 'Acme Recruiting' --listen 0.0.0.0:7700
  export ORGSYNC_DIR=/var/lib/orgsync
  orgsync-keytool show
  orgsync-keytool invite --listen 0.0.0.0:7701
  orgsync-keytool list";

#[derive(Parser)]
#[command(name = "orgsync-keytool", version, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
struct Cli {
    /// Instance directory.
    #[arg(long, env = "ORGSYNC_DIR", global = true, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create the instance directory, the organisation key and the TLS identity.
    #[command(
        long_about = "Create the instance directory (0700): the organisation's x25519 key pair \
(epoch 0), the instance's self-signed TLS certificate, secrets 0600 in DIR/secrets, \
identity.toml, an empty partners.toml and a default orgsync.toml listening on --listen. \
Refuses to overwrite an existing identity. Prints the account number and the certificate \
fingerprint.",
        after_help = "Example:\n  orgsync-keytool --dir /var/lib/orgsync init --org 'Acme Recruiting' --listen 0.0.0.0:7700"
    )]
    Init {
        /// The organisation's name, as partners will see it.
        #[arg(long, value_name = "NAME")]
        org: String,
        /// Address the daemon listens on (written to orgsync.toml).
        #[arg(long, value_name = "HOST:PORT", default_value = DEFAULT_LISTEN)]
        listen: String,
    },
    /// Show this instance's account number, fingerprint, key epoch and addresses.
    #[command(
        long_about = "Show the organisation name, account number, instance id, key epoch, public \
key, certificate fingerprint and the addresses a bundle would carry. Read these to a partner \
who wants to check a bundle or an invitation.",
        after_help = "Examples:\n  orgsync-keytool show\n  orgsync-keytool show --json | jq -r .account_number"
    )]
    Show {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Print this instance's public bundle (one line) for a partner to import.
    #[command(
        long_about = "Print the public bundle: one line carrying the organisation name, account \
number, current public key and epoch, certificate fingerprint and the addresses where the \
daemon can be reached (--address, repeatable; default: `listen` from orgsync.toml unless it is \
0.0.0.0). The bundle holds no secret; send it by any channel and let the partner check the \
fingerprint with you by phone.",
        after_help = "Examples:\n  orgsync-keytool export --address sync.acme.example:7700 -o acme.bundle\n  orgsync-keytool export | mail -s 'our orgsync bundle' admin@globex.example"
    )]
    Export {
        /// Address to advertise (HOST:PORT); repeat for several.
        #[arg(long = "address", value_name = "HOST:PORT")]
        addresses: Vec<String>,
        /// Write the bundle to FILE instead of standard output.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Add (or update) the partner described by a bundle.
    #[command(
        long_about = "Read a partner's bundle from FILE (or standard input with -), show its \
organisation name, account number and fingerprint, and after confirmation store it in \
partners.toml. Check the fingerprint with the partner out of band before saying yes. Without \
a terminal, --yes is required. Importing the same partner again updates its name and \
addresses; a different key under a known account number is refused.",
        after_help = "Examples:\n  orgsync-keytool import globex.bundle\n  orgsync-keytool import - --yes --address globex.example:7700 < globex.bundle"
    )]
    Import {
        /// Bundle file, or - for standard input.
        #[arg(value_name = "FILE|-")]
        file: String,
        /// Extra address for the partner (HOST:PORT); repeat for several.
        #[arg(long = "address", value_name = "HOST:PORT")]
        addresses: Vec<String>,
        /// Do not ask for confirmation (you checked the fingerprint already).
        #[arg(long)]
        yes: bool,
    },
    /// Print a one-time pairing code and wait for a partner to join with it.
    #[command(
        long_about = "Listen for one `join` (QUIC, UDP) and print a one-time pairing code such as \
7-lantern-wagon, on a line of its own, to read to the partner. The code is valid for --expires \
and for a single attempt: a wrong code burns the invitation. Both sides then exchange bundles \
authenticated by the code (SPAKE2) and store each other as partners. Exits 0 only when paired.",
        after_help = "Example:\n  orgsync-keytool invite --listen 0.0.0.0:7701 --expires 10m\n  (the partner runs: orgsync-keytool join --connect THIS_HOST:7701 --account ACCOUNT CODE)"
    )]
    Invite {
        /// Address to listen on for the join (UDP).
        #[arg(long, value_name = "HOST:PORT", default_value = "0.0.0.0:7701")]
        listen: SocketAddr,
        /// How long the code stays valid (e.g. 90s, 10m, 1h).
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = parse_duration)]
        expires: Duration,
        /// Address of our daemon to give the partner (HOST:PORT); repeat for several.
        #[arg(long = "address", value_name = "HOST:PORT")]
        addresses: Vec<String>,
        /// After the invitation ends, keep telling late joiners why (expired, used, burned)
        /// for this long instead of exiting at once.
        #[arg(long, value_name = "DURATION", default_value = "0s", value_parser = parse_duration)]
        linger: Duration,
    },
    /// Join a partner's invitation with the code it gave you.
    #[command(
        long_about = "Connect to a partner's `invite`, prove knowledge of the pairing code \
(SPAKE2), check that the partner's instance is the account number you were given, exchange \
bundles and store the partner. A wrong code is reported as `pairing code rejected` and burns \
the invitation; nothing is stored unless pairing succeeds.",
        after_help = "Example:\n  orgsync-keytool join --connect sync.acme.example:7701 --account ABCDEFG-HIJKLMN-... 7-lantern-wagon"
    )]
    Join {
        /// The inviter's pairing address (HOST:PORT).
        #[arg(long, value_name = "HOST:PORT")]
        connect: String,
        /// The inviter's account number (from `orgsync-keytool show` on its side).
        #[arg(long, value_name = "ACCOUNT_NUMBER")]
        account: String,
        /// Address of our daemon to give the partner (HOST:PORT); repeat for several.
        #[arg(long = "address", value_name = "HOST:PORT")]
        addresses: Vec<String>,
        /// The pairing code, e.g. 7-lantern-wagon.
        #[arg(value_name = "CODE")]
        code: String,
    },
    /// List partners.
    #[command(
        long_about = "List the partners in partners.toml with their state (paired, revoked), \
account number, key epoch, certificate fingerprint and addresses.",
        after_help = "Examples:\n  orgsync-keytool list\n  orgsync-keytool list --json"
    )]
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a partner: its certificate and keys are refused from now on.
    #[command(
        long_about = "Mark a partner revoked in partners.toml. The daemon reloads the file and \
refuses the partner's certificate and keys from then on. PARTNER is an account number or an \
organisation name (case-insensitive); a name shared by several partners is refused with the \
list of matches.",
        after_help = "Examples:\n  orgsync-keytool revoke Globex\n  orgsync-keytool revoke QRSTUVW-XYZ2345-..."
    )]
    Revoke {
        /// Account number or organisation name.
        #[arg(value_name = "PARTNER")]
        partner: String,
    },
    /// Start a new key epoch (the old key is kept for partners still using it).
    #[command(
        long_about = "Generate a new organisation key pair as epoch N+1 (secrets/org-<N+1>.key), \
make it current in identity.toml and keep the old keys, so envelopes sealed under the old \
epoch still open. Partners then need your new bundle: `export` it and have each of them \
`import` it (they will be shown a key rotation to confirm).",
        after_help = "Example:\n  orgsync-keytool rotate && orgsync-keytool export -o acme-epoch1.bundle"
    )]
    Rotate,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    timefmt::parse_duration(s)
}

fn main() {
    let cli: Cli = cli::parse_args();
    if let Err(e) = run(cli) {
        cli::print_error(e.as_ref());
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    let Some(dir_path) = cli.dir else {
        bail!("no instance directory: pass --dir DIR or set ORGSYNC_DIR");
    };
    let dir = InstanceDir::new(dir_path);
    match cli.command {
        Command::Init { org, listen } => cmd_init(&dir, &org, &listen),
        Command::Show { json } => cmd_show(&dir, json),
        Command::Export { addresses, output } => cmd_export(&dir, &addresses, output),
        Command::Import {
            file,
            addresses,
            yes,
        } => cmd_import(&dir, &file, &addresses, yes),
        Command::Invite {
            listen,
            expires,
            addresses,
            linger,
        } => cmd_invite(&dir, listen, expires, &addresses, linger),
        Command::Join {
            connect,
            account,
            addresses,
            code,
        } => cmd_join(&dir, connect, &account, &addresses, &code),
        Command::List { json } => cmd_list(&dir, json),
        Command::Revoke { partner } => cmd_revoke(&dir, &partner),
        Command::Rotate => cmd_rotate(&dir),
    }
}

fn cmd_init(dir: &InstanceDir, org: &str, listen: &str) -> Result<()> {
    let id = InstanceDir::create(dir.path(), org, listen)?;
    outln!("Created orgsync instance in {}", dir.path().display());
    outln!("  organisation:    {}", id.org_name);
    outln!("  account number:  {}", id.org_id);
    outln!("  fingerprint:     {}", id.fingerprint);
    outln!("  instance id:     {}", id.instance_id);
    outln!("  daemon listens:  {listen}");
    outln!();
    outln!("Next: pair with a partner: `orgsync-keytool invite` (or `export` / `import`).");
    Ok(())
}

fn cmd_show(dir: &InstanceDir, json: bool) -> Result<()> {
    let id = dir.load_identity()?;
    let addresses = dir.advertised_addresses(&[])?;
    let listen = dir.listen_address()?;
    if json {
        let v = serde_json::json!({
            "dir": dir.path(),
            "org_name": id.org_name,
            "account_number": id.org_id.account_number(),
            "instance_id": id.instance_id.to_string(),
            "epoch": id.epoch,
            "kept_epochs": id.keys.keys().collect::<Vec<_>>(),
            "public_key": instance::key_hex(&id.public_key()),
            "cert_fingerprint": id.fingerprint.to_string(),
            "listen": listen,
            "addresses": addresses,
            "created_at": id.created_at,
        });
        outln!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    outln!("organisation:    {}", id.org_name);
    outln!("account number:  {}", id.org_id);
    outln!("fingerprint:     {}", id.fingerprint);
    outln!("instance id:     {}", id.instance_id);
    outln!(
        "key epoch:       {} (kept: {})",
        id.epoch,
        id.keys
            .keys()
            .map(|e| e.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    outln!("public key:      {}", instance::key_hex(&id.public_key()));
    outln!(
        "daemon listens:  {}",
        listen.as_deref().unwrap_or("(not set)")
    );
    outln!(
        "addresses:       {}",
        if addresses.is_empty() {
            "(none: pass --address to export)".to_string()
        } else {
            addresses.join(", ")
        }
    );
    outln!("created:         {}", id.created_at);
    Ok(())
}

fn our_addresses(dir: &InstanceDir, explicit: &[String]) -> Result<Vec<String>> {
    let addresses = dir.advertised_addresses(explicit)?;
    if addresses.is_empty() {
        eprintln!(
            "warning: the bundle carries no address (orgsync.toml listens on a wildcard or has no \
             `listen`); the partner must add one with `import --address`, or pass --address HOST:PORT"
        );
    }
    Ok(addresses)
}

fn cmd_export(dir: &InstanceDir, addresses: &[String], output: Option<PathBuf>) -> Result<()> {
    let id = dir.load_identity()?;
    let addresses = our_addresses(dir, addresses)?;
    let line = id.bundle(addresses).to_line();
    match output {
        Some(path) => {
            fsutil::write_atomic(
                &path,
                format!("{line}\n").as_bytes(),
                fsutil::PUBLIC_FILE_MODE,
            )?;
            eprintln!(
                "Wrote the bundle of {} (account {}) to {}.\nFingerprint to confirm by phone: {}",
                id.org_name,
                id.org_id,
                path.display(),
                id.fingerprint
            );
        }
        None => outln!("{line}"),
    }
    Ok(())
}

fn read_bundle_text(file: &str) -> Result<String> {
    let mut raw = Vec::new();
    if file == "-" {
        std::io::stdin()
            .take(64 * 1024)
            .read_to_end(&mut raw)
            .context("reading the bundle from standard input")?;
    } else {
        std::fs::File::open(file)
            .and_then(|f| f.take(64 * 1024).read_to_end(&mut raw))
            .with_context(|| format!("reading the bundle from {file}"))?;
    }
    // Binary junk is still "text" here, so the parser says what it is.
    let text = String::from_utf8_lossy(&raw);
    // The bundle is the first line that is neither blank nor a comment.
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .unwrap_or("");
    Ok(line.to_string())
}

fn confirm(question: &str) -> Result<bool> {
    eprint!("{question} [y/N] ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("reading the answer")?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

fn cmd_import(dir: &InstanceDir, file: &str, extra: &[String], yes: bool) -> Result<()> {
    let id = dir.load_identity()?;
    let text = read_bundle_text(file)?;
    let mut bundle = Bundle::parse(&text).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a valid bundle: {e}",
            if file == "-" { "standard input" } else { file }
        )
    })?;
    for a in extra {
        instance::validate_address(a)?;
    }
    bundle.addresses = partners::merge_addresses(bundle.addresses, extra);
    let mut list = dir.load_partners()?;
    let plan = partners::plan_import(&list, &id.org_id, &bundle)?;

    eprintln!("Partner in this bundle:");
    eprintln!("  organisation:    {}", bundle.org_name);
    eprintln!("  account number:  {}", bundle.org_id);
    eprintln!("  fingerprint:     {}", bundle.cert_fingerprint);
    eprintln!("  key epoch:       {}", bundle.epoch);
    eprintln!(
        "  addresses:       {}",
        if bundle.addresses.is_empty() {
            "(none)".to_string()
        } else {
            bundle.addresses.join(", ")
        }
    );
    let question = match &plan {
        ImportPlan::New => {
            "Check the fingerprint with the partner by phone or in person. Add this partner?"
                .to_string()
        }
        ImportPlan::Update { index } => format!(
            "{} is already a partner; update its name and addresses (was: {})?",
            list[*index].name,
            list[*index].addresses.join(", ")
        ),
        ImportPlan::Unchanged { index } => {
            outln!(
                "{} (account {}) is already a partner with this key and these addresses; nothing changed.",
                list[*index].name, list[*index].org_id
            );
            return Ok(());
        }
        ImportPlan::Rotation { index, from } => format!(
            "KEY ROTATION: {} moves from key epoch {from} to {} with a NEW KEY{}. The bundle \
             carries a rotation proof signed by the key on file, and it checks out. Accept?",
            list[*index].name,
            bundle.epoch,
            if list[*index].cert_fingerprint != bundle.cert_fingerprint {
                " and a new certificate"
            } else {
                ""
            }
        ),
    };
    if !yes {
        if file == "-" {
            bail!("the bundle was read from standard input, so there is no terminal to confirm on; check the fingerprint above with the partner and run again with --yes");
        }
        if !std::io::stdin().is_terminal() {
            bail!("refusing to import without confirmation: standard input is not a terminal; check the fingerprint above with the partner and run again with --yes");
        }
        if !confirm(&question)? {
            bail!("not imported");
        }
    }
    let i = partners::apply_import(&mut list, &plan, &bundle, &timefmt::now_rfc3339());
    dir.save_partners(&list)?;
    let p = &list[i];
    let verb = match plan {
        ImportPlan::New => "Added",
        ImportPlan::Rotation { .. } => "Updated (key rotation)",
        _ => "Updated",
    };
    outln!(
        "{verb} partner {} (account {}). The daemon picks it up from partners.toml.",
        p.name,
        p.org_id
    );
    Ok(())
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn cmd_invite(
    dir: &InstanceDir,
    listen: SocketAddr,
    expires: Duration,
    addresses: &[String],
    linger: Duration,
) -> Result<()> {
    let id = dir.load_identity()?;
    let addresses = our_addresses(dir, addresses)?;
    let code = words::generate();
    let rt = runtime()?;
    let paired = rt.block_on(async {
        let listener = InviteListener::bind(&id, listen)?;
        let bound = listener.local_addr()?;
        let expires_at = Instant::now() + expires;
        let connect = if bound.ip().is_unspecified() {
            format!("THIS_HOST:{}", bound.port())
        } else {
            bound.to_string()
        };
        outln!(
            "Pairing invitation for {} (account {})",
            id.org_name,
            id.org_id
        );
        outln!("listening on {bound} (UDP)");
        outln!(
            "Read this code to your partner (single use, valid for {}s, until {}):",
            expires.as_secs(),
            timefmt::rfc3339(timefmt::unix_now() + expires.as_secs())
        );
        outln!("{code}");
        outln!("The partner runs:");
        outln!(
            "  orgsync-keytool join --connect {connect} --account {} {code}",
            id.org_id
        );
        outln!("Waiting for the partner to join... (Ctrl-C to cancel)");
        let mut log = |line: String| eprintln!("invite: {line}");
        listener
            .run(
                InviteParams {
                    dir,
                    identity: &id,
                    code: code.clone(),
                    addresses,
                    expires_at,
                    linger,
                },
                &mut log,
            )
            .await
    })?;
    print_paired(&paired.partner, paired.was_known);
    Ok(())
}

fn print_paired(p: &Partner, was_known: bool) {
    outln!(
        "Paired with {} (account {}){}.",
        p.name,
        p.org_id,
        if was_known {
            "; it was already a partner, its entry was updated"
        } else {
            ""
        }
    );
    outln!("  fingerprint:  {}", p.cert_fingerprint);
    outln!(
        "  addresses:    {}",
        if p.addresses.is_empty() {
            "(none; add one with `import --address`)".to_string()
        } else {
            p.addresses.join(", ")
        }
    );
}

fn cmd_join(
    dir: &InstanceDir,
    connect: String,
    account: &str,
    addresses: &[String],
    code: &str,
) -> Result<()> {
    let expected: OrgId = account
        .parse()
        .map_err(|e| anyhow::anyhow!("--account {account:?}: {e}"))?;
    let code = words::normalize(code)?;
    instance::validate_address(&connect)?;
    let id: Identity = dir.load_identity()?;
    let addresses = our_addresses(dir, addresses)?;
    let rt = runtime()?;
    let paired = rt.block_on(pairing::join(JoinParams {
        dir,
        identity: &id,
        connect,
        expected,
        code,
        addresses,
    }))?;
    print_paired(&paired.partner, paired.was_known);
    Ok(())
}

fn cmd_list(dir: &InstanceDir, json: bool) -> Result<()> {
    // Not a secret, but check the identity exists for a clear message.
    if !dir.is_initialised() {
        return Err(orgsync_keytool::KeytoolError::NotInitialised {
            path: dir.path().to_path_buf(),
        }
        .into());
    }
    let list = dir.load_partners()?;
    if json {
        outln!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    if list.is_empty() {
        outln!(
            "No partners yet. Pair with `orgsync-keytool invite` / `join`, or `import` a bundle."
        );
        return Ok(());
    }
    outln!(
        "{:<24} {:<8} {:<5} {:<63} {:<19} ADDRESSES",
        "NAME",
        "STATE",
        "EPOCH",
        "ACCOUNT NUMBER",
        "FINGERPRINT"
    );
    for p in &list {
        outln!(
            "{:<24} {:<8} {:<5} {:<63} {:<19} {}",
            p.name,
            p.state,
            p.epoch,
            p.org_id.account_number(),
            p.cert_fingerprint.short(),
            p.addresses.join(",")
        );
    }
    Ok(())
}

fn cmd_revoke(dir: &InstanceDir, query: &str) -> Result<()> {
    dir.load_identity()?;
    let mut list = dir.load_partners()?;
    let i = partners::find_partner(&list, query)?;
    if !partners::revoke(&mut list, i, &timefmt::now_rfc3339()) {
        outln!(
            "{} (account {}) was already revoked on {}.",
            list[i].name,
            list[i].org_id,
            list[i].revoked_at.as_deref().unwrap_or("?")
        );
        return Ok(());
    }
    dir.save_partners(&list)?;
    let p = &list[i];
    debug_assert_eq!(p.state, PartnerState::Revoked);
    outln!(
        "Revoked {} (account {}). The daemon refuses its certificate and keys once it reloads partners.toml.",
        p.name, p.org_id
    );
    Ok(())
}

fn cmd_rotate(dir: &InstanceDir) -> Result<()> {
    let id = dir.rotate()?;
    let list = dir.load_partners()?;
    outln!(
        "New key epoch {} for {} (account {}, unchanged).",
        id.epoch,
        id.org_name,
        id.org_id
    );
    outln!(
        "The old key(s) are kept in {} so envelopes of earlier epochs still open.",
        dir.secrets_dir().display()
    );
    let paired: Vec<&Partner> = list
        .iter()
        .filter(|p| p.state == PartnerState::Paired)
        .collect();
    if paired.is_empty() {
        outln!("No partners to tell.");
    } else {
        outln!("Each partner must import your new bundle:");
        outln!("  orgsync-keytool export -o new.bundle   # then send new.bundle to:");
        for p in paired {
            outln!("    {} (account {})", p.name, p.org_id);
        }
        outln!(
            "and run `orgsync-keytool import new.bundle` (it checks the rotation proof, signed with \
             your previous key, and shows the rotation to confirm)."
        );
    }
    Ok(())
}
