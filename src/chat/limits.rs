//! Chat limits: display names, message text, the per-connection rate limit and the admission
//! of a connection (per node, per room, per client address).

use crate::config::ChatConfig;
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// A validated display name: 1-32 letters, digits, spaces, `_`, `-` or `.`, not starting or
/// ending with a space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Why a display name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty or longer than [`MAX_NAME_CHARS`].
    #[error("display name must be 1-{MAX_NAME_CHARS} characters")]
    Length,
    /// A character outside letters, digits, space, `_`, `-`, `.`, or a space at either end.
    #[error("display name may only contain letters, digits, spaces, '_', '-' and '.' (no space at either end)")]
    Charset,
}

impl DisplayName {
    /// Validates a display name.
    pub fn parse(raw: &str) -> Result<Self, NameError> {
        let chars = raw.chars().count();
        if chars == 0 || chars > MAX_NAME_CHARS {
            return Err(NameError::Length);
        }
        let allowed = |c: char| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-' | '.');
        if !raw.chars().all(allowed) || raw.starts_with(' ') || raw.ends_with(' ') {
            return Err(NameError::Charset);
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The form bans are compared in (lowercase).
    pub fn ban_key(&self) -> String {
        self.0.to_lowercase()
    }
}

/// Why a message text was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextError {
    /// Nothing but whitespace.
    Empty,
    /// Longer than `chat.max_message_chars`.
    TooLong(usize),
    /// Contains control characters (other than a newline).
    Control,
}

/// Checks a message text; returns it trimmed.
pub fn check_text(text: &str, max_chars: usize) -> Result<&str, TextError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(TextError::Empty);
    }
    if text.chars().count() > max_chars {
        return Err(TextError::TooLong(max_chars));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(TextError::Control);
    }
    Ok(text)
}

/// The token bucket of one connection.
pub fn rate_limiter(config: &ChatConfig) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(config.rate_limit).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(config.rate_burst).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `chat.max_connections` reached.
    NodeFull,
    /// `chat.max_room_connections` reached.
    RoomFull,
    /// `chat.max_connections_per_address` reached.
    AddressFull,
    /// The display name is banned in this room.
    Banned,
}

impl Refusal {
    /// The `error` frame's code.
    pub fn code(self) -> &'static str {
        match self {
            Self::NodeFull => "node_full",
            Self::RoomFull => "room_full",
            Self::AddressFull => "address_full",
            Self::Banned => "banned",
        }
    }

    /// The error frame's message.
    pub fn message(self) -> &'static str {
        match self {
            Self::NodeFull => "this server has too many chat connections; try again later",
            Self::RoomFull => "this chat room is full; try again later",
            Self::AddressFull => "too many chat connections from your address",
            Self::Banned => "this display name is banned from this chat",
        }
    }

    /// The WebSocket close code: 1013 (try again later) for capacity, 1008 (policy) otherwise.
    pub fn close_code(self) -> u16 {
        match self {
            Self::NodeFull | Self::RoomFull => 1013,
            Self::AddressFull | Self::Banned => 1008,
        }
    }
}

/// Connection counts of the node and per client address.
#[derive(Debug, Default)]
pub struct Admission {
    node: AtomicUsize,
    addresses: Mutex<HashMap<IpAddr, usize>>,
}

/// A slot held by one connection (node and address); dropping it frees the slot.
#[derive(Debug)]
pub struct Slot {
    admission: Arc<Admission>,
    address: IpAddr,
}

impl Admission {
    /// Takes a node and an address slot, or says which limit is reached.
    pub fn admit(self: &Arc<Self>, address: IpAddr, config: &ChatConfig) -> Result<Slot, Refusal> {
        let mut addresses = self
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let count = addresses.entry(address).or_insert(0);
        if *count >= config.max_connections_per_address {
            if *count == 0 {
                addresses.remove(&address);
            }
            return Err(Refusal::AddressFull);
        }
        let taken = self
            .node
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < config.max_connections).then_some(n + 1)
            });
        if taken.is_err() {
            if *count == 0 {
                addresses.remove(&address);
            }
            return Err(Refusal::NodeFull);
        }
        *count += 1;
        Ok(Slot {
            admission: self.clone(),
            address,
        })
    }

    /// Chat connections on this node.
    pub fn connections(&self) -> usize {
        self.node.load(Ordering::Acquire)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.node.fetch_sub(1, Ordering::AcqRel);
        let mut addresses = self
            .admission
            .addresses
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = addresses.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                addresses.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_for_length_and_charset() {
        assert!(DisplayName::parse("alice").is_ok());
        assert!(DisplayName::parse("Zoë 2.0_-x").is_ok());
        assert_eq!(DisplayName::parse(""), Err(NameError::Length));
        assert_eq!(DisplayName::parse(&"a".repeat(33)), Err(NameError::Length));
        assert_eq!(DisplayName::parse("a<b"), Err(NameError::Charset));
        assert_eq!(DisplayName::parse(" a"), Err(NameError::Charset));
        assert_eq!(DisplayName::parse("a\u{0}"), Err(NameError::Charset));
    }

    #[test]
    fn texts_are_trimmed_and_bounded() {
        assert_eq!(check_text("  hi \n", 500), Ok("hi"));
        assert_eq!(check_text("   ", 500), Err(TextError::Empty));
        assert_eq!(
            check_text(&"é".repeat(501), 500),
            Err(TextError::TooLong(500))
        );
        assert!(check_text(&"é".repeat(500), 500).is_ok());
        assert_eq!(check_text("a\u{7}b", 500), Err(TextError::Control));
    }

    #[test]
    fn admission_counts_node_and_address_slots() {
        let config = ChatConfig {
            max_connections: 3,
            max_connections_per_address: 2,
            ..ChatConfig::default()
        };
        let admission = Arc::new(Admission::default());
        let a: IpAddr = "10.0.0.1".parse().expect("ip");
        let b: IpAddr = "10.0.0.2".parse().expect("ip");
        let a1 = admission.admit(a, &config).expect("a1");
        let _a2 = admission.admit(a, &config).expect("a2");
        assert_eq!(
            admission.admit(a, &config).err(),
            Some(Refusal::AddressFull)
        );
        let _b1 = admission.admit(b, &config).expect("b1");
        assert_eq!(admission.admit(b, &config).err(), Some(Refusal::NodeFull));
        drop(a1);
        assert_eq!(admission.connections(), 2);
        assert!(admission.admit(b, &config).is_ok());
    }
}
