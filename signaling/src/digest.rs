//! HTTP digest authentication for SIP (RFC 3261 §22, RFC 7616 hashes as used by RFC 8760):
//! MD5 and SHA-256, `qop=auth`, the server side (verification against stored HA1) and the
//! client side (answering a 401/407 challenge).
//!
//! Passwords are never stored: a seat keeps `HA1 = H(username:realm:password)` for each
//! algorithm. Responses are compared in constant time.

use md5::{Digest as _, Md5};
use sha2::Sha256;
use std::fmt::Write as _;

/// A digest algorithm we speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    /// The token in `algorithm=`.
    pub fn token(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    /// Parses an `algorithm=` value (absent means MD5). `-sess` variants are refused.
    pub fn parse(token: Option<&str>) -> Option<Self> {
        match token.map(str::to_ascii_uppercase).as_deref() {
            None | Some("MD5") => Some(Algorithm::Md5),
            Some("SHA-256") => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    /// Lower-case hex of the hash of `data`.
    pub fn hex(self, data: &str) -> String {
        match self {
            Algorithm::Md5 => to_hex(&Md5::digest(data.as_bytes())),
            Algorithm::Sha256 => to_hex(&Sha256::digest(data.as_bytes())),
        }
    }
}

fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// `H(username:realm:password)`.
pub fn ha1(algorithm: Algorithm, username: &str, realm: &str, password: &str) -> String {
    algorithm.hex(&format!("{username}:{realm}:{password}"))
}

/// The `response` value for `qop=auth` (or without qop when `qop` is `None`).
#[allow(clippy::too_many_arguments)]
pub fn response(
    algorithm: Algorithm,
    ha1: &str,
    nonce: &str,
    nc: Option<&str>,
    cnonce: Option<&str>,
    qop: Option<&str>,
    method: &str,
    uri: &str,
) -> String {
    let ha2 = algorithm.hex(&format!("{method}:{uri}"));
    match (qop, nc, cnonce) {
        (Some(qop), Some(nc), Some(cnonce)) => {
            algorithm.hex(&format!("{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}"))
        }
        _ => algorithm.hex(&format!("{ha1}:{nonce}:{ha2}")),
    }
}

/// Equality that takes the same time wherever the inputs differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parsed `Authorization`/`Proxy-Authorization` (or `WWW-Authenticate`) digest parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DigestParams {
    pub username: Option<String>,
    pub realm: Option<String>,
    pub nonce: Option<String>,
    pub uri: Option<String>,
    pub response: Option<String>,
    pub algorithm: Option<String>,
    pub cnonce: Option<String>,
    pub opaque: Option<String>,
    pub qop: Option<String>,
    pub nc: Option<String>,
    pub stale: Option<String>,
}

/// Why a credentials header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("authorization scheme is not Digest")]
    NotDigest,
    #[error("unterminated quoted string in digest parameters")]
    Unterminated,
    #[error("malformed digest parameter near {0:?}")]
    Malformed(String),
}

/// Parses `Digest k=v, k="v", …` (quoted strings with backslash escapes, any order,
/// case-insensitive names, unknown parameters ignored).
pub fn parse(value: &str) -> Result<DigestParams, ParseError> {
    let value = value.trim();
    let rest = match value.split_once(|c: char| c.is_ascii_whitespace()) {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("digest") => rest,
        _ => return Err(ParseError::NotDigest),
    };
    let mut out = DigestParams::default();
    let mut chars = rest.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if c.is_ascii_whitespace() || *c == ',') {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let mut name = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c.is_ascii_whitespace() {
                break;
            }
            name.push(c);
            chars.next();
        }
        while matches!(chars.peek(), Some(c) if c.is_ascii_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || name.is_empty() {
            return Err(ParseError::Malformed(name));
        }
        while matches!(chars.peek(), Some(c) if c.is_ascii_whitespace()) {
            chars.next();
        }
        let mut val = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.next() {
                        Some(e) => val.push(e),
                        None => return Err(ParseError::Unterminated),
                    },
                    '"' => {
                        closed = true;
                        break;
                    }
                    c => val.push(c),
                }
            }
            if !closed {
                return Err(ParseError::Unterminated);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_ascii_whitespace() {
                    break;
                }
                val.push(c);
                chars.next();
            }
        }
        let slot = match name.to_ascii_lowercase().as_str() {
            "username" => &mut out.username,
            "realm" => &mut out.realm,
            "nonce" => &mut out.nonce,
            "uri" => &mut out.uri,
            "response" => &mut out.response,
            "algorithm" => &mut out.algorithm,
            "cnonce" => &mut out.cnonce,
            "opaque" => &mut out.opaque,
            "qop" => &mut out.qop,
            "nc" => &mut out.nc,
            "stale" => &mut out.stale,
            _ => continue,
        };
        *slot = Some(val);
    }
    Ok(out)
}

