//! The one-time import of the TOML files earlier versions kept in `state_dir`
//! (`discovered.toml`, `autocrypt.toml`): their rows are added where the database has
//! none, the import is recorded, and the file is renamed `*.imported` so that it is
//! neither read again nor lost.

use super::records::{put_peer, put_provenance};
use super::{Arg, State, StateError};
use std::path::Path;

/// Imports whichever legacy files exist in `state_dir`.
pub(super) fn legacy_files(state: &State, state_dir: &Path) -> Result<(), StateError> {
    import_file(state, &state_dir.join("discovered.toml"), |text| {
        let file = crate::keys::provenance::ProvenanceFile::parse(text)?;
        Ok(Box::new(move |rows: &mut dyn super::Rows| {
            for (fpr, p) in &file.certs {
                put_provenance(rows, &fpr.to_lowercase(), p, false)?;
            }
            Ok(file.certs.len())
        }) as Importer)
    })?;
    import_file(state, &state_dir.join("autocrypt.toml"), |text| {
        let identities = crate::keys::autocrypt::parse_legacy(text)?;
        Ok(Box::new(move |rows: &mut dyn super::Rows| {
            let mut n: usize = 0;
            for (identity, peers) in &identities {
                for (peer, s) in peers {
                    put_peer(rows, identity, peer, s, false)?;
                    n += 1;
                }
            }
            Ok(n)
        }) as Importer)
    })
}

type Importer = Box<dyn FnOnce(&mut dyn super::Rows) -> Result<usize, StateError> + Send>;

fn import_file(
    state: &State,
    path: &Path,
    parse: impl FnOnce(&str) -> Result<Importer, toml::de::Error>,
) -> Result<(), StateError> {
    let import_err = |message: String| StateError::Import {
        path: path.to_path_buf(),
        message,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(import_err(e.to_string())),
    };
    let importer = parse(&text).map_err(|e| import_err(e.to_string()))?;
    let name = path.display().to_string();
    let now = crate::keys::unix_now();
    let imported = state.tx(|rows| {
        let done = !rows
            .query_text(
                "SELECT name FROM imported WHERE name = $1",
                &[Arg::Text(&name)],
            )?
            .is_empty();
        if done {
            return Ok(None);
        }
        let n = importer(rows)?;
        rows.execute(
            "INSERT INTO imported (name, at) VALUES ($1, $2)",
            &[Arg::Text(&name), Arg::Int(now)],
        )?;
        Ok(Some(n))
    })?;
    let target = path.with_extension("toml.imported");
    std::fs::rename(path, &target).map_err(|e| {
        import_err(format!(
            "imported, but cannot rename it to {}: {e}",
            target.display()
        ))
    })?;
    if let Some(n) = imported {
        tracing::info!(path = %path.display(), entries = n, into = %state.describe(), "imported legacy state file");
    }
    Ok(())
}
