//! The binary layout on disk: reading and writing `cifar-10-batches-bin/`, the checksum memo,
//! and the staging directory that makes every cache appear whole or not at all.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::{Cifar10, DataError, FileReport, ImageSet, CIFAR10_CLASSES, IMAGE_BYTES, RECORD_BYTES};

/// The cache directory's name inside the data directory (the official archive's folder).
pub const CACHE_DIR_NAME: &str = "cifar-10-batches-bin";
/// The data files, in checksum order: five training files, then the test file.
pub const DATA_FILES: [&str; 6] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
    "test_batch.bin",
];
/// Class names, one per line (blank lines ignored); CIFAR-10's when absent.
pub const META_FILE: &str = "batches.meta.txt";
pub(crate) const SOURCE_FILE: &str = "source.txt";
pub(crate) const MEMO_FILE: &str = ".checksum-memo";
/// Size and SHA-256 of each data file as the import wrote it, and of all six in order (the
/// data checksum). Caches written before it existed have none and load as before.
pub(crate) const MANIFEST_FILE: &str = "manifest.txt";
/// Files modified less than this long ago are not memoised (timestamps are coarse: a file
/// rewritten within the same tick would keep its key).
const RACY: Duration = Duration::from_secs(2);

/// Read a cache directory in the binary layout (also the extracted official archive),
/// validating sizes and labels. The checksum comes from the memo when the files' sizes and
/// times still match it, else it is computed (and memoised).
pub fn read_cache_dir(dir: &Path) -> Result<Cifar10, DataError> {
    read_cache_dir_with(dir, false, RACY).map(|(d, _)| d)
}

/// [`read_cache_dir`], always rehashing, also returning the per-file report.
pub(crate) fn read_cache_dir_full(
    dir: &Path,
    force_hash: bool,
) -> Result<(Cifar10, Vec<FileReport>), DataError> {
    read_cache_dir_with(dir, force_hash, RACY)
}

