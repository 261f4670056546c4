//! The built-in TURN relay against coturn 4.6 (`turnserver`), same run, same load from
//! coturn's own `turnutils_uclient` to a `turnutils_peer` echo on loopback: packets relayed
//! per second, CPU seconds per million relayed packets, loss, RTT and jitter.
//!
//! Run: `cargo bench --bench turn_vs_coturn` (needs Debian's coturn package; scripts/bench
//! installs it).

mod common;
use common::{cpu_secs, free_port};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use turn_server::{TurnConfig, TurnServer};

const SECRET: &str = "bench-secret-0123456789";

struct Run {
    relayed: u64,
    wall: f64,
    cpu: f64,
    lost: String,
    rtt: String,
    jitter: String,
}

fn field<'a>(text: &'a str, label: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.split_once(label).map(|(_, r)| r.trim()))
        .unwrap_or("?")
}

/// Runs uclient with `clients` clients sending `messages` each every `interval_ms`.
fn load(port: u16, peer: u16, clients: u32, messages: u32, interval_ms: u32) -> (String, f64) {
    let user = format!("bench{clients}x{interval_ms}");
    let start = Instant::now();
    let out = Command::new("/usr/bin/turnutils_uclient")
        .args([
            "-W",
            SECRET,
            "-u",
            &user,
            "-e",
            "127.0.0.1",
            "-r",
            &peer.to_string(),
        ])
        .args([
            "-m",
            &clients.to_string(),
            "-n",
            &messages.to_string(),
            "-l",
            "170",
        ])
        .args([
            "-z",
            &interval_ms.to_string(),
            "-c",
            "-p",
            &port.to_string(),
            "127.0.0.1",
        ])
        .output()
        .expect("turnutils_uclient (Debian's coturn package)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (text, start.elapsed().as_secs_f64())
}

fn summarize(text: &str, wall: f64, cpu: f64) -> Run {
    // The final line: "start_mclient: tot_send_msgs=N, tot_recv_msgs=M".
    let last = field(text, "start_mclient: tot_send_msgs=");
    let mut nums = last
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse::<u64>().ok());
    let (sent, recv) = (nums.next().unwrap_or(0), nums.next().unwrap_or(0));
    if sent == 0 {
        eprintln!(
            "uclient output:\n{}",
            text.lines().rev().take(8).collect::<Vec<_>>().join("\n")
        );
    }
    Run {
        relayed: sent + recv,
        wall,
        cpu,
        lost: field(text, "Total lost packets")
            .split(',')
            .next()
            .unwrap_or("?")
            .to_string(),
        rtt: field(text, "Average round trip delay")
            .split(';')
            .next()
            .unwrap_or("?")
            .to_string(),
        jitter: field(text, "Average jitter")
            .split(';')
            .next()
            .unwrap_or("?")
            .to_string(),
    }
}

fn print_row(server: &str, load_name: &str, r: &Run) {
    println!(
        "| {server} | {load_name} | {} | {:.0} pkt/s | {:.2} s | {:.2} s | {} | {} | {} |",
        r.relayed,
        r.relayed as f64 / r.wall,
        r.cpu,
        r.cpu / (r.relayed as f64 / 1e6),
        r.lost,
        r.rtt,
        r.jitter
    );
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let peer_port = free_port();
    let _peer = Killed(
        Command::new("/usr/bin/turnutils_peer")
            .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnutils_peer"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let loads = [
        ("20 clients × 200 pkt/s", 20, 2000, 5),
        ("50 clients × 500 pkt/s", 50, 2500, 2),
    ];
    println!("| server | load (170-byte packets, echoed) | packets relayed | throughput | CPU | CPU per million packets | lost | RTT | jitter |");
    println!("|---|---|---|---|---|---|---|---|---|");

    // Papercup's relay, in this process (the client and peer are other processes).
    let ours = TurnServer::start(TurnConfig {
        secrets: vec![SECRET.into()],
        udp: Some(([127, 0, 0, 1], 0).into()),
        allow_peers: vec!["127.0.0.1/32".parse().expect("net")],
        max_allocations_per_user: 1000,
        ..TurnConfig::default()
    })
    .await
    .expect("start the relay");
    let port = ours.udp_addr().expect("udp").port();
    let me = std::process::id();
    for (name, clients, messages, interval) in loads {
        let cpu0 = cpu_secs(me);
        let (text, wall) =
            tokio::task::spawn_blocking(move || load(port, peer_port, clients, messages, interval))
                .await
                .expect("load");
        let r = summarize(&text, wall, cpu_secs(me) - cpu0);
        print_row("Papercup", name, &r);
    }
    ours.close().await;

    // coturn with the equivalent settings.
    let cport = free_port();
    let coturn = Killed(
        Command::new("/usr/bin/turnserver")
            .args([
                "-n",
                "--listening-ip=127.0.0.1",
                &format!("--listening-port={cport}"),
            ])
            .args([
                "--relay-ip=127.0.0.1",
                "--use-auth-secret",
                &format!("--static-auth-secret={SECRET}"),
            ])
            .args([
                "--realm=papercup",
                "--no-tls",
                "--no-dtls",
                "--no-cli",
                "--allow-loopback-peers",
            ])
            .args([
                "--user-quota=1000",
                "--log-file=stdout",
                "--simple-log",
                "--no-stdout-log",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver (Debian's coturn package)"),
    );
    std::thread::sleep(Duration::from_millis(500));
    let pid = coturn.0.id();
    for (name, clients, messages, interval) in loads {
        let cpu0 = cpu_secs(pid);
        let (text, wall) = load(cport, peer_port, clients, messages, interval);
        let r = summarize(&text, wall, cpu_secs(pid) - cpu0);
        print_row("coturn 4.6", name, &r);
    }
}
