//! Two `danemta serve` nodes sharing one queue on PostgreSQL (`[queue] store = "postgres"`),
//! a private server of the lab: mail accepted on either node is delivered exactly once, and
//! `danemta queue` on either node sees and acts on the whole queue.
//!
//! As in `serve_daemon.rs`, `[[policy]]` entries route `example.test` to an in-process SMTP
//! sink on `[127.0.0.1]:PORT`, which records what it gets, and `dead.test` to a closed port
//! (its mail stays queued, deferred). swaks submits. Every daemon is stopped by a Drop guard
//! (SIGTERM, then SIGKILL); the database server by the lab's.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::sleep;
use std::time::{Duration, Instant};

use danemta_lab::postgres::Postgres;
use serde_json::Value;
use smtp::HeloName;
use smtp::reply::Reply;
use smtp::server::{Acceptor, Client, MailFrom, QueueId, RcptTo, Server, Transaction};

/// How long to wait for anything asynchronous (a delivery, a daemon's start).
const WAIT: Duration = Duration::from_secs(30);

/// A directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "danemta-{what}-test-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn free_addr() -> SocketAddr {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// Polls `done` every 50 ms for up to `limit`.
fn until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if done() {
            return true;
        }
        sleep(Duration::from_millis(50));
    }
    done()
}

// ---------------------------------------------------------------------------------------------
// The SMTP sink

type Inbox = Arc<Mutex<Vec<String>>>;

/// Accepts every recipient and records every message's content.
struct Recorder {
    inbox: Inbox,
}

impl Acceptor for Recorder {
    async fn rcpt(&self, _: &Client, _: &MailFrom, _: &RcptTo) -> Result<(), Reply> {
        Ok(())
    }

    async fn message(&self, _: &Client, _: &Transaction, body: Vec<u8>) -> Result<QueueId, Reply> {
        if let Ok(mut inbox) = self.inbox.lock() {
            inbox.push(String::from_utf8_lossy(&body).into_owned());
        }
        Ok(QueueId("sink".into()))
    }
}

