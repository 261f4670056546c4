//! `papercup.toml`: one file, every key optional, overridable from the environment.
//!
//! Precedence: built-in defaults < the file < `PAPERCUP_…` environment variables. An
//! environment variable names a key by its path in upper case with `__` between section
//! and key: `PAPERCUP_DATABASE__URL`, `PAPERCUP_BILLING__SLICE_SECS`, `PAPERCUP_NODE_ID`.
//! Unknown keys, in the file or the environment, are errors that name the key (a typo
//! must not silently fall back to a default). `deploy/papercup.example.toml` documents
//! every key; a test keeps it in step with this file.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

/// Environment variables with this prefix configure Papercup.
pub const ENV_PREFIX: &str = "PAPERCUP_";
/// Variables that are not settings (the config path, test harness variables).
const ENV_IGNORED: [&str; 2] = ["PAPERCUP_CONFIG", "PAPERCUP_TEST_"];

/// The whole configuration.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This host's id: owner of its registrations and credit reservations.
    pub node_id: String,
    /// Storage.
    pub database: DatabaseConfig,
    /// HTTP API.
    pub http: HttpConfig,
    /// Rating and credit control.
    pub billing: BillingSection,
    /// The built-in TURN relay.
    pub turn: TurnSection,
    /// SIP: listeners, registrar, abuse guard, session timers.
    pub sip: SipSection,
    /// Trunks: health checks.
    pub trunks: TrunksSection,
    /// `[media]`
    pub media: MediaSection,
    /// Logging.
    pub log: LogConfig,
}

/// `[database]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `sqlite://path/to/file.db` or `postgres://user:pass@host/db`.
    pub url: String,
    /// Pool size.
    pub max_connections: u32,
    /// How often servers look for changes made by the CLI or other hosts (ms).
    pub change_poll_ms: u64,
}

/// `[http]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address of the JSON API.
    pub listen: SocketAddr,
}

/// `[billing]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BillingSection {
    /// ISO 4217 currency of wallets and rates.
    pub currency: String,
    /// ISO 3166-1 country in which national numbers are read.
    pub default_country: String,
    /// Talk time reserved when a call starts (seconds).
    pub first_grant_secs: i64,
    /// Talk time added by each extension (seconds).
    pub slice_secs: i64,
    /// Extend when this much granted time is left (seconds).
    pub lead_secs: i64,
    /// Highest price per minute callable (decimal, in the currency).
    pub max_rate_per_min: String,
    /// Longest grant for a free destination (seconds).
    pub max_free_call_secs: i64,
    /// How often the janitor settles reservations of dead hosts (seconds).
    pub janitor_interval_secs: u64,
}

/// `[turn]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TurnSection {
    /// Shared secrets for REST credentials, current first (empty: the relay is off).
    #[serde(deserialize_with = "string_or_list")]
    pub secrets: Vec<String>,
    /// Realm of the long-term credentials.
    pub realm: String,
    /// UDP listener ("" for none).
    pub listen_udp: String,
    /// UDP read loops sharing the port (0 = one per core).
    pub udp_workers: usize,
    /// TCP listener ("" for none).
    pub listen_tcp: String,
    /// TLS listeners (e.g. 5349 and 443).
    #[serde(deserialize_with = "string_or_list")]
    pub listen_tls: Vec<String>,
    /// PEM certificate chain for TLS.
    pub tls_cert: String,
    /// PEM private key for TLS.
    pub tls_key: String,
    /// Local address relay sockets bind to.
    pub relay_ip: String,
    /// Address advertised as relayed address behind 1:1 NAT ("" = relay_ip).
    pub public_ip: String,
    /// Host name or address put in the turn: URLs handed to browsers ("" = public_ip).
    pub public_host: String,
    /// Relay port range "LOW-HIGH" ("" = any free port).
    pub relay_ports: String,
    /// Validity of minted credentials (seconds).
    pub credential_ttl_secs: u64,
    /// Allocations one user may hold.
    pub max_allocations_per_user: usize,
    /// Allocations this host holds at most.
    pub max_allocations: usize,
    /// Bandwidth per allocation in kbit/s (0 = unlimited).
    pub max_kbps_per_allocation: u64,
    /// Bandwidth of the whole relay in kbit/s (0 = unlimited).
    pub max_kbps: u64,
    /// Longest allocation lifetime granted (seconds).
    pub max_lifetime_secs: u64,
    /// Validity of a nonce (seconds).
    pub nonce_lifetime_secs: u64,
    /// Outstanding nonces kept at most.
    pub max_nonces: usize,
    /// Peer ranges allowed despite the default deny list (CIDR).
    #[serde(deserialize_with = "string_or_list")]
    pub allow_peers: Vec<String>,
    /// Peer ranges denied in addition (CIDR).
    #[serde(deserialize_with = "string_or_list")]
    pub deny_peers: Vec<String>,
}

