//! Integration tests of `data::archive`, against archives built here, including hostile ones.
//! All fixtures live in temp dirs.

use crate::common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use grouploss::data::archive::{extract, ArchiveError, ArchiveKind, ExtractSummary};

use common::{payload, tempdir};

/// A tar header with raw name and link bytes, bypassing the tar crate's own path checks so
/// that hostile archives can be built.
fn raw_header(name: &str, kind: tar::EntryType, size: u64, link: Option<&str>) -> tar::Header {
    let mut h = tar::Header::new_old();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    let old = h.as_old_mut();
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    if let Some(l) = link {
        old.linkname[..l.len()].copy_from_slice(l.as_bytes());
    }
    h.set_cksum();
    h
}

/// (name, type, content or link target).
type TarEntry<'a> = (&'a str, tar::EntryType, &'a str);

fn tar_bytes(entries: &[TarEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data) in entries {
        let is_link = matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link);
        let size = if kind.is_file() { data.len() as u64 } else { 0 };
        let h = raw_header(name, *kind, size, is_link.then_some(*data));
        let body: &[u8] = if kind.is_file() { data.as_bytes() } else { b"" };
        b.append(&h, body).expect("append");
    }
    b.into_inner().expect("finish tar")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip finish")
}

/// A scratch area: `root/archive.*` and `root/work/` as the parent of `root/work/out`.
struct Scratch {
    root: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let root = tempdir();
        fs::create_dir(root.path().join("work")).expect("mkdir");
        Scratch { root }
    }
    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.root.path().join(name);
        fs::write(&p, bytes).expect("write archive");
        p
    }
    fn dest(&self) -> PathBuf {
        self.root.path().join("work/out")
    }
    /// After a failed extraction: no dest, no temp leftovers, nothing beside the archive.
    fn assert_untouched(&self, archive: &Path) {
        assert_eq!(
            fs::read_dir(self.root.path().join("work"))
                .expect("ls")
                .count(),
            0
        );
        let mut top: Vec<PathBuf> = fs::read_dir(self.root.path())
            .expect("ls")
            .map(|e| e.expect("entry").path())
            .collect();
        top.sort();
        assert_eq!(top, vec![archive.to_owned(), self.root.path().join("work")]);
    }
}

const DIR: tar::EntryType = tar::EntryType::Directory;
const FILE: tar::EntryType = tar::EntryType::Regular;
const SYMLINK: tar::EntryType = tar::EntryType::Symlink;
const HARDLINK: tar::EntryType = tar::EntryType::Link;

#[test]
fn tar_gz_round_trip_replaces_existing_dest() {
    let sc = Scratch::new();
    let tgz = gzip(&tar_bytes(&[
        ("CUB/", DIR, ""),
        ("CUB/images/001.jpg", FILE, "jpeg bytes"),
        ("CUB/classes.txt", FILE, "1 Black_footed_Albatross\n"),
        ("CUB/latest", SYMLINK, "images/001.jpg"),
        ("CUB/copy.jpg", HARDLINK, "CUB/images/001.jpg"),
    ]));
    let archive = sc.write("CUB_200_2011.tgz", &tgz);
    assert_eq!(
        ArchiveKind::from_path(&archive).expect("kind"),
        ArchiveKind::TarGz
    );
    fs::create_dir_all(sc.dest()).expect("old dest");
    fs::write(sc.dest().join("stale.txt"), "old").expect("old file");
    let summary = extract(&archive, ArchiveKind::TarGz, &sc.dest()).expect("extract");
    assert_eq!(
        summary,
        ExtractSummary {
            files: 3,
            bytes: 10 + 25
        }
    );
    let d = sc.dest();
    assert!(!d.join("stale.txt").exists());
    assert_eq!(
        fs::read_to_string(d.join("CUB/images/001.jpg")).expect("r"),
        "jpeg bytes"
    );
    assert_eq!(
        fs::read_to_string(d.join("CUB/latest")).expect("r"),
        "jpeg bytes"
    );
    assert_eq!(
        fs::read_to_string(d.join("CUB/copy.jpg")).expect("r"),
        "jpeg bytes"
    );
    let work: Vec<_> = fs::read_dir(sc.root.path().join("work"))
        .expect("ls")
        .collect();
    assert_eq!(work.len(), 1, "only dest remains beside it");
}

