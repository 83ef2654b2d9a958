//! RingCentral SMS, driven over its REST API.
//!
//! The wire format, as RingCentral documents it (developers.ringcentral.com/guide):
//!
//! - **Tokens**: `POST {base_url}/restapi/oauth/token`, HTTP Basic with the app's client id
//!   and secret, form-encoded `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer&
//!   assertion=<jwt>` (the JWT auth flow, guide/authentication/jwt-flow),
//!   `grant_type=authorization_code&code=…&redirect_uri=…` (the auth-code flow of a
//!   user-authorized app, guide/authentication/auth-code-flow) or
//!   `grant_type=refresh_token&refresh_token=…` (guide/authentication/refresh-tokens).
//!   The answer holds `access_token`, `expires_in`, `refresh_token` and
//!   `refresh_token_expires_in` (seconds). A refresh token is single-use: a refresh
//!   answers with a new one and the old one stops working, which is why the pair is kept
//!   (sealed) across restarts rather than only in memory.
//! - **Sending**: `POST {base_url}/restapi/v1.0/account/~/extension/~/sms` with the bearer
//!   token and `{"from":{"phoneNumber":…},"to":[{"phoneNumber":…}],"text":…}`; the
//!   message record it answers carries the `id` we keep as the provider message id
//!   (guide/messaging/sms/sending-sms).
//! - **Errors**: `{"errorCode":"CMN-101","message":"…","errors":[{"errorCode":…,
//!   "message":…,"parameterName":…}]}` (guide/basics/errors). `429` (`CMN-301`, the
//!   rate-limit groups) comes with `Retry-After` (guide/basics/rate-limits).
//! - **Notifications**: a WebHook subscription, `POST /restapi/v1.0/subscription` with
//!   `eventFilters`, `deliveryMode {transportType: "WebHook", address, verificationToken}`
//!   and `expiresIn`, renewed with `POST /restapi/v1.0/subscription/{id}/renew`
//!   (guide/notifications/webhooks/creating-webhooks). Creating one makes RingCentral call
//!   the address with a `Validation-Token` header that must be echoed back with `200`;
//!   every notification afterwards carries our `Verification-Token` header
//!   (guide/notifications/webhooks/receiving). Inbound SMS come from the instant message
//!   filter (`…/message-store/instant?type=SMS`: `id`, `from.phoneNumber`,
//!   `to[].phoneNumber`, `subject` = the text, `direction: Inbound`).
//!
//! Nothing here logs a message text, a full phone number or a token: numbers are masked
//! [`E164`](portcullis_domain::E164)s, tokens are [`Secret`]s (redacted when printed, wiped
//! when dropped), and error details are built from RingCentral's error codes, never from
//! its messages (which quote parameters).