impl Default for TurnSection {
    fn default() -> Self {
        let t = turn_server::TurnConfig::default();
        Self {
            secrets: Vec::new(),
            realm: t.realm,
            listen_udp: "127.0.0.1:3478".into(),
            udp_workers: 0,
            listen_tcp: String::new(),
            listen_tls: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            relay_ip: "127.0.0.1".into(),
            public_ip: String::new(),
            public_host: String::new(),
            relay_ports: String::new(),
            credential_ttl_secs: 12 * 3600,
            max_allocations_per_user: t.max_allocations_per_user,
            max_allocations: t.max_allocations,
            max_kbps_per_allocation: 0,
            max_kbps: 0,
            max_lifetime_secs: t.max_lifetime.as_secs(),
            nonce_lifetime_secs: t.nonce_lifetime.as_secs(),
            max_nonces: t.max_nonces,
            allow_peers: Vec::new(),
            deny_peers: Vec::new(),
        }
    }
}

/// `[trunks]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TrunksSection {
    /// Seconds between OPTIONS probes of each enabled trunk (0 = no health checks).
    pub health_interval_secs: u64,
    /// Seconds a probe waits for an answer.
    pub health_timeout_secs: u64,
    /// Failed probes in a row that mark a trunk down, and answered ones that bring it back.
    pub down_after: u32,
    pub up_after: u32,
    /// Seconds a call may take to be answered, over every trunk tried (failover included).
    pub setup_timeout_secs: u64,
}

impl Default for TrunksSection {
    fn default() -> Self {
        let p = sip_trunk::HealthPolicy::default();
        Self {
            health_interval_secs: 30,
            health_timeout_secs: 5,
            down_after: p.down_after,
            up_after: p.up_after,
            setup_timeout_secs: 60,
        }
    }
}

/// `[media]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MediaSection {
    /// The address RTP and WebRTC sockets bind on.
    pub bind_ip: String,
    /// The address written in SDP and ICE candidates ("" = sip.public_ip, else bind_ip,
    /// else the address SIP advertises).
    pub public_ip: String,
    /// RTP ports for SIP legs, "first-last" (even RTP, odd RTCP).
    pub rtp_ports: String,
    /// UDP ports for browser (WebRTC) legs, "first-last".
    pub webrtc_ports: String,
    /// Seconds a released port rests before it is reused.
    pub port_drain_secs: u64,
    /// Latch RTP to any source address (phones behind NAT), not only the SDP's IP.
    pub nat_mode: bool,
    /// Codecs offered to and accepted from desk phones, in order (PCMU, PCMA, opus).
    pub phone_codecs: Vec<String>,
    /// What a phone dials for the echo test.
    pub echo_extension: String,
    /// How long the echo test waits before playing back, in milliseconds.
    pub echo_delay_ms: u64,
    /// Seconds a browser may stay disconnected before its call ends.
    pub webrtc_failed_after_secs: u64,
    /// Seconds without RTP from a peer that sends (not on hold) before the call ends.
    pub rtp_timeout_secs: u64,
}

impl Default for MediaSection {
    fn default() -> Self {
        Self {
            bind_ip: "0.0.0.0".into(),
            public_ip: String::new(),
            rtp_ports: "10000-19999".into(),
            webrtc_ports: "20000-29999".into(),
            port_drain_secs: 30,
            nat_mode: false,
            phone_codecs: vec!["PCMU".into(), "PCMA".into()],
            echo_extension: "*43".into(),
            echo_delay_ms: 500,
            webrtc_failed_after_secs: 10,
            rtp_timeout_secs: 60,
        }
    }
}

fn port_range(
    key: &'static str,
    v: &str,
) -> std::result::Result<(u16, u16), (&'static str, String)> {
    let bad = || {
        (
            key,
            format!("{v:?} is not a port range like \"10000-19999\""),
        )
    };
    let (a, b) = v.trim().split_once('-').ok_or_else(bad)?;
    let (a, b): (u16, u16) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a == 0 || a > b {
        return Err(bad());
    }
    Ok((a, b))
}

