//! One 188-byte transport stream packet: header, adaptation field, payload (ISO 13818-1 §2.4.3).

/// Size of a transport stream packet.
pub const PACKET_SIZE: usize = 188;
/// The sync byte every packet starts with.
pub const SYNC_BYTE: u8 = 0x47;
/// The null packet PID (stuffing).
pub const NULL_PID: u16 = 0x1fff;

/// The fields of a packet the demuxer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Packet<'a> {
    /// Packet identifier (13 bits).
    pub pid: u16,
    /// `payload_unit_start_indicator`: a PES packet or a PSI section starts in this payload.
    pub unit_start: bool,
    /// `transport_error_indicator`: the sender knows the packet is damaged.
    pub transport_error: bool,
    /// `continuity_counter` (4 bits), meaningful when the packet has a payload.
    pub continuity: u8,
    /// The adaptation field's `discontinuity_indicator`.
    pub discontinuity: bool,
    /// The payload bytes (empty when the packet carries none).
    pub payload: &'a [u8],
    /// Whether the adaptation field control says a payload is present.
    pub has_payload: bool,
}

/// Why a packet could not be parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketError {
    /// The first byte is not 0x47.
    NoSync,
    /// The adaptation field length points past the end of the packet.
    BadAdaptationField,
}

/// Parses one packet; `bytes` must be exactly [`PACKET_SIZE`] long (shorter input is rejected).
pub fn parse(bytes: &[u8]) -> Result<Packet<'_>, PacketError> {
    let Some(&[sync, b1, b2, b3]) = bytes.first_chunk::<4>() else {
        return Err(PacketError::NoSync);
    };
    if sync != SYNC_BYTE || bytes.len() != PACKET_SIZE {
        return Err(PacketError::NoSync);
    }
    let pid = (u16::from(b1 & 0x1f) << 8) | u16::from(b2);
    let control = (b3 >> 4) & 0x3;
    let has_adaptation = control & 0x2 != 0;
    let has_payload = control & 0x1 != 0;
    let mut offset = 4;
    let mut discontinuity = false;
    if has_adaptation {
        let len = usize::from(*bytes.get(4).ok_or(PacketError::BadAdaptationField)?);
        if 5 + len > PACKET_SIZE {
            return Err(PacketError::BadAdaptationField);
        }
        if len > 0 {
            discontinuity = bytes.get(5).is_some_and(|flags| flags & 0x80 != 0);
        }
        offset = 5 + len;
    }
    let payload = if has_payload {
        bytes.get(offset..).unwrap_or_default()
    } else {
        &[]
    };
    Ok(Packet {
        pid,
        unit_start: b1 & 0x40 != 0,
        transport_error: b1 & 0x80 != 0,
        continuity: b3 & 0x0f,
        discontinuity,
        payload,
        has_payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_adaptation_and_payload() {
        let mut p = [0xffu8; PACKET_SIZE];
        p[..4].copy_from_slice(&[0x47, 0x41, 0x00, 0x37]);
        p[4] = 7; // adaptation field length
        p[5] = 0x80; // discontinuity
        let packet = parse(&p).expect("valid");
        assert_eq!(packet.pid, 0x100);
        assert!(packet.unit_start);
        assert!(packet.discontinuity);
        assert_eq!(packet.continuity, 7);
        assert_eq!(packet.payload.len(), PACKET_SIZE - 12);
    }

    #[test]
    fn rejects_bad_sync_and_oversized_adaptation() {
        let mut p = [0u8; PACKET_SIZE];
        assert_eq!(parse(&p), Err(PacketError::NoSync));
        p[..5].copy_from_slice(&[0x47, 0x01, 0x00, 0x30, 200]);
        assert_eq!(parse(&p), Err(PacketError::BadAdaptationField));
        assert_eq!(parse(&p[..100]), Err(PacketError::NoSync));
    }
}