use crate::config;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use portcullis_domain::{Channel, ConnectionId, MessageStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;
use subtle::ConstantTimeEq;
use tokio::sync::{oneshot, watch};
use zeroize::Zeroizing;

use crate::{
    Accepted, EventSink, INVALID_NUMBER, OutboundMessage, Provider, ProviderError, ProviderEvent,
    ReceiptEvent, now_ms,
};

/// The connection type (`connections create --type ringcentral`).
pub const KIND: &str = "ringcentral";

/// RingCentral's production API host, used when a connection names no `base_url`.
pub const DEFAULT_BASE_URL: &str = "https://platform.ringcentral.com";

/// The header RingCentral sends when a subscription is created, to be echoed back.
pub const VALIDATION_HEADER: &str = "validation-token";
/// The header every notification carries: the token we set on the subscription.
pub const VERIFICATION_HEADER: &str = "verification-token";

/// The JWT bearer grant (RFC 7523).
const JWT_GRANT: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

/// The names under which a connection's state is kept through [`StateStore`].
pub const TOKENS: &str = "oauth";
pub const SUBSCRIPTION: &str = "subscription";

/// The subscription lifetime asked for when the connection names none: RingCentral's
/// default for WebHook subscriptions (7 days).
pub const DEFAULT_SUBSCRIPTION_SECONDS: u64 = 604_800;

/// The name the message-sync token is kept under.
pub const SYNC: &str = "message_sync";

/// How often the outbound records are synced without a notification asking for it.
const SYNC_INTERVAL: Duration = Duration::from_secs(300);

/// How far back the first (full) sync looks.
const FULL_SYNC_SPAN_MS: i64 = 86_400_000;

/// Incremental syncs in one go, and the page size RingCentral answers with when more
/// changes are waiting (its default `recordCount` is 250).
const SYNC_PAGES: usize = 20;
const SYNC_PAGE_FULL: usize = 250;

/// How long a failed subscription attempt waits before the next one.
const SUBSCRIPTION_RETRY: Duration = Duration::from_secs(30);

/// The events we subscribe to: inbound SMS as they arrive, and changes to outbound SMS
/// records (delivery status).
pub const EVENT_FILTERS: [&str; 2] = [
    "/restapi/v1.0/account/~/extension/~/message-store/instant?type=SMS",
    "/restapi/v1.0/account/~/extension/~/message-store?type=SMS&direction=Outbound",
];

/// The configuration fields a RingCentral connection may have.
const FIELDS: [&str; 10] = [
    "client_id",
    "client_secret",
    "jwt",
    "authorization_code",
    "redirect_uri",
    "refresh_token",
    "from_numbers",
    "base_url",
    "sender_mps",
    "subscription_expires_in",
];

pub use crate::Secret;

/// Why a stored RingCentral configuration cannot be used. The message names the field,
/// never its value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("ringcentral connection configuration: {0}")]
pub struct ConfigError(String);

/// How the connection obtains its first tokens.
#[derive(Debug, Clone)]
pub enum Grant {
    /// A JWT credential (server-to-server apps): it can always mint new tokens.
    Jwt(Secret),
    /// The code a user's consent redirect delivered (user-delegated apps), exchanged once,
    /// within the minute RingCentral keeps it, for the first access and refresh tokens;
    /// from then on the connection lives on rotated refresh tokens.
    AuthorizationCode {
        code: Secret,
        /// Must equal the `redirect_uri` of the consent request, as OAuth requires.
        redirect_uri: String,
    },
    /// The refresh token of an authorization-code grant (user-delegated apps): used once,
    /// then replaced by the refresh tokens RingCentral rotates in.
    RefreshToken(Secret),
}

/// A RingCentral connection's configuration, parsed from its (sealed) JSON.
#[derive(Debug, Clone)]
pub struct RingCentralConfig {
    pub client_id: String,
    pub client_secret: Secret,
    pub grant: Grant,
    /// The numbers this extension may send from, canonical; the first is the default.
    pub from_numbers: Vec<String>,
    /// The API host root without a trailing slash.
    pub base_url: String,
    /// Messages per second per sender; the pipeline paces sends to it.
    pub sender_mps: Option<f64>,
    /// The subscription lifetime asked for, in seconds.
    pub subscription_expires_in: u64,
}

impl RingCentralConfig {
    /// Parses and checks a connection's configuration object: exactly one of `jwt` and
    /// `refresh_token`; `base_url` `https://` (plain `http://` only for a loopback
    /// stand-in, since every request carries a credential).
    pub fn from_json(value: &serde_json::Value) -> Result<RingCentralConfig, ConfigError> {
        let err = |m: &str| Err(ConfigError(m.to_owned()));
        let obj = config::object(value, &FIELDS).map_err(ConfigError)?;
        let string = |name: &str| config::string(obj, name).map_err(ConfigError);
        let Some(client_id) = string("client_id")?.filter(|s| !s.trim().is_empty()) else {
            return err("client_id is required");
        };
        // It goes into an Authorization header: printable ASCII only.
        if client_id.len() > 200 || !client_id.bytes().all(|b| b.is_ascii_graphic()) {
            return err("client_id must be printable ASCII");
        }
        let client_secret = match string("client_secret")? {
            Some(s) if !s.trim().is_empty() => Secret::new(s.to_owned()),
            _ => return err("client_secret is required"),
        };
        let non_empty = |name: &str| -> Result<Option<Secret>, ConfigError> {
            Ok(string(name)?
                .filter(|s| !s.trim().is_empty())
                .map(|s| Secret::new(s.to_owned())))
        };
        let grant = match (
            non_empty("jwt")?,
            non_empty("authorization_code")?,
            non_empty("refresh_token")?,
        ) {
            (Some(jwt), None, None) => Grant::Jwt(jwt),
            (None, Some(code), None) => {
                let Some(redirect_uri) = string("redirect_uri")?.filter(|s| !s.trim().is_empty())
                else {
                    return err("redirect_uri is required with authorization_code");
                };
                if redirect_uri.len() > 2000 || !redirect_uri.bytes().all(|b| b.is_ascii_graphic())
                {
                    return err("redirect_uri must be a URL");
                }
                Grant::AuthorizationCode {
                    code,
                    redirect_uri: redirect_uri.to_owned(),
                }
            }
            (None, None, Some(refresh)) => Grant::RefreshToken(refresh),
            (None, None, None) => {
                return err(
                    "jwt (or, for a user-authorized app, authorization_code or refresh_token) is required",
                );
            }
            _ => return err("give one of jwt, authorization_code and refresh_token"),
        };
        let from_numbers = config::senders(obj, "from_numbers").map_err(ConfigError)?;
        let base_url = config::base_url(
            string("base_url")?.unwrap_or(DEFAULT_BASE_URL),
            DEFAULT_BASE_URL,
        )
        .map_err(ConfigError)?;
        let sender_mps = config::rate(obj, "sender_mps").map_err(ConfigError)?;
        let subscription_expires_in = match obj.get("subscription_expires_in") {
            None | Some(serde_json::Value::Null) => DEFAULT_SUBSCRIPTION_SECONDS,
            Some(v) => match v.as_u64() {
                Some(n) if (1..=630_720_000).contains(&n) => n,
                _ => return err("subscription_expires_in must be a positive number of seconds"),
            },
        };
        Ok(RingCentralConfig {
            client_id: client_id.to_owned(),
            client_secret,
            grant,
            from_numbers,
            base_url,
            sender_mps,
            subscription_expires_in,
        })
    }

    /// The sender for a message: its own `from` when this extension may send from it, else
    /// the connection's first number.
    pub fn from_for<'a>(&'a self, requested: Option<&'a str>) -> &'a str {
        match requested {
            Some(from) if self.from_numbers.iter().any(|n| n == from) => from,
            _ => self.from_numbers.first().map_or("", String::as_str),
        }
    }
}

/// The URL RingCentral is told to deliver a connection's notifications to.
pub fn callback_url(public_url: &str, connection: &ConnectionId) -> String {
    format!(
        "{}/providers/{KIND}/{connection}",
        public_url.trim_end_matches('/')
    )
}

// ---------------------------------------------------------------------------------------
// State kept between restarts.

/// A boxed future, so [`StateStore`] stays object-safe without `async_trait` in the crates
/// that implement it.
pub type StateFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// Where a connection keeps what it learns from the provider (OAuth tokens, the webhook
/// subscription and its verification token) so a restart neither needs a new grant nor a
/// new subscription.
///
/// This crate must not depend on the store, so the pipeline implements this over the
/// database, sealing every value under the keyring; values are opaque JSON strings here.
/// The callback route reads the subscription record back through the store directly.
pub trait StateStore: Send + Sync + 'static {
    fn load<'a>(
        &'a self,
        connection: &'a ConnectionId,
        name: &'a str,
    ) -> StateFuture<'a, Option<Secret>>;
    fn save<'a>(
        &'a self,
        connection: &'a ConnectionId,
        name: &'a str,
        value: Secret,
    ) -> StateFuture<'a, ()>;
}

/// A [`StateStore`] that forgets everything: for a factory given none (unit tests).
pub struct NoState;

impl StateStore for NoState {
    fn load<'a>(&'a self, _: &'a ConnectionId, _: &'a str) -> StateFuture<'a, Option<Secret>> {
        Box::pin(async { Ok(None) })
    }
    fn save<'a>(&'a self, _: &'a ConnectionId, _: &'a str, _: Secret) -> StateFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// The tokens of a connection, as kept in memory and (as JSON) at rest. Times are unix ms.
