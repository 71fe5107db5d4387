//! CIFAR-10 in memory (u8), import, cache, split and batches. Owned by the data work (issue #2).
//!
//! # Layout on disk
//!
//! Everything is read from the official binary layout, `<data_dir>/cifar-10-batches-bin/`:
//! `data_batch_1.bin` .. `data_batch_5.bin` and `test_batch.bin`, each a sequence of
//! 3,073-byte records (1 label byte, then the 32x32 R, G and B planes), plus
//! `batches.meta.txt` (class names, one per line). That directory is either the extracted
//! official archive or the cache written by [`import`] from an image-folder data set
//! (`train/<class>/*.jpg|png`, `test/<class>/*`), so a second start never decodes an image.
//! Two small files may sit next to the data inside that directory: `source.txt` (where the
//! data came from) and `.checksum-memo` (the SHA-256 of the data files, keyed by their sizes
//! and modification times, so a cached load does not rehash 180 MB).
//!
//! The cache directory is only ever created whole: it is written into a temporary directory
//! in the same data directory, fsync'd and renamed into place, so a crash or two processes
//! importing at once never leave a torn cache, and bad input leaves nothing behind.
//!
//! # Memory
//!
//! Images stay `u8` (60,000 x 3,072 bytes, about 180 MB); [`make_batch`] converts one batch at
//! a time to normalised `f32`.
//!
//! # Normalisation
//!
//! [`Normalization::default`] holds the standard CIFAR-10 training-set statistics
//! (mean 0.4914, 0.4822, 0.4465; std 0.2470, 0.2435, 0.2616), which is what the trainer uses;
//! [`Normalization::from_images`] computes them from loaded images instead, if wanted.

mod batch;
mod cache;
mod download;
mod import;
mod resident;
mod rng;
#[cfg(test)]
pub(crate) mod testutil;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Instant;

pub use batch::{
    alternate_bit, epoch_order, make_batch, make_batch_translated, reflect, split, split_sizes,
    valid_count, Flip, Normalization,
};
pub use cache::{read_cache_dir, write_cache_dir, CACHE_DIR_NAME, DATA_FILES, META_FILE};
pub use resident::ResidentSet;
pub use rng::SplitMix64;

/// The class names in the label order of the official release.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];
/// Images in the standard CIFAR-10 training set: what a config is checked against before
/// the data is loaded (a smaller data set is checked again when the run starts).
pub const TRAIN_IMAGES: usize = 50_000;
/// Images in the standard CIFAR-10 test set.
pub const TEST_IMAGES: usize = 10_000;
/// Bytes of one image: 3 planes of 32x32.
pub const IMAGE_BYTES: usize = 3072;
/// Bytes of one record of the binary layout: a label byte and the image.
pub const RECORD_BYTES: usize = IMAGE_BYTES + 1;
/// Side of the (square) images.
pub const IMAGE_SIDE: usize = 32;
/// Where the official binary archive is downloaded from unless overridden.
pub const DEFAULT_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of the official `cifar-10-binary.tar.gz`.
pub const DEFAULT_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// File name of the official archive; if it sits in the data directory, [`load`] uses it.
pub const OFFICIAL_ARCHIVE_NAME: &str = "cifar-10-binary.tar.gz";
/// Environment variable naming a local archive or directory (binary or image-folder).
pub const ENV_ARCHIVE: &str = "CIFAR10_ARCHIVE";
/// Environment variable overriding [`DEFAULT_URL`].
pub const ENV_URL: &str = "CIFAR10_URL";
/// Environment variable overriding [`DEFAULT_MD5`] (an empty value skips the check).
pub const ENV_MD5: &str = "CIFAR10_MD5";

