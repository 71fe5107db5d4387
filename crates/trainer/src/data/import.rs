//! Importing a local source into the cache: a `.tar.gz` / `.tar` archive or a directory,
//! holding either the official binary layout or an image folder (`train/<class>/*.jpg|png`,
//! `test/<class>/*`, under any top folder). Archive members are read sequentially into
//! memory, images are decoded on several threads, and the cache is written into a staging
//! directory that is renamed into place only when everything succeeded.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read};
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use super::cache::{self, Commit, Staging, DATA_FILES, META_FILE, SOURCE_FILE};
use super::{Cifar10, DataError, ImageSet, CACHE_DIR_NAME, CIFAR10_CLASSES, IMAGE_BYTES};

const PLANE: usize = IMAGE_BYTES / 3;
/// Largest image file accepted, in bytes (CIFAR images are about 1-3 KB).
const MAX_IMAGE_FILE: u64 = 16 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Split {
    Train,
    Test,
}

impl Split {
    fn parse(s: &str) -> Option<Split> {
        match s {
            "train" => Some(Split::Train),
            "test" => Some(Split::Test),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

struct ImageMember {
    prefix: Vec<String>,
    split: Split,
    class: String,
    /// The member's path, as shown in errors.
    member: String,
    bytes: Vec<u8>,
}

#[derive(Default)]
struct Scan {
    /// Binary-layout files copied into the staging directory: name -> member.
    binary: BTreeMap<String, String>,
    images: Vec<ImageMember>,
    /// `(prefix, split, class)` of every class folder seen (to report empty ones).
    class_dirs: BTreeSet<(Vec<String>, Split, String)>,
    /// Image files outside `<split>/<class>/`, ignored.
    stray_images: usize,
}

enum Entry<'a> {
    Dir,
    File { reader: &'a mut dyn Read, size: u64 },
}

/// Import `src` into `<data_dir>/cifar-10-batches-bin` and return the data. With `replace`,
/// an existing cache is swapped out; without, a cache that another process installed first
/// wins (and is what is returned). On error nothing is left in `data_dir` (which is removed
/// again if this call created it and it is empty).
pub(crate) fn import_into(
    src: &Path,
    data_dir: &Path,
    replace: bool,
    origin: Option<&str>,
) -> Result<Cifar10, DataError> {
    if !src.exists() {
        return Err(DataError::Layout {
            path: src.to_path_buf(),
            reason: format!(
                "no such file or directory (check --archive / {})",
                super::ENV_ARCHIVE
            ),
        });
    }
    let created = cache::ensure_data_dir(data_dir)?;
    let res = import_inner(src, data_dir, replace, origin);
    if res.is_err() && created {
        let _ = fs::remove_dir(data_dir);
    }
    res
}

fn import_inner(
    src: &Path,
    data_dir: &Path,
    replace: bool,
    origin: Option<&str>,
) -> Result<Cifar10, DataError> {
    let t0 = Instant::now();
    cache::remove_stale(data_dir);
    let staging = Staging::new(data_dir)?;
    let scan = scan_source(src, staging.path())?;
    tracing::info!(
        binary_files = scan.binary.len(),
        images = scan.images.len(),
        "read {} in {:.2?}",
        src.display(),
        t0.elapsed()
    );
    if scan.stray_images > 0 {
        tracing::warn!(
            "{}: ignored {} image file(s) outside <top>/train|test/<class>/",
            src.display(),
            scan.stray_images
        );
    }
    let has_binary = DATA_FILES.iter().any(|n| scan.binary.contains_key(*n));
    let mut data = if has_binary {
        let missing: Vec<&str> = DATA_FILES
            .iter()
            .copied()
            .filter(|n| !scan.binary.contains_key(*n))
            .collect();
        if !missing.is_empty() {
            return Err(DataError::Layout {
                path: src.to_path_buf(),
                reason: format!(
                    "incomplete CIFAR-10 binary layout: missing {}",
                    missing.join(", ")
                ),
            });
        }
        if !scan.images.is_empty() {
            tracing::warn!(
                "{}: holds the binary layout and {} images; using the binary layout",
                src.display(),
                scan.images.len()
            );
        }
        let origin = origin
            .map(String::from)
            .unwrap_or_else(|| format!("CIFAR-10 binary layout from {}", src.display()));
        cache::write_synced(
            &staging.path().join(SOURCE_FILE),
            format!("{origin}\n").as_bytes(),
        )?;
        let data = cache::read_cache_dir_full(staging.path(), true)?.0;
        cache::write_manifest(staging.path())?;
        data
    } else if !scan.images.is_empty() {
        let (train, test, classes, official) = build_sets(src, scan)?;
        let origin = origin.map(String::from).unwrap_or_else(|| {
            format!(
                "image folder {} ({} classes in {} order)",
                src.display(),
                classes.len(),
                if official { "official" } else { "alphabetical" }
            )
        });
        let t = Instant::now();
        let checksum = cache::write_cache_dir(staging.path(), &train, &test, &classes, &origin)?;
        tracing::info!("wrote the binary cache in {:.2?}", t.elapsed());
        Cifar10 {
            train,
            test,
            classes,
            checksum,
            source: String::new(),
        }
    } else {
        return Err(DataError::Layout {
            path: src.to_path_buf(),
            reason: "neither the CIFAR-10 binary layout (data_batch_1.bin .. data_batch_5.bin, \
                     test_batch.bin) nor an image folder (train/<class>/*.jpg|png and \
                     test/<class>/*, under any top folder)"
                .into(),
        });
    };
    let target = data_dir.join(CACHE_DIR_NAME);
    match staging.commit(&target, replace)? {
        Commit::Installed => {
            data.source = cache::describe(&target);
            tracing::info!(
                "imported {} into {} in {:.2?}",
                src.display(),
                target.display(),
                t0.elapsed()
            );
            Ok(data)
        }
        Commit::LostRace => {
            tracing::info!(
                "another process installed {} first; using it",
                target.display()
            );
            cache::read_cache_dir(&target)
        }
    }
}

/// The normal components of `path`; `None` for hidden entries (`.name`, `__MACOSX`).
fn components(path: &Path) -> Option<Vec<String>> {
    let mut out = Vec::new();
    for c in path.components() {
        if let Component::Normal(s) = c {
            let s = s.to_string_lossy();
            if s.starts_with('.') || s == "__MACOSX" {
                return None;
            }
            out.push(s.into_owned());
        }
    }
    (!out.is_empty()).then_some(out)
}

fn is_image_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    [".jpg", ".jpeg", ".png"].iter().any(|e| lower.ends_with(e))
}

/// Read every entry of `src`, copying binary-layout files into `staging` and keeping image
/// files in memory.
fn scan_source(src: &Path, staging: &Path) -> Result<Scan, DataError> {
    let is_archive = !src.is_dir();
    let mut scan = Scan::default();
    let read_err = |member: &str, e: io::Error| -> DataError {
        if is_archive {
            DataError::Archive {
                path: src.to_path_buf(),
                reason: format!("{member}: {e}"),
            }
        } else {
            DataError::io(src.join(member), e)
        }
    };
    let mut visit = |comps: &[String], member: &str, entry: Entry<'_>| -> Result<(), DataError> {
        let n = comps.len();
        let name = comps[n - 1].as_str();
        match entry {
            Entry::Dir => {
                if n >= 2 {
                    if let Some(split) = Split::parse(&comps[n - 2]) {
                        scan.class_dirs
                            .insert((comps[..n - 2].to_vec(), split, name.to_string()));
                    }
                }
            }
            Entry::File { reader, size } => {
                if DATA_FILES.contains(&name) || name == META_FILE {
                    if let Some(first) = scan.binary.get(name) {
                        return Err(DataError::Layout {
                            path: src.to_path_buf(),
                            reason: format!("two copies of {name}: {first} and {member}"),
                        });
                    }
                    let dest = staging.join(name);
                    let mut w =
                        BufWriter::new(File::create(&dest).map_err(|e| DataError::io(&dest, e))?);
                    let copied = io::copy(reader, &mut w).map_err(|e| read_err(member, e))?;
                    if copied != size {
                        return Err(read_err(
                            member,
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("truncated: {copied} of {size} bytes"),
                            ),
                        ));
                    }
                    let f = w
                        .into_inner()
                        .map_err(|e| DataError::io(&dest, e.into_error()))?;
                    f.sync_all().map_err(|e| DataError::io(&dest, e))?;
                    scan.binary.insert(name.to_string(), member.to_string());
                } else if is_image_name(name) {
                    let split = (n >= 3).then(|| Split::parse(&comps[n - 3])).flatten();
                    let Some(split) = split else {
                        scan.stray_images += 1;
                        return Ok(());
                    };
                    if size > MAX_IMAGE_FILE {
                        return Err(DataError::Decode {
                            path: src.to_path_buf(),
                            member: member.to_string(),
                            reason: format!("{size} bytes, far too large for a 32x32 image"),
                        });
                    }
                    let mut bytes = Vec::with_capacity(size as usize);
                    reader
                        .read_to_end(&mut bytes)
                        .map_err(|e| read_err(member, e))?;
                    if bytes.len() as u64 != size {
                        return Err(read_err(
                            member,
                            io::Error::new(
                                io::ErrorKind::UnexpectedEof,
                                format!("truncated: {} of {size} bytes", bytes.len()),
                            ),
                        ));
                    }
                    scan.images.push(ImageMember {
                        prefix: comps[..n - 3].to_vec(),
                        split,
                        class: comps[n - 2].clone(),
                        member: member.to_string(),
                        bytes,
                    });
                }
            }
        }
        Ok(())
    };
    if is_archive {
        walk_archive(src, &mut visit)?;
    } else {
        let mut rel = Vec::new();
        walk_dir(src, &mut rel, &mut visit)?;
    }
    Ok(scan)
}

