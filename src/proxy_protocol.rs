//! The PROXY protocol, version 2 (HAProxy's "proxy-protocol.txt", §2.2), sans I/O.
//!
//! A load balancer in TCP mode opens its own connection to sealpost, so sealpost's
//! peer is the balancer. With `send-proxy-v2` the balancer first writes a binary header
//! naming the client's address; sealpost reads it before anything else (before the
//! TLS ClientHello on an implicit-TLS listener) and takes the client's address from it.
//!
//! Only what a TCP load balancer sends is accepted: command PROXY over TCP/IPv4 or
//! TCP/IPv6, or command LOCAL (the balancer's own health checks, which keep the real
//! peer). A PROXY command for any other family (UNSPEC, UDP, UNIX) is refused: the
//! specification would have the receiver fall back to the real peer, and behind a
//! balancer on loopback that would make a remote client look local. TLVs are skipped,
//! but each must fit in the announced length.
//!
//! [`sniff`] recognises a header (v2, or a v1 `PROXY ` line) at the start of a stream
//! whose listener does not expect one, so that it is refused instead of read as client
//! data.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The 12 bytes every v2 header starts with.
pub const SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The start of a version 1 (text) header.
const V1_PREFIX: &[u8] = b"PROXY ";

/// Signature, version/command, family/transport and the 2-byte length.
pub const FIXED_LEN: usize = 16;

/// Largest header accepted, fixed part included: addresses (at most 216 bytes, for
/// UNIX sockets) and TLVs. What HAProxy sends (addresses, and a few TLVs when asked)
/// is far below it.
pub const MAX_HEADER_LEN: usize = 1536;

/// Why a header was refused. Each says which byte was wrong and how.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    #[error("the connection does not start with the PROXY protocol v2 signature")]
    Signature,
    #[error("PROXY protocol version {version} (only version 2 is accepted)")]
    Version { version: u8 },
    #[error("unknown PROXY protocol command {command:#x}")]
    Command { command: u8 },
    #[error(
        "PROXY command for address family/transport {family:#04x}; only TCP over IPv4 (0x11) or IPv6 (0x21) is accepted"
    )]
    Family { family: u8 },
    #[error("header of {len} bytes is over the limit of {MAX_HEADER_LEN}")]
    TooLong { len: usize },
    #[error("address block of {len} bytes is too short for family {family:#04x} (needs {need})")]
    AddressTooShort { family: u8, len: usize, need: usize },
    #[error("a TLV at offset {at} runs past the end of the header")]
    Tlv { at: usize },
}

/// What a complete, valid header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Header {
    /// A connection relayed for a client: its source and the address it connected to.
    Proxy {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// A connection made by the balancer itself (health check): keep the real peer.
    Local,
}

/// The result of [`parse`] on the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// Valid so far; the header is `total` bytes long when known, else at least
    /// [`FIXED_LEN`]. Read up to `total` bytes, never more (what follows is the client's).
    Incomplete { total: usize },
    /// The header and its length in bytes.
    Complete { header: Header, len: usize },
}

/// Parses a v2 header at the start of `buf`. Errors are reported as early as the
/// bytes allow (a wrong signature at its first wrong byte).
pub fn parse(buf: &[u8]) -> Result<Parsed, HeaderError> {
    let sig = buf.len().min(SIGNATURE.len());
    if buf[..sig] != SIGNATURE[..sig] {
        return Err(HeaderError::Signature);
    }
    if let Some(&vc) = buf.get(12) {
        let version = vc >> 4;
        if version != 2 {
            return Err(HeaderError::Version { version });
        }
        if vc & 0x0f > 1 {
            return Err(HeaderError::Command { command: vc & 0x0f });
        }
    }
    if buf.len() < FIXED_LEN {
        return Ok(Parsed::Incomplete { total: FIXED_LEN });
    }
    let local = buf[12] & 0x0f == 0;
    let family = buf[13];
    let len = usize::from(u16::from_be_bytes([buf[14], buf[15]]));
    let total = FIXED_LEN + len;
    if total > MAX_HEADER_LEN {
        return Err(HeaderError::TooLong { len: total });
    }
    let need = match family {
        0x11 => 12,
        0x21 => 36,
        // LOCAL: the block is skipped whatever it is.
        _ if local => 0,
        _ => return Err(HeaderError::Family { family }),
    };
    if len < need {
        return Err(HeaderError::AddressTooShort { family, len, need });
    }
    if buf.len() < total {
        return Ok(Parsed::Incomplete { total });
    }
    let block = &buf[FIXED_LEN..total];
    if !local {
        check_tlvs(&block[need..], FIXED_LEN + need)?;
    }
    let header = if local {
        Header::Local
    } else {
        let (source, destination) = addresses(family, block);
        Header::Proxy {
            source,
            destination,
        }
    };
    Ok(Parsed::Complete { header, len: total })
}

