//! Password hashes: the configuration stores only these, never passwords.
//!
//! Three forms, one per line of a mosquitto password file or per
//! `password_hash` key:
//! - `$7$ITERATIONS$SALT$HASH` — PBKDF2-HMAC-SHA512, 64-byte hash, the
//!   format `mosquitto_passwd` writes (so its files can be reused). Slow on
//!   purpose: right for passwords people choose, which a leaked config must
//!   not give away.
//! - `$6$SALT$HASH` — SHA-512 of password then salt, mosquitto's older form
//!   (read only, for old files).
//! - `$sha256$SALT$HASH` — SHA-256 of salt then password. Fast on purpose:
//!   for device tokens of 128+ random bits a slow KDF adds nothing (nobody
//!   can search that space at any speed), while at 20 000 connects per
//!   second after an outage a KDF of even 1 ms would need 20 cores. Use it
//!   only for random tokens (`fieldlink broker passwd --kind sha256`
//!   refuses short ones).
//!
//! SALT and HASH are standard base64. Comparisons are constant-time.

use std::fmt;
use std::num::NonZeroU32;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::rand::SecureRandom;
use subtle::ConstantTimeEq;

/// Iterations `passwd --kind pbkdf2` uses (mosquitto_passwd uses 101 by
/// default; OWASP asks for far more, and every connect pays them).
pub const DEFAULT_PBKDF2_ITERATIONS: u32 = 20_000;

/// Shortest password `passwd --kind sha256` accepts: a fast hash is only
/// safe for long random tokens.
pub const MIN_FAST_PASSWORD: usize = 20;

/// A stored password hash.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        /// Iterations.
        iterations: NonZeroU32,
        /// Salt bytes.
        salt: Vec<u8>,
        /// Derived key (64 bytes).
        hash: Vec<u8>,
    },
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 {
        /// Salt bytes.
        salt: Vec<u8>,
        /// Digest (64 bytes).
        hash: Vec<u8>,
    },
    /// `$sha256$`: SHA-256(salt ‖ password).
    Sha256 {
        /// Salt bytes.
        salt: Vec<u8>,
        /// Digest (32 bytes).
        hash: Vec<u8>,
    },
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the hash itself.
        f.write_str(self.kind().label())
    }
}

/// The kinds of hash `fieldlink broker passwd` can make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HashKind {
    /// PBKDF2-HMAC-SHA512 (`$7$`), for passwords people choose.
    Pbkdf2,
    /// Salted SHA-256 (`$sha256$`), for random device tokens.
    Sha256,
    /// SHA-512 (`$6$`), read only.
    Sha512,
}

impl HashKind {
    /// Name for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            HashKind::Pbkdf2 => "pbkdf2-sha512",
            HashKind::Sha256 => "sha256",
            HashKind::Sha512 => "sha512",
        }
    }
}

/// A hash line that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("password hash `{shown}`: {why}")]
pub struct HashError {
    /// The scheme of the hash as given (`$7$…`), never the rest: the text
    /// may be a password pasted by mistake.
    pub shown: String,
    /// What is wrong.
    pub why: &'static str,
}

/// A password that cannot be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PasswdError {
    /// Empty passwords are never accepted.
    #[error("the password is empty")]
    Empty,
    /// Too short for a fast hash.
    #[error(
        "a sha256 hash needs a random token of at least {MIN_FAST_PASSWORD} characters, got {0}"
    )]
    TooShortForFastHash(usize),
    /// The system's random source failed.
    #[error("no randomness available for a salt")]
    Random,
}

impl FromStr for PasswordHash {
    type Err = HashError;