/// A `WWW-Authenticate`/`Proxy-Authenticate` value for a fresh challenge.
pub fn challenge(
    algorithm: Algorithm,
    realm: &str,
    nonce: &str,
    opaque: &str,
    stale: bool,
) -> String {
    let mut s = format!(
        "Digest realm=\"{realm}\", nonce=\"{nonce}\", opaque=\"{opaque}\", algorithm={}, qop=\"auth\"",
        algorithm.token()
    );
    if stale {
        s.push_str(", stale=true");
    }
    s
}

/// Client side: the `Authorization` value answering `challenge` for `method uri`.
/// Picks `qop=auth` when offered (also from a list such as `"auth,auth-int"`).
pub fn answer(
    challenge: &DigestParams,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    cnonce: &str,
    nc: u32,
) -> Result<String, String> {
    let algorithm = Algorithm::parse(challenge.algorithm.as_deref()).ok_or_else(|| {
        format!(
            "unsupported digest algorithm {}",
            challenge.algorithm.as_deref().unwrap_or("")
        )
    })?;
    let realm = challenge.realm.as_deref().unwrap_or("");
    let nonce = challenge
        .nonce
        .as_deref()
        .ok_or("challenge without nonce")?;
    let ha1 = ha1(algorithm, username, realm, password);
    let auth_qop = challenge
        .qop
        .as_deref()
        .map(|q| q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")))
        .unwrap_or(false);
    let mut out = format!(
        "Digest username=\"{username}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", algorithm={}",
        algorithm.token()
    );
    if auth_qop {
        let nc = format!("{nc:08x}");
        let r = response(
            algorithm,
            &ha1,
            nonce,
            Some(&nc),
            Some(cnonce),
            Some("auth"),
            method,
            uri,
        );
        let _ = write!(
            out,
            ", response=\"{r}\", qop=auth, nc={nc}, cnonce=\"{cnonce}\""
        );
    } else {
        let r = response(algorithm, &ha1, nonce, None, None, None, method, uri);
        let _ = write!(out, ", response=\"{r}\"");
    }
    if let Some(opaque) = &challenge.opaque {
        let _ = write!(out, ", opaque=\"{opaque}\"");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 §3.5's worked example (MD5, qop=auth).
    #[test]
    fn rfc2617_known_answer() {
        let ha1 = ha1(
            Algorithm::Md5,
            "Mufasa",
            "testrealm@host.com",
            "Circle Of Life",
        );
        let r = response(
            Algorithm::Md5,
            &ha1,
            "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            Some("00000001"),
            Some("0a4f113b"),
            Some("auth"),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    /// RFC 7616 §3.9.1's worked example (SHA-256, qop=auth).
    #[test]
    fn rfc7616_sha256_known_answer() {
        let ha1 = ha1(
            Algorithm::Sha256,
            "Mufasa",
            "http-auth@example.org",
            "Circle of Life",
        );
        let r = response(
            Algorithm::Sha256,
            &ha1,
            "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            Some("00000001"),
            Some("f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"),
            Some("auth"),
            "GET",
            "/dir/index.html",
        );
        assert_eq!(
            r,
            "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
        );
    }

    #[test]
    fn parses_quoted_escaped_and_multi_qop() {
        let p = parse(r#"Digest username="a\"b", realm=papercup,nonce="n1", qop="auth,auth-int", nc=0000000A, uri="sip:x", response="r", algorithm=SHA-256, Other="x, y""#)
            .expect("parses");
        assert_eq!(p.username.as_deref(), Some("a\"b"));
        assert_eq!(p.realm.as_deref(), Some("papercup"));
        assert_eq!(p.qop.as_deref(), Some("auth,auth-int"));
        assert_eq!(p.nc.as_deref(), Some("0000000A"));
        assert_eq!(
            Algorithm::parse(p.algorithm.as_deref()),
            Some(Algorithm::Sha256)
        );
        assert_eq!(parse("Basic abc"), Err(ParseError::NotDigest));
        assert_eq!(
            parse(r#"Digest username="abc"#),
            Err(ParseError::Unterminated)
        );
        assert!(Algorithm::parse(Some("MD5-sess")).is_none());
    }

    #[test]
    fn client_answer_verifies_on_server_side() {
        let ch = parse(&challenge(
            Algorithm::Sha256,
            "papercup",
            "abc",
            "op",
            false,
        ))
        .expect("challenge");
        let auth =
            answer(&ch, "alice", "secret", "REGISTER", "sip:papercup", "cn", 1).expect("answer");
        let p = parse(&auth).expect("parses");
        let ha1 = ha1(Algorithm::Sha256, "alice", "papercup", "secret");
        let expect = response(
            Algorithm::Sha256,
            &ha1,
            "abc",
            p.nc.as_deref(),
            p.cnonce.as_deref(),
            p.qop.as_deref(),
            "REGISTER",
            "sip:papercup",
        );
        assert_eq!(p.response.as_deref(), Some(expect.as_str()));
        assert_eq!(p.opaque.as_deref(), Some("op"));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