pub(crate) fn read_cache_dir_with(
    dir: &Path,
    force_hash: bool,
    racy: Duration,
) -> Result<(Cifar10, Vec<FileReport>), DataError> {
    let classes = read_meta(dir)?;
    let mut metas = Vec::with_capacity(DATA_FILES.len());
    for name in DATA_FILES {
        let path = dir.join(name);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => metas.push(m),
            Ok(_) => {
                return Err(DataError::Layout {
                    path,
                    reason: "is not a regular file".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(DataError::Layout {
                    path: dir.to_path_buf(),
                    reason: format!(
                        "incomplete CIFAR-10 binary layout: {name} is missing (delete the \
                         directory to import or download again)"
                    ),
                })
            }
            Err(e) => return Err(DataError::io(path, e)),
        }
    }
    // How a damaged cache is caught, while a cached load stays fast (~0.35 s for 180 MB):
    // - sizes against the manifest, always (free): a shortened file;
    // - a file of nothing but zero bytes, always (the scan stops at the first non-zero byte,
    //   so it costs nothing on real data, and covers caches without a manifest);
    // - the SHA-256 against the manifest whenever it is computed: by `verify`, and on every
    //   load whose checksum memo does not match. The memo is keyed by size, mtime, inode and
    //   ctime, so any rewrite of a file since the last verified hash misses it; rehashing on
    //   every load would double its time for no gain.
    for (name, m) in DATA_FILES.iter().zip(&metas) {
        let rem = m.len() % RECORD_BYTES as u64;
        if rem != 0 {
            return Err(DataError::BadSize {
                path: dir.join(name),
                len: m.len(),
                reason: format!(
                    "not a whole number of {RECORD_BYTES}-byte records (1 label byte + {IMAGE_BYTES} pixel bytes)"
                ),
            });
        }
    }
    let manifest = read_manifest(dir)?;
    if let Some(m) = &manifest {
        for ((name, meta), (want, _)) in DATA_FILES.iter().zip(&metas).zip(&m.files) {
            if meta.len() != *want {
                return Err(DataError::Damaged {
                    path: dir.join(name),
                    reason: format!(
                        "{} bytes, but the import wrote {want} (truncated or overwritten)",
                        meta.len()
                    ),
                });
            }
        }
    }
    let records: Vec<usize> = metas
        .iter()
        .map(|m| (m.len() / RECORD_BYTES as u64) as usize)
        .collect();
    let n_train: usize = records[..5].iter().sum();
    let n_test = records[5];
    if n_train == 0 {
        return Err(DataError::Empty {
            path: dir.to_path_buf(),
            reason: "data_batch_1.bin .. data_batch_5.bin hold no records".into(),
        });
    }
    if n_test == 0 {
        return Err(DataError::Empty {
            path: dir.join(DATA_FILES[5]),
            reason: "no records".into(),
        });
    }

    let key = memo_key(&metas);
    let memo = if force_hash {
        None
    } else {
        read_memo(dir, &key).filter(|d| manifest.as_ref().is_none_or(|m| *d == m.all))
    };
    let mut hasher = memo.is_none().then(Sha256::new);

    let mut train = ImageSet {
        images: Vec::with_capacity(n_train * IMAGE_BYTES),
        labels: Vec::with_capacity(n_train),
    };
    let mut test = ImageSet {
        images: Vec::with_capacity(n_test * IMAGE_BYTES),
        labels: Vec::with_capacity(n_test),
    };
    let mut buf = Vec::new();
    let mut files = Vec::with_capacity(DATA_FILES.len());
    for (i, name) in DATA_FILES.iter().enumerate() {
        let path = dir.join(name);
        buf.clear();
        File::open(&path)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .map_err(|e| DataError::io(&path, e))?;
        if buf.len() as u64 != metas[i].len() {
            return Err(DataError::BadSize {
                path,
                len: buf.len() as u64,
                reason: format!("changed while being read (was {} bytes)", metas[i].len()),
            });
        }
        if let Some(h) = hasher.as_mut() {
            h.update(&buf);
        }
        if !buf.is_empty() && buf.iter().all(|&b| b == 0) {
            // Every image black and labelled 0: what a file zeroed by a crash or a failing
            // disk looks like, never data.
            return Err(DataError::Damaged {
                path,
                reason: "every byte is zero".into(),
            });
        }
        let set = if i < 5 { &mut train } else { &mut test };
        parse_records(&path, &buf, classes.len(), set)?;
        files.push(FileReport {
            name: name.to_string(),
            bytes: metas[i].len(),
            records: records[i],
        });
    }
    let checksum = match (memo, hasher) {
        (Some(m), _) => m,
        (None, Some(h)) => {
            let digest = hex(&h.finalize());
            if let Some(m) = &manifest {
                if digest != m.all {
                    return Err(find_damaged(dir, m));
                }
            }
            if fresh_enough(&metas, racy) {
                if let Err(e) = write_memo(dir, &key, &digest) {
                    tracing::debug!("could not write {}: {e}", dir.join(MEMO_FILE).display());
                }
            }
            digest
        }
        (None, None) => unreachable!(),
    };
    let source = describe(dir);
    Ok((
        Cifar10 {
            train,
            test,
            classes,
            checksum,
            source,
        },
        files,
    ))
}

/// What [`MANIFEST_FILE`] records.
pub(crate) struct Manifest {
    /// (size, SHA-256) of each of [`DATA_FILES`], in that order.
    files: Vec<(u64, String)>,
    /// SHA-256 of the six files concatenated: the data checksum.
    all: String,
}

impl Manifest {
    fn text(&self) -> String {
        let mut t = String::from(
            "# size and SHA-256 of each data file as imported, then of all six in order\n",
        );
        for (name, (bytes, sum)) in DATA_FILES.iter().zip(&self.files) {
            t.push_str(&format!("{name} {bytes} {sum}\n"));
        }
        t.push_str(&format!("all {}\n", self.all));
        t
    }
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn read_manifest(dir: &Path) -> Result<Option<Manifest>, DataError> {
    let path = dir.join(MANIFEST_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(DataError::io(path, e)),
    };
    let bad = |reason: String| DataError::Damaged {
        path: path.clone(),
        reason,
    };
    let mut files = Vec::with_capacity(DATA_FILES.len());
    let mut all = None;
    let mut lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    for name in DATA_FILES {
        let line = lines
            .next()
            .ok_or_else(|| bad(format!("no line for {name}")))?;
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            [n, bytes, sum] if n == name && is_sha256(sum) => {
                let bytes = bytes
                    .parse()
                    .map_err(|_| bad(format!("size of {name} is not a number: {bytes}")))?;
                files.push((bytes, sum.to_string()));
            }
            _ => {
                return Err(bad(format!(
                    "expected `{name} <bytes> <sha256>`, got `{line}`"
                )))
            }
        }
    }
    if let Some(line) = lines.next() {
        if let ["all", sum] = line.split_whitespace().collect::<Vec<_>>()[..] {
            if is_sha256(sum) {
                all = Some(sum.to_string());
            }
        }
    }
    let all = all.ok_or_else(|| bad("no `all <sha256>` line".into()))?;
    Ok(Some(Manifest { files, all }))
}

/// Hashes the data files one by one to name the first that differs from the manifest (only
/// after the data checksum did not match, so a healthy load never pays for it).
fn find_damaged(dir: &Path, m: &Manifest) -> DataError {
    for (name, (_, want)) in DATA_FILES.iter().zip(&m.files) {
        let path = dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => {
                let got = hex(&Sha256::digest(&bytes));
                if got != *want {
                    return DataError::Damaged {
                        path,
                        reason: format!(
                            "SHA-256 {got} does not match the {want} recorded when it was imported"
                        ),
                    };
                }
            }
            Err(e) => return DataError::io(path, e),
        }
    }
    DataError::Damaged {
        path: dir.join(MANIFEST_FILE),
        reason: "the data checksum does not match the one recorded, though every file does".into(),
    }
}