/// Everything that can go wrong with the data. Each variant names the file (or URL, or
/// archive member) and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// Nothing local and nothing to download from.
    #[error("no CIFAR-10 data in {}: {hint}", dir.display())]
    Missing {
        /// The data folder.
        dir: PathBuf,
        /// How to get the data there.
        hint: String,
    },
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file, folder or archive.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A binary data file whose size is not a whole number of records, or holds no records.
    #[error("{}: wrong size ({len} bytes): {reason}", path.display())]
    BadSize {
        /// The file, folder or archive.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// What is wrong.
        reason: String,
    },
    /// A record whose label is not below the number of classes.
    #[error("{}: record {record} has label {label}, but there are only {classes} classes", path.display())]
    BadLabel {
        /// The file, folder or archive.
        path: PathBuf,
        /// The record's index in the file.
        record: usize,
        /// Its label.
        label: u8,
        /// How many classes there are.
        classes: usize,
    },
    /// A downloaded archive whose MD5 is not the published one.
    #[error("{what}: MD5 mismatch: expected {expected}, got {got}")]
    Checksum {
        /// The file checked.
        what: String,
        /// The published MD5.
        expected: String,
        /// The MD5 of what was read.
        got: String,
    },
    /// An archive that is truncated, corrupt, or not a tar / tar.gz at all.
    #[error("{}: truncated or corrupt archive: {reason}", path.display())]
    Archive {
        /// The file, folder or archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A source that is neither the binary layout nor an image folder, or a cache directory
    /// missing some of its files.
    #[error("{}: {reason}", path.display())]
    Layout {
        /// The file, folder or archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An image of an image-folder set that does not decode.
    #[error("{}: {member}: cannot decode image: {reason}", path.display())]
    Decode {
        /// The file, folder or archive.
        path: PathBuf,
        /// The archive member or file.
        member: String,
        /// What is wrong.
        reason: String,
    },
    /// An image that is not 32x32.
    #[error("{}: {member}: image is {width}x{height}, expected 32x32", path.display())]
    ImageSize {
        /// The file, folder or archive.
        path: PathBuf,
        /// The archive member or file.
        member: String,
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
    },
    /// Test class folders that have no training counterpart.
    #[error("{}: unknown class folder(s) under test/: {}; train/ has: {}", path.display(), unknown.join(", "), known.join(", "))]
    UnknownClass {
        /// The file, folder or archive.
        path: PathBuf,
        /// The test class folders without a training counterpart.
        unknown: Vec<String>,
        /// The training class folders.
        known: Vec<String>,
    },
    /// A source with no images (or no classes).
    #[error("{}: empty: {reason}", path.display())]
    Empty {
        /// The file, folder or archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The download failed (network, HTTP status).
    #[error("download of {url} failed: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// A cached data file that no longer holds what was imported (truncated, zeroed, or
    /// failing the checksum of the cache's manifest).
    #[error("{}: damaged data cache: {reason}; import the data again with `cifar-sweep data import <archive>` (it replaces the cache), or delete the folder and run `cifar-sweep data fetch`", path.display())]
    Damaged {
        /// The file, folder or archive.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data folder given is a file.
    #[error("{}: the data folder (--data-dir) is a file, not a folder", path.display())]
    NotAFolder {
        /// The file, folder or archive.
        path: PathBuf,
    },
}

impl DataError {
    /// Whether the error is the user's to fix (a damaged cache, a file given as the folder),
    /// as opposed to a failure of the machine or the network.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            DataError::Damaged { .. } | DataError::NotAFolder { .. }
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Images and labels in the binary layout's order: `images` holds `len()` images of
/// [`IMAGE_BYTES`] bytes each, channel-major (R plane, G plane, B plane, each row-major).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ImageSet {
    /// The pixels, [`IMAGE_BYTES`] per image.
    pub images: Vec<u8>,
    /// One label (class index) per image.
    pub labels: Vec<u8>,
}

/// Short: the length and the first labels, not 180 MB of pixels.
impl fmt::Debug for ImageSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = &self.labels[..self.labels.len().min(16)];
        f.debug_struct("ImageSet")
            .field("len", &self.len())
            .field("image_bytes", &self.images.len())
            .field("labels_head", &head)
            .finish()
    }
}

impl ImageSet {
    /// The number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The `i`-th image's 3,072 bytes (CHW).
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }

    /// Number of images of each label, for labels `0..num_classes` (larger labels ignored).
    pub fn counts_per_class(&self, num_classes: usize) -> Vec<usize> {
        let mut counts = vec![0; num_classes];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }

    /// A deterministic, learnable synthetic set for tests elsewhere in the workspace: each
    /// class is a different mean colour and stripe direction, plus seeded noise. Labels cycle
    /// through `0..num_classes`.
    pub fn synthetic(n: usize, num_classes: usize, seed: u64) -> ImageSet {
        assert!(num_classes > 0 && num_classes <= 256);
        let mut rng = SplitMix64::new(seed);
        let mut images = Vec::with_capacity(n * IMAGE_BYTES);
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let label = (i % num_classes) as u8;
            labels.push(label);
            let l = label as usize;
            for c in 0..3 {
                let base = ((l * 53 + c * 97) % 200) as i32 + 28;
                for y in 0..IMAGE_SIDE {
                    for x in 0..IMAGE_SIDE {
                        let stripe = if (if l & 1 == 0 { x } else { y } + l) % 4 < 2 {
                            20
                        } else {
                            -20
                        };
                        let noise = (rng.next_u64() % 33) as i32 - 16;
                        images.push((base + stripe + noise).clamp(0, 255) as u8);
                    }
                }
            }
        }
        ImageSet { images, labels }
    }
}