impl Config {
    /// The media engine's settings. `sip_advertised` is the address SIP puts in Via and
    /// Contact (the last fallback for SDP).
    pub fn media_config(
        &self,
        sip_advertised: Option<std::net::IpAddr>,
    ) -> std::result::Result<media::engine::MediaConfig, (&'static str, String)> {
        use std::net::IpAddr;
        use std::time::Duration;
        let m = &self.media;
        let ip = |key: &'static str,
                  v: &str|
         -> std::result::Result<Option<IpAddr>, (&'static str, String)> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            v.parse()
                .map(Some)
                .map_err(|_| (key, format!("{v:?} is not an IP address")))
        };
        let bind_ip = ip("media.bind_ip", &m.bind_ip)?.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        let public_ip = ip("media.public_ip", &m.public_ip)?
            .or(ip("sip.public_ip", &self.sip.public_ip)?)
            .or((!bind_ip.is_unspecified()).then_some(bind_ip))
            .or(sip_advertised.filter(|a| !a.is_unspecified()));
        let rtp_ports = port_range("media.rtp_ports", &m.rtp_ports)?;
        let webrtc_ports = port_range("media.webrtc_ports", &m.webrtc_ports)?;
        if rtp_ports.0 <= webrtc_ports.1 && webrtc_ports.0 <= rtp_ports.1 {
            return Err(("media.webrtc_ports", "overlaps media.rtp_ports".into()));
        }
        let mut phone_codecs = Vec::new();
        for c in &m.phone_codecs {
            phone_codecs.push(match c.to_ascii_lowercase().as_str() {
                "pcmu" => media::codec::Codec::Pcmu,
                "pcma" => media::codec::Codec::Pcma,
                "opus" => media::codec::Codec::Opus,
                _ => {
                    return Err((
                        "media.phone_codecs",
                        format!("{c:?}: the codecs are PCMU, PCMA and opus"),
                    ))
                }
            });
        }
        if phone_codecs.is_empty() {
            return Err(("media.phone_codecs", "name at least one codec".into()));
        }
        if m.echo_extension.trim().is_empty() {
            return Err(("media.echo_extension", "must not be empty".into()));
        }
        Ok(media::engine::MediaConfig {
            bind_ip,
            public_ip,
            rtp_ports,
            webrtc_ports,
            port_drain: Duration::from_secs(m.port_drain_secs),
            nat_mode: m.nat_mode,
            phone_codecs,
            echo_delay: Duration::from_millis(m.echo_delay_ms.clamp(20, 5_000)),
            webrtc_failed_after: Duration::from_secs(m.webrtc_failed_after_secs.max(2)),
            rtp_timeout: Duration::from_secs(m.rtp_timeout_secs.max(5)),
        })
    }
}

/// `[sip]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SipSection {
    /// UDP listeners (port 0: any free port).
    #[serde(deserialize_with = "string_or_list")]
    pub listen_udp: Vec<String>,
    /// TCP listeners.
    #[serde(deserialize_with = "string_or_list")]
    pub listen_tcp: Vec<String>,
    /// TLS listeners (e.g. 5061).
    #[serde(deserialize_with = "string_or_list")]
    pub listen_tls: Vec<String>,
    /// PEM certificate chain for TLS.
    pub tls_cert: String,
    /// PEM private key for TLS.
    pub tls_key: String,
    /// Address advertised in Via/Contact/SDP behind 1:1 NAT ("" = the bound address).
    pub public_ip: String,
    /// Digest realm of seat credentials.
    pub realm: String,
    /// Digest algorithms challenged, in order of preference ("SHA-256", "MD5").
    #[serde(deserialize_with = "string_or_list")]
    pub digest_algorithms: Vec<String>,
    /// Registration lifetimes (seconds): shortest accepted, longest granted, default.
    pub min_expires: u32,
    pub max_expires: u32,
    pub default_expires: u32,
    /// Validity of a digest nonce (seconds).
    pub nonce_lifetime_secs: u64,
    /// Failed authentications from one source within the window that block it.
    pub auth_fail_limit: u32,
    pub auth_fail_window_secs: u64,
    /// How long a blocked source stays blocked (seconds).
    pub block_secs: u64,
    /// Sustained SIP messages per second from one source (0 = unlimited), and burst.
    pub rate_limit_per_sec: u32,
    pub rate_limit_burst: u32,
    /// Sources never rate-limited nor blocked (CIDR): trunks, monitoring.
    #[serde(deserialize_with = "string_or_list")]
    pub trusted: Vec<String>,
    /// Session timer asked for (RFC 4028), and the smallest accepted (Min-SE), seconds.
    pub session_expires_secs: u32,
    pub min_se_secs: u32,
}