/// Writes the manifest of the data files in `dir` (as they are now).
pub(crate) fn write_manifest(dir: &Path) -> Result<(), DataError> {
    let mut all = Sha256::new();
    let mut files = Vec::with_capacity(DATA_FILES.len());
    for name in DATA_FILES {
        let path = dir.join(name);
        let bytes = fs::read(&path).map_err(|e| DataError::io(&path, e))?;
        all.update(&bytes);
        files.push((bytes.len() as u64, hex(&Sha256::digest(&bytes))));
    }
    let m = Manifest {
        files,
        all: hex(&all.finalize()),
    };
    write_synced(&dir.join(MANIFEST_FILE), m.text().as_bytes())
}

/// `source.txt`'s line (or "binary layout"), plus where the cache is.
pub(crate) fn describe(dir: &Path) -> String {
    let origin = fs::read_to_string(dir.join(SOURCE_FILE))
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "CIFAR-10 binary layout".to_string());
    format!("{origin}; cache {}", dir.display())
}

fn read_meta(dir: &Path) -> Result<Vec<String>, DataError> {
    let path = dir.join(META_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect())
        }
        Err(e) => return Err(DataError::io(path, e)),
    };
    let classes: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if classes.is_empty() {
        return Err(DataError::Empty {
            path,
            reason: "no class names".into(),
        });
    }
    if classes.len() > 256 {
        return Err(DataError::Layout {
            path,
            reason: format!("{} classes; labels are bytes, at most 256", classes.len()),
        });
    }
    Ok(classes)
}

