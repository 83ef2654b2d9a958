//! What an app is told about: the event types of webhooks and the realtime stream.

use crate::parse_error::string_enum;
use crate::status::MessageStatus;

string_enum! {
    /// The type of an event delivered to an app's webhooks and realtime subscribers.
    pub enum EventType: "event type", "invalid_event_type" {
        /// A provider accepted the message.
        MessageSent => "message.sent",
        /// The handset received the message.
        MessageDelivered => "message.delivered",
        /// The carrier gave up delivering the message.
        MessageUndelivered => "message.undelivered",
        /// The message was refused or could not be sent (including expiry).
        MessageFailed => "message.failed",
        /// A reply or other inbound message arrived.
        MessageInbound => "message.inbound",
        /// A recipient opted out (STOP and its variants).
        RecipientOptedOut => "recipient.opted_out",
        /// A recipient opted back in (START and its variants).
        RecipientOptedIn => "recipient.opted_in",
        /// The gateway disabled one of the app's webhook endpoints (410 Gone, or failing
        /// for days). Sent to the app's other endpoints and its realtime stream.
        EndpointDisabled => "webhook.endpoint_disabled",
        /// Authentication with the app's keys kept failing from many client addresses: a
        /// key may be leaked or under attack. The addresses are blocked one by one; the app
        /// itself is not.
        AuthFailures => "security.auth_failures",
    }
}

impl EventType {
    /// The event a status change produces, if any. Expiry is reported as a failure (its
    /// `data.status` says `expired`): to the app it is a message that will never arrive.
    pub const fn for_status(status: MessageStatus) -> Option<EventType> {
        match status {
            MessageStatus::Sent => Some(EventType::MessageSent),
            MessageStatus::Delivered => Some(EventType::MessageDelivered),
            MessageStatus::Undelivered => Some(EventType::MessageUndelivered),
            MessageStatus::Failed | MessageStatus::Expired => Some(EventType::MessageFailed),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_changes_map_to_events() {
        assert_eq!(
            EventType::for_status(MessageStatus::Delivered),
            Some(EventType::MessageDelivered)
        );
        assert_eq!(
            EventType::for_status(MessageStatus::Expired),
            Some(EventType::MessageFailed)
        );
        assert_eq!(EventType::for_status(MessageStatus::Queued), None);
        assert_eq!(EventType::for_status(MessageStatus::Canceled), None);
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()).unwrap(), *t);
        }
        assert!(EventType::parse("message.*").is_err());
    }
}
