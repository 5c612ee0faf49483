//! What orgsyncd tells systemd, without a new dependency: readiness and
//! stopping over `$NOTIFY_SOCKET` (sd_notify(3) for `Type=notify` units),
//! and whether stderr is the journal (`$JOURNAL_STREAM`), where timestamps
//! and colour codes would be doubled or shown as escapes.

use std::io;
use std::os::unix::net::UnixDatagram;

/// Why a notification could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` names an abstract socket with an invalid name.
    #[error("NOTIFY_SOCKET {socket:?} is not a usable socket address")]
    Address {
        /// The variable's value.
        socket: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Sending the datagram failed.
    #[error("cannot notify systemd at {socket:?}")]
    Send {
        /// The variable's value.
        socket: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
}

/// Sends `state` (e.g. `READY=1`) to the service manager when started by
/// one (`$NOTIFY_SOCKET` set); does nothing and returns `Ok(false)`
/// otherwise. `Ok(true)` means the datagram was sent.
pub fn notify(state: &str) -> Result<bool, NotifyError> {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = socket.to_string_lossy().into_owned();
    let sock = UnixDatagram::unbound().map_err(|source| NotifyError::Send {
        socket: socket.clone(),
        source,
    })?;
    // A leading '@' is systemd's spelling of a Linux abstract socket.
    let sent = if let Some(name) = socket.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).map_err(
            |source| NotifyError::Address {
                socket: socket.clone(),
                source,
            },
        )?;
        sock.send_to_addr(state.as_bytes(), &addr)
    } else {
        sock.send_to(state.as_bytes(), &socket)
    };
    sent.map_err(|source| NotifyError::Send { socket, source })?;
    Ok(true)
}

/// True when stderr is connected to the journal: `$JOURNAL_STREAM` is
/// `DEVICE:INODE` and names stderr's own file (systemd sets it for the
/// service's stdout/stderr; a child whose stderr was redirected inherits
/// the variable but not the stream, and keeps its timestamps).
pub fn stderr_is_journal() -> bool {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let fd = io::stderr().as_raw_fd();
    match std::fs::metadata(format!("/proc/self/fd/{fd}")) {
        Ok(m) => m.dev() == dev && m.ino() == ino,
        // Without /proc, trust the variable: a wrong guess only drops
        // timestamps.
        Err(_) => true,
    }
}
