//! What the receiver records per request, and the compact form its control port hands out.
//!
//! A 1,000,000-event run yields a million records, so they travel as fixed 24-byte records (delivery
//! id, arrival time) rather than JSON.

use serde::{Deserialize, Serialize};

/// Bytes per record on the wire: 16 (delivery id) + 8 (arrival, ns since the Unix epoch).
pub const RECORD_LEN: usize = 24;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// `X-FeedbackPulse-Delivery` as a number; 0 when absent or not a UUID.
    pub delivery_id: u128,
    pub arrived_at_ns: u64,
}

impl Arrival {
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.delivery_id.to_le_bytes());
        out.extend_from_slice(&self.arrived_at_ns.to_le_bytes());
    }
}

#[derive(Debug, thiserror::Error)]
#[error("arrival records are {RECORD_LEN} bytes each; got {0} bytes")]
pub struct RecordLength(pub usize);

pub fn decode(bytes: &[u8]) -> Result<Vec<Arrival>, RecordLength> {
    if !bytes.len().is_multiple_of(RECORD_LEN) {
        return Err(RecordLength(bytes.len()));
    }
    Ok(bytes
        .chunks_exact(RECORD_LEN)
        .map(|record| {
            let (id, at) = record.split_at(16);
            let mut id_bytes = [0u8; 16];
            id_bytes.copy_from_slice(id);
            let mut at_bytes = [0u8; 8];
            at_bytes.copy_from_slice(at);
            Arrival {
                delivery_id: u128::from_le_bytes(id_bytes),
                arrived_at_ns: u64::from_le_bytes(at_bytes),
            }
        })
        .collect())
}

/// `GET /stats` of the receiver's control port.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ReceiverStats {
    /// Requests answered since start or the last reset.
    pub requests: u64,
    /// Requests without a readable `X-FeedbackPulse-Delivery`.
    pub without_delivery_id: u64,
    /// TCP connections accepted.
    pub connections: u64,
    /// Body bytes of every request answered (for the mean body size).
    pub body_bytes: u64,
    /// Whether the receiver is refusing connections (`POST /down`).
    pub down: bool,
}

/// The first line the receiver prints on stdout, once both ports listen.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReceiverAddresses {
    pub https: std::net::SocketAddr,
    pub control: std::net::SocketAddr,
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_ns() -> u64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip() {
        let arrivals = [
            Arrival {
                delivery_id: 0x0123_4567_89ab_cdef_0011_2233_4455_6677,
                arrived_at_ns: 1_700_000_000_123_456_789,
            },
            Arrival {
                delivery_id: 0,
                arrived_at_ns: 1,
            },
        ];
        let mut bytes = Vec::new();
        for arrival in &arrivals {
            arrival.write_to(&mut bytes);
        }
        assert_eq!(bytes.len(), 2 * RECORD_LEN);
        assert_eq!(decode(&bytes).expect("whole records"), arrivals);
        assert!(decode(&bytes[1..]).is_err());
    }
}
