//! `gl fetch` and `gl sql` end to end, over a loopback HTTP server, with small fixture archives
//! in the exact CUB, CARS196 (.mat and class-folder CSV) and SOP layouts that the tests build,
//! plus a user's image folder. Each test gets its own project directory (registry + data).

pub(crate) use crate::common::fixture_archives::{tar_gz, zip};
#[allow(dead_code)] // not every route kind is needed here
use crate::common::http_server;
use crate::common::{gl_cli, png};

use http_server::{Route, Server};
use std::path::{Path, PathBuf};

pub(crate) struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    pub(crate) fn new(registry: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("pipeline")).unwrap();
        std::fs::write(dir.path().join("pipeline/datasets.toml"), registry).unwrap();
        Project { dir }
    }
    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }
    pub(crate) fn gl(&self, args: &[&str]) -> (i32, String, String) {
        self.gl_env(args, &[])
    }
    fn gl_env(&self, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
        gl_cli::run(self.path(), args, env)
    }
    fn sql(&self, q: &str) -> String {
        let (code, out, err) = self.gl(&["sql", q, "--format", "csv"]);
        assert_eq!(code, 0, "gl sql {q}: {err}");
        out
    }
    pub(crate) fn fetch_ok(&self, dataset: &str) -> String {
        let (code, out, err) = self.gl(&["fetch", dataset, "--quiet"]);
        assert_eq!(code, 0, "gl fetch {dataset}:\n{out}\n{err}");
        out
    }
}

pub(crate) fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    hex::encode(md5::Md5::digest(bytes))
}

/// CUB layout: `classes` × `per` images, classes numbered 1..; images.txt in id order.
pub(crate) fn cub_archive(classes: usize, per: usize) -> Vec<u8> {
    let (mut images, mut labels, mut boxes, mut files) =
        (String::new(), String::new(), String::new(), Vec::new());
    for c in 1..=classes {
        for k in 0..per {
            let id = (c - 1) * per + k + 1;
            let rel = format!("{c:03}.Class_{c}/img_{id}.png");
            images.push_str(&format!("{id} {rel}\n"));
            labels.push_str(&format!("{id} {c}\n"));
            boxes.push_str(&format!("{id} 1.0 2.0 10.0 20.0\n"));
            files.push((format!("CUB_200_2011/images/{rel}"), png(id as u8)));
        }
    }
    files.push(("CUB_200_2011/images.txt".into(), images.into_bytes()));
    files.push((
        "CUB_200_2011/image_class_labels.txt".into(),
        labels.into_bytes(),
    ));
    files.push(("CUB_200_2011/bounding_boxes.txt".into(), boxes.into_bytes()));
    tar_gz(&files)
}

fn cub_registry(url: &str, md5: &str, images: usize) -> String {
    format!(
        "[datasets.tinycub]\ntitle = \"tiny CUB\"\nlicense = \"test\"\nroot = \"CUB_200_2011\"\n\
         layout = {{ kind = \"cub\" }}\nexpect = {{ images = {images}, classes = 4, train_images = 6, test_images = 6 }}\n\
         [[datasets.tinycub.files]]\nname = \"CUB_200_2011.tgz\"\nurls = [\"{url}\"]\nmd5 = \"{md5}\"\n"
    )
}

