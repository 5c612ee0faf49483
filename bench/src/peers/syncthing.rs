//! Syncthing (Debian's `syncthing`): two instances on loopback with keys
//! and configs from `syncthing generate`, discovery, relays, NAT, usage
//! reporting and upgrades off, one folder shared between them; progress and
//! readiness through the REST API, arrival seen on B's disk (Syncthing
//! renames a file into place only once every block is verified).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use rand_core::{OsRng, RngCore};

use super::child::{free_port, wait_for, Proc};
use super::http;

/// The shared folder's id.
const FOLDER: &str = "bench";

/// What is missing to measure Syncthing, if anything.
pub fn missing() -> Option<String> {
    match version() {
        Ok(_) => None,
        Err(_) => Some("no `syncthing` in PATH".into()),
    }
}

/// The installed version, e.g. "1.19.2".
pub fn version() -> Result<String> {
    let out = Command::new("syncthing")
        .arg("--version")
        .output()
        .context("running syncthing --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "syncthing v1.19.2-ds1 "Fermium Flea" (go1.19.8 linux-amd64) ..."
    text.split_whitespace()
        .nth(1)
        .map(|v| v.trim_start_matches('v').to_string())
        .with_context(|| format!("syncthing --version printed {text:?}"))
}

/// The figures of one run.
pub struct Measured {
    /// The folder's watcher delay (Syncthing's default), in seconds.
    pub watcher_delay_s: u64,
    /// Seconds A's scan of the big file took (`POST /rest/db/scan`).
    pub scan_secs: f64,
    /// Seconds from the end of A's scan until the file was whole on B.
    pub transfer_secs: f64,
    /// Pickup latency of each small file, from its rename into A's folder
    /// until it is on B (s).
    pub pickups_s: Vec<f64>,
}

/// One running instance.
struct Instance {
    name: &'static str,
    proc: Proc,
    folder: PathBuf,
    gui_port: u16,
    api_key: String,
}

impl Instance {
    fn get(&self, path: &str) -> Result<serde_json::Value> {
        http::call("GET", self.gui_port, path, &self.api_key)
            .with_context(|| format!("Syncthing {}", self.name))
    }

    fn post(&self, path: &str) -> Result<serde_json::Value> {
        http::call("POST", self.gui_port, path, &self.api_key)
            .with_context(|| format!("Syncthing {}", self.name))
    }
}

/// Keys and config of one instance, not started.
struct Generated {
    home: PathBuf,
    device_id: String,
    config: String,
    listen_port: u16,
}

/// Runs the scenario: a `size`-byte file of fresh random bytes A -> B,
/// then `pickups` files of 1 KiB one after the other. Every process is
/// stopped on return.
pub fn measure(root: &Path, size: usize, pickups: usize, deadline: Instant) -> Result<Measured> {
    let ga = generate(root, "A")?;
    let gb = generate(root, "B")?;
    let watcher_delay_s = default_watcher_delay(&ga.config)?;
    let mut a = start(&ga, &gb, "A", watcher_delay_s)?;
    let mut b = start(&gb, &ga, "B", watcher_delay_s)?;
    for (me, other_id) in [(&mut a, &gb.device_id), (&mut b, &ga.device_id)] {
        let step = format!("Syncthing {} to connect and its folder to be idle", me.name);
        wait_for(&step, deadline, || {
            me.proc.check_running()?;
            let Ok(conns) = me.get("/rest/system/connections") else {
                return Ok(None); // the API is not up yet
            };
            if conns["connections"][other_id.as_str()]["connected"] != true {
                return Ok(None);
            }
            let status = me.get(&format!("/rest/db/status?folder={FOLDER}"))?;
            Ok((status["state"] == "idle").then_some(()))
        })?;
    }

    // Fresh random bytes every run: Syncthing reuses blocks it already has.
    let name = format!("resume-{}MiB.bin", size >> 20);
    let staged = ga.home.join(&name);
    write_random(&staged, size)?;
    let on_b = b.folder.join(&name);
    std::fs::rename(&staged, a.folder.join(&name))?;
    let t0 = Instant::now();
    progress_line(&format!(
        "Syncthing A: scanning the {} MiB file",
        size >> 20
    ));
    a.post(&format!("/rest/db/scan?folder={FOLDER}"))?;
    let scanned = Instant::now();
    let mut next_report = scanned;
    let step = format!("the {} MiB file to be whole on Syncthing B", size >> 20);
    wait_for(&step, deadline, || {
        a.proc.check_running()?;
        b.proc.check_running()?;
        if Instant::now() >= next_report {
            next_report += Duration::from_secs(2);
            let s = b.get(&format!("/rest/db/status?folder={FOLDER}"))?;
            progress_line(&format!(
                "Syncthing B: {} of {} bytes in sync, state {}",
                s["inSyncBytes"], s["globalBytes"], s["state"]
            ));
        }
        Ok(file_len(&on_b).filter(|&n| n == size as u64).map(|_| ()))
    })?;
    let done = Instant::now();
    if !same_contents(&a.folder.join(&name), &on_b)? {
        bail!("Syncthing B's copy of {name} differs from A's");
    }
    std::fs::remove_file(&on_b).ok();

    let mut pickups_s = Vec::with_capacity(pickups);
    for i in 0..pickups {
        let name = format!("note-{i}.txt");
        let staged = ga.home.join(&name);
        write_random(&staged, 1024)?;
        let on_b = b.folder.join(&name);
        std::fs::rename(&staged, a.folder.join(&name))?;
        let t = Instant::now();
        let step = format!(
            "1 KiB file {} of {pickups} to reach Syncthing B (watcher delay {watcher_delay_s} s)",
            i + 1
        );
        wait_for(&step, deadline, || {
            a.proc.check_running()?;
            b.proc.check_running()?;
            Ok(file_len(&on_b).filter(|&n| n == 1024).map(|_| ()))
        })?;
        pickups_s.push(t.elapsed().as_secs_f64());
    }
    drop((a, b));
    Ok(Measured {
        watcher_delay_s,
        scan_secs: (scanned - t0).as_secs_f64(),
        transfer_secs: (done - scanned).as_secs_f64(),
        pickups_s,
    })
}

/// A progress line for people (the parent keeps only the last step).
fn progress_line(s: &str) {
    eprintln!("{s}");
}

fn file_len(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.len())
}

