//! The search index end to end, on disk: nothing of the mail readable at rest, substring
//! candidates that never miss a match, restarts, a foreign key, tampering, the size bound
//! and forgetting. Runs without servers (`cargo test --test search_index`).

use openpgp::cert::{CertBuilder, CipherSuite};
use openpgp::parse::Parse;
use sealpost::keys::{LoadedIdentity, POLICY};
use sealpost::search::{Doc, Field, IndexError, SearchIndex};
use sequoia_openpgp as openpgp;
use std::collections::HashSet;
use std::path::{Path, PathBuf};

const MAILBOX: &str = "Archive/Zephyrine";
const UIDVALIDITY: u32 = 1_700_000_001;
const BIG: u64 = 1 << 40;

/// An identity with a fresh Curve25519 key, as `keys::load_identity` would give it.
fn identity(address: &str) -> LoadedIdentity {
    let (cert, _) = CertBuilder::general_purpose(Some(format!("<{address}>")))
        .set_cipher_suite(CipherSuite::Cv25519)
        .generate()
        .unwrap();
    let decryptors = cert
        .keys()
        .secret()
        .with_policy(&POLICY, None)
        .for_storage_encryption()
        .for_transport_encryption()
        .map(|k| k.key().clone().into_keypair().unwrap())
        .collect();
    LoadedIdentity {
        address: address.into(),
        login: address.into(),
        cert: cert.strip_secret_key_material(),
        signer: None,
        decryptors,
    }
}

/// Made-up words that occur nowhere else: three syllables chosen by `i`.
fn word(i: usize) -> String {
    const S: [&str; 16] = [
        "zor", "blax", "quin", "vetr", "mox", "plif", "drun", "kesh", "yarb", "tuv", "gliss",
        "wemp", "fonz", "hurk", "jib", "snoo",
    ];
    format!("{}{}{}", S[i % 16], S[(i / 16) % 16], S[(i / 256) % 16])
}

