//! Builds providers for stored connections, from their type and opened configuration.
//!
//! The pipeline hands over what the store holds (`kind`, the configuration JSON) and gets
//! back a running [`Provider`], without knowing which HTTP client or wire format is behind
//! it. The configuration is parsed here and kept only inside the provider it configures.

use std::sync::{Arc, Mutex};

use portcullis_domain::ConnectionId;

use crate::Provider;
use crate::twilio::{self, TwilioConfig, TwilioProvider};

/// Why a stored connection could not be turned into a provider. The text never holds a
/// configuration value.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Twilio(#[from] twilio::ConfigError),
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
}

impl ProviderFactory {
    pub fn new(public_url: impl Into<String>) -> ProviderFactory {
        ProviderFactory {
            public_url: public_url.into(),
            http: Mutex::new(None),
        }
    }

    /// The base URL providers are told to call back.
    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether connections of `kind` can be driven by this build.
    pub fn drives(kind: &str) -> bool {
        kind == twilio::KIND
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
