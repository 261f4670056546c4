//! The `papercup` binary driven as an operator would, on SQLite and on PostgreSQL.

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_papercup");
const DECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/twilio-sample.csv");

struct Env {
    url: String,
    dir: tempfile::TempDir,
    _db: storage::testing::TestDb,
}

async fn envs() -> Vec<Env> {
    storage::testing::all()
        .await
        .into_iter()
        .map(|db| Env {
            url: db.url.clone(),
            dir: tempfile::tempdir().expect("tempdir"),
            _db: db,
        })
        .collect()
}

impl Env {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(BIN);
        c.args(args)
            .current_dir(self.dir.path())
            .env("PAPERCUP_DATABASE__URL", &self.url)
            .env("PAPERCUP_NODE_ID", "cli-test")
            // SIP on a free loopback UDP port only: tests run in parallel.
            .env("PAPERCUP_SIP__LISTEN_UDP", "127.0.0.1:0")
            .env("PAPERCUP_SIP__LISTEN_TCP", "")
            .env_remove("PAPERCUP_CONFIG");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run papercup")
    }

    /// Runs `papercup args` with `input` on its standard input (a password, say).
    fn run_with_stdin(&self, args: &[&str], input: &str) -> Output {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run papercup");
        std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("wait")
    }

    /// Runs `papercup args` with `input` on standard input; it must succeed.
    fn ok_with_stdin(&self, args: &[&str], input: &str) -> String {
        let out = self.run_with_stdin(args, input);
        assert!(
            out.status.success(),
            "papercup {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Creates a wallet for `kind` `owner`; returns its id.
    fn wallet(&self, kind: &str, owner: &str) -> String {
        let w = self.json(&[
            "wallet",
            "create",
            "--owner-kind",
            kind,
            "--owner",
            owner,
            "--json",
        ]);
        w["id"].as_i64().expect("wallet id").to_string()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "papercup {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).expect("JSON output")
    }
}

#[tokio::test]
async fn twilio_deck_import_and_longest_prefix_lookup() {
    for env in envs().await {
        let out = env.ok(&["rates", "import", DECK]);
        assert!(out.contains("imported 30 rates"), "{out}");
        let q = env.json(&["rates", "lookup", "+442071234567", "--json"]);
        assert_eq!(q["rate"]["prefix"], "4420");
        assert_eq!(q["rate"]["rate_per_min"], 12_000);
        assert_eq!(q["rate"]["increment_first"], 60);
        let text = env.ok(&["rates", "lookup", "+442071234567"]);
        assert!(text.contains("United Kingdom - London"), "{text}");
        // Longer prefixes win; caller-ID classes narrow.
        assert_eq!(
            env.json(&["rates", "lookup", "+447400123456", "--json"])["rate"]["prefix"],
            "447400"
        );
        let from_us = env.json(&[
            "rates",
            "lookup",
            "+14155552671",
            "--from",
            "+12125550100",
            "--json",
        ]);
        assert_eq!(from_us["rate"]["rate_per_min"], 11_000);
        let from_gb = env.json(&[
            "rates",
            "lookup",
            "+14155552671",
            "--from",
            "+442071234567",
            "--json",
        ]);
        assert_eq!(from_gb["rate"]["rate_per_min"], 13_000);
        // National numbers are read in the default country (US).
        assert_eq!(
            env.json(&["rates", "lookup", "(204) 987-6543", "--json"])["rate"]["prefix"],
            "1204"
        );
        let missing = env.run(&["rates", "lookup", "+81312345678"]);
        assert_eq!(missing.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&missing.stderr).contains("no rate"));
        // Markup on re-import.
        env.ok(&["rates", "import", DECK, "--markup", "10", "--replace"]);
        assert_eq!(
            env.json(&["rates", "lookup", "+442071234567", "--json"])["rate"]["rate_per_min"],
            13_200
        );
        let listed = env.json(&["rates", "list", "--prefix", "44", "--json"]);
        assert_eq!(listed.as_array().map(Vec::len), Some(9));
    }
}

#[tokio::test]
async fn a_deck_with_one_bad_row_imports_nothing_and_names_the_line() {
    for env in envs().await {
        env.ok(&["rates", "import", DECK]);
        let bad_deck = std::fs::read_to_string(DECK)
            .expect("deck")
            .replace("0.0420", "0,0420")
            .replace("0.0120", "0.0100");
        let bad = env.dir.path().join("bad.csv");
        std::fs::write(&bad, bad_deck).expect("write");
        let out = env.run(&["rates", "import", bad.to_str().expect("path"), "--replace"]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("line 12"), "{err}");
        assert!(err.contains("nothing imported"), "{err}");
        // The old deck is untouched: nothing was deleted, nothing half-written.
        assert_eq!(
            env.json(&["rates", "lookup", "+442071234567", "--json"])["rate"]["rate_per_min"],
            12_000
        );
        assert_eq!(
            env.json(&["rates", "list", "--json"])
                .as_array()
                .map(Vec::len),
            Some(30)
        );
        // --dry-run checks without writing.
        let dry = env.ok(&["rates", "import", DECK, "--dry-run", "--markup", "50"]);
        assert!(dry.contains("would be imported"), "{dry}");
        assert_eq!(
            env.json(&["rates", "lookup", "+442071234567", "--json"])["rate"]["rate_per_min"],
            12_000
        );
    }
}

