//! Downloading the official CIFAR-10 binary archive: streamed to a temporary file in the
//! data directory with its MD5 computed on the way, checked, then imported (extracted into a
//! staging directory renamed into place), and the temporary file removed. A failure leaves
//! nothing in the data directory.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use md5::{Digest, Md5};

use crate::data::{Cifar10, DataError, DataSource, ENV_ARCHIVE};

/// Download `url` into `dest` (created; it must not exist), checking the length announced
/// by the server and, unless `expected_md5` is empty, the MD5. Returns the MD5 (hex). On error
/// `dest` is removed.
pub fn download(url: &str, dest: &Path, expected_md5: &str) -> Result<String, DataError> {
    let res = download_inner(url, dest, expected_md5);
    if res.is_err() {
        let _ = std::fs::remove_file(dest);
    }
    res
}

fn download_inner(url: &str, dest: &Path, expected_md5: &str) -> Result<String, DataError> {
    let fail = |reason: String| DataError::Download {
        url: url.to_string(),
        reason,
    };
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(30))
        .timeout_read(Duration::from_secs(120))
        .build();
    tracing::info!("downloading {url}");
    let t0 = Instant::now();
    let resp = agent.get(url).call().map_err(|e| match e {
        ureq::Error::Status(code, r) => fail(format!("HTTP {code} {}", r.status_text())),
        ureq::Error::Transport(t) => fail(format!(
            "{t}; to use a local copy instead, pass --archive <path> (or set {ENV_ARCHIVE}) \
             naming cifar-10-binary.tar.gz or an image-folder archive"
        )),
    })?;
    let expected_len: Option<u64> = resp
        .header("Content-Length")
        .and_then(|v| v.trim().parse().ok());
    let mut body = resp.into_reader();
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| DataError::io(dest, e))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut md5 = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut received: u64 = 0;
    let mut next_log: u64 = 16 << 20;
    let of = expected_len.map_or(String::new(), |n| format!(" of {n}"));
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(fail(format!(
                    "truncated or interrupted after {received}{of} bytes: {e}"
                )))
            }
        };
        md5.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| DataError::io(dest, e))?;
        received += n as u64;
        if received >= next_log {
            tracing::info!("downloaded {} MB{of}", received >> 20);
            next_log += 16 << 20;
        }
    }
    if let Some(len) = expected_len {
        if received != len {
            return Err(fail(format!(
                "truncated: received {received} of {len} bytes"
            )));
        }
    }
    let file = out
        .into_inner()
        .map_err(|e| DataError::io(dest, e.into_error()))?;
    file.sync_all().map_err(|e| DataError::io(dest, e))?;
    let got: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
    let expected = expected_md5.trim().to_ascii_lowercase();
    if expected.is_empty() {
        tracing::warn!("no MD5 to check {url} against (got {got})");
    } else if got != expected {
        return Err(DataError::Checksum {
            what: format!("{url} (downloaded {received} bytes)"),
            expected,
            got,
        });
    }
    tracing::info!(
        "downloaded {received} bytes in {:.1?}, md5 {got}",
        t0.elapsed()
    );
    Ok(got)
}