fn capitalized(w: &str) -> String {
    let mut c = w.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// Message `i` of the corpus: its own words in the Subject (capitalized) and the body,
/// plus words every message shares.
fn doc(i: usize) -> Doc {
    let (a, b, c) = (word(3 * i), word(3 * i + 1), word(3 * i + 2));
    Doc {
        fields: vec![
            (
                "From".into(),
                format!("Quentin Maraschino <q{i}@example.org>"),
            ),
            (
                "Subject".into(),
                format!("Invoices {} and {b}", capitalized(&a)),
            ),
            ("Date".into(), "Mon, 7 Dec 2026 05:00:00 +0000".into()),
        ],
        body: format!(
            "Bonjour,\r\nvoici la facture {c} du Café Müller, Straße {i}.\r\n\
             Mit freundlichen Grüßen,\r\nQuentin\r\n"
        ),
        size: 1000 + i as u32,
        sent: Some((2026, 12, 7)),
        ..Doc::default()
    }
}

const N: usize = 200;

/// An index in `dir` holding the corpus in [`MAILBOX`], UIDs 1..=N.
fn filled(dir: &Path, id: &LoadedIdentity) -> SearchIndex {
    let index = SearchIndex::open(dir, id, BIG).unwrap();
    for i in 0..N {
        index.put(MAILBOX, UIDVALIDITY, uid(i), &doc(i)).unwrap();
    }
    index.commit().unwrap();
    index
}

fn uid(i: usize) -> u32 {
    i as u32 + 1
}

fn all_uids() -> HashSet<u32> {
    (0..N).map(uid).collect()
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Lowercase per character, as IMAP's case-insensitive match does.
fn lower(s: &str) -> String {
    s.chars().flat_map(char::to_lowercase).collect()
}

/// Whether `doc` matches `needle` in `field`, judged by brute force on its text.
fn matches(doc: &Doc, needle: &str, field: &Field) -> bool {
    let needle = lower(needle);
    match field {
        Field::Body => lower(&doc.body).contains(&needle),
        Field::Header(name) => doc
            .fields
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case(name) && lower(v).contains(&needle)),
        Field::Text => {
            let mut text = String::new();
            for (n, v) in &doc.fields {
                text.push_str(&format!("{n}: {v}\r\n"));
            }
            text.push_str("\r\n");
            text.push_str(&doc.body);
            lower(&text).contains(&needle)
        }
    }
}

fn exact(needle: &str, field: &Field) -> HashSet<u32> {
    (0..N)
        .filter(|&i| matches(&doc(i), needle, field))
        .map(uid)
        .collect()
}

#[test]
fn nothing_of_the_mail_is_readable_at_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("index");
    let id = identity("alice@example.com");
    let index = filled(&dir, &id);
    // Every word of at least six bytes: shorter ones could occur in ciphertext by chance.
    let mut secrets: HashSet<String> = HashSet::new();
    for i in 0..N {
        let d = doc(i);
        let text = d
            .fields
            .iter()
            .flat_map(|(_, v)| [v.clone()])
            .chain([d.body.clone()])
            .collect::<Vec<_>>()
            .join(" ");
        for w in text.split(|c: char| !c.is_alphanumeric()) {
            if w.len() >= 6 {
                secrets.insert(w.to_string());
                secrets.insert(lower(w));
                secrets.insert(w.to_uppercase());
            }
        }
    }
    secrets.insert("Zephyrine".into());
    secrets.insert("zephyrine".into());
    assert!(secrets.contains("Invoices") && secrets.contains("zorblaxzor"));
    let check = |label: &str| {
        let all = files(&dir);
        assert!(all.len() >= 5, "{label}: only {} files", all.len());
        for path in all {
            let bytes = std::fs::read(&path).unwrap();
            for s in &secrets {
                assert!(
                    memchr::memmem::find(&bytes, s.as_bytes()).is_none(),
                    "{label}: {s:?} readable in {}",
                    path.display()
                );
            }
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if name.ends_with(".lock") {
                assert!(bytes.is_empty(), "{name} holds {} bytes", bytes.len());
            }
        }
        for name in ["meta.json", ".managed.json"] {
            let bytes = std::fs::read(dir.join(name)).unwrap();
            assert!(
                serde_json::from_slice::<serde_json::Value>(&bytes).is_err(),
                "{label}: {name} is plain JSON"
            );
            assert!(!bytes.starts_with(b"{"), "{label}: {name} looks like JSON");
        }
        // The key file is an OpenPGP message, not the key.
        let key = std::fs::read(dir.join("index.key.pgp")).unwrap();
        openpgp::Message::from_bytes(&key).unwrap();
    };
    check("open");
    drop(index);
    check("after drop");
}

#[test]
fn candidates_find_substrings_across_case_and_never_miss() {
    let tmp = tempfile::tempdir().unwrap();
    let id = identity("alice@example.com");
    let index = filled(tmp.path(), &id);
    let subject = Field::Header("SUBJECT".into());
    let cand = |needle: &str, field: &Field| {
        index
            .candidates(MAILBOX, UIDVALIDITY, needle, field.clone())
            .unwrap()
    };

    // "voice" inside "Invoices", in any case.
    assert_eq!(cand("voice", &subject), all_uids());
    assert_eq!(cand("VOICE", &Field::Text), all_uids());
    assert!(cand("voice", &Field::Body).is_empty());
    // One message's own word, inside and across case: exactly that message.
    let a = capitalized(&word(3 * 17));
    assert_eq!(cand(&a[1..], &subject), HashSet::from([uid(17)]));
    assert_eq!(
        cand(&a.to_uppercase(), &Field::Text),
        HashSet::from([uid(17)])
    );
    assert!(cand(&a, &Field::Body).is_empty());
    assert!(cand(&a, &Field::Header("From".into())).is_empty());
    let c = word(3 * 42 + 2);
    assert_eq!(cand(&c, &Field::Body), HashSet::from([uid(42)]));
    // Accents as given: "MÜLL" finds "Müller", "mull" does not.
    assert_eq!(cand("MÜLL", &Field::Body), all_uids());
    assert!(cand("mull", &Field::Body).is_empty());
    // Words, not strings: "Straße 142" has the words of "straße 42" too.
    assert_eq!(
        cand("straße 42", &Field::Body),
        HashSet::from([uid(42), uid(142)])
    );
    // Header names are part of TEXT; a needle without words gives everything indexed.
    assert_eq!(cand("subj", &Field::Text), all_uids());
    assert_eq!(cand("", &Field::Body), all_uids());
    assert_eq!(cand(" .,-", &subject), all_uids());
    assert!(cand("x", &Field::Header("X-Absent".into())).is_empty());
    // Another mailbox or UIDVALIDITY sees nothing.
    assert!(cand("voice", &Field::Text).len() == N);
    assert!(index
        .candidates("INBOX", UIDVALIDITY, "voice", Field::Text)
        .unwrap()
        .is_empty());
    assert!(index
        .candidates(MAILBOX, UIDVALIDITY + 1, "", Field::Text)
        .unwrap()
        .is_empty());

    // A superset of the exact matches for needles cut anywhere from the corpus
    // (across words, separators and line ends), in every field.
    let mut seed = 0x2545_f491_u64;
    let mut next = |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    let fields = [
        Field::Body,
        Field::Text,
        subject.clone(),
        Field::Header("from".into()),
    ];
    for round in 0..300 {
        let d = doc(next(N));
        let source = match round % 3 {
            0 => d.body.clone(),
            1 => d.fields[1].1.clone(),
            _ => d.fields[0].1.clone(),
        };
        let chars: Vec<char> = source.chars().collect();
        let start = next(chars.len());
        let len = 1 + next(20.min(chars.len() - start));
        let mut needle: String = chars[start..start + len].iter().collect();
        if round % 2 == 0 {
            needle = needle.to_uppercase();
        }
        for field in &fields {
            let want = exact(&needle, field);
            let got = cand(&needle, field);
            assert!(
                want.is_subset(&got),
                "{needle:?} in {field:?}: missed {:?}",
                want.difference(&got).collect::<Vec<_>>()
            );
        }
    }
}