/// The whole data set in memory.
#[derive(Clone, Debug)]
pub struct Cifar10 {
    /// The training images (split into training and validation by the run).
    pub train: ImageSet,
    /// The test images.
    pub test: ImageSet,
    /// The class names, by label.
    pub classes: Vec<String>,
    /// SHA-256 (hex) over the bytes of `data_batch_1.bin` .. `data_batch_5.bin` then
    /// `test_batch.bin`, in that order: identifies the data whatever the path it came from.
    pub checksum: String,
    /// Human description of where the data came from.
    pub source: String,
}

impl Cifar10 {
    /// A small synthetic data set (see [`ImageSet::synthetic`]) with the CIFAR-10 class names,
    /// for tests that need a `Cifar10` without files.
    pub fn synthetic(train: usize, test: usize, seed: u64) -> Cifar10 {
        let train = ImageSet::synthetic(train, 10, seed);
        let test = ImageSet::synthetic(test, 10, seed ^ 0x9e37_79b9_7f4a_7c15);
        let checksum = cache::sha256_hex_of_sets(&train, &test);
        Cifar10 {
            train,
            test,
            classes: CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect(),
            checksum,
            source: format!("synthetic (seed {seed})"),
        }
    }
}

/// Where the data comes from: the data directory holding (or to hold) the cache, an optional
/// local archive or directory to import, and the URL (and its MD5) to download otherwise.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataSource {
    /// The folder that holds (or will hold) the cache.
    pub data_dir: PathBuf,
    /// A local `cifar-10-binary.tar.gz`, an image-folder `.tar.gz`/`.tar`, or a directory of
    /// either kind; the kind is detected.
    pub archive: Option<PathBuf>,
    /// Where to download the official binary archive from; empty disables downloading.
    pub url: String,
    /// Expected MD5 (hex) of the download; empty skips the check (with a warning).
    pub md5: String,
}

impl DataSource {
    /// No archive, the official URL and MD5.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        DataSource {
            data_dir: data_dir.into(),
            archive: None,
            url: DEFAULT_URL.to_string(),
            md5: DEFAULT_MD5.to_string(),
        }
    }

    /// Like [`DataSource::new`], with `CIFAR10_ARCHIVE`, `CIFAR10_URL` and `CIFAR10_MD5` (when
    /// set and non-empty; `CIFAR10_MD5` may be set empty to skip the check) as overrides.
    pub fn from_env(data_dir: impl Into<PathBuf>) -> Self {
        let mut src = DataSource::new(data_dir);
        if let Some(a) = std::env::var_os(ENV_ARCHIVE).filter(|v| !v.is_empty()) {
            src.archive = Some(PathBuf::from(a));
        }
        if let Ok(u) = std::env::var(ENV_URL) {
            if !u.trim().is_empty() {
                src.url = u.trim().to_string();
            }
        }
        if let Ok(m) = std::env::var(ENV_MD5) {
            src.md5 = m.trim().to_ascii_lowercase();
        }
        src
    }

    /// `<data_dir>/cifar-10-batches-bin`.
    pub fn cache_dir(&self) -> PathBuf {
        self.data_dir.join(CACHE_DIR_NAME)
    }
}

