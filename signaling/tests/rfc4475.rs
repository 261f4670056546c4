//! The 49 torture messages of RFC 4475 through the crate parser and the edge check, as a
//! datagram transport sees them; plus every message cut at every byte and with random
//! byte flips, which must never panic.
use rsipstack::sip::SipMessage;
use signaling::edge::{check, EdgeVerdict, ALLOW};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy)]
enum Expect {
    Accept,
    Drop,
    /// A response with this status whose reason contains this text.
    Reply(u16, &'static str),
}
use Expect::{Accept, Drop, Reply};

/// RFC 4475 §3 section, message, expected verdict of a UAS / registrar edge.
const TABLE: &[(&str, Expect)] = &[
    // §3.1.1 valid messages.
    ("wsinv", Accept),
    ("intmeth", Reply(501, "is not implemented")),
    ("esc01", Accept),
    ("escnull", Accept),
    (
        "esc02",
        Reply(501, "method RE%47IST%45R is not implemented"),
    ),
    ("lwsdisp", Accept),
    ("longreq", Accept),
    ("dblreq", Accept),
    ("semiuri", Accept),
    ("transports", Accept),
    ("mpart01", Accept),
    ("unreason", Accept),
    ("noreason", Accept),
    // §3.1.2 invalid messages.
    ("badinv01", Reply(400, "empty parameter in Via")),
    (
        "clerr",
        Reply(
            400,
            "Content-Length 9999 exceeds the 154 body bytes received",
        ),
    ),
    (
        "scalar02",
        Reply(400, "CSeq number 36893488147419103232 is not below 2^31"),
    ),
    ("scalarlg", Drop),
    (
        "quotbal",
        Reply(400, "unterminated quoted string in the display name of To"),
    ),
    (
        "ltgtruri",
        Reply(400, "Request-URI must not be enclosed in <>"),
    ),
    ("lwsruri", Reply(400, "Request-URI contains whitespace")),
    (
        "lwsstart",
        Reply(400, "more than one space between the elements"),
    ),
    ("trws", Reply(400, "whitespace after the SIP-Version")),
    ("escruri", Reply(400, "Request-URI carries escaped headers")),
    ("baddate", Reply(400, "Date must be in GMT, not EST")),
    (
        "regbadct",
        Reply(
            400,
            "URI of Contact has escaped headers (?...) but is not enclosed in <>",
        ),
    ),
    ("badaspec", Reply(400, "whitespace inside the <> of To")),
    (
        "baddn",
        Reply(
            400,
            "display name in From is neither tokens nor a quoted string",
        ),
    ),
    (
        "badvers",
        Reply(505, "SIP version SIP/7.0 is not supported"),
    ),
    (
        "mismatch01",
        Reply(
            400,
            "CSeq method INVITE does not match request method OPTIONS",
        ),
    ),
    (
        "mismatch02",
        Reply(
            400,
            "CSeq method INVITE does not match request method NEWMETHOD",
        ),
    ),
    ("bigcode", Drop),
    (
        "ncl",
        Reply(400, "Content-Length -999 is not a non-negative integer"),
    ),
    // §3.2 transaction layer semantics.
    ("badbranch", Accept),
    // §3.3 application layer semantics.
    ("insuf", Reply(400, "missing To, From and Call-ID headers")),
    ("unkscm", Reply(416, "nobodyKnowsThisScheme")),
    ("novelsc", Reply(416, "soap.beep")),
    (
        "unksm2",
        Reply(
            400,
            "To of a REGISTER must be a sip or sips address-of-record",
        ),
    ),
    (
        "bext01",
        Reply(420, "nothingSupportsThis, nothingSupportsThisEither"),
    ),
    ("invut", Accept),
    ("regaut01", Accept),
    (
        "multi01",
        Reply(
            400,
            "more than one CSeq, Call-ID, From, To and Max-Forwards header",
        ),
    ),
    ("mcl01", Reply(400, "2 Content-Length headers (13, 5)")),
    ("bcast", Drop),
    ("zeromf", Accept),
    ("cparam01", Accept),
    ("cparam02", Accept),
    ("regescrt", Accept),
    ("sdp01", Accept),
    ("inv2543", Accept),
];

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/vectors/rfc4475")
}