    fn from_str(text: &str) -> Result<Self, HashError> {
        // Show only the scheme: the text may be a password pasted by mistake.
        let shown = match text.split('$').nth(1) {
            Some(scheme) if text.starts_with('$') && scheme.len() <= 8 => format!("${scheme}$…"),
            _ => "(hidden)".to_owned(),
        };
        let error = |why| HashError {
            shown: shown.clone(),
            why,
        };
        let decode = |part: &str| {
            B64.decode(part)
                .map_err(|_| error("salt or hash is not base64"))
        };
        let parts: Vec<&str> = text.split('$').collect();
        match parts.as_slice() {
            ["", "7", iterations, salt, hash] => {
                let iterations = iterations
                    .parse::<NonZeroU32>()
                    .map_err(|_| error("iterations must be a number above zero"))?;
                let (salt, hash) = (decode(salt)?, decode(hash)?);
                if hash.len() != 64 || salt.is_empty() {
                    return Err(error("a $7$ hash has a salt and 64 hash bytes"));
                }
                Ok(PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt,
                    hash,
                })
            }
            ["", "6", salt, hash] => {
                let (salt, hash) = (decode(salt)?, decode(hash)?);
                if hash.len() != 64 || salt.is_empty() {
                    return Err(error("a $6$ hash has a salt and 64 hash bytes"));
                }
                Ok(PasswordHash::Sha512 { salt, hash })
            }
            ["", "sha256", salt, hash] => {
                let (salt, hash) = (decode(salt)?, decode(hash)?);
                if hash.len() != 32 || salt.is_empty() {
                    return Err(error("a $sha256$ hash has a salt and 32 hash bytes"));
                }
                Ok(PasswordHash::Sha256 { salt, hash })
            }
            _ => Err(error(
                "expected $7$ITERATIONS$SALT$HASH, $6$SALT$HASH or $sha256$SALT$HASH (never a plain password)",
            )),
        }
    }
}

impl fmt::Display for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => write!(
                f,
                "$7${iterations}${}${}",
                B64.encode(salt),
                B64.encode(hash)
            ),
            PasswordHash::Sha512 { salt, hash } => {
                write!(f, "$6${}${}", B64.encode(salt), B64.encode(hash))
            }
            PasswordHash::Sha256 { salt, hash } => {
                write!(f, "$sha256${}${}", B64.encode(salt), B64.encode(hash))
            }
        }
    }
}

impl PasswordHash {
    /// Hashes a new password with a random salt.
    ///
    /// # Errors
    /// `PasswdError` for an empty password, a short one with
    /// [`HashKind::Sha256`], or no randomness.
    pub fn generate(kind: HashKind, password: &[u8]) -> Result<PasswordHash, PasswdError> {
        if password.is_empty() {
            return Err(PasswdError::Empty);
        }
        let mut salt = vec![0u8; 12];
        ring::rand::SystemRandom::new()
            .fill(&mut salt)
            .map_err(|_| PasswdError::Random)?;
        Ok(match kind {
            HashKind::Pbkdf2 => {
                let iterations =
                    NonZeroU32::new(DEFAULT_PBKDF2_ITERATIONS).unwrap_or(NonZeroU32::MIN);
                let mut hash = vec![0u8; 64];
                ring::pbkdf2::derive(
                    ring::pbkdf2::PBKDF2_HMAC_SHA512,
                    iterations,
                    &salt,
                    password,
                    &mut hash,
                );
                PasswordHash::Pbkdf2Sha512 {
                    iterations,
                    salt,
                    hash,
                }
            }
            HashKind::Sha256 => {
                let chars = String::from_utf8_lossy(password).chars().count();
                if chars < MIN_FAST_PASSWORD {
                    return Err(PasswdError::TooShortForFastHash(chars));
                }
                let hash = sha256(&salt, password);
                PasswordHash::Sha256 { salt, hash }
            }
            HashKind::Sha512 => {
                let hash = sha512(password, &salt);
                PasswordHash::Sha512 { salt, hash }
            }
        })
    }

    /// Which kind of hash this is.
    pub fn kind(&self) -> HashKind {
        match self {
            PasswordHash::Pbkdf2Sha512 { .. } => HashKind::Pbkdf2,
            PasswordHash::Sha512 { .. } => HashKind::Sha512,
            PasswordHash::Sha256 { .. } => HashKind::Sha256,
        }
    }

    /// Whether checking costs real CPU time (run it off the async threads).
    pub fn is_slow(&self) -> bool {
        matches!(self, PasswordHash::Pbkdf2Sha512 { iterations, .. } if iterations.get() > 1000)
    }

    /// Whether `password` is the one hashed; constant-time in the hash.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => ring::pbkdf2::verify(
                ring::pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            PasswordHash::Sha512 { salt, hash } => {
                sha512(password, salt).as_slice().ct_eq(hash).into()
            }
            PasswordHash::Sha256 { salt, hash } => {
                sha256(salt, password).as_slice().ct_eq(hash).into()
            }
        }
    }
}