/// Load from `<data_dir>/cifar-10-batches-bin` if present; else import `archive` (binary or
/// image-folder) into that cache; else import `<data_dir>/cifar-10-binary.tar.gz` if it is
/// there; else download `url`, check its MD5 and import it. Logs through `tracing`.
pub fn load(src: &DataSource) -> Result<Cifar10, DataError> {
    let t0 = Instant::now();
    check_data_dir(&src.data_dir)?;
    let cache = src.cache_dir();
    if !cache.exists() {
        if let Some(data) = obtain(src)? {
            tracing::info!(
                train = data.train.len(),
                test = data.test.len(),
                checksum = %data.checksum,
                "CIFAR-10 ready in {:.2?} ({})",
                t0.elapsed(),
                data.source
            );
            return Ok(data);
        }
    }
    let data = read_cache_dir(&cache)?;
    tracing::info!(
        train = data.train.len(),
        test = data.test.len(),
        checksum = %data.checksum,
        "CIFAR-10 loaded in {:.2?} ({})",
        t0.elapsed(),
        data.source
    );
    Ok(data)
}

/// Make sure `<data_dir>/cifar-10-batches-bin` exists: nothing if it does; else import
/// `archive`, or `<data_dir>/cifar-10-binary.tar.gz`, or download `url` (as [`load`] does).
pub fn fetch(src: &DataSource) -> Result<(), DataError> {
    check_data_dir(&src.data_dir)?;
    if src.cache_dir().exists() {
        // The caller verifies it: a damaged cache is reported there, not fetched over.
        tracing::info!("{} already present; checking it", src.cache_dir().display());
        return Ok(());
    }
    obtain(src).map(|_| ())
}

/// The cache is missing: fill it. Returns the data when it was read on the way.
fn obtain(src: &DataSource) -> Result<Option<Cifar10>, DataError> {
    if let Some(archive) = &src.archive {
        tracing::info!(
            "importing {} into {}",
            archive.display(),
            src.data_dir.display()
        );
        return import::import_into(archive, &src.data_dir, false, None).map(Some);
    }
    let local = src.data_dir.join(OFFICIAL_ARCHIVE_NAME);
    if local.is_file() {
        tracing::info!("importing {}", local.display());
        return import::import_into(&local, &src.data_dir, false, None).map(Some);
    }
    if src.url.trim().is_empty() {
        return Err(DataError::Missing {
            dir: src.data_dir.clone(),
            hint: missing_hint(),
        });
    }
    download::fetch_official(src).map(Some)
}

/// A data folder that exists must be a folder: creating files in it would otherwise fail
/// with the system's bare "File exists" or "Not a directory".
fn check_data_dir(data_dir: &Path) -> Result<(), DataError> {
    match std::fs::metadata(data_dir) {
        Ok(m) if !m.is_dir() => Err(DataError::NotAFolder {
            path: data_dir.to_path_buf(),
        }),
        _ => Ok(()),
    }
}

/// What to tell the user when no data could be found or fetched.
pub(crate) fn missing_hint() -> String {
    let mut hint = format!(
        "pass --archive <path> (or set {ENV_ARCHIVE}) naming a local cifar-10-binary.tar.gz or \
         image-folder .tar.gz / directory, or --url <url> (or {ENV_URL}) naming a reachable copy \
         of the official archive, or run `cifar-sweep data import <path>`"
    );
    if let Some(found) = find_shared_archive() {
        hint.push_str(&format!("; a copy exists at {}", found.display()));
    }
    hint
}

/// Import a local archive or directory (official binary layout or image folder, detected)
/// into `<data_dir>/cifar-10-batches-bin`, replacing an existing cache atomically. Nothing is
/// left behind when the input is bad.
pub fn import(src_path: &Path, data_dir: &Path) -> Result<(), DataError> {
    check_data_dir(data_dir)?;
    import::import_into(src_path, data_dir, true, None).map(|_| ())
}

/// One data file of the cache, as found by [`verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileReport {
    /// The file name.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// The images in it.
    pub records: usize,
}