#[derive(Clone, Serialize, Deserialize)]
struct Tokens {
    access_token: String,
    expires_at: i64,
    /// The access token's whole lifetime, for "refresh when 10 % is left".
    lifetime_ms: i64,
    refresh_token: Option<String>,
    refresh_expires_at: i64,
}

impl Drop for Tokens {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.access_token.zeroize();
        if let Some(r) = self.refresh_token.as_mut() {
            r.zeroize();
        }
    }
}

impl Tokens {
    /// Whether the access token is worth using now: refreshed ahead of expiry, when less
    /// than a minute or less than a tenth of its lifetime is left, so a send never starts
    /// with a token that expires on the way.
    fn fresh(&self, now: i64) -> bool {
        let margin = (self.lifetime_ms / 10).max(60_000);
        self.expires_at - now > margin
    }

    fn refresh_usable(&self, now: i64) -> Option<&str> {
        self.refresh_token
            .as_deref()
            .filter(|_| self.refresh_expires_at - now > 10_000)
    }
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Tokens([REDACTED])")
    }
}

/// The webhook subscription of a connection, as kept at rest. The callback route reads it
/// (through the store) to check `Verification-Token`.
#[derive(Clone, Serialize, Deserialize)]
pub struct SubscriptionRecord {
    /// `None` between saving a new verification token and RingCentral confirming the
    /// subscription: the token is saved first so the first notifications verify.
    pub id: Option<String>,
    pub verification_token: String,
    /// Where RingCentral delivers; a changed public URL means a new subscription.
    pub address: String,
    pub expires_at: i64,
    pub lifetime_ms: i64,
}

impl Drop for SubscriptionRecord {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.verification_token.zeroize();
    }
}

impl fmt::Debug for SubscriptionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubscriptionRecord")
            .field("id", &self.id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl SubscriptionRecord {
    /// Reads a stored record.
    pub fn from_stored(value: &str) -> Option<SubscriptionRecord> {
        serde_json::from_str(value).ok()
    }

    /// Whether `presented` (a notification's `Verification-Token`) is this subscription's
    /// token, compared in constant time.
    pub fn verifies(&self, presented: &str) -> bool {
        !self.verification_token.is_empty()
            && bool::from(
                self.verification_token
                    .as_bytes()
                    .ct_eq(presented.trim().as_bytes()),
            )
    }

    /// When to renew: a quarter of the lifetime (at most a day) before it ends.
    fn renew_at(&self) -> i64 {
        self.expires_at - (self.lifetime_ms / 4).min(86_400_000)
    }
}

// ---------------------------------------------------------------------------------------
// The provider.

/// One RingCentral connection.
pub struct RingCentralProvider {
    inner: Arc<Inner>,
}

struct Inner {
    connection_id: ConnectionId,
    config: RingCentralConfig,
    client: reqwest::Client,
    state: Arc<dyn StateStore>,
    webhook_address: String,
    /// The tokens in use, read without waiting by every send.
    tokens: RwLock<Option<Arc<Tokens>>>,
    /// Held while tokens are obtained, so one refresh is in flight at a time and
    /// concurrent senders wait for it instead of each spending the (single-use) refresh
    /// token. The flag says whether the stored tokens were consulted yet.
    refresh: tokio::sync::Mutex<bool>,
    /// Woken when a notification says outbound records changed: time to sync.
    changed: tokio::sync::Notify,
}

impl RingCentralProvider {
    /// A provider for `connection_id`, and its tasks until `stop` turns true (or its
    /// sender is dropped): one makes sure a webhook subscription to
    /// [`callback_url`]`(public_url, …)` exists and renews it ahead of expiry; with
    /// `events`, another reports delivery statuses there (see [`Inner::sync`]).
    pub fn start(
        connection_id: ConnectionId,
        config: RingCentralConfig,
        public_url: &str,
        client: reqwest::Client,
        state: Arc<dyn StateStore>,
        events: Option<EventSink>,
        stop: watch::Receiver<bool>,
    ) -> RingCentralProvider {
        let inner = Arc::new(Inner {
            webhook_address: callback_url(public_url, &connection_id),
            connection_id,
            config,
            client,
            state,
            tokens: RwLock::new(None),
            refresh: tokio::sync::Mutex::new(false),
            changed: tokio::sync::Notify::new(),
        });
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            if let Some(events) = events {
                handle.spawn(maintain_sync(inner.clone(), events, stop.clone()));
            }
            handle.spawn(maintain_subscription(inner.clone(), stop));
        }
        RingCentralProvider { inner }
    }
}

#[async_trait]
impl Provider for RingCentralProvider {
    fn connection_id(&self) -> &ConnectionId {
        &self.inner.connection_id
    }

    fn sender_rate(&self) -> Option<f64> {
        self.inner.config.sender_mps
    }

    fn records_changed(&self) {
        // A permit is kept if a sync is running: it runs once more after, never twice.
        self.inner.changed.notify_one();
    }

    /// One `POST …/extension/~/sms`. A `401` means the token was revoked or expired early:
    /// it is dropped and the send tried once more with a new one. A timeout is retryable
    /// even though RingCentral may have taken the message (as with Twilio: a possible
    /// duplicate is the price of not losing it).
    async fn send(&self, msg: &OutboundMessage) -> Result<Accepted, ProviderError> {
        if msg.channel != Channel::Sms {
            return Err(ProviderError::permanent(
                "channel_not_supported",
                format!("this RingCentral connection sends SMS, not {}", msg.channel),
            ));
        }
        let inner = &self.inner;
        let body = json!({
            "from": {"phoneNumber": inner.config.from_for(msg.from.as_deref())},
            "to": [{"phoneNumber": msg.to.as_str()}],
            "text": msg.body,
        });
        let url = format!(
            "{}/restapi/v1.0/account/~/extension/~/sms",
            inner.config.base_url
        );
        let mut tokens = inner.access_token().await?;
        let mut answer = inner.post_json(&url, &tokens, &body).await?;
        if answer.0 == 401 {
            inner.invalidate(&tokens);
            tokens = inner.access_token().await?;
            answer = inner.post_json(&url, &tokens, &body).await?;
        }
        let (status, retry_after, bytes) = answer;
        let outcome = map_response(status, retry_after, &bytes);
        if let Err(e) = &outcome {
            tracing::debug!(
                connection = %inner.connection_id,
                message = %msg.id,
                to = %msg.to,
                error = %e,
                "RingCentral did not accept a message"
            );
        }
        outcome
    }
}

