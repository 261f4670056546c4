//! What each carrier needs (INTEROP.md, "Trunks"): Request-URI form, ports, call rate,
//! which failures move a call to the next trunk.

use serde::Serialize;

/// A carrier profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Twilio Elastic SIP Trunking (termination `{trunk}.pstn.twilio.com`).
    Twilio,
    /// Telnyx (`sip.telnyx.com`).
    Telnyx,
    /// Any SIP trunk.
    Generic,
}

/// A SIP transport toward a trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrunkTransport {
    Udp,
    Tcp,
    Tls,
}

impl TrunkTransport {
    pub fn as_str(self) -> &'static str {
        match self {
            TrunkTransport::Udp => "udp",
            TrunkTransport::Tcp => "tcp",
            TrunkTransport::Tls => "tls",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "udp" => Some(TrunkTransport::Udp),
            "tcp" => Some(TrunkTransport::Tcp),
            "tls" => Some(TrunkTransport::Tls),
            _ => None,
        }
    }

    /// The port used when none is given (5060, or 5061 for TLS).
    pub fn default_port(self) -> u16 {
        match self {
            TrunkTransport::Tls => 5061,
            _ => 5060,
        }
    }
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Twilio => "twilio",
            Provider::Telnyx => "telnyx",
            Provider::Generic => "generic",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "twilio" => Some(Provider::Twilio),
            "telnyx" => Some(Provider::Telnyx),
            "generic" => Some(Provider::Generic),
            _ => None,
        }
    }

    /// Calls per second the carrier accepts from one address by default (Twilio 30,
    /// Telnyx 50; a generic trunk 10 until the operator says otherwise).
    pub fn default_max_cps(self) -> u32 {
        match self {
            Provider::Twilio => 30,
            Provider::Telnyx => 50,
            Provider::Generic => 10,
        }
    }

    /// The Request-URI for an E.164 number (`+442071234567`) on `host[:port]`: every
    /// profile dials `sip:+E164@host`, which Twilio and Telnyx both require.
    pub fn request_uri(self, e164: &str, host: &str, port: Option<u16>) -> String {
        let number = if e164.starts_with('+') {
            e164.to_string()
        } else {
            format!("+{e164}")
        };
        match port {
            Some(p) => format!("sip:{number}@{host}:{p}"),
            None => format!("sip:{number}@{host}"),
        }
    }

    /// Whether a final response `status` (or a transport failure, `None`) moves the call to
    /// the next trunk: 408, 480, 503, 504 and transport errors do; 404, 486, 603 and every
    /// other answer do not (the callee said no, another carrier would say the same).
    pub fn fails_over(self, status: Option<u16>) -> bool {
        matches!(status, None | Some(408 | 480 | 503 | 504))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles() {
        assert_eq!(Provider::parse("Twilio"), Some(Provider::Twilio));
        assert_eq!(Provider::Twilio.default_max_cps(), 30);
        assert_eq!(Provider::Telnyx.default_max_cps(), 50);
        assert_eq!(
            Provider::Twilio.request_uri("442071234567", "acme.pstn.twilio.com", None),
            "sip:+442071234567@acme.pstn.twilio.com"
        );
        assert_eq!(
            Provider::Generic.request_uri("+15551234567", "10.0.0.1", Some(5080)),
            "sip:+15551234567@10.0.0.1:5080"
        );
        for s in [408, 480, 503, 504] {
            assert!(Provider::Telnyx.fails_over(Some(s)));
        }
        assert!(Provider::Telnyx.fails_over(None));
        for s in [404, 486, 603, 403, 200] {
            assert!(!Provider::Twilio.fails_over(Some(s)));
        }
        assert_eq!(TrunkTransport::Tls.default_port(), 5061);
        assert_eq!(TrunkTransport::parse("TCP"), Some(TrunkTransport::Tcp));
    }
}