/// What [`verify`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyReport {
    /// The cache folder checked.
    pub dir: PathBuf,
    /// Each data file.
    pub files: Vec<FileReport>,
    /// The class names.
    pub classes: Vec<String>,
    /// Training images.
    pub train: usize,
    /// Test images.
    pub test: usize,
    /// Training images per class, by label.
    pub train_per_class: Vec<usize>,
    /// Test images per class, by label.
    pub test_per_class: Vec<usize>,
    /// SHA-256 recomputed from the files (the memo is refreshed).
    pub checksum: String,
    /// Where the data came from (`source.txt`).
    pub source: String,
    /// 10 classes, 50,000 / 10,000 images, 5,000 / 1,000 of each class.
    pub standard: bool,
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "data:     {}", self.dir.display())?;
        writeln!(f, "source:   {}", self.source)?;
        for file in &self.files {
            writeln!(
                f,
                "  {:<18} {:>11} bytes {:>7} records",
                file.name, file.bytes, file.records
            )?;
        }
        writeln!(f, "train:    {} images", self.train)?;
        writeln!(f, "test:     {} images", self.test)?;
        writeln!(f, "{:<12} {:>7} {:>7}", "class", "train", "test")?;
        for (i, c) in self.classes.iter().enumerate() {
            writeln!(
                f,
                "{:<12} {:>7} {:>7}",
                c, self.train_per_class[i], self.test_per_class[i]
            )?;
        }
        writeln!(f, "sha256:   {}", self.checksum)?;
        write!(
            f,
            "standard: {}",
            if self.standard {
                "yes (50,000 / 10,000, 5,000 / 1,000 per class)"
            } else {
                "no (not the standard CIFAR-10 counts)"
            }
        )
    }
}

/// Check `<data_dir>/cifar-10-batches-bin`: file sizes, labels, counts per class, and the
/// checksum (recomputed, not taken from the memo, and compared with the cache's manifest: a
/// damaged cache is an error). A whole but non-standard cache is reported with
/// `standard: false`, for the caller to decide.
pub fn verify(data_dir: &Path) -> Result<VerifyReport, DataError> {
    check_data_dir(data_dir)?;
    let dir = data_dir.join(CACHE_DIR_NAME);
    if !dir.exists() {
        return Err(DataError::Missing {
            dir: data_dir.to_path_buf(),
            hint: missing_hint(),
        });
    }
    let (data, files) = cache::read_cache_dir_full(&dir, true)?;
    let n = data.classes.len();
    let train_per_class = data.train.counts_per_class(n);
    let test_per_class = data.test.counts_per_class(n);
    let standard = n == 10
        && data.train.len() == 50_000
        && data.test.len() == 10_000
        && train_per_class.iter().all(|&c| c == 5_000)
        && test_per_class.iter().all(|&c| c == 1_000);
    Ok(VerifyReport {
        dir,
        files,
        classes: data.classes,
        train: data.train.len(),
        test: data.test.len(),
        train_per_class,
        test_per_class,
        checksum: data.checksum,
        source: data.source,
        standard,
    })
}

