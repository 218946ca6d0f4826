//! ASCII armor of OpenPGP messages (RFC 9580 §6) for the hot paths: base64 through the
//! `base64` crate, several times faster than Sequoia's armor reader and writer, which
//! took about a tenth of the CPU of `sealpost seal`. Only messages are handled here and
//! only the plain layout; anything else is left to Sequoia (`decode` returns `None`).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use std::io::Write;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";
/// Bytes per armored line: 48 bytes are 64 base64 characters.
const LINE_BYTES: usize = 48;

/// `binary` as an armored message with CRLF line ends, the layout Sequoia writes: no
/// armor headers, 64 characters a line, and the CRC-24 line that RFC 4880
/// implementations expect (RFC 9580 readers ignore it). (The code writes it with
/// [`Writer`]; this is the same for tests.)
#[cfg(test)]
pub fn encode(binary: &[u8]) -> Vec<u8> {
    let lines = binary.len().div_ceil(LINE_BYTES);
    let mut w = Writer::new(Vec::with_capacity(lines * 66 + 80));
    w.write_all(binary).expect("writing to a Vec");
    w.finish().expect("writing to a Vec")
}

/// What [`encode`] writes, written as the packets come: a message is armored as it is
/// encrypted, never held in binary too.
pub struct Writer<W: Write> {
    inner: W,
    /// Bytes of the next line not yet encoded (fewer than [`LINE_BYTES`]).
    pending: [u8; LINE_BYTES],
    filled: usize,
    crc: u32,
    started: bool,
}

impl<W: Write> Writer<W> {
    pub fn new(inner: W) -> Writer<W> {
        Writer {
            inner,
            pending: [0; LINE_BYTES],
            filled: 0,
            crc: CRC24_INIT,
            started: false,
        }
    }

    fn start(&mut self) -> std::io::Result<()> {
        if !self.started {
            self.started = true;
            self.inner.write_all(BEGIN)?;
            self.inner.write_all(b"\r\n\r\n")?;
        }
        Ok(())
    }

    fn line(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let mut line = [0u8; 66];
        let n = STANDARD
            .encode_slice(bytes, &mut line)
            .expect("48 bytes fit 64 characters");
        line[n..n + 2].copy_from_slice(b"\r\n");
        self.inner.write_all(&line[..n + 2])
    }

