//! The doorbell: how `danemta sendmail` and `danemta queue` wake the running daemon.
//!
//! Those commands write into the queue directly (as Postfix's `postdrop` writes into the
//! maildrop directory), so they work when the daemon is down; the daemon would find their
//! mail at its next periodic scan. To have it looked at now, they [`ring`] the daemon's
//! [`Doorbell`]: a Unix stream socket at `<queue dir>/wake.sock` (mode 0660, so that the
//! queue's group may ring it). A ring carries no data: connecting is the whole message, and a
//! burst of rings wakes the daemon once ([`Doorbell::rung`] takes every pending connection).
//! Whoever may connect can only make the daemon scan its queue a little earlier.

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::task::Poll;
use std::time::Duration;

use tokio::net::UnixListener;

/// The doorbell's file name in the queue directory.
pub const SOCKET: &str = "wake.sock";

/// The socket's permissions: the daemon's user and group may ring.
const MODE: u32 = 0o660;

/// How long [`Doorbell::rung`] pauses after a failed `accept` (out of file descriptors, say)
/// before trying again, so that a persistent failure does not spin.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Why the doorbell cannot be set up or rung.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    /// Another daemon answers on the socket: two daemons must not share one queue.
    #[error("{}: another danemta daemon is running on this queue", path.display())]
    InUse {
        /// The socket.
        path: PathBuf,
    },
    /// Something other than a socket has the socket's name; it is not ours to remove.
    #[error("{}: exists and is not a socket; not removing it", path.display())]
    NotASocket {
        /// The file.
        path: PathBuf,
    },
    /// [`Doorbell::bind`] was called outside a tokio runtime.
    #[error("the doorbell needs a tokio runtime (Doorbell::bind was called outside one)")]
    NoRuntime,
    /// A system call failed.
    #[error("{}: cannot {op}: {source}", path.display())]
    Io {
        /// The socket.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// Why it failed.
        source: io::Error,
    },
}

fn io_err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(io::Error) -> WakeError + 'a {
    move |source| WakeError::Io {
        path: path.to_owned(),
        op,
        source,
    }
}

/// The daemon's side: a listening socket at `DIR/wake.sock`, removed again on drop.
#[derive(Debug)]
pub struct Doorbell {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we made: drop removes only that file, not one a
    /// later daemon made in its place.
    identity: (u64, u64),
}

impl Doorbell {
    /// Binds `DIR/wake.sock`, removing a stale socket file left by a dead daemon; refuses
    /// ([`WakeError::InUse`]) when another live daemon answers on it. Mode 0660. Must be
    /// called within a tokio runtime ([`WakeError::NoRuntime`] otherwise).
    pub fn bind(dir: &Path) -> Result<Doorbell, WakeError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(WakeError::NoRuntime);
        }
        let path = dir.join(SOCKET);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(WakeError::NotASocket { path });
            }
            Ok(_) => match std::os::unix::net::UnixStream::connect(&path) {
                Ok(_) => return Err(WakeError::InUse { path }),
                // Nobody listens: the daemon that made it is gone.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io_err(&path, "remove the stale socket")(e)),
                    }
                }
                Err(e) => return Err(io_err(&path, "connect")(e)),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err(&path, "inspect")(e)),
        }
        let listener = UnixListener::bind(&path).map_err(io_err(&path, "bind"))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(MODE))
            .map_err(io_err(&path, "set the mode of"))?;
        let meta = std::fs::symlink_metadata(&path).map_err(io_err(&path, "inspect"))?;
        Ok(Doorbell {
            listener,
            identity: (meta.dev(), meta.ino()),
            path,
        })
    }

    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits until someone rings: accepts a connection, and with it every other one already
    /// waiting (a burst of rings is one wake-up), reads nothing that would block, and closes
    /// them. Cancel-safe: use it in `tokio::select!` beside the scheduler's timer.
    pub async fn rung(&self) {
        loop {
            let accepted = std::future::poll_fn(|cx| {
                let mut rung = false;
                loop {
                    match self.listener.poll_accept(cx) {
                        Poll::Ready(Ok((stream, _))) => {
                            // A ring has no content; whatever a client sent is dropped unread
                            // beyond this (never waited for).
                            let _ = stream.try_read(&mut [0u8; 16]);
                            rung = true;
                        }
                        Poll::Ready(Err(e)) if !rung => return Poll::Ready(Err(e)),
                        Poll::Ready(Err(_)) | Poll::Pending if rung => return Poll::Ready(Ok(())),
                        Poll::Ready(Err(_)) | Poll::Pending => return Poll::Pending,
                    }
                }
            })
            .await;
            match accepted {
                Ok(()) => return,
                Err(_) => tokio::time::sleep(ACCEPT_RETRY).await,
            }
        }
    }
}