type Visit<'v> = dyn FnMut(&[String], &str, Entry<'_>) -> Result<(), DataError> + 'v;

fn walk_archive(src: &Path, visit: &mut Visit<'_>) -> Result<(), DataError> {
    let archive_err = |e: io::Error| DataError::Archive {
        path: src.to_path_buf(),
        reason: e.to_string(),
    };
    let file = File::open(src).map_err(|e| DataError::io(src, e))?;
    let mut buffered = BufReader::with_capacity(1 << 20, file);
    let head = buffered.fill_buf().map_err(|e| DataError::io(src, e))?;
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else {
        Box::new(buffered)
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(archive_err)? {
        let mut entry = entry.map_err(archive_err)?;
        let path = entry.path().map_err(archive_err)?.into_owned();
        let Some(comps) = components(&path) else {
            continue;
        };
        let member = path.to_string_lossy().into_owned();
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            visit(&comps, &member, Entry::Dir)?;
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            let size = entry.size();
            visit(
                &comps,
                &member,
                Entry::File {
                    reader: &mut entry,
                    size,
                },
            )?;
        }
    }
    Ok(())
}

fn walk_dir(dir: &Path, rel: &mut Vec<String>, visit: &mut Visit<'_>) -> Result<(), DataError> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .map(|e| {
            e.map(|e| e.file_name().to_string_lossy().into_owned())
                .map_err(|e| DataError::io(dir, e))
        })
        .collect::<Result<_, _>>()?;
    names.sort();
    for name in names {
        if name.starts_with('.') || name == "__MACOSX" {
            continue;
        }
        let path = dir.join(&name);
        let meta = fs::metadata(&path).map_err(|e| DataError::io(&path, e))?;
        rel.push(name);
        let member = rel.join("/");
        if meta.is_dir() {
            visit(rel, &member, Entry::Dir)?;
            walk_dir(&path, rel, visit)?;
        } else if meta.is_file() {
            let mut f = File::open(&path).map_err(|e| DataError::io(&path, e))?;
            visit(
                rel,
                &member,
                Entry::File {
                    reader: &mut f,
                    size: meta.len(),
                },
            )?;
        }
        rel.pop();
    }
    Ok(())
}