    /// Writes the last line, the CRC and the END line; returns the inner writer.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.start()?;
        if self.filled > 0 {
            let pending = self.pending;
            self.line(&pending[..self.filled])?;
        }
        let crc = (self.crc & 0x00FF_FFFF).to_be_bytes();
        self.inner.write_all(b"=")?;
        self.inner
            .write_all(STANDARD.encode(&crc[1..]).as_bytes())?;
        self.inner.write_all(b"\r\n")?;
        self.inner.write_all(END)?;
        self.inner.write_all(b"\r\n")?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for Writer<W> {
    fn write(&mut self, mut data: &[u8]) -> std::io::Result<usize> {
        self.start()?;
        let n = data.len();
        self.crc = crc24_update(self.crc, data);
        if self.filled > 0 {
            let take = (LINE_BYTES - self.filled).min(data.len());
            self.pending[self.filled..self.filled + take].copy_from_slice(&data[..take]);
            self.filled += take;
            data = &data[take..];
            if self.filled < LINE_BYTES {
                return Ok(n);
            }
            let pending = self.pending;
            self.line(&pending)?;
            self.filled = 0;
        }
        let mut chunks = data.chunks_exact(LINE_BYTES);
        for chunk in &mut chunks {
            self.line(chunk)?;
        }
        let rest = chunks.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.filled = rest.len();
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The packets of an armored message laid out as [`encode`] writes it (and as gpg,
/// Sequoia and Thunderbird write it): the BEGIN line, armor headers, a blank line,
/// base64 lines, an optional CRC line (not checked: RFC 9580 §6.1), the END line, and
/// nothing but white space around. `None` for anything else, which the caller gives
/// to Sequoia's own reader.
pub fn decode(armored: &[u8]) -> Option<Vec<u8>> {
    let text = armored.trim_ascii();
    let mut lines = text.split(|&b| b == b'\n').map(<[u8]>::trim_ascii_end);
    if lines.next()? != BEGIN {
        return None;
    }
    // Armor headers ("Key: value"), up to the blank line.
    loop {
        let line = lines.next()?;
        if line.is_empty() {
            break;
        }
        if !line.windows(2).any(|w| w == b": ") {
            return None;
        }
    }
    let mut body = Vec::with_capacity(text.len());
    let mut ended = false;
    let mut crc_seen = false;
    for line in lines.by_ref() {
        if line == END {
            ended = true;
            break;
        }
        if crc_seen {
            return None;
        }
        if line.first() == Some(&b'=') && line.len() == 5 {
            crc_seen = true;
            continue;
        }
        body.extend_from_slice(line);
    }
    if !ended || lines.next().is_some() {
        return None;
    }
    STANDARD.decode(&body).ok()
}

/// CRC-24 of RFC 4880 §6.1 (generator 0x864CFB, initial value 0xB704CE).
const CRC24_INIT: u32 = 0x00B7_04CE;

/// `crc` continued over `data`, eight bytes a step (slicing-by-8): the register is kept
/// in the top 24 bits of a `u32`, so the tables are those of a CRC-32 whose generator is
/// CRC-24's shifted left by 8. A byte at a time, each step waited on the one before.
fn crc24_update(crc: u32, data: &[u8]) -> u32 {
    static T: [[u32; 256]; 8] = crc24_tables();
    let at = |t: usize, byte: u32| T[t][(byte & 0xFF) as usize];
    let mut c = crc << 8;
    let mut chunks = data.chunks_exact(8);
    for ch in &mut chunks {
        let hi = c ^ u32::from_be_bytes([ch[0], ch[1], ch[2], ch[3]]);
        let lo = u32::from_be_bytes([ch[4], ch[5], ch[6], ch[7]]);
        c = at(7, hi >> 24)
            ^ at(6, hi >> 16)
            ^ at(5, hi >> 8)
            ^ at(4, hi)
            ^ at(3, lo >> 24)
            ^ at(2, lo >> 16)
            ^ at(1, lo >> 8)
            ^ at(0, lo);
    }
    for &b in chunks.remainder() {
        c = (c << 8) ^ at(0, (c >> 24) ^ u32::from(b));
    }
    c >> 8
}

/// `T[k][i]`: the register after byte `i` and then `k` zero bytes, from zero.
const fn crc24_tables() -> [[u32; 256]; 8] {
    const GENERATOR: u32 = 0x0086_4CFB << 8;
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut c = (i as u32) << 24;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 0x8000_0000 != 0 {
                (c << 1) ^ GENERATOR
            } else {
                c << 1
            };
            bit += 1;
        }
        t[0][i] = c;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev << 8) ^ t[0][(prev >> 24) as usize];
            i += 1;
        }
        k += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp::armor::{Kind, Writer};
    use std::io::Write;

    fn sequoia_armor(binary: &[u8]) -> Vec<u8> {
        let mut w = Writer::new(Vec::new(), Kind::Message).unwrap();
        w.write_all(binary).unwrap();
        let lf = w.finalize().unwrap();
        crate::mime::to_crlf(&lf).into_owned()
    }

    #[test]
    fn writes_what_sequoia_writes_and_reads_it_back() {
        for len in [1usize, 2, 3, 47, 48, 49, 95, 96, 97, 1000, 17_000] {
            let binary: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
            let ours = encode(&binary);
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&sequoia_armor(&binary)),
                "{len} bytes"
            );
            assert_eq!(decode(&ours).as_deref(), Some(binary.as_slice()), "{len}");
            // LF line ends, armor headers, no CRC, surrounding white space: still read.
            let text = String::from_utf8(ours).unwrap().replace("\r\n", "\n");
            let varied = text
                .replacen("\n\n", "\nVersion: GnuPG v2\nComment: hi\n\n", 1)
                .lines()
                .filter(|l| !(l.starts_with('=') && l.len() == 5))
                .collect::<Vec<_>>()
                .join("\n");
            let varied = format!("\n  {varied}\n\n");
            assert_eq!(
                decode(varied.as_bytes()).as_deref(),
                Some(binary.as_slice())
            );
        }
    }

    #[test]
    fn written_in_pieces_it_is_the_same_armor() {
        let binary: Vec<u8> = (0..5000u32).map(|i| (i * 31 % 251) as u8).collect();
        let whole = encode(&binary);
        for step in [1, 2, 47, 48, 49, 100, 4999] {
            let mut w = super::Writer::new(Vec::new());
            for piece in binary.chunks(step) {
                w.write_all(piece).unwrap();
            }
            assert_eq!(w.finish().unwrap(), whole, "pieces of {step}");
        }
        // Nothing written: still a whole (empty) message.
        assert_eq!(
            super::Writer::new(Vec::new()).finish().unwrap(),
            encode(b"")
        );
    }

    /// The CRC-24 of RFC 9580 §6.1 bit by bit, as the RFC describes it.
    fn crc24_bitwise(data: &[u8]) -> u32 {
        let mut crc = CRC24_INIT;
        for &b in data {
            crc ^= u32::from(b) << 16;
            for _ in 0..8 {
                crc <<= 1;
                if crc & 0x0100_0000 != 0 {
                    crc ^= 0x0186_4CFB;
                }
            }
        }
        crc & 0x00FF_FFFF
    }

    #[test]
    fn the_crc_is_rfc_9580s_for_every_length_and_split() {
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7919 % 251) as u8).collect();
        for len in 0..data.len() {
            let whole = crc24_update(CRC24_INIT, &data[..len]);
            assert_eq!(whole, crc24_bitwise(&data[..len]), "length {len}");
            let cut = len / 3;
            let split = crc24_update(crc24_update(CRC24_INIT, &data[..cut]), &data[cut..len]);
            assert_eq!(split, whole, "length {len} cut at {cut}");
        }
    }

    #[test]
    fn anything_else_is_left_to_sequoia() {
        let good = String::from_utf8(encode(b"some packets here")).unwrap();
        let cases = [
            good.replace("MESSAGE", "SIGNATURE"),
            format!("text before\r\n{good}"),
            format!("{good}text after\r\n"),
            good.replace("\r\n\r\n", "\r\nnot a header\r\n\r\n"),
            good.replacen("\r\n\r\n", "\r\n", 1),
            good.replace("-----END PGP MESSAGE-----\r\n", ""),
            good.replace("\r\n-----END", "\r\nc29tZQ==\r\n-----END"),
            good.replace("c29t", "c2*t"),
        ];
        for case in cases {
            assert_eq!(decode(case.as_bytes()), None, "{case}");
        }
    }
}
