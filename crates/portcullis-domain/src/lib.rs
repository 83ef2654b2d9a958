//! The Portcullis domain model, pure: typed prefixed ids, E.164 phone numbers, sender ids,
//! message bodies, SMS encoding and segmenting, purposes, message statuses and roles.
//!
//! Everything here validates untrusted input once, at the edge, and hands the rest of the
//! system types that cannot hold an invalid value. The crate does no I/O; the only ambient
//! state it reads is the system clock and the thread RNG, and only when a new id is minted.
//!
//! Personal data is guarded by construction: [`E164`] prints and serializes masked, and
//! [`MessageBody`] prints redacted and does not serialize at all, so a stray `{:?}` or a
//! struct dumped into a log line cannot leak a phone number or a message text.

#![warn(missing_docs)]

pub mod allowlist;
pub mod body;
pub mod content;
pub mod encoding;
pub mod event;
pub mod ids;
pub mod optout;
mod parse_error;
pub mod phone;
pub mod policy;
pub mod purpose;
pub mod quiet_hours;
pub mod quota;
pub mod risk;
pub mod role;
pub mod route;
pub mod sender;
pub mod status;
pub mod template;
pub mod tz;

pub use allowlist::{AllowlistError, IpAllowlist};
pub use body::{BodyError, DEFAULT_MAX_BODY_CHARS, MessageBody};
pub use encoding::{Encoding, SegmentInfo, gsm7_decode, gsm7_encode, segment_info, split_segments};
pub use event::EventType;
pub use ids::*;
pub use optout::{Intent, Keywords, classify};
pub use parse_error::ParseEnumError;
pub use phone::{E164, PhoneError, mask_phone};
pub use purpose::{Purpose, PurposeSet};
pub use role::Role;
pub use sender::{SenderError, SenderId};
pub use status::{Channel, MessageStatus, Milestone};
