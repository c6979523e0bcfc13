//! Client authentication: SCRAM-SHA-256 (RFC 5802/7677, as PostgreSQL speaks it),
//! md5 and trust. Secrets are resolved once at config load into [`UserSecrets`];
//! plain passwords never leave this module and are never logged.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hmac::{Hmac, Mac};
use md5::Md5;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::config::UserConfig;

type HmacSha256 = Hmac<Sha256>;

/// A SCRAM-SHA-256 verifier as PostgreSQL stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramVerifier {
    pub iterations: u32,
    pub salt: Vec<u8>,
    pub stored_key: [u8; 32],
    pub server_key: [u8; 32],
}

impl ScramVerifier {
    /// Parses `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`.
    pub fn parse(s: &str) -> Option<ScramVerifier> {
        let rest = s.strip_prefix("SCRAM-SHA-256$")?;
        let (iter_salt, keys) = rest.split_once('$')?;
        let (iterations, salt) = iter_salt.split_once(':')?;
        let (stored, server) = keys.split_once(':')?;
        let iterations = iterations.parse().ok().filter(|i| *i > 0)?;
        let salt = B64.decode(salt).ok()?;
        let stored_key = B64.decode(stored).ok()?.try_into().ok()?;
        let server_key = B64.decode(server).ok()?.try_into().ok()?;
        Some(ScramVerifier {
            iterations,
            salt,
            stored_key,
            server_key,
        })
    }

    /// A fresh verifier for `password` with a random salt.
    pub fn from_password(password: &str) -> ScramVerifier {
        let text = postgres_protocol::password::scram_sha_256(password.as_bytes());
        // The library produces the same format this module parses.
        ScramVerifier::parse(&text).expect("postgres-protocol produces a valid verifier")
    }
}

/// What the server knows about one user.
#[derive(Debug, Clone)]
pub struct UserSecrets {
    pub scram: Option<ScramVerifier>,
    /// `md5(password || username)` as hex, as PostgreSQL stores md5 passwords.
    pub md5: Option<String>,
}

/// Users by name, built from `[[users]]`.
#[derive(Debug, Clone, Default)]
pub struct UserStore {
    users: HashMap<String, UserSecrets>,
}

impl UserStore {
    pub fn from_config(users: &[UserConfig]) -> UserStore {
        let users = users
            .iter()
            .map(|u| {
                let secrets = match (&u.password, &u.scram) {
                    (Some(p), _) => UserSecrets {
                        scram: Some(ScramVerifier::from_password(p)),
                        md5: Some(hex(&Md5::digest(format!("{p}{}", u.name).as_bytes()))),
                    },
                    (None, Some(v)) => UserSecrets {
                        scram: ScramVerifier::parse(v),
                        md5: None,
                    },
                    (None, None) => UserSecrets {
                        scram: None,
                        md5: None,
                    },
                };
                (u.name.clone(), secrets)
            })
            .collect();
        UserStore { users }
    }

    pub fn get(&self, name: &str) -> Option<&UserSecrets> {
        self.users.get(name)
    }

    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        // Writing to a String cannot fail.
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Checks an md5 password message: `"md5" + md5hex(md5hex(password || user) || salt)`.
pub fn md5_matches(stored_md5_hex: &str, salt: &[u8; 4], response: &str) -> bool {
    let mut h = Md5::new();
    h.update(stored_md5_hex.as_bytes());
    h.update(salt);
    let expected = format!("md5{}", hex(&h.finalize()));
    constant_time_eq(expected.as_bytes(), response.as_bytes())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rng().fill_bytes(&mut out);
    out
}

/// Why a SCRAM exchange failed.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramError {
    /// The client's messages do not follow the protocol.
    Malformed(&'static str),
    /// The proof does not match: wrong password (or unknown user).
    BadProof,
}

/// Server side of one SCRAM-SHA-256 exchange.
///
/// For an unknown user the exchange runs against a made-up verifier and fails at the
/// proof, as PostgreSQL does, so that user names cannot be probed.
pub struct ScramServer {
    verifier: ScramVerifier,
    known_user: bool,
    client_first_bare: String,
    server_first: String,
    nonce: String,
    gs2_header: String,
}

impl ScramServer {
    /// Handles the client-first message; returns the state and the server-first message.
    pub fn start(
        verifier: Option<&ScramVerifier>,
        client_first: &[u8],
    ) -> Result<(ScramServer, String), ScramError> {
        let text = std::str::from_utf8(client_first)
            .map_err(|_| ScramError::Malformed("client-first-message is not UTF-8"))?;
        // gs2-header: "n,," or "y,," (channel binding not used); "p=" would require it.
        let (cbind, rest) = text
            .split_once(',')
            .ok_or(ScramError::Malformed("missing gs2 header"))?;
        if cbind.starts_with("p=") {
            return Err(ScramError::Malformed(
                "channel binding is not supported; use SCRAM-SHA-256 without -PLUS",
            ));
        }
        if cbind != "n" && cbind != "y" {
            return Err(ScramError::Malformed("invalid gs2 channel-binding flag"));
        }
        let (authzid, bare) = rest
            .split_once(',')
            .ok_or(ScramError::Malformed("missing gs2 header"))?;
        if !authzid.is_empty() {
            return Err(ScramError::Malformed(
                "authorization identity is not supported",
            ));
        }
        let gs2_header = format!("{cbind},{authzid},");
        let client_nonce = bare
            .split(',')
            .find_map(|attr| attr.strip_prefix("r="))
            .filter(|n| !n.is_empty())
            .ok_or(ScramError::Malformed("missing client nonce"))?;
        let (verifier, known_user) = match verifier {
            Some(v) => (v.clone(), true),
            None => (
                ScramVerifier {
                    iterations: 4096,
                    salt: random_bytes::<16>().to_vec(),
                    stored_key: random_bytes(),
                    server_key: random_bytes(),
                },
                false,
            ),
        };
        let nonce = format!("{client_nonce}{}", B64.encode(random_bytes::<18>()));
        let server_first = format!(
            "r={nonce},s={},i={}",
            B64.encode(&verifier.salt),
            verifier.iterations
        );
        Ok((
            ScramServer {
                verifier,
                known_user,
                client_first_bare: bare.to_string(),
                server_first: server_first.clone(),
                nonce,
                gs2_header,
            },
            server_first,
        ))
    }