impl Inner {
    fn current(&self) -> Option<Arc<Tokens>> {
        self.tokens
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set(&self, tokens: Arc<Tokens>) {
        *self.tokens.write().unwrap_or_else(|p| p.into_inner()) = Some(tokens);
    }

    /// A usable access token: the one in memory while fresh; otherwise, one caller at a
    /// time, the stored one (first use after a start), a refresh, or a new grant.
    async fn access_token(&self) -> Result<Arc<Tokens>, ProviderError> {
        let fresh = |t: &Option<Arc<Tokens>>| t.as_ref().filter(|t| t.fresh(now_ms())).cloned();
        if let Some(t) = fresh(&self.current()) {
            return Ok(t);
        }
        let mut consulted = self.refresh.lock().await;
        // Whoever held the lock before us may have refreshed already.
        if let Some(t) = fresh(&self.current()) {
            return Ok(t);
        }
        if !*consulted {
            *consulted = true;
            match self.state.load(&self.connection_id, TOKENS).await {
                Ok(Some(stored)) => {
                    if let Ok(t) = serde_json::from_str::<Tokens>(stored.expose()) {
                        self.set(Arc::new(t));
                        if let Some(t) = fresh(&self.current()) {
                            return Ok(t);
                        }
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    *consulted = false;
                    return Err(ProviderError::unavailable(format!(
                        "ringcentral: reading stored tokens failed: {e}"
                    )));
                }
            }
        }
        let tokens = Arc::new(self.obtain(self.current().as_deref()).await?);
        // Saved before use: a refresh token RingCentral just rotated is the only one that
        // will work after a restart.
        let record = serde_json::to_string(&*tokens).map_err(|e| {
            ProviderError::unavailable(format!("ringcentral: encoding tokens: {e}"))
        })?;
        if let Err(e) = self
            .state
            .save(&self.connection_id, TOKENS, Secret::new(record))
            .await
        {
            tracing::error!(connection = %self.connection_id, error = %e, "ringcentral: saving tokens failed");
        }
        self.set(tokens.clone());
        Ok(tokens)
    }

    /// Drops `used` after a `401`, unless another caller replaced it already. The refresh
    /// token is kept: it is what gets the next access token.
    fn invalidate(&self, used: &Arc<Tokens>) {
        let mut slot = self.tokens.write().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|t| Arc::ptr_eq(t, used)) {
            let mut expired = (**used).clone();
            expired.expires_at = 0;
            *slot = Some(Arc::new(expired));
        }
    }

    /// New tokens: the refresh token while it lasts, else the configured grant.
    async fn obtain(&self, previous: Option<&Tokens>) -> Result<Tokens, ProviderError> {
        let now = now_ms();
        if let Some(refresh) = previous.and_then(|t| t.refresh_usable(now)) {
            match self
                .token_request(&[("grant_type", "refresh_token"), ("refresh_token", refresh)])
                .await
            {
                Ok(t) => return Ok(t),
                // Revoked or already used: the configured grant may still work.
                Err(ProviderError::Permanent { .. }) => {
                    tracing::warn!(connection = %self.connection_id, "ringcentral: refresh token refused; using the configured grant");
                }
                Err(e) => return Err(e),
            }
        }
        match &self.config.grant {
            Grant::Jwt(jwt) => {
                self.token_request(&[("grant_type", JWT_GRANT), ("assertion", jwt.expose())])
                    .await
            }
            Grant::AuthorizationCode { code, redirect_uri } => {
                self.token_request(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.expose()),
                    ("redirect_uri", redirect_uri),
                ])
                .await
            }
            Grant::RefreshToken(initial) => {
                self.token_request(&[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", initial.expose()),
                ])
                .await
            }
        }
    }

    async fn token_request(&self, form: &[(&str, &str)]) -> Result<Tokens, ProviderError> {
        let body = Zeroizing::new(serde_urlencoded::to_string(form).map_err(|e| {
            ProviderError::permanent("provider_refused", format!("encoding a token request: {e}"))
        })?);
        let response = self
            .client
            .post(format!("{}/restapi/oauth/token", self.config.base_url))
            .basic_auth(
                &self.config.client_id,
                Some(self.config.client_secret.expose()),
            )
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .header(reqwest::header::ACCEPT, "application/json")
            .body(body.to_string())
            .send()
            .await;
        let (status, retry_after, bytes) = crate::http::read("ringcentral", response).await?;
        if (200..300).contains(&status) {
            let granted: TokenResponse = serde_json::from_slice(&bytes).map_err(|_| {
                ProviderError::unavailable("ringcentral: unreadable token response")
            })?;
            let now = now_ms();
            let lifetime_ms = (granted.expires_in.max(1) as i64).saturating_mul(1000);
            return Ok(Tokens {
                access_token: granted.access_token.clone(),
                expires_at: now + lifetime_ms,
                lifetime_ms,
                refresh_token: granted.refresh_token.clone(),
                refresh_expires_at: now
                    + (granted.refresh_token_expires_in.unwrap_or(0) as i64).saturating_mul(1000),
            });
        }
        let outcome = map_error(status, retry_after, &bytes, "token endpoint");
        if let ProviderError::Permanent { detail, .. } = &outcome {
            tracing::error!(
                connection = %self.connection_id,
                detail,
                "RingCentral refused this connection's credentials: check its client_id and client_secret, and its jwt, or (a code is single-use) authorize the app again"
            );
        }
        Err(outcome)
    }

    async fn post_json(
        &self,
        url: &str,
        tokens: &Tokens,
        body: &serde_json::Value,
    ) -> Result<(u16, Option<Duration>, Vec<u8>), ProviderError> {
        self.api(self.client.post(url).json(body), tokens).await
    }

    async fn api(
        &self,
        request: reqwest::RequestBuilder,
        tokens: &Tokens,
    ) -> Result<(u16, Option<Duration>, Vec<u8>), ProviderError> {
        let response = request
            .bearer_auth(&tokens.access_token)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        crate::http::read("ringcentral", response).await
    }

    /// An API call that must succeed (subscription management), with one retry on `401`.
    async fn call(
        &self,
        url: &str,
        body: &serde_json::Value,
    ) -> Result<(u16, Vec<u8>), ProviderError> {
        let tokens = self.access_token().await?;
        let mut answer = self.post_json(url, &tokens, body).await?;
        if answer.0 == 401 {
            self.invalidate(&tokens);
            let tokens = self.access_token().await?;
            answer = self.post_json(url, &tokens, body).await?;
        }
        Ok((answer.0, answer.2))
    }

    /// A `GET`, with one retry on `401`; `Retry-After` is kept for a `429`.
    async fn get(&self, url: &str) -> Result<(u16, Option<Duration>, Vec<u8>), ProviderError> {
        let tokens = self.access_token().await?;
        let answer = self.api(self.client.get(url), &tokens).await?;
        if answer.0 != 401 {
            return Ok(answer);
        }
        self.invalidate(&tokens);
        let tokens = self.access_token().await?;
        self.api(self.client.get(url), &tokens).await
    }

    /// Reports the statuses of the outbound SMS records changed since the last look.
    ///
    /// RingCentral's message-store notifications say only that records changed (counts and
    /// ids, no status), so the statuses are read through its message sync
    /// (`GET …/extension/~/message-sync`, guide/messaging/message-store/message-sync): a
    /// full sync (`syncType=FSync`) from a day back the first time, then incremental ones
    /// (`syncType=ISync&syncToken=…`) returning what changed since the token. The token
    /// is kept sealed with the connection's other state and moves on only once every
    /// receipt of a page is durably recorded: a crash in between repeats receipts (which
    /// change nothing the second time) instead of losing them.
    async fn sync(&self, events: &EventSink) -> Result<usize, ProviderError> {
        let mut reported = 0;
        for _ in 0..SYNC_PAGES {
            let stored = self
                .state
                .load(&self.connection_id, SYNC)
                .await
                .map_err(|e| ProviderError::unavailable(format!("reading the sync token: {e}")))?
                .and_then(|s| serde_json::from_str::<SyncPosition>(s.expose()).ok());
            let base = format!(
                "{}/restapi/v1.0/account/~/extension/~/message-sync",
                self.config.base_url
            );
            let url = match &stored {
                Some(p) => format!("{base}?syncType=ISync&syncToken={}", url_segment(&p.token)),
                None => {
                    let from = jiff::Timestamp::from_millisecond(now_ms() - FULL_SYNC_SPAN_MS)
                        .unwrap_or(jiff::Timestamp::UNIX_EPOCH);
                    format!("{base}?syncType=FSync&messageType=SMS&dateFrom={from:.3}")
                }
            };
            let (status, retry_after, bytes) = self.get(&url).await?;
            if stored.is_some() && status == 400 {
                // The token expired or was invalidated on RingCentral's side: start over
                // with a full sync (receipts already recorded change nothing again).
                tracing::warn!(connection = %self.connection_id, "ringcentral: message sync token refused; starting a full sync");
                self.save_sync(None).await?;
                continue;
            }
            if !(200..300).contains(&status) {
                return Err(map_error(status, retry_after, &bytes, "message sync"));
            }
            let page: SyncPage = serde_json::from_slice(&bytes)
                .map_err(|_| ProviderError::unavailable("ringcentral: unreadable message sync"))?;
            let mut recorded = Vec::new();
            for record in &page.records {
                let Some(receipt) = self.receipt_of(record) else {
                    continue;
                };
                let (ack, done) = oneshot::channel();
                events
                    .send(ProviderEvent::Receipt(receipt, Some(ack)))
                    .await
                    .map_err(|_| ProviderError::unavailable("the gateway is shutting down"))?;
                recorded.push(done);
            }
            for done in recorded {
                done.await.map_err(|_| {
                    ProviderError::unavailable("a receipt could not be recorded; syncing again")
                })?;
                reported += 1;
            }
            let more = page.records.len() >= SYNC_PAGE_FULL && stored.is_some();
            self.save_sync(page.sync_info.and_then(|i| i.sync_token))
                .await?;
            if !more {
                break;
            }
        }
        Ok(reported)
    }

    /// The receipt a synced record carries: an outbound SMS of this connection's numbers
    /// in a final state. Other records (inbound, still queued, another extension user's
    /// numbers) are none of ours.
    fn receipt_of(&self, record: &SyncRecord) -> Option<ReceiptEvent> {
        if record.direction.as_deref() != Some("Outbound")
            || record.kind.as_deref().is_some_and(|t| t != "SMS")
        {
            return None;
        }
        let from = record.from.as_ref().and_then(|f| f.phone_number.as_deref());
        if !from.is_some_and(|f| self.config.from_numbers.iter().any(|n| n == f)) {
            return None;
        }
        let status = receipt_status(record.message_status.as_deref()?)?;
        let id = id_text(record.id.as_ref()?)?;
        let detail = safe_code(record.delivery_error_code.as_deref())
            .map(|c| format!("ringcentral error {c}"));
        let at = record
            .last_modified_time
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or_else(now_ms, |t| t.as_millisecond());
        Some(ReceiptEvent {
            connection_id: self.connection_id.clone(),
            provider_message_id: id,
            status: status.into(),
            detail,
            at,
        })
    }

    async fn save_sync(&self, token: Option<String>) -> Result<(), ProviderError> {
        let value = match token {
            Some(token) => serde_json::to_string(&SyncPosition { token })
                .map_err(|e| ProviderError::unavailable(format!("encoding the sync token: {e}")))?,
            // An empty record reads back as none: the next sync is a full one.
            None => String::new(),
        };
        self.state
            .save(&self.connection_id, SYNC, Secret::new(value))
            .await
            .map_err(|e| ProviderError::unavailable(format!("saving the sync token: {e}")))
    }

    /// Makes sure a live subscription delivers to our address; returns when to look again.
    async fn ensure_subscription(&self) -> Result<i64, ProviderError> {
        let stored = self
            .state
            .load(&self.connection_id, SUBSCRIPTION)
            .await
            .map_err(|e| ProviderError::unavailable(format!("reading the subscription: {e}")))?
            .and_then(|s| SubscriptionRecord::from_stored(s.expose()));
        let now = now_ms();
        let live = stored
            .as_ref()
            .filter(|r| r.address == self.webhook_address && r.expires_at > now);
        if let Some((record, id)) = live.and_then(|r| Some((r, r.id.as_deref()?))) {
            if record.renew_at() > now {
                return Ok(record.renew_at());
            }
            let url = format!(
                "{}/restapi/v1.0/subscription/{}/renew",
                self.config.base_url,
                url_segment(id)
            );
            let (status, bytes) = self.call(&url, &json!({})).await?;
            if (200..300).contains(&status) {
                let answer = read_subscription(&bytes)?;
                let renewed = SubscriptionRecord {
                    id: Some(answer.id.clone()),
                    verification_token: record.verification_token.clone(),
                    address: record.address.clone(),
                    expires_at: now + answer.lifetime_ms(),
                    lifetime_ms: answer.lifetime_ms(),
                };
                self.save_subscription(&renewed).await?;
                tracing::info!(connection = %self.connection_id, "ringcentral: webhook subscription renewed");
                return Ok(renewed.renew_at());
            }
            if status != 404 {
                return Err(map_error(status, None, &bytes, "subscription renewal"));
            }
            // Gone on RingCentral's side (deleted, or blacklisted): make a new one.
        }
        self.create_subscription().await
    }

    async fn create_subscription(&self) -> Result<i64, ProviderError> {
        let verification_token = random_token();
        // Saved before RingCentral is asked: notifications can arrive before its answer.
        let mut record = SubscriptionRecord {
            id: None,
            verification_token,
            address: self.webhook_address.clone(),
            expires_at: 0,
            lifetime_ms: 0,
        };
        self.save_subscription(&record).await?;
        let url = format!("{}/restapi/v1.0/subscription", self.config.base_url);
        let body = json!({
            "eventFilters": EVENT_FILTERS,
            "deliveryMode": {
                "transportType": "WebHook",
                "address": self.webhook_address,
                "verificationToken": record.verification_token,
            },
            "expiresIn": self.config.subscription_expires_in,
        });
        let (status, bytes) = self.call(&url, &body).await?;
        if !(200..300).contains(&status) {
            return Err(map_error(status, None, &bytes, "subscription"));
        }
        let answer = read_subscription(&bytes)?;
        let now = now_ms();
        record.id = Some(answer.id.clone());
        record.lifetime_ms = answer.lifetime_ms();
        record.expires_at = now + record.lifetime_ms;
        self.save_subscription(&record).await?;
        tracing::info!(connection = %self.connection_id, "ringcentral: webhook subscription created");
        Ok(record.renew_at())
    }

    async fn save_subscription(&self, record: &SubscriptionRecord) -> Result<(), ProviderError> {
        let value = serde_json::to_string(record)
            .map_err(|e| ProviderError::unavailable(format!("encoding the subscription: {e}")))?;
        self.state
            .save(&self.connection_id, SUBSCRIPTION, Secret::new(value))
            .await
            .map_err(|e| ProviderError::unavailable(format!("saving the subscription: {e}")))
    }
}