#[test]
fn long_runs_without_separators_are_still_found() {
    let tmp = tempfile::tempdir().unwrap();
    let id = identity("alice@example.com");
    let index = SearchIndex::open(tmp.path(), &id, BIG).unwrap();
    let run: String = (0..300).map(word).collect();
    let body = format!("token={run};");
    let d = Doc {
        body: body.clone(),
        ..Doc::default()
    };
    index.put(MAILBOX, UIDVALIDITY, 7, &d).unwrap();
    index.commit().unwrap();
    for (start, len) in [(0, 10), (5, 200), (1000, 24), (1000, 25), (2500, 300)] {
        let needle = &run[start.min(run.len() - 1)..(start + len).min(run.len())];
        let got = index
            .candidates(MAILBOX, UIDVALIDITY, needle, Field::Body)
            .unwrap();
        assert_eq!(got, HashSet::from([7]), "{start}+{len}");
    }
    assert!(index
        .candidates(MAILBOX, UIDVALIDITY, "notinthere", Field::Body)
        .unwrap()
        .is_empty());
}

#[test]
fn get_gives_back_the_docs_and_put_replaces() {
    let tmp = tempfile::tempdir().unwrap();
    let id = identity("alice@example.com");
    let index = filled(tmp.path(), &id);
    let got = index.get(MAILBOX, UIDVALIDITY, &[1, 2, 999]).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[&1], doc(0));
    assert_eq!(got[&2], doc(1));
    // Replace message 1 by message 150's content.
    index.put(MAILBOX, UIDVALIDITY, 1, &doc(150)).unwrap();
    index.commit().unwrap();
    assert_eq!(index.get(MAILBOX, UIDVALIDITY, &[1]).unwrap()[&1], doc(150));
    let old = word(0);
    assert!(index
        .candidates(MAILBOX, UIDVALIDITY, &old, Field::Text)
        .unwrap()
        .is_empty());
    let new = word(450);
    assert_eq!(
        index
            .candidates(MAILBOX, UIDVALIDITY, &new, Field::Text)
            .unwrap(),
        HashSet::from([1, uid(150)])
    );
    assert_eq!(index.indexed(MAILBOX, UIDVALIDITY).unwrap(), all_uids());
}

