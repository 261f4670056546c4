//! The registrar against real peers: sipp as a desk phone (digest auth, wrong password,
//! replayed credentials, expired nonce, a flood of bad credentials next to a legitimate
//! phone), raw SHA-256 and TCP clients, and the binding store on both databases.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{assert_passed, server, sipp, PASSWORD};
use rsipstack::sip::Transport;
use signaling::store::{self, ApplyOutcome, Binding, BindingChange};

fn udp(server: &signaling::SipServer) -> SocketAddr {
    server.addr(Transport::Udp).expect("udp listener")
}

/// One sipp phone from 127.0.0.1 running `scenario` once as `user` with `password`.
async fn phone(
    server: &signaling::SipServer,
    scenario: &str,
    user: &str,
    password: &str,
) -> common::SippRun {
    sipp(
        Some(udp(server)),
        scenario,
        &[
            "-s",
            user,
            "-au",
            user,
            "-ap",
            password,
            "-m",
            "1",
            "-i",
            "127.0.0.1",
        ],
        Duration::from_secs(20),
    )
    .await
}

#[tokio::test]
async fn sipp_registers_with_digest_and_a_wrong_password_is_refused() {
    let (server, tdb) = server(|_| {}).await;
    let run = phone(&server, "register_ok.xml", "alice", PASSWORD).await;
    assert_passed(&run, "register");
    let b = store::bindings(&tdb.db, Some("alice"), 0)
        .await
        .expect("bindings");
    assert_eq!(b.len(), 1, "{b:?}");
    assert!(b[0].contact.starts_with("sip:alice@127.0.0.1:"), "{b:?}");
    assert!(b[0].source.starts_with("udp:127.0.0.1:"), "{b:?}");
    assert_eq!(b[0].user_agent, "sipp desk phone");

    let run = phone(&server, "register_wrong.xml", "bob", "not-the-password").await;
    assert_passed(&run, "wrong password");
    assert!(store::bindings(&tdb.db, Some("bob"), 0)
        .await
        .expect("bindings")
        .is_empty());
    let m = server.metrics().snapshot();
    assert_eq!(m.auth_failures, 1, "{m:?}");
    assert!(m.auth_successes >= 1, "{m:?}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_replayed_authorization_is_refused() {
    let (server, _tdb) = server(|_| {}).await;
    let run = phone(&server, "register_ok.xml", "alice", PASSWORD).await;
    assert_passed(&run, "register");
    // The credentials the phone sent, as an eavesdropper would have captured them.
    let captured = run
        .messages
        .lines()
        .find_map(|l| l.strip_prefix("Authorization: "))
        .expect("sipp's trace holds the Authorization it sent")
        .trim()
        .to_string();
    let set = format!("auth={captured}");
    let run = sipp(
        Some(udp(&server)),
        "replay.xml",
        &[
            "-s",
            "alice",
            "-set",
            "auth",
            &captured,
            "-m",
            "1",
            "-i",
            "127.0.0.1",
        ],
        Duration::from_secs(20),
    )
    .await;
    assert_passed(&run, &format!("replay ({set})"));
    server.shutdown().await;
}

#[tokio::test]
async fn an_expired_nonce_gets_stale_true_and_the_retry_succeeds() {
    let (server, tdb) = server(|c| c.registrar.nonce_lifetime = Duration::from_secs(2)).await;
    let run = phone(&server, "register_stale.xml", "alice", PASSWORD).await;
    assert_passed(&run, "stale nonce");
    assert_eq!(
        store::bindings(&tdb.db, Some("alice"), 0)
            .await
            .expect("b")
            .len(),
        1
    );
    // A stale nonce is not an authentication failure.
    assert_eq!(server.metrics().snapshot().auth_failures, 0);
    server.shutdown().await;
}

#[tokio::test]
async fn repeated_failures_block_the_source_while_a_legitimate_phone_registers() {
    let (server, tdb) = server(|c| {
        c.abuse.auth_fail_limit = 5;
        c.abuse.block_for = Duration::from_secs(60);
    })
    .await;
    let target = udp(&server);
    // The scanner, from 127.0.0.2, guessing passwords as fast as it can.
    let attacker = tokio::spawn(async move {
        sipp(
            Some(target),
            "register_wrong.xml",
            &[
                "-s",
                "alice",
                "-au",
                "alice",
                "-ap",
                "guess",
                "-m",
                "40",
                "-r",
                "20",
                "-l",
                "10",
                "-i",
                "127.0.0.2",
                "-recv_timeout",
                "2000",
            ],
            Duration::from_secs(30),
        )
        .await
    });
    // Meanwhile the real phone, from 127.0.0.1.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let phone = sipp(
        Some(target),
        "register_ok.xml",
        &[
            "-s",
            "alice",
            "-au",
            "alice",
            "-ap",
            PASSWORD,
            "-m",
            "3",
            "-i",
            "127.0.0.1",
        ],
        Duration::from_secs(20),
    )
    .await;
    let attacker = attacker.await.expect("join");
    assert_passed(&phone, "legitimate phone during the attack");
    assert!(
        !attacker.ok,
        "the attacker's later attempts must go unanswered"
    );
    assert!(server.abuse().is_blocked("127.0.0.2".parse().expect("ip")));
    assert!(!server.abuse().is_blocked("127.0.0.1".parse().expect("ip")));
    let m = server.metrics().snapshot();
    assert_eq!(m.sources_blocked, 1, "{m:?}");
    assert_eq!(m.auth_failures, 5, "no more failures once blocked: {m:?}");
    assert!(m.dropped_blocked > 0, "{m:?}");
    assert_eq!(
        store::bindings(&tdb.db, Some("alice"), 0)
            .await
            .expect("b")
            .len(),
        1
    );
    server.shutdown().await;
}

