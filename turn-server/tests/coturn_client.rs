//! The relay driven by coturn's own client tools (`turnutils_uclient`, `turnutils_peer`
//! from Debian's coturn package): REST credentials, relaying with zero loss to a peer the
//! configuration explicitly allows, TURN over TCP and over TLS.

use std::net::SocketAddr;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use turn_server::{TurnConfig, TurnServer};

const SECRET: &str = "coturn-test-secret";

fn tool(name: &str) -> String {
    let path = format!("/usr/bin/{name}");
    assert!(
        std::path::Path::new(&path).exists(),
        "{name} not found: install Debian's coturn package (scripts/test does)"
    );
    path
}

/// `turnutils_peer` on a free loopback port; killed (by PID) on drop.
struct Peer {
    child: Child,
    port: u16,
}

impl Peer {
    fn start() -> Peer {
        let port = free_udp_port();
        let child = Command::new(tool("turnutils_peer"))
            .args(["-L", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start turnutils_peer");
        std::thread::sleep(Duration::from_millis(300));
        Peer { child, port }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

async fn start(cfg: TurnConfig) -> TurnServer {
    TurnServer::start(TurnConfig {
        secrets: vec![SECRET.into()],
        udp: Some(loopback(0)),
        // Exactly the test peer's address, nothing wider.
        allow_peers: vec!["127.0.0.1/32".parse().expect("net")],
        ..cfg
    })
    .await
    .expect("start TURN")
}

/// Runs uclient (blocking, bounded by `timeout`) and returns its output.
async fn uclient(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new(tool("turnutils_uclient"))
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start turnutils_uclient");
        let start = std::time::Instant::now();
        loop {
            if child.try_wait().expect("wait").is_some() {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.wait_with_output().expect("output")
    })
    .await
    .expect("join")
}

/// (messages sent, packets lost, whole output) from uclient's summary lines.
fn totals(out: &Output) -> (u64, u64, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let num_after = |label: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.split_once(label).map(|(_, rest)| rest.to_string()))
            .and_then(|rest| rest.split_whitespace().next().map(str::to_string))
            .and_then(|n| n.trim_end_matches(',').parse().ok())
    };
    let lost = num_after("Total lost packets").unwrap_or(u64::MAX);
    let send_msgs = num_after("tot_send_msgs=").unwrap_or(0);
    (send_msgs, lost, text)
}

fn common_args(user: &str, peer: u16, messages: u32, clients: u32) -> Vec<String> {
    vec![
        "-W".into(),
        SECRET.into(),
        "-u".into(),
        user.into(),
        "-e".into(),
        "127.0.0.1".into(),
        "-r".into(),
        peer.to_string(),
        "-n".into(),
        messages.to_string(),
        "-m".into(),
        clients.to_string(),
        "-l".into(),
        "170".into(),
        "-z".into(),
        "5".into(),
        "-c".into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_over_udp_with_zero_loss() {
    let peer = Peer::start();
    let turn = start(TurnConfig::default()).await;
    let port = turn.udp_addr().expect("udp").port();
    let mut args = common_args("alice", peer.port, 1000, 3);
    args.extend(["-p".into(), port.to_string(), "127.0.0.1".into()]);
    let out = uclient(args).await;
    let (_, lost, text) = totals(&out);
    assert!(out.status.success(), "uclient failed:\n{text}");
    assert_eq!(lost, 0, "lost packets:\n{text}");
    let m = turn.metrics();
    assert!(m.packets_to_peers >= 3000, "{m:?}\n{text}");
    assert!(m.packets_from_peers >= 3000, "{m:?}");
    assert_eq!(m.auth_failures, 0);
    turn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_with_a_wrong_secret_gets_nothing() {
    let peer = Peer::start();
    let turn = start(TurnConfig::default()).await;
    let port = turn.udp_addr().expect("udp").port();
    let mut args = common_args("mallory", peer.port, 20, 1);
    args[1] = "wrong-secret".into();
    args.extend(["-p".into(), port.to_string(), "127.0.0.1".into()]);
    let out = uclient(args).await;
    let (_, _, text) = totals(&out);
    assert!(
        !out.status.success() || !text.contains("Total lost packets 0"),
        "{text}"
    );
    let m = turn.metrics();
    assert_eq!(m.allocations_total, 0, "{text}");
    assert_eq!(m.packets_to_peers, 0);
    assert!(m.auth_failures > 0);
    turn.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uclient_relays_over_tcp_and_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success());
    let peer = Peer::start();
    let turn = start(TurnConfig {
        tcp: Some(loopback(0)),
        tls: vec![loopback(0)],
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..TurnConfig::default()
    })
    .await;
    for (flags, port) in [
        (vec!["-t"], turn.tcp_addr().expect("tcp").port()),
        (vec!["-t", "-S"], turn.tls_addrs()[0].port()),
    ] {
        let before = turn.metrics().packets_to_peers;
        let mut args = common_args("tina", peer.port, 300, 1);
        args.extend(flags.iter().map(|s| s.to_string()));
        args.extend(["-p".into(), port.to_string(), "127.0.0.1".into()]);
        let out = uclient(args).await;
        let (_, lost, text) = totals(&out);
        assert!(out.status.success(), "uclient {flags:?} failed:\n{text}");
        assert_eq!(lost, 0, "{flags:?}:\n{text}");
        assert!(
            turn.metrics().packets_to_peers >= before + 300,
            "{flags:?}:\n{text}"
        );
    }
    turn.close().await;
}