/// Keeps the connection's subscription alive until `stop`.
async fn maintain_subscription(inner: Arc<Inner>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match inner.ensure_subscription().await {
            Ok(at) => Duration::from_millis((at - now_ms()).clamp(100, 86_400_000) as u64),
            Err(e) => {
                tracing::warn!(connection = %inner.connection_id, error = %e, "ringcentral: webhook subscription not in place; trying again");
                e.retry_after().unwrap_or(SUBSCRIPTION_RETRY)
            }
        };
        let stopped = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            changed = stop.changed() => changed.is_err(),
        };
        if stopped {
            return;
        }
    }
}

/// Syncs the connection's outbound records when a notification says they changed, and
/// every [`SYNC_INTERVAL`] in case a notification was missed (RingCentral does not retry
/// a failed webhook delivery for long), until `stop`.
async fn maintain_sync(inner: Arc<Inner>, events: EventSink, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let wait = match inner.sync(&events).await {
            Ok(n) => {
                if n > 0 {
                    tracing::debug!(connection = %inner.connection_id, receipts = n, "ringcentral: message sync");
                }
                SYNC_INTERVAL
            }
            Err(e) => {
                tracing::warn!(connection = %inner.connection_id, error = %e, "ringcentral: message sync failed; trying again");
                e.retry_after().unwrap_or(SUBSCRIPTION_RETRY)
            }
        };
        let stopped = tokio::select! {
            _ = tokio::time::sleep(wait) => false,
            _ = inner.changed.notified() => false,
            changed = stop.changed() => changed.is_err(),
        };
        if stopped {
            return;
        }
    }
}