/// Append the records of `bytes` (a whole number of records) to `set`, checking labels.
pub(crate) fn parse_records(
    path: &Path,
    bytes: &[u8],
    num_classes: usize,
    set: &mut ImageSet,
) -> Result<(), DataError> {
    let rem = bytes.len() % RECORD_BYTES;
    if rem != 0 {
        return Err(DataError::BadSize {
            path: path.to_path_buf(),
            len: bytes.len() as u64,
            reason: format!("not a whole number of {RECORD_BYTES}-byte records"),
        });
    }
    for (record, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let label = rec[0];
        if label as usize >= num_classes {
            return Err(DataError::BadLabel {
                path: path.to_path_buf(),
                record,
                label,
                classes: num_classes,
            });
        }
        set.labels.push(label);
        set.images.extend_from_slice(&rec[1..]);
    }
    Ok(())
}

/// The records of `set[range]` in the binary layout.
pub(crate) fn encode_records(set: &ImageSet, range: Range<usize>) -> Vec<u8> {
    let mut out = Vec::with_capacity(range.len() * RECORD_BYTES);
    for i in range {
        out.push(set.labels[i]);
        out.extend_from_slice(set.image(i));
    }
    out
}

/// How `n` training images are spread over the five training files, in order: as evenly as
/// possible, the first files taking one more when `n` is not a multiple of 5.
pub(crate) fn train_file_ranges(n: usize) -> [Range<usize>; 5] {
    let mut start = 0;
    std::array::from_fn(|k| {
        let len = n / 5 + usize::from(k < n % 5);
        let r = start..start + len;
        start += len;
        r
    })
}

/// The six data files of the binary layout, in [`DATA_FILES`] order: `train` spread over the
/// five training files, then `test`.
pub(crate) fn encode_files<'a>(
    train: &'a ImageSet,
    test: &'a ImageSet,
) -> impl Iterator<Item = (&'static str, Vec<u8>)> + 'a {
    let ranges = train_file_ranges(train.len());
    DATA_FILES.iter().enumerate().map(move |(i, name)| {
        let bytes = if i < 5 {
            encode_records(train, ranges[i].clone())
        } else {
            encode_records(test, 0..test.len())
        };
        (*name, bytes)
    })
}

/// SHA-256 of what [`write_cache_dir`] would write for these sets (the files concatenate to
/// the training records then the test records, whatever the split over files).
pub(crate) fn sha256_hex_of_sets(train: &ImageSet, test: &ImageSet) -> String {
    let mut h = Sha256::new();
    for set in [train, test] {
        for i in 0..set.len() {
            h.update([set.labels[i]]);
            h.update(set.image(i));
        }
    }
    hex(&h.finalize())
}

/// Write `train` (spread over the five training files) and `test` in the binary layout into
/// `dir` (created if needed), with `batches.meta.txt` and `source.txt`; every file is fsync'd.
/// Returns the checksum. This writes in place: for an atomic cache, write into a staging
/// directory and rename it (as [`super::import`] does).
pub fn write_cache_dir(
    dir: &Path,
    train: &ImageSet,
    test: &ImageSet,
    classes: &[String],
    source: &str,
) -> Result<String, DataError> {
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    let mut h = Sha256::new();
    let mut files = Vec::with_capacity(DATA_FILES.len());
    for (name, bytes) in encode_files(train, test) {
        h.update(&bytes);
        files.push((bytes.len() as u64, hex(&Sha256::digest(&bytes))));
        write_synced(&dir.join(name), &bytes)?;
    }
    let mut meta = classes.join("\n");
    meta.push('\n');
    write_synced(&dir.join(META_FILE), meta.as_bytes())?;
    write_synced(&dir.join(SOURCE_FILE), format!("{source}\n").as_bytes())?;
    let all = hex(&h.finalize());
    let manifest = Manifest {
        files,
        all: all.clone(),
    };
    write_synced(&dir.join(MANIFEST_FILE), manifest.text().as_bytes())?;
    Ok(all)
}

pub(crate) fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let mut f = File::create(path).map_err(|e| DataError::io(path, e))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .map_err(|e| DataError::io(path, e))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn nanos(t: std::io::Result<SystemTime>) -> u128 {
    t.ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos())
}

