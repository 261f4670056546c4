//! SDES-SRTP (RFC 4568 `a=crypto` keys, RFC 3711 protection) for secure trunks.
//!
//! The cryptography is rtc-srtp's, the SRTP implementation webrtc 0.21 itself runs on: we
//! only parse and write the key attribute and keep one context per direction.

use base64::Engine as _;
use rtc::srtp::context::Context;
use rtc::srtp::option::{srtcp_replay_protection, srtp_replay_protection};
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::{Error, Result};

/// The crypto suites we accept and offer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// `AES_CM_128_HMAC_SHA1_80` (the one every trunk supports).
    Aes128Sha1_80,
    /// `AES_CM_128_HMAC_SHA1_32`.
    Aes128Sha1_32,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Aes128Sha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::Aes128Sha1_32 => "AES_CM_128_HMAC_SHA1_32",
        }
    }

    fn profile(self) -> ProtectionProfile {
        match self {
            Suite::Aes128Sha1_80 => ProtectionProfile::Aes128CmHmacSha1_80,
            Suite::Aes128Sha1_32 => ProtectionProfile::Aes128CmHmacSha1_32,
        }
    }
}

/// Master key (16 bytes) and salt (14 bytes) of an AES-128 suite.
const KEY_SALT_LEN: usize = 30;

/// One `a=crypto` attribute: tag, suite and inline master key + salt.
#[derive(Clone, PartialEq, Eq)]
pub struct SdesCrypto {
    /// The attribute's tag (an answer echoes the tag of the offer line it accepts).
    pub tag: u32,
    /// The suite.
    pub suite: Suite,
    key_salt: [u8; KEY_SALT_LEN],
}

impl std::fmt::Debug for SdesCrypto {
    // Never print key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SdesCrypto")
            .field("tag", &self.tag)
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl SdesCrypto {
    /// A fresh random key for `suite`.
    pub fn generate(tag: u32, suite: Suite) -> Self {
        let mut key_salt = [0u8; KEY_SALT_LEN];
        rand::fill(&mut key_salt);
        Self {
            tag,
            suite,
            key_salt,
        }
    }

    /// Parses the value of an `a=crypto:` attribute
    /// (`1 AES_CM_128_HMAC_SHA1_80 inline:<base64>[|lifetime][|mki:len]`).
    pub fn parse(value: &str) -> Result<Self> {
        let bad = |reason: &str| Error::malformed("a=crypto", reason);
        let mut parts = value.split_whitespace();
        let tag = parts
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .ok_or_else(|| bad("no tag"))?;
        let suite = match parts.next() {
            Some("AES_CM_128_HMAC_SHA1_80") => Suite::Aes128Sha1_80,
            Some("AES_CM_128_HMAC_SHA1_32") => Suite::Aes128Sha1_32,
            Some(other) => {
                return Err(Error::Negotiation(format!(
                    "unsupported crypto suite {other}"
                )))
            }
            None => return Err(bad("no crypto suite")),
        };
        let key_param = parts
            .next()
            .and_then(|k| k.strip_prefix("inline:"))
            .ok_or_else(|| bad("no inline key"))?;
        let mut fields = key_param.split('|');
        let b64 = fields.next().unwrap_or_default();
        // A lifetime may follow; an MKI (`n:len`) would mean several keys, which we do not
        // support, so refuse it rather than decrypting with the wrong key.
        if fields.any(|f| f.contains(':')) {
            return Err(Error::Negotiation("SRTP MKI is not supported".into()));
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| bad("key is not base64"))?;
        let key_salt: [u8; KEY_SALT_LEN] = raw
            .as_slice()
            .try_into()
            .map_err(|_| bad("key and salt must be 30 bytes"))?;
        Ok(Self {
            tag,
            suite,
            key_salt,
        })
    }

    /// The attribute value we write after `a=crypto:`.
    pub fn to_attribute(&self) -> String {
        format!(
            "{} {} inline:{}",
            self.tag,
            self.suite.name(),
            base64::engine::general_purpose::STANDARD.encode(self.key_salt)
        )
    }

    fn context(&self, replay: bool) -> Result<Context> {
        let provider = rtc::crypto::default_provider().map_err(|e| Error::Srtp(e.to_string()))?;
        let (key, salt) = self.key_salt.split_at(16);
        let (rtp_opt, rtcp_opt) = if replay {
            (
                Some(srtp_replay_protection(256)),
                Some(srtcp_replay_protection(256)),
            )
        } else {
            (None, None)
        };
        Context::new(
            key,
            salt,
            self.suite.profile(),
            rtp_opt,
            rtcp_opt,
            provider.crypto(),
        )
        .map_err(|e| Error::Srtp(e.to_string()))
    }
}

/// The two SRTP contexts of a leg: ours to encrypt, the peer's to decrypt (with replay
/// protection, as RFC 3711 asks).
pub struct SrtpSession {
    tx: Context,
    rx: Context,
}

impl std::fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtpSession").finish_non_exhaustive()
    }
}

