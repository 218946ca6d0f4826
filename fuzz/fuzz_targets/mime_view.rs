//! The view FETCH serves of a stored message (`ImapContext::view`, then the items
//! `src/imap/fetch.rs` computes from it) over arbitrary messages, some of them sealed
//! first so that the decrypted path is taken too.
//!
//! Properties:
//! * a message that is not encrypted (and carries no forged status field) is its own
//!   view, byte for byte, and shown as plain;
//! * for a view FETCH answers itself (its response made by `imap::fetch::respond` and
//!   decoded with imap-codec), RFC822.SIZE equals the length of BODY[], RFC822 is
//!   BODY[], and `BODY[]<offset.length>` partials read one after the other reassemble
//!   to BODY[];
//! * `mime::view::partial` of any size reassembles any section;
//! * on prepared bytes (every view FETCH answers is prepared), the kept part tree
//!   answers every section and BODYSTRUCTURE exactly as parsing the bytes again does;
//! * ENVELOPE and BODY/BODYSTRUCTURE never panic.
#![no_main]

use imap_codec::decode::Decoder;
use imap_codec::ResponseCodec;
use imap_types::core::{AString, NString, Vec1};
use imap_types::fetch::{MessageDataItem, MessageDataItemName, Part, Section};
use imap_types::response::{Data, Response};
use libfuzzer_sys::fuzz_target;
use sealpost::imap::ImapContext;
use sealpost::mime::view;
use sealpost::pgp::ViewKind;
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};

#[path = "common/input.rs"]
mod input;
#[path = "common/panics.rs"]
mod panics;

const ME: &str = "alice@example.com";

struct Fixed {
    ctx: Arc<ImapContext>,
    _dir: tempfile::TempDir,
}

fn fixed() -> &'static Fixed {
    static F: OnceLock<Fixed> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let g = sealpost::keys::generate(ME, dir.path()).unwrap();
        let id = Arc::new(sealpost::keys::load_identity(&g.identity(ME, None)).unwrap());
        let store = Arc::new(sealpost::keys::KeyStore::open(&dir.path().join("store")).unwrap());
        let ctx = Arc::new(ImapContext {
            account: "fuzz".into(),
            autocrypt: None,
            identities: vec![id],
            store,
            cache: Arc::new(sealpost::imap::cache::ViewCache::new(1 << 20)),
            decrypt_slots: Arc::new(tokio::sync::Semaphore::new(2)),
            max_message_size: 1 << 20,
            max_line_length: 8192,
            max_job_view_bytes: 1 << 20,
            encrypt_append: sealpost::config::EncryptAppend::All,
            search: Default::default(),
            ahead: Default::default(),
        });
        Fixed { ctx, _dir: dir }
    })
}

/// A section to ask for: its kind, a part path (depth and numbers from `path`) and
/// header field names.
struct Spec {
    kind: u8,
    path: u8,
    names: u8,
}

const NAMES: &[&str] = &[
    "Subject",
    "FROM",
    "content-type",
    "To",
    "X-A",
    "Date",
    "Received",
];

fn section(spec: &Spec) -> Section<'static> {
    let depth = (spec.path & 3) as u32;
    let path: Vec<NonZeroU32> = (0..depth)
        .map(|i| NonZeroU32::new((spec.path as u32 >> (2 + 2 * i)) % 4 + 1).unwrap())
        .collect();
    let part = Vec1::try_from(path).ok().map(Part);
    let names: Vec<AString<'static>> = [spec.names & 15, spec.names >> 4]
        .iter()
        .map(|n| AString::try_from(NAMES[*n as usize % NAMES.len()]).unwrap())
        .collect();
    let names = Vec1::try_from(names).unwrap();
    let one = || Part(Vec1::from(NonZeroU32::new(1).unwrap()));
    match spec.kind % 6 {
        0 => Section::Part(part.unwrap_or_else(one)),
        1 => Section::Mime(part.unwrap_or_else(one)),
        2 => Section::Header(part),
        3 => Section::Text(part),
        4 => Section::HeaderFields(part, names),
        _ => Section::HeaderFieldsNot(part, names),
    }
}

/// `<offset.length>` partials of `size` bytes, fetched one after the other.
fn reassembled(data: &[u8], size: u32) -> Vec<u8> {
    let size = NonZeroU32::new(size).unwrap();
    let mut out = Vec::new();
    let mut offset: u32 = 0;
    loop {
        let chunk = view::partial(data, Some((offset, size)));
        if chunk.is_empty() {
            break;
        }
        out.extend_from_slice(chunk);
        offset = offset.checked_add(size.get()).unwrap();
    }
    out
}

/// What the client gets for `items` (besides RFC822.SIZE and RFC822) of a message
/// FETCH shows through `view`.
struct Fetched {
    size: Option<u32>,
    body: Option<Vec<u8>>,
    rfc822: Option<Vec<u8>>,
    partial: Option<Vec<u8>>,
}

fn body_item(partial: Option<(u32, NonZeroU32)>) -> MessageDataItemName<'static> {
    MessageDataItemName::BodyExt {
        section: None,
        partial,
        peek: true,
    }
}

