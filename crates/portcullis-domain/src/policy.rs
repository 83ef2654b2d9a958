//! The responsible-messaging guard as one pure function.
//!
//! [`decide`] takes everything the decision depends on — the message, the app's policy,
//! what is on record for the recipient, the counters, any pause in force, and the clock —
//! and returns a [`Decision`]: allow, defer until a time, hold for review, or refuse with a
//! code. It does no I/O: the store loads the inputs, and both the send path (before
//! accepting, [`Stage::Accept`]) and the send worker (just before the provider is called,
//! [`Stage::Dispatch`]) apply it.
//!
//! Checks run in a fixed order so the reason given is the most fundamental one: a paused
//! app is reported as paused, not as outside quiet hours; a suppression refusal is decided
//! before quiet hours (API.md); a refusal is decided before a hold, so a reviewer is never
//! asked to approve what could not be sent anyway.
//!
//! At dispatch the counters are not consulted again: quotas, caps and velocity were charged
//! when the message was accepted, and charging them twice would refuse what was already
//! paid for. What can change between the two moments — a pause, an opt-out, a withdrawn
//! consent, a narrowed country list, the clock — is checked again.

use jiff::Timestamp;

use crate::content::{self, LinkRules};
use crate::quiet_hours::{self, QuietRules};
use crate::quota::{self, QuotaLimits, QuotaUsage};
use crate::risk::RiskPrefixes;
use crate::{Channel, E164, Purpose, PurposeSet};

/// What an app does with a non-essential message that falls in the recipient's quiet hours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QuietHoursMode {
    /// Schedule it for the next allowed moment (the default).
    #[default]
    Defer,
    /// Refuse it.
    Refuse,
}

/// Burst detection: a minute far above the app's usual rate holds messages for review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BurstRule {
    /// Below this many messages in a minute nothing is a burst, whatever the baseline.
    pub min_per_minute: u32,
    /// A minute above `factor` × the app's average minute of the previous hour is a burst.
    pub factor: u32,
}

impl Default for BurstRule {
    fn default() -> Self {
        BurstRule {
            min_per_minute: 600,
            factor: 10,
        }
    }
}

/// An app's policy settings, with its tenant's quotas folded in.
#[derive(Debug, Clone, PartialEq)]
pub struct AppPolicy {
    /// Purposes the app may send.
    pub allowed_purposes: PurposeSet,
    /// Require a consent record for every non-essential purpose, not only marketing.
    pub consent_for_non_essential: bool,
    /// What quiet hours do to non-essential messages.
    pub quiet_hours: QuietHoursMode,
    /// Destination countries (ISO 3166 regions) the app may send to; `None`: any.
    pub allowed_countries: Option<Vec<String>>,
    /// Segment quotas of the app and its tenant.
    pub quotas: QuotaLimits,
    /// At most this many non-essential messages per recipient per day.
    pub recipient_daily_cap: Option<u32>,
    /// Burst detection (`None`: off).
    pub burst: Option<BurstRule>,
    /// Messages per hour the app may send to high-risk prefixes (see [`crate::risk`]);
    /// beyond it they are refused.
    pub high_risk_per_hour: u32,
    /// Hold new messages for review once this many sends to invalid numbers failed within
    /// the hour (`None`: off).
    pub hold_after_invalid_failures: Option<u32>,
    /// Blocked domains and URL shorteners.
    pub links: LinkRules,
    /// Appended to non-essential messages that do not already say how to opt out.
    pub opt_out_footer: Option<String>,
}

impl Default for AppPolicy {
    fn default() -> Self {
        AppPolicy {
            allowed_purposes: PurposeSet::default_for_new_app(),
            consent_for_non_essential: false,
            quiet_hours: QuietHoursMode::Defer,
            allowed_countries: None,
            quotas: QuotaLimits::default(),
            recipient_daily_cap: Some(DEFAULT_RECIPIENT_DAILY_CAP),
            burst: Some(BurstRule::default()),
            high_risk_per_hour: DEFAULT_HIGH_RISK_PER_HOUR,
            hold_after_invalid_failures: Some(DEFAULT_HOLD_AFTER_INVALID_FAILURES),
            links: LinkRules::default(),
            opt_out_footer: None,
        }
    }
}

/// Default per-recipient daily cap on non-essential messages.
pub const DEFAULT_RECIPIENT_DAILY_CAP: u32 = 25;
/// Default hourly budget of messages to high-risk prefixes.
pub const DEFAULT_HIGH_RISK_PER_HOUR: u32 = 3;
/// Default number of invalid-number failures in an hour that starts holding messages.
pub const DEFAULT_HOLD_AFTER_INVALID_FAILURES: u32 = 25;