/// Source and destination of an address block already checked to be long enough.
fn addresses(family: u8, b: &[u8]) -> (SocketAddr, SocketAddr) {
    let port = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    if family == 0x11 {
        let ip = |at: usize| IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]));
        (
            SocketAddr::new(ip(0), port(8)),
            SocketAddr::new(ip(4), port(10)),
        )
    } else {
        let ip = |at: usize| {
            let mut o = [0u8; 16];
            o.copy_from_slice(&b[at..at + 16]);
            IpAddr::V6(Ipv6Addr::from(o))
        };
        (
            SocketAddr::new(ip(0), port(32)),
            SocketAddr::new(ip(16), port(34)),
        )
    }
}

/// Each TLV (type, 2-byte length, value) must end within the block; `base` is the
/// block's offset in the header, for the error.
fn check_tlvs(mut tlvs: &[u8], base: usize) -> Result<(), HeaderError> {
    let mut at = base;
    while !tlvs.is_empty() {
        if tlvs.len() < 3 {
            return Err(HeaderError::Tlv { at });
        }
        let len = 3 + usize::from(u16::from_be_bytes([tlvs[1], tlvs[2]]));
        if len > tlvs.len() {
            return Err(HeaderError::Tlv { at });
        }
        tlvs = &tlvs[len..];
        at += len;
    }
    Ok(())
}

/// What the first bytes of a stream are, for a listener that expects no header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sniff {
    /// A PROXY protocol header (v2 signature or v1 `PROXY ` line): refuse.
    Header,
    /// Anything else: the client's own data.
    NotHeader,
    /// A prefix of a header so far; more bytes decide.
    NeedMore,
}

/// Whether `start`, the first bytes of a stream, begins a PROXY protocol header.
pub fn sniff(start: &[u8]) -> Sniff {
    let mut any_prefix = false;
    for sig in [&SIGNATURE[..], V1_PREFIX] {
        let n = start.len().min(sig.len());
        if start[..n] == sig[..n] {
            if n == sig.len() {
                return Sniff::Header;
            }
            any_prefix = true;
        }
    }
    if any_prefix {
        Sniff::NeedMore
    } else {
        Sniff::NotHeader
    }
}