fn memo_key(metas: &[fs::Metadata]) -> String {
    let mut key = String::new();
    for (name, m) in DATA_FILES.iter().zip(metas) {
        key.push_str(&format!("{name} {} {}", m.len(), nanos(m.modified())));
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            key.push_str(&format!(" {} {} {}", m.ino(), m.ctime(), m.ctime_nsec()));
        }
        key.push('\n');
    }
    key
}

/// Whether every file was last changed more than `racy` ago.
fn fresh_enough(metas: &[fs::Metadata], racy: Duration) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    metas.iter().all(|m| {
        #[allow(unused_mut)]
        let mut changed = nanos(m.modified());
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            let ctime = m.ctime().max(0) as u128 * 1_000_000_000 + m.ctime_nsec().max(0) as u128;
            changed = changed.max(ctime);
        }
        now.saturating_sub(changed) > racy.as_nanos()
    })
}

fn read_memo(dir: &Path, key: &str) -> Option<String> {
    let text = fs::read_to_string(dir.join(MEMO_FILE)).ok()?;
    let (first, rest) = text.split_once('\n')?;
    let digest = first.strip_prefix("sha256 ")?.trim();
    (rest == key && digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit()))
        .then(|| digest.to_string())
}

fn write_memo(dir: &Path, key: &str, digest: &str) -> Result<(), DataError> {
    let tmp = dir.join(format!("{MEMO_FILE}.tmp-{}", unique_suffix()));
    let res = write_synced(&tmp, format!("sha256 {digest}\n{key}").as_bytes()).and_then(|_| {
        fs::rename(&tmp, dir.join(MEMO_FILE)).map_err(|e| DataError::io(dir.join(MEMO_FILE), e))
    });
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    res
}

/// `<pid>-<nanoseconds>-<counter>`: unique between processes and threads.
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "{}-{t}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Prefixes of the temporary names this module creates in a data directory.
pub(crate) const STAGING_PREFIX: &str = ".cifar-10-batches-bin.tmp-";
pub(crate) const OLD_PREFIX: &str = ".cifar-10-batches-bin.old-";
pub(crate) const PART_PREFIX: &str = ".cifar-10-binary.tar.gz.part-";

/// A directory in the data directory that is removed on drop unless committed.
pub(crate) struct Staging {
    path: PathBuf,
    data_dir: PathBuf,
    committed: bool,
}

/// What happened to a staging directory on [`Staging::commit`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Commit {
    /// Ours is the cache now.
    Installed,
    /// Another process installed a cache first; ours was discarded.
    LostRace,
}