/// A minimal digest client over UDP or TCP, for what sipp cannot do (SHA-256).
mod raw {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    pub fn register(
        user: &str,
        target: SocketAddr,
        local: SocketAddr,
        proto: &str,
        cseq: u32,
        auth: Option<&str>,
    ) -> String {
        let mut m = format!(
            "REGISTER sip:{target} SIP/2.0\r\nVia: SIP/2.0/{proto} {local};branch=z9hG4bK{cseq}x{};rport\r\n\
             From: <sip:{user}@{target}>;tag=raw{cseq}\r\nTo: <sip:{user}@{target}>\r\n\
             Call-ID: raw-{user}@{local}\r\nCSeq: {cseq} REGISTER\r\n\
             Contact: <sip:{user}@{local};transport={}>\r\nMax-Forwards: 70\r\nExpires: 120\r\n",
            rand_u32(),
            proto.to_ascii_lowercase()
        );
        if let Some(a) = auth {
            m.push_str(&format!("Authorization: {a}\r\n"));
        }
        m.push_str("Content-Length: 0\r\n\r\n");
        m
    }

    fn rand_u32() -> u32 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos())
    }

    pub fn challenge(resp: &str, alg: &str) -> signaling::digest::DigestParams {
        resp.lines()
            .filter_map(|l| l.strip_prefix("WWW-Authenticate: "))
            .map(|v| signaling::digest::parse(v).expect("challenge parses"))
            .find(|p| p.algorithm.as_deref() == Some(alg))
            .unwrap_or_else(|| panic!("no {alg} challenge in {resp}"))
    }

    pub async fn udp_exchange(
        sock: &tokio::net::UdpSocket,
        target: SocketAddr,
        msg: &str,
    ) -> String {
        sock.send_to(msg.as_bytes(), target).await.expect("send");
        let mut buf = vec![0u8; 65535];
        let (n, _) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
            .await
            .expect("answer in time")
            .expect("recv");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    pub async fn tcp_exchange(s: &mut tokio::net::TcpStream, msg: &str) -> String {
        s.write_all(msg.as_bytes()).await.expect("write");
        let mut buf = vec![0u8; 65535];
        let mut got = String::new();
        while !got.contains("\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
                .await
                .expect("answer in time")
                .expect("read");
            assert!(n > 0, "connection closed");
            got.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
        got
    }
}

#[tokio::test]
async fn sha256_digest_over_udp_and_md5_over_tcp() {
    use signaling::digest::{answer, Algorithm};
    let (server, tdb) =
        server(|c| c.registrar.algorithms = vec![Algorithm::Sha256, Algorithm::Md5]).await;
    let target = udp(&server);

    // SHA-256 over UDP: the first challenge offered is SHA-256 (RFC 8760 order).
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let local = sock.local_addr().expect("addr");
    let r = raw::udp_exchange(
        &sock,
        target,
        &raw::register("alice", target, local, "UDP", 1, None),
    )
    .await;
    assert!(r.starts_with("SIP/2.0 401"), "{r}");
    let first = r
        .lines()
        .find(|l| l.starts_with("WWW-Authenticate:"))
        .expect("challenge");
    assert!(
        first.contains("algorithm=SHA-256") && first.contains("qop=\"auth\""),
        "{first}"
    );
    let ch = raw::challenge(&r, "SHA-256");
    let uri = format!("sip:{target}");
    let auth = answer(&ch, "alice", PASSWORD, "REGISTER", &uri, "c0ffee", 1).expect("answer");
    let r = raw::udp_exchange(
        &sock,
        target,
        &raw::register("alice", target, local, "UDP", 2, Some(&auth)),
    )
    .await;
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    // rport/received: the Via of the answer names where the request really came from.
    assert!(r.contains(&format!("rport={}", local.port())), "{r}");

    // MD5 over TCP, same connection for challenge and answer (connection reuse).
    let mut s = tokio::net::TcpStream::connect(server.addr(Transport::Tcp).expect("tcp"))
        .await
        .expect("connect");
    let local = s.local_addr().expect("addr");
    let r = raw::tcp_exchange(&mut s, &raw::register("bob", target, local, "TCP", 1, None)).await;
    assert!(r.starts_with("SIP/2.0 401"), "{r}");
    let ch = raw::challenge(&r, "MD5");
    let auth = answer(&ch, "bob", PASSWORD, "REGISTER", &uri, "beef", 1).expect("answer");
    let r = raw::tcp_exchange(
        &mut s,
        &raw::register("bob", target, local, "TCP", 2, Some(&auth)),
    )
    .await;
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    let b = store::bindings(&tdb.db, Some("bob"), 0).await.expect("b");
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].transport, "tcp");

    // Min-Expires: 30 s asked, 60 s minimum → 423 with Min-Expires.
    let ch = raw::challenge(
        &raw::tcp_exchange(&mut s, &raw::register("bob", target, local, "TCP", 3, None)).await,
        "MD5",
    );
    let auth = answer(&ch, "bob", PASSWORD, "REGISTER", &uri, "beef", 1).expect("answer");
    let short = raw::register("bob", target, local, "TCP", 4, Some(&auth))
        .replace("Expires: 120", "Expires: 30");
    let r = raw::tcp_exchange(&mut s, &short).await;
    assert!(r.starts_with("SIP/2.0 423"), "{r}");
    assert!(r.contains("Min-Expires: 60"), "{r}");
    server.shutdown().await;
}