#[test]
fn zip_round_trip() {
    let sc = Scratch::new();
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let deflated = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    let stored = deflated.compression_method(zip::CompressionMethod::Stored);
    w.add_directory("Stanford_Online_Products/", deflated)
        .expect("dir");
    w.start_file("Stanford_Online_Products/Ebay_info.txt", deflated)
        .expect("file");
    w.write_all(&b"image_id class_id\n".repeat(100))
        .expect("write");
    w.start_file("Stanford_Online_Products/a/b.bin", stored)
        .expect("file");
    w.write_all(&[7u8; 33]).expect("write");
    let bytes = w.finish().expect("finish").into_inner();
    let archive = sc.write("Stanford_Online_Products.zip", &bytes);
    let kind = ArchiveKind::from_path(&archive).expect("kind");
    let summary = extract(&archive, kind, &sc.dest()).expect("extract");
    assert_eq!(
        summary,
        ExtractSummary {
            files: 2,
            bytes: 1_800 + 33
        }
    );
    let info = sc.dest().join("Stanford_Online_Products/Ebay_info.txt");
    assert_eq!(
        fs::read(info).expect("r"),
        b"image_id class_id\n".repeat(100)
    );
    assert_eq!(
        fs::read(sc.dest().join("Stanford_Online_Products/a/b.bin")).expect("r"),
        [7u8; 33]
    );
}

#[test]
fn tar_with_parent_dir_entry_is_rejected() {
    let sc = Scratch::new();
    let archive = sc.write(
        "evil.tar",
        &tar_bytes(&[("ok.txt", FILE, "fine"), ("../evil", FILE, "x")]),
    );
    match extract(&archive, ArchiveKind::Tar, &sc.dest()) {
        Err(ArchiveError::ParentDir { entry, archive: a }) => {
            assert_eq!((entry.as_str(), a), ("../evil", archive.clone()))
        }
        r => panic!("unexpected result {r:?}"),
    }
    sc.assert_untouched(&archive);
}

#[test]
fn tar_with_absolute_path_is_rejected() {
    let sc = Scratch::new();
    let abs = format!("/tmp/gl-archive-test-abs-{}", std::process::id());
    let archive = sc.write("abs.tar", &tar_bytes(&[(&abs, FILE, "x")]));
    let r = extract(&archive, ArchiveKind::Tar, &sc.dest());
    assert!(
        matches!(&r, Err(ArchiveError::AbsolutePath { entry, .. }) if *entry == abs),
        "{r:?}"
    );
    assert!(!Path::new(&abs).exists());
    sc.assert_untouched(&archive);
}

#[test]
fn escaping_links_are_rejected() {
    let cases: [(&[TarEntry], &str); 5] = [
        (&[("etc", SYMLINK, "/etc")], "etc"),
        (&[("d/", DIR, ""), ("d/up", SYMLINK, "../../x")], "d/up"),
        (&[("hard", HARDLINK, "../x")], "hard"),
        // Lexically inside, physically outside: d/s is the root, so d/s/.. is its parent.
        (
            &[
                ("d/", DIR, ""),
                ("d/s", SYMLINK, ".."),
                ("t", SYMLINK, "d/s/.."),
            ],
            "t",
        ),
        // A link inside the root must not be written through.
        (
            &[("sub/", DIR, ""), ("a", SYMLINK, "sub"), ("a/f", FILE, "x")],
            "a/f",
        ),
    ];
    for (entries, bad) in cases {
        let sc = Scratch::new();
        let archive = sc.write("links.tar", &tar_bytes(entries));
        match extract(&archive, ArchiveKind::Tar, &sc.dest()) {
            Err(ArchiveError::LinkEscapes { entry, .. })
            | Err(ArchiveError::ThroughSymlink { entry, .. }) => assert_eq!(entry, bad),
            r => panic!("{bad}: unexpected result {r:?}"),
        }
        sc.assert_untouched(&archive);
    }
}