impl AppPolicy {
    /// The text that will be sent: the body, with the opt-out footer when the policy asks
    /// for one and the purpose is non-essential. Segments are counted on this text.
    pub fn outgoing_text<'a>(&self, purpose: Purpose, body: &'a str) -> std::borrow::Cow<'a, str> {
        match &self.opt_out_footer {
            Some(footer) if !purpose.is_essential() => content::with_footer(body, footer),
            _ => std::borrow::Cow::Borrowed(body),
        }
    }
}

/// What is on record for the recipient of a message, for this app and channel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// The recipient opted out (or was suppressed by the app).
    pub suppressed: bool,
    /// A transactional-scope consent is on record.
    pub transactional_consent: bool,
    /// A marketing-scope consent is on record.
    pub marketing_consent: bool,
}

/// The counters the guard reads when a message is accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Segments used in the current quota periods.
    pub quota: QuotaUsage,
    /// Non-essential messages to this recipient today.
    pub recipient_today: u32,
    /// The app's messages in the current minute, before this one.
    pub app_this_minute: u32,
    /// The app's messages in the previous hour (the burst baseline).
    pub app_previous_hour: u32,
    /// The app's messages to high-risk prefixes this hour.
    pub high_risk_this_hour: u32,
    /// The app's sends that failed for an invalid number this hour.
    pub invalid_failures_this_hour: u32,
}

/// Where a pause was set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PauseScope {
    /// The whole gateway (an operator).
    Global,
    /// Every app of the tenant.
    Tenant,
    /// This app.
    App,
}

impl PauseScope {
    /// `global`, `tenant` or `app`.
    pub fn as_str(self) -> &'static str {
        match self {
            PauseScope::Global => "global",
            PauseScope::Tenant => "tenant",
            PauseScope::App => "app",
        }
    }
}

/// A kill switch in force over the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pause {
    /// Where it was set.
    pub scope: PauseScope,
    /// Also stop the queue from draining (messages already accepted wait).
    pub stop_queue: bool,
    /// Why, as the one who paused said.
    pub reason: String,
}

/// Which of the two checks is being made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// The send path, before the message is accepted.
    Accept,
    /// The send worker, just before the provider is called.
    Dispatch,
}

/// The message being decided on.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// Why the message is sent.
    pub purpose: Purpose,
    /// SMS or WhatsApp.
    pub channel: Channel,
    /// The recipient.
    pub to: &'a E164,
    /// The text as it will be sent (footer included).
    pub text: &'a str,
    /// Segments of `text`.
    pub segments: u32,
    /// When the sender wants it to go (`None`: now).
    pub send_at: Option<Timestamp>,
}

/// Everything besides the message that the decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Inputs<'a> {
    /// The app's policy.
    pub policy: &'a AppPolicy,
    /// The recipient's standing.
    pub standing: &'a Standing,
    /// Counters (read at [`Stage::Accept`] only).
    pub counters: &'a Counters,
    /// The most general pause in force over the app, if any.
    pub pause: Option<&'a Pause>,
    /// Quiet-hours rules.
    pub rules: &'a QuietRules,
    /// High-risk destination prefixes.
    pub risk: &'a RiskPrefixes,
    /// The clock.
    pub now: Timestamp,
}

/// A decision's machine-readable code (a refusal's is also the API error `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyCode {
    /// Sending is paused for the app, tenant or gateway.
    SendingPaused,
    /// The app may not send this purpose.
    PurposeNotAllowed,
    /// The destination country is not allowed for the app.
    DestinationNotAllowed,
    /// The app's hourly budget for high-risk destinations is spent.
    DestinationHighRisk,
    /// The body links to a blocked domain.
    LinkNotAllowed,
    /// The body links to a URL shortener and the app refuses them.
    LinkShortenerNotAllowed,
    /// The recipient opted out; only essential messages pass.
    RecipientSuppressed,
    /// The purpose needs a consent record that is not there.
    ConsentRequired,
    /// A segment quota of the app or tenant would be exceeded.
    QuotaExceeded,
    /// The recipient already got the day's allowance of non-essential messages.
    RecipientFrequencyCapped,
    /// The app is sending far above its baseline.
    BurstDetected,
    /// Many of the app's recent sends failed for invalid numbers (a pumping pattern).
    InvalidNumberFailures,
    /// Non-essential messages wait for (or are refused in) the recipient's quiet hours.
    QuietHours,
}

