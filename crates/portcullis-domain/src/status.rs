//! Message lifecycle and channels.
//!
//! The transition table is the single authority on which status changes are legal. Provider
//! callbacks arrive late, twice and out of order; the store applies a callback only when
//! [`MessageStatus::can_transition_to`] allows it, so a stale `sent` can never overwrite a
//! `delivered`, and nothing leaves a terminal state.

use crate::parse_error::string_enum;

string_enum! {
    /// Where an outbound message is in its life.
    pub enum MessageStatus: "status", "invalid_status" {
        /// Stored, waiting for a worker.
        Queued => "queued",
        /// Waiting for `send_at` or the end of the recipient's quiet hours.
        Scheduled => "scheduled",
        /// Awaiting review (e.g. a fraud signal).
        Held => "held",
        /// Handed to a worker, being submitted to a provider.
        Sending => "sending",
        /// Accepted by the provider.
        Sent => "sent",
        /// The handset received it. Terminal.
        Delivered => "delivered",
        /// The carrier gave up delivering it. Terminal.
        Undelivered => "undelivered",
        /// Refused or could not be submitted. Terminal.
        Failed => "failed",
        /// Its validity ran out before delivery. Terminal.
        Expired => "expired",
        /// Canceled by the app before sending. Terminal.
        Canceled => "canceled",
    }
}

impl MessageStatus {
    /// Whether nothing can happen to the message any more.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            MessageStatus::Delivered
                | MessageStatus::Undelivered
                | MessageStatus::Failed
                | MessageStatus::Expired
                | MessageStatus::Canceled
        )
    }

    /// Whether the app may still cancel the message (`POST /v1/messages/{id}/cancel`).
    pub const fn is_cancelable(self) -> bool {
        matches!(
            self,
            MessageStatus::Queued | MessageStatus::Scheduled | MessageStatus::Held
        )
    }

    /// Whether a message in `self` may move to `next`. A status never moves to itself: a
    /// repeated callback is a duplicate, not a transition.
    pub const fn can_transition_to(self, next: MessageStatus) -> bool {
        use MessageStatus::*;
        match self {
            Queued => matches!(
                next,
                Sending | Canceled | Held | Scheduled | Failed | Expired
            ),
            Scheduled => matches!(next, Queued | Sending | Canceled | Expired | Failed),
            Held => matches!(next, Queued | Canceled | Failed),
            // Back to queued: a retryable provider failure sends the message round again.
            // Straight to a final state: some providers answer the submission with it.
            // Back to scheduled: the worker's last check found quiet hours at the recipient.
            Sending => matches!(
                next,
                Sent | Queued | Scheduled | Failed | Undelivered | Delivered
            ),
            Sent => matches!(next, Delivered | Undelivered | Failed | Expired),
            Delivered | Undelivered | Failed | Expired | Canceled => false,
        }
    }
}

/// What one entry of a message's history records: a step of its lifecycle, or that the
/// recipient read it. A read is not a status (a read message stays `delivered`, and
/// providers that report reads report them out of order), but it implies delivery: a `read`
/// that arrives first moves a `sent` message to `delivered`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Milestone {
    /// A step of the lifecycle.
    Status(MessageStatus),
    /// The recipient opened it (WhatsApp's `read` status).
    Read,
}

impl Milestone {
    /// The wire spelling: the status's own, or `read`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Milestone::Status(s) => s.as_str(),
            Milestone::Read => "read",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Result<Self, crate::ParseEnumError> {
        match s {
            "read" => Ok(Milestone::Read),
            other => MessageStatus::parse(other).map(Milestone::Status),
        }
    }

    /// The status a message has at least reached when this is reported.
    pub const fn status(self) -> MessageStatus {
        match self {
            Milestone::Status(s) => s,
            Milestone::Read => MessageStatus::Delivered,
        }
    }
}

impl From<MessageStatus> for Milestone {
    fn from(s: MessageStatus) -> Self {
        Milestone::Status(s)
    }
}

