//! A directory of files a command makes for itself in the working directory, removed
//! when the command ends, pass or fail.

use std::path::{Path, PathBuf};

pub struct ScratchDir(PathBuf);

impl ScratchDir {
    /// `./{prefix}-{pid}`, created now.
    pub fn create(prefix: &str) -> Result<ScratchDir, String> {
        let dir = PathBuf::from(format!("{prefix}-{}", std::process::id()));
        std::fs::create_dir(&dir).map_err(|e| {
            format!(
                "cannot create {} in the working directory ({e}); run from a writable directory",
                dir.display()
            )
        })?;
        Ok(ScratchDir(dir))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