fn binding(seat_id: i64, contact: &str, expires_at: i64) -> Binding {
    Binding {
        seat_id,
        username: String::new(),
        contact: contact.into(),
        source: "udp:192.0.2.1:5060".into(),
        transport: "udp".into(),
        call_id: String::new(),
        cseq: 0,
        user_agent: "test".into(),
        node_id: "node-a".into(),
        expires_at,
        registered_at: 0,
        updated_at: 0,
    }
}

#[tokio::test]
async fn binding_store_on_both_databases() {
    for tdb in storage::testing::all().await {
        let db = &tdb.db;
        common::seat(db, "carol", "papercup").await;
        let seat = store::seat_secret(db, "carol")
            .await
            .expect("q")
            .expect("seat");
        let id = seat.seat.id;
        let up = |c: &str, exp: i64| BindingChange::Upsert(binding(id, c, exp));
        // Two contacts in one REGISTER.
        let out = store::apply(
            db,
            id,
            "cid-1",
            1,
            &[up("sip:a@1", 10_000), up("sip:b@2", 20_000)],
            1_000,
        )
        .await
        .expect("apply");
        let ApplyOutcome::Applied(live) = out else {
            panic!("{out:?}")
        };
        assert_eq!(live.len(), 2);
        assert_eq!(live[0].username, "carol");
        // Same Call-ID, CSeq not higher: refused (RFC 3261 §10.3 step 7).
        let out = store::apply(db, id, "cid-1", 1, &[up("sip:a@1", 30_000)], 2_000)
            .await
            .expect("apply");
        assert_eq!(
            out,
            ApplyOutcome::OutOfOrder {
                contact: "sip:a@1".into()
            }
        );
        // Un-register one contact, then everything with '*'.
        let out = store::apply(
            db,
            id,
            "cid-1",
            2,
            &[BindingChange::Remove {
                contact: "sip:a@1".into(),
            }],
            3_000,
        )
        .await
        .expect("apply");
        let ApplyOutcome::Applied(live) = out else {
            panic!("{out:?}")
        };
        assert_eq!(live.len(), 1);
        assert_eq!(store::bindings(db, None, 3_000).await.expect("b").len(), 1);
        assert_eq!(
            store::bindings(db, None, 25_000).await.expect("b").len(),
            0,
            "expired ones are not listed"
        );
        assert_eq!(store::prune_expired(db, 25_000).await.expect("prune"), 1);
        store::apply(db, id, "cid-2", 1, &[up("sip:c@3", 90_000)], 4_000)
            .await
            .expect("apply");
        let out = store::apply(db, id, "cid-3", 1, &[BindingChange::RemoveAll], 5_000)
            .await
            .expect("apply");
        assert_eq!(out, ApplyOutcome::Applied(vec![]));
        // Seat administration.
        assert!(matches!(
            store::create_seat(db, "carol", seat.seat.wallet_id, PASSWORD, "papercup", "").await,
            Err(store::StoreError::SeatExists(_))
        ));
        assert!(matches!(
            store::create_seat(
                db,
                "bad name",
                seat.seat.wallet_id,
                PASSWORD,
                "papercup",
                ""
            )
            .await,
            Err(store::StoreError::BadUsername(_))
        ));
        assert!(matches!(
            store::create_seat(db, "dave", 999, PASSWORD, "papercup", "").await,
            Err(store::StoreError::UnknownWallet(999))
        ));
        store::set_password(db, "carol", "another-password", "papercup")
            .await
            .expect("passwd");
        let after = store::seat_secret(db, "carol")
            .await
            .expect("q")
            .expect("seat");
        assert_ne!(after.ha1_md5, seat.ha1_md5);
        assert_eq!(
            after.ha1_md5,
            signaling::digest::ha1(
                signaling::digest::Algorithm::Md5,
                "carol",
                "papercup",
                "another-password"
            )
        );
        store::set_disabled(db, "carol", true)
            .await
            .expect("disable");
        assert!(store::seats(db).await.expect("seats")[0].disabled);
    }
}