#[test]
fn zip_with_hostile_entries_is_rejected() {
    let opts = zip::write::SimpleFileOptions::default();
    type Writer = zip::ZipWriter<std::io::Cursor<Vec<u8>>>;
    let build = |hostile: &dyn Fn(&mut Writer)| {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        w.start_file("ok.txt", opts).expect("file");
        w.write_all(b"fine").expect("write");
        hostile(&mut w);
        w.finish().expect("finish").into_inner()
    };
    type Outcome = Result<ExtractSummary, ArchiveError>;
    let check = |name: &str, hostile: &dyn Fn(&mut Writer), rejected: &dyn Fn(&Outcome) -> bool| {
        let sc = Scratch::new();
        let archive = sc.write(name, &build(hostile));
        let r = extract(&archive, ArchiveKind::Zip, &sc.dest());
        assert!(rejected(&r), "{r:?}");
        sc.assert_untouched(&archive);
    };
    check(
        "parent.zip",
        &|w| {
            w.start_file("../evil", opts).expect("file");
            w.write_all(b"x").expect("write");
        },
        &|r| matches!(r, Err(ArchiveError::ParentDir { entry, .. }) if entry == "../evil"),
    );
    check(
        "link.zip",
        &|w| {
            w.add_symlink("etc", "/etc", opts).expect("symlink");
        },
        &|r| matches!(r, Err(ArchiveError::LinkEscapes { entry, .. }) if entry == "etc"),
    );
}

#[test]
fn device_and_fifo_entries_are_unsupported() {
    let sc = Scratch::new();
    let archive = sc.write(
        "fifo.tar",
        &tar_bytes(&[("pipe", tar::EntryType::Fifo, "")]),
    );
    let r = extract(&archive, ArchiveKind::Tar, &sc.dest());
    assert!(
        matches!(&r, Err(ArchiveError::UnsupportedEntry { entry, .. }) if entry == "pipe"),
        "{r:?}"
    );
    sc.assert_untouched(&archive);
}

#[test]
fn truncated_tar_gz_is_an_error_naming_the_archive_and_leaves_no_dest() {
    let sc = Scratch::new();
    let big =
        String::from_utf8(payload(64_000).iter().map(|b| b'a' + b % 26).collect()).expect("ascii");
    let tgz = gzip(&tar_bytes(&[
        ("a.txt", FILE, &big),
        ("b.txt", FILE, "tail"),
    ]));
    let archive = sc.write("cut.tar.gz", &tgz[..tgz.len() / 2]);
    let err = extract(&archive, ArchiveKind::TarGz, &sc.dest()).expect_err("truncated");
    assert!(
        matches!(&err, ArchiveError::Corrupt { archive: a, .. } | ArchiveError::ShortEntry { archive: a, .. } if *a == archive),
        "{err:?}"
    );
    assert!(
        err.to_string().contains(&archive.display().to_string()),
        "{err}"
    );
    sc.assert_untouched(&archive);
    // A damaged gzip trailer is caught even though every tar entry was intact.
    let mut bad_crc = tgz.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0xff;
    let archive = sc.write("crc.tgz", &bad_crc);
    let r = extract(&archive, ArchiveKind::TarGz, &sc.dest());
    assert!(matches!(r, Err(ArchiveError::Corrupt { .. })), "{r:?}");
    assert!(!sc.dest().exists());
}

#[test]
fn archive_kind_is_detected_from_the_name() {
    for (name, kind) in [
        ("a.tgz", ArchiveKind::TarGz),
        ("CARS.TAR.GZ", ArchiveKind::TarGz),
        ("x.tar", ArchiveKind::Tar),
        ("y.zip", ArchiveKind::Zip),
    ] {
        assert_eq!(ArchiveKind::from_path(Path::new(name)).expect(name), kind);
    }
    assert!(matches!(
        ArchiveKind::from_path(Path::new("z.rar")),
        Err(ArchiveError::UnknownKind { .. })
    ));
}
