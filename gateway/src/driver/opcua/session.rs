//! Connecting to a server: the gateway's client (application identity, PKI,
//! trust policy, timeouts, reconnect backoff), the endpoint matching the
//! configured security mode and policy, the user identity, and the
//! session's event loop, whose connection events reach the server task as
//! [`SessionEvent`]s.
//!
//! The library's event loop reconnects on its own with backoff and
//! reactivates the session when the server still has it (its subscriptions
//! live on). When the server made a new session, the server task transfers
//! the old subscriptions ([`super::items::transfer`]) and re-creates what
//! did not transfer through [`super::items::ensure`], in batches the server
//! accepts. A connection attempt that
//! hangs (a server that accepts and never answers the handshake) is given
//! up after a deadline and the whole session is rebuilt.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use opcua::client::{
    Client, ClientBuilder, IdentityToken, Session, SessionConnectMode, SessionPollResult,
};
use opcua::types::{EndpointDescription, MessageSecurityMode, StatusCode, UserTokenType};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::config::{OpcUaSection, SecurityMode, ServerConfig, Trust};

/// Most elements of one array the gateway decodes.
pub const MAX_ARRAY_LENGTH: usize = 200_000;
/// Largest message the gateway decodes.
pub const MAX_MESSAGE_SIZE: usize = 32 << 20;

/// What the session's event loop reports.
#[derive(Debug)]
pub enum SessionEvent {
    /// Connected (first time or again).
    Up(SessionConnectMode),
    /// The connection was lost.
    Down(StatusCode),
    /// A reconnect attempt failed.
    ConnectFailed(StatusCode),
    /// The event loop ended (gave up, or a connect attempt hung); the
    /// session must be rebuilt.
    Ended(StatusCode),
}

/// Builds the gateway's OPC UA client. Creates the gateway's certificate
/// and key in `pki_dir` when `keys` and they do not exist yet (CPU-heavy:
/// call it off the async threads).
///
/// # Errors
/// The library's complaints about the configuration.
pub fn build_client(section: &OpcUaSection, keys: bool) -> Result<Client, String> {
    let session_timeout = u32::try_from(section.session_timeout.as_millis()).unwrap_or(u32::MAX);
    ClientBuilder::new()
        .application_name(section.application_name.clone())
        .application_uri(section.application_uri.clone())
        .product_uri("urn:fieldlink")
        .pki_dir(section.pki_dir.clone())
        .create_sample_keypair(keys)
        .trust_server_certs(section.server_trust == Trust::FirstUse)
        .verify_server_certs(true)
        .session_retry_limit(-1)
        .session_retry_initial(section.reconnect_min)
        .session_retry_max(section.reconnect_max)
        .keep_alive_interval(section.keep_alive_interval)
        .max_failed_keep_alive_count(3)
        .request_timeout(section.request_timeout)
        .publish_timeout(section.request_timeout.max(Duration::from_secs(10)))
        .session_timeout(session_timeout)
        .recreate_subscriptions(false)
        // Large servers send notification arrays and messages beyond the
        // library's defaults (1 000 elements, 320 KiB); bounded still.
        .max_array_length(MAX_ARRAY_LENGTH)
        .max_message_size(MAX_MESSAGE_SIZE)
        .max_chunk_count(MAX_MESSAGE_SIZE / 65_535 + 1)
        .session_name("fieldlink gateway")
        .client()
        .map_err(|problems| problems.join("; "))
}

/// The identity a server is logged into with.
///
/// # Errors
/// When the user certificate or key cannot be read.
pub fn identity(server: &ServerConfig) -> Result<IdentityToken, String> {
    match (
        &server.username,
        &server.password,
        &server.user_certificate,
        &server.user_key,
    ) {
        (Some(user), Some(password), _, _) => Ok(IdentityToken::UserName(
            user.clone(),
            password.clone().into(),
        )),
        (_, _, Some(cert), Some(key)) => IdentityToken::new_x509_path(cert, key).map_err(|e| {
            format!(
                "user certificate {} / key {}: {e}",
                cert.display(),
                key.display()
            )
        }),
        _ => Ok(IdentityToken::Anonymous),
    }
}

fn token_type(identity: &IdentityToken) -> UserTokenType {
    match identity {
        IdentityToken::Anonymous => UserTokenType::Anonymous,
        IdentityToken::UserName(..) => UserTokenType::UserName,
        IdentityToken::X509(..) => UserTokenType::Certificate,
        IdentityToken::IssuedToken(_) => UserTokenType::IssuedToken,
    }
}

