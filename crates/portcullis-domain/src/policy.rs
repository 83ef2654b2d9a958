//! The responsible-messaging guard as one pure function.
//!
//! [`decide`] takes everything the decision depends on — the message, the app's policy,
//! what is on record for the recipient, and the clock — and returns a [`Decision`]. It does
//! no I/O: the store loads the inputs, and both the send path (before accepting) and the
//! send worker (just before the provider is called) apply it. Checks run in a fixed order
//! so the reason given is the most fundamental one: a paused app is reported as paused, not
//! as outside quiet hours; a suppression refusal is decided before quiet hours (API.md).

use jiff::Timestamp;

use crate::quiet_hours::{self, QuietRules};
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

/// An app's policy settings.
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
    /// Sending paused for this app, its tenant or the whole gateway.
    pub paused: bool,
}

impl Default for AppPolicy {
    fn default() -> Self {
        AppPolicy {
            allowed_purposes: PurposeSet::default_for_new_app(),
            consent_for_non_essential: false,
            quiet_hours: QuietHoursMode::Defer,
            allowed_countries: None,
            paused: false,
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

/// The message being decided on.
#[derive(Debug, Clone)]
pub struct Outgoing<'a> {
    /// Why the message is sent.
    pub purpose: Purpose,
    /// SMS or WhatsApp.
    pub channel: Channel,
    /// The recipient.
    pub to: &'a E164,
    /// When the sender wants it to go (`None`: now).
    pub send_at: Option<Timestamp>,
}

/// A refusal's machine-readable code (also the API error `code`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusalCode {
    /// Sending is paused for the app, tenant or gateway.
    SendingPaused,
    /// The app may not send this purpose.
    PurposeNotAllowed,
    /// The destination country is not allowed for the app.
    DestinationNotAllowed,
    /// The recipient opted out; only essential messages pass.
    RecipientSuppressed,
    /// The purpose needs a consent record that is not there.
    ConsentRequired,
    /// The app refuses rather than defers messages in quiet hours.
    QuietHours,
}

impl RefusalCode {
    /// The snake_case code.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalCode::SendingPaused => "sending_paused",
            RefusalCode::PurposeNotAllowed => "purpose_not_allowed",
            RefusalCode::DestinationNotAllowed => "destination_not_allowed",
            RefusalCode::RecipientSuppressed => "recipient_suppressed",
            RefusalCode::ConsentRequired => "consent_required",
            RefusalCode::QuietHours => "quiet_hours",
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
        /// When the message may go.
        until: Timestamp,
        /// Why it waits.
        reason: String,
    },
    /// Do not send.
    Refuse {
        /// The code.
        code: RefusalCode,
        /// A human explanation (never containing the number).
        reason: String,
    },
}

/// Decides whether a message may be sent now, later, or not at all.
pub fn decide(
    msg: &Outgoing<'_>,
    policy: &AppPolicy,
    standing: &Standing,
    rules: &QuietRules,
    now: Timestamp,
) -> Decision {
    let essential = msg.purpose.is_essential();
    if policy.paused {
        return refuse(
            RefusalCode::SendingPaused,
            "sending is paused for this app".to_owned(),
        );
    }
    if !policy.allowed_purposes.contains(msg.purpose) {
        return refuse(
            RefusalCode::PurposeNotAllowed,
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
                RefusalCode::DestinationNotAllowed,
                format!(
                    "destination country {} is not among the app's allowed countries",
                    region.as_deref().unwrap_or("unknown")
                ),
            );
        }
    }
    let mut exempt = None;
    if standing.suppressed {
        if !essential {
            return refuse(
                RefusalCode::RecipientSuppressed,
                "the recipient opted out; only essential messages (otp, transactional, alert) are sent".to_owned(),
            );
        }
        exempt = Some(format!(
            "recipient opted out; essential purpose {} is exempt",
            msg.purpose.as_str()
        ));
    }
    if msg.purpose == Purpose::Marketing && !standing.marketing_consent {
        return refuse(
            RefusalCode::ConsentRequired,
            "marketing messages need a marketing consent on record".to_owned(),
        );
    }
    if policy.consent_for_non_essential
        && !essential
        && !(standing.transactional_consent || standing.marketing_consent)
    {
        return refuse(
            RefusalCode::ConsentRequired,
            format!(
                "this app requires a consent on record for {} messages",
                msg.purpose.as_str()
            ),
        );
    }
    if !essential {
        let at = msg.send_at.filter(|t| *t > now).unwrap_or(now);
        if let Some(until) = quiet_hours::next_allowed(msg.to, at, rules) {
            let window = quiet_hours::describe(msg.to, rules);
            return match policy.quiet_hours {
                QuietHoursMode::Defer => Decision::Defer {
                    until,
                    reason: format!("quiet hours at the recipient (allowed {window})"),
                },
                QuietHoursMode::Refuse => refuse(
                    RefusalCode::QuietHours,
                    format!(
                        "quiet hours at the recipient (allowed {window}) and the app refuses rather than defers"
                    ),
                ),
            };
        }
    }
    Decision::Allow { exempt }
}