#[test]
fn a_restart_keeps_everything_including_uncommitted_puts() {
    let tmp = tempfile::tempdir().unwrap();
    let id = identity("alice@example.com");
    let index = filled(tmp.path(), &id);
    // Put but not committed: the drop commits it.
    index.put(MAILBOX, UIDVALIDITY, 500, &doc(5)).unwrap();
    drop(index);
    let index = SearchIndex::open(tmp.path(), &id, BIG).unwrap();
    let mut want = all_uids();
    want.insert(500);
    assert_eq!(index.indexed(MAILBOX, UIDVALIDITY).unwrap(), want);
    assert_eq!(
        index.get(MAILBOX, UIDVALIDITY, &[77]).unwrap()[&77],
        doc(76)
    );
    let w = word(3 * 99);
    assert_eq!(
        index
            .candidates(MAILBOX, UIDVALIDITY, &w, Field::Header("subject".into()))
            .unwrap(),
        HashSet::from([uid(99)])
    );
    // Indexing goes on after the restart.
    index.put(MAILBOX, UIDVALIDITY, 501, &doc(6)).unwrap();
    index.commit().unwrap();
    assert!(index.indexed(MAILBOX, UIDVALIDITY).unwrap().contains(&501));
}

#[test]
fn another_identity_is_refused_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = identity("alice@example.com");
    drop(filled(tmp.path(), &alice));
    let before: Vec<(PathBuf, Vec<u8>)> = files(tmp.path())
        .into_iter()
        .map(|p| (p.clone(), std::fs::read(&p).unwrap()))
        .collect();
    let mallory = identity("mallory@example.net");
    let err = SearchIndex::open(tmp.path(), &mallory, BIG).unwrap_err();
    assert!(matches!(err, IndexError::WrongIdentity { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("index.key.pgp") && text.contains("another key"),
        "{text}"
    );
    for (path, bytes) in &before {
        assert_eq!(&std::fs::read(path).unwrap(), bytes, "{}", path.display());
    }
    let index = SearchIndex::open(tmp.path(), &alice, BIG).unwrap();
    assert_eq!(index.indexed(MAILBOX, UIDVALIDITY).unwrap(), all_uids());
}

#[test]
fn a_lost_key_is_not_replaced() {
    let tmp = tempfile::tempdir().unwrap();
    let alice = identity("alice@example.com");
    drop(filled(tmp.path(), &alice));
    std::fs::remove_file(tmp.path().join("index.key.pgp")).unwrap();
    let err = SearchIndex::open(tmp.path(), &alice, BIG).unwrap_err();
    assert!(matches!(err, IndexError::KeyMissing { .. }), "{err:?}");
    assert!(!tmp.path().join("index.key.pgp").exists());
}

/// Opens the index and reads all of it; any error is returned, a panic fails the test.
fn open_and_read(dir: &Path, id: &LoadedIdentity) -> Result<(), IndexError> {
    let index = SearchIndex::open(dir, id, BIG)?;
    index.indexed(MAILBOX, UIDVALIDITY)?;
    index.candidates(MAILBOX, UIDVALIDITY, "voice", Field::Text)?;
    index.get(MAILBOX, UIDVALIDITY, &(1..=N as u32).collect::<Vec<_>>())?;
    Ok(())
}

/// The sealed index files, largest first (the lock files and the key excluded).
fn sealed_files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = files(dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            !name.ends_with(".lock") && name != "index.key.pgp"
        })
        .collect();
    out.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).unwrap().len()));
    out
}

#[test]
fn tampered_truncated_or_swapped_files_are_errors() {
    let id = identity("alice@example.com");
    let pristine = tempfile::tempdir().unwrap();
    drop(filled(pristine.path(), &id));
    open_and_read(pristine.path(), &id).unwrap();
    let copy = |label: &str| {
        let tmp = tempfile::tempdir().unwrap();
        for f in files(pristine.path()) {
            std::fs::copy(&f, tmp.path().join(f.file_name().unwrap())).unwrap();
        }
        eprintln!("case: {label}");
        tmp
    };
    let names: Vec<String> = sealed_files(pristine.path())
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().any(|n| n == "meta.json"));
    for name in &names {
        let len = std::fs::metadata(pristine.path().join(name)).unwrap().len() as usize;
        for at in [0, 20, len / 2, len - 1] {
            let tmp = copy(&format!("flip {name}@{at}"));
            let path = tmp.path().join(name);
            let mut bytes = std::fs::read(&path).unwrap();
            bytes[at] ^= 0x40;
            std::fs::write(&path, bytes).unwrap();
            assert!(open_and_read(tmp.path(), &id).is_err(), "flip {name}@{at}");
        }
        let tmp = copy(&format!("truncate {name}"));
        let path = tmp.path().join(name);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        assert!(open_and_read(tmp.path(), &id).is_err(), "truncate {name}");
    }
    // Two files of the same kind swapped: each is sealed under its own name.
    let by_ext =
        |ext: &str| -> Vec<&String> { names.iter().filter(|n| n.ends_with(ext)).collect() };
    let stores = by_ext(".store");
    if let [a, b, ..] = stores.as_slice() {
        let tmp = copy("swap");
        std::fs::rename(tmp.path().join(a), tmp.path().join("x")).unwrap();
        std::fs::rename(tmp.path().join(b), tmp.path().join(a)).unwrap();
        std::fs::rename(tmp.path().join("x"), tmp.path().join(b)).unwrap();
        assert!(open_and_read(tmp.path(), &id).is_err(), "swap {a} {b}");
    }
    let tmp = copy("meta.json replaced by .managed.json");
    std::fs::copy(
        tmp.path().join(".managed.json"),
        tmp.path().join("meta.json"),
    )
    .unwrap();
    assert!(open_and_read(tmp.path(), &id).is_err());
}