/// Check the image folder's structure, order the images and decode them.
/// Returns (train, test, classes, whether the official class order was used).
fn build_sets(
    src: &Path,
    scan: Scan,
) -> Result<(ImageSet, ImageSet, Vec<String>, bool), DataError> {
    let prefixes: BTreeSet<&Vec<String>> = scan.images.iter().map(|m| &m.prefix).collect();
    let show = |p: &Vec<String>| {
        if p.is_empty() {
            String::new()
        } else {
            format!("{}/", p.join("/"))
        }
    };
    if prefixes.len() > 1 {
        let list: Vec<String> = prefixes.iter().map(|p| format!("'{}'", show(p))).collect();
        return Err(DataError::Layout {
            path: src.to_path_buf(),
            reason: format!(
                "image folders under several roots: {}; expected one train/ and test/",
                list.join(", ")
            ),
        });
    }
    let prefix = (*prefixes.first().expect("images present")).clone();
    let root = show(&prefix);
    let classes_of = |split: Split| -> BTreeSet<&str> {
        scan.images
            .iter()
            .filter(|m| m.split == split)
            .map(|m| m.class.as_str())
            .collect()
    };
    let train_classes = classes_of(Split::Train);
    let test_classes = classes_of(Split::Test);
    for (split, set) in [(Split::Train, &train_classes), (Split::Test, &test_classes)] {
        if set.is_empty() {
            return Err(DataError::Empty {
                path: src.to_path_buf(),
                reason: format!(
                    "no {} images: expected {root}{}/<class>/*.jpg|png",
                    split.name(),
                    split.name()
                ),
            });
        }
    }
    let unknown: Vec<String> = test_classes
        .difference(&train_classes)
        .map(|s| s.to_string())
        .collect();
    if !unknown.is_empty() {
        return Err(DataError::UnknownClass {
            path: src.to_path_buf(),
            unknown,
            known: train_classes.iter().map(|s| s.to_string()).collect(),
        });
    }
    for (p, split, class) in &scan.class_dirs {
        if *p == prefix
            && !scan
                .images
                .iter()
                .any(|m| m.split == *split && &m.class == class)
        {
            return Err(DataError::Empty {
                path: src.to_path_buf(),
                reason: format!(
                    "class folder {root}{}/{class}/ holds no images",
                    split.name()
                ),
            });
        }
    }
    let missing_in_test: Vec<&str> = train_classes.difference(&test_classes).copied().collect();
    if !missing_in_test.is_empty() {
        tracing::warn!(
            "{}: no test images for class(es) {}",
            src.display(),
            missing_in_test.join(", ")
        );
    }
    if train_classes.len() > 256 {
        return Err(DataError::Layout {
            path: src.to_path_buf(),
            reason: format!(
                "{} class folders; labels are bytes, at most 256",
                train_classes.len()
            ),
        });
    }
    let official = train_classes.len() == CIFAR10_CLASSES.len()
        && CIFAR10_CLASSES.iter().all(|c| train_classes.contains(c));
    let classes: Vec<String> = if official {
        CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect()
    } else {
        train_classes.iter().map(|s| s.to_string()).collect()
    };
    let label: HashMap<&str, u8> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as u8))
        .collect();

    // Order: within a split, classes interleaved round-robin (image k of every class, then
    // image k + 1, ...), each class's files sorted by name; so each training file holds an
    // even share of every class.
    let mut order: Vec<(usize, u8)> = Vec::with_capacity(scan.images.len());
    let mut n_train = 0;
    for split in [Split::Train, Split::Test] {
        let mut groups: Vec<Vec<usize>> = vec![Vec::new(); classes.len()];
        for (i, m) in scan.images.iter().enumerate() {
            if m.split == split {
                groups[label[m.class.as_str()] as usize].push(i);
            }
        }
        for g in &mut groups {
            g.sort_by(|&a, &b| scan.images[a].member.cmp(&scan.images[b].member));
        }
        let longest = groups.iter().map(Vec::len).max().unwrap_or(0);
        for k in 0..longest {
            for (l, g) in groups.iter().enumerate() {
                if let Some(&i) = g.get(k) {
                    order.push((i, l as u8));
                }
            }
        }
        if split == Split::Train {
            n_train = order.len();
        }
    }

    let t = Instant::now();
    let jobs: Vec<&ImageMember> = order.iter().map(|&(i, _)| &scan.images[i]).collect();
    let (mut images, threads) = decode_all(src, &jobs)?;
    tracing::info!(
        "decoded {} images on {threads} threads in {:.2?}",
        jobs.len(),
        t.elapsed()
    );
    let test_images = images.split_off(n_train * IMAGE_BYTES);
    let labels: Vec<u8> = order.iter().map(|&(_, l)| l).collect();
    let train = ImageSet {
        images,
        labels: labels[..n_train].to_vec(),
    };
    let test = ImageSet {
        images: test_images,
        labels: labels[n_train..].to_vec(),
    };
    Ok((train, test, classes, official))
}