fn refuse(code: RefusalCode, reason: String) -> Decision {
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

    struct Case {
        name: &'static str,
        purpose: Purpose,
        policy: AppPolicy,
        standing: Standing,
        at: &'static str,
        expect: &'static str,
    }

    fn verdict(d: &Decision) -> String {
        match d {
            Decision::Allow { exempt: None } => "allow".to_owned(),
            Decision::Allow { exempt: Some(_) } => "allow_exempt".to_owned(),
            Decision::Defer { .. } => "defer".to_owned(),
            Decision::Refuse { code, .. } => format!("refuse:{}", code.as_str()),
        }
    }

    #[test]
    fn decision_table() {
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
        let paused = AppPolicy {
            paused: true,
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
        let suppressed = Standing {
            suppressed: true,
            ..Standing::default()
        };
        let marketing_ok = Standing {
            marketing_consent: true,
            ..Standing::default()
        };
        let suppressed_with_consent = Standing {
            suppressed: true,
            marketing_consent: true,
            ..Standing::default()
        };
        let none = Standing::default();
        use Purpose::*;
        let cases = [
            Case {
                name: "otp by day",
                purpose: Otp,
                policy: AppPolicy::default(),
                standing: none.clone(),
                at: DAY,
                expect: "allow",
            },
            Case {
                name: "otp at night (essential: no quiet hours)",
                purpose: Otp,
                policy: AppPolicy::default(),
                standing: none.clone(),
                at: NIGHT,
                expect: "allow",
            },
            Case {
                name: "notification by day",
                purpose: Notification,
                policy: AppPolicy::default(),
                standing: none.clone(),
                at: DAY,
                expect: "allow",
            },
            Case {
                name: "notification at night defers",
                purpose: Notification,
                policy: AppPolicy::default(),
                standing: none.clone(),
                at: NIGHT,
                expect: "defer",
            },
            Case {
                name: "notification at night, app refuses",
                purpose: Notification,
                policy: refusing_app.clone(),
                standing: none.clone(),
                at: NIGHT,
                expect: "refuse:quiet_hours",
            },
            Case {
                name: "support to suppressed",
                purpose: Support,
                policy: AppPolicy::default(),
                standing: suppressed.clone(),
                at: DAY,
                expect: "refuse:recipient_suppressed",
            },
            Case {
                name: "suppression decided before quiet hours",
                purpose: Support,
                policy: AppPolicy::default(),
                standing: suppressed.clone(),
                at: NIGHT,
                expect: "refuse:recipient_suppressed",
            },
            Case {
                name: "otp to suppressed is exempt",
                purpose: Otp,
                policy: AppPolicy::default(),
                standing: suppressed.clone(),
                at: DAY,
                expect: "allow_exempt",
            },
            Case {
                name: "alert to suppressed at night",
                purpose: Alert,
                policy: AppPolicy::default(),
                standing: suppressed.clone(),
                at: NIGHT,
                expect: "allow_exempt",
            },
            Case {
                name: "marketing off by default",
                purpose: Marketing,
                policy: AppPolicy::default(),
                standing: marketing_ok.clone(),
                at: DAY,
                expect: "refuse:purpose_not_allowed",
            },
            Case {
                name: "marketing without consent",
                purpose: Marketing,
                policy: marketing_app.clone(),
                standing: none.clone(),
                at: DAY,
                expect: "refuse:consent_required",
            },
            Case {
                name: "marketing with consent",
                purpose: Marketing,
                policy: marketing_app.clone(),
                standing: marketing_ok.clone(),
                at: DAY,
                expect: "allow",
            },
            Case {
                name: "marketing with consent at night",
                purpose: Marketing,
                policy: marketing_app.clone(),
                standing: marketing_ok.clone(),
                at: NIGHT,
                expect: "defer",
            },
            Case {
                name: "opt-out beats consent",
                purpose: Marketing,
                policy: marketing_app.clone(),
                standing: suppressed_with_consent,
                at: DAY,
                expect: "refuse:recipient_suppressed",
            },
            Case {
                name: "consent required for non-essential",
                purpose: Notification,
                policy: consent_app.clone(),
                standing: none.clone(),
                at: DAY,
                expect: "refuse:consent_required",
            },
            Case {
                name: "consent required, transactional on record",
                purpose: Notification,
                policy: consent_app.clone(),
                standing: Standing {
                    transactional_consent: true,
                    ..Standing::default()
                },
                at: DAY,
                expect: "allow",
            },
            Case {
                name: "consent rule spares essential",
                purpose: Transactional,
                policy: consent_app,
                standing: none.clone(),
                at: DAY,
                expect: "allow",
            },
            Case {
                name: "paused refuses even otp",
                purpose: Otp,
                policy: paused,
                standing: none.clone(),
                at: DAY,
                expect: "refuse:sending_paused",
            },
            Case {
                name: "country allowed",
                purpose: Otp,
                policy: us_only,
                standing: none.clone(),
                at: DAY,
                expect: "allow",
            },
            Case {
                name: "country not allowed",
                purpose: Otp,
                policy: gb_only,
                standing: none,
                at: DAY,
                expect: "refuse:destination_not_allowed",
            },
        ];
        let to = E164::parse("+14155550100").unwrap();
        let rules = QuietRules::builtin();
        for c in cases {
            let msg = Outgoing {
                purpose: c.purpose,
                channel: Channel::Sms,
                to: &to,
                send_at: None,
            };
            let d = decide(&msg, &c.policy, &c.standing, rules, ts(c.at));
            assert_eq!(verdict(&d), c.expect, "{}", c.name);
        }
    }

    #[test]
    fn deferral_is_to_the_window_start_and_reasons_never_hold_the_number() {
        let to = E164::parse("+14155550100").unwrap();
        let msg = Outgoing {
            purpose: Purpose::Notification,
            channel: Channel::Sms,
            to: &to,
            send_at: None,
        };
        let d = decide(
            &msg,
            &AppPolicy::default(),
            &Standing::default(),
            QuietRules::builtin(),
            ts(NIGHT),
        );
        let Decision::Defer { until, reason } = d else {
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
        let d = decide(
            &msg,
            &AppPolicy::default(),
            &Standing::default(),
            &late,
            ts(NIGHT),
        );
        assert!(
            matches!(d, Decision::Defer { until, .. } if until == ts("2026-07-01T17:00:00Z")),
            "{d:?}"
        );
    }

    #[test]
    fn a_requested_send_time_inside_the_window_is_kept() {
        let to = E164::parse("+14155550100").unwrap();
        // Asked at night for 17:00 local the next day: allowed as requested.
        let msg = Outgoing {
            purpose: Purpose::Notification,
            channel: Channel::Sms,
            to: &to,
            send_at: Some(ts("2026-07-02T00:00:00Z")),
        };
        let d = decide(
            &msg,
            &AppPolicy::default(),
            &Standing::default(),
            QuietRules::builtin(),
            ts(NIGHT),
        );
        assert_eq!(d, Decision::Allow { exempt: None });
    }
}