/// A body of `words` made-up words, about 12 bytes each, that lz4 cannot shrink much.
fn bulky(i: usize, words: usize) -> Doc {
    let body = (0..words)
        .map(|k| word(i.wrapping_mul(7919).wrapping_add(k * 31) % 4096))
        .collect::<Vec<_>>()
        .join(" ");
    Doc {
        fields: vec![("Subject".into(), format!("bulky {i}"))],
        body,
        size: 4096,
        sent: None,
        ..Doc::default()
    }
}

#[test]
fn the_size_bound_evicts_the_oldest() {
    let tmp = tempfile::tempdir().unwrap();
    let id = identity("alice@example.com");
    let max = 300_000;
    let index = SearchIndex::open(tmp.path(), &id, max).unwrap();
    let total = 600u32;
    for uid in 1..=total {
        index
            .put(MAILBOX, UIDVALIDITY, uid, &bulky(uid as usize, 300))
            .unwrap();
        if uid % 50 == 0 {
            index.commit().unwrap();
            let bytes = index.bytes_on_disk().unwrap();
            assert!(bytes <= max, "{bytes} bytes on disk after {uid} puts");
        }
    }
    let indexed = index.indexed(MAILBOX, UIDVALIDITY).unwrap();
    eprintln!(
        "{} of {total} kept in {} bytes",
        indexed.len(),
        index.bytes_on_disk().unwrap()
    );
    assert!(!indexed.is_empty() && indexed.len() < total as usize);
    assert!(indexed.contains(&total), "the newest was evicted");
    // What remains is the newest ones: no kept UID is older than an evicted one.
    let oldest_kept = *indexed.iter().min().unwrap();
    assert_eq!(indexed, (oldest_kept..=total).collect());
    assert!(index.get(MAILBOX, UIDVALIDITY, &[1]).unwrap().is_empty());
    assert!(!index
        .candidates(MAILBOX, UIDVALIDITY, "bulky", Field::Text)
        .unwrap()
        .contains(&1));
    drop(index);
    // Reopened with a bound it fits in, it keeps what it had.
    let index = SearchIndex::open(tmp.path(), &id, max).unwrap();
    assert_eq!(index.indexed(MAILBOX, UIDVALIDITY).unwrap(), indexed);
}