impl Default for SipSection {
    fn default() -> Self {
        let r = signaling::registrar::RegistrarConfig::default();
        let a = signaling::abuse::AbuseConfig::default();
        let s = signaling::SipConfig::default();
        Self {
            listen_udp: vec!["0.0.0.0:5060".into()],
            listen_tcp: vec!["0.0.0.0:5060".into()],
            listen_tls: Vec::new(),
            tls_cert: String::new(),
            tls_key: String::new(),
            public_ip: String::new(),
            realm: r.realm,
            digest_algorithms: r.algorithms.iter().map(|a| a.token().to_string()).collect(),
            min_expires: r.min_expires,
            max_expires: r.max_expires,
            default_expires: r.default_expires,
            nonce_lifetime_secs: r.nonce_lifetime.as_secs(),
            auth_fail_limit: a.auth_fail_limit,
            auth_fail_window_secs: a.auth_fail_window.as_secs(),
            block_secs: a.block_for.as_secs(),
            rate_limit_per_sec: a.rate_per_sec,
            rate_limit_burst: a.burst,
            trusted: Vec::new(),
            session_expires_secs: s.session_expires,
            min_se_secs: s.min_se,
        }
    }
}

/// A list, or (from the environment) one comma-separated string.
fn string_or_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s
            .split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect(),
        OneOrMany::Many(v) => v,
    })
}

/// `[log]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// A tracing filter: `info`, `debug`, `papercup=debug,sqlx=warn`…
    pub level: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            node_id: default_node_id(),
            database: DatabaseConfig::default(),
            http: HttpConfig::default(),
            billing: BillingSection::default(),
            turn: TurnSection::default(),
            sip: SipSection::default(),
            trunks: TrunksSection::default(),
            media: MediaSection::default(),
            log: LogConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: "sqlite://papercup.db".into(),
            max_connections: 10,
            change_poll_ms: 1_000,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        }
    }
}

impl Default for BillingSection {
    fn default() -> Self {
        let b = billing::BillingConfig::default();
        Self {
            currency: b.currency,
            default_country: "US".into(),
            first_grant_secs: b.first_grant_secs,
            slice_secs: b.slice_secs,
            lead_secs: b.lead_secs,
            max_rate_per_min: billing::money::format_amount(b.max_rate_per_min),
            max_free_call_secs: b.max_free_call_secs,
            janitor_interval_secs: 10,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}

fn default_node_id() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "papercup".into())
}

/// Where the configuration came from, for messages.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The configuration.
    pub config: Config,
    /// The file read, if any.
    pub file: Option<PathBuf>,
}

/// Loads the configuration: `explicit` if given (it must exist), else `./papercup.toml`
/// or `/etc/papercup/papercup.toml` if present, else defaults; then the environment.
pub fn load(explicit: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Loaded> {
    let file = match explicit {
        Some(p) => Some(p.to_path_buf()),
        None => ["papercup.toml", "/etc/papercup/papercup.toml"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
    };
    let mut table = match &file {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read config file {}", p.display()))?;
            text.parse::<toml::Table>()
                .map_err(|e| anyhow!("{}: {}", p.display(), e.to_string().trim_end()))?
        }
        None => toml::Table::new(),
    };
    let mut from_env: BTreeMap<String, String> = BTreeMap::new();
    for (name, raw) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if ENV_IGNORED.iter().any(|i| name.starts_with(i)) || rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        set_path(&mut table, &path, env_value(raw))
            .map_err(|e| anyhow!("environment variable {name}: {e}"))?;
        from_env.insert(path.join("."), name.clone());
    }
    let source = |key: &str| match (from_env.get(key), &file) {
        (Some(var), _) => format!("environment variable {var}"),
        (None, Some(f)) => f.display().to_string(),
        (None, None) => "defaults".to_string(),
    };
    let config: Config =
        serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
            let key = e.path().to_string();
            anyhow!("config key `{key}` ({}): {}", source(&key), e.inner())
        })?;
    config
        .validate()
        .map_err(|(key, msg)| anyhow!("config key `{key}` ({}): {msg}", source(key)))?;
    Ok(Loaded { config, file })
}

