//! Reading a configuration input safely: only a regular file (after following links), never
//! more than a size cap. A FIFO named `web.toml` would block a reader forever and a link to
//! `/dev/zero` would never end; both are refused with a message naming the file. The file is
//! opened without blocking and judged on the opened descriptor, so it cannot be swapped for a
//! FIFO between a check and the read.

use std::io::Read;
use std::path::Path;

/// The largest group file, base file, script, user data or old-format file read.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// The largest token or credential file read.
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Why an input could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The OS refused (missing, permissions…).
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// Not a regular file.
    #[error("it is a {kind}, not a regular file: only regular files (or links to one) are read")]
    NotRegular {
        /// What it is.
        kind: &'static str,
    },
    /// Too big.
    #[error("it is larger than {limit} bytes: is it the right file?")]
    TooLarge {
        /// The cap.
        limit: u64,
    },
    /// Not UTF-8.
    #[error("it is not UTF-8 text")]
    NotText,
}

impl FileError {
    /// Whether the file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }
}

fn kind_of(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "FIFO";
        }
        if file_type.is_char_device() {
            return "character device";
        }
        if file_type.is_block_device() {
            return "block device";
        }
        if file_type.is_socket() {
            return "socket";
        }
    }
    if file_type.is_dir() {
        "folder"
    } else {
        "special file"
    }
}

/// Reads `path` as bytes if it is a regular file of at most `limit` bytes.
pub fn read_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Opening a FIFO for reading would wait for a writer; non-blocking returns at once.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(FileError::NotRegular {
            kind: kind_of(metadata.file_type()),
        });
    }
    if metadata.len() > limit {
        return Err(FileError::TooLarge { limit });
    }
    let mut bytes = Vec::with_capacity(metadata.len() as usize);
    file.take(limit + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > limit {
        return Err(FileError::TooLarge { limit });
    }
    Ok(bytes)
}

/// Reads `path` as UTF-8 text if it is a regular file of at most `limit` bytes.
pub fn read_text(path: &Path, limit: u64) -> Result<String, FileError> {
    String::from_utf8(read_bytes(path, limit)?).map_err(|_| FileError::NotText)
}

/// Reads a configuration file (group, base, script, user data) under [`MAX_CONFIG_BYTES`].
pub fn read_config(path: &Path) -> Result<String, FileError> {
    read_text(path, MAX_CONFIG_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifos_devices_and_huge_files_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("web.toml");
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o644) }, 0);
        let error = read_config(&fifo).unwrap_err();
        assert!(error.to_string().contains("FIFO"), "{error}");
        let zero = dir.path().join("zero.toml");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        let error = read_config(&zero).unwrap_err();
        assert!(error.to_string().contains("character device"), "{error}");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, vec![b'#'; MAX_CONFIG_BYTES as usize + 1]).unwrap();
        assert!(matches!(read_config(&big), Err(FileError::TooLarge { .. })));
        let fine = dir.path().join("fine.toml");
        std::fs::write(&fine, "tag = \"web\"\n").unwrap();
        assert_eq!(read_config(&fine).unwrap(), "tag = \"web\"\n");
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&fine, &link).unwrap();
        assert_eq!(read_config(&link).unwrap(), "tag = \"web\"\n");
    }
}