#[test]
fn forget_and_remove_mailbox() {
    let tmp = tempfile::tempdir().unwrap();
    let id = identity("alice@example.com");
    let index = filled(tmp.path(), &id);
    index.put("INBOX", 9, 1, &doc(0)).unwrap();
    index.put(MAILBOX, UIDVALIDITY + 1, 1, &doc(0)).unwrap();
    index.commit().unwrap();

    index.forget(MAILBOX, UIDVALIDITY, &[1, 2, 3]).unwrap();
    let mut want = all_uids();
    for u in [1, 2, 3] {
        want.remove(&u);
    }
    assert_eq!(index.indexed(MAILBOX, UIDVALIDITY).unwrap(), want);
    assert!(index
        .get(MAILBOX, UIDVALIDITY, &[1, 2, 3])
        .unwrap()
        .is_empty());
    assert!(index
        .candidates(MAILBOX, UIDVALIDITY, &word(0), Field::Text)
        .unwrap()
        .is_empty());
    // The same UID elsewhere is untouched.
    assert_eq!(index.indexed("INBOX", 9).unwrap(), HashSet::from([1]));
    assert_eq!(
        index.indexed(MAILBOX, UIDVALIDITY + 1).unwrap(),
        HashSet::from([1])
    );

    index.remove_mailbox(MAILBOX, UIDVALIDITY).unwrap();
    assert!(index.indexed(MAILBOX, UIDVALIDITY).unwrap().is_empty());
    assert!(index
        .candidates(MAILBOX, UIDVALIDITY, "", Field::Text)
        .unwrap()
        .is_empty());
    assert_eq!(index.indexed("INBOX", 9).unwrap(), HashSet::from([1]));
    assert_eq!(
        index.indexed(MAILBOX, UIDVALIDITY + 1).unwrap(),
        HashSet::from([1])
    );
    drop(index);
    let index = SearchIndex::open(tmp.path(), &id, BIG).unwrap();
    assert!(index.indexed(MAILBOX, UIDVALIDITY).unwrap().is_empty());
    assert_eq!(index.indexed("INBOX", 9).unwrap(), HashSet::from([1]));
}

#[test]
fn the_index_is_shared_between_threads() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<SearchIndex>();
    let tmp = tempfile::tempdir().unwrap();
    let id = identity("alice@example.com");
    let index = std::sync::Arc::new(SearchIndex::open(tmp.path(), &id, BIG).unwrap());
    std::thread::scope(|s| {
        for t in 0..4u32 {
            let index = &index;
            s.spawn(move || {
                for k in 0..50u32 {
                    index
                        .put(MAILBOX, UIDVALIDITY, t * 100 + k, &doc(k as usize))
                        .unwrap();
                }
            });
        }
    });
    index.commit().unwrap();
    assert_eq!(index.indexed(MAILBOX, UIDVALIDITY).unwrap().len(), 200);
}

/// Not a test: how long indexing 5,000 messages of about 4 KB takes, the bytes on disk
/// and the peak RSS. `cargo test --release --test search_index -- --ignored --nocapture`
#[test]
#[ignore]
fn measure_5000_docs() {
    let tmp = tempfile::tempdir().unwrap();
    let id = identity("alice@example.com");
    let start = std::time::Instant::now();
    let index = SearchIndex::open(tmp.path(), &id, BIG).unwrap();
    for uid in 1..=5000u32 {
        index
            .put(MAILBOX, UIDVALIDITY, uid, &bulky(uid as usize, 330))
            .unwrap();
    }
    index.commit().unwrap();
    let indexing = start.elapsed();
    let bytes = index.bytes_on_disk().unwrap();
    for needle in [word(1234).as_str(), "jibsnoo", "fonz hurk"] {
        let t = std::time::Instant::now();
        let hits = index
            .candidates(MAILBOX, UIDVALIDITY, needle, Field::Body)
            .unwrap();
        println!(
            "candidates({needle:?}): {} in {:?}",
            hits.len(),
            t.elapsed()
        );
    }
    let t = std::time::Instant::now();
    let hits = index
        .candidates(MAILBOX, UIDVALIDITY, "blax", Field::Body)
        .unwrap();
    let search = t.elapsed();
    let t = std::time::Instant::now();
    let docs = index
        .get(
            MAILBOX,
            UIDVALIDITY,
            &hits.iter().copied().collect::<Vec<_>>(),
        )
        .unwrap();
    let get = t.elapsed();
    drop(index);
    let t = std::time::Instant::now();
    let index = SearchIndex::open(tmp.path(), &id, BIG).unwrap();
    let n = index.indexed(MAILBOX, UIDVALIDITY).unwrap().len();
    let reopen = t.elapsed();
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM"))
        .unwrap_or("VmHWM: ?");
    let body_bytes: usize = (1..=5000).map(|u| bulky(u, 330).body.len()).sum();
    println!(
        "5000 docs ({body_bytes} body bytes): indexed in {indexing:?}, {bytes} bytes on disk; \
         candidates(\"blax\") {} in {search:?}; get of those {} in {get:?}; \
         reopen + indexed ({n}) {reopen:?}; {hwm}",
        hits.len(),
        docs.len()
    );
}