/// `syncthing generate --home root/name-home`: a new key and config.
fn generate(root: &Path, name: &str) -> Result<Generated> {
    let home = root.join(format!("{name}-home"));
    let out = Command::new("syncthing")
        .arg("generate")
        .arg(format!("--home={}", home.display()))
        .arg("--no-default-folder")
        .arg("--skip-port-probing")
        .output()
        .context("running syncthing generate")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("syncthing generate failed ({}): {text}", out.status);
    }
    let device_id = text
        .lines()
        .find_map(|l| l.split_once("Device ID:"))
        .map(|(_, id)| id.trim().to_string())
        .with_context(|| format!("syncthing generate printed no device ID: {text}"))?;
    let path = home.join("config.xml");
    let config =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(Generated {
        home,
        device_id,
        config,
        listen_port: free_port()?,
    })
}

/// The watcher delay new folders get (`<defaults><folder
/// fsWatcherDelayS=..>` of the generated config).
fn default_watcher_delay(config: &str) -> Result<u64> {
    let defaults = &config[config
        .find("<defaults>")
        .context("the generated config.xml has no <defaults>")?..];
    let attr = "fsWatcherDelayS=\"";
    let at = defaults
        .find(attr)
        .context("the generated config.xml's defaults have no fsWatcherDelayS")?
        + attr.len();
    let end = defaults[at..]
        .find('"')
        .context("unterminated fsWatcherDelayS")?;
    defaults[at..at + end]
        .parse()
        .context("fsWatcherDelayS is not a number")
}

/// Replaces the text of the first `<tag>…</tag>`.
fn set_option(config: &str, tag: &str, value: &str) -> Result<String> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = config
        .find(&open)
        .with_context(|| format!("the generated config.xml has no {open}"))?
        + open.len();
    let end = start
        + config[start..]
            .find(&close)
            .with_context(|| format!("the generated config.xml has no {close}"))?;
    Ok(format!("{}{value}{}", &config[..start], &config[end..]))
}

/// `me`'s config: listening on its own loopback port only, nothing that
/// reaches beyond this machine, the other instance as a device at its
/// port, and the folder shared with it.
fn configure(me: &Generated, other: &Generated, folder: &Path, delay: u64) -> Result<String> {
    let mut c = me.config.clone();
    for (tag, value) in [
        (
            "listenAddress",
            format!("tcp://127.0.0.1:{}", me.listen_port),
        ),
        ("globalAnnounceEnabled", "false".into()),
        ("localAnnounceEnabled", "false".into()),
        ("relaysEnabled", "false".into()),
        ("natEnabled", "false".into()),
        ("urAccepted", "-1".into()),
        ("startBrowser", "false".into()),
        ("autoUpgradeIntervalH", "0".into()),
        ("crashReportingEnabled", "false".into()),
        // Syncthing lowers its own CPU priority by default; orgsync does
        // not, and the two would otherwise be measured on different terms
        // on a loaded machine.
        ("setLowPriority", "false".into()),
    ] {
        c = set_option(&c, tag, &value)?;
    }
    let (me_id, other_id) = (&me.device_id, &other.device_id);
    let shared = format!(
        r#"    <folder id="{FOLDER}" label="{FOLDER}" path="{}" type="sendreceive" rescanIntervalS="3600" fsWatcherEnabled="true" fsWatcherDelayS="{delay}" ignorePerms="false" autoNormalize="true">
        <filesystemType>basic</filesystemType>
        <device id="{me_id}" introducedBy=""></device>
        <device id="{other_id}" introducedBy=""></device>
    </folder>
    <device id="{other_id}" name="peer" compression="metadata" introducer="false" skipIntroductionRemovals="false" introducedBy="">
        <address>tcp://127.0.0.1:{}</address>
        <paused>false</paused>
        <autoAcceptFolders>false</autoAcceptFolders>
    </device>
"#,
        folder.display(),
        other.listen_port
    );
    let at = c
        .find("    <gui")
        .context("the generated config.xml has no <gui>")?;
    c.insert_str(at, &shared);
    Ok(c)
}

