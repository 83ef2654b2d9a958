//! Builds providers for stored connections, from their type and opened configuration.
//!
//! The pipeline hands over what the store holds (`kind`, the configuration JSON) and gets
//! back a running [`Provider`], without knowing which HTTP client or wire format is behind
//! it. The configuration is parsed here and kept only inside the provider it configures.

use std::sync::{Arc, Mutex};

use portcullis_domain::ConnectionId;

use crate::ringcentral::{self, RingCentralConfig, RingCentralProvider, StateStore};
use crate::smpp::{self, SmppConfig, SmppProvider};
use crate::twilio::{self, TwilioConfig, TwilioProvider};
use crate::whatsapp::{self, WhatsappConfig, WhatsappProvider};
use crate::{EventSink, Provider};

/// Why a stored connection could not be turned into a provider. The text never holds a
/// configuration value.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Twilio(#[from] twilio::ConfigError),
    #[error(transparent)]
    RingCentral(#[from] ringcentral::ConfigError),
    #[error(transparent)]
    Whatsapp(#[from] whatsapp::ConfigError),
    #[error(transparent)]
    Smpp(#[from] smpp::ConfigError),
    #[error("building the HTTP client failed: {0}")]
    HttpClient(String),
}

/// Makes providers for stored connections.
pub struct ProviderFactory {
    /// The base URL providers call back (`PORTCULLIS_PUBLIC_URL`).
    public_url: String,
    /// One HTTP client (one connection pool) for every HTTP provider, made when the first
    /// one is built: a process without HTTP connections never builds it.
    http: Mutex<Option<reqwest::Client>>,
    /// Where providers keep state across restarts (RingCentral's tokens and subscription).
    state: Arc<dyn StateStore>,
    /// Turned true at shutdown: providers' background tasks (subscription renewal) stop.
    stop: tokio::sync::watch::Sender<bool>,
    /// Where providers that fetch their statuses themselves report them.
    events: Option<EventSink>,
}

impl ProviderFactory {
    pub fn new(public_url: impl Into<String>) -> ProviderFactory {
        ProviderFactory {
            public_url: public_url.into(),
            http: Mutex::new(None),
            state: Arc::new(ringcentral::NoState),
            stop: tokio::sync::watch::Sender::new(false),
            events: None,
        }
    }

    /// Lets providers that look up statuses themselves (RingCentral) report them to
    /// `events`; without it they report only what their callbacks carry.
    pub fn with_events(mut self, events: EventSink) -> ProviderFactory {
        self.events = Some(events);
        self
    }

    /// Keeps providers' state in `state` (the pipeline's, over the database) instead of
    /// forgetting it.
    pub fn with_state_store(mut self, state: Arc<dyn StateStore>) -> ProviderFactory {
        self.state = state;
        self
    }

    /// Stops the background tasks of every provider built.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }

    /// The base URL providers are told to call back.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether connections of `kind` can be driven by this build. Every such connection is
    /// built at start-up, routed or not: an SMPP connection must bind, and RingCentral's
    /// subscribe to its notifications, before the first message is sent, or inbound
    /// replies would not arrive.
    pub fn drives(kind: &str) -> bool {
        [smpp::KIND, twilio::KIND, ringcentral::KIND, whatsapp::KIND].contains(&kind)
    }

    /// Checks a connection's configuration for its type, as `build` will read it, so a
    /// mistake is refused when the connection is created or updated rather than at the
    /// first send. The error names fields, never values.
    pub fn check_config(kind: &str, config: &serde_json::Value) -> Result<(), BuildError> {
        match kind {
            twilio::KIND => TwilioConfig::from_json(config).map(drop)?,
            whatsapp::KIND => WhatsappConfig::from_json(config).map(drop)?,
            ringcentral::KIND => RingCentralConfig::from_json(config).map(drop)?,
            smpp::KIND => SmppConfig::from_json(config).map(drop)?,
            _ => {}
        }
        Ok(())
    }

    /// The provider for connection `id` of type `kind`; `Ok(None)` for a type this build
    /// does not drive.
    pub fn build(
        &self,
        id: ConnectionId,
        kind: &str,
        config: &serde_json::Value,
    ) -> Result<Option<Arc<dyn Provider>>, BuildError> {
        match kind {
            twilio::KIND => {
                let config = TwilioConfig::from_json(config)?;
                let client = self.http_client()?;
                Ok(Some(Arc::new(TwilioProvider::new(
                    id,
                    config,
                    &self.public_url,
                    client,
                ))))
            }
            whatsapp::KIND => {
                let config = WhatsappConfig::from_json(config)?;
                Ok(Some(Arc::new(WhatsappProvider::new(
                    id,
                    config,
                    self.http_client()?,
                ))))
            }
            ringcentral::KIND => {
                let config = RingCentralConfig::from_json(config)?;
                let client = self.http_client()?;
                Ok(Some(Arc::new(RingCentralProvider::start(
                    id,
                    config,
                    &self.public_url,
                    client,
                    self.state.clone(),
                    self.events.clone(),
                    self.stop.subscribe(),
                ))))
            }
            smpp::KIND => {
                let config = SmppConfig::from_json(config)?;
                Ok(Some(Arc::new(SmppProvider::start(
                    id,
                    config,
                    self.events.clone(),
                    self.stop.subscribe(),
                ))))
            }
            _ => Ok(None),
        }
    }

    fn http_client(&self) -> Result<reqwest::Client, BuildError> {
        let mut slot = self.http.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(client) = slot.as_ref() {
            return Ok(client.clone());
        }
        let client = twilio::http_client().map_err(|e| BuildError::HttpClient(e.to_string()))?;
        *slot = Some(client.clone());
        Ok(client)
    }
}