/// The longest prefix [`sniff`] may need.
pub const SNIFF_LEN: usize = SIGNATURE.len();

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(command: u8, tlvs: &[u8]) -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(0x11);
        h.extend_from_slice(&((12 + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(&[192, 0, 2, 7, 127, 0, 0, 1]);
        h.extend_from_slice(&40000u16.to_be_bytes());
        h.extend_from_slice(&587u16.to_be_bytes());
        h.extend_from_slice(tlvs);
        h
    }

    fn v6() -> Vec<u8> {
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[0x21, 0x21, 0, 36]);
        let src: Ipv6Addr = "2001:db8::5".parse().unwrap();
        let dst: Ipv6Addr = "::1".parse().unwrap();
        h.extend_from_slice(&src.octets());
        h.extend_from_slice(&dst.octets());
        h.extend_from_slice(&[0x9c, 0x40, 0x00, 0x8f]);
        h
    }

    #[test]
    fn ipv4_with_tlvs_and_what_follows_is_left_alone() {
        // An ALPN TLV and a NOOP padding TLV, then the client's own bytes.
        let tlvs = [0x01, 0, 2, b'h', b'2', 0x04, 0, 3, 0, 0, 0];
        let mut bytes = v4(1, &tlvs);
        let len = bytes.len();
        bytes.extend_from_slice(b"EHLO client\r\n");
        assert_eq!(
            parse(&bytes),
            Ok(Parsed::Complete {
                header: Header::Proxy {
                    source: "192.0.2.7:40000".parse().unwrap(),
                    destination: "127.0.0.1:587".parse().unwrap(),
                },
                len,
            })
        );
    }

    #[test]
    fn ipv6() {
        let h = v6();
        assert_eq!(
            parse(&h),
            Ok(Parsed::Complete {
                header: Header::Proxy {
                    source: "[2001:db8::5]:40000".parse().unwrap(),
                    destination: "[::1]:143".parse().unwrap(),
                },
                len: 52,
            })
        );
    }

    #[test]
    fn local_keeps_the_real_peer_whatever_the_family() {
        let mut h = SIGNATURE.to_vec();
        h.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Complete {
                header: Header::Local,
                len: 16
            })
        );
        let h = v4(0, &[]);
        assert_eq!(
            parse(&h),
            Ok(Parsed::Complete {
                header: Header::Local,
                len: 28
            })
        );
    }

    #[test]
    fn truncated_at_every_byte_asks_for_exactly_the_rest() {
        for whole in [v4(1, &[0x04, 0, 1, 0]), v6(), v4(0, &[])] {
            for cut in 0..whole.len() {
                match parse(&whole[..cut]) {
                    Ok(Parsed::Incomplete { total }) => {
                        assert!(total > cut && total <= whole.len(), "cut {cut}: {total}");
                        if cut >= FIXED_LEN {
                            assert_eq!(total, whole.len());
                        }
                    }
                    other => panic!("cut at {cut}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn wrong_signature_is_refused_at_the_first_wrong_byte() {
        assert_eq!(parse(b"EHLO x\r\n"), Err(HeaderError::Signature));
        assert_eq!(parse(b"\r\n\r\nX"), Err(HeaderError::Signature));
        assert_eq!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            Err(HeaderError::Signature)
        );
        let mut h = v4(1, &[]);
        h[11] = b'\r';
        assert_eq!(parse(&h), Err(HeaderError::Signature));
    }

    #[test]
    fn wrong_version_or_command() {
        let mut h = v4(1, &[]);
        h[12] = 0x11;
        assert_eq!(parse(&h[..13]), Err(HeaderError::Version { version: 1 }));
        h[12] = 0x22;
        assert_eq!(parse(&h), Err(HeaderError::Command { command: 2 }));
    }

    #[test]
    fn oversized_length_is_refused_before_reading_it() {
        let mut h = v4(1, &[]);
        h[14..16].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(parse(&h[..16]), Err(HeaderError::TooLong { len: 65551 }));
        let ok = (MAX_HEADER_LEN - FIXED_LEN) as u16;
        h[14..16].copy_from_slice(&ok.to_be_bytes());
        assert_eq!(
            parse(&h[..16]),
            Ok(Parsed::Incomplete {
                total: MAX_HEADER_LEN
            })
        );
    }

    #[test]
    fn unspec_udp_and_unix_are_refused_for_proxy() {
        for family in [0x00, 0x12, 0x22, 0x31, 0x32] {
            let mut h = v4(1, &[]);
            h[13] = family;
            assert_eq!(parse(&h), Err(HeaderError::Family { family }));
        }
    }

    #[test]
    fn short_address_blocks_and_bad_tlvs() {
        let mut h = v4(1, &[]);
        h[15] = 11;
        assert_eq!(
            parse(&h[..27]),
            Err(HeaderError::AddressTooShort {
                family: 0x11,
                len: 11,
                need: 12
            })
        );
        // A TLV claiming more bytes than the header has.
        let h = v4(1, &[0x04, 0, 9, 0]);
        assert_eq!(parse(&h), Err(HeaderError::Tlv { at: 28 }));
        let h = v4(1, &[0x04, 0]);
        assert_eq!(parse(&h), Err(HeaderError::Tlv { at: 28 }));
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u32 = 0x1234_5678;
        for _ in 0..20_000 {
            let mut h = v4(1, &[0x04, 0, 1, 0]);
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let at = (x as usize >> 8) % h.len();
            h[at] = x as u8;
            let _ = parse(&h[..(x as usize >> 16) % (h.len() + 1)]);
        }
    }

    #[test]
    fn sniffing_the_start_of_a_stream() {
        assert_eq!(sniff(&v4(1, &[])), Sniff::Header);
        assert_eq!(sniff(&SIGNATURE), Sniff::Header);
        assert_eq!(sniff(b"PROXY TCP4 192.0.2.1"), Sniff::Header);
        assert_eq!(sniff(b"PROXY "), Sniff::Header);
        assert_eq!(sniff(b"\r\n\r\n"), Sniff::NeedMore);
        assert_eq!(sniff(b"PRO"), Sniff::NeedMore);
        assert_eq!(sniff(b""), Sniff::NeedMore);
        assert_eq!(sniff(b"EHLO x\r\n"), Sniff::NotHeader);
        assert_eq!(sniff(b"a1 LOGIN"), Sniff::NotHeader);
        assert_eq!(sniff(b"PROXYX"), Sniff::NotHeader);
        assert_eq!(sniff(&[0x16, 0x03, 0x01]), Sniff::NotHeader);
        for cut in 0..SIGNATURE.len() {
            assert_eq!(sniff(&SIGNATURE[..cut]), Sniff::NeedMore, "{cut}");
        }
    }
}