fn sha256(salt: &[u8], password: &[u8]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(salt);
    ctx.update(password);
    ctx.finish().as_ref().to_vec()
}

fn sha512(password: &[u8], salt: &[u8]) -> Vec<u8> {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA512);
    ctx.update(password);
    ctx.update(salt);
    ctx.finish().as_ref().to_vec()
}

/// A hash that matches no password, checked for unknown user names so a
/// refusal takes about as long as for a known device (fast-hash fleets).
pub(crate) fn dummy_verify(password: &[u8]) {
    let _ = sha256(b"fieldlink-unknown-user", password);
}

/// Checks a login against `users`; `None` for an unknown user or a wrong
/// password. Slow hashes (PBKDF2) run off the async threads, at most
/// `slots` at once, so a flood of wrong passwords cannot take every core.
pub(crate) async fn check_login(
    users: &std::collections::HashMap<std::sync::Arc<str>, crate::config::User>,
    slots: &tokio::sync::Semaphore,
    username: &str,
    password: &[u8],
) -> Option<crate::config::User> {
    let Some(user) = users.get(username) else {
        dummy_verify(password);
        return None;
    };
    let ok = if user.hash.is_slow() {
        let _slot = slots.acquire().await.ok()?;
        let hash = user.hash.clone();
        let password = password.to_vec();
        tokio::task::spawn_blocking(move || hash.verify(&password))
            .await
            .unwrap_or(false)
    } else {
        user.hash.verify(password)
    };
    ok.then(|| user.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_hashes_verify_and_round_trip() {
        for kind in [HashKind::Pbkdf2, HashKind::Sha256, HashKind::Sha512] {
            let password = b"a-long-random-device-token-0123456789";
            let hash = PasswordHash::generate(kind, password).unwrap();
            assert!(hash.verify(password), "{kind:?}");
            assert!(
                !hash.verify(b"a-long-random-device-token-012345678"),
                "{kind:?}"
            );
            assert!(!hash.verify(b""), "{kind:?}");
            let text = hash.to_string();
            let parsed: PasswordHash = text.parse().unwrap();
            assert_eq!(parsed, hash);
            assert_eq!(parsed.kind(), kind);
        }
    }

    /// A `$7$` line with mosquitto_passwd's default 101 iterations (the
    /// e2e interop test reads one the real mosquitto_passwd wrote).
    #[test]
    fn reads_mosquitto_pbkdf2_lines() {
        let hash = PasswordHash::generate(HashKind::Pbkdf2, b"secret").unwrap();
        let PasswordHash::Pbkdf2Sha512 { salt, hash: h, .. } = &hash else {
            unreachable!()
        };
        let mut derived = vec![0u8; 64];
        ring::pbkdf2::derive(
            ring::pbkdf2::PBKDF2_HMAC_SHA512,
            NonZeroU32::new(101).unwrap(),
            salt,
            b"secret",
            &mut derived,
        );
        assert_ne!(&derived, h, "iterations matter");
        let line = format!("$7$101${}${}", B64.encode(salt), B64.encode(&derived));
        let parsed: PasswordHash = line.parse().unwrap();
        assert!(parsed.verify(b"secret"));
        assert!(!parsed.is_slow());
    }

    #[test]
    fn rejects_what_is_not_a_hash() {
        for bad in [
            "secret",
            "$7$0$c2FsdA==$aGFzaA==",
            "$7$101$not base64$aGFzaA==",
            "$7$101$c2FsdA==$aGFzaA==",
            "$sha256$$aGFzaA==",
            "$5$abc$def",
            "",
        ] {
            let err = bad.parse::<PasswordHash>().unwrap_err();
            assert!(!err.to_string().contains("secret"), "{err}");
        }
    }

    #[test]
    fn fast_hash_needs_a_long_token() {
        assert_eq!(
            PasswordHash::generate(HashKind::Sha256, b"short"),
            Err(PasswdError::TooShortForFastHash(5))
        );
        assert_eq!(
            PasswordHash::generate(HashKind::Pbkdf2, b""),
            Err(PasswdError::Empty)
        );
    }
}
