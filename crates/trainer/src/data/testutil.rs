//! Helpers for the data and download tests: synthetic records, archives in the official
//! layout, image folders.

use std::fs;
use std::path::Path;

use super::cache::{encode_files, META_FILE};
use super::SplitMix64;
use super::{ImageSet, CIFAR10_CLASSES, IMAGE_BYTES};

/// `n` random images with random labels below `classes`.
pub(crate) fn synthetic_records(n: usize, classes: usize, seed: u64) -> ImageSet {
    let mut rng = SplitMix64::new(seed);
    let mut set = ImageSet::default();
    for _ in 0..n {
        set.labels.push((rng.next_u64() % classes as u64) as u8);
        for _ in 0..IMAGE_BYTES / 8 {
            set.images.extend_from_slice(&rng.next_u64().to_le_bytes());
        }
    }
    set
}

fn append_file(b: &mut tar::Builder<impl std::io::Write>, path: &str, bytes: &[u8]) {
    let mut h = tar::Header::new_gnu();
    h.set_size(bytes.len() as u64);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    b.append_data(&mut h, path, bytes).unwrap();
}

fn append_dir(b: &mut tar::Builder<impl std::io::Write>, path: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o755);
    h.set_entry_type(tar::EntryType::Directory);
    h.set_cksum();
    b.append_data(&mut h, path, std::io::empty()).unwrap();
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A `.tar.gz` in the official layout (`cifar-10-batches-bin/...`).
pub(crate) fn official_tar_gz(train: &ImageSet, test: &ImageSet, with_meta: bool) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    append_dir(&mut b, "cifar-10-batches-bin/");
    for (i, (name, bytes)) in encode_files(train, test).enumerate() {
        append_file(&mut b, &format!("cifar-10-batches-bin/{name}"), &bytes);
        if i == 2 {
            append_file(&mut b, "cifar-10-batches-bin/readme.html", b"<html></html>");
        }
    }
    if with_meta {
        let meta = format!("{}\n\n", CIFAR10_CLASSES.join("\n"));
        append_file(
            &mut b,
            &format!("cifar-10-batches-bin/{META_FILE}"),
            meta.as_bytes(),
        );
    }
    gzip(&b.into_inner().unwrap())
}

pub(crate) fn write_official_tar_gz(path: &Path, train: &ImageSet, test: &ImageSet, meta: bool) {
    fs::write(path, official_tar_gz(train, test, meta)).unwrap();
}

/// A flat-coloured 32x32 (or `w`x`h`) RGB image encoded as PNG or JPEG.
pub(crate) fn encoded_image(rgb: [u8; 3], w: u32, h: u32, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbImage::from_fn(w, h, |_, _| image::Rgb(rgb));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A PNG whose pixel (x, y) is `(x * 8, y * 8, seed)`: every pixel distinct per position.
pub(crate) fn gradient_png(seed: u8) -> Vec<u8> {
    let img = image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([x as u8 * 8, y as u8 * 8, seed]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

/// Write `files` (relative path, bytes) under `root`, creating folders.
pub(crate) fn write_tree(root: &Path, files: &[(String, Vec<u8>)]) {
    for (rel, bytes) in files {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }
}

/// A `.tar.gz` of `files` (relative paths used as member names, with directory entries).
pub(crate) fn tar_gz_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut dirs = std::collections::BTreeSet::new();
    for (rel, bytes) in files {
        let mut acc = String::new();
        let parts: Vec<&str> = rel.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            acc.push_str(part);
            acc.push('/');
            if dirs.insert(acc.clone()) {
                append_dir(&mut b, &acc);
            }
        }
        append_file(&mut b, rel, bytes);
    }
    gzip(&b.into_inner().unwrap())
}

/// The names in a directory, sorted.
pub(crate) fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}