impl Staging {
    pub(crate) fn new(data_dir: &Path) -> Result<Staging, DataError> {
        let path = data_dir.join(format!("{STAGING_PREFIX}{}", unique_suffix()));
        fs::create_dir(&path).map_err(|e| DataError::io(&path, e))?;
        Ok(Staging {
            path,
            data_dir: data_dir.to_path_buf(),
            committed: false,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// fsync the staging directory, then rename it to `target`. With `replace`, an existing
    /// `target` is swapped out (moved aside, then removed); without, an existing `target`
    /// means another process won: ours is dropped.
    pub(crate) fn commit(mut self, target: &Path, replace: bool) -> Result<Commit, DataError> {
        sync_dir(&self.path);
        let outcome = if replace && target.exists() {
            let old = self
                .data_dir
                .join(format!("{OLD_PREFIX}{}", unique_suffix()));
            let moved = fs::rename(target, &old).is_ok();
            match fs::rename(&self.path, target) {
                Ok(()) => {
                    self.committed = true;
                    if moved {
                        let _ = fs::remove_dir_all(&old);
                    }
                    Commit::Installed
                }
                Err(e) => {
                    if moved {
                        let _ = fs::rename(&old, target);
                    }
                    return Err(DataError::io(target, e));
                }
            }
        } else {
            match fs::rename(&self.path, target) {
                Ok(()) => {
                    self.committed = true;
                    Commit::Installed
                }
                Err(_) if target.join(DATA_FILES[5]).exists() => Commit::LostRace,
                Err(e) => return Err(DataError::io(target, e)),
            }
        };
        sync_dir(&self.data_dir);
        Ok(outcome)
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A file in the data directory that is removed on drop unless kept.
pub(crate) struct TempFile(pub(crate) PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}

/// Create `data_dir` if needed; returns whether it was created (so a failure can remove it).
pub(crate) fn ensure_data_dir(data_dir: &Path) -> Result<bool, DataError> {
    if data_dir.is_dir() {
        return Ok(false);
    }
    fs::create_dir_all(data_dir).map_err(|e| DataError::io(data_dir, e))?;
    Ok(true)
}

/// Remove temporary files and directories that processes which no longer run left in
/// `data_dir` (Linux only: liveness is read from /proc; elsewhere nothing is removed).
pub(crate) fn remove_stale(data_dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(rd) = fs::read_dir(data_dir) else {
        return;
    };
    for entry in rd.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = [STAGING_PREFIX, OLD_PREFIX, PART_PREFIX]
            .iter()
            .find_map(|p| name.strip_prefix(p))
        else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new("/proc").join(pid.to_string()).exists() {
            tracing::info!("removing stale {}", entry.path().display());
            let _ = fs::remove_dir_all(entry.path()).or_else(|_| fs::remove_file(entry.path()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::*;

    fn names(classes: &[&str]) -> Vec<String> {
        classes.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn binary_round_trip() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(CACHE_DIR_NAME);
        let train = synthetic_records(13, 10, 1);
        let test = synthetic_records(4, 10, 2);
        let classes = names(&CIFAR10_CLASSES);
        let sum = write_cache_dir(&dir, &train, &test, &classes, "unit test").unwrap();
        assert_eq!(sum, sha256_hex_of_sets(&train, &test));
        let sizes: Vec<u64> = DATA_FILES
            .iter()
            .map(|n| fs::metadata(dir.join(n)).unwrap().len() / RECORD_BYTES as u64)
            .collect();
        assert_eq!(sizes, vec![3, 3, 3, 2, 2, 4]);
        let d = read_cache_dir(&dir).unwrap();
        assert_eq!(d.train, train);
        assert_eq!(d.test, test);
        assert_eq!(d.classes, classes);
        assert_eq!(d.checksum, sum);
        assert!(d.source.starts_with("unit test; cache "), "{}", d.source);
        // The layout is the official one: record 1 of data_batch_1 = label, R, G, B planes.
        let raw = fs::read(dir.join("data_batch_1.bin")).unwrap();
        assert_eq!(raw[RECORD_BYTES], train.labels[1]);
        assert_eq!(&raw[RECORD_BYTES + 1..2 * RECORD_BYTES], train.image(1));
    }

    #[test]
    fn train_files_are_spread_in_order() {
        let lens = |n| train_file_ranges(n).map(|r| r.len());
        assert_eq!(lens(50_000), [10_000; 5]);
        assert_eq!(lens(7), [2, 2, 1, 1, 1]);
        assert_eq!(lens(3), [1, 1, 1, 0, 0]);
        assert_eq!(train_file_ranges(7)[4], 6..7);
    }

    #[test]
    fn meta_absent_means_cifar10_names_and_custom_names_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let (train, test) = (synthetic_records(6, 3, 1), synthetic_records(3, 3, 2));
        write_cache_dir(&dir, &train, &test, &names(&["x", "y", "z"]), "t").unwrap();
        assert_eq!(
            read_cache_dir(&dir).unwrap().classes,
            names(&["x", "y", "z"])
        );
        fs::remove_file(dir.join(META_FILE)).unwrap();
        assert_eq!(read_cache_dir(&dir).unwrap().classes.len(), 10);
    }

    #[test]
    fn wrong_size_file_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let (train, test) = (synthetic_records(10, 10, 1), synthetic_records(3, 10, 2));
        write_cache_dir(&dir, &train, &test, &names(&CIFAR10_CLASSES), "t").unwrap();
        let p = dir.join("data_batch_3.bin");
        let mut bytes = fs::read(&p).unwrap();
        bytes.push(0);
        fs::write(&p, &bytes).unwrap();
        let err = read_cache_dir(&dir).unwrap_err();
        assert!(matches!(err, DataError::BadSize { len: 6147, .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("data_batch_3.bin") && msg.contains("3073"),
            "{msg}"
        );
    }

    #[test]
    fn bad_label_and_missing_file_and_empty_test() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let (mut train, test) = (synthetic_records(10, 10, 1), synthetic_records(3, 10, 2));
        train.labels[4] = 10;
        write_cache_dir(&dir, &train, &test, &names(&CIFAR10_CLASSES), "t").unwrap();
        let err = read_cache_dir(&dir).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::BadLabel {
                    label: 10,
                    record: 0,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("data_batch_3.bin"), "{err}");

        fs::remove_file(dir.join("data_batch_4.bin")).unwrap();
        let err = read_cache_dir(&dir).unwrap_err();
        assert!(
            err.to_string().contains("data_batch_4.bin is missing"),
            "{err}"
        );

        let (train, test) = (synthetic_records(10, 10, 1), ImageSet::default());
        write_cache_dir(&dir, &train, &test, &names(&CIFAR10_CLASSES), "t").unwrap();
        let err = read_cache_dir(&dir).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err}");
    }

    #[test]
    fn the_manifest_catches_damage_and_caches_without_one_still_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let (train, test) = (synthetic_records(10, 10, 1), synthetic_records(3, 10, 2));
        let sum = write_cache_dir(&dir, &train, &test, &names(&CIFAR10_CLASSES), "t").unwrap();
        let manifest = fs::read_to_string(dir.join(MANIFEST_FILE)).unwrap();
        assert!(manifest.contains(&format!("all {sum}")), "{manifest}");
        let p = dir.join("test_batch.bin");
        let good = fs::read(&p).unwrap();
        // One flipped byte at the same size: the checksum names the file.
        let mut flipped = good.clone();
        flipped[7] ^= 1;
        fs::write(&p, &flipped).unwrap();
        let err = read_cache_dir(&dir).unwrap_err();
        assert!(
            matches!(&err, DataError::Damaged { path, .. } if path.ends_with("test_batch.bin")),
            "{err}"
        );
        // A record cut off: the size names it, before any hashing.
        fs::write(&p, &good[..2 * RECORD_BYTES]).unwrap();
        let err = read_cache_dir(&dir).unwrap_err().to_string();
        assert!(
            err.contains("test_batch.bin") && err.contains("truncated"),
            "{err}"
        );
        // Without a manifest (an older cache) the same data loads, and zeros are still caught.
        fs::write(&p, &good).unwrap();
        fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
        assert_eq!(read_cache_dir(&dir).unwrap().checksum, sum);
        fs::write(&p, vec![0u8; good.len()]).unwrap();
        let err = read_cache_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("every byte is zero"), "{err}");
        // An unreadable manifest is itself damage, named.
        fs::write(&p, &good).unwrap();
        fs::write(dir.join(MANIFEST_FILE), "garbage\n").unwrap();
        let err = read_cache_dir(&dir).unwrap_err().to_string();
        assert!(err.contains("manifest.txt"), "{err}");
    }

    #[test]
    fn checksum_memo_is_used_and_invalidated() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c");
        let (train, test) = (synthetic_records(10, 10, 1), synthetic_records(3, 10, 2));
        let sum = write_cache_dir(&dir, &train, &test, &names(&CIFAR10_CLASSES), "t").unwrap();
        // Files just written are too recent to memoise with the default window.
        assert_eq!(read_cache_dir(&dir).unwrap().checksum, sum);
        assert!(!dir.join(MEMO_FILE).exists());
        let (d, _) = read_cache_dir_with(&dir, false, Duration::ZERO).unwrap();
        assert_eq!(d.checksum, sum);
        let memo = fs::read_to_string(dir.join(MEMO_FILE)).unwrap();
        assert!(memo.starts_with(&format!("sha256 {sum}\n")));
        // A memo that disagrees with the manifest is not trusted: the files are hashed.
        let fake = "ab".repeat(32);
        fs::write(dir.join(MEMO_FILE), memo.replace(&sum, &fake)).unwrap();
        assert_eq!(read_cache_dir(&dir).unwrap().checksum, sum);
        // Without a manifest (a cache of an older version) the memo is what is read back:
        // fake its digest to see it used.
        fs::remove_file(dir.join(MANIFEST_FILE)).unwrap();
        fs::write(dir.join(MEMO_FILE), memo.replace(&sum, &fake)).unwrap();
        assert_eq!(read_cache_dir(&dir).unwrap().checksum, fake);
        // verify-style reads rehash.
        assert_eq!(read_cache_dir_full(&dir, true).unwrap().0.checksum, sum);
        // Changing a file changes its key: the memo is ignored.
        fs::write(dir.join(MEMO_FILE), memo.replace(&sum, &fake)).unwrap();
        let p = dir.join("test_batch.bin");
        let mut bytes = fs::read(&p).unwrap();
        bytes[5] ^= 0xff;
        fs::write(&p, &bytes).unwrap();
        let d = read_cache_dir(&dir).unwrap();
        assert_ne!(d.checksum, fake);
        assert_ne!(d.checksum, sum);
    }

    #[test]
    fn staging_is_removed_unless_committed_and_race_is_detected() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path();
        let s = Staging::new(data).unwrap();
        let p = s.path().to_path_buf();
        assert!(p.is_dir());
        drop(s);
        assert!(!p.exists());

        let target = data.join(CACHE_DIR_NAME);
        let (train, test) = (synthetic_records(5, 10, 1), synthetic_records(2, 10, 2));
        let classes = names(&CIFAR10_CLASSES);
        let a = Staging::new(data).unwrap();
        write_cache_dir(a.path(), &train, &test, &classes, "a").unwrap();
        let b = Staging::new(data).unwrap();
        write_cache_dir(b.path(), &train, &test, &classes, "b").unwrap();
        assert_eq!(a.commit(&target, false).unwrap(), Commit::Installed);
        assert_eq!(b.commit(&target, false).unwrap(), Commit::LostRace);
        assert!(read_cache_dir(&target).unwrap().source.starts_with("a;"));
        let c = Staging::new(data).unwrap();
        write_cache_dir(c.path(), &train, &test, &classes, "c").unwrap();
        assert_eq!(c.commit(&target, true).unwrap(), Commit::Installed);
        assert!(read_cache_dir(&target).unwrap().source.starts_with("c;"));
        assert_eq!(dir_entries(data), vec![CACHE_DIR_NAME.to_string()]);
    }

    #[test]
    fn stale_temporaries_of_dead_processes_are_removed() {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        // pid 4194304 is above Linux's maximum pid, so never alive.
        let dead = tmp.path().join(format!("{STAGING_PREFIX}4194304-1-0"));
        fs::create_dir(&dead).unwrap();
        let dead_part = tmp.path().join(format!("{PART_PREFIX}4194304-1-0"));
        fs::write(&dead_part, b"x").unwrap();
        let live = Staging::new(tmp.path()).unwrap();
        remove_stale(tmp.path());
        assert!(!dead.exists() && !dead_part.exists());
        assert!(live.path().exists());
    }
}
