//! Shared helpers of the signaling tests: a SIP server on loopback over a throwaway
//! database with one seat, and sipp driven as a real peer.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use signaling::{SipConfig, SipServer};
use storage::testing::TestDb;

pub const PASSWORD: &str = "secret-pass-1";

pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/sipp")
        .join(name)
}

/// A free TCP+UDP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    loop {
        let t = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = t.local_addr().expect("addr").port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Creates wallet `owner` and a seat `username` with [`PASSWORD`] in `realm`.
pub async fn seat(db: &storage::Db, username: &str, realm: &str) {
    let now = 1_000i64;
    sqlx::query(
        "INSERT INTO wallets (owner_kind, owner_ref, name, currency, created_at, updated_at) \
         VALUES ('company', $1, '', 'USD', $2, $2)",
    )
    .bind(username)
    .bind(now)
    .execute(db.pool())
    .await
    .expect("wallet");
    let (wallet,): (i64,) = sqlx::query_as("SELECT id FROM wallets WHERE owner_ref = $1")
        .bind(username)
        .fetch_one(db.pool())
        .await
        .expect("wallet id");
    signaling::store::create_seat(db, username, wallet, PASSWORD, realm, "")
        .await
        .expect("seat");
}

/// A server on 127.0.0.1 (UDP and TCP on one free port) with `tweak` applied to the
/// default config, over a fresh SQLite database holding seat `alice`.
pub async fn server(tweak: impl FnOnce(&mut SipConfig)) -> (SipServer, TestDb) {
    let tdb = storage::testing::sqlite().await;
    seat(&tdb.db, "alice", "papercup").await;
    seat(&tdb.db, "bob", "papercup").await;
    let port = free_port();
    let mut cfg = SipConfig {
        udp: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        tcp: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        ..SipConfig::default()
    };
    // sipp answers the first challenge it sees and knows MD5 only.
    cfg.registrar.algorithms = vec![signaling::digest::Algorithm::Md5];
    tweak(&mut cfg);
    let server = SipServer::start(cfg, tdb.db.clone())
        .await
        .expect("sip server");
    (server, tdb)
}

/// The result of one sipp run.
#[derive(Debug)]
pub struct SippRun {
    pub ok: bool,
    pub output: Output,
    pub messages: String,
    pub errors: String,
}

/// Runs sipp against `target` with `args`, at most `timeout`; its message trace is
/// returned for assertions on what Papercup sent.
pub async fn sipp(
    target: Option<SocketAddr>,
    scenario_name: &str,
    args: &[&str],
    timeout: Duration,
) -> SippRun {
    let dir = tempfile::tempdir().expect("tempdir");
    let msg = dir.path().join("messages.log");
    let err = dir.path().join("errors.log");
    let mut cmd = Command::new("timeout");
    cmd.arg("-k")
        .arg("2")
        .arg(timeout.as_secs().to_string())
        .arg("sipp");
    if let Some(t) = target {
        cmd.arg(t.to_string());
    }
    cmd.arg("-sf")
        .arg(scenario(scenario_name))
        .args(["-nostdin", "-trace_msg", "-trace_err", "-message_file"])
        .arg(&msg)
        .arg("-error_file")
        .arg(&err)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let output = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("sipp runs (is sip-tester installed?)");
    SippRun {
        ok: output.status.success(),
        messages: std::fs::read_to_string(&msg).unwrap_or_default(),
        errors: std::fs::read_to_string(&err).unwrap_or_default(),
        output,
    }
}

/// Asserts a sipp run passed, printing its traces when not.
pub fn assert_passed(run: &SippRun, what: &str) {
    assert!(
        run.ok,
        "{what}: sipp failed ({:?})\nerrors:\n{}\nmessages:\n{}\nstderr:\n{}",
        run.output.status,
        run.errors,
        run.messages,
        String::from_utf8_lossy(&run.output.stderr)
    );
}