#[tokio::test]
async fn wallet_movements_from_the_cli_are_idempotent() {
    for env in envs().await {
        let id = env.wallet("company", "acme");
        // The same command twice: the second changes nothing.
        let credit = [
            "wallet",
            "credit",
            &id,
            "25.50",
            "--kind",
            "purchase",
            "--reason",
            "pay",
            "--idempotency-key",
            "pay_1",
            "--json",
        ];
        let first = env.json(&credit);
        assert_eq!(first["applied"], true);
        let again = env.json(&credit);
        assert_eq!(again["applied"], false);
        env.ok(&["wallet", "debit", &id, "0.50", "--reason", "correction"]);
        let shown = env.json(&["wallet", "show", &id, "--json"]);
        assert_eq!(shown["wallet"]["balance"], 25_000_000);
        assert_eq!(shown["ledger"].as_array().map(Vec::len), Some(2));
        let over = env.run(&["wallet", "debit", &id, "100", "--reason", "too much"]);
        assert_eq!(over.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&over.stderr).contains("insufficient funds"));
        let dup = env.run(&[
            "wallet",
            "create",
            "--owner-kind",
            "company",
            "--owner",
            "acme",
        ]);
        assert_eq!(dup.status.code(), Some(1));
        let no_reason = env.run(&["wallet", "credit", &id, "1"]);
        assert_eq!(no_reason.status.code(), Some(2), "clap usage error");
        env.ok(&[
            "wallet",
            "policy",
            &id,
            "--allow-countries",
            "GB,FR",
            "--max-rate",
            "0.10",
        ]);
        let w = env.json(&["wallet", "show", &id, "--json"]);
        assert_eq!(
            w["wallet"]["allowed_countries"],
            serde_json::json!(["GB", "FR"])
        );
        assert_eq!(w["wallet"]["max_rate_per_min"], 100_000);
        assert_eq!(
            env.json(&["calls", "list", "--json"]),
            serde_json::json!([])
        );
        assert!(env.ok(&["calls", "live"]).contains("no live calls"));
    }
}

#[test]
fn bad_configuration_names_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("papercup.toml"),
        "[billing]\nslice_secs = 10\nlead_secs = 20\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["config", "check"])
        .current_dir(dir.path())
        .env_remove("PAPERCUP_CONFIG")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("billing.slice_secs") && err.contains("papercup.toml"),
        "{err}"
    );
}

fn http_get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut resp = String::new();
    s.read_to_string(&mut resp).expect("read");
    let status = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status");
    let body = resp.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
    (status, body)
}