/// Download `src.url` into a temporary file in `src.data_dir`, check `src.md5`, import it
/// into the cache, and remove the file. Nothing is left behind on failure (the data
/// directory itself is removed again if this created it and it is empty).
pub(crate) fn fetch_official(src: &DataSource) -> Result<Cifar10, DataError> {
    let data_dir = &src.data_dir;
    let created = !data_dir.is_dir();
    std::fs::create_dir_all(data_dir).map_err(|e| DataError::io(data_dir, e))?;
    let res = (|| {
        super::cache::remove_stale(data_dir);
        // A temporary file in the data directory, removed on drop (success or not).
        let part = super::cache::TempFile(data_dir.join(format!(
            "{}{}",
            super::cache::PART_PREFIX,
            super::cache::unique_suffix()
        )));
        download(&src.url, &part.0, &src.md5)?;
        let origin = if src.md5.trim().is_empty() {
            format!("downloaded from {}", src.url)
        } else {
            format!("downloaded from {} (md5 {})", src.url, src.md5.trim())
        };
        super::import::import_into(&part.0, data_dir, false, Some(&origin))
    })();
    if res.is_err() && created {
        let _ = std::fs::remove_dir(data_dir);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::{dir_entries, official_tar_gz, synthetic_records};
    use crate::data::{load, CACHE_DIR_NAME};
    use std::io::{BufRead, BufReader};
    use std::net::{TcpListener, TcpStream};

    enum Reply {
        /// 200 with the body.
        Full(Vec<u8>),
        /// 200 announcing the body's full length, but closing after `cut` bytes.
        Cut(Vec<u8>, usize),
        /// This status, empty body.
        Status(u16),
    }

    /// A minimal HTTP/1.1 server on 127.0.0.1 answering `routes` (path -> reply), one
    /// connection at a time, in a background thread. Returns `http://127.0.0.1:<port>`.
    fn serve(routes: Vec<(&'static str, Reply)>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let _ = answer(stream, &routes);
            }
        });
        base
    }

    fn answer(mut stream: TcpStream, routes: &[(&str, Reply)]) -> std::io::Result<()> {
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut request_line = String::new();
        reader.read_line(&mut request_line)?;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
                break;
            }
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("/");
        let head = |status: &str, len: usize| {
            format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {len}\r\nConnection: close\r\n\r\n"
            )
        };
        match routes.iter().find(|(p, _)| *p == path).map(|(_, r)| r) {
            Some(Reply::Full(body)) => {
                stream.write_all(head("200 OK", body.len()).as_bytes())?;
                stream.write_all(body)?;
            }
            Some(Reply::Cut(body, cut)) => {
                stream.write_all(head("200 OK", body.len()).as_bytes())?;
                stream.write_all(&body[..*cut])?;
            }
            Some(Reply::Status(code)) => {
                stream.write_all(head(&format!("{code} Whatever"), 0).as_bytes())?;
            }
            None => stream.write_all(head("404 Not Found", 0).as_bytes())?,
        }
        stream.flush()?;
        stream.shutdown(std::net::Shutdown::Both)
    }

    fn md5_hex(bytes: &[u8]) -> String {
        Md5::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    struct Fixture {
        _tmp: tempfile::TempDir,
        base: String,
        archive: Vec<u8>,
        train: crate::data::ImageSet,
        test: crate::data::ImageSet,
        data_dir: std::path::PathBuf,
    }

    fn fixture() -> Fixture {
        let train = synthetic_records(17, 10, 11);
        let test = synthetic_records(6, 10, 12);
        let archive = official_tar_gz(&train, &test, true);
        let half = archive.len() / 2;
        let truncated = archive[..half].to_vec();
        let base = serve(vec![
            ("/cifar-10-binary.tar.gz", Reply::Full(archive.clone())),
            ("/cut.tar.gz", Reply::Cut(archive.clone(), half)),
            ("/short.tar.gz", Reply::Full(truncated)),
            ("/gone.tar.gz", Reply::Status(410)),
        ]);
        let tmp = tempfile::tempdir().unwrap();
        let data_dir = tmp.path().join("data");
        Fixture {
            _tmp: tmp,
            base,
            archive,
            train,
            test,
            data_dir,
        }
    }

    fn source(f: &Fixture, path: &str, md5: String) -> DataSource {
        let mut s = DataSource::new(&f.data_dir);
        s.url = format!("{}{path}", f.base);
        s.md5 = md5;
        s
    }

    #[test]
    fn good_download_loads_and_round_trips() {
        let f = fixture();
        let src = source(&f, "/cifar-10-binary.tar.gz", md5_hex(&f.archive));
        let d = load(&src).unwrap();
        assert_eq!(d.train, f.train);
        assert_eq!(d.test, f.test);
        assert_eq!(d.classes.len(), 10);
        assert!(d.source.contains(&src.url), "{}", d.source);
        // Only the cache is left: the download was removed.
        assert_eq!(dir_entries(&f.data_dir), vec![CACHE_DIR_NAME.to_string()]);
        // Second load: from the cache (the URL is not needed any more).
        let mut offline = src.clone();
        offline.url = "http://127.0.0.1:1/nothing".into();
        assert_eq!(load(&offline).unwrap().checksum, d.checksum);
        crate::data::fetch(&offline).unwrap();
    }

    #[test]
    fn wrong_checksum_is_an_error_and_leaves_nothing() {
        let f = fixture();
        let src = source(
            &f,
            "/cifar-10-binary.tar.gz",
            crate::data::DEFAULT_MD5.into(),
        );
        let err = load(&src).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Checksum { .. }), "{msg}");
        assert!(msg.contains(crate::data::DEFAULT_MD5), "{msg}");
        assert!(msg.contains(&md5_hex(&f.archive)), "{msg}");
        assert!(!f.data_dir.exists(), "{:?}", dir_entries(&f.data_dir));
        // With an existing (empty) data dir, it stays empty.
        std::fs::create_dir(&f.data_dir).unwrap();
        assert!(crate::data::fetch(&src).is_err());
        assert_eq!(dir_entries(&f.data_dir), Vec::<String>::new());
    }

    #[test]
    fn truncated_download_is_an_error_and_leaves_nothing() {
        let f = fixture();
        std::fs::create_dir(&f.data_dir).unwrap();
        // The connection drops before the announced length.
        let src = source(&f, "/cut.tar.gz", md5_hex(&f.archive));
        let err = load(&src).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Download { .. }), "{msg}");
        assert!(msg.contains("truncated") && msg.contains(&src.url), "{msg}");
        assert_eq!(dir_entries(&f.data_dir), Vec::<String>::new());
        // A complete transfer of a truncated file whose MD5 is (wrongly) the expected one:
        // extraction fails.
        let short = &f.archive[..f.archive.len() / 2];
        let src = source(&f, "/short.tar.gz", md5_hex(short));
        let err = load(&src).unwrap_err();
        assert!(matches!(err, DataError::Archive { .. }), "{err}");
        assert_eq!(dir_entries(&f.data_dir), Vec::<String>::new());
    }

    #[test]
    fn refused_connection_and_http_errors_name_the_url() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let tmp = tempfile::tempdir().unwrap();
        let mut src = DataSource::new(tmp.path().join("data"));
        src.url = format!("http://127.0.0.1:{port}/cifar-10-binary.tar.gz");
        let err = load(&src).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, DataError::Download { .. }), "{msg}");
        assert!(msg.contains(&src.url), "{msg}");
        assert!(msg.contains(ENV_ARCHIVE), "{msg}");
        assert!(!src.data_dir.exists());

        let f = fixture();
        let src = source(&f, "/gone.tar.gz", String::new());
        let msg = load(&src).unwrap_err().to_string();
        assert!(msg.contains("410") && msg.contains("/gone.tar.gz"), "{msg}");
        assert!(!f.data_dir.exists());
    }

    #[test]
    fn download_function_checks_md5_and_cleans_up() {
        let f = fixture();
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("a.tar.gz");
        let url = format!("{}/cifar-10-binary.tar.gz", f.base);
        let got = download(&url, &dest, "").unwrap();
        assert_eq!(got, md5_hex(&f.archive));
        assert_eq!(std::fs::read(&dest).unwrap(), f.archive);
        std::fs::remove_file(&dest).unwrap();
        assert!(download(&url, &dest, &"0".repeat(32)).is_err());
        assert!(!dest.exists());
    }
}
