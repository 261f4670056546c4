//! RFC 4475 torture messages sent over the network to a running SIP core: the edge answers
//! malformed requests itself (no transaction is created) and the core keeps serving.

mod common;

use std::time::Duration;

use rsipstack::sip::Transport;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn vector(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("tests/vectors/rfc4475/{name}.dat")),
    )
    .expect("vector")
}

async fn exchange(
    sock: &tokio::net::UdpSocket,
    to: std::net::SocketAddr,
    bytes: &[u8],
) -> Option<String> {
    sock.send_to(bytes, to).await.expect("send");
    let mut buf = vec![0u8; 65535];
    match tokio::time::timeout(Duration::from_millis(700), sock.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn torture_messages_over_udp_and_tcp() {
    let (server, _db) = common::server(|_| {}).await;
    let udp = server.addr(Transport::Udp).expect("udp");
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    for (name, status) in [
        ("badinv01", "400"),
        ("clerr", "400"),
        ("insuf", "400"),
        ("lwsstart", "400"),
        ("baddn", "400"),
        ("mismatch01", "400"),
        ("badvers", "505"),
        ("intmeth", "501"),
        ("unkscm", "416"),
        ("bext01", "420"),
    ] {
        let r = exchange(&sock, udp, &vector(name)).await;
        let r = r.unwrap_or_else(|| panic!("{name}: no answer"));
        assert!(r.starts_with(&format!("SIP/2.0 {status} ")), "{name}: {r}");
        if status == "400" {
            assert!(r.contains("Warning: 399 papercup \""), "{name}: {r}");
        }
    }
    // NAT keep-alive (RFC 5626 §4.4.1): a CRLF ping gets its pong.
    assert_eq!(
        exchange(&sock, udp, b"\r\n\r\n").await.as_deref(),
        Some("\r\n")
    );
    // Invalid responses are dropped, never answered.
    assert_eq!(exchange(&sock, udp, &vector("bigcode")).await, None);
    // A valid OPTIONS still gets its 200 from the core after all that.
    let r = exchange(&sock, udp, &vector("zeromf"))
        .await
        .expect("answer");
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    assert!(r.contains("Allow: INVITE"), "{r}");
    let m = server.metrics().snapshot();
    assert!(m.malformed >= 10, "{m:?}");

    // Over TCP a refused message does not cost the connection.
    let mut s = tokio::net::TcpStream::connect(server.addr(Transport::Tcp).expect("tcp"))
        .await
        .expect("connect");
    let msg = String::from_utf8_lossy(&vector("mismatch01"))
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        .into_bytes();
    s.write_all(&msg).await.expect("write");
    let mut buf = vec![0u8; 65535];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    let r = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(r.starts_with("SIP/2.0 400 "), "{r}");
    let ok = String::from_utf8_lossy(&vector("zeromf"))
        .replace("SIP/2.0/UDP", "SIP/2.0/TCP")
        .into_bytes();
    s.write_all(&ok).await.expect("write");
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("in time")
        .expect("read");
    let r = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(r.starts_with("SIP/2.0 200"), "{r}");
    server.shutdown().await;
}
