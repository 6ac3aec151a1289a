//! Files and directories only this process's user may read: the audit spool, chain
//! files, bridge state and the node's signing key hold who called what, and the key
//! signs checkpoints. Directories are created 0700, files 0600.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::Path;

/// Mode of directories this module creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of files this module creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and its missing parents with mode 0700. An existing directory keeps
/// its mode (see [`warn_if_open`]).
pub fn create_dir_all(path: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(path)
}

/// Warns, naming the fix, when other users may read the directory at `path`.
pub fn warn_if_open(path: &Path) {
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode();
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{:o}", mode & 0o777),
                "the audit data dir is open to other users; `chmod 700` it");
        }
    }
}

/// Open options that create files with mode 0600 (the caller adds read/write/create).
pub fn options() -> OpenOptions {
    let mut o = OpenOptions::new();
    o.mode(FILE_MODE);
    o
}

/// Whether a file's mode lets other users read or write it.
pub fn is_open_to_others(path: &Path) -> std::io::Result<bool> {
    Ok(std::fs::metadata(path)?.permissions().mode() & 0o077 != 0)
}