impl PolicyCode {
    /// The snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyCode::SendingPaused => "sending_paused",
            PolicyCode::PurposeNotAllowed => "purpose_not_allowed",
            PolicyCode::DestinationNotAllowed => "destination_not_allowed",
            PolicyCode::DestinationHighRisk => "destination_high_risk",
            PolicyCode::LinkNotAllowed => "link_not_allowed",
            PolicyCode::LinkShortenerNotAllowed => "link_shortener_not_allowed",
            PolicyCode::RecipientSuppressed => "recipient_suppressed",
            PolicyCode::ConsentRequired => "consent_required",
            PolicyCode::QuotaExceeded => "quota_exceeded",
            PolicyCode::RecipientFrequencyCapped => "recipient_frequency_capped",
            PolicyCode::BurstDetected => "burst_detected",
            PolicyCode::InvalidNumberFailures => "invalid_number_failures",
            PolicyCode::QuietHours => "quiet_hours",
        }
    }
}

/// The guard's verdict.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Send (at `send_at`, if one was asked for). `exempt` says why a rule that would have
    /// stopped a non-essential message let this essential one through.
    Allow {
        /// e.g. "recipient opted out; essential purpose otp is exempt".
        exempt: Option<String>,
    },
    /// Send later: the first moment the rules allow.
    Defer {
        /// When the message may go (or be looked at again).
        until: Timestamp,
        /// `quiet_hours`, or `sending_paused` at dispatch under a queue-stopping pause.
        code: PolicyCode,
        /// Why it waits.
        reason: String,
    },
    /// Keep it until a reviewer approves or rejects it.
    Hold {
        /// The risk signal.
        code: PolicyCode,
        /// What was seen (never containing the number).
        reason: String,
    },
    /// Do not send.
    Refuse {
        /// The code.
        code: PolicyCode,
        /// A human explanation (never containing the number).
        reason: String,
    },
}

/// How long a message waits at dispatch under a queue-stopping pause before it is looked
/// at again.
pub const PAUSED_RECHECK_SECONDS: i64 = 30;