#[test]
fn cub_over_http_resumes_indexes_and_reruns_idempotently() {
    let archive = cub_archive(4, 3);
    let server = Server::start(&[("/CUB_200_2011.tgz", Route::CutOnce(archive.clone()))]);
    let p = Project::new(&cub_registry(
        &server.url("/CUB_200_2011.tgz"),
        &md5_hex(&archive),
        12,
    ));
    let out = p.fetch_ok("tinycub");
    assert!(out.contains("12 images, 4 classes"), "{out}");
    let ranges = server.requests("/CUB_200_2011.tgz");
    assert!(
        ranges.len() >= 2 && ranges[1].is_some(),
        "the cut download must resume with Range: {ranges:?}"
    );
    assert_eq!(
        p.sql("select split, count(*) as n from images group by split order by split"),
        "split,n\ntest,6\ntrain,6\n"
    );
    assert_eq!(
        p.sql("select count(*) as n from images where bbox_x2 = 11.0"),
        "n\n12\n"
    );
    let rows = p.sql("select * exclude (dataset) from images order by image_id");
    let requests = server.total_requests();
    let again = p.fetch_ok("tinycub");
    assert!(again.contains("files unchanged"), "{again}");
    assert_eq!(
        server.total_requests(),
        requests,
        "a verified download is reused without requests"
    );
    assert_eq!(
        p.sql("select * exclude (dataset) from images order by image_id"),
        rows
    );
    assert_eq!(p.sql("select count(*) as n from datasets"), "n\n1\n");
    assert_eq!(
        p.sql("select status, count(*) as n from stage_runs group by status"),
        "status,n\nsucceeded,2\n"
    );
    assert!(p
        .path()
        .join("data/datasets/tinycub/images.parquet")
        .is_file());
    assert!(p
        .path()
        .join("data/datasets/tinycub/dataset.json")
        .is_file());
}