    /// Handles the client-final message; returns the server-final message on success.
    pub fn finish(self, client_final: &[u8]) -> Result<String, ScramError> {
        let text = std::str::from_utf8(client_final)
            .map_err(|_| ScramError::Malformed("client-final-message is not UTF-8"))?;
        let (without_proof, proof) = text
            .rsplit_once(",p=")
            .ok_or(ScramError::Malformed("missing proof"))?;
        let mut channel_binding = None;
        let mut nonce = None;
        for attr in without_proof.split(',') {
            if let Some(v) = attr.strip_prefix("c=") {
                channel_binding = Some(v);
            } else if let Some(v) = attr.strip_prefix("r=") {
                nonce = Some(v);
            }
        }
        let expected_cb = B64.encode(self.gs2_header.as_bytes());
        if channel_binding != Some(expected_cb.as_str()) {
            return Err(ScramError::Malformed("channel binding does not match"));
        }
        if nonce != Some(self.nonce.as_str()) {
            return Err(ScramError::Malformed("nonce does not match"));
        }
        let proof = B64
            .decode(proof)
            .map_err(|_| ScramError::Malformed("proof is not base64"))?;
        if proof.len() != 32 {
            return Err(ScramError::Malformed("proof has the wrong length"));
        }
        let auth_message = format!(
            "{},{},{}",
            self.client_first_bare, self.server_first, without_proof
        );
        let client_signature = hmac(&self.verifier.stored_key, auth_message.as_bytes());
        let client_key: Vec<u8> = proof
            .iter()
            .zip(client_signature.iter())
            .map(|(p, s)| p ^ s)
            .collect();
        let stored = Sha256::digest(&client_key);
        if !self.known_user || !constant_time_eq(&stored, &self.verifier.stored_key) {
            return Err(ScramError::BadProof);
        }
        let server_signature = hmac(&self.verifier.server_key, auth_message.as_bytes());
        Ok(format!("v={}", B64.encode(server_signature)))
    }
}

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Drives the client side with postgres-protocol's own SCRAM implementation.
    fn exchange(verifier: Option<&ScramVerifier>, password: &str) -> Result<(), ScramError> {
        use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
        let mut client = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
        let (server, server_first) = ScramServer::start(verifier, client.message())?;
        client.update(server_first.as_bytes()).unwrap();
        let server_final = server.finish(client.message())?;
        client.finish(server_final.as_bytes()).unwrap();
        Ok(())
    }

    #[test]
    fn scram_accepts_the_right_password() {
        let v = ScramVerifier::from_password("app");
        assert_eq!(exchange(Some(&v), "app"), Ok(()));
    }

    #[test]
    fn scram_rejects_a_wrong_password_and_unknown_users() {
        let v = ScramVerifier::from_password("app");
        assert_eq!(exchange(Some(&v), "nope"), Err(ScramError::BadProof));
        assert_eq!(exchange(None, "app"), Err(ScramError::BadProof));
    }

    #[test]
    fn scram_rejects_garbage() {
        assert!(ScramServer::start(None, b"\xff\xfe").is_err());
        assert!(ScramServer::start(None, b"p=tls-server-end-point,,n=,r=abc").is_err());
        assert!(ScramServer::start(None, b"n,,n=,").is_err());
    }

    #[test]
    fn verifier_round_trips() {
        let v = ScramVerifier::from_password("pw");
        let text = format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            v.iterations,
            B64.encode(&v.salt),
            B64.encode(v.stored_key),
            B64.encode(v.server_key)
        );
        assert_eq!(ScramVerifier::parse(&text), Some(v));
        assert_eq!(ScramVerifier::parse("md5abc"), None);
    }

    #[test]
    fn md5_checks_the_salted_hash() {
        let stored = hex(&Md5::digest(b"secretbob"));
        let salt = [1, 2, 3, 4];
        let mut h = Md5::new();
        h.update(stored.as_bytes());
        h.update(salt);
        let good = format!("md5{}", hex(&h.finalize()));
        assert!(md5_matches(&stored, &salt, &good));
        assert!(!md5_matches(&stored, &salt, "md5000"));
    }
}