/// Decode `jobs` into one buffer of `jobs.len()` CHW images, on 2+ threads. Returns the
/// buffer and the number of threads used.
fn decode_all(src: &Path, jobs: &[&ImageMember]) -> Result<(Vec<u8>, usize), DataError> {
    let n = jobs.len();
    let mut out = vec![0u8; n * IMAGE_BYTES];
    if n == 0 {
        return Ok((out, 0));
    }
    let threads = std::thread::available_parallelism()
        .map_or(2, |p| p.get())
        .clamp(2, 32)
        .min(n);
    let per = n.div_ceil(threads);
    let failed = AtomicBool::new(false);
    let errors: Vec<(usize, DataError)> = std::thread::scope(|s| {
        let handles: Vec<_> = out
            .chunks_mut(per * IMAGE_BYTES)
            .zip(jobs.chunks(per))
            .enumerate()
            .map(|(t, (buf, js))| {
                let failed = &failed;
                s.spawn(move || {
                    for (k, (o, m)) in buf.chunks_exact_mut(IMAGE_BYTES).zip(js).enumerate() {
                        if failed.load(Ordering::Relaxed) {
                            return None;
                        }
                        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            decode_one(src, m, o)
                        }))
                        .unwrap_or_else(|_| {
                            Err(DataError::Decode {
                                path: src.to_path_buf(),
                                member: m.member.clone(),
                                reason: "the decoder panicked".into(),
                            })
                        });
                        if let Err(e) = res {
                            failed.store(true, Ordering::Relaxed);
                            return Some((t * per + k, e));
                        }
                    }
                    None
                })
            })
            .collect();
        handles
            .into_iter()
            .filter_map(|h| h.join().expect("decode thread"))
            .collect()
    });
    match errors.into_iter().min_by_key(|(i, _)| *i) {
        Some((_, e)) => Err(e),
        None => Ok((out, threads)),
    }
}