/// A running server sees a deck imported by the CLI, without a restart, and stops
/// cleanly on SIGTERM.
#[tokio::test]
async fn a_running_server_notices_cli_changes() {
    for env in envs().await {
        let mut serve = env.cmd(&["serve"]);
        serve.env("PAPERCUP_DATABASE__CHANGE_POLL_MS", "100");
        let (mut child, addr) = start_serve(serve);
        let (status, body) = http_get(&addr, "/healthz");
        assert_eq!(status, 200, "{body}");
        let (status, _) = http_get(&addr, "/api/rates?to=%2B442071234567");
        assert_eq!(status, 404);

        env.ok(&["rates", "import", DECK]);
        let start = Instant::now();
        let body = loop {
            let (status, body) = http_get(&addr, "/api/rates?to=%2B442071234567");
            if status == 200 {
                break body;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "server never saw the import"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["prefix"], "4420");

        stop(&mut child);
    }
}

/// Starts `papercup serve` on a free port; returns the process and its HTTP address
/// (read from the banner it prints on stdout).
fn start_serve(serve: Command) -> (std::process::Child, String) {
    let (child, http, _) = start_serve_sip(serve);
    (child, http)
}

/// Like [`start_serve`], also returning the SIP UDP address (from the `sip listening` line).
fn start_serve_sip(serve: Command) -> (std::process::Child, String, String) {
    start_serve_logged(serve, None)
}

/// Like [`start_serve_sip`], with the server's log written to `log`.
fn start_serve_logged(
    mut serve: Command,
    log: Option<&std::path::Path>,
) -> (std::process::Child, String, String) {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
        None => Stdio::null(),
    };
    let mut child = serve
        .env("PAPERCUP_HTTP__LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("start serve");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut sip = String::new();
    out.read_line(&mut sip).expect("sip line");
    let sip_udp = sip
        .split_whitespace()
        .find_map(|w| w.strip_prefix("udp:"))
        .unwrap_or_else(|| panic!("no SIP UDP address in {sip:?}"))
        .to_string();
    let mut line = String::new();
    out.read_line(&mut line).expect("banner");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    (child, addr, sip_udp)
}

fn stop(child: &mut std::process::Child) {
    let pid = child.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "serve exited with {status}");
            return;
        }
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("serve did not stop on SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// `papercup turn credentials` mints coturn-compatible credentials, and `papercup turn
/// status` lists a live allocation made with them through the running server's relay.
#[tokio::test]
async fn turn_credentials_and_status() {
    let db = storage::testing::sqlite().await;
    let env = Env {
        url: db.url.clone(),
        dir: tempfile::tempdir().expect("tempdir"),
        _db: db,
    };
    let secret = "cli-test-secret-0123456789";
    let turn_port = free_udp_port();
    let with_turn = |c: &mut Command| {
        c.env("PAPERCUP_TURN__SECRETS", secret)
            .env(
                "PAPERCUP_TURN__LISTEN_UDP",
                format!("127.0.0.1:{turn_port}"),
            )
            .env("PAPERCUP_TURN__ALLOW_PEERS", "127.0.0.1/32");
    };
    let mut cmd = env.cmd(&[
        "turn",
        "credentials",
        "--user",
        "alice",
        "--ttl",
        "600",
        "--json",
    ]);
    with_turn(&mut cmd);
    let out = cmd.output().expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let username = c["username"].as_str().expect("username");
    assert!(username.ends_with(":alice"));
    assert_eq!(
        c["credential"],
        turn_server::credentials::password(secret, username)
    );
    assert_eq!(
        c["urls"][0],
        format!("turn:127.0.0.1:{turn_port}?transport=udp")
    );
    // Without secrets the relay is off, and the command says so.
    let off = env.run(&["turn", "credentials", "--user", "alice"]);
    assert_eq!(off.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&off.stderr).contains("turn.secrets"));

    let mut serve = env.cmd(&["serve"]);
    with_turn(&mut serve);
    let (mut child, http) = start_serve(serve);

    let peer_port = free_udp_port();
    let mut peer = Command::new("/usr/bin/turnutils_peer")
        .args(["-L", "127.0.0.1", "-p", &peer_port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_peer (Debian's coturn package)");
    let mut client = Command::new("/usr/bin/turnutils_uclient")
        .args([
            "-W",
            secret,
            "-u",
            "bob",
            "-e",
            "127.0.0.1",
            "-r",
            &peer_port.to_string(),
        ])
        .args([
            "-n",
            "250",
            "-z",
            "20",
            "-c",
            "-p",
            &turn_port.to_string(),
            "127.0.0.1",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("turnutils_uclient");
    let start = Instant::now();
    let mut seen = false;
    while start.elapsed() < Duration::from_secs(4) {
        let mut st = env.cmd(&["turn", "status", "--json"]);
        st.env("PAPERCUP_HTTP__LISTEN", &http);
        let out = st.output().expect("status");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
        assert_eq!(v["enabled"], true);
        if v["allocations"].as_array().is_some_and(|a| {
            a.iter()
                .any(|x| x["username"].as_str().is_some_and(|u| u.ends_with(":bob")))
        }) {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = client.kill();
    let _ = client.wait();
    let _ = peer.kill();
    let _ = peer.wait();
    assert!(seen, "turn status never listed bob's allocation");
    let mut st = env.cmd(&["turn", "status"]);
    st.env("PAPERCUP_HTTP__LISTEN", &http);
    let text = String::from_utf8(st.output().expect("status").stdout).expect("utf-8");
    assert!(text.contains("allocations"), "{text}");
    stop(&mut child);
}

/// A real desk phone (baresip) registers with digest auth against a seat created with the
/// CLI, stays registered across its re-registrations, and `papercup registrations list`
/// shows its binding.
#[tokio::test]
async fn baresip_registers_and_its_binding_is_listed() {
    let env = envs().await.into_iter().next().expect("a database");
    env.ok(&[
        "wallet",
        "create",
        "--owner-kind",
        "company",
        "--owner",
        "acme",
    ]);
    env.ok_with_stdin(
        &[
            "seat",
            "create",
            "desk1",
            "--wallet",
            "1",
            "--password-stdin",
        ],
        "desk-phone-pass\n",
    );
    let seats = env.json(&["seat", "list", "--json"]);
    assert_eq!(seats[0]["username"], "desk1");

    let mut serve = env.cmd(&["serve"]);
    serve.env("PAPERCUP_SIP__MIN_EXPIRES", "5");
    let (mut server, http, sip) = start_serve_sip(serve);

    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_udp_port();
    std::fs::write(
        dir.path().join("config"),
        format!(
            "sip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
             module_path /usr/lib/baresip/modules\nmodule_app account.so\n\
             audio_player nil\naudio_source nil\n"
        ),
    )
    .expect("config");
    std::fs::write(
        dir.path().join("accounts"),
        format!("<sip:desk1@{sip}>;auth_pass=desk-phone-pass;regint=6\n"),
    )
    .expect("accounts");
    let mut phone = Command::new("baresip")
        .arg("-f")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("baresip (baresip-core) runs");

    // Registered…
    let start = Instant::now();
    let first = loop {
        let list = env.json(&["registrations", "list", "--json"]);
        if let Some(b) = list.as_array().and_then(|a| a.first()) {
            break b.clone();
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "baresip never registered"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(first["username"], "desk1");
    assert!(
        first["user_agent"]
            .as_str()
            .unwrap_or("")
            .starts_with("baresip"),
        "{first}"
    );
    assert!(
        first["source"]
            .as_str()
            .unwrap_or("")
            .ends_with(&format!(":{port}")),
        "{first}"
    );
    assert_eq!(first["node_id"], "cli-test");
    // …and still registered after re-registering (same binding, refreshed).
    let start = Instant::now();
    loop {
        let list = env.json(&["registrations", "list", "--json"]);
        let arr = list.as_array().cloned().unwrap_or_default();
        assert_eq!(arr.len(), 1, "one binding: {list}");
        let b = &arr[0];
        if b["updated_at"].as_i64() > first["updated_at"].as_i64() {
            assert_eq!(b["registered_at"], first["registered_at"]);
            assert_eq!(b["contact"], first["contact"]);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "baresip never re-registered: {b}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let text = env.ok(&["registrations", "list", "--seat", "desk1"]);
    assert!(text.contains("desk1") && text.contains("baresip"), "{text}");
    // The running server's SIP counters, through its loopback admin route.
    let status = env
        .cmd(&["sip", "status", "--json"])
        .env("PAPERCUP_HTTP__LISTEN", &http)
        .output()
        .expect("sip status");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert!(
        v["metrics"]["registrations"].as_u64().unwrap_or(0) >= 2,
        "{v}"
    );
    assert!(
        v["metrics"]["auth_successes"].as_u64().unwrap_or(0) >= 2,
        "{v}"
    );

    let _ = Command::new("kill")
        .args(["-TERM", &phone.id().to_string()])
        .status();
    let _ = phone.wait();
    stop(&mut server);
}

/// Trunks and numbers from the CLI: add (password from stdin, never printed), show,
/// list, update, disable, refusal of bad input naming the setting, numbers owned and
/// refused removal of a trunk carrying one; `trunk test` against a sipp carrier and
/// against a closed port.
#[tokio::test]
async fn trunks_and_numbers_from_the_cli() {
    const SECRET: &str = "trunk-pass-never-shown";
    for env in envs().await {
        let sipp_port = free_udp_port();
        let out = env.run_with_stdin(
            &[
                "trunk",
                "add",
                "carrier-a",
                "--provider",
                "twilio",
                "--host",
                "127.0.0.1",
                "--port",
                &sipp_port.to_string(),
                "--username",
                "acme",
                "--password-stdin",
                "--caller-ids",
                "+15551230000,+1555999*",
                "--inbound-sources",
                "127.0.0.1/32",
            ],
            &format!("{SECRET}\n"),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut shown = String::from_utf8_lossy(&out.stdout).into_owned();
        shown.push_str(&String::from_utf8_lossy(&out.stderr));
        shown.push_str(&env.ok(&["trunk", "show", "carrier-a"]));
        shown.push_str(&env.ok(&["trunk", "list"]));
        let j = env.json(&["trunk", "show", "carrier-a", "--json"]);
        shown.push_str(&j.to_string());
        shown.push_str(&env.json(&["trunk", "list", "--json"]).to_string());
        assert!(!shown.contains(SECRET), "the password leaked:\n{shown}");
        assert_eq!(j["has_password"], true);
        assert_eq!(j["max_cps"], 30, "Twilio's default");

        // Bad input names the setting and changes nothing.
        let bad = env.run(&["trunk", "update", "carrier-a", "--caller-ids", "5551234"]);
        assert_eq!(bad.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&bad.stderr).contains("caller_ids"));
        let bad = env.run(&["trunk", "add", "x", "--provider", "nope", "--host", "h"]);
        assert!(String::from_utf8_lossy(&bad.stderr).contains("--provider"));

        env.ok(&[
            "trunk",
            "update",
            "carrier-a",
            "--priority",
            "5",
            "--max-cps",
            "3",
        ]);
        env.ok(&["trunk", "disable", "carrier-a"]);
        let j = env.json(&["trunk", "show", "carrier-a", "--json"]);
        assert_eq!(
            (
                j["priority"].as_i64(),
                j["max_cps"].as_i64(),
                j["enabled"].as_bool()
            ),
            (Some(5), Some(3), Some(false))
        );
        env.ok(&["trunk", "enable", "carrier-a"]);

        env.ok(&["number", "add", "+15551230000", "--trunk", "carrier-a"]);
        env.ok(&[
            "number",
            "assign",
            "+15551230000",
            "--owner-kind",
            "company",
            "--owner",
            "acme",
            "--target",
            "seat:desk1",
        ]);
        let nums = env.json(&["number", "list", "--json"]);
        assert_eq!(nums[0]["owner_ref"], "acme");
        let refused = env.run(&["trunk", "remove", "carrier-a"]);
        assert!(String::from_utf8_lossy(&refused.stderr).contains("+15551230000"));

        // `trunk test`: a sipp carrier answers…
        let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/options_uas.xml");
        let mut carrier = Command::new("sipp")
            .args([
                "-sf",
                scenario,
                "-i",
                "127.0.0.1",
                "-p",
                &sipp_port.to_string(),
                "-m",
                "1",
                "-nostdin",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp");
        std::thread::sleep(Duration::from_millis(300));
        let r = env.json(&["trunk", "test", "carrier-a", "--json"]);
        assert_eq!(r["probe"]["status"], 200, "{r}");
        assert!(
            r["probe"]["latency_ms"].as_f64().unwrap_or(-1.0) >= 0.0,
            "{r}"
        );
        assert_eq!(r["probe"]["agent"], "sipp carrier");
        assert!(carrier.wait().expect("sipp").success());
        // …a closed port is a clear error, over UDP and TCP.
        let closed = free_udp_port().to_string();
        env.ok(&["trunk", "update", "carrier-a", "--port", &closed]);
        let r = env.run(&["trunk", "test", "carrier-a", "--timeout", "2"]);
        assert_eq!(r.status.code(), Some(1));
        let err = String::from_utf8_lossy(&r.stderr);
        assert!(
            err.contains("not reachable") && err.contains("refused"),
            "{err}"
        );
        env.ok(&["trunk", "update", "carrier-a", "--transport", "tcp"]);
        let r = env.run(&["trunk", "test", "carrier-a", "--timeout", "2"]);
        assert!(String::from_utf8_lossy(&r.stderr).contains("connection refused"));

        env.ok(&["number", "remove", "+15551230000"]);
        env.ok(&["trunk", "remove", "carrier-a"]);
        assert!(env
            .json(&["trunk", "list", "--json"])
            .as_array()
            .is_some_and(|a| a.is_empty()));
    }
}

/// A running server probes a trunk added with the CLI (no restart), marks it down when its
/// OPTIONS stop being answered and up again when answers return.
#[tokio::test]
async fn trunk_health_follows_the_carrier() {
    let env = envs().await.into_iter().next().expect("a database");
    let mut serve = env.cmd(&["serve"]);
    serve
        .env("PAPERCUP_TRUNKS__HEALTH_INTERVAL_SECS", "1")
        .env("PAPERCUP_TRUNKS__HEALTH_TIMEOUT_SECS", "1");
    let (mut server, _http) = start_serve(serve);
    let port = free_udp_port();
    env.ok(&[
        "trunk",
        "add",
        "carrier",
        "--provider",
        "generic",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
    ]);
    let scenario = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sipp/options_uas.xml");
    let carrier = || {
        Command::new("sipp")
            .args([
                "-sf",
                scenario,
                "-i",
                "127.0.0.1",
                "-p",
                &port.to_string(),
                "-nostdin",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sipp")
    };
    let wait_for = |state: &str| {
        let start = Instant::now();
        loop {
            let h = env.json(&["trunk", "health", "--json"]);
            if h[0]["state"] == state {
                return h[0].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "never {state}: {h}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    let mut sipp = carrier();
    let up = wait_for("up");
    assert_eq!(up["node_id"], "cli-test");
    assert!(up["latency_ms"].as_f64().is_some(), "{up}");
    assert_eq!(up["last_result"], "200 OK");
    let _ = sipp.kill();
    let _ = sipp.wait();
    let down = wait_for("down");
    assert!(
        down["last_result"]
            .as_str()
            .unwrap_or("")
            .contains("refused"),
        "{down}"
    );
    let text = env.ok(&["trunk", "list"]);
    assert!(text.contains("down on cli-test"), "{text}");
    let mut sipp = carrier();
    wait_for("up");
    let _ = sipp.kill();
    let _ = sipp.wait();
    stop(&mut server);
}

/// Renders a sipp scenario template of tests/sipp: `subs` replaced, the `<!--TAG-->…
/// <!--/TAG-->` sections named in `drop` removed.
fn scenario(
    dir: &std::path::Path,
    template: &str,
    out: &str,
    subs: &[(&str, &str)],
    drop: &[&str],
) -> std::path::PathBuf {
    let path = format!("{}/tests/sipp/{template}", env!("CARGO_MANIFEST_DIR"));
    let mut s = std::fs::read_to_string(&path).expect("template");
    for tag in drop {
        let (open, close) = (format!("<!--{tag}-->"), format!("<!--/{tag}-->"));
        let a = s
            .find(&open)
            .unwrap_or_else(|| panic!("{open} in {template}"));
        let b = s
            .find(&close)
            .unwrap_or_else(|| panic!("{close} in {template}"))
            + close.len();
        s.replace_range(a..b, "");
    }
    for (k, v) in subs {
        s = s.replace(k, v);
    }
    let p = dir.join(out);
    std::fs::write(&p, s).expect("write scenario");
    p
}

/// A sipp carrier (tests/sipp/carrier.xml) on `port`: refuses INVITEs with `status`, or
/// answers them (`status` 200); with `auth`, challenges with 407 first. Runs until killed.
fn carrier(dir: &std::path::Path, port: u16, status: u16, auth: bool) -> Running {
    let mut drop = vec![if status == 200 { "REFUSE" } else { "ANSWER" }];
    if !auth {
        drop.push("AUTH");
    }
    let name = format!("carrier-{port}-{status}-{auth}.xml");
    let st = status.to_string();
    let sc = scenario(dir, "carrier.xml", &name, &[("STATUS", st.as_str())], &drop);
    Command::new("sipp")
        .arg("-sf")
        .arg(&sc)
        .args(["-i", "127.0.0.1", "-p", &port.to_string(), "-nostdin"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .expect("sipp")
}

/// A child process killed (and reaped) when dropped, so a failing test leaves nothing
/// running.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kill(child: Running) {
    drop(child);
}

/// Runs one sipp UAC call from `ip` to Papercup at `sip`, seat credentials in `auth`.
fn uac(sc: &std::path::Path, ip: &str, sip: &str, auth: Option<(&str, &str)>) -> bool {
    let mut c = Command::new("sipp");
    c.arg(sip)
        .arg("-sf")
        .arg(sc)
        .args(["-i", ip, "-p", &free_udp_port().to_string()])
        .args(["-m", "1", "-nostdin", "-timeout", "40s", "-timeout_error"])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some((user, pass)) = auth {
        c.args(["-s", user, "-au", user, "-ap", pass]);
    }
    c.status().expect("sipp").success()
}

/// The desk phone desk1 calls `dialled`: answered (`expect` 200) and hung up by the phone,
/// or refused with `expect`.
fn phone_call(dir: &std::path::Path, sip: &str, dialled: &str, expect: u16, extra: &str) -> bool {
    phone_call_as(dir, sip, "desk1", dialled, expect, extra, false)
}

/// Like [`phone_call`] as seat `user`; with `gw_bye`, Papercup ends the answered call.
fn phone_call_as(
    dir: &std::path::Path,
    sip: &str,
    user: &str,
    dialled: &str,
    expect: u16,
    extra: &str,
    gw_bye: bool,
) -> bool {
    let mut drop = vec![if expect == 200 { "REFUSE" } else { "ANSWER" }];
    if expect == 200 {
        drop.push(if gw_bye { "PHONE_BYE" } else { "GW_BYE" });
    }
    let e = expect.to_string();
    let sc = scenario(
        dir,
        "phone.xml",
        &format!("phone-{user}-{expect}-{gw_bye}.xml"),
        &[
            ("DIALLED", dialled),
            ("EXPECTED", e.as_str()),
            ("EXTRA_HEADERS\n", extra),
        ],
        &drop,
    );
    uac(&sc, "127.0.0.1", sip, Some((user, "desk-phone-pass")))
}

/// The Call-ID of the last inbound call in the server log.
fn last_inbound(log: &std::path::Path) -> String {
    let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
    text.lines()
        .rev()
        .find(|l| l.contains("inbound call") && l.contains("phones="))
        .and_then(|l| l.split("call_id=").nth(1))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
        .expect("an inbound call in the log")
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::new();
    let mut esc = false;
    for c in s.chars() {
        match (esc, c) {
            (false, '\x1b') => esc = true,
            (true, 'm') => esc = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// A baresip desk phone registered as `user` to `sip`, answering calls at once.
fn baresip(dir: &std::path::Path, user: &str, pass: &str, sip: &str) -> Running {
    let home = dir.join(format!("baresip-{user}"));
    std::fs::create_dir_all(&home).expect("baresip dir");
    let port = free_udp_port();
    // Its microphone: 20 s of 8 kHz silence (ausine only runs at 48 kHz; baresip hangs up
    // when the file ends).
    let mic = home.join("mic.wav");
    write_wav(&mic, &vec![0; 8000 * 20]);
    std::fs::write(
        home.join("config"),
        format!(
            "sip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\n\
             module aufile.so\nmodule_app account.so\nmodule_app menu.so\n\
             audio_source aufile,{}\naudio_player aufile,{}\n",
            mic.display(),
            home.join("heard.wav").display()
        ),
    )
    .expect("config");
    std::fs::write(
        home.join("accounts"),
        format!("<sip:{user}@{sip}>;auth_pass={pass};regint=60;answermode=auto\n"),
    )
    .expect("accounts");
    Command::new("baresip")
        .arg("-f")
        .arg(&home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map(Running)
        .expect("baresip (baresip-core) runs")
}

/// The last lines of a log, for failure messages.
fn tail(log: &std::path::Path) -> String {
    let text = strip_ansi(&std::fs::read_to_string(log).unwrap_or_default());
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains(" DEBUG ") && !l.contains(" TRACE "))
        .collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// `calls show --json` of the newest call not `seen` yet (waiting for its settlement: the
/// phone may hang up before Papercup has settled), which becomes `seen`.
fn last_call(env: &Env, seen: &mut String) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let calls = env.json(&["calls", "list", "--json", "--limit", "1"]);
        if let Some(id) = calls[0]["call_id"].as_str() {
            if id != seen.as_str() {
                *seen = id.to_string();
                return env.json(&["calls", "show", id, "--json"]);
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no new call settled"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Desk-phone calls through trunks set up with the CLI while the server runs (sipp plays
/// the phone and the carriers): 503 fails over to the next trunk, 486 does not; a trunk
/// that challenges with 407 gets our credentials and the password never shows; a trunk
/// whose probes go unanswered is skipped until it answers again; inbound INVITEs from
/// unknown sources or to numbers not ours are refused. Every attempt is in `calls show`.
#[tokio::test]
async fn desk_phone_calls_through_trunks_with_failover() {
    const SECRET: &str = "carrier-secret-Zq81";
    let env = envs().await.into_iter().next().expect("a database");
    let dir = env.dir.path().to_path_buf();
    let wallet = env.wallet("company", "acme");
    env.ok(&["wallet", "credit", &wallet, "10", "--reason", "test"]);
    env.ok(&["rates", "import", DECK]);
    env.ok_with_stdin(
        &[
            "seat",
            "create",
            "desk1",
            "--wallet",
            &wallet,
            "--password-stdin",
        ],
        "desk-phone-pass\n",
    );

    let log = dir.join("serve.log");
    let mut serve = env.cmd(&["serve"]);
    serve
        .env("PAPERCUP_TRUNKS__HEALTH_INTERVAL_SECS", "1")
        .env("PAPERCUP_TRUNKS__HEALTH_TIMEOUT_SECS", "1")
        .env("PAPERCUP_TRUNKS__SETUP_TIMEOUT_SECS", "20")
        .env("PAPERCUP_DATABASE__CHANGE_POLL_MS", "100")
        .env("PAPERCUP_LOG__LEVEL", "debug,sqlx=warn");
    let (server, _http, sip) = start_serve_logged(serve, Some(&log));
    let mut server = Running(server);

    // Trunks and numbers added while the server runs.
    let (p1, p2) = (free_udp_port(), free_udp_port());
    for (name, port, prio) in [("first", p1, "1"), ("second", p2, "2")] {
        env.ok(&[
            "trunk",
            "add",
            name,
            "--provider",
            "generic",
            "--host",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--priority",
            prio,
        ]);
    }
    env.ok(&["number", "add", "+15550001111", "--trunk", "first"]);
    env.ok(&[
        "number",
        "assign",
        "+15550001111",
        "--owner-kind",
        "company",
        "--owner",
        "acme",
        "--target",
        "seat:desk1",
    ]);
    let health_of = |trunk: &str| -> String {
        let h = env.json(&["trunk", "health", "--json"]);
        h.as_array()
            .into_iter()
            .flatten()
            .find(|r| r["trunk"] == trunk)
            .map(|r| r["state"].as_str().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    let wait_health = |trunk: &str, state: &str| {
        let start = Instant::now();
        while health_of(trunk) != state {
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{trunk} never {state}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    const UK: &str = "+442071234567";
    let mut seen = String::new();

    // 1. The first trunk answers 503: the call fails over to the second.
    let c1 = carrier(&dir, p1, 503, false);
    let c2 = carrier(&dir, p2, 200, false);
    wait_health("first", "up");
    wait_health("second", "up");
    assert!(
        phone_call(&dir, &sip, UK, 200, ""),
        "call with failover; server log:\n{}",
        tail(&log)
    );
    let call = last_call(&env, &mut seen);
    let a = &call["attempts"];
    assert_eq!(a.as_array().map(Vec::len), Some(2), "{call}");
    assert_eq!(a[0]["trunk"], "first");
    assert_eq!(a[0]["status"], 503);
    assert!(
        a[0]["outcome"]
            .as_str()
            .unwrap_or("")
            .contains("next trunk"),
        "{call}"
    );
    assert_eq!(a[0]["target"], format!("sip:{UK}@127.0.0.1:{p1}"));
    assert_eq!(a[1]["trunk"], "second");
    assert_eq!(a[1]["outcome"], "answered");
    assert_eq!(call["trunk"], "second");
    assert_eq!(call["hangup_cause"], "normal");
    assert_eq!(call["caller"], "+15550001111");
    assert!(call["answered_at"].is_i64(), "{call}");
    let text = env.ok(&["calls", "show", call["call_id"].as_str().unwrap_or("")]);
    assert!(text.contains("rejected 503 → next trunk"), "{text}");
    // `trunk test --call` places a short call through one trunk and reports its flow.
    let t = env.json(&[
        "trunk",
        "test",
        "second",
        "--call",
        UK,
        "--seconds",
        "1",
        "--json",
    ]);
    assert_eq!(t["answered"], true, "{t}");
    let flow = t["flow"].to_string();
    assert!(
        flow.contains("180 Ringing") && flow.contains("200 OK"),
        "{t}"
    );
    let r = env.run(&["trunk", "test", "first", "--call", UK]);
    assert!(!r.status.success());
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(err.contains("rejected 503"), "{err}");
    kill(c1);

    // 2. The first trunk answers 486: no failover, the phone hears 486.
    let c1 = carrier(&dir, p1, 486, false);
    assert!(phone_call(&dir, &sip, UK, 486, ""), "busy, no failover");
    let call = last_call(&env, &mut seen);
    assert_eq!(call["attempts"].as_array().map(Vec::len), Some(1), "{call}");
    assert_eq!(call["attempts"][0]["status"], 486);
    assert_eq!(call["hangup_cause"], "not_answered");
    assert_eq!(call["cost"], 0);
    kill(c1);

    // 3. The first trunk challenges with 407: our INVITE carries its credentials.
    env.ok_with_stdin(
        &[
            "trunk",
            "update",
            "first",
            "--username",
            "trunkuser",
            "--password-stdin",
        ],
        &format!("{SECRET}\n"),
    );
    let c1 = carrier(&dir, p1, 200, true);
    std::thread::sleep(Duration::from_millis(500)); // the change reaches the server
    assert!(
        phone_call(&dir, &sip, UK, 200, ""),
        "call through a 407 trunk"
    );
    let call = last_call(&env, &mut seen);
    assert_eq!(call["attempts"][0]["trunk"], "first", "{call}");
    assert_eq!(call["attempts"][0]["outcome"], "answered", "{call}");
    for args in [
        &["trunk", "show", "first"][..],
        &["trunk", "show", "first", "--json"],
        &["trunk", "list", "--json"],
        &["trunk", "list"],
    ] {
        assert!(
            !env.ok(args).contains(SECRET),
            "{args:?} shows the password"
        );
    }

    // 4. The first trunk stops answering probes: marked down, skipped; back when it answers.
    kill(c1);
    wait_health("first", "down");
    assert!(
        phone_call(&dir, &sip, UK, 200, ""),
        "call around a down trunk"
    );
    let call = last_call(&env, &mut seen);
    assert_eq!(call["attempts"][0]["trunk"], "first", "{call}");
    assert_eq!(call["attempts"][0]["outcome"], "skipped: down", "{call}");
    assert_eq!(call["attempts"][1]["trunk"], "second", "{call}");
    let c1 = carrier(&dir, p1, 200, true);
    wait_health("first", "up");
    assert!(
        phone_call(&dir, &sip, UK, 200, ""),
        "the trunk is used again"
    );
    let call = last_call(&env, &mut seen);
    assert_eq!(call["trunk"], "first", "{call}\n{}", tail(&log));

    // 5. Presenting a number not ours is refused before any INVITE leaves.
    let ppi = "P-Preferred-Identity: <sip:+15559990000@127.0.0.1>\n";
    assert!(phone_call(&dir, &sip, UK, 403, ppi), "foreign caller ID");

    // 6. Credit runs out mid-call: Papercup hangs up both legs at the exact instant and the
    // wallet ends at zero. $0.30 a minute by the second, $0.015 of credit: 3 s of talk.
    env.ok_with_stdin(
        &["rates", "import", "-", "--format", "papercup"],
        "prefix,country,description,rate_per_min,connect_fee,increment_first,increment_next\n\
         6129999,AU,Test by the second,0.30,0,1,1\n",
    );
    let w2 = env.wallet("person", "bob");
    env.ok(&["wallet", "credit", &w2, "0.015", "--reason", "test"]);
    env.ok_with_stdin(
        &[
            "seat",
            "create",
            "desk2",
            "--wallet",
            &w2,
            "--password-stdin",
        ],
        "desk-phone-pass\n",
    );
    std::thread::sleep(Duration::from_millis(500)); // the rate reaches the server
    assert!(
        phone_call_as(&dir, &sip, "desk2", "+61299991234", 200, "", true),
        "credit-exhausted call; server log:\n{}",
        tail(&log)
    );
    let call = last_call(&env, &mut seen);
    assert_eq!(call["hangup_cause"], "credit_exhausted", "{call}");
    assert_eq!(call["duration_ms"], 3000, "{call}");
    assert_eq!(call["cost"], 15_000, "{call}");
    let shown = env.json(&["wallet", "show", &w2, "--json"]);
    assert_eq!(shown["wallet"]["balance"], 0, "{shown}");
    // With nothing left, the next call is refused before any INVITE: 402.
    assert!(
        phone_call_as(&dir, &sip, "desk2", "+61299991234", 402, "", false),
        "no credit"
    );

    // 7. Inbound: only from a trunk's sources, only to our numbers.
    env.ok(&[
        "trunk",
        "update",
        "first",
        "--inbound-sources",
        "127.0.0.2/32",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let inbound = |ip: &str, dialled: &str, expect: u16| {
        let e = expect.to_string();
        let sc = scenario(
            &dir,
            "carrier_call.xml",
            &format!("in-{expect}.xml"),
            &[("DIALLED", dialled), ("EXPECTED", e.as_str())],
            &[if expect == 200 { "REFUSE" } else { "ANSWER" }],
        );
        uac(&sc, ip, &sip, None)
    };
    assert!(
        inbound("127.0.0.2", "+15559990000", 404),
        "a number not ours"
    );
    assert!(
        inbound("127.0.0.2", "+15550001111", 480),
        "our number, no phone registered"
    );
    // From elsewhere the INVITE is a would-be desk phone: challenged, never routed.
    assert!(
        inbound("127.0.0.1", "+15550001111", 407),
        "an unknown source"
    );
    // With desk1's phone (baresip, auto-answer) registered, the DID rings it.
    let phone = baresip(&dir, "desk1", "desk-phone-pass", &sip);
    let start = Instant::now();
    while env
        .json(&["registrations", "list", "--json"])
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "baresip never registered"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let answered = inbound("127.0.0.2", "+15550001111", 200);
    kill(phone);
    assert!(
        answered,
        "the DID rings the seat's phone; server log:\n{}",
        tail(&log)
    );
    let call_in = last_inbound(&log);
    let shown = env.json(&["calls", "show", &call_in, "--json"]);
    assert_eq!(shown["attempts"][0]["direction"], "inbound", "{shown}");
    assert_eq!(shown["attempts"][0]["trunk"], "first", "{shown}");
    assert!(
        shown["attempts"][0]["outcome"]
            .as_str()
            .unwrap_or("")
            .starts_with("answered"),
        "{shown}"
    );
    kill(c1);
    kill(c2);
    stop(&mut server.0);
    let logged = std::fs::read_to_string(&log).expect("log");
    assert!(
        logged.contains("trunks and numbers reloaded"),
        "no reload logged"
    );
    assert!(!logged.contains(SECRET), "the password is in the log");
}

/// A 16-bit mono WAV at 8 kHz (the rate baresip's PCMU microphone file must have).
fn write_wav(path: &std::path::Path, samples: &[i16]) {
    let data = samples.len() as u32 * 2;
    let mut wav = Vec::with_capacity(44 + data as usize);
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&8000u32.to_le_bytes());
    wav.extend_from_slice(&16000u32.to_le_bytes());
    wav.extend_from_slice(&2u16.to_le_bytes());
    wav.extend_from_slice(&16u16.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data.to_le_bytes());
    for v in samples {
        wav.extend_from_slice(&v.to_le_bytes());
    }
    std::fs::write(path, wav).expect("wav");
}

/// A WAV of `secs` of a `freq` Hz sine at 8 kHz.
fn tone_wav(path: &std::path::Path, freq: f64, secs: u32) {
    let samples: Vec<i16> = (0..8000 * secs)
        .map(|i| {
            ((2.0 * std::f64::consts::PI * freq * f64::from(i) / 8000.0).sin() * 0.3 * 32767.0)
                as i16
        })
        .collect();
    write_wav(path, &samples);
}

/// The frequency (100–2000 Hz, 5 Hz steps) with the most energy (Goertzel), and the RMS.
fn dominant_hz(samples: &[i16], rate: f64) -> (f64, f64) {
    let x: Vec<f64> = samples.iter().map(|s| f64::from(*s)).collect();
    let rms = (x.iter().map(|v| v * v).sum::<f64>() / x.len().max(1) as f64).sqrt();
    let mut best = (0.0, 0.0);
    let mut f = 100.0;
    while f <= 2000.0 {
        let c = 2.0 * (2.0 * std::f64::consts::PI * f / rate).cos();
        let (mut s1, mut s2) = (0.0, 0.0);
        for v in &x {
            let s0 = v + c * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let p = s1 * s1 + s2 * s2 - c * s1 * s2;
        if p > best.1 {
            best = (f, p);
        }
        f += 5.0;
    }
    (best.0, rms)
}

/// A desk phone dials the echo test (`*43`): no trunk and no charge, and what it sends
/// (880 Hz from baresip's microphone file) comes back through Papercup's media engine,
/// recorded by baresip.
#[tokio::test]
async fn desk_phone_hears_itself_on_the_echo_test() {
    let env = envs().await.into_iter().next().expect("a database");
    let dir = env.dir.path().to_path_buf();
    let wallet = env.wallet("company", "acme");
    env.ok_with_stdin(
        &[
            "seat",
            "create",
            "desk1",
            "--wallet",
            &wallet,
            "--password-stdin",
        ],
        "desk-phone-pass\n",
    );
    let log = dir.join("serve.log");
    let mut serve = env.cmd(&["serve"]);
    serve
        .env("PAPERCUP_MEDIA__BIND_IP", "127.0.0.1")
        .env("PAPERCUP_MEDIA__ECHO_DELAY_MS", "200");
    let (server, _http, sip) = start_serve_logged(serve, Some(&log));
    let mut server = Running(server);

    let home = dir.join("baresip-echo");
    std::fs::create_dir_all(&home).expect("dir");
    let mic = home.join("mic.wav");
    tone_wav(&mic, 880.0, 30);
    let port = free_udp_port();
    std::fs::write(
        home.join("config"),
        format!(
            "sip_listen 127.0.0.1:{port}\nnet_interface 127.0.0.1\n\
             module_path /usr/lib/baresip/modules\nmodule g711.so\nmodule aufile.so\n\
             module aubridge.so\nmodule sndfile.so\nsnd_path {}\n\
             module_app account.so\nmodule_app menu.so\n\
             audio_source aufile,{}\naudio_player aubridge,sink\n",
            home.display(),
            mic.display()
        ),
    )
    .expect("config");
    std::fs::write(
        home.join("accounts"),
        format!("<sip:desk1@{sip}>;auth_pass=desk-phone-pass;regint=0;audio_codecs=PCMU\n"),
    )
    .expect("accounts");
    let status = Command::new("baresip")
        .arg("-f")
        .arg(&home)
        .args(["-e", &format!("/dial sip:*43@{sip}"), "-t", "6"])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(home.join("log.txt")).expect("log"))
        .stderr(Stdio::null())
        .status()
        .expect("baresip (baresip-core) runs");
    assert!(status.success() || status.code().is_some());
    let recording = std::fs::read_dir(&home)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().ends_with("-dec.wav"))
        .unwrap_or_else(|| {
            panic!(
                "baresip recorded nothing; it said:\n{}\nserver:\n{}",
                std::fs::read_to_string(home.join("log.txt")).unwrap_or_default(),
                tail(&log)
            )
        });
    let bytes = std::fs::read(&recording).expect("recording");
    let samples: Vec<i16> = bytes[44..]
        .chunks_exact(2)
        .map(|c| i16::from_le_bytes([c[0], c[1]]))
        .collect();
    assert!(samples.len() > 8000 * 3, "{} samples heard", samples.len());
    let (f, rms) = dominant_hz(&samples[8000..8000 * 3], 8000.0);
    assert!(
        (f - 880.0).abs() <= 10.0 && rms > 1000.0,
        "heard {f} Hz at RMS {rms}; server:\n{}",
        tail(&log)
    );
    let text = strip_ansi(&std::fs::read_to_string(&log).unwrap_or_default());
    assert!(text.contains("echo test"), "{}", tail(&log));
    stop(&mut server.0);
    // No charge, no CDR: the echo test is free.
    let calls = env.json(&["calls", "list", "--json"]);
    assert_eq!(calls.as_array().map(Vec::len), Some(0), "{calls}");
}