/// A desk phone calling out authenticates with its seat's credentials (407), and without
/// a trunk the call is refused with 480 and a reason; the final responses are not
/// retransmitted once ACKed (sipp would fail on an unexpected retransmission at the end).
#[tokio::test]
async fn desk_phone_invite_is_challenged_then_routed() {
    let (server, _tdb) = server(|_| {}).await;
    let run = phone(&server, "uac_invite_auth.xml", "alice", PASSWORD).await;
    assert_passed(&run, "desk phone INVITE");
    let m = server.metrics().snapshot();
    assert_eq!(m.auth_successes, 1, "{m:?}");
    assert_eq!(server.dialogs().len(), 0);
    server.shutdown().await;
}

/// REGISTER over TLS (rustls listener, certificate and key from files), with openssl's
/// s_client as the phone's TLS stack: the challenge comes back on the same connection.
#[tokio::test]
async fn register_over_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let ok = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
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
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl");
    assert!(ok.success());
    let tls_port = common::free_port();
    let (server, _tdb) = server(|c| {
        c.tls = vec![SocketAddr::from(([127, 0, 0, 1], tls_port))];
        c.tls_cert = Some(cert.clone());
        c.tls_key = Some(key.clone());
    })
    .await;
    let tls = server.addr(Transport::Tls).expect("tls listener");
    let target = udp(&server);
    let request = raw::register(
        "alice",
        target,
        SocketAddr::from(([127, 0, 0, 1], 5061)),
        "TLS",
        1,
        None,
    );
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = std::process::Command::new("timeout")
            .args([
                "5",
                "openssl",
                "s_client",
                "-connect",
                &tls.to_string(),
                "-quiet",
                "-ign_eof",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("s_client");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(request.as_bytes()).expect("write");
        std::thread::sleep(Duration::from_millis(1500));
        drop(stdin);
        child.wait_with_output().expect("output")
    })
    .await
    .expect("join");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("SIP/2.0 401"), "{text}");
    assert!(
        text.contains("WWW-Authenticate: Digest realm=\"papercup\""),
        "{text}"
    );
    server.shutdown().await;
}