impl serde::Serialize for Milestone {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

string_enum! {
    /// The network a message travels on.
    pub enum Channel: "channel", "invalid_channel" {
        /// SMS, through SMPP or an HTTP provider.
        Sms => "sms",
        /// WhatsApp, through the Cloud API.
        Whatsapp => "whatsapp",
    }
}

#[cfg(test)]
mod tests {
    use super::MessageStatus::*;
    use super::*;

    #[test]
    fn a_read_is_a_milestone_that_implies_delivery() {
        assert_eq!(Milestone::parse("read"), Ok(Milestone::Read));
        assert_eq!(Milestone::parse("sent"), Ok(Milestone::Status(Sent)));
        assert!(Milestone::parse("opened").is_err());
        assert_eq!(Milestone::Read.status(), Delivered);
        assert_eq!(Milestone::from(Failed).as_str(), "failed");
        assert!(Sent.can_transition_to(Milestone::Read.status()));
        assert!(!Delivered.can_transition_to(Milestone::Read.status()));
    }

    #[test]
    fn names_round_trip() {
        let names = [
            "queued",
            "scheduled",
            "held",
            "sending",
            "sent",
            "delivered",
            "undelivered",
            "failed",
            "expired",
            "canceled",
        ];
        assert_eq!(MessageStatus::ALL.len(), names.len());
        for (s, name) in MessageStatus::ALL.iter().zip(names) {
            assert_eq!(s.as_str(), name);
            assert_eq!(MessageStatus::parse(name), Ok(*s));
            assert_eq!(
                serde_json::to_string(s).expect("ser"),
                format!("\"{name}\"")
            );
            assert_eq!(
                serde_json::from_str::<MessageStatus>(&format!("\"{name}\"")).expect("de"),
                *s
            );
        }
        let err = MessageStatus::parse("cancelled").expect_err("British spelling");
        assert_eq!(err.code(), "invalid_status");
    }

    #[test]
    fn terminal_and_cancelable() {
        let terminal = [Delivered, Undelivered, Failed, Expired, Canceled];
        let cancelable = [Queued, Scheduled, Held];
        for s in MessageStatus::ALL {
            assert_eq!(s.is_terminal(), terminal.contains(s), "{s}");
            assert_eq!(s.is_cancelable(), cancelable.contains(s), "{s}");
        }
    }

    #[test]
    fn full_transition_matrix() {
        let allowed: &[(MessageStatus, &[MessageStatus])] = &[
            (
                Queued,
                &[Sending, Canceled, Held, Scheduled, Failed, Expired],
            ),
            (Scheduled, &[Queued, Sending, Canceled, Expired, Failed]),
            (Held, &[Queued, Canceled, Failed]),
            (
                Sending,
                &[Sent, Queued, Scheduled, Failed, Undelivered, Delivered],
            ),
            (Sent, &[Delivered, Undelivered, Failed, Expired]),
            (Delivered, &[]),
            (Undelivered, &[]),
            (Failed, &[]),
            (Expired, &[]),
            (Canceled, &[]),
        ];
        assert_eq!(allowed.len(), MessageStatus::ALL.len());
        for (from, targets) in allowed {
            for to in MessageStatus::ALL {
                assert_eq!(
                    from.can_transition_to(*to),
                    targets.contains(to),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn terminal_states_have_no_exit_and_nothing_loops() {
        for from in MessageStatus::ALL {
            assert!(!from.can_transition_to(*from), "{from} -> itself");
            if from.is_terminal() {
                assert!(
                    MessageStatus::ALL
                        .iter()
                        .all(|to| !from.can_transition_to(*to))
                );
            }
        }
        // Only the retry path leads back before `sending`.
        assert!(!Sent.can_transition_to(Sending));
        assert!(!Sent.can_transition_to(Queued));
        assert!(!Held.can_transition_to(Sending));
    }

    #[test]
    fn channels() {
        for (c, name) in [(Channel::Sms, "sms"), (Channel::Whatsapp, "whatsapp")] {
            assert_eq!(c.as_str(), name);
            assert_eq!(Channel::parse(name), Ok(c));
            assert_eq!(
                serde_json::to_string(&c).expect("ser"),
                format!("\"{name}\"")
            );
        }
        assert_eq!(
            Channel::parse("WhatsApp").expect_err("case").code(),
            "invalid_channel"
        );
    }
}