/// Decides whether a message may be sent now, later, after review, or not at all.
pub fn decide(msg: &Outgoing<'_>, inp: &Inputs<'_>, stage: Stage) -> Decision {
    let policy = inp.policy;
    let essential = msg.purpose.is_essential();
    let accept = stage == Stage::Accept;
    if let Some(pause) = inp.pause {
        let reason = format!(
            "sending is paused for this {}: {}",
            match pause.scope {
                PauseScope::Global => "gateway",
                PauseScope::Tenant => "tenant",
                PauseScope::App => "app",
            },
            pause.reason
        );
        if accept {
            return refuse(PolicyCode::SendingPaused, reason);
        }
        if pause.stop_queue {
            return Decision::Defer {
                until: inp.now + jiff::SignedDuration::from_secs(PAUSED_RECHECK_SECONDS),
                code: PolicyCode::SendingPaused,
                reason: format!("{reason}; the queue is held"),
            };
        }
    }
    if !policy.allowed_purposes.contains(msg.purpose) {
        return refuse(
            PolicyCode::PurposeNotAllowed,
            format!(
                "this app is not allowed to send {} messages",
                msg.purpose.as_str()
            ),
        );
    }
    if let Some(allowed) = &policy.allowed_countries {
        let region = msg.to.region();
        if !region
            .as_ref()
            .is_some_and(|r| allowed.iter().any(|a| a.eq_ignore_ascii_case(r)))
        {
            return refuse(
                PolicyCode::DestinationNotAllowed,
                format!(
                    "destination country {} is not among the app's allowed countries ({})",
                    region.as_deref().unwrap_or("unknown"),
                    allowed.join(", ")
                ),
            );
        }
    }
    if accept {
        if let Some(risky) = inp.risk.matching(msg.to)
            && inp.counters.high_risk_this_hour >= policy.high_risk_per_hour
        {
            return refuse(
                PolicyCode::DestinationHighRisk,
                format!(
                    "prefix +{} is high-risk ({}) and the app's budget of {} such messages per hour is spent",
                    risky.prefix, risky.reason, policy.high_risk_per_hour
                ),
            );
        }
        if let Err(v) = content::check_links(msg.text, &policy.links) {
            let code = if v.code == "link_shortener_not_allowed" {
                PolicyCode::LinkShortenerNotAllowed
            } else {
                PolicyCode::LinkNotAllowed
            };
            let what = if code == PolicyCode::LinkShortenerNotAllowed {
                "a URL shortener, which this app does not allow"
            } else {
                "a domain this app blocks"
            };
            return refuse(code, format!("the body links to {} ({what})", v.host));
        }
    }
    let mut exempt = None;
    if inp.standing.suppressed {
        if !essential {
            return refuse(
                PolicyCode::RecipientSuppressed,
                "the recipient opted out; only essential messages (otp, transactional, alert) are sent".to_owned(),
            );
        }
        exempt = Some(format!(
            "recipient opted out; essential purpose {} is exempt",
            msg.purpose.as_str()
        ));
    }
    if msg.purpose == Purpose::Marketing && !inp.standing.marketing_consent {
        return refuse(
            PolicyCode::ConsentRequired,
            "marketing messages need a marketing consent on record".to_owned(),
        );
    }
    if policy.consent_for_non_essential
        && !essential
        && !(inp.standing.transactional_consent || inp.standing.marketing_consent)
    {
        return refuse(
            PolicyCode::ConsentRequired,
            format!(
                "this app requires a consent on record for {} messages",
                msg.purpose.as_str()
            ),
        );
    }
    if accept {
        let c = inp.counters;
        if let Some(why) = quota::exceeded(&policy.quotas, &c.quota, u64::from(msg.segments)) {
            return refuse(PolicyCode::QuotaExceeded, why);
        }
        if let Some(cap) = policy.recipient_daily_cap
            && !essential
            && c.recipient_today >= cap
        {
            return refuse(
                PolicyCode::RecipientFrequencyCapped,
                format!(
                    "the recipient already received {} non-essential messages today (the app's cap is {cap})",
                    c.recipient_today
                ),
            );
        }
        if let Some(limit) = policy.hold_after_invalid_failures
            && c.invalid_failures_this_hour >= limit
        {
            return Decision::Hold {
                code: PolicyCode::InvalidNumberFailures,
                reason: format!(
                    "{} of the app's sends failed for invalid numbers this hour (threshold {limit}), a pattern of SMS pumping",
                    c.invalid_failures_this_hour
                ),
            };
        }
        if let Some(rule) = policy.burst {
            let baseline = f64::from(c.app_previous_hour) / 60.0;
            let threshold = (baseline * f64::from(rule.factor)).max(f64::from(rule.min_per_minute));
            let this_minute = c.app_this_minute.saturating_add(1);
            if f64::from(this_minute) > threshold {
                return Decision::Hold {
                    code: PolicyCode::BurstDetected,
                    reason: format!(
                        "{this_minute} messages this minute against a baseline of {baseline:.1} a minute over the previous hour (threshold {threshold:.0})"
                    ),
                };
            }
        }
    }
    if !essential {
        let now = inp.now;
        let at = msg.send_at.filter(|t| *t > now).unwrap_or(now);
        if let Some(until) = quiet_hours::next_allowed(msg.to, at, inp.rules) {
            let window = quiet_hours::describe(msg.to, inp.rules);
            return match policy.quiet_hours {
                QuietHoursMode::Refuse if accept => refuse(
                    PolicyCode::QuietHours,
                    format!(
                        "quiet hours at the recipient (allowed {window}) and the app refuses rather than defers"
                    ),
                ),
                // At dispatch the message was accepted in the window and a queue delay
                // carried it into quiet hours: it waits rather than being lost.
                _ => Decision::Defer {
                    until,
                    code: PolicyCode::QuietHours,
                    reason: format!("quiet hours at the recipient (allowed {window})"),
                },
            };
        }
    }
    Decision::Allow { exempt }
}