fn fetched(view: &sealpost::pgp::View, items: &[MessageDataItemName<'static>]) -> Fetched {
    let mut all = vec![MessageDataItemName::Rfc822Size, MessageDataItemName::Rfc822];
    all.extend_from_slice(items);
    let line = sealpost::imap::fetch::respond(view, 1, 7, &all, &[]).expect("a FETCH response");
    let (rest, response) = ResponseCodec::default()
        .decode(&line)
        .unwrap_or_else(|e| panic!("undecodable FETCH response {e:?}: {line:?}"));
    assert!(rest.is_empty(), "bytes after the response");
    let Response::Data(Data::Fetch { items, .. }) = response else {
        panic!("not a FETCH response: {line:?}");
    };
    let bytes = |n: &NString<'_>| {
        n.0.as_ref()
            .map(|s| s.as_ref().to_vec())
            .unwrap_or_default()
    };
    let mut out = Fetched {
        size: None,
        body: None,
        rfc822: None,
        partial: None,
    };
    for item in items.as_ref() {
        match item {
            MessageDataItem::Rfc822Size(n) => out.size = Some(*n),
            MessageDataItem::Rfc822(d) => out.rfc822 = Some(bytes(d)),
            MessageDataItem::BodyExt {
                origin: None, data, ..
            } => out.body = Some(bytes(data)),
            MessageDataItem::BodyExt {
                origin: Some(_),
                data,
                ..
            } => out.partial = Some(bytes(data)),
            _ => {}
        }
    }
    out
}

fn has_status_field(raw: &[u8]) -> bool {
    raw.windows(18)
        .any(|w| w.eq_ignore_ascii_case(b"sealpost-decrypted"))
}

// Input layout: 0xA5 to seal the message first (slow: kept rare), the partial size
// (two bytes), a count of sections and three bytes for each, then the message.
fuzz_target!(|bytes: &[u8]| {
    let f = fixed();
    let mut raw_input = input::Input(bytes);
    let seal = raw_input.byte() == 0xA5;
    let partial_size = (raw_input.u16() as u32 % 97) + 1;
    let n = raw_input.byte() % 9;
    let specs: Vec<Spec> = (0..n)
        .map(|_| Spec {
            kind: raw_input.byte(),
            path: raw_input.byte(),
            names: raw_input.byte(),
        })
        .collect();
    let original = raw_input.rest();
    let sealed = seal && original.len() < 4096;
    let raw = if sealed {
        f.ctx.seal(ME, original).expect("sealing")
    } else {
        original.to_vec()
    };

    // What a FETCH shows of the stored message.
    // As FETCH builds it (a panic while building shows the message as stored).
    panics::tolerate_known_panics();
    let v = sealpost::imap::fetch::view_or_stand_in(&raw, || f.ctx.view(ME, &raw, 1 << 20));
    if !sealpost::pgp::is_encrypted(&raw) && !has_status_field(&raw) {
        assert!(matches!(v.kind, ViewKind::Plain), "{:?}", v.kind);
        assert_eq!(v.bytes, raw, "a plain message's view is not the message");
    }
    if !has_status_field(original) && sealed {
        // One of the identity's own sealed copies shows as what was sealed.
        assert!(matches!(v.kind, ViewKind::Decrypted(_)), "{:?}", v.kind);
    }
    let relayed = !matches!(v.kind, ViewKind::Decrypted(_)) && v.bytes == raw;
    if !relayed {
        // FETCH answers from the view itself (`fetch::respond`, as for a job's messages).
        let whole = fetched(
            &v,
            &[
                body_item(None),
                MessageDataItemName::BodyStructure,
                MessageDataItemName::Envelope,
            ],
        );
        let (size, body, rfc822) = (
            whole.size.unwrap(),
            whole.body.unwrap(),
            whole.rfc822.unwrap(),
        );
        assert_eq!(size as usize, body.len(), "RFC822.SIZE != length of BODY[]");
        assert_eq!(rfc822, body, "RFC822 != BODY[]");
        // Partials one after the other, as a client reads a large message.
        let size = partial_size.max(body.len() as u32 / 32 + 1);
        let mut joined = Vec::new();
        let mut offset = 0u32;
        loop {
            let part = fetched(
                &v,
                &[body_item(Some((offset, NonZeroU32::new(size).unwrap())))],
            );
            let chunk = part.partial.unwrap();
            if chunk.is_empty() {
                break;
            }
            joined.extend_from_slice(&chunk);
            offset += size;
        }
        assert_eq!(joined, body, "partials do not reassemble to BODY[]");
    }

    // The prepared path and the parsing path agree on the prepared message (every view
    // FETCH answers is prepared first; on unprepared bytes a NUL in a boundary parses
    // differently from its 0x80 stand-in).
    let p = view::prepare(raw.clone());
    let tree = view::tree_of_prepared(&p);
    let whole = view::section(&raw, None).unwrap();
    assert_eq!(p, whole, "prepare != BODY[]");
    assert_eq!(reassembled(&whole, partial_size), whole);
    for spec in &specs {
        let s = section(spec);
        let a = view::section(&p, Some(&s));
        let b = view::section_of_prepared(&p, &tree, Some(&s)).map(|c| c.into_owned());
        assert_eq!(a, b, "section {s:?}");
        if let Some(a) = a {
            assert_eq!(reassembled(&a, partial_size), a);
        }
    }
    for ext in [false, true] {
        assert_eq!(
            view::body_structure(&p, ext),
            view::body_structure_of_prepared(&p, &tree, ext),
            "BODYSTRUCTURE"
        );
    }
    let _ = view::envelope(&raw);
});