fn load(name: &str) -> Vec<u8> {
    let path = vectors_dir().join(format!("{name}.dat"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The crate parser, then the edge check, as the transport's filter runs them.
fn edge(raw: &[u8], reliable: bool) -> EdgeVerdict {
    match SipMessage::try_from(raw) {
        Ok(message) => check(raw, Ok(&message), reliable),
        Err(e) => check(raw, Err(&e.to_string()), reliable),
    }
}

/// The first value of a header (any of `names`, case-insensitive), unfolded and trimmed,
/// read straight from the raw bytes.
fn raw_header(raw: &[u8], names: &[&str]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    let head = text.split("\r\n\r\n").next().unwrap_or_default();
    let mut lines = head.split("\r\n").skip(1).peekable();
    while let Some(line) = lines.next() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if line.starts_with([' ', '\t'])
            || !names.iter().any(|n| name.trim().eq_ignore_ascii_case(n))
        {
            continue;
        }
        let mut value = value.trim().to_string();
        while let Some(next) = lines.peek().filter(|l| l.starts_with([' ', '\t'])) {
            if !value.is_empty() {
                value.push(' ');
            }
            value.push_str(next.trim());
            lines.next();
        }
        return Some(value);
    }
    None
}

#[test]
fn the_table_covers_every_vector_once() {
    let mut files: Vec<String> = std::fs::read_dir(vectors_dir())
        .expect("vector directory")
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_suffix(".dat"))
                .map(str::to_string)
        })
        .collect();
    files.sort();
    let mut names: Vec<String> = TABLE.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    assert_eq!(files.len(), 49);
    assert_eq!(names, files);
}