/// A verification token: 32 random bytes from the OS, hex (RingCentral allows up to 64
/// characters).
fn random_token() -> String {
    use rand::TryRng;
    let mut bytes = Zeroizing::new([0u8; 32]);
    rand::rngs::SysRng
        .try_fill_bytes(&mut *bytes)
        .expect("the operating system random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A path segment made only of what RingCentral ids contain.
fn url_segment(id: &str) -> String {
    id.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
    refresh_token: Option<String>,
    refresh_token_expires_in: Option<u64>,
}

impl Drop for TokenResponse {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.access_token.zeroize();
        if let Some(r) = self.refresh_token.as_mut() {
            r.zeroize();
        }
    }
}

#[derive(Deserialize)]
struct SubscriptionAnswer {
    id: String,
    #[serde(rename = "expiresIn")]
    expires_in: Option<u64>,
}

impl SubscriptionAnswer {
    fn lifetime_ms(&self) -> i64 {
        (self.expires_in.unwrap_or(0).max(1) as i64).saturating_mul(1000)
    }
}

/// Where the message sync stands (kept sealed like the tokens).
#[derive(Serialize, Deserialize)]
struct SyncPosition {
    token: String,
}

/// One page of `GET …/message-sync`.
#[derive(Deserialize)]
struct SyncPage {
    #[serde(default)]
    records: Vec<SyncRecord>,
    #[serde(rename = "syncInfo")]
    sync_info: Option<SyncInfo>,
}

#[derive(Deserialize)]
struct SyncInfo {
    #[serde(rename = "syncToken")]
    sync_token: Option<String>,
}

/// The fields of a message record the sync needs.
#[derive(Deserialize)]
struct SyncRecord {
    id: Option<serde_json::Value>,
    direction: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    #[serde(rename = "messageStatus")]
    message_status: Option<String>,
    from: Option<SyncParty>,
    #[serde(rename = "deliveryErrorCode")]
    delivery_error_code: Option<String>,
    #[serde(rename = "lastModifiedTime")]
    last_modified_time: Option<String>,
}

#[derive(Deserialize)]
struct SyncParty {
    #[serde(rename = "phoneNumber")]
    phone_number: Option<String>,
}

fn read_subscription(bytes: &[u8]) -> Result<SubscriptionAnswer, ProviderError> {
    serde_json::from_slice::<SubscriptionAnswer>(bytes)
        .ok()
        .filter(|a| !a.id.is_empty())
        .ok_or_else(|| ProviderError::unavailable("ringcentral: unreadable subscription answer"))
}

/// A RingCentral id: a JSON number or string.
pub fn id_text(v: &serde_json::Value) -> Option<String> {
    let s = match v {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => return None,
    };
    ((1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
    .then_some(s)
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    #[serde(default)]
    errors: Vec<ErrorItem>,
}

#[derive(Deserialize)]
struct ErrorItem {
    #[serde(rename = "errorCode")]
    error_code: Option<String>,
    #[serde(rename = "parameterName")]
    parameter_name: Option<String>,
}

/// A RingCentral error code, if it has the documented `ABC-123` shape (so it can be
/// logged and stored without quoting anything else of the answer).
fn safe_code(code: Option<&str>) -> Option<&str> {
    code.filter(|c| {
        (3..=16).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    })
}

/// What a non-2xx answer means.
///
/// - `429` (RingCentral's `CMN-301`, any rate-limit group): throttled, after its
///   `Retry-After`.
/// - `408`, `5xx`: unavailable.
/// - An invalid or unreachable recipient (`CMN-101`/`CMN-102` on the `to` parameter,
///   `MSG-242`, `MSG-246`, `MSG-240`): [`INVALID_NUMBER`], counted by the guard.
/// - Anything else: `provider_refused`, with RingCentral's code in the detail.
pub fn map_error(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
    what: &str,
) -> ProviderError {
    let parsed = serde_json::from_slice::<ErrorBody>(body).ok();
    let code = parsed.as_ref().and_then(|p| {
        safe_code(p.error_code.as_deref())
            .or_else(|| safe_code(p.errors.first().and_then(|e| e.error_code.as_deref())))
    });
    let detail = match code {
        Some(c) => format!("ringcentral {what} HTTP {status}, error {c}"),
        None => format!("ringcentral {what} HTTP {status}"),
    };
    if status == 429 || code == Some("CMN-301") {
        return ProviderError::Throttled {
            detail,
            retry_after,
        };
    }
    if status == 408 || status >= 500 {
        return ProviderError::Unavailable {
            detail,
            retry_after,
        };
    }
    let about_recipient = parsed.as_ref().is_some_and(|p| {
        p.errors.iter().any(|e| {
            matches!(e.error_code.as_deref(), Some("CMN-101" | "CMN-102"))
                && e.parameter_name
                    .as_deref()
                    .is_some_and(|n| n == "to" || n.starts_with("to[") || n.starts_with("to."))
        })
    });
    if about_recipient || matches!(code, Some("MSG-240" | "MSG-242" | "MSG-246")) {
        return ProviderError::permanent(INVALID_NUMBER, detail);
    }
    ProviderError::permanent("provider_refused", detail)
}

/// What RingCentral's answer to a send means: a 2xx with the message `id` is accepted
/// (without one it is not retried, as RingCentral may well have taken it); anything else
/// see [`map_error`].
pub fn map_response(
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<Accepted, ProviderError> {
    if (200..300).contains(&status) {
        let id = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v.get("id").and_then(id_text));
        return match id {
            Some(provider_message_id) => Ok(Accepted::whole(provider_message_id)),
            None => Err(ProviderError::permanent(
                "provider_response_unreadable",
                format!("ringcentral answered HTTP {status} without a message id"),
            )),
        };
    }
    Err(map_error(status, retry_after, body, "sms"))
}

/// What an outbound message record's `messageStatus` means for our message, if anything:
/// `Delivered`, `DeliveryFailed` (the carrier could not deliver) and `SendingFailed`
/// (RingCentral could not send) are final; `Queued`, `Sent` and the rest say no more than
/// the send's answer did.
pub fn receipt_status(message_status: &str) -> Option<MessageStatus> {
    match message_status {
        "Delivered" => Some(MessageStatus::Delivered),
        "DeliveryFailed" => Some(MessageStatus::Undelivered),
        "SendingFailed" => Some(MessageStatus::Failed),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> serde_json::Value {
        json!({
            "client_id": "cl1ent-id",
            "client_secret": "s3cr3t-value",
            "jwt": "eyJ-jwt-value",
            "from_numbers": ["+14155550199"],
        })
    }

    fn config(v: serde_json::Value) -> Result<RingCentralConfig, ConfigError> {
        RingCentralConfig::from_json(&v)
    }

    #[test]
    fn config_parses_and_defaults() {
        let c = config(valid()).unwrap();
        assert_eq!(c.base_url, DEFAULT_BASE_URL);
        assert!(matches!(c.grant, Grant::Jwt(_)));
        assert_eq!(c.subscription_expires_in, DEFAULT_SUBSCRIPTION_SECONDS);
        assert_eq!(c.from_for(Some("+14155550111")), "+14155550199");
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("s3cr3t") && !printed.contains("eyJ-jwt"),
            "{printed}"
        );
        let mut user = valid();
        user["jwt"] = serde_json::Value::Null;
        user["refresh_token"] = json!("rt-value");
        assert!(matches!(
            config(user).unwrap().grant,
            Grant::RefreshToken(_)
        ));
        let mut local = valid();
        local["base_url"] = json!("http://127.0.0.1:4010/");
        assert_eq!(config(local).unwrap().base_url, "http://127.0.0.1:4010");
    }

    #[test]
    fn config_refusals_name_the_field_not_the_value() {
        let with = |k: &str, v: serde_json::Value| {
            let mut c = valid();
            c[k] = v;
            config(c).unwrap_err().to_string()
        };
        assert!(with("client_id", json!("")).contains("client_id"));
        assert!(with("client_secret", json!("")).contains("client_secret"));
        let e = with("client_secret", json!(12345));
        assert!(e.contains("client_secret") && !e.contains("12345"), "{e}");
        assert!(with("jwt", json!("")).contains("jwt"));
        assert!(with("refresh_token", json!("rt")).contains("one of"));
        assert!(with("authorization_code", json!("code")).contains("one of"));
        let mut code = valid();
        code.as_object_mut().unwrap().remove("jwt");
        code["authorization_code"] = json!("U0pDMTFQMDFQQVMwMnxBQUJ");
        let e = config(code.clone()).unwrap_err().to_string();
        assert!(e.contains("redirect_uri") && !e.contains("U0pDMT"), "{e}");
        code["redirect_uri"] = json!("https://app.example/oauth/callback");
        assert!(matches!(
            config(code).unwrap().grant,
            Grant::AuthorizationCode { .. }
        ));
        assert!(with("from_numbers", json!([])).contains("from_numbers"));
        assert!(with("base_url", json!("http://platform.ringcentral.com")).contains("https"));
        assert!(with("base_url", json!("https://x.example/restapi")).contains("host root"));
        assert!(with("sender_mps", json!(-1)).contains("sender_mps"));
        assert!(with("subscription_expires_in", json!(0)).contains("subscription_expires_in"));
        let e = with("client_secrt", json!("s3cr3t"));
        assert!(e.contains("client_secrt") && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn responses_map_to_outcomes() {
        assert_eq!(
            map_response(
                200,
                None,
                br#"{"id":1724099032020,"messageStatus":"Queued"}"#
            )
            .unwrap()
            .provider_message_id,
            "1724099032020"
        );
        assert!(matches!(
            map_response(200, None, b"{}"),
            Err(ProviderError::Permanent { code, .. }) if code == "provider_response_unreadable"
        ));
        let code_of = |status: u16, body: &str| match map_response(status, None, body.as_bytes()) {
            Err(ProviderError::Permanent { code, detail }) => {
                assert!(!detail.contains("5550001"), "{detail}");
                code
            }
            other => panic!("{other:?}"),
        };
        let invalid_to = r#"{"errorCode":"CMN-101","message":"Parameter [to.phoneNumber] value +15005550001 is invalid","errors":[{"errorCode":"CMN-101","message":"Parameter [to.phoneNumber] value +15005550001 is invalid","parameterName":"to.phoneNumber"}]}"#;
        assert_eq!(code_of(400, invalid_to), INVALID_NUMBER);
        assert_eq!(
            code_of(400, r#"{"errorCode":"MSG-246","message":"x +15005550001"}"#),
            INVALID_NUMBER
        );
        let bad_from = r#"{"errorCode":"CMN-101","errors":[{"errorCode":"CMN-101","parameterName":"from.phoneNumber"}]}"#;
        assert_eq!(code_of(400, bad_from), "provider_refused");
        assert_eq!(
            code_of(403, r#"{"errorCode":"CMN-408"}"#),
            "provider_refused"
        );
        assert_eq!(code_of(404, "not json"), "provider_refused");
        let wait = Some(Duration::from_secs(7));
        match map_response(429, wait, br#"{"errorCode":"CMN-301"}"#) {
            Err(ProviderError::Throttled { retry_after, .. }) => assert_eq!(retry_after, wait),
            other => panic!("{other:?}"),
        }
        for status in [500, 503, 408] {
            match map_response(status, wait, b"oops") {
                Err(ProviderError::Unavailable { retry_after, .. }) => {
                    assert_eq!(retry_after, wait)
                }
                other => panic!("{status}: {other:?}"),
            }
        }
        // A code of an unexpected shape is not echoed.
        let e = map_error(400, None, br#"{"errorCode":"<script>+15005550001"}"#, "sms");
        assert!(!e.to_string().contains("5550001"), "{e}");
    }

    #[test]
    fn statuses_ids_and_tokens() {
        assert_eq!(receipt_status("Delivered"), Some(MessageStatus::Delivered));
        assert_eq!(
            receipt_status("DeliveryFailed"),
            Some(MessageStatus::Undelivered)
        );
        assert_eq!(receipt_status("SendingFailed"), Some(MessageStatus::Failed));
        for ignored in ["Queued", "Sent", "Received", ""] {
            assert_eq!(receipt_status(ignored), None);
        }
        assert_eq!(id_text(&json!(123)), Some("123".to_owned()));
        assert_eq!(id_text(&json!("ab-1")), Some("ab-1".to_owned()));
        assert_eq!(id_text(&json!("a/b")), None);
        let t = Tokens {
            access_token: "x".into(),
            expires_at: 1_000_000,
            lifetime_ms: 3_600_000,
            refresh_token: None,
            refresh_expires_at: 0,
        };
        // 10 % of an hour is six minutes.
        assert!(t.fresh(1_000_000 - 360_001));
        assert!(!t.fresh(1_000_000 - 360_000));
        let mut short = t.clone();
        short.lifetime_ms = 100_000;
        assert!(short.fresh(1_000_000 - 60_001) && !short.fresh(1_000_000 - 60_000));
        let record = SubscriptionRecord {
            id: Some("s".into()),
            verification_token: "tok-123".into(),
            address: String::new(),
            expires_at: 0,
            lifetime_ms: 0,
        };
        assert!(record.verifies("tok-123") && !record.verifies("tok-124") && !record.verifies(""));
        assert!(!format!("{record:?}").contains("tok-123"));
        assert_eq!(
            callback_url(
                "https://gw.example/",
                &ConnectionId::from_trusted("conn_x".to_owned())
            ),
            "https://gw.example/providers/ringcentral/conn_x"
        );
    }
}
