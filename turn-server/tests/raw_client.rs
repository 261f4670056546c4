//! The relay under test against hand-built STUN/TURN messages (the stun crate), for what
//! coturn's client cannot show: the exact answer to a retransmitted Allocate, 486 at the
//! per-user quota, 403 for denied peers and nothing sent to them.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use stun::agent::TransactionId;
use stun::attributes::*;
use stun::error_code::ErrorCodeAttribute;
use stun::fingerprint::FINGERPRINT;
use stun::integrity::MessageIntegrity;
use stun::message::*;
use stun::textattrs::*;
use tokio::net::UdpSocket;
use turn::proto::data::Data;
use turn::proto::peeraddr::PeerAddress;
use turn::proto::reqtrans::RequestedTransport;
use turn::proto::PROTO_UDP;
use turn_server::{TurnConfig, TurnServer};

const SECRET: &str = "test-secret";

async fn server(cfg: TurnConfig) -> TurnServer {
    TurnServer::start(TurnConfig {
        secrets: vec![SECRET.into()],
        udp: Some("127.0.0.1:0".parse().expect("addr")),
        ..cfg
    })
    .await
    .expect("start TURN")
}

struct Client {
    sock: UdpSocket,
    server: SocketAddr,
    username: String,
    password: String,
    realm: String,
    nonce: String,
}

fn build(setters: Vec<Box<dyn Setter>>) -> Message {
    let mut m = Message::new();
    m.build(&setters).expect("build message");
    m
}

impl Client {
    async fn new(server: SocketAddr, user: &str) -> Client {
        let sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let c = turn_server::mint(SECRET, user, 600, unix_now(), vec![]);
        Client {
            sock,
            server,
            username: c.username,
            password: c.credential,
            realm: String::new(),
            nonce: String::new(),
        }
    }

    async fn roundtrip(&self, m: &Message) -> Message {
        self.sock.send_to(&m.raw, self.server).await.expect("send");
        self.recv().await.expect("an answer")
    }

    async fn recv(&self) -> Option<Message> {
        let mut buf = vec![0u8; 1500];
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), self.sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let mut m = Message::new();
        m.raw = buf[..n].to_vec();
        m.decode().ok()?;
        Some(m)
    }

    fn authed(&self, mut attrs: Vec<Box<dyn Setter>>, tid: TransactionId) -> Message {
        let mut v: Vec<Box<dyn Setter>> = vec![Box::new(tid)];
        v.append(&mut attrs);
        v.push(Box::new(Username::new(
            ATTR_USERNAME,
            self.username.clone(),
        )));
        v.push(Box::new(Realm::new(ATTR_REALM, self.realm.clone())));
        v.push(Box::new(Nonce::new(ATTR_NONCE, self.nonce.clone())));
        v.push(Box::new(MessageIntegrity::new_long_term_integrity(
            self.username.clone(),
            self.realm.clone(),
            self.password.clone(),
        )));
        v.push(Box::new(FINGERPRINT));
        build(v)
    }

    /// Allocate: the 401 round, then the authenticated request. Returns the final answer.
    async fn allocate(&mut self) -> Message {
        let first = build(vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            }),
            Box::new(FINGERPRINT),
        ]);
        let challenge = self.roundtrip(&first).await;
        assert_eq!(error_code(&challenge), Some(401));
        self.realm = Realm::get_from_as(&challenge, ATTR_REALM)
            .expect("realm")
            .text;
        self.nonce = Nonce::get_from_as(&challenge, ATTR_NONCE)
            .expect("nonce")
            .text;
        let m = self.authed(
            vec![
                Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
                Box::new(RequestedTransport {
                    protocol: PROTO_UDP,
                }),
            ],
            TransactionId::new(),
        );
        self.roundtrip(&m).await
    }

    async fn create_permission(&self, peer: SocketAddr) -> Message {
        let m = self.authed(
            vec![
                Box::new(MessageType::new(METHOD_CREATE_PERMISSION, CLASS_REQUEST)),
                Box::new(PeerAddress {
                    ip: peer.ip(),
                    port: peer.port(),
                }),
            ],
            TransactionId::new(),
        );
        self.roundtrip(&m).await
    }

    async fn send_indication(&self, peer: SocketAddr, data: &[u8]) {
        let m = build(vec![
            Box::new(TransactionId::new()),
            Box::new(MessageType::new(METHOD_SEND, CLASS_INDICATION)),
            Box::new(PeerAddress {
                ip: peer.ip(),
                port: peer.port(),
            }),
            Box::new(Data(data.to_vec())),
            Box::new(FINGERPRINT),
        ]);
        self.sock.send_to(&m.raw, self.server).await.expect("send");
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn error_code(m: &Message) -> Option<u16> {
    let mut e = ErrorCodeAttribute::default();
    e.get_from(m).ok().map(|_| e.code.0)
}

#[tokio::test]
async fn a_retransmitted_allocate_gets_the_same_success() {
    let turn = server(TurnConfig::default()).await;
    let mut c = Client::new(turn.udp_addr().expect("udp"), "alice").await;
    let first = build(vec![
        Box::new(TransactionId::new()),
        Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
        Box::new(RequestedTransport {
            protocol: PROTO_UDP,
        }),
    ]);
    let challenge = c.roundtrip(&first).await;
    c.realm = Realm::get_from_as(&challenge, ATTR_REALM)
        .expect("realm")
        .text;
    c.nonce = Nonce::get_from_as(&challenge, ATTR_NONCE)
        .expect("nonce")
        .text;
    let tid = TransactionId::new();
    let req = c.authed(
        vec![
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            }),
        ],
        tid,
    );
    let a = c.roundtrip(&req).await;
    assert_eq!(a.typ.class, CLASS_SUCCESS_RESPONSE, "{:?}", error_code(&a));
    // The same request again (its answer was "lost"): the same success, not 437.
    let b = c.roundtrip(&req).await;
    assert_eq!(
        b.typ.class,
        CLASS_SUCCESS_RESPONSE,
        "got {:?}",
        error_code(&b)
    );
    assert_eq!(a.raw, b.raw);
    // A new Allocate on the same 5-tuple is still a mismatch.
    let again = c.authed(
        vec![
            Box::new(MessageType::new(METHOD_ALLOCATE, CLASS_REQUEST)),
            Box::new(RequestedTransport {
                protocol: PROTO_UDP,
            }),
        ],
        TransactionId::new(),
    );
    assert_eq!(error_code(&c.roundtrip(&again).await), Some(437));
    turn.close().await;
}

