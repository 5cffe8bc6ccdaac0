//! Message bodies as spool files, `DIR/spool/ID`, and the pool of recycled ones in
//! `DIR/free/`.
//!
//! A body is made durable the classic way (write, fsync, rename into the spool; the spool
//! directory's fsync is the caller's, shared by a group commit). Creating a file costs an
//! inode allocation, which on some file systems is the largest single cost of accepting a
//! message (ext4 without a journal scans its inode bitmaps for recently deleted inodes on
//! every create). So the queue's owner, the daemon, does not unlink the bodies of finished
//! messages: it moves up to [`POOL_FILES`] of them to `DIR/free/`, emptied (truncated to
//! nothing: the pool keeps inodes, never disk space), and writes new bodies into them
//! (written, `fdatasync`, renamed into the spool). At start it fills the pool up with empty
//! files, so that a burst of mail after a start costs no creates either. Other processes (`danemta sendmail`, `danemta queue delete`) neither take
//! from nor feed the pool.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::{QueueError, QueueId, io_err};

/// At most this many recycled files wait in `DIR/free/`.
pub(super) const POOL_FILES: usize = 1024;

/// The spool directory and, in the owning process, the pool of recycled files.
#[derive(Debug)]
pub(super) struct Spool {
    dir: PathBuf,
    free: PathBuf,
    /// `None` outside the owning process.
    pool: Option<Pool>,
}

/// Recycled files in `DIR/free/`, at most `capacity` of them.
#[derive(Debug)]
struct Pool {
    files: Mutex<Vec<PathBuf>>,
    capacity: usize,
}

impl Spool {
    /// Opens `DIR/spool` and `DIR/free`, creating them. The owner takes the files left in
    /// `DIR/free/` into its pool, except any that also has a name elsewhere (a crash between
    /// the two halves of a rename on a file system without a journal): writing into it would
    /// overwrite a queued body, so that name is removed instead, as is any file not empty (a
    /// crash before it was emptied). Then it fills the pool up with new empty files.
    pub(super) fn open(queue_dir: &Path, owner: bool) -> Result<Spool, QueueError> {
        Self::with_pool(queue_dir, owner.then_some(POOL_FILES))
    }

    /// [`Spool::open`] with a pool of `capacity` files (`None`: no pool).
    fn with_pool(queue_dir: &Path, capacity: Option<usize>) -> Result<Spool, QueueError> {
        let dir = queue_dir.join("spool");
        let free = queue_dir.join("free");
        for d in [&dir, &free] {
            fs::create_dir_all(d).map_err(io_err(d))?;
        }
        let pool = if let Some(capacity) = capacity {
            let mut files = Vec::new();
            for entry in fs::read_dir(&free).map_err(io_err(&free))? {
                let path = entry.map_err(io_err(&free))?.path();
                let usable = fs::symlink_metadata(&path)
                    .is_ok_and(|m| m.is_file() && m.nlink() == 1 && m.len() == 0);
                if usable && files.len() < capacity {
                    files.push(path);
                } else {
                    fs::remove_file(&path).map_err(io_err(&path))?;
                }
            }
            while files.len() < capacity {
                let path = free.join(QueueId::generate().as_str());
                File::create_new(&path).map_err(io_err(&path))?;
                files.push(path);
            }
            Some(Pool {
                files: Mutex::new(files),
                capacity,
            })
        } else {
            None
        };
        Ok(Spool { dir, free, pool })
    }

    /// The spool directory.
    pub(super) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the body of `id` lives.
    pub(super) fn path(&self, id: &QueueId) -> PathBuf {
        self.dir.join(id.as_str())
    }

    /// Writes the body of `id` and fsyncs it; its name in the spool is durable only after
    /// [`Spool::sync`]. A recycled file is used when the pool has one.
    pub(super) fn write(&self, id: &QueueId, body: &[u8]) -> Result<(), QueueError> {
        let path = self.path(id);
        if path.exists() {
            return Err(QueueError::Exists(id.clone()));
        }
        match self.take() {
            Some(recycled) => {
                let written = OpenOptions::new()
                    .write(true)
                    .open(&recycled)
                    .and_then(|mut f| {
                        f.write_all(body)?;
                        f.sync_data()
                    })
                    .and_then(|()| fs::rename(&recycled, &path));
                if let Err(e) = written {
                    let _ = fs::remove_file(&recycled);
                    return Err(io_err(&path)(e));
                }
                Ok(())
            }
            None => write_file(&path, body),
        }
    }

    /// Makes the names written or removed since the last call durable (fsync of the spool
    /// directory).
    pub(super) fn sync(&self) -> Result<(), QueueError> {
        fsync_dir(&self.dir)
    }

    /// Removes the body of `id` (a missing one is not an error). The owner recycles it,
    /// emptied. The removal is not fsynced: should a crash undo it, recovery finds a body
    /// without a row and quarantines it, which costs disk, never a message.
    pub(super) fn remove(&self, id: &QueueId) -> Result<(), QueueError> {
        let path = self.path(id);
        let pool = self
            .pool
            .as_ref()
            .and_then(|p| Some((p.files.lock().ok()?, p.capacity)));
        let result = match pool {
            Some((mut files, capacity)) if files.len() < capacity => {
                let target = self.free.join(id.as_str());
                fs::rename(&path, &target)
                    .and_then(|()| OpenOptions::new().write(true).open(&target))
                    .and_then(|f| f.set_len(0))
                    .map(|()| files.push(target))
            }
            _ => fs::remove_file(&path),
        };
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path)(e)),
        }
    }

    /// A recycled file from the pool, if there is one.
    fn take(&self) -> Option<PathBuf> {
        self.pool.as_ref()?.files.lock().ok()?.pop()
    }

    /// How many recycled files wait in the pool (0 outside the owner).
    #[cfg(test)]
    fn pooled(&self) -> usize {
        self.pool
            .as_ref()
            .and_then(|p| p.files.lock().ok().map(|f| f.len()))
            .unwrap_or(0)
    }
}