/// Writes `me`'s config and starts `syncthing serve` on it.
fn start(me: &Generated, other: &Generated, name: &'static str, delay: u64) -> Result<Instance> {
    let folder = me.home.join("folder");
    // The folder marker: Syncthing refuses a folder without it.
    std::fs::create_dir_all(folder.join(".stfolder"))?;
    std::fs::write(
        me.home.join("config.xml"),
        configure(me, other, &folder, delay)?,
    )?;
    let gui_port = free_port()?;
    let mut api_key = [0u8; 16];
    OsRng.fill_bytes(&mut api_key);
    let api_key: String = api_key.iter().map(|b| format!("{b:02x}")).collect();
    let mut cmd = Command::new("syncthing");
    cmd.arg("serve")
        .arg(format!("--home={}", me.home.display()))
        .arg(format!("--gui-address=http://127.0.0.1:{gui_port}"))
        .arg(format!("--gui-apikey={api_key}"))
        .args(["--no-browser", "--no-restart", "--no-upgrade"])
        // Without it Syncthing runs as a monitor process that re-executes
        // itself, and killing the monitor would leave the real one running.
        .env("STMONITORED", "yes")
        .env("STNOUPGRADE", "1");
    let proc = Proc::spawn(
        &format!("Syncthing {name}"),
        cmd,
        &me.home.join("syncthing.log"),
        false,
    )?;
    Ok(Instance {
        name,
        proc,
        folder,
        gui_port,
        api_key,
    })
}

/// `size` fresh random bytes in `path`.
fn write_random(path: &Path, size: usize) -> Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut chunk = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len());
        OsRng.fill_bytes(&mut chunk[..n]);
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    f.flush()?;
    Ok(())
}

/// Whether two files hold the same bytes.
fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }

    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            let n = f.read(&mut buf[got..])?;
            if n == 0 {
                break;
            }
            got += n;
        }
        Ok(got)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GENERATED: &str = r#"<configuration version="36">
    <device id="SELF"><address>dynamic</address></device>
    <gui enabled="true" tls="false"><address>127.0.0.1:8384</address></gui>
    <options>
        <listenAddress>default</listenAddress>
        <globalAnnounceEnabled>true</globalAnnounceEnabled>
        <localAnnounceEnabled>true</localAnnounceEnabled>
        <relaysEnabled>true</relaysEnabled>
        <startBrowser>true</startBrowser>
        <natEnabled>true</natEnabled>
        <urAccepted>0</urAccepted>
        <autoUpgradeIntervalH>12</autoUpgradeIntervalH>
        <setLowPriority>true</setLowPriority>
        <crashReportingEnabled>true</crashReportingEnabled>
    </options>
    <defaults>
        <folder id="" fsWatcherEnabled="true" fsWatcherDelayS="10"></folder>
    </defaults>
</configuration>"#;

    fn generated(id: &str, port: u16) -> Generated {
        Generated {
            home: PathBuf::from("/nowhere"),
            device_id: id.into(),
            config: GENERATED.into(),
            listen_port: port,
        }
    }

    #[test]
    fn config_keeps_syncthing_on_loopback_and_shares_the_folder() {
        let (a, b) = (generated("SELF", 4001), generated("OTHER", 4002));
        let c = configure(&a, &b, Path::new("/f"), 10).unwrap();
        for want in [
            "<listenAddress>tcp://127.0.0.1:4001</listenAddress>",
            "<globalAnnounceEnabled>false</globalAnnounceEnabled>",
            "<localAnnounceEnabled>false</localAnnounceEnabled>",
            "<relaysEnabled>false</relaysEnabled>",
            "<natEnabled>false</natEnabled>",
            "<urAccepted>-1</urAccepted>",
            "<address>tcp://127.0.0.1:4002</address>",
            r#"<folder id="bench" label="bench" path="/f""#,
            r#"<device id="OTHER" introducedBy="">"#,
        ] {
            assert!(c.contains(want), "no {want} in\n{c}");
        }
        assert_eq!(default_watcher_delay(GENERATED).unwrap(), 10);
    }

    #[test]
    fn a_config_of_another_shape_is_an_error_naming_the_element() {
        let err = set_option("<options></options>", "natEnabled", "false").unwrap_err();
        assert!(err.to_string().contains("<natEnabled>"), "{err}");
        let err = default_watcher_delay("<configuration/>").unwrap_err();
        assert!(err.to_string().contains("<defaults>"), "{err}");
    }
}
