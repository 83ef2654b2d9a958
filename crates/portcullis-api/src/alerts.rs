//! Distributed authentication failures against one app.
//!
//! The brute-force table blocks one address at a time; an attacker with a botnet, or a leaked
//! key being tried from many machines, stays under it. What they have in common is the app:
//! a presented key whose identification prefix names one of the app's keys, but whose secret
//! part is wrong, or a real key that is revoked, expired or used from outside its allowlist.
//! When such failures come from [`MIN_ADDRESSES`] or more addresses within [`WINDOW_MS`],
//! the app is told once per [`COOLDOWN_MS`] (a `security.auth_failures` event on its webhooks
//! and stream, and an audit entry). Nothing is blocked for the app: its owner keeps working.
//!
//! In-process: with several instances each counts what it sees, so an attack spread over
//! them raises the alert later, never spuriously.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;

use portcullis_domain::{AppId, TenantId};

use crate::bruteforce::ClientKey;

/// Distinct client addresses (IPv4, or IPv6 /64) that make a pattern.
pub const MIN_ADDRESSES: usize = 5;
pub const WINDOW_MS: i64 = 5 * 60 * 1000;
pub const COOLDOWN_MS: i64 = 15 * 60 * 1000;
/// Apps tracked at once; beyond it the quietest are forgotten.
const CAPACITY: usize = 10_000;
/// Failures remembered per app: enough to hold [`MIN_ADDRESSES`] distinct ones among a
/// single address's hammering.
const PER_APP: usize = 256;

#[derive(Default)]
struct AppFailures {
    tenant: Option<TenantId>,
    recent: VecDeque<(i64, ClientKey)>,
    last_alert: Option<i64>,
}

/// What an alert reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub app_id: AppId,
    pub tenant_id: TenantId,
    pub failures: usize,
    pub addresses: usize,
}

#[derive(Default)]
pub struct AuthFailureAlerts {
    apps: Mutex<HashMap<AppId, AppFailures>>,
}

impl AuthFailureAlerts {
    /// Records a failed authentication attributable to `app`; returns the alert to raise
    /// when this failure completes a pattern.
    pub fn record(
        &self,
        app: &AppId,
        tenant: &TenantId,
        client: ClientKey,
        now: i64,
    ) -> Option<Alert> {
        let mut apps = self.apps.lock().unwrap_or_else(|p| p.into_inner());
        if apps.len() >= CAPACITY && !apps.contains_key(app) {
            apps.retain(|_, f| f.recent.back().is_some_and(|(t, _)| now - t < WINDOW_MS));
            if apps.len() >= CAPACITY {
                return None;
            }
        }
        let f = apps.entry(app.clone()).or_default();
        f.tenant.get_or_insert_with(|| tenant.clone());
        while f.recent.front().is_some_and(|(t, _)| now - t >= WINDOW_MS) {
            f.recent.pop_front();
        }
        if f.recent.len() >= PER_APP {
            f.recent.pop_front();
        }
        f.recent.push_back((now, client));
        if f.last_alert.is_some_and(|t| now - t < COOLDOWN_MS) {
            return None;
        }
        let addresses: HashSet<ClientKey> = f.recent.iter().map(|(_, c)| *c).collect();
        if addresses.len() < MIN_ADDRESSES {
            return None;
        }
        f.last_alert = Some(now);
        Some(Alert {
            app_id: app.clone(),
            tenant_id: tenant.clone(),
            failures: f.recent.len(),
            addresses: addresses.len(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn c(i: u32) -> ClientKey {
        ClientKey::from(IpAddr::from((0xc633_6400u32 + i).to_be_bytes()))
    }

    #[test]
    fn many_addresses_alert_once_per_cooldown() {
        let a = AuthFailureAlerts::default();
        let (app, t) = (AppId::new(), TenantId::new());
        // One address hammering is the brute-force table's business, not an alert.
        for i in 0..50 {
            assert_eq!(a.record(&app, &t, c(0), i), None);
        }
        for i in 1..MIN_ADDRESSES as u32 - 1 {
            assert_eq!(a.record(&app, &t, c(i), 100), None);
        }
        let alert = a
            .record(&app, &t, c(99), 200)
            .expect("fifth address alerts");
        assert_eq!(alert.addresses, MIN_ADDRESSES);
        assert_eq!(a.record(&app, &t, c(100), 300), None, "cooldown");
        // Once the cooldown and the window have passed, a new pattern alerts again.
        let later = 200 + COOLDOWN_MS;
        for i in 0..MIN_ADDRESSES as u32 - 1 {
            assert_eq!(a.record(&app, &t, c(200 + i), later), None);
        }
        assert!(a.record(&app, &t, c(300), later).is_some());
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let a = AuthFailureAlerts::default();
        let (app, t) = (AppId::new(), TenantId::new());
        for i in 0..MIN_ADDRESSES as u32 - 1 {
            a.record(&app, &t, c(i), 0);
        }
        assert_eq!(a.record(&app, &t, c(50), WINDOW_MS), None);
    }
}
