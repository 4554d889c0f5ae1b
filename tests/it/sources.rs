//! Several sources per dataset (issue 38): `gl fetch` tries them in order over a loopback HTTP
//! server — a 404 or a truncated body moves on to the next source, and `dataset.json` names the
//! one used; when every source fails the error is the way out (each source's error, the files
//! to get by hand with sizes and checksums, the `--source … --from …` command); `gl fetch
//! --check` asks the sources (HEAD, else a one-byte ranged GET) without downloading; `gl run
//! --dry-run` lists the sources each fetch will try.

use crate::common::gl_cli;
use crate::common::http_server::{Route, Server};
use crate::datasets::{cub_archive, md5_hex, tar_gz, Project};
use std::path::Path;

/// One source of the test dataset `tinycub` (CUB layout, 12 images of 4 classes).
struct Src<'a> {
    name: &'a str,
    host: &'a str,
    file: &'a str,
    /// Empty: no public URL.
    url: String,
    md5: Option<String>,
    size: Option<usize>,
}

fn src<'a>(name: &'a str, file: &'a str, url: String) -> Src<'a> {
    Src {
        name,
        host: "a test host",
        file,
        url,
        md5: None,
        size: None,
    }
}

fn registry(sources: &[Src]) -> String {
    let mut r = String::from(
        "[datasets.tinycub]\ntitle = \"tiny CUB\"\nlicense = \"test\"\n\
         expect = { images = 12, classes = 4, train_images = 6, test_images = 6 }\n",
    );
    for s in sources {
        let urls = match s.url.is_empty() {
            true => String::new(),
            false => format!("\"{}\"", s.url),
        };
        let mut file = format!("{{ name = \"{}\", urls = [{urls}]", s.file);
        if let Some(md5) = &s.md5 {
            file.push_str(&format!(", md5 = \"{md5}\""));
        }
        if let Some(size) = s.size {
            file.push_str(&format!(", size = {size}"));
        }
        r.push_str(&format!(
            "[[datasets.tinycub.sources]]\nname = \"{}\"\nhost = \"{}\"\nsince = \"2011\"\n\
             root = \"CUB_200_2011\"\nlayout = {{ kind = \"cub\" }}\nfiles = [{file} }}]\n",
            s.name, s.host
        ));
    }
    r
}

fn dataset_json(p: &Project) -> serde_json::Value {
    let text = std::fs::read(p.path().join("data/datasets/tinycub/dataset.json")).unwrap();
    serde_json::from_slice(&text).unwrap()
}

/// Leftovers of a failed source beside the dataset (staging directories).
fn staging_leftovers(p: &Project) -> Vec<String> {
    let dir = p.path().join("data/datasets");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("staging"))
        .collect()
}

#[test]
fn a_404_source_moves_on_to_the_next_and_dataset_json_names_it() {
    let archive = cub_archive(4, 3);
    let server = Server::start(&[
        ("/a/CUB_200_2011.tgz", Route::Status(404)),
        ("/b/CUB_200_2011.tgz", Route::Bytes(archive.clone())),
    ]);
    let md5 = Some(md5_hex(&archive));
    let p = Project::new(&registry(&[
        Src {
            md5: md5.clone(),
            ..src(
                "official",
                "CUB_200_2011.tgz",
                server.url("/a/CUB_200_2011.tgz"),
            )
        },
        Src {
            md5,
            ..src(
                "mirror",
                "CUB_200_2011.tgz",
                server.url("/b/CUB_200_2011.tgz"),
            )
        },
    ]));
    let out = p.fetch_ok("tinycub");
    assert!(
        out.contains("12 images, 4 classes") && out.contains("from source `mirror`"),
        "{out}"
    );
    let json = dataset_json(&p);
    assert_eq!(json["source"], "mirror");
    assert_eq!(json["failed_sources"][0]["source"], "official");
    let error = json["failed_sources"][0]["error"].as_str().unwrap();
    assert!(error.contains("answered HTTP 404"), "{error}");
    assert_eq!(
        server.requests("/a/CUB_200_2011.tgz").len(),
        1,
        "a 404 is not retried"
    );
    let downloads = p.path().join("data/downloads/tinycub");
    assert!(downloads.join("mirror/CUB_200_2011.tgz").is_file());
    assert!(!downloads.join("official/CUB_200_2011.tgz").exists());
    // The source in place is tried first next time: no request to the dead host.
    let before = server.total_requests();
    let again = p.fetch_ok("tinycub");
    assert!(again.contains("files unchanged"), "{again}");
    assert_eq!(server.total_requests(), before);
}