fn refuse(code: PolicyCode, reason: String) -> Decision {
    Decision::Refuse { code, reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quiet_hours::SendWindow;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// 16:00 in San Francisco (PDT): inside the default window.
    const DAY: &str = "2026-07-01T23:00:00Z";
    /// 03:00 in San Francisco: quiet hours.
    const NIGHT: &str = "2026-07-01T10:00:00Z";
    const US: &str = "+14155550100";

    /// One row of the decision table.
    struct Case {
        name: &'static str,
        purpose: Purpose,
        policy: AppPolicy,
        standing: Standing,
        counters: Counters,
        pause: Option<Pause>,
        to: &'static str,
        text: &'static str,
        segments: u32,
        at: &'static str,
        stage: Stage,
        expect: &'static str,
    }

    impl Default for Case {
        fn default() -> Self {
            Case {
                name: "",
                purpose: Purpose::Notification,
                policy: AppPolicy::default(),
                standing: Standing::default(),
                counters: Counters::default(),
                pause: None,
                to: US,
                text: "Your parcel is on its way",
                segments: 1,
                at: DAY,
                stage: Stage::Accept,
                expect: "",
            }
        }
    }

    fn verdict(d: &Decision) -> String {
        match d {
            Decision::Allow { exempt: None } => "allow".to_owned(),
            Decision::Allow { exempt: Some(_) } => "allow_exempt".to_owned(),
            Decision::Defer { code, .. } => format!("defer:{}", code.as_str()),
            Decision::Hold { code, .. } => format!("hold:{}", code.as_str()),
            Decision::Refuse { code, .. } => format!("refuse:{}", code.as_str()),
        }
    }

    fn run(c: &Case) -> Decision {
        let to = E164::parse(c.to).unwrap_or_else(|_| E164::from_trusted(c.to.to_owned()));
        let msg = Outgoing {
            purpose: c.purpose,
            channel: Channel::Sms,
            to: &to,
            text: c.text,
            segments: c.segments,
            send_at: None,
        };
        decide(
            &msg,
            &Inputs {
                policy: &c.policy,
                standing: &c.standing,
                counters: &c.counters,
                pause: c.pause.as_ref(),
                rules: QuietRules::builtin(),
                risk: RiskPrefixes::builtin(),
                now: ts(c.at),
            },
            c.stage,
        )
    }

    fn pause(scope: PauseScope, stop_queue: bool) -> Option<Pause> {
        Some(Pause {
            scope,
            stop_queue,
            reason: "incident 42".to_owned(),
        })
    }

    #[test]
    fn decision_table() {
        use Purpose::*;
        let mut marketing_app = AppPolicy::default();
        marketing_app.allowed_purposes.insert(Purpose::Marketing);
        let consent_app = AppPolicy {
            consent_for_non_essential: true,
            ..AppPolicy::default()
        };
        let refusing_app = AppPolicy {
            quiet_hours: QuietHoursMode::Refuse,
            ..AppPolicy::default()
        };
        let us_only = AppPolicy {
            allowed_countries: Some(vec!["US".into()]),
            ..AppPolicy::default()
        };
        let gb_only = AppPolicy {
            allowed_countries: Some(vec!["gb".into()]),
            ..AppPolicy::default()
        };
        let quota_100 = AppPolicy {
            quotas: QuotaLimits {
                app_daily: Some(100),
                ..QuotaLimits::default()
            },
            ..AppPolicy::default()
        };
        let two_left = Counters {
            quota: QuotaUsage {
                app_day: 98,
                ..QuotaUsage::default()
            },
            ..Counters::default()
        };
        let links = AppPolicy {
            links: LinkRules {
                block_shorteners: true,
                blocked_domains: vec!["evil.example".into()],
            },
            ..AppPolicy::default()
        };
        let suppressed = Standing {
            suppressed: true,
            ..Standing::default()
        };
        let marketing_ok = Standing {
            marketing_consent: true,
            ..Standing::default()
        };
        let cases = [
            Case {
                name: "otp by day",
                purpose: Otp,
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "otp at night (essential: no quiet hours)",
                purpose: Otp,
                at: NIGHT,
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "notification by day",
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "notification at night defers",
                at: NIGHT,
                expect: "defer:quiet_hours",
                ..Case::default()
            },
            Case {
                name: "notification at night, app refuses",
                policy: refusing_app.clone(),
                at: NIGHT,
                expect: "refuse:quiet_hours",
                ..Case::default()
            },
            Case {
                name: "at dispatch a refusing app's message defers instead of being lost",
                policy: refusing_app,
                at: NIGHT,
                stage: Stage::Dispatch,
                expect: "defer:quiet_hours",
                ..Case::default()
            },
            Case {
                name: "support to suppressed",
                purpose: Support,
                standing: suppressed.clone(),
                expect: "refuse:recipient_suppressed",
                ..Case::default()
            },
            Case {
                name: "suppression decided before quiet hours",
                purpose: Support,
                standing: suppressed.clone(),
                at: NIGHT,
                expect: "refuse:recipient_suppressed",
                ..Case::default()
            },
            Case {
                name: "otp to suppressed is exempt",
                purpose: Otp,
                standing: suppressed.clone(),
                expect: "allow_exempt",
                ..Case::default()
            },
            Case {
                name: "alert to suppressed at night",
                purpose: Alert,
                standing: suppressed.clone(),
                at: NIGHT,
                expect: "allow_exempt",
                ..Case::default()
            },
            Case {
                name: "suppression checked again at dispatch",
                standing: suppressed.clone(),
                stage: Stage::Dispatch,
                expect: "refuse:recipient_suppressed",
                ..Case::default()
            },
            Case {
                name: "marketing off by default",
                purpose: Marketing,
                standing: marketing_ok.clone(),
                expect: "refuse:purpose_not_allowed",
                ..Case::default()
            },
            Case {
                name: "marketing without consent",
                purpose: Marketing,
                policy: marketing_app.clone(),
                expect: "refuse:consent_required",
                ..Case::default()
            },
            Case {
                name: "marketing with consent",
                purpose: Marketing,
                policy: marketing_app.clone(),
                standing: marketing_ok.clone(),
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "marketing with consent at night",
                purpose: Marketing,
                policy: marketing_app.clone(),
                standing: marketing_ok,
                at: NIGHT,
                expect: "defer:quiet_hours",
                ..Case::default()
            },
            Case {
                name: "opt-out beats consent",
                purpose: Marketing,
                policy: marketing_app,
                standing: Standing {
                    suppressed: true,
                    marketing_consent: true,
                    ..Standing::default()
                },
                expect: "refuse:recipient_suppressed",
                ..Case::default()
            },
            Case {
                name: "consent required for non-essential",
                policy: consent_app.clone(),
                expect: "refuse:consent_required",
                ..Case::default()
            },
            Case {
                name: "consent required, transactional on record",
                policy: consent_app.clone(),
                standing: Standing {
                    transactional_consent: true,
                    ..Standing::default()
                },
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "consent rule spares essential",
                purpose: Transactional,
                policy: consent_app,
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "app pause refuses even otp",
                purpose: Otp,
                pause: pause(PauseScope::App, false),
                expect: "refuse:sending_paused",
                ..Case::default()
            },
            Case {
                name: "global pause refuses",
                purpose: Alert,
                pause: pause(PauseScope::Global, false),
                expect: "refuse:sending_paused",
                ..Case::default()
            },
            Case {
                name: "a pause that lets the queue drain: dispatch sends",
                pause: pause(PauseScope::Tenant, false),
                stage: Stage::Dispatch,
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "a queue-stopping pause: dispatch waits",
                pause: pause(PauseScope::Tenant, true),
                stage: Stage::Dispatch,
                expect: "defer:sending_paused",
                ..Case::default()
            },
            Case {
                name: "country allowed",
                purpose: Otp,
                policy: us_only,
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "country not allowed",
                purpose: Otp,
                policy: gb_only.clone(),
                expect: "refuse:destination_not_allowed",
                ..Case::default()
            },
            Case {
                name: "country narrowed after acceptance",
                purpose: Otp,
                policy: gb_only,
                stage: Stage::Dispatch,
                expect: "refuse:destination_not_allowed",
                ..Case::default()
            },
            Case {
                name: "3 segments with 2 units left",
                purpose: Otp,
                policy: quota_100.clone(),
                counters: two_left,
                segments: 3,
                expect: "refuse:quota_exceeded",
                ..Case::default()
            },
            Case {
                name: "2 segments with 2 units left",
                purpose: Otp,
                policy: quota_100.clone(),
                counters: two_left,
                segments: 2,
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "quota is not charged again at dispatch",
                purpose: Otp,
                policy: quota_100,
                counters: two_left,
                segments: 3,
                stage: Stage::Dispatch,
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "recipient cap reached",
                counters: Counters {
                    recipient_today: DEFAULT_RECIPIENT_DAILY_CAP,
                    ..Counters::default()
                },
                expect: "refuse:recipient_frequency_capped",
                ..Case::default()
            },
            Case {
                name: "recipient cap spares essential",
                purpose: Otp,
                counters: Counters {
                    recipient_today: 1000,
                    ..Counters::default()
                },
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "recipient cap off",
                policy: AppPolicy {
                    recipient_daily_cap: None,
                    ..AppPolicy::default()
                },
                counters: Counters {
                    recipient_today: 1000,
                    ..Counters::default()
                },
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "burst on a quiet app",
                purpose: Otp,
                counters: Counters {
                    app_this_minute: 600,
                    ..Counters::default()
                },
                expect: "hold:burst_detected",
                ..Case::default()
            },
            Case {
                name: "busy minute within the baseline",
                purpose: Otp,
                counters: Counters {
                    app_this_minute: 900,
                    app_previous_hour: 6_000,
                    ..Counters::default()
                },
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "ten times the baseline",
                purpose: Otp,
                counters: Counters {
                    app_this_minute: 1_000,
                    app_previous_hour: 6_000,
                    ..Counters::default()
                },
                expect: "hold:burst_detected",
                ..Case::default()
            },
            Case {
                name: "burst detection off",
                purpose: Otp,
                policy: AppPolicy {
                    burst: None,
                    ..AppPolicy::default()
                },
                counters: Counters {
                    app_this_minute: 100_000,
                    ..Counters::default()
                },
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "invalid-number failures hold",
                purpose: Otp,
                counters: Counters {
                    invalid_failures_this_hour: DEFAULT_HOLD_AFTER_INVALID_FAILURES,
                    ..Counters::default()
                },
                expect: "hold:invalid_number_failures",
                ..Case::default()
            },
            Case {
                name: "a refusal is decided before a hold",
                standing: suppressed,
                counters: Counters {
                    app_this_minute: 10_000,
                    ..Counters::default()
                },
                expect: "refuse:recipient_suppressed",
                ..Case::default()
            },
            Case {
                name: "holds are not made at dispatch",
                purpose: Otp,
                counters: Counters {
                    app_this_minute: 10_000,
                    ..Counters::default()
                },
                stage: Stage::Dispatch,
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "high-risk prefix within the budget",
                purpose: Otp,
                to: "+88213612345",
                counters: Counters {
                    high_risk_this_hour: 2,
                    ..Counters::default()
                },
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "high-risk prefix beyond the budget",
                purpose: Otp,
                to: "+88213612345",
                counters: Counters {
                    high_risk_this_hour: 3,
                    ..Counters::default()
                },
                expect: "refuse:destination_high_risk",
                ..Case::default()
            },
            Case {
                name: "an ordinary prefix has no budget",
                purpose: Otp,
                counters: Counters {
                    high_risk_this_hour: 1_000,
                    ..Counters::default()
                },
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "shortener refused",
                purpose: Otp,
                policy: links.clone(),
                text: "Log in at bit.ly/abc",
                expect: "refuse:link_shortener_not_allowed",
                ..Case::default()
            },
            Case {
                name: "blocked domain refused",
                purpose: Otp,
                policy: links.clone(),
                text: "see https://login.evil.example/x",
                expect: "refuse:link_not_allowed",
                ..Case::default()
            },
            Case {
                name: "other links pass",
                purpose: Otp,
                policy: links.clone(),
                text: "see https://example.com/x",
                expect: "allow",
                ..Case::default()
            },
            Case {
                name: "shorteners pass when not refused",
                purpose: Otp,
                text: "Log in at bit.ly/abc",
                expect: "allow",
                ..Case::default()
            },
        ];
        let mut failures = Vec::new();
        for c in &cases {
            let got = verdict(&run(c));
            if got != c.expect {
                failures.push(format!("{}: expected {}, got {got}", c.name, c.expect));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
    }

    #[test]
    fn deferral_is_to_the_window_start_and_reasons_never_hold_the_number() {
        let d = run(&Case {
            at: NIGHT,
            ..Case::default()
        });
        let Decision::Defer { until, reason, .. } = d else {
            panic!("{d:?}")
        };
        // 08:00 PDT on 2026-07-01 is 15:00 UTC.
        assert_eq!(until, ts("2026-07-01T15:00:00Z"));
        assert!(!reason.contains("4155550100"), "{reason}");
        // A custom window moves the deferral with it.
        let late = QuietRules::with_default(SendWindow {
            start: jiff::civil::time(10, 0, 0, 0),
            end: jiff::civil::time(18, 0, 0, 0),
        });
        let to = E164::parse(US).unwrap();
        let msg = Outgoing {
            purpose: Purpose::Notification,
            channel: Channel::Sms,
            to: &to,
            text: "hi",
            segments: 1,
            send_at: None,
        };
        let d = decide(
            &msg,
            &Inputs {
                policy: &AppPolicy::default(),
                standing: &Standing::default(),
                counters: &Counters::default(),
                pause: None,
                rules: &late,
                risk: RiskPrefixes::builtin(),
                now: ts(NIGHT),
            },
            Stage::Accept,
        );
        assert!(
            matches!(d, Decision::Defer { until, .. } if until == ts("2026-07-01T17:00:00Z")),
            "{d:?}"
        );
    }

    #[test]
    fn a_requested_send_time_inside_the_window_is_kept() {
        let to = E164::parse(US).unwrap();
        // Asked at night for 17:00 local the next day: allowed as requested.
        let msg = Outgoing {
            purpose: Purpose::Notification,
            channel: Channel::Sms,
            to: &to,
            text: "hi",
            segments: 1,
            send_at: Some(ts("2026-07-02T00:00:00Z")),
        };
        let d = decide(
            &msg,
            &Inputs {
                policy: &AppPolicy::default(),
                standing: &Standing::default(),
                counters: &Counters::default(),
                pause: None,
                rules: QuietRules::builtin(),
                risk: RiskPrefixes::builtin(),
                now: ts(NIGHT),
            },
            Stage::Accept,
        );
        assert_eq!(d, Decision::Allow { exempt: None });
    }

    #[test]
    fn the_footer_is_for_non_essential_messages_and_counts() {
        let policy = AppPolicy {
            opt_out_footer: Some(content::DEFAULT_FOOTER.to_owned()),
            ..AppPolicy::default()
        };
        assert_eq!(policy.outgoing_text(Purpose::Otp, "Code 1234"), "Code 1234");
        let text = policy.outgoing_text(Purpose::Notification, "Sale");
        assert_eq!(text, "Sale\nReply STOP to opt out");
        // 150 characters alone fit one segment; with the footer they need two.
        let body = "x".repeat(150);
        let info = crate::segment_info(&policy.outgoing_text(Purpose::Support, &body));
        assert_eq!(info.segments, 2);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn purpose() -> impl Strategy<Value = Purpose> {
            prop_oneof![
                Just(Purpose::Otp),
                Just(Purpose::Transactional),
                Just(Purpose::Alert),
                Just(Purpose::Notification),
                Just(Purpose::Support),
                Just(Purpose::Marketing),
            ]
        }

        fn number() -> impl Strategy<Value = &'static str> {
            prop_oneof![
                Just("+14155550100"),
                Just("+447911123456"),
                Just("+61412345678"),
                Just("+79161234567"),
                Just("+819012345678"),
                Just("+5511987654321"),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]

            /// Whatever the inputs: a paused app sends nothing at acceptance; an opted-out
            /// recipient never gets a non-essential message; essential messages are never
            /// deferred for quiet hours; a deferral is never in the past and lands on an
            /// instant quiet hours allow.
            #[test]
            fn invariants(
                purpose in purpose(),
                to in number(),
                suppressed: bool,
                marketing_consent: bool,
                transactional_consent: bool,
                paused: bool,
                stop_queue: bool,
                dispatch: bool,
                minutes in 0i64..(14 * 24 * 60),
                recipient_today in 0u32..50,
                this_minute in 0u32..2_000,
                previous_hour in 0u32..100_000,
                used in 0u64..200,
                segments in 1u32..6,
            ) {
                let mut policy = AppPolicy::default();
                policy.allowed_purposes.insert(Purpose::Marketing);
                policy.quotas.app_daily = Some(100);
                let to = E164::parse(to).unwrap();
                let now = ts("2026-03-01T00:00:00Z") + jiff::SignedDuration::from_mins(minutes);
                let standing = Standing { suppressed, marketing_consent, transactional_consent };
                let counters = Counters {
                    quota: QuotaUsage { app_day: used, ..QuotaUsage::default() },
                    recipient_today,
                    app_this_minute: this_minute,
                    app_previous_hour: previous_hour,
                    ..Counters::default()
                };
                let pause = paused.then(|| Pause { scope: PauseScope::App, stop_queue, reason: "x".into() });
                let stage = if dispatch { Stage::Dispatch } else { Stage::Accept };
                let msg = Outgoing { purpose, channel: Channel::Sms, to: &to, text: "hello", segments, send_at: None };
                let d = decide(&msg, &Inputs {
                    policy: &policy, standing: &standing, counters: &counters, pause: pause.as_ref(),
                    rules: QuietRules::builtin(), risk: RiskPrefixes::builtin(), now,
                }, stage);
                let sendable = matches!(d, Decision::Allow { .. } | Decision::Defer { code: PolicyCode::QuietHours, .. });
                if paused && stage == Stage::Accept {
                    prop_assert!(matches!(d, Decision::Refuse { code: PolicyCode::SendingPaused, .. }), "{:?}", d);
                }
                if suppressed && !purpose.is_essential() {
                    prop_assert!(!sendable, "{:?}", d);
                }
                if stage == Stage::Accept && used + u64::from(segments) > 100 {
                    prop_assert!(!sendable, "{:?}", d);
                }
                match &d {
                    Decision::Defer { code: PolicyCode::QuietHours, until, .. } => {
                        prop_assert!(!purpose.is_essential());
                        prop_assert!(*until > now);
                        prop_assert_eq!(quiet_hours::next_allowed(&to, *until, QuietRules::builtin()), None);
                    }
                    Decision::Allow { .. } if !purpose.is_essential() => {
                        prop_assert_eq!(quiet_hours::next_allowed(&to, now, QuietRules::builtin()), None);
                    }
                    _ => {}
                }
            }
        }
    }
}