/// The server's endpoint with the configured mode and policy that accepts
/// the identity, its URL replaced by the configured one (servers often
/// advertise host names the gateway cannot resolve).
///
/// # Errors
/// A message listing what the server offers.
pub fn pick_endpoint(
    endpoints: &[EndpointDescription],
    server: &ServerConfig,
    identity: &IdentityToken,
) -> Result<EndpointDescription, String> {
    let mode: MessageSecurityMode = server.security_mode.to_opcua();
    let policy = server.security_policy.to_opcua();
    let wanted = token_type(identity);
    let accepts = |e: &EndpointDescription| {
        e.user_identity_tokens
            .as_ref()
            .is_none_or(|tokens| tokens.is_empty() || tokens.iter().any(|t| t.token_type == wanted))
    };
    let matching = endpoints
        .iter()
        .filter(|e| e.security_mode == mode && e.security_policy_uri.as_ref() == policy.to_uri());
    let mut chosen = None;
    for e in matching {
        if accepts(e) {
            chosen = Some(e.clone());
            break;
        }
    }
    let Some(mut endpoint) = chosen else {
        let offered: Vec<String> = endpoints
            .iter()
            .map(|e| {
                let policy = e
                    .security_policy_uri
                    .as_ref()
                    .rsplit('#')
                    .next()
                    .unwrap_or("?")
                    .to_owned();
                format!("{:?}/{policy}", e.security_mode)
            })
            .collect();
        return Err(format!(
            "no endpoint with security {:?}/{:?} accepting a {wanted:?} identity (the server offers {})",
            server.security_mode,
            server.security_policy,
            if offered.is_empty() {
                "none".to_owned()
            } else {
                offered.join(", ")
            }
        ));
    };
    endpoint.endpoint_url = server.endpoint.as_str().into();
    Ok(endpoint)
}

/// A session and the task driving its event loop.
pub struct Connected {
    /// The session (usable while its connection is up).
    pub session: Arc<Session>,
    /// Connection events.
    pub events: mpsc::UnboundedReceiver<SessionEvent>,
    driver: JoinHandle<()>,
}

impl std::fmt::Debug for Connected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connected").finish_non_exhaustive()
    }
}

impl Connected {
    /// Closes the session (bounded by `limit`) and stops its event loop.
    pub async fn close(self, limit: Duration) {
        let _ = tokio::time::timeout(limit, self.session.disconnect()).await;
        self.driver.abort();
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Asks the server for its endpoints, picks one and starts a session on
/// it. The session connects in the background; its first
/// [`SessionEvent::Up`] says when it is ready.
///
/// # Errors
/// A message saying what failed (unreachable, no matching endpoint, ...).
pub async fn connect(
    client: &Client,
    server: &ServerConfig,
    section: &OpcUaSection,
) -> Result<Connected, String> {
    let identity = identity(server)?;
    let endpoints = tokio::time::timeout(
        section.request_timeout,
        client.get_server_endpoints_from_url(server.endpoint.as_str()),
    )
    .await
    .map_err(|_| {
        format!(
            "no answer to GetEndpoints within {:?}",
            section.request_timeout
        )
    })?
    .map_err(|e| format!("GetEndpoints: {e}"))?;
    let endpoint = pick_endpoint(&endpoints, server, &identity)?;
    if server.security_mode != SecurityMode::None && endpoint.server_certificate.is_null() {
        return Err("the server's endpoint carries no certificate".to_owned());
    }
    let (session, event_loop) = client
        .session_builder()
        .connect_to_endpoint_directly(endpoint)
        .map_err(|e| format!("endpoint: {e}"))?
        .user_identity_token(identity)
        .build(client.certificate_store().clone())
        .map_err(|e| format!("session: {e}"))?;
    let (tx, events) = mpsc::unbounded_channel();
    // A connect attempt waits out the backoff, then the handshake.
    let attempt = section.reconnect_max + 3 * section.request_timeout;
    let driver = tokio::spawn(drive(event_loop, tx, attempt));
    Ok(Connected {
        session,
        events,
        driver,
    })
}

async fn drive<T>(
    event_loop: opcua::client::SessionEventLoop<T>,
    tx: mpsc::UnboundedSender<SessionEvent>,
    attempt: Duration,
) where
    T: opcua::client::transport::Connector + Send + Sync + 'static,
{
    let stream = event_loop.enter();
    tokio::pin!(stream);
    let mut connecting = true;
    loop {
        let next = if connecting {
            match tokio::time::timeout(attempt, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let _ = tx.send(SessionEvent::Ended(StatusCode::BadTimeout));
                    return;
                }
            }
        } else {
            stream.next().await
        };
        let event = match next {
            None => SessionEvent::Ended(StatusCode::Good),
            Some(Err(status)) => SessionEvent::Ended(status),
            Some(Ok(SessionPollResult::Reconnected(mode))) => {
                connecting = false;
                SessionEvent::Up(mode)
            }
            Some(Ok(SessionPollResult::ConnectionLost(status))) => {
                connecting = true;
                SessionEvent::Down(status)
            }
            Some(Ok(SessionPollResult::ReconnectFailed(status))) => {
                connecting = true;
                SessionEvent::ConnectFailed(status)
            }
            Some(Ok(SessionPollResult::BeginConnect)) => {
                connecting = true;
                continue;
            }
            Some(Ok(_)) => continue,
        };
        let ended = matches!(event, SessionEvent::Ended(_));
        if tx.send(event).is_err() || ended {
            return;
        }
    }
}