impl SrtpSession {
    /// Contexts from our key and the peer's key.
    pub fn new(local: &SdesCrypto, remote: &SdesCrypto) -> Result<Self> {
        Ok(Self {
            tx: local.context(false)?,
            rx: remote.context(true)?,
        })
    }

    /// Encrypts an RTP packet.
    pub fn protect_rtp(&mut self, plain: &[u8]) -> Result<Vec<u8>> {
        self.tx
            .encrypt_rtp(plain)
            .map(|b| b.to_vec())
            .map_err(|e| Error::Srtp(e.to_string()))
    }

    /// Decrypts and authenticates an RTP packet (replays are refused).
    pub fn unprotect_rtp(&mut self, cipher: &[u8]) -> Result<Vec<u8>> {
        self.rx
            .decrypt_rtp(cipher)
            .map(|b| b.to_vec())
            .map_err(|e| Error::Srtp(e.to_string()))
    }

    /// Encrypts an RTCP compound packet.
    pub fn protect_rtcp(&mut self, plain: &[u8]) -> Result<Vec<u8>> {
        self.tx
            .encrypt_rtcp(plain)
            .map(|b| b.to_vec())
            .map_err(|e| Error::Srtp(e.to_string()))
    }

    /// Decrypts and authenticates an RTCP compound packet.
    pub fn unprotect_rtcp(&mut self, cipher: &[u8]) -> Result<Vec<u8>> {
        self.rx
            .decrypt_rtcp(cipher)
            .map(|b| b.to_vec())
            .map_err(|e| Error::Srtp(e.to_string()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn attribute_round_trip_and_refusals() {
        let k = SdesCrypto::generate(1, Suite::Aes128Sha1_32);
        assert_eq!(SdesCrypto::parse(&k.to_attribute()).unwrap(), k);
        let with_lifetime = format!("{}|2^31", k.to_attribute());
        assert_eq!(SdesCrypto::parse(&with_lifetime).unwrap(), k);
        assert!(SdesCrypto::parse(&format!("{}|2^31|1:4", k.to_attribute())).is_err());
        assert!(SdesCrypto::parse("1 F8_128_HMAC_SHA1_80 inline:AAAA").is_err());
        assert!(SdesCrypto::parse("1 AES_CM_128_HMAC_SHA1_80 inline:AAAA").is_err());
        assert!(SdesCrypto::parse("x AES_CM_128_HMAC_SHA1_80").is_err());
        assert!(!format!("{k:?}").contains(&k.to_attribute()[30..]));
    }

    #[test]
    fn both_directions_and_replay() {
        let a = SdesCrypto::generate(1, Suite::Aes128Sha1_80);
        let b = SdesCrypto::generate(1, Suite::Aes128Sha1_80);
        let mut alice = SrtpSession::new(&a, &b).unwrap();
        let mut bob = SrtpSession::new(&b, &a).unwrap();
        let mut pkt = vec![0x80, 0, 0, 1, 0, 0, 0, 160, 1, 2, 3, 4];
        pkt.extend_from_slice(&[0x55; 160]);
        let wire = alice.protect_rtp(&pkt).unwrap();
        assert_eq!(wire.len(), pkt.len() + 10);
        assert_eq!(bob.unprotect_rtp(&wire).unwrap(), pkt);
        assert!(bob.unprotect_rtp(&wire).is_err(), "a replay is refused");
        let mut tampered = alice.protect_rtp(&pkt).unwrap();
        tampered[20] ^= 1;
        assert!(bob.unprotect_rtp(&tampered).is_err());
    }
}