impl Drop for Doorbell {
    fn drop(&mut self) {
        let ours = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The client's side: connects to `DIR/wake.sock` and closes. `Ok(true)` when a daemon was
/// rung, `Ok(false)` when none listens (no socket, or a stale one: the mail waits for the
/// daemon's next start); an error for anything else (e.g. no permission on the socket).
pub fn ring(dir: &Path) -> Result<bool, WakeError> {
    let path = dir.join(SOCKET);
    match std::os::unix::net::UnixStream::connect(&path) {
        Ok(_stream) => Ok(true),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            Ok(false)
        }
        Err(e) => Err(io_err(&path, "connect")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> TempDir {
            let path = std::env::temp_dir().join(format!(
                "danemta-wake-{name}-{}-{}",
                std::process::id(),
                crate::queue::QueueId::generate()
            ));
            std::fs::create_dir_all(&path).expect("temp dir");
            TempDir(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn ringing_with_no_daemon_says_so() {
        let dir = TempDir::new("none");
        assert!(!ring(&dir.0).expect("no socket"));
        // A stale socket (its listener gone) is the same as none.
        let stale = std::os::unix::net::UnixListener::bind(dir.0.join(SOCKET)).expect("bind");
        drop(stale);
        assert!(!ring(&dir.0).expect("stale socket"));
    }

    #[test]
    fn bind_needs_a_runtime() {
        let dir = TempDir::new("rt");
        assert!(matches!(Doorbell::bind(&dir.0), Err(WakeError::NoRuntime)));
    }

    #[tokio::test]
    async fn a_ring_wakes_the_doorbell_and_a_burst_wakes_it_once() {
        let dir = TempDir::new("ring");
        let bell = Doorbell::bind(&dir.0).expect("bind");
        let mode = std::fs::metadata(bell.path())
            .expect("socket")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o660);
        // Nobody rang: not woken.
        let quiet = tokio::time::timeout(Duration::from_millis(50), bell.rung()).await;
        assert!(quiet.is_err());
        for _ in 0..3 {
            assert!(ring(&dir.0).expect("ring"));
        }
        tokio::time::timeout(Duration::from_secs(5), bell.rung())
            .await
            .expect("woken");
        let again = tokio::time::timeout(Duration::from_millis(50), bell.rung()).await;
        assert!(again.is_err(), "three rings, one wake-up");
        // From another thread, while waiting.
        let d = dir.0.clone();
        let ringer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            ring(&d)
        });
        tokio::time::timeout(Duration::from_secs(5), bell.rung())
            .await
            .expect("woken");
        assert!(ringer.join().expect("thread").expect("ring"));
    }

    #[tokio::test]
    async fn a_second_daemon_is_refused_and_a_stale_socket_replaced() {
        let dir = TempDir::new("twice");
        let bell = Doorbell::bind(&dir.0).expect("bind");
        assert!(matches!(
            Doorbell::bind(&dir.0),
            Err(WakeError::InUse { .. })
        ));
        let path = bell.path().to_owned();
        drop(bell);
        assert!(!path.exists(), "drop removes the socket");
        // A dead daemon's socket file.
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
        let bell = Doorbell::bind(&dir.0).expect("stale socket replaced");
        assert!(ring(&dir.0).expect("ring"));
        drop(bell);
        // Not a socket: left alone.
        std::fs::write(&path, b"mine").expect("write");
        assert!(matches!(
            Doorbell::bind(&dir.0),
            Err(WakeError::NotASocket { .. })
        ));
        assert_eq!(std::fs::read(&path).expect("kept"), b"mine");
    }
}