pub(super) fn fsync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))
}

/// Writes `bytes` to `path` through a temporary name: write, fsync the file, rename, fsync
/// the directory.
pub(super) fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), QueueError> {
    write_file(path, bytes)?;
    fsync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// Writes `bytes` to `path` through a temporary name: write, fsync the file, rename. The
/// name is durable only once the directory is fsynced (the caller's job).
fn write_file(path: &Path, bytes: &[u8]) -> Result<(), QueueError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_owned();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            f.sync_all()
        })
        .and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = written {
        // A full disk must not leave half a file behind (recovery would remove it anyway).
        let _ = fs::remove_file(&tmp);
        return Err(io_err(path)(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::tests::Dir;

    fn id(n: u8) -> QueueId {
        QueueId::try_from(format!("{:024X}", n)).unwrap()
    }

    #[test]
    fn write_durably_leaves_no_temporary_file() {
        let dir = Dir::new("spool-1");
        let path = dir.0.as_path().join("file");
        write_durably(&path, b"content").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"content");
        assert_eq!(fs::read_dir(dir.0.as_path()).unwrap().count(), 1);
    }

    #[test]
    fn the_owner_starts_with_a_full_pool_and_recycles_finished_bodies() {
        let dir = Dir::new("spool-recycle");
        let spool = Spool::with_pool(dir.0.as_path(), Some(1)).unwrap();
        assert_eq!(spool.pooled(), 1);
        assert_eq!(fs::read_dir(dir.0.join("free")).unwrap().count(), 1);
        spool.write(&id(1), b"a long first body").unwrap();
        assert_eq!(spool.pooled(), 0);
        let inode = fs::metadata(spool.path(&id(1))).unwrap().ino();
        spool.remove(&id(1)).unwrap();
        assert!(!spool.path(&id(1)).exists());
        assert_eq!(spool.pooled(), 1);
        spool.write(&id(2), b"short").unwrap();
        // The same inode, emptied when recycled: no stale tail of the old body.
        assert_eq!(fs::metadata(spool.path(&id(2))).unwrap().ino(), inode);
        assert_eq!(fs::read(spool.path(&id(2))).unwrap(), b"short");
        assert!(matches!(
            spool.write(&id(2), b"again"),
            Err(QueueError::Exists(_))
        ));
    }

    #[test]
    fn other_processes_neither_take_nor_feed_the_pool() {
        let dir = Dir::new("spool-3");
        let spool = Spool::open(dir.0.as_path(), false).unwrap();
        spool.write(&id(1), b"body").unwrap();
        spool.remove(&id(1)).unwrap();
        assert_eq!(
            fs::read_dir(dir.0.as_path().join("free")).unwrap().count(),
            0
        );
        assert_eq!(fs::read_dir(spool.dir()).unwrap().count(), 0);
        spool.remove(&id(1)).unwrap(); // already gone: fine
    }

    #[test]
    fn a_pooled_file_with_a_second_name_is_never_written_into() {
        let dir = Dir::new("spool-linked");
        {
            let spool = Spool::with_pool(dir.0.as_path(), Some(2)).unwrap();
            spool.write(&id(1), b"queued body").unwrap();
            spool.write(&id(2), b"finished body").unwrap();
            spool.remove(&id(2)).unwrap();
        }
        // A crash half way through a rename left a queued body also named in the pool.
        let linked = dir.0.join("free").join("linked");
        fs::hard_link(dir.0.join("spool").join(id(1).as_str()), &linked).unwrap();
        let spool = Spool::with_pool(dir.0.as_path(), Some(2)).unwrap();
        assert!(!linked.exists());
        assert_eq!(spool.pooled(), 2);
        spool.write(&id(3), b"new").unwrap();
        spool.write(&id(4), b"new").unwrap();
        assert_eq!(fs::read(spool.path(&id(1))).unwrap(), b"queued body");
    }

    #[test]
    fn the_pool_is_bounded_and_holds_no_disk_space() {
        let dir = Dir::new("spool-5");
        let spool = Spool::with_pool(dir.0.as_path(), Some(3)).unwrap();
        for i in 0..5 {
            spool.write(&id(i), b"x").unwrap();
        }
        for i in 0..5 {
            spool.remove(&id(i)).unwrap();
        }
        assert_eq!(spool.pooled(), 3);
        assert_eq!(
            fs::read_dir(dir.0.as_path().join("free")).unwrap().count(),
            3
        );
        // Recycled files are emptied: the pool holds inodes, never disk space.
        let big = vec![b'x'; 1 << 20];
        spool.write(&id(9), &big).unwrap();
        assert_eq!(spool.pooled(), 2);
        spool.remove(&id(9)).unwrap();
        assert_eq!(spool.pooled(), 3);
        for entry in fs::read_dir(dir.0.as_path().join("free")).unwrap() {
            assert_eq!(entry.unwrap().metadata().unwrap().len(), 0);
        }
        // At the next start, only what fits is kept.
        let spool = Spool::with_pool(dir.0.as_path(), Some(1)).unwrap();
        assert_eq!(spool.pooled(), 1);
        assert_eq!(
            fs::read_dir(dir.0.as_path().join("free")).unwrap().count(),
            1
        );
    }
}