/// Find the project's real data archive for tests and tools: `$CIFAR10_ARCHIVE` if it exists,
/// else `shared/data/cifar10-jpeg.tar.gz` in the current directory, the crate's directory
/// (`CARGO_MANIFEST_DIR`, at run time or build time) or any of their ancestors (which covers
/// `../shared/data/...` from the repository root).
pub fn find_shared_archive() -> Option<PathBuf> {
    if let Some(a) = std::env::var_os(ENV_ARCHIVE).filter(|v| !v.is_empty()) {
        let p = PathBuf::from(a);
        if p.exists() {
            return Some(p);
        }
    }
    let mut starts: Vec<PathBuf> = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        starts.push(cwd);
    }
    if let Some(m) = std::env::var_os("CARGO_MANIFEST_DIR") {
        starts.push(PathBuf::from(m));
    }
    starts.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    for start in &starts {
        for dir in start.ancestors() {
            let p = dir.join("shared").join("data").join("cifar10-jpeg.tar.gz");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// The real data set for tests, cached under `<workspace>/target/cifar10-cache`. `None` (with
/// a note) when the shared archive cannot be found, so the suite runs anywhere; with
/// `CIFAR_SWEEP_REQUIRE_DATA` set (as CI does) a missing archive fails the test instead.
pub fn test_data_source() -> Option<DataSource> {
    let Some(archive) = find_shared_archive() else {
        if std::env::var_os("CIFAR_SWEEP_REQUIRE_DATA").is_some() {
            panic!("CIFAR_SWEEP_REQUIRE_DATA is set but the shared CIFAR-10 archive was not found");
        }
        eprintln!("note: shared/data/cifar10-jpeg.tar.gz not found; skipping a real-data test");
        return None;
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/cifar10-cache");
    let mut src = DataSource::new(root);
    src.archive = Some(archive);
    src.url = String::new();
    Some(src)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::*;

    #[test]
    fn missing_without_url_names_the_env_vars() {
        let tmp = tempfile::tempdir().unwrap();
        let mut src = DataSource::new(tmp.path().join("data"));
        src.url = String::new();
        let err = load(&src).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Missing { .. }), "{msg}");
        assert!(msg.contains(ENV_ARCHIVE) && msg.contains(ENV_URL), "{msg}");
        assert!(!tmp.path().join("data").join(CACHE_DIR_NAME).exists());
    }

    #[test]
    fn load_imports_archive_then_reads_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let (train, test) = (synthetic_records(23, 10, 1), synthetic_records(7, 10, 2));
        let archive = tmp.path().join("cifar-10-binary.tar.gz");
        write_official_tar_gz(&archive, &train, &test, true);
        let mut src = DataSource::new(tmp.path().join("data"));
        src.archive = Some(archive.clone());
        src.url = String::new();
        let first = load(&src).unwrap();
        assert_eq!(first.train, train);
        assert_eq!(first.test, test);
        // The archive is not needed any more.
        std::fs::remove_file(&archive).unwrap();
        let second = load(&src).unwrap();
        assert_eq!(second.train, train);
        assert_eq!(second.checksum, first.checksum);
        assert!(
            second.source.contains("cifar-10-binary.tar.gz"),
            "{}",
            second.source
        );
        let report = verify(&src.data_dir).unwrap();
        assert_eq!(report.train, 23);
        assert_eq!(report.test, 7);
        assert_eq!(report.checksum, first.checksum);
        assert!(!report.standard);
        assert_eq!(report.train_per_class.iter().sum::<usize>(), 23);
        assert!(report.to_string().contains("airplane"));
    }

    #[test]
    fn official_archive_in_data_dir_is_used() {
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        std::fs::create_dir_all(&data_dir).unwrap();
        let (train, test) = (synthetic_records(5, 10, 3), synthetic_records(5, 10, 4));
        write_official_tar_gz(&data_dir.join(OFFICIAL_ARCHIVE_NAME), &train, &test, true);
        let mut src = DataSource::new(&data_dir);
        src.url = String::new();
        let d = load(&src).unwrap();
        assert_eq!(d.test, test);
    }

    #[test]
    fn synthetic_sets_are_deterministic() {
        let a = Cifar10::synthetic(20, 10, 5);
        let b = Cifar10::synthetic(20, 10, 5);
        assert_eq!(a.train, b.train);
        assert_eq!(a.checksum, b.checksum);
        assert_eq!(a.train.counts_per_class(10), vec![2; 10]);
        assert_ne!(a.train.image(0), a.train.image(1));
    }

    #[test]
    fn verify_without_cache_is_missing() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(matches!(verify(tmp.path()), Err(DataError::Missing { .. })));
    }

    /// Imports the real archive (`shared/data/cifar10-jpeg.tar.gz`) into
    /// `<workspace>/target/cifar10-cache` (kept across runs), then loads it again from the
    /// cache. Skips with a note when the archive is not around.
    #[test]
    fn real_archive_import_and_cached_load() {
        let Some(archive) = find_shared_archive() else {
            eprintln!("note: shared/data/cifar10-jpeg.tar.gz not found; skipping real-data test");
            return;
        };
        let cache_root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join("..")
            .join("target")
            .join("cifar10-cache");
        let mut src = DataSource::new(&cache_root);
        src.archive = Some(archive.clone());
        src.url = String::new();
        let t0 = Instant::now();
        let first = load(&src).unwrap();
        eprintln!(
            "first load of {} (import if no cache yet): {:.2?}",
            archive.display(),
            t0.elapsed()
        );
        let t1 = Instant::now();
        let d = load(&src).unwrap();
        eprintln!("cached load: {:.2?}", t1.elapsed());
        assert_eq!(d.checksum, first.checksum);
        assert_eq!(d.train.len(), 50_000);
        assert_eq!(d.test.len(), 10_000);
        assert_eq!(d.train.images.len(), 50_000 * IMAGE_BYTES);
        assert_eq!(d.classes, CIFAR10_CLASSES.to_vec());
        assert_eq!(d.train.counts_per_class(10), vec![5_000; 10]);
        assert_eq!(d.test.counts_per_class(10), vec![1_000; 10]);
    }
}