#[tokio::test]
async fn the_per_user_quota_answers_486() {
    let turn = server(TurnConfig {
        max_allocations_per_user: 2,
        ..TurnConfig::default()
    })
    .await;
    let addr = turn.udp_addr().expect("udp");
    let mut clients = Vec::new();
    for _ in 0..2 {
        let mut c = Client::new(addr, "bob").await;
        let ok = c.allocate().await;
        assert_eq!(
            ok.typ.class,
            CLASS_SUCCESS_RESPONSE,
            "{:?}",
            error_code(&ok)
        );
        clients.push(c);
    }
    let mut third = Client::new(addr, "bob").await;
    let refused = third.allocate().await;
    assert_eq!(error_code(&refused), Some(486));
    // Another user is not affected.
    let mut carol = Client::new(addr, "carol").await;
    assert_eq!(carol.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    let m = turn.metrics();
    assert_eq!((m.allocations_active, m.quota_refusals), (3, 1));
    assert_eq!(turn.allocations().await.len(), 3);
    turn.close().await;
}

#[tokio::test]
async fn wrong_and_expired_credentials_are_refused() {
    let turn = server(TurnConfig::default()).await;
    let addr = turn.udp_addr().expect("udp");
    let mut wrong = Client::new(addr, "mallory").await;
    wrong.password = "not-the-password".into();
    let r = wrong.allocate().await;
    assert_eq!(r.typ.class, CLASS_ERROR_RESPONSE);
    let mut expired = Client::new(addr, "mallory").await;
    expired.username = format!("{}:mallory", unix_now() - 10);
    expired.password = turn_server::credentials::password(SECRET, &expired.username);
    let r = expired.allocate().await;
    assert_eq!(r.typ.class, CLASS_ERROR_RESPONSE);
    assert!(turn.metrics().auth_failures >= 2);
    assert_eq!(turn.metrics().allocations_total, 0);
    turn.close().await;
}

#[tokio::test]
async fn default_configuration_never_relays_to_internal_addresses() {
    // A local listener stands in for every internal service: nothing may reach it.
    let victim = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let victim_port = victim.local_addr().expect("addr").port();
    let turn = server(TurnConfig::default()).await;
    let mut c = Client::new(turn.udp_addr().expect("udp"), "eve").await;
    assert_eq!(c.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    let targets: Vec<IpAddr> = ["127.0.0.1", "10.0.0.1", "169.254.169.254", "0.0.0.0"]
        .iter()
        .map(|s| s.parse().expect("ip"))
        .collect();
    for ip in &targets {
        let peer = SocketAddr::new(*ip, victim_port);
        let r = c.create_permission(peer).await;
        assert_eq!(error_code(&r), Some(403), "CreatePermission to {peer}");
        c.send_indication(peer, b"let me in").await;
    }
    // IPv6 forms of loopback: refused too (this relay is IPv4: 443, before any filter).
    for ip in ["::1", "::ffff:127.0.0.1"] {
        let peer = SocketAddr::new(ip.parse().expect("ip"), victim_port);
        let r = c.create_permission(peer).await;
        assert_eq!(
            r.typ.class, CLASS_ERROR_RESPONSE,
            "CreatePermission to {peer}"
        );
        assert!(matches!(error_code(&r), Some(403) | Some(443)));
        c.send_indication(peer, b"let me in").await;
    }
    let mut buf = [0u8; 64];
    let got = tokio::time::timeout(Duration::from_millis(500), victim.recv_from(&mut buf)).await;
    assert!(got.is_err(), "a denied peer received a packet");
    let m = turn.metrics();
    assert!(m.denied_peers >= 8, "{m:?}");
    assert_eq!(m.packets_to_peers, 0);
    turn.close().await;
}

#[tokio::test]
async fn an_explicitly_allowed_peer_is_relayed_to() {
    let peer_sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let peer = peer_sock.local_addr().expect("addr");
    let turn = server(TurnConfig {
        allow_peers: vec!["127.0.0.1/32".parse().expect("net")],
        ..TurnConfig::default()
    })
    .await;
    let mut c = Client::new(turn.udp_addr().expect("udp"), "frank").await;
    assert_eq!(c.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(
        c.create_permission(peer).await.typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    c.send_indication(peer, b"hello peer").await;
    let mut buf = [0u8; 64];
    let (n, _) = tokio::time::timeout(Duration::from_secs(3), peer_sock.recv_from(&mut buf))
        .await
        .expect("the peer got the data")
        .expect("recv");
    assert_eq!(&buf[..n], b"hello peer");
    assert_eq!(turn.metrics().packets_to_peers, 1);
    turn.close().await;
}

#[tokio::test]
async fn the_per_allocation_bandwidth_limit_drops_the_excess() {
    let peer_sock = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    let peer = peer_sock.local_addr().expect("addr");
    let turn = server(TurnConfig {
        allow_peers: vec!["127.0.0.1/32".parse().expect("net")],
        max_bps_per_allocation: 80_000, // 10 000 bytes per second
        ..TurnConfig::default()
    })
    .await;
    let mut c = Client::new(turn.udp_addr().expect("udp"), "greedy").await;
    assert_eq!(c.allocate().await.typ.class, CLASS_SUCCESS_RESPONSE);
    assert_eq!(
        c.create_permission(peer).await.typ.class,
        CLASS_SUCCESS_RESPONSE
    );
    // 50 000 bytes at once: one second of budget (10 000 bytes) gets through.
    for _ in 0..50 {
        c.send_indication(peer, &[0u8; 1000]).await;
    }
    let mut received = 0;
    let mut buf = [0u8; 2000];
    while let Ok(Ok((n, _))) =
        tokio::time::timeout(Duration::from_millis(300), peer_sock.recv_from(&mut buf)).await
    {
        received += n;
    }
    let m = turn.metrics();
    // About one second of budget; generous upper bound for a slow, loaded machine.
    assert!(
        (9_000..=30_000).contains(&received),
        "{received} bytes got through"
    );
    assert!(m.dropped_over_bandwidth >= 20, "{m:?}");
    turn.close().await;
}

#[tokio::test]
async fn a_port_in_use_is_an_error_not_a_shared_port() {
    let first = server(TurnConfig::default()).await;
    let addr = first.udp_addr().expect("udp");
    let second = TurnServer::start(TurnConfig {
        secrets: vec![SECRET.into()],
        udp: Some(addr),
        ..TurnConfig::default()
    })
    .await;
    assert!(
        matches!(second, Err(turn_server::TurnError::Bind { .. })),
        "{second:?}"
    );
    first.close().await;
}
