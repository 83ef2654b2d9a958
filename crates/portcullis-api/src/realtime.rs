//! Realtime tokens: short-lived, single-use tickets that let a WebSocket client (often a
//! browser, which cannot set an `Authorization` header on an upgrade) open the event
//! stream without ever holding an API key.
//!
//! Tokens live in this process's memory only, as SHA-256 hashes: a database dump, a log or
//! another instance never sees one. A token is removed when it is redeemed, when it
//! expires (swept), and when the key that minted it is revoked; redeeming also re-checks
//! the key, so a key revoked from the command line or another instance is covered too.

use std::collections::HashMap;
use std::sync::Mutex;

use portcullis_crypto::{Secret, random_token, sha256};
use portcullis_domain::{AppId, KeyId, Role, TenantId};

/// The prefix of every realtime token.
pub const TOKEN_PREFIX: &str = "wst_";
/// How long a token is valid, in seconds.
pub const TOKEN_TTL_SECS: i64 = 60;
/// Outstanding tokens per process; minting beyond this sweeps, then refuses.
const MAX_TOKENS: usize = 100_000;

/// What a redeemed token grants.
#[derive(Debug, Clone)]
pub struct Grant {
    pub key_id: KeyId,
    pub tenant_id: TenantId,
    pub app_id: AppId,
    pub role: Role,
    expires_at: i64,
}

/// The outstanding tokens of this process.
#[derive(Default)]
pub struct RealtimeTokens {
    tokens: Mutex<HashMap<[u8; 32], Grant>>,
}

impl RealtimeTokens {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Grant>> {
        // Every operation is one insert, remove or retain: a poisoned map is still whole.
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Mints a token for the caller's key, app and role. `None` when too many are
    /// outstanding.
    pub fn mint(
        &self,
        key_id: &KeyId,
        tenant_id: &TenantId,
        app_id: &AppId,
        role: Role,
        now_ms: i64,
    ) -> Option<Secret<String>> {
        let token = random_token(TOKEN_PREFIX, 32);
        let mut tokens = self.lock();
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, g| g.expires_at > now_ms);
            if tokens.len() >= MAX_TOKENS {
                return None;
            }
        }
        tokens.insert(
            sha256(token.expose().as_bytes()),
            Grant {
                key_id: key_id.clone(),
                tenant_id: tenant_id.clone(),
                app_id: app_id.clone(),
                role,
                expires_at: now_ms + TOKEN_TTL_SECS * 1000,
            },
        );
        Some(token)
    }

    /// Redeems a token: valid once, before it expires. The lookup is by hash, so timing
    /// reveals nothing about stored tokens.
    pub fn redeem(&self, token: &str, now_ms: i64) -> Option<Grant> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return None;
        }
        let grant = self.lock().remove(&sha256(token.as_bytes()))?;
        (grant.expires_at > now_ms).then_some(grant)
    }

    /// Drops every token the key minted.
    pub fn revoke_key(&self, key_id: &KeyId) {
        self.lock().retain(|_, g| &g.key_id != key_id);
    }

    /// Drops expired tokens.
    pub fn sweep(&self, now_ms: i64) {
        self.lock().retain(|_, g| g.expires_at > now_ms);
    }

    pub fn outstanding(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mint(t: &RealtimeTokens, key: &KeyId, now: i64) -> String {
        t.mint(key, &TenantId::new(), &AppId::new(), Role::Sender, now)
            .unwrap()
            .expose()
            .clone()
    }

    #[test]
    fn tokens_are_single_use_and_expire() {
        let t = RealtimeTokens::default();
        let key = KeyId::new();
        let tok = mint(&t, &key, 0);
        assert!(tok.starts_with("wst_"));
        assert!(t.redeem(&tok, 1_000).is_some());
        assert!(t.redeem(&tok, 1_000).is_none(), "second use");
        let tok = mint(&t, &key, 0);
        assert!(t.redeem(&tok, 60_000).is_none(), "expired at 60 s");
        let tok = mint(&t, &key, 0);
        assert!(t.redeem(&tok, 59_999).is_some());
    }

    #[test]
    fn revoking_a_key_drops_its_tokens_only() {
        let t = RealtimeTokens::default();
        let (a, b) = (KeyId::new(), KeyId::new());
        let ta = mint(&t, &a, 0);
        let tb = mint(&t, &b, 0);
        t.revoke_key(&a);
        assert!(t.redeem(&ta, 1).is_none());
        assert!(t.redeem(&tb, 1).is_some());
    }

    #[test]
    fn sweeping_drops_expired_tokens() {
        let t = RealtimeTokens::default();
        let key = KeyId::new();
        mint(&t, &key, 0);
        mint(&t, &key, 30_000);
        t.sweep(61_000);
        assert_eq!(t.outstanding(), 1);
        assert!(t.redeem("pcl_live_nope", 0).is_none());
    }
}
