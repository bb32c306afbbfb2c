//! Pinned wheels from a loopback index (127.0.0.1) that answers as PyPI does: the JSON
//! project page of PEP 691 with PyPI's fields, the wheel from a files host, `Range`
//! honoured. A good wheel, a wrong digest, a hash the index does not list, 404, a body cut
//! short and resumed, an HTML-only index, a local find-links directory, and wheels whose
//! member is missing, too long or corrupt.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use tuili_testkit::http::{answer, Seen, Server};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

use super::*;

const MEMBER: &str = "tuili_fake/data/part01.bin";
const WHEEL: &str = "tuili_fake-0.1-py3-none-any.whl";

fn sha256(b: &[u8]) -> String {
    format!("{:x}", Sha256::digest(b))
}

/// A wheel holding `payload` as `MEMBER` (stored or deflated), with dist-info as a built
/// wheel has it.
fn wheel(payload: &[u8], method: CompressionMethod) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = SimpleFileOptions::default().compression_method(method);
    z.start_file("tuili_fake/__init__.py", opts).unwrap();
    z.start_file(MEMBER, opts).unwrap();
    z.write_all(payload).unwrap();
    z.start_file("tuili_fake-0.1.dist-info/WHEEL", opts)
        .unwrap();
    z.write_all(b"Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        .unwrap();
    z.finish().unwrap().into_inner()
}

/// A payload that deflate shrinks but that is not all one byte.
fn payload(n: usize) -> Vec<u8> {
    (0..n).map(|i| ((i * 7) % 251) as u8 / 8).collect()
}

/// What the fake index serves.
struct Fake {
    /// The bytes at the wheel's URL.
    served: Vec<u8>,
    /// The sha256 the project page lists for the wheel.
    listed: String,
    /// The wheel's `url` field: relative to the page, or absolute.
    relative_url: bool,
    /// Cut the next wheel body after this many bytes.
    cut: Option<usize>,
    /// Answer the project page in HTML only (PEP 503).
    html: bool,
}

/// PyPI's JSON project page for `tuili-fake`: an older wheel, our wheel, its sdist.
fn project_page(base: &str, f: &Fake) -> String {
    let url = if f.relative_url {
        format!("../../packages/ab/cd/{WHEEL}")
    } else {
        format!("{base}/packages/ab/cd/{WHEEL}")
    };
    let file = |name: &str, url: &str, sha: &str, size: usize| {
        serde_json::json!({
            "filename": name,
            "hashes": {"sha256": sha},
            "requires-python": ">=3.9",
            "size": size,
            "upload-time": "2025-02-07T07:03:18.840953Z",
            "url": url,
            "yanked": false,
        })
    };
    serde_json::json!({
        "meta": {"_last-serial": 26_931_024, "api-version": "1.3"},
        "name": "tuili-fake",
        "files": [
            file("tuili_fake-0.0.9-py3-none-any.whl", &format!("{base}/packages/00/old.whl"), &"1".repeat(64), 10),
            file(WHEEL, &url, &f.listed, f.served.len()),
            file("tuili_fake-0.1.tar.gz", &format!("{base}/packages/ef/gh/tuili_fake-0.1.tar.gz"), &"2".repeat(64), 99),
        ],
        "versions": ["0.0.9", "0.1"],
    })
    .to_string()
}

fn start(fake: Arc<Mutex<Fake>>) -> Server {
    Server::start(Arc::new(move |req: &Seen, base: &str| {
        let mut f = fake.lock().unwrap();
        match req.path.as_str() {
            "/simple/tuili-fake/" if f.html => answer(
                200,
                &[("Content-Type", "text/html")],
                b"<html><a href=\"x.whl\">x.whl</a></html>".to_vec(),
            ),
            "/simple/tuili-fake/" => answer(
                200,
                &[("Content-Type", "application/vnd.pypi.simple.v1+json")],
                project_page(base, &f).into_bytes(),
            ),
            p if p == format!("/packages/ab/cd/{WHEEL}") => {
                let mut a = answer(200, &[], f.served.clone());
                a.cut = f.cut.take();
                a
            }
            _ => answer(404, &[], b"Not Found".to_vec()),
        }
    }))
}

fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tuili-pypi-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn index(server: &Server) -> Index {
    Index {
        url: format!("{}/simple", server.base),
        find_links: Vec::new(),
    }
}

/// `requirement`'s pin with `sha`.
fn pin(sha: &str) -> Pin<'_> {
    Pin::parse("tuili_fake==0.1", sha).unwrap()
}

fn extract(wheel: &Path, room: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let n = extract_member(wheel, MEMBER, &mut out, room)?;
    assert_eq!(n as usize, out.len());
    Ok(out)
}

#[test]
fn the_pinned_wheel_is_downloaded_once_and_its_member_extracted() {
    let data = payload(300_000);
    let w = wheel(&data, CompressionMethod::Deflated);
    assert!(w.len() < data.len() / 2, "the member is deflated");
    let sha = sha256(&w);
    let fake = Arc::new(Mutex::new(Fake {
        served: w,
        listed: sha.clone(),
        relative_url: true,
        cut: None,
        html: false,
    }));
    let server = start(fake);
    let dir = temp_dir("good");
    let (path, fresh) = fetch_wheel(&index(&server), &pin(&sha), &dir).expect("fetched");
    assert!(fresh);
    assert_eq!(path, dir.join(WHEEL));
    assert_eq!(extract(&path, u64::MAX).unwrap(), data);
    let seen = server.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    // The page by its normalized name, asked for in its JSON form.
    assert_eq!(seen[0].path, "/simple/tuili-fake/");
    assert_eq!(
        seen[0].headers.get("accept").map(String::as_str),
        Some(SIMPLE_JSON)
    );
    // Downloaded already: found in `dir`, nothing asked.
    let again = fetch_wheel(&index(&server), &pin(&sha), &dir).expect("from the cache");
    assert_eq!(again, (path, true));
    assert_eq!(server.seen().len(), 2);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_wheel_that_is_not_the_pinned_one_is_refused_and_deleted() {
    let good = wheel(&payload(5000), CompressionMethod::Stored);
    let other = wheel(&payload(5001), CompressionMethod::Stored);
    let sha = sha256(&good);
    // The index lists the pinned hash, the files host serves other bytes.
    let fake = Arc::new(Mutex::new(Fake {
        served: other.clone(),
        listed: sha.clone(),
        relative_url: false,
        cut: None,
        html: false,
    }));
    let server = start(fake.clone());
    let dir = temp_dir("digest");
    let e = format!(
        "{:#}",
        fetch_wheel(&index(&server), &pin(&sha), &dir).unwrap_err()
    );
    assert!(e.contains("does not match") && e.contains(&sha), "{e}");
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "nothing is kept"
    );

    // The index lists another hash for the version: refused before any download.
    fake.lock().unwrap().listed = sha256(&other);
    let before = server.seen().len();
    let e = format!(
        "{:#}",
        fetch_wheel(&index(&server), &pin(&sha), &dir).unwrap_err()
    );
    assert!(
        e.contains("no wheel of tuili_fake==0.1 has the pinned sha256") && e.contains(WHEEL),
        "{e}"
    );
    assert_eq!(server.seen().len(), before + 1, "only the page was asked");

    // A version the index does not have, and a project it does not have (404).
    let e = format!(
        "{:#}",
        fetch_wheel(
            &index(&server),
            &Pin::parse("tuili-fake==0.2", &sha).unwrap(),
            &dir
        )
        .unwrap_err()
    );
    assert!(e.contains("no wheel of tuili-fake==0.2"), "{e}");
    let e = format!(
        "{:#}",
        fetch_wheel(
            &index(&server),
            &Pin::parse("absent==1", &sha).unwrap(),
            &dir
        )
        .unwrap_err()
    );
    assert!(e.contains("/simple/absent/: not found (HTTP 404)"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_body_cut_short_is_kept_and_resumed() {
    let w = wheel(&payload(200_000), CompressionMethod::Stored);
    let sha = sha256(&w);
    let fake = Arc::new(Mutex::new(Fake {
        served: w.clone(),
        listed: sha.clone(),
        relative_url: false,
        cut: Some(70_000),
        html: false,
    }));
    let server = start(fake);
    let dir = temp_dir("cut");
    let e = format!(
        "{:#}",
        fetch_wheel(&index(&server), &pin(&sha), &dir).unwrap_err()
    );
    assert!(e.contains("run the same command again to resume"), "{e}");
    assert!(!dir.join(WHEEL).exists());
    let kept = std::fs::metadata(download::incomplete_path(&dir.join(WHEEL)))
        .unwrap()
        .len();
    assert!(kept > 0 && kept < w.len() as u64, "{kept}");
    let (path, _) = fetch_wheel(&index(&server), &pin(&sha), &dir).expect("resumed");
    assert_eq!(std::fs::read(&path).unwrap(), w);
    let last = server.seen().pop().unwrap();
    assert_eq!(
        last.headers.get("range").map(String::as_str),
        Some(format!("bytes={kept}-").as_str())
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_html_only_index_is_named_as_such() {
    let fake = Arc::new(Mutex::new(Fake {
        served: Vec::new(),
        listed: "0".repeat(64),
        relative_url: false,
        cut: None,
        html: true,
    }));
    let server = start(fake);
    let dir = temp_dir("html");
    let e = format!(
        "{:#}",
        fetch_wheel(&index(&server), &pin(&"0".repeat(64)), &dir).unwrap_err()
    );
    assert!(e.contains("text/html") && e.contains("PEP 691"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_find_links_directory_is_used_without_the_network() {
    let dir = temp_dir("links");
    let w = wheel(&payload(1000), CompressionMethod::Deflated);
    // A wheel of the same name with other bytes is passed over.
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(
        dir.join("a").join(WHEEL),
        wheel(&payload(999), CompressionMethod::Stored),
    )
    .unwrap();
    std::fs::create_dir_all(dir.join("b")).unwrap();
    std::fs::write(dir.join("b").join(WHEEL), &w).unwrap();
    let sha = sha256(&w);
    let index = Index {
        // Nothing listens there: the network is never used.
        url: "http://127.0.0.1:9/simple".into(),
        find_links: vec![dir.join("a"), dir.join("b")],
    };
    let (path, fresh) = fetch_wheel(&index, &pin(&sha), &dir.join("cache")).expect("found");
    assert_eq!((path, fresh), (dir.join("b").join(WHEEL), false));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn members_are_checked_for_presence_size_and_crc() {
    let dir = temp_dir("members");
    let data = payload(4000);
    let good = dir.join("good.whl");
    std::fs::write(&good, wheel(&data, CompressionMethod::Stored)).unwrap();
    assert_eq!(extract(&good, 4000).unwrap(), data);
    let e = format!("{:#}", extract(&good, 3999).unwrap_err());
    assert!(e.contains("4000 bytes, more than the 3999 left"), "{e}");
    let e = format!(
        "{:#}",
        extract_member(
            &good,
            "tuili_fake/data/other.bin",
            &mut Vec::new(),
            u64::MAX
        )
        .unwrap_err()
    );
    assert!(e.contains("has no member tuili_fake/data/other.bin"), "{e}");
    let e = format!(
        "{:#}",
        extract_member(
            &good,
            "../tuili_fake/data/part01.bin",
            &mut Vec::new(),
            u64::MAX
        )
        .unwrap_err()
    );
    assert!(e.contains("only a plain relative path"), "{e}");

    // One byte of the stored member flipped: the CRC-32 no longer matches.
    let mut bytes = wheel(&data, CompressionMethod::Stored);
    let at = bytes
        .windows(64)
        .position(|w| w == &data[1000..1064])
        .expect("the stored payload");
    bytes[at] ^= 0x55;
    let bad = dir.join("bad.whl");
    std::fs::write(&bad, &bytes).unwrap();
    let e = format!("{:#}", extract(&bad, u64::MAX).unwrap_err());
    assert!(e.contains("CRC-32") && e.contains("checksum"), "{e}");

    let not_zip = dir.join("not.whl");
    std::fs::write(&not_zip, b"PK not really").unwrap();
    let e = format!("{:#}", extract(&not_zip, u64::MAX).unwrap_err());
    assert!(e.contains("not a zip archive"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
