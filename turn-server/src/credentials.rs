//! coturn-compatible ephemeral credentials (`use-auth-secret`, the "TURN REST API"):
//! username `"<unix_expiry>:<user>"`, password `base64(HMAC-SHA1(secret, username))`.
//! Several secrets are accepted at once so that a secret can be rotated without cutting
//! live allocations. Checked without I/O: only the clock and the secrets.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::prelude::BASE64_STANDARD;
use base64::Engine;
use ring::hmac;
use serde::Serialize;

/// Ephemeral credentials handed to a signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Credentials {
    /// `"<unix_expiry>:<user>"`.
    pub username: String,
    /// `base64(HMAC-SHA1(secret, username))`.
    pub credential: String,
    /// Seconds the credentials stay valid.
    pub ttl: u64,
    /// `turn:` / `turns:` URLs of this server.
    pub urls: Vec<String>,
}

/// The password for `username` under `secret`.
pub fn password(secret: &str, username: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
    BASE64_STANDARD.encode(hmac::sign(&key, username.as_bytes()).as_ref())
}

/// Mints credentials for `user`, valid `ttl` seconds from `now_unix`, signed with the first
/// (current) secret.
pub fn mint(secret: &str, user: &str, ttl: u64, now_unix: u64, urls: Vec<String>) -> Credentials {
    let username = format!("{}:{user}", now_unix + ttl);
    Credentials {
        credential: password(secret, &username),
        username,
        ttl,
        urls,
    }
}

/// Why a username is not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsernameError {
    /// Not `<unix_expiry>` or `<unix_expiry>:<user>`.
    #[error("username is not <unix_expiry>:<user>")]
    Malformed,
    /// The expiry has passed.
    #[error("credentials expired")]
    Expired,
}

/// Checks the expiry part of a REST username; returns the user part.
pub fn check_username(username: &str, now_unix: u64) -> Result<&str, UsernameError> {
    let (expiry, user) = match username.split_once(':') {
        Some((e, u)) => (e, u),
        None => (username, ""),
    };
    let expiry: u64 = expiry.parse().map_err(|_| UsernameError::Malformed)?;
    if expiry < now_unix {
        return Err(UsernameError::Expired);
    }
    Ok(user)
}

/// The long-term credential key of RFC 5389: `MD5(username:realm:password)`.
pub fn long_term_key(username: &str, realm: &str, password: &str) -> Vec<u8> {
    turn::auth::generate_auth_key(username, realm, password)
}

/// The authentication hook for the TURN server: REST usernames against every secret.
pub struct RestAuth {
    secrets: Vec<String>,
    now_unix: Arc<dyn Fn() -> u64 + Send + Sync>,
    on_failure: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for RestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secrets.
        f.debug_struct("RestAuth")
            .field("secrets", &self.secrets.len())
            .finish()
    }
}

impl RestAuth {
    /// `secrets`: current first, then older ones still accepted. `now_unix`: the clock.
    /// `on_failure`: called for every refused username (metrics).
    pub fn new(
        secrets: Vec<String>,
        now_unix: Arc<dyn Fn() -> u64 + Send + Sync>,
        on_failure: Arc<dyn Fn() + Send + Sync>,
    ) -> Self {
        Self {
            secrets,
            now_unix,
            on_failure,
        }
    }
}

impl turn::auth::AuthHandler for RestAuth {
    fn auth_handle(
        &self,
        username: &str,
        realm: &str,
        src: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        self.auth_keys(username, realm, src)?
            .into_iter()
            .next()
            .ok_or_else(|| turn::Error::Other("no secret configured".into()))
    }

    fn auth_keys(
        &self,
        username: &str,
        realm: &str,
        src: SocketAddr,
    ) -> Result<Vec<Vec<u8>>, turn::Error> {
        if let Err(e) = check_username(username, (self.now_unix)()) {
            (self.on_failure)();
            tracing::debug!(client = %src, error = %e, "TURN credentials refused");
            return Err(turn::Error::Other(e.to_string()));
        }
        Ok(self
            .secrets
            .iter()
            .map(|s| long_term_key(username, realm, &password(s, username)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turn::auth::AuthHandler;

    #[test]
    fn matches_coturn_rest_credentials() {
        // Known answer: HMAC-SHA1("secret", "1700000000:alice"), base64, as coturn computes it
        // (computed independently with Python's hmac module).
        let c = mint("secret", "alice", 3600, 1_699_996_400, vec![]);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.credential, password("secret", "1700000000:alice"));
        assert_eq!(c.credential, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
    }

    #[test]
    fn expired_and_malformed_usernames_are_refused() {
        assert_eq!(check_username("100:bob", 99), Ok("bob"));
        assert_eq!(check_username("100", 100), Ok(""));
        assert_eq!(check_username("100:bob", 101), Err(UsernameError::Expired));
        assert_eq!(check_username("bob", 1), Err(UsernameError::Malformed));
        assert_eq!(check_username("", 1), Err(UsernameError::Malformed));
    }

    #[test]
    fn every_secret_gives_a_key_for_rotation() {
        let failures = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let f = failures.clone();
        let auth = RestAuth::new(
            vec!["new".into(), "old".into()],
            Arc::new(|| 50),
            Arc::new(move || {
                f.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }),
        );
        let src: SocketAddr = "192.0.2.1:5000".parse().expect("addr");
        let keys = auth.auth_keys("100:bob", "papercup", src).expect("keys");
        assert_eq!(keys.len(), 2);
        assert_eq!(
            keys[1],
            long_term_key("100:bob", "papercup", &password("old", "100:bob"))
        );
        assert!(auth.auth_keys("10:bob", "papercup", src).is_err());
        assert_eq!(failures.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