/// The source `whole`: the archive served whole at `/ok/`.
fn whole(server: &Server) -> Src<'static> {
    src(
        "whole",
        "CUB_200_2011.tgz",
        server.url("/ok/CUB_200_2011.tgz"),
    )
}

/// `gl fetch tinycub` without retries, which must succeed from the source `whole`; its
/// `dataset.json`.
fn fetched_from_whole(p: &Project) -> serde_json::Value {
    let (code, out, err) = p.gl(&["fetch", "tinycub", "--quiet", "--retries", "0"]);
    assert_eq!(code, 0, "{out}{err}");
    let json = dataset_json(p);
    assert_eq!(json["source"], "whole");
    json
}

#[test]
fn a_truncated_body_or_archive_moves_on_and_leaves_nothing_behind() {
    let archive = cub_archive(4, 3);
    let mut half = archive.clone();
    half.truncate(archive.len() / 2);
    let server = Server::start(&[
        ("/cut/CUB_200_2011.tgz", Route::AlwaysCut(archive.clone())),
        ("/half/CUB_200_2011.tgz", Route::Bytes(half)),
        ("/ok/CUB_200_2011.tgz", Route::Bytes(archive)),
    ]);
    let p = Project::new(&registry(&[
        src(
            "cut",
            "CUB_200_2011.tgz",
            server.url("/cut/CUB_200_2011.tgz"),
        ),
        src(
            "half",
            "CUB_200_2011.tgz",
            server.url("/half/CUB_200_2011.tgz"),
        ),
        whole(&server),
    ]));
    let json = fetched_from_whole(&p);
    let failed = json["failed_sources"].as_array().unwrap();
    let names: Vec<&str> = failed
        .iter()
        .map(|f| f["source"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cut", "half"]);
    let cut = failed[0]["error"].as_str().unwrap();
    assert!(
        cut.contains("ended after") || cut.contains("broke after"),
        "{cut}"
    );
    let half = failed[1]["error"].as_str().unwrap();
    assert!(half.contains("CUB_200_2011.tgz"), "{half}");
    assert_eq!(staging_leftovers(&p), Vec::<String>::new());
}

/// A host that sends no Content-Length (the body ends when the connection closes) and stops
/// early: only the size the registry publishes tells a cut body from a whole one.
#[test]
fn a_close_delimited_body_cut_short_is_caught_by_the_published_size() {
    let archive = cub_archive(4, 3);
    let server = Server::start(&[
        (
            "/nolen/CUB_200_2011.tgz",
            Route::CutNoLength(archive.clone()),
        ),
        ("/ok/CUB_200_2011.tgz", Route::Bytes(archive.clone())),
    ]);
    let mut nolen = src(
        "nolen",
        "CUB_200_2011.tgz",
        server.url("/nolen/CUB_200_2011.tgz"),
    );
    nolen.size = Some(archive.len());
    let p = Project::new(&registry(&[nolen, whole(&server)]));
    let json = fetched_from_whole(&p);
    let error = json["failed_sources"][0]["error"].as_str().unwrap();
    let want = format!(
        "ended after {} of {} bytes",
        archive.len() / 2,
        archive.len()
    );
    assert!(error.contains(&want), "{error}");
    assert_eq!(staging_leftovers(&p), Vec::<String>::new());
}

#[test]
fn when_every_source_fails_the_error_is_the_way_out() {
    let archive = cub_archive(4, 3);
    let server = Server::start(&[
        ("/a/CUB_200_2011.tgz", Route::Status(404)),
        ("/b/cub.tar.gz", Route::Status(410)),
    ]);
    let md5 = md5_hex(&archive);
    let p = Project::new(&registry(&[
        Src {
            host: "Host A",
            md5: Some(md5.clone()),
            size: Some(archive.len()),
            ..src(
                "official",
                "CUB_200_2011.tgz",
                server.url("/a/CUB_200_2011.tgz"),
            )
        },
        src("mirror", "cub.tar.gz", server.url("/b/cub.tar.gz")),
        src("byhand", "cub-by-hand.tgz", String::new()),
    ]));
    let (code, _, err) = p.gl(&["fetch", "tinycub", "--quiet", "--retries", "0"]);
    assert_eq!(code, 2, "{err}");
    for want in [
        "could not fetch `tinycub`: all 3 sources failed",
        "1. source `official` (Host A, since 2011):",
        "/a/CUB_200_2011.tgz answered HTTP 404",
        "2. source `mirror` (a test host, since 2011):",
        "/b/cub.tar.gz answered HTTP 410",
        "3. source `byhand`",
        "get these files by hand",
        &format!(
            "CUB_200_2011.tgz: {} bytes, md5 {md5} (published)",
            archive.len()
        ),
        &format!("published at {}", server.url("/a/CUB_200_2011.tgz")),
        "cub.tar.gz: size unknown, no checksum published or pinned yet",
        "cub-by-hand.tgz: size unknown",
        "no public URL",
        "then: gl fetch tinycub --source official --from /path/to/CUB_200_2011.tgz",
        "then: gl fetch tinycub --source mirror --from /path/to/cub.tar.gz",
        "then: gl fetch tinycub --source byhand --from /path/to/cub-by-hand.tgz",
        "data/downloads/tinycub/official",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    assert!(!p.path().join("data/datasets/tinycub").exists());
    assert_eq!(staging_leftovers(&p), Vec::<String>::new());
    // Following it: the file got by hand, named as listed, goes to the source that names it.
    let by_hand = p.path().join("CUB_200_2011.tgz");
    std::fs::write(&by_hand, &archive).unwrap();
    let (code, out, err) = p.gl(&[
        "fetch",
        "tinycub",
        "--quiet",
        "--from",
        by_hand.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(dataset_json(&p)["source"], "official");
    // The command as printed, for a source without a URL: only that source is tried, and a
    // file that is no dataset fails it while the dataset in place stays.
    let other = p.path().join("cub-by-hand.tgz");
    std::fs::write(&other, tar_gz(&[])).unwrap();
    let (code, _, err) = p.gl(&[
        "fetch",
        "tinycub",
        "--quiet",
        "--source",
        "byhand",
        "--from",
        other.to_str().unwrap(),
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("could not fetch `tinycub`: its source failed"),
        "{err}"
    );
    assert!(
        err.contains("1. source `byhand`") && !err.contains("source `official`"),
        "{err}"
    );
    assert_eq!(dataset_json(&p)["source"], "official");
    let (code, _, err) = p.gl(&["fetch", "tinycub", "--source", "nosuch"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--source nosuch: no such source (sources: official, mirror, byhand)"),
        "{err}"
    );
}

#[test]
fn check_asks_every_source_without_downloading() {
    let archive = cub_archive(4, 3);
    let n = archive.len();
    let server = Server::start(&[
        ("/gone/CUB_200_2011.tgz", Route::Status(404)),
        ("/head/CUB_200_2011.tgz", Route::Bytes(archive.clone())),
        ("/nohead/CUB_200_2011.tgz", Route::NoHead(archive.clone())),
    ]);
    let p = Project::new(&registry(&[
        src(
            "gone",
            "CUB_200_2011.tgz",
            server.url("/gone/CUB_200_2011.tgz"),
        ),
        Src {
            size: Some(n),
            ..src(
                "head",
                "CUB_200_2011.tgz",
                server.url("/head/CUB_200_2011.tgz"),
            )
        },
        Src {
            size: Some(n + 1),
            ..src(
                "nohead",
                "CUB_200_2011.tgz",
                server.url("/nohead/CUB_200_2011.tgz"),
            )
        },
    ]));
    let (code, out, err) = p.gl(&["fetch", "tinycub", "--check"]);
    assert_eq!(code, 0, "{out}{err}");
    for want in [
        "source gone (a test host, since 2011)",
        "HEAD 404",
        &format!("HEAD 200, {n} bytes (matches the known size)"),
        &format!(
            "GET bytes=0-0 206, {n} bytes (DIFFERS from the known {})",
            n + 1
        ),
        "tinycub: 2 of 3 source(s) answer",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let method = |m: &str, r: Option<&str>| (m.to_owned(), r.map(str::to_owned));
    assert_eq!(
        server.requests_with_method("/head/CUB_200_2011.tgz"),
        [method("HEAD", None)]
    );
    assert_eq!(
        server.requests_with_method("/nohead/CUB_200_2011.tgz"),
        [method("HEAD", None), method("GET", Some("bytes=0-0"))]
    );
    assert!(
        !p.path().join("data/downloads").exists(),
        "nothing is downloaded"
    );

    // Every dataset (no name): one whose sources are all down fails the check.
    let mut reg = registry(&[src(
        "gone",
        "CUB_200_2011.tgz",
        server.url("/gone/CUB_200_2011.tgz"),
    )]);
    reg.push_str(
        &registry(&[
            src("missing", "x.tgz", "file:not-there.tgz".into()),
            src("here", "y.tgz", "file:here.tgz".into()),
        ])
        .replace("tinycub", "other"),
    );
    let p = Project::new(&reg);
    std::fs::write(p.path().join("here.tgz"), b"12345").unwrap();
    let (code, out, err) = p.gl(&["fetch", "--check"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("tinycub: 0 of 1 source(s) answer"), "{out}");
    assert!(out.contains("other: 1 of 2 source(s) answer"), "{out}");
    assert!(
        out.contains("file failed") && out.contains("not-there.tgz"),
        "{out}"
    );
    assert!(out.contains("file ok, 5 bytes (no known size)"), "{out}");
    assert!(err.contains("no source answers for: tinycub"), "{err}");
}

#[test]
fn the_dry_run_lists_each_datasets_sources_in_order() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = tempfile::tempdir().unwrap();
    let (code, out, err) = gl_cli::run(
        repo,
        &["run", "--profile", "paper", "--dry-run"],
        &[("GL_DATA_DIR", data.path().to_str().unwrap())],
    );
    assert_eq!(code, 0, "{err}");
    let listing = out
        .split_once("sources each fetch tries, in order:")
        .unwrap_or_else(|| panic!("no source listing in:\n{out}"))
        .1;
    for want in [
        "cub: 1. caltechdata (Caltech library",
        "https://data.caltech.edu/records/65de6-vp158/files/CUB_200_2011.tgz?download=1",
        "cars196: 1. official (Stanford AI Lab",
        "http://ai.stanford.edu/~jkrause/car196/car_ims.tgz",
        "kaggle_folders (Kaggle",
        "login needed",
        "sop: 1. official (Stanford CVGL",
    ] {
        assert!(listing.contains(want), "missing {want:?} in:\n{listing}");
    }
    let (cars, kaggle) = (
        listing.find("cars196: 1. official").unwrap(),
        listing.find("kaggle_folders").unwrap(),
    );
    assert!(
        cars < kaggle,
        "the official source is listed first:\n{listing}"
    );
}