#[test]
fn every_vector_gets_the_verdict_rfc4475_asks_for() {
    let mut failures = Vec::new();
    for &(name, expect) in TABLE {
        let raw = load(name);
        let verdict = edge(&raw, false);
        match &verdict {
            EdgeVerdict::Accept => println!("{name:<10} Accept"),
            EdgeVerdict::Drop { reason } => println!("{name:<10} Drop   {reason}"),
            EdgeVerdict::Reply { status, reason, .. } => {
                println!("{name:<10} {status}    {reason}")
            }
        }
        let ok = match (expect, &verdict) {
            (Accept, EdgeVerdict::Accept) | (Drop, EdgeVerdict::Drop { .. }) => true,
            (Reply(want, part), EdgeVerdict::Reply { status, reason, .. }) => {
                *status == want && reason.contains(part)
            }
            _ => false,
        };
        if !ok {
            failures.push(format!("{name}: expected {expect:?}, got {verdict:?}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_reply_is_a_parsable_response_to_the_original_transaction() {
    for &(name, expect) in TABLE {
        let Reply(want, _) = expect else { continue };
        let raw = load(name);
        let EdgeVerdict::Reply {
            status,
            reason,
            bytes,
        } = edge(&raw, false)
        else {
            panic!("{name}: no reply");
        };
        assert_eq!(status, want, "{name}");
        assert!(!reason.trim().is_empty(), "{name}: empty reason");
        let text = String::from_utf8_lossy(&bytes).into_owned();
        assert!(
            text.starts_with(&format!("SIP/2.0 {status} ")),
            "{name}: {text}"
        );
        assert!(
            text.ends_with("\r\nContent-Length: 0\r\n\r\n"),
            "{name}: {text}"
        );
        let warning = raw_header(&bytes, &["Warning"]).unwrap_or_default();
        assert!(
            warning.starts_with("399 papercup \"") && warning.len() > "399 papercup \"\"".len(),
            "{name}: Warning {warning:?}"
        );
        let response = match SipMessage::try_from(bytes.as_slice()) {
            Ok(SipMessage::Response(r)) => r,
            other => panic!("{name}: the reply does not parse as a response: {other:?}\n{text}"),
        };
        assert_eq!(response.status_code.code(), status, "{name}");
        for (names, label) in [
            (&["Call-ID", "i"][..], "Call-ID"),
            (&["CSeq"][..], "CSeq"),
            (&["From", "f"][..], "From"),
        ] {
            assert_eq!(
                raw_header(&bytes, &[label]),
                raw_header(&raw, names),
                "{name}: {label} not carried over\n{text}"
            );
        }
        let vias = |m: &[u8]| {
            let text = String::from_utf8_lossy(m).into_owned();
            let head = text
                .split("\r\n\r\n")
                .next()
                .unwrap_or_default()
                .to_string();
            head.split("\r\n")
                .filter(|l| {
                    l.split_once(':').is_some_and(|(n, _)| {
                        !n.starts_with([' ', '\t'])
                            && (n.trim().eq_ignore_ascii_case("via")
                                || n.trim().eq_ignore_ascii_case("v"))
                    })
                })
                .count()
        };
        assert_eq!(vias(&bytes), vias(&raw), "{name}: Via count\n{text}");
        assert!(vias(&bytes) > 0, "{name}");
        // The To carries a tag unless it was too malformed to hold one.
        match (raw_header(&raw, &["To", "t"]), raw_header(&bytes, &["To"])) {
            (None, None) => {}
            (Some(original), Some(to)) if name == "quotbal" => assert_eq!(to, original),
            (Some(original), Some(to)) => {
                assert!(to.starts_with(&original), "{name}: {to}");
                assert!(to.contains("tag="), "{name}: To without tag: {to}");
            }
            (original, to) => panic!("{name}: To {original:?} became {to:?}"),
        }
        if status == 501 {
            assert_eq!(
                raw_header(&bytes, &["Allow"]).as_deref(),
                Some(ALLOW),
                "{name}"
            );
        }
        if status == 420 {
            assert_eq!(
                raw_header(&bytes, &["Unsupported"]).as_deref(),
                Some("nothingSupportsThis, nothingSupportsThisEither"),
                "{name}"
            );
        }
    }
}

#[test]
fn a_stream_transport_does_not_check_the_body_length() {
    // clerr over TCP would have waited for 9999 bytes; what framing hands over is accepted
    // as far as the length goes.
    assert_eq!(edge(&load("clerr"), true), EdgeVerdict::Accept);
    for &(name, _) in TABLE {
        if name != "clerr" {
            let raw = load(name);
            assert_eq!(
                std::mem::discriminant(&edge(&raw, true)),
                std::mem::discriminant(&edge(&raw, false)),
                "{name}"
            );
        }
    }
}

/// xorshift64*, enough randomness for byte flips with a fixed seed.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

#[test]
fn truncated_and_mangled_vectors_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let interesting = b"\r\n \t:;,<>\"\\@?=/%\x00\xff0123456789";
    let mut runs = 0usize;
    for &(name, _) in TABLE {
        let raw = load(name);
        for cut in 0..=raw.len() {
            let part = raw.get(..cut).unwrap_or_default();
            edge(part, false);
            edge(part, true);
            runs += 2;
        }
        for round in 0..300 {
            let mut bytes = raw.clone();
            let flips = 1 + rng.below(8);
            for _ in 0..flips {
                let at = rng.below(bytes.len());
                let value = if round % 2 == 0 {
                    interesting
                        .get(rng.below(interesting.len()))
                        .copied()
                        .unwrap_or(0)
                } else {
                    u8::try_from(rng.next() & 0xff).unwrap_or(0)
                };
                if let Some(b) = bytes.get_mut(at) {
                    *b = value;
                }
            }
            if round % 5 == 0 {
                let at = rng.below(bytes.len());
                bytes.truncate(at);
            }
            let verdict = edge(&bytes, false);
            if let EdgeVerdict::Reply { bytes: reply, .. } = &verdict {
                // A reply is always a response the crate can read back.
                assert!(
                    matches!(
                        SipMessage::try_from(reply.as_slice()),
                        Ok(SipMessage::Response(_))
                    ),
                    "{name} round {round}: {}",
                    String::from_utf8_lossy(reply)
                );
            }
            edge(&bytes, true);
            runs += 2;
        }
    }
    assert!(runs > 40_000, "{runs}");
}