/// Decode one image into `out` (3,072 bytes, CHW). Any format the `image` crate recognises
/// from the bytes is accepted (whatever the extension); grey or RGBA images are converted.
fn decode_one(src: &Path, m: &ImageMember, out: &mut [u8]) -> Result<(), DataError> {
    let err = |reason: String| DataError::Decode {
        path: src.to_path_buf(),
        member: m.member.clone(),
        reason,
    };
    let mut reader = image::ImageReader::new(io::Cursor::new(&m.bytes))
        .with_guessed_format()
        .map_err(|e| err(e.to_string()))?;
    if reader.format().is_none() {
        return Err(err("not a JPEG or PNG image".into()));
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(4096);
    limits.max_image_height = Some(4096);
    limits.max_alloc = Some(64 << 20);
    reader.limits(limits);
    let img = reader.decode().map_err(|e| err(e.to_string()))?;
    if img.width() != 32 || img.height() != 32 {
        return Err(DataError::ImageSize {
            path: src.to_path_buf(),
            member: m.member.clone(),
            width: img.width(),
            height: img.height(),
        });
    }
    let rgb = img.into_rgb8();
    let (r, rest) = out.split_at_mut(PLANE);
    let (g, b) = rest.split_at_mut(PLANE);
    for (i, p) in rgb.pixels().enumerate() {
        r[i] = p[0];
        g[i] = p[1];
        b[i] = p[2];
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::*;
    use crate::data::{load, read_cache_dir, DataSource};
    use image::ImageFormat;

    /// Colour of image `k` of class `c`: unique per (c, k) for small numbers.
    fn colour(c: usize, k: usize) -> [u8; 3] {
        [(c * 20) as u8, (k * 10) as u8, 200]
    }

    /// `train/<class>/<k>.png` (`per_train` each) and `test/<class>/<k>.png` (1 each) under
    /// `top`, with flat colours from [`colour`] (`c` = index in `classes`).
    fn folder_files(top: &str, classes: &[&str], per_train: usize) -> Vec<(String, Vec<u8>)> {
        let mut files = Vec::new();
        for (c, class) in classes.iter().enumerate() {
            for k in 0..per_train {
                files.push((
                    format!("{top}train/{class}/{k:04}.png"),
                    encoded_image(colour(c, k), 32, 32, ImageFormat::Png),
                ));
            }
            files.push((
                format!("{top}test/{class}/0000.png"),
                encoded_image(colour(c, 9), 32, 32, ImageFormat::Png),
            ));
        }
        files
    }

    /// The colour of every image, by label, as (label, r, g, b).
    fn colours(set: &ImageSet) -> Vec<(u8, u8, u8, u8)> {
        (0..set.len())
            .map(|i| {
                let img = set.image(i);
                (set.labels[i], img[0], img[PLANE], img[2 * PLANE])
            })
            .collect()
    }

    fn no_source() -> DataSource {
        let mut s = DataSource::new("unused");
        s.url = String::new();
        s
    }

    #[test]
    fn folder_with_official_names_uses_official_order() {
        let tmp = tempfile::tempdir().unwrap();
        // Written in reverse so neither file order nor alphabetical order is the official one.
        let mut rev = CIFAR10_CLASSES;
        rev.reverse();
        let files = folder_files("", &rev, 2);
        write_tree(&tmp.path().join("src"), &files);
        let data_dir = tmp.path().join("data");
        let d = import_into(&tmp.path().join("src"), &data_dir, false, None).unwrap();
        assert_eq!(d.classes, CIFAR10_CLASSES.to_vec());
        assert_eq!((d.train.len(), d.test.len()), (20, 10));
        // Class folder `rev[c]` has colours colour(c, k); its label is its official index.
        for (label, r, g, b) in colours(&d.train) {
            let c = (r / 20) as usize;
            assert_eq!(CIFAR10_CLASSES[label as usize], rev[c]);
            assert!(g == 0 || g == 10);
            assert_eq!(b, 200);
        }
        // Round-robin over classes: the first 10 training images are one of each class.
        let first: BTreeSet<u8> = d.train.labels[..10].iter().copied().collect();
        assert_eq!(first.len(), 10);
        assert!(d.source.contains("official order"), "{}", d.source);
        // The cache is there and reads back the same.
        let again = read_cache_dir(&data_dir.join(CACHE_DIR_NAME)).unwrap();
        assert_eq!(again.train, d.train);
        assert_eq!(again.checksum, d.checksum);
        assert_eq!(again.classes, d.classes);
        assert_eq!(dir_entries(&data_dir), vec![CACHE_DIR_NAME.to_string()]);
    }

    #[test]
    fn folder_with_other_names_uses_alphabetical_order_and_tar_gz_matches_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let files = folder_files("", &["zebra", "apple", "mango"], 3);
        write_tree(&tmp.path().join("src"), &files);
        let from_dir =
            import_into(&tmp.path().join("src"), &tmp.path().join("a"), false, None).unwrap();
        assert_eq!(from_dir.classes, vec!["apple", "mango", "zebra"]);
        for (label, r, _, _) in colours(&from_dir.train) {
            let c = (r / 20) as usize; // index in ["zebra", "apple", "mango"]
            assert_eq!(label as usize, [2, 0, 1][c]);
        }
        assert!(from_dir.source.contains("alphabetical"));

        // Same files in a tar.gz under an arbitrary top folder.
        let files = folder_files("whatever-name/", &["zebra", "apple", "mango"], 3);
        let archive = tmp.path().join("set.tar.gz");
        fs::write(&archive, tar_gz_of(&files)).unwrap();
        let from_tar = import_into(&archive, &tmp.path().join("b"), false, None).unwrap();
        assert_eq!(from_tar.classes, from_dir.classes);
        assert_eq!(from_tar.train, from_dir.train);
        assert_eq!(from_tar.test, from_dir.test);
        assert_eq!(from_tar.checksum, from_dir.checksum);
    }

    #[test]
    fn jpeg_and_odd_formats_decode() {
        let tmp = tempfile::tempdir().unwrap();
        let mut files = folder_files("top/", &["a", "b"], 2);
        files[0].1 = encoded_image([250, 10, 120], 32, 32, ImageFormat::Jpeg);
        // A JPEG named .png, and a gradient PNG to check pixel placement.
        files[1].1 = encoded_image([10, 250, 120], 32, 32, ImageFormat::Jpeg);
        files[3].1 = gradient_png(77);
        let archive = tmp.path().join("x.tgz");
        fs::write(&archive, tar_gz_of(&files)).unwrap();
        let d = import_into(&archive, tmp.path(), false, None).unwrap();
        // Train order: a/0000, b/0000, a/0001, b/0001.
        let near = |a: u8, b: u8| (a as i32 - b as i32).abs() <= 3;
        let img = d.train.image(0);
        assert!(near(img[0], 250) && near(img[PLANE], 10) && near(img[2 * PLANE], 120));
        let img = d.train.image(2);
        assert!(near(img[0], 10) && near(img[PLANE], 250));
        let img = d.train.image(1); // b/0000 = gradient
        assert_eq!(img[5], 40); // R at (x=5, y=0)
        assert_eq!(img[PLANE + 3 * 32 + 7], 24); // G at (x=7, y=3)
        assert_eq!(img[2 * PLANE + 1000], 77);
    }

    fn assert_nothing_left(data_dir: &Path) {
        assert_eq!(dir_entries(data_dir), Vec::<String>::new());
    }

    #[test]
    fn corrupt_image_is_named_and_leaves_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let mut files = folder_files("cifar/", &["a", "b"], 3);
        let bad = files
            .iter_mut()
            .find(|(p, _)| p == "cifar/train/b/0001.png")
            .unwrap();
        bad.1 = b"\x89PNG\r\n\x1a\nthis is not really a png".to_vec();
        let archive = tmp.path().join("bad.tar.gz");
        fs::write(&archive, tar_gz_of(&files)).unwrap();
        let data_dir = tmp.path().join("data");
        fs::create_dir(&data_dir).unwrap();
        let err = import_into(&archive, &data_dir, false, None).unwrap_err();
        assert!(matches!(err, DataError::Decode { .. }), "{err}");
        assert!(err.to_string().contains("cifar/train/b/0001.png"), "{err}");
        assert_nothing_left(&data_dir);
        // Through load(), with a data dir that does not exist yet: it is not left behind.
        let mut src = no_source();
        src.data_dir = tmp.path().join("fresh");
        src.archive = Some(archive);
        assert!(load(&src).is_err());
        assert!(!src.data_dir.exists());
    }

    #[test]
    fn wrong_size_image_is_rejected() {
        let tmp = tempfile::tempdir().unwrap();
        let mut files = folder_files("", &["a", "b"], 2);
        files[3].1 = encoded_image([1, 2, 3], 31, 32, ImageFormat::Png);
        write_tree(&tmp.path().join("src"), &files);
        let data_dir = tmp.path().join("data");
        let err = import_into(&tmp.path().join("src"), &data_dir, false, None).unwrap_err();
        assert!(
            matches!(
                err,
                DataError::ImageSize {
                    width: 31,
                    height: 32,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains(&files[3].0), "{err}");
        assert!(!data_dir.exists());
    }

    #[test]
    fn structural_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let check = |files: Vec<(String, Vec<u8>)>, want: &str| {
            let src = tmp.path().join(format!("src-{}", want.len()));
            let _ = fs::remove_dir_all(&src);
            write_tree(&src, &files);
            let data_dir = tmp.path().join("data");
            let err = import_into(&src, &data_dir, false, None).unwrap_err();
            assert!(err.to_string().contains(want), "wanted `{want}` in: {err}");
            assert!(!data_dir.exists());
            err
        };
        // A test class unknown to train.
        let mut files = folder_files("", &["a", "b"], 1);
        files.push((
            "test/c/0.png".into(),
            encoded_image([0; 3], 32, 32, ImageFormat::Png),
        ));
        let err = check(files, "unknown class folder(s) under test/: c");
        assert!(matches!(err, DataError::UnknownClass { .. }));
        // No test images.
        let files: Vec<_> = folder_files("", &["a", "b"], 1)
            .into_iter()
            .filter(|(p, _)| p.starts_with("train"))
            .collect();
        assert!(matches!(
            check(files, "no test images"),
            DataError::Empty { .. }
        ));
        // Nothing recognisable.
        let files = vec![("readme.txt".to_string(), b"hello".to_vec())];
        assert!(matches!(check(files, "neither"), DataError::Layout { .. }));
        // Two roots.
        let mut files = folder_files("x/", &["a"], 1);
        files.extend(folder_files("y/", &["a"], 1));
        check(files, "several roots");
    }

    #[test]
    fn empty_class_folder_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        write_tree(&src, &folder_files("", &["a", "b"], 1));
        fs::create_dir_all(src.join("train").join("empty")).unwrap();
        let err = import_into(&src, &tmp.path().join("d"), false, None).unwrap_err();
        assert!(matches!(err, DataError::Empty { .. }), "{err}");
        assert!(err.to_string().contains("train/empty/"), "{err}");
        // The same in an archive: directory entries count.
        let mut b = tar::Builder::new(Vec::new());
        b.append_dir_all("top", &src).unwrap();
        let archive = tmp.path().join("e.tar");
        fs::write(&archive, b.into_inner().unwrap()).unwrap();
        let err = import_into(&archive, &tmp.path().join("d"), false, None).unwrap_err();
        assert!(err.to_string().contains("top/train/empty/"), "{err}");
    }

    #[test]
    fn truncated_and_garbage_archives() {
        let tmp = tempfile::tempdir().unwrap();
        let bytes = tar_gz_of(&folder_files("t/", &["a", "b"], 20));
        let data_dir = tmp.path().join("data");
        fs::create_dir(&data_dir).unwrap();
        let archive = tmp.path().join("cut.tar.gz");
        fs::write(&archive, &bytes[..bytes.len() * 2 / 3]).unwrap();
        let err = import_into(&archive, &data_dir, false, None).unwrap_err();
        assert!(matches!(err, DataError::Archive { .. }), "{err}");
        assert_nothing_left(&data_dir);

        fs::write(&archive, vec![7u8; 5000]).unwrap();
        let err = import_into(&archive, &data_dir, false, None).unwrap_err();
        assert!(matches!(err, DataError::Archive { .. }), "{err}");
        assert_nothing_left(&data_dir);

        let err = import_into(&tmp.path().join("nope.tar.gz"), &data_dir, false, None).unwrap_err();
        assert!(err.to_string().contains("nope.tar.gz"), "{err}");
    }

    #[test]
    fn binary_archive_and_directory_import() {
        let tmp = tempfile::tempdir().unwrap();
        let (train, test) = (synthetic_records(12, 10, 1), synthetic_records(5, 10, 2));
        let archive = tmp.path().join("cifar-10-binary.tar.gz");
        write_official_tar_gz(&archive, &train, &test, false);
        let d = import_into(&archive, &tmp.path().join("a"), false, None).unwrap();
        assert_eq!(
            (d.train.clone(), d.test.clone()),
            (train.clone(), test.clone())
        );
        assert_eq!(d.classes.len(), 10);
        assert!(d.source.contains("binary layout from"), "{}", d.source);
        // A directory holding the binary layout (here: the cache just written).
        let d2 = import_into(
            &tmp.path().join("a").join(CACHE_DIR_NAME),
            &tmp.path().join("b"),
            false,
            Some("copied"),
        )
        .unwrap();
        assert_eq!(d2.train, train);
        assert_eq!(d2.checksum, d.checksum);
        assert!(d2.source.starts_with("copied; cache"), "{}", d2.source);
        // An incomplete binary layout.
        fs::remove_file(
            tmp.path()
                .join("a")
                .join(CACHE_DIR_NAME)
                .join("test_batch.bin"),
        )
        .unwrap();
        let err = import_into(
            &tmp.path().join("a").join(CACHE_DIR_NAME),
            &tmp.path().join("c"),
            false,
            None,
        )
        .unwrap_err();
        assert!(err.to_string().contains("missing test_batch.bin"), "{err}");
        assert!(!tmp.path().join("c").exists());
    }

    #[test]
    fn import_replaces_and_load_keeps_existing() {
        let tmp = tempfile::tempdir().unwrap();
        let a = tmp.path().join("a.tar.gz");
        let b = tmp.path().join("b.tar.gz");
        write_official_tar_gz(
            &a,
            &synthetic_records(5, 10, 1),
            &synthetic_records(2, 10, 2),
            true,
        );
        write_official_tar_gz(
            &b,
            &synthetic_records(6, 10, 3),
            &synthetic_records(2, 10, 4),
            true,
        );
        let data_dir = tmp.path().join("data");
        crate::data::import(&a, &data_dir).unwrap();
        let mut src = no_source();
        src.data_dir = data_dir.clone();
        src.archive = Some(b.clone());
        // load() never replaces an existing cache.
        assert_eq!(load(&src).unwrap().train.len(), 5);
        // import() does.
        crate::data::import(&b, &data_dir).unwrap();
        assert_eq!(load(&src).unwrap().train.len(), 6);
        assert_eq!(dir_entries(&data_dir), vec![CACHE_DIR_NAME.to_string()]);
    }

    #[test]
    fn concurrent_imports_leave_one_whole_cache() {
        let tmp = tempfile::tempdir().unwrap();
        let archive = tmp.path().join("set.tar.gz");
        fs::write(
            &archive,
            tar_gz_of(&folder_files("x/", &["a", "b", "c"], 10)),
        )
        .unwrap();
        let data_dir = tmp.path().join("data");
        let sums: Vec<String> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    s.spawn(|| {
                        let mut src = no_source();
                        src.data_dir = data_dir.clone();
                        src.archive = Some(archive.clone());
                        load(&src).unwrap().checksum
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(sums.iter().all(|s| *s == sums[0]));
        assert_eq!(dir_entries(&data_dir), vec![CACHE_DIR_NAME.to_string()]);
        assert_eq!(
            read_cache_dir(&data_dir.join(CACHE_DIR_NAME))
                .unwrap()
                .checksum,
            sums[0]
        );
    }

    #[test]
    fn hidden_and_stray_files_are_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let mut files = folder_files("", &["a", "b"], 1);
        files.push(("train/a/._0000.png".into(), b"AppleDouble".to_vec()));
        files.push(("__MACOSX/train/a/0000.png".into(), b"junk".to_vec()));
        files.push(("train/a/notes.txt".into(), b"text".to_vec()));
        files.push(("preview.png".into(), b"whatever".to_vec()));
        write_tree(&tmp.path().join("src"), &files);
        let d = import_into(&tmp.path().join("src"), &tmp.path().join("d"), false, None).unwrap();
        assert_eq!((d.train.len(), d.test.len()), (2, 2));
    }
}