/// Environment values are strings, except whole numbers and booleans (for numeric keys).
fn env_value(raw: &str) -> toml::Value {
    if let Ok(i) = raw.trim().parse::<i64>() {
        return toml::Value::Integer(i);
    }
    match raw.trim() {
        "true" => toml::Value::Boolean(true),
        "false" => toml::Value::Boolean(false),
        _ => toml::Value::String(raw.to_string()),
    }
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<()> {
    match path {
        [] => bail!("empty key"),
        [key] => {
            table.insert(key.clone(), value);
            Ok(())
        }
        [section, rest @ ..] => {
            let entry = table
                .entry(section.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            match entry {
                toml::Value::Table(t) => set_path(t, rest, value),
                _ => bail!("`{section}` is not a section"),
            }
        }
    }
}

impl Config {
    /// Checks what types alone cannot; the error names the key.
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.node_id.trim().is_empty() || self.node_id.contains(char::is_whitespace) {
            return Err(("node_id", "must be a non-empty word without spaces".into()));
        }
        storage::Backend::from_url(&self.database.url)
            .map_err(|e| ("database.url", e.to_string()))?;
        self.media_config(None)?;
        if self.database.max_connections == 0 {
            return Err(("database.max_connections", "must be at least 1".into()));
        }
        if self.database.change_poll_ms < 10 {
            return Err(("database.change_poll_ms", "must be at least 10".into()));
        }
        let b = &self.billing;
        if b.currency.len() != 3 || !b.currency.bytes().all(|c| c.is_ascii_uppercase()) {
            return Err((
                "billing.currency",
                "must be an ISO 4217 code such as USD".into(),
            ));
        }
        billing::e164::country_id(&b.default_country)
            .map_err(|e| ("billing.default_country", e.to_string()))?;
        if b.lead_secs < 1 {
            return Err(("billing.lead_secs", "must be at least 1".into()));
        }
        if b.slice_secs <= b.lead_secs {
            return Err((
                "billing.slice_secs",
                format!("must be greater than billing.lead_secs ({})", b.lead_secs),
            ));
        }
        if b.first_grant_secs < 1 {
            return Err(("billing.first_grant_secs", "must be at least 1".into()));
        }
        if b.max_free_call_secs < 1 {
            return Err(("billing.max_free_call_secs", "must be at least 1".into()));
        }
        match billing::money::parse_amount(&b.max_rate_per_min) {
            Ok(v) if v >= 0 => {}
            Ok(_) => return Err(("billing.max_rate_per_min", "must not be negative".into())),
            Err(e) => return Err(("billing.max_rate_per_min", e.to_string())),
        }
        if b.janitor_interval_secs == 0 {
            return Err(("billing.janitor_interval_secs", "must be at least 1".into()));
        }
        self.turn_config()?;
        self.sip_config()?;
        if self.trunks.health_timeout_secs == 0 {
            return Err(("trunks.health_timeout_secs", "must be at least 1".into()));
        }
        if self.trunks.setup_timeout_secs == 0 {
            return Err(("trunks.setup_timeout_secs", "must be at least 1".into()));
        }
        if self.trunks.down_after == 0 || self.trunks.up_after == 0 {
            return Err((
                "trunks.down_after",
                "down_after and up_after must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// The SIP core's settings.
    pub fn sip_config(&self) -> std::result::Result<signaling::SipConfig, (&'static str, String)> {
        use std::time::Duration;
        let s = &self.sip;
        let addrs = |key: &'static str,
                     v: &[String]|
         -> std::result::Result<Vec<SocketAddr>, (&'static str, String)> {
            v.iter()
                .map(|a| {
                    a.trim()
                        .parse()
                        .map_err(|_| (key, format!("{a:?} is not an address:port")))
                })
                .collect()
        };
        let udp = addrs("sip.listen_udp", &s.listen_udp)?;
        let tcp = addrs("sip.listen_tcp", &s.listen_tcp)?;
        let tls = addrs("sip.listen_tls", &s.listen_tls)?;
        if let Some(a) = tcp.iter().find(|a| a.port() == 0) {
            return Err((
                "sip.listen_tcp",
                format!("{a}: give a port (0 is not supported)"),
            ));
        }
        if let Some(a) = tls.iter().find(|a| a.port() == 0) {
            return Err((
                "sip.listen_tls",
                format!("{a}: give a port (0 is not supported)"),
            ));
        }
        if !tls.is_empty() && (s.tls_cert.is_empty() || s.tls_key.is_empty()) {
            return Err((
                "sip.listen_tls",
                "needs sip.tls_cert and sip.tls_key".into(),
            ));
        }
        let public_ip = if s.public_ip.trim().is_empty() {
            None
        } else {
            Some(s.public_ip.trim().parse().map_err(|_| {
                (
                    "sip.public_ip",
                    format!("{:?} is not an IP address", s.public_ip),
                )
            })?)
        };
        if s.realm.trim().is_empty() || s.realm.contains('"') {
            return Err((
                "sip.realm",
                "must be a non-empty word without quotes".into(),
            ));
        }
        if s.min_expires == 0 || s.min_expires > s.max_expires {
            return Err((
                "sip.min_expires",
                "must be at least 1 and at most sip.max_expires".into(),
            ));
        }
        if s.default_expires < s.min_expires || s.default_expires > s.max_expires {
            return Err((
                "sip.default_expires",
                "must lie between sip.min_expires and sip.max_expires".into(),
            ));
        }
        if s.nonce_lifetime_secs < 10 {
            return Err(("sip.nonce_lifetime_secs", "must be at least 10".into()));
        }
        if s.min_se_secs < 90 {
            return Err(("sip.min_se_secs", "must be at least 90 (RFC 4028)".into()));
        }
        if s.session_expires_secs < s.min_se_secs {
            return Err((
                "sip.session_expires_secs",
                "must be at least sip.min_se_secs".into(),
            ));
        }
        let mut algorithms = Vec::new();
        for a in &s.digest_algorithms {
            match signaling::digest::Algorithm::parse(Some(a.trim())) {
                Some(alg) if !algorithms.contains(&alg) => algorithms.push(alg),
                Some(_) => {}
                None => {
                    return Err((
                        "sip.digest_algorithms",
                        format!("{a:?} is not one of \"SHA-256\", \"MD5\""),
                    ))
                }
            }
        }
        if algorithms.is_empty() {
            return Err((
                "sip.digest_algorithms",
                "name at least one algorithm".into(),
            ));
        }
        let trusted = s
            .trusted
            .iter()
            .map(|n| {
                n.parse::<ipnet::IpNet>()
                    .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        (
                            "sip.trusted",
                            format!("{n:?} is not a CIDR range or address"),
                        )
                    })
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(signaling::SipConfig {
            udp,
            tcp,
            tls,
            tls_cert: (!s.tls_cert.is_empty()).then(|| PathBuf::from(&s.tls_cert)),
            tls_key: (!s.tls_key.is_empty()).then(|| PathBuf::from(&s.tls_key)),
            public_ip,
            registrar: signaling::registrar::RegistrarConfig {
                realm: s.realm.clone(),
                min_expires: s.min_expires,
                max_expires: s.max_expires,
                default_expires: s.default_expires,
                nonce_lifetime: Duration::from_secs(s.nonce_lifetime_secs),
                node_id: self.node_id.clone(),
                algorithms,
            },
            abuse: signaling::abuse::AbuseConfig {
                auth_fail_limit: s.auth_fail_limit,
                auth_fail_window: Duration::from_secs(s.auth_fail_window_secs),
                block_for: Duration::from_secs(s.block_secs),
                rate_per_sec: s.rate_limit_per_sec,
                burst: s.rate_limit_burst,
                exempt: trusted,
            },
            session_expires: s.session_expires_secs,
            min_se: s.min_se_secs,
            ..signaling::SipConfig::default()
        })
    }

    /// The TURN relay's settings, `None` when no secret is configured (relay off).
    pub fn turn_config(
        &self,
    ) -> std::result::Result<Option<turn_server::TurnConfig>, (&'static str, String)> {
        let t = &self.turn;
        let addr = |key: &'static str,
                    v: &str|
         -> std::result::Result<Option<SocketAddr>, (&'static str, String)> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            v.trim()
                .parse()
                .map(Some)
                .map_err(|_| (key, format!("{v:?} is not an address:port")))
        };
        let ip = |key: &'static str,
                  v: &str|
         -> std::result::Result<Option<std::net::IpAddr>, (&'static str, String)> {
            if v.trim().is_empty() {
                return Ok(None);
            }
            v.trim()
                .parse()
                .map(Some)
                .map_err(|_| (key, format!("{v:?} is not an IP address")))
        };
        let nets = |key: &'static str,
                    v: &[String]|
         -> std::result::Result<Vec<ipnet::IpNet>, (&'static str, String)> {
            v.iter()
                .map(|n| {
                    n.parse::<ipnet::IpNet>()
                        .or_else(|_| n.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                        .map_err(|_| (key, format!("{n:?} is not a CIDR range or address")))
                })
                .collect()
        };
        let udp = addr("turn.listen_udp", &t.listen_udp)?;
        let tcp = addr("turn.listen_tcp", &t.listen_tcp)?;
        let mut tls = Vec::new();
        for a in &t.listen_tls {
            tls.extend(addr("turn.listen_tls", a)?);
        }
        let relay_ip = ip("turn.relay_ip", &t.relay_ip)?
            .ok_or(("turn.relay_ip", "must be set".to_string()))?;
        let public_ip = ip("turn.public_ip", &t.public_ip)?;
        let relay_ports = if t.relay_ports.trim().is_empty() {
            None
        } else {
            let parsed = t
                .relay_ports
                .split_once('-')
                .and_then(|(a, b)| {
                    Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?))
                })
                .filter(|(a, b)| *a > 0 && a <= b);
            Some(parsed.ok_or((
                "turn.relay_ports",
                format!("{:?} is not LOW-HIGH, e.g. 49152-65535", t.relay_ports),
            ))?)
        };
        if !tls.is_empty() && (t.tls_cert.is_empty() || t.tls_key.is_empty()) {
            return Err((
                "turn.listen_tls",
                "needs turn.tls_cert and turn.tls_key".into(),
            ));
        }
        if t.secrets.is_empty() {
            return Ok(None);
        }
        if t.secrets.iter().any(|s| s.len() < 16) {
            return Err((
                "turn.secrets",
                "each secret needs at least 16 characters".into(),
            ));
        }
        if udp.is_none() && tcp.is_none() && tls.is_empty() {
            return Err(("turn.listen_udp", "no TURN listener configured".into()));
        }
        Ok(Some(turn_server::TurnConfig {
            realm: t.realm.clone(),
            secrets: t.secrets.clone(),
            udp,
            udp_workers: if t.udp_workers == 0 {
                turn_server::TurnConfig::default().udp_workers
            } else {
                t.udp_workers
            },
            tcp,
            tls,
            tls_cert: (!t.tls_cert.is_empty()).then(|| PathBuf::from(&t.tls_cert)),
            tls_key: (!t.tls_key.is_empty()).then(|| PathBuf::from(&t.tls_key)),
            relay_ip,
            public_ip,
            relay_ports,
            max_allocations_per_user: t.max_allocations_per_user,
            max_allocations: t.max_allocations,
            max_bps_per_allocation: t.max_kbps_per_allocation * 1000,
            max_bps: t.max_kbps * 1000,
            max_lifetime: std::time::Duration::from_secs(t.max_lifetime_secs.max(60)),
            nonce_lifetime: std::time::Duration::from_secs(t.nonce_lifetime_secs.max(10)),
            max_nonces: t.max_nonces.max(100),
            allow_peers: nets("turn.allow_peers", &t.allow_peers)?,
            deny_peers: nets("turn.deny_peers", &t.deny_peers)?,
            own_addresses: Vec::new(),
        }))
    }

    /// The host name put in TURN URLs.
    pub fn turn_public_host(&self) -> String {
        let t = &self.turn;
        [&t.public_host, &t.public_ip, &t.relay_ip]
            .into_iter()
            .find(|s| !s.is_empty())
            .cloned()
            .unwrap_or_else(|| "127.0.0.1".into())
    }

    /// The billing engine's settings.
    pub fn billing_config(&self) -> billing::BillingConfig {
        let b = &self.billing;
        billing::BillingConfig {
            currency: b.currency.clone(),
            default_country: billing::e164::country_id(&b.default_country).ok(),
            first_grant_secs: b.first_grant_secs,
            slice_secs: b.slice_secs,
            lead_secs: b.lead_secs,
            // Validated in `validate`.
            max_rate_per_min: billing::money::parse_amount(&b.max_rate_per_min).unwrap_or(0),
            max_free_call_secs: b.max_free_call_secs,
        }
    }

    /// The storage pool settings.
    pub fn db_options(&self) -> storage::DbOptions {
        storage::DbOptions {
            max_connections: self.database.max_connections,
            ..storage::DbOptions::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load_text(text: &str, vars: &[(&str, &str)]) -> Result<Config> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("papercup.toml");
        std::fs::write(&path, text)?;
        load(Some(&path), &env(vars)).map(|l| l.config)
    }

    #[test]
    fn no_file_gives_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("nope.toml");
        assert!(load(Some(&missing), &env(&[])).is_err());
        let c = load_text("", &[]).expect("empty file");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn the_example_file_documents_every_key_with_its_default() {
        let text = include_str!("../deploy/papercup.example.toml");
        // Every key is present, commented out as `#key = default`; prose is `# text`.
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix('#') {
                Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let table: toml::Table = uncommented.parse().expect("example parses");
        let mut c: Config = table.clone().try_into().expect("example deserializes");
        c.node_id = Config::default().node_id;
        assert_eq!(c, Config::default());
        let defaults = toml::Table::try_from(Config::default()).expect("serialize");
        for (section, v) in &defaults {
            match v {
                toml::Value::Table(keys) => {
                    for key in keys.keys() {
                        assert!(
                            table.get(section).and_then(|s| s.get(key)).is_some(),
                            "example lacks {section}.{key}"
                        );
                    }
                }
                _ => assert!(table.contains_key(section), "example lacks {section}"),
            }
        }
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load_text(
            "[billing]\nslice_secs = 90\n",
            &[
                ("PAPERCUP_DATABASE__URL", "postgres://pc@db/papercup"),
                ("PAPERCUP_BILLING__LEAD_SECS", "20"),
                ("PAPERCUP_NODE_ID", "media-1"),
                ("PAPERCUP_TEST_PG_URL", "ignored"),
                ("OTHER", "ignored"),
            ],
        )
        .expect("config");
        assert_eq!(c.database.url, "postgres://pc@db/papercup");
        assert_eq!((c.billing.slice_secs, c.billing.lead_secs), (90, 20));
        assert_eq!(c.node_id, "media-1");
    }

    #[test]
    fn errors_name_the_key() {
        let e = load_text("[billing]\nslice_secs = \"sixty\"\n", &[]).expect_err("bad type");
        assert!(e.to_string().contains("billing.slice_secs"), "{e}");
        let e = load_text("[billing]\nslise_secs = 60\n", &[]).expect_err("typo");
        assert!(e.to_string().contains("slise_secs"), "{e}");
        let e = load_text("", &[("PAPERCUP_BILLING__LEAD_SECS", "90")]).expect_err("lead");
        assert!(e.to_string().contains("billing.slice_secs"), "{e}");
        let e = load_text("", &[("PAPERCUP_BILING__LEAD_SECS", "9")]).expect_err("env typo");
        assert!(
            e.to_string().contains("PAPERCUP_BILING__LEAD_SECS")
                || e.to_string().contains("biling"),
            "{e}"
        );
        let e = load_text("[database]\nurl = \"mysql://x\"\n", &[]).expect_err("url");
        assert!(e.to_string().contains("database.url"), "{e}");
        let e = load_text("[billing]\nmax_rate_per_min = \"cheap\"\n", &[]).expect_err("money");
        assert!(e.to_string().contains("billing.max_rate_per_min"), "{e}");
        let e = load_text("[billing]\ndefault_country = \"XX\"\n", &[]).expect_err("country");
        assert!(e.to_string().contains("billing.default_country"), "{e}");
        let e = load_text("[media]\nrtp_ports = \"20000-10000\"\n", &[]).expect_err("range");
        assert!(e.to_string().contains("media.rtp_ports"), "{e}");
        let e = load_text("[media]\nwebrtc_ports = \"15000-25000\"\n", &[]).expect_err("overlap");
        assert!(e.to_string().contains("media.webrtc_ports"), "{e}");
        let e = load_text("[media]\nphone_codecs = [\"G729\"]\n", &[]).expect_err("codec");
        assert!(e.to_string().contains("media.phone_codecs"), "{e}");
        let e = load_text("[media]\npublic_ip = \"nope\"\n", &[]).expect_err("ip");
        assert!(e.to_string().contains("media.public_ip"), "{e}");
        let e = load_text("[http\n", &[]).expect_err("syntax");
        assert!(e.to_string().contains("papercup.toml"), "{e}");
    }
}