#[test]
fn count_mismatch_names_the_difference_and_writes_no_rows() {
    let archive = cub_archive(4, 3);
    let server = Server::start(&[("/a.tgz", Route::Bytes(archive.clone()))]);
    let p = Project::new(&cub_registry(&server.url("/a.tgz"), &md5_hex(&archive), 13));
    let (code, _, err) = p.gl(&["fetch", "tinycub", "--quiet"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("tinycub: expected 13 images, found 12"),
        "{err}"
    );
    assert_eq!(p.sql("select count(*) as n from images"), "n\n0\n");
    assert_eq!(
        p.sql("select stage, status from stage_runs"),
        "stage,status\nfetch,failed\n"
    );
}

#[test]
fn injected_failure_after_insert_leaves_the_catalogue_as_before() {
    let archive = cub_archive(4, 3);
    let server = Server::start(&[("/a.tgz", Route::Bytes(archive.clone()))]);
    let p = Project::new(&cub_registry(&server.url("/a.tgz"), &md5_hex(&archive), 12));
    p.fetch_ok("tinycub");
    let snapshot = |p: &Project| {
        ["datasets", "images", "stage_runs"]
            .map(|t| p.sql(&format!("select * from {t} order by all")))
    };
    let before = snapshot(&p);
    let (code, _, err) = p.gl_env(
        &["fetch", "tinycub", "--quiet", "--force"],
        &[("GL_TEST_FAIL_AFTER_INSERT", "1")],
    );
    assert_eq!(code, 2);
    assert!(err.contains("injected failure"), "{err}");
    assert_eq!(snapshot(&p), before);
}

#[test]
fn truncated_archive_fails_naming_it_and_leaves_no_dataset() {
    let mut archive = cub_archive(4, 3);
    archive.truncate(archive.len() / 2);
    let server = Server::start(&[("/a.tgz", Route::Bytes(archive))]);
    let reg = cub_registry(&server.url("/a.tgz"), "", 12).replace("md5 = \"\"\n", "");
    let p = Project::new(&reg);
    let (code, _, err) = p.gl(&["fetch", "tinycub", "--quiet"]);
    assert_eq!(code, 2);
    assert!(err.contains("CUB_200_2011.tgz"), "{err}");
    assert!(!p.path().join("data/datasets/tinycub").exists());
    assert_eq!(p.sql("select count(*) as n from images"), "n\n0\n");
}

#[test]
fn archive_escaping_its_root_is_rejected_with_the_entry_name() {
    let evil = tar_gz(&[("../evil.txt".into(), b"x".to_vec())]);
    let server = Server::start(&[("/a.tgz", Route::Bytes(evil))]);
    let reg = cub_registry(&server.url("/a.tgz"), "", 12).replace("md5 = \"\"\n", "");
    let p = Project::new(&reg);
    let (code, _, err) = p.gl(&["fetch", "tinycub", "--quiet"]);
    assert_eq!(code, 2);
    assert!(err.contains("../evil.txt"), "{err}");
    assert!(
        !p.path().join("data/datasets/evil.txt").exists()
            && !p.path().join("data/evil.txt").exists()
    );
}

pub(crate) fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn cars_official_mat_layout_splits_by_class_not_by_test_flag() {
    // cars_annos_small.mat (made by tests/fixtures/make_cars_annos.py with scipy): 6 classes ×
    // 3 images car_ims/000001.jpg…000018.jpg, uint16 boxes, uint8 class and test flags.
    let mat = std::fs::read(fixture("cars_annos_small.mat")).unwrap();
    let ims: Vec<(String, Vec<u8>)> = (1..=18)
        .map(|i| (format!("car_ims/{i:06}.jpg"), png(i as u8)))
        .collect();
    let server = Server::start(&[
        ("/car_ims.tgz", Route::Bytes(tar_gz(&ims))),
        ("/cars_annos.mat", Route::Bytes(mat)),
    ]);
    let p = Project::new(&format!(
        "[datasets.cars]\ntitle = \"t\"\nlicense = \"t\"\nlayout = {{ kind = \"cars_mat\" }}\n\
         expect = {{ images = 18, classes = 6, train_images = 9, test_images = 9, train_classes = 3, test_classes = 3 }}\n\
         [[datasets.cars.files]]\nname = \"car_ims.tgz\"\nurls = [\"{}\"]\n\
         [[datasets.cars.files]]\nname = \"cars_annos.mat\"\nurls = [\"{}\"]\n",
        server.url("/car_ims.tgz"),
        server.url("/cars_annos.mat")
    ));
    p.fetch_ok("cars");
    assert_eq!(
        p.sql("select split, min(class_id) as lo, max(class_id) as hi, count(*) as n from images group by split order by split"),
        "split,lo,hi,n\ntest,4,6,9\ntrain,1,3,9\n"
    );
    assert_eq!(
        // Every image at its canonical path, with the box the .mat gave it.
        p.sql(
            "select count(*) filter (where rel_path like 'images/' || class_id || '/%.png') \
             as canonical, count(bbox_x1) as boxed from images"
        ),
        "canonical,boxed\n18,18\n"
    );
    let lock = std::fs::read_to_string(p.path().join("pipeline/datasets.lock")).unwrap();
    assert!(
        lock.contains("car_ims.tgz") && lock.contains("cars_annos.mat"),
        "unpublished checksums are pinned:\n{lock}"
    );
}

#[test]
fn cars_class_folder_mirror_from_a_local_zip() {
    let mut entries = Vec::new();
    let (mut train_csv, mut test_csv) = (String::new(), String::new());
    for c in 1..=4 {
        for k in 1..=2 {
            // The mirror numbers files per split, so the same name occurs in train/ and test/.
            let file = format!("{:05}.jpg", (c - 1) * 2 + k);
            let (dir, csv) = if k == 1 {
                ("train", &mut train_csv)
            } else {
                ("test", &mut test_csv)
            };
            entries.push((
                format!("car_data/car_data/{dir}/Make {c} Model/{file}"),
                png(c as u8),
            ));
            csv.push_str(&format!("{file},1,2,30,40,{c}\n"));
        }
    }
    entries.push(("anno_train.csv".into(), train_csv.into_bytes()));
    entries.push(("anno_test.csv".into(), test_csv.into_bytes()));
    let p = Project::new(
        "[datasets.carsf]\ntitle = \"t\"\nlicense = \"t\"\n\
         layout = { kind = \"cars_csv\", train_dir = \"car_data/car_data/train\", test_dir = \"car_data/car_data/test\" }\n\
         expect = { images = 8, classes = 4, train_images = 4, test_images = 4 }\n\
         [[datasets.carsf.files]]\nname = \"cars.zip\"\nurls = []\n",
    );
    let (code, _, err) = p.gl(&["fetch", "carsf", "--quiet"]);
    assert_eq!(code, 2, "no URL: the error says where to put the file");
    assert!(err.contains("cars.zip") && err.contains("--from"), "{err}");
    let local = p.path().join("downloaded-by-hand.zip");
    std::fs::write(&local, zip(&entries)).unwrap();
    let (code, out, err) = p.gl(&[
        "fetch",
        "carsf",
        "--quiet",
        "--from",
        local.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        p.sql(
            "select split, count(distinct class_id) as c from images group by split order by split"
        ),
        "split,c\ntest,2\ntrain,2\n"
    );
}

#[test]
fn sop_zip_after_a_404_mirror() {
    let (mut train, mut test, mut files) = (
        String::from("image_id class_id super_class_id path\n"),
        String::from("image_id class_id super_class_id path\n"),
        Vec::new(),
    );
    for c in 1..=6 {
        for k in 0..2 {
            let id = (c - 1) * 2 + k + 1;
            let rel = format!("bicycle_final/{c}_{k}.JPG");
            let list = if c <= 3 { &mut train } else { &mut test };
            list.push_str(&format!("{id} {c} 1 {rel}\n"));
            files.push((format!("Stanford_Online_Products/{rel}"), png(id as u8)));
        }
    }
    files.push((
        "Stanford_Online_Products/Ebay_train.txt".into(),
        train.into_bytes(),
    ));
    files.push((
        "Stanford_Online_Products/Ebay_test.txt".into(),
        test.into_bytes(),
    ));
    let server = Server::start(&[
        ("/gone.zip", Route::Status(404)),
        ("/sop.zip", Route::Bytes(zip(&files))),
    ]);
    let p = Project::new(&format!(
        "[datasets.sop]\ntitle = \"t\"\nlicense = \"t\"\nroot = \"Stanford_Online_Products\"\nlayout = {{ kind = \"sop\" }}\n\
         expect = {{ images = 12, classes = 6, train_classes = 3, test_classes = 3 }}\n\
         [[datasets.sop.files]]\nname = \"Stanford_Online_Products.zip\"\nurls = [\"{}\", \"{}\"]\n",
        server.url("/gone.zip"),
        server.url("/sop.zip")
    ));
    p.fetch_ok("sop");
    assert_eq!(
        server.requests("/gone.zip").len(),
        1,
        "a 404 is not retried"
    );
    assert_eq!(
        p.sql("select split, count(*) as n from images group by split order by split"),
        "split,n\ntest,6\ntrain,6\n"
    );
}

#[test]
fn image_folder_of_ones_own() {
    let p = Project::new(
        "[datasets.mine]\ntitle = \"mine\"\nlicense = \"own\"\nlocal_root = \"photos\"\n\
         layout = { kind = \"image_folder\", split = { rule = \"class_halves\" } }\nexpect = { classes = 4 }\n",
    );
    for (c, n) in [("cat", 2), ("dog", 3), ("emu", 1), ("fox", 2)] {
        let d = p.path().join("photos").join(c);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            std::fs::write(d.join(format!("{i}.png")), png(i)).unwrap();
        }
        std::fs::write(d.join("notes.txt"), "not an image").unwrap();
    }
    p.fetch_ok("mine");
    assert_eq!(
        p.sql("select split, string_agg(distinct class_id::varchar, ' ' order by class_id::varchar) as classes, count(*) as n from images group by split order by split"),
        "split,classes,n\ntest,3 4,3\ntrain,1 2,5\n"
    );
}

#[test]
fn synthetic_sop_shaped_set_goes_through_fetch() {
    let p = Project::new("# only local datasets\ndatasets = {}\n");
    let (code, out, err) = p.gl(&[
        "synth",
        "--name",
        "mini",
        "--classes",
        "9",
        "--per-class",
        "3",
        "--size",
        "4",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(p.path().join("data/registry.d/mini.toml").is_file());
    p.fetch_ok("mini");
    assert_eq!(
        p.sql("select split, count(distinct class_id) as c, count(*) as n from images group by split order by split"),
        "split,c,n\ntest,5,15\ntrain,4,12\n"
    );
}
