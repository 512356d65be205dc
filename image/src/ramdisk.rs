//! Deterministic ramdisks: cpio (newc, what the kernel unpacks) in gzip.
//!
//! The same entries give the same bytes whatever order they were added in
//! and whatever the files' times, owners or inode numbers on this machine:
//! entries are sorted by path with every parent before its children,
//! owned by root, dated 0, numbered in order, and the gzip header carries
//! no name and no time. That is what makes PCR0 reproducible.

use cpio::newc::{Builder, ModeFileType, trailer};
use flate2::{Compression, GzBuilder};
use std::collections::BTreeMap;
use std::io::Write;

/// One entry's kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory (mode 0755).
    Dir,
    /// A file with its permission bits.
    File {
        /// `0o755` for programs, `0o644` otherwise.
        mode: u32,
        /// Its contents.
        bytes: Vec<u8>,
    },
    /// A character device (`/dev/console` must exist before the kernel
    /// starts init, or init has no console).
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// A ramdisk being assembled: paths (without a leading `/`) to entries.
#[derive(Debug, Default, Clone)]
pub struct Ramdisk {
    entries: BTreeMap<String, Node>,
}

impl Ramdisk {
    /// An empty ramdisk.
    pub fn new() -> Ramdisk {
        Ramdisk::default()
    }

    /// Adds `node` at `path` and every missing parent directory.
    pub fn add(&mut self, path: &str, node: Node) {
        let path = path.trim_start_matches('/');
        let mut parent = String::new();
        for part in path
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, p)| p)
        {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Node::Dir);
        }
        self.entries.insert(path.to_owned(), node);
    }

    /// Adds a file.
    pub fn file(&mut self, path: &str, mode: u32, bytes: Vec<u8>) {
        self.add(path, Node::File { mode, bytes });
    }

    /// The gzip-compressed cpio archive.
    pub fn to_bytes(&self) -> std::io::Result<Vec<u8>> {
        // The header's time is 0 and it names no file; the OS byte is
        // flate2's fixed "unknown" (255), not this machine's. flate2's
        // default level: any fixed level gives the same bytes every time,
        // and "best" spent far more CPU on the runtime binary.
        let mut gz = GzBuilder::new()
            .mtime(0)
            .write(Vec::new(), Compression::default());
        // BTreeMap order puts "a" before "a/b": parents come first.
        for (ino, (path, node)) in self.entries.iter().enumerate() {
            let entry = Builder::new(path)
                .ino(u32::try_from(ino + 1).unwrap_or(u32::MAX))
                .uid(0)
                .gid(0)
                .mtime(0);
            let (entry, bytes): (Builder, &[u8]) = match node {
                Node::Dir => (
                    entry
                        .mode(0o755)
                        .nlink(2)
                        .set_mode_file_type(ModeFileType::Directory),
                    &[],
                ),
                Node::File { mode, bytes } => (
                    entry
                        .mode(*mode)
                        .nlink(1)
                        .set_mode_file_type(ModeFileType::Regular),
                    bytes,
                ),
                Node::CharDevice { major, minor } => (
                    entry
                        .mode(0o600)
                        .nlink(1)
                        .rdev_major(*major)
                        .rdev_minor(*minor)
                        .set_mode_file_type(ModeFileType::Char),
                    &[],
                ),
            };
            let size = u32::try_from(bytes.len()).map_err(|_| {
                std::io::Error::other(format!("{path} is larger than cpio's 4 GiB per file"))
            })?;
            let mut writer = entry.write(&mut gz, size);
            writer.write_all(bytes)?;
            writer.finish()?;
        }
        trailer(&mut gz)?;
        gz.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(order: &[usize]) -> Ramdisk {
        let items: [(&str, Node); 3] = [
            (
                "nacre/bin/x",
                Node::File {
                    mode: 0o755,
                    bytes: b"x".to_vec(),
                },
            ),
            ("dev/console", Node::CharDevice { major: 5, minor: 1 }),
            (
                "init",
                Node::File {
                    mode: 0o755,
                    bytes: b"init".to_vec(),
                },
            ),
        ];
        let mut r = Ramdisk::new();
        for &i in order {
            r.add(items[i].0, items[i].1.clone());
        }
        r
    }

    #[test]
    fn the_same_entries_in_any_order_give_the_same_bytes() {
        let a = sample(&[0, 1, 2]).to_bytes().unwrap();
        let b = sample(&[2, 0, 1]).to_bytes().unwrap();
        assert_eq!(a, b);
        // gzip: no name flag, time 0, OS "unknown".
        assert_eq!(&a[..4], &[0x1f, 0x8b, 8, 0]);
        assert_eq!(&a[4..8], &[0, 0, 0, 0]);
        assert_ne!(a, sample(&[0, 1]).to_bytes().unwrap());
    }

    #[test]
    fn parents_come_first_with_fixed_owners_times_and_modes() {
        let gz = sample(&[0, 1, 2]).to_bytes().unwrap();
        let mut cpio = flate2::read::GzDecoder::new(&gz[..]);
        let mut seen = Vec::new();
        loop {
            let reader = cpio::newc::Reader::new(cpio).unwrap();
            let e = reader.entry();
            if e.is_trailer() {
                break;
            }
            assert_eq!((e.uid(), e.gid(), e.mtime()), (0, 0, 0), "{}", e.name());
            seen.push((e.name().to_owned(), e.mode()));
            cpio = reader.finish().unwrap();
        }
        let names: Vec<_> = seen.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "dev",
                "dev/console",
                "init",
                "nacre",
                "nacre/bin",
                "nacre/bin/x"
            ]
        );
        assert_eq!(seen[0].1, 0o040755);
        assert_eq!(seen[1].1, 0o020600);
        assert_eq!(seen[2].1, 0o100755);
    }
}