/// An SMTP sink on 127.0.0.1 (no TLS), on a thread with its own runtime.
struct Sink {
    addr: SocketAddr,
    inbox: Inbox,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn start() -> Sink {
        let std_listener = StdListener::bind("127.0.0.1:0").unwrap();
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let inbox = Inbox::default();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let recorder = Recorder {
            inbox: inbox.clone(),
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                let mut config = smtp::server::Config::new(HeloName::new("sink.test").unwrap());
                config.timeouts = smtp::server::Timeouts::uniform(Duration::from_secs(10));
                let server = Arc::new(Server::new(config, Arc::new(recorder)));
                tokio::select! {
                    _ = relay::listener::serve_listener(listener, server, relay::listener::ConnectionLimits::overall(20), "smtp") => {}
                    _ = stopped => {}
                }
            });
        });
        Sink {
            addr,
            inbox,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn got(&self) -> Vec<String> {
        self.inbox.lock().unwrap().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The nodes

/// One `danemta serve` on the shared queue, with a directory of its own.
struct Node {
    name: String,
    child: Option<Child>,
    log: PathBuf,
    config: PathBuf,
    listen: SocketAddr,
}

impl Node {
    fn start(dir: &Path, name: &str, url: &str, sink: SocketAddr, dead: SocketAddr) -> Node {
        let listen = free_addr();
        let config = format!(
            r#"[server]
hostname = "{name}.relay.test"
[[server.listen]]
address = "{listen}"
mode = "smtp"
[dns]
resolver = "validating@127.0.0.1:9"
timeout = "1s"
[queue]
dir = "{queue}"
store = "postgres"
url = "{url}"
retry_first = "1s"
retry_max = "2s"
[metrics]
listen = "{metrics}"
[[policy]]
domain = "example.test"
level = "may"
next_hop = "[{sink_ip}]:{sink_port}"
[[policy]]
domain = "dead.test"
level = "may"
next_hop = "[{dead_ip}]:{dead_port}"
"#,
            queue = dir.join(name).display(),
            metrics = free_addr(),
            sink_ip = sink.ip(),
            sink_port = sink.port(),
            dead_ip = dead.ip(),
            dead_port = dead.port(),
        );
        let config_path = dir.join(format!("{name}.toml"));
        fs::write(&config_path, config).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_danemta"))
            .arg("serve")
            .arg("--config")
            .arg(&config_path)
            .env_remove("DANEMTA_LOG_FORMAT")
            .env_remove("DANEMTA_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        let mut node = Node {
            name: name.to_owned(),
            child: Some(child),
            log,
            config: config_path,
            listen,
        };
        let ready = until(WAIT, || {
            if let Some(Ok(Some(status))) = node.child.as_mut().map(Child::try_wait) {
                panic!(
                    "{} exited during startup ({status}):\n{}",
                    node.name,
                    node.log()
                );
            }
            TcpStream::connect_timeout(&listen, Duration::from_millis(200)).is_ok()
        });
        assert!(
            ready,
            "{} does not listen on {listen}:\n{}",
            node.name,
            node.log()
        );
        node
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Submits a message to `to` with `body`; asserts the `250`.
    fn submit(&self, to: &str, body: &str) {
        let out = Command::new("swaks")
            .args(["--server", &self.listen.to_string()])
            .args(["--from", "a@sender.test", "--to", to])
            .args(["--ehlo", "client.test"])
            .args(["--body", body])
            .args(["--timeout", "20"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "swaks to {} failed:\n{}{}\nlog:\n{}",
            self.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// `danemta queue --config NODE.toml ARGS…`: its status and standard output.
    fn queue(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_danemta"))
            .arg("queue")
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// The queue as `danemta queue list --json` on this node shows it.
    fn listed(&self) -> Vec<Value> {
        let (code, out) = self.queue(&["list", "--json"]);
        assert_eq!(code, 0, "{out}");
        out.lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        if !until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        }) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[test]
fn two_nodes_on_one_postgres_queue_deliver_each_message_once() {
    let pg = Postgres::start().unwrap();
    let url = pg.create_database().unwrap();
    let sink = Sink::start();
    let dead = free_addr();
    let dir = TempDir::new("serve-postgres");
    let nodes = [
        Node::start(&dir.0, "node1", &url, sink.addr, dead),
        Node::start(&dir.0, "node2", &url, sink.addr, dead),
    ];
    for node in &nodes {
        assert!(
            node.log().contains("queue: PostgreSQL at 127.0.0.1:"),
            "{}",
            node.log()
        );
    }

    // Mail accepted on each node.
    let total = 12;
    for n in 0..total {
        nodes[n % 2].submit("b@example.test", &format!("message number {n}"));
    }
    let logs = || format!("node1:\n{}\nnode2:\n{}", nodes[0].log(), nodes[1].log());
    assert!(
        until(WAIT, || sink.got().len() >= total),
        "{} of {total} delivered\n{}",
        sink.got().len(),
        logs()
    );
    // Give a duplicate time to show up, then count each message.
    sleep(Duration::from_secs(3));
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for body in sink.got() {
        let n = (0..total)
            .find(|n| body.contains(&format!("message number {n}\r\n")))
            .unwrap_or_else(|| panic!("an unknown message: {body}"));
        *seen.entry(n).or_default() += 1;
    }
    assert_eq!(seen.len(), total, "every message delivered: {seen:?}");
    assert!(
        seen.values().all(|&k| k == 1),
        "each exactly once: {seen:?}\n{}",
        logs()
    );
    assert!(
        until(WAIT, || nodes[1].listed().is_empty()),
        "delivered mail leaves the shared queue"
    );

    // A message that cannot go out stays queued; either node's `danemta queue` sees it and
    // acts on it.
    nodes[0].submit("x@dead.test", "stuck");
    let listed = nodes[1].listed();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let id = listed[0]["queue_id"].as_str().unwrap().to_owned();
    assert_eq!(listed[0]["recipients"][0]["address"], "x@dead.test");
    let (code, out) = nodes[1].queue(&["hold", &id]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(nodes[0].listed()[0]["queue_name"], "hold");
    let (code, out) = nodes[0].queue(&["show", &id]);
    assert_eq!(code, 0, "{out}");
    let (code, out) = nodes[1].queue(&["delete", &id]);
    assert_eq!(code, 0, "{out}");
    assert!(nodes[0].listed().is_empty());
    let (code, _) = nodes[0].queue(&["show", &id]);
    assert_eq!(code, 67, "gone for every node");
    assert_eq!(sink.got().len(), total, "nothing else was delivered");
}
