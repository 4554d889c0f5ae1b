//! Integration tests of the DuckDB catalogue: migrations, idempotent dataset replacement,
//! rollback of a failed stage, `gl sql` output in all formats, and Parquet without network.
#![cfg(feature = "catalog")] // the catalogue

use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use grouploss::catalog::{
    finish_stage_run, query, record_stage_run, records, replace_dataset, schema, BBox, Catalog,
    CatalogError, DatasetRecord, ImageRecord, OutputFormat, Split, StageRunRecord, StageStatus,
};

/// A fixed instant so expected strings do not depend on the clock (2024-01-02 03:04:05.123456).
fn fixed_time() -> SystemTime {
    UNIX_EPOCH + Duration::from_micros(1_704_164_645_123_456)
}

/// `n_train` + `n_test` + `n_val` images cycling over `n_classes` classes; every other image has a
/// box.
fn sample(name: &str, n_train: i64, n_test: i64, n_val: i64) -> (DatasetRecord, Vec<ImageRecord>) {
    let splits = [
        (Split::Train, n_train),
        (Split::Test, n_test),
        (Split::Val, n_val),
    ];
    let mut images = Vec::new();
    for (split, n) in splits {
        for _ in 0..n {
            let id = images.len() as i64;
            images.push(ImageRecord {
                image_id: id,
                rel_path: format!("images/{split}/{id:06}.jpg"),
                class_id: id % 7,
                split,
                bbox: (id % 2 == 0).then_some(BBox {
                    x1: 1.5,
                    y1: 2.0,
                    x2: 100.25,
                    y2: 80.0,
                }),
            });
        }
    }
    let n_classes = images.len().min(7) as i64;
    let dataset = DatasetRecord {
        name: name.to_string(),
        kind: "synthetic".to_string(),
        source: "tests/it/catalog.rs".to_string(),
        archive_checksum: Some("ab".repeat(32)),
        license: None,
        n_images: images.len() as i64,
        n_classes,
        n_train,
        n_test,
        root: format!("data/{name}"),
        fetched_at: fixed_time(),
    };
    (dataset, images)
}

fn open_with(path: &Path, name: &str, n: (i64, i64, i64)) -> Catalog {
    let mut cat = Catalog::open(path).expect("open catalogue");
    let (dataset, images) = sample(name, n.0, n.1, n.2);
    cat.transaction(|tx| Ok(replace_dataset(tx, &dataset, &images)?))
        .expect("replace dataset");
    cat
}

/// Everything in the user tables as one CSV string, for before/after comparisons.
fn snapshot(path: &Path) -> String {
    let cat = Catalog::open_read_only(path).expect("open read-only");
    [
        "SELECT * FROM schema_version ORDER BY version",
        "SELECT * FROM datasets ORDER BY name",
        "SELECT * FROM images ORDER BY dataset, image_id",
        "SELECT * FROM stage_runs ORDER BY run_id",
        "SELECT * FROM artifacts ORDER BY path",
    ]
    .iter()
    .map(|sql| query(&cat, sql, OutputFormat::Csv).expect(sql))
    .collect()
}

fn count(cat: &Catalog, sql: &str) -> i64 {
    cat.connection()
        .query_row(sql, [], |r| r.get(0))
        .expect(sql)
}

/// `version:applied_at;…` of every recorded migration.
fn applied_migrations(cat: &Catalog) -> String {
    let sql = "SELECT string_agg(version || ':' || applied_at, ';') FROM schema_version";
    cat.connection()
        .query_row(sql, [], |r| r.get(0))
        .expect(sql)
}

#[test]
fn migrations_apply_once_and_reopen_is_a_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested/data/catalog.duckdb");
    let cat = Catalog::open(&path).unwrap();
    let latest = schema::latest_version();
    assert_eq!(
        latest as usize,
        schema::MIGRATIONS.len(),
        "versions are 1..=n"
    );
    assert_eq!(cat.schema_version(), latest);
    let applied = applied_migrations(&cat);
    drop(cat);

    let cat = Catalog::open(&path).unwrap();
    assert_eq!(cat.schema_version(), latest);
    let again = applied_migrations(&cat);
    assert_eq!(applied, again, "re-opening must not re-apply migrations");
    assert!(applied.starts_with("1:"));
    for table in ["datasets", "images", "stage_runs", "artifacts"] {
        let sql = format!("SELECT count(*) FROM {table}");
        assert_eq!(count(&cat, &sql), 0, "{table}");
    }
}

#[test]
fn a_catalogue_from_a_newer_gl_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.duckdb");
    let mut cat = Catalog::open(&path).unwrap();
    cat.transaction(|tx| {
        tx.execute_batch(
            "INSERT INTO schema_version VALUES (99, 'future', TIMESTAMP '2030-01-01')",
        )?;
        Ok(())
    })
    .unwrap();
    drop(cat);
    for result in [Catalog::open(&path), Catalog::open_read_only(&path)] {
        match result {
            Err(CatalogError::NewerSchema {
                found: 99,
                supported,
                ..
            }) if supported == schema::latest_version() => {}
            Err(other) => panic!("expected NewerSchema, got {other}"),
            Ok(_) => panic!("expected NewerSchema, got a catalogue"),
        }
    }
}

#[test]
fn read_only_open_of_a_missing_catalogue_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.duckdb");
    let err = Catalog::open_read_only(&path).err().expect("must fail");
    assert!(matches!(err, CatalogError::Missing { .. }), "{err}");
    assert!(err.to_string().contains("absent.duckdb"), "{err}");
}

#[test]
fn replace_dataset_twice_gives_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.duckdb");
    let (dataset, images) = sample("cub200", 40, 30, 5);
    let mut cat = Catalog::open(&path).unwrap();
    for _ in 0..2 {
        cat.transaction(|tx| Ok(replace_dataset(tx, &dataset, &images)?))
            .unwrap();
        let conn = cat.connection();
        assert_eq!(
            records::load_dataset(conn, "cub200").unwrap(),
            Some(dataset.clone())
        );
        assert_eq!(records::load_images(conn, "cub200").unwrap(), images);
        assert_eq!(count(&cat, "SELECT count(*) FROM datasets"), 1);
        assert_eq!(count(&cat, "SELECT count(*) FROM images"), 75);
    }
    drop(cat);
    let first = snapshot(&path);
    let mut cat = Catalog::open(&path).unwrap();
    cat.transaction(|tx| Ok(replace_dataset(tx, &dataset, &images)?))
        .unwrap();
    drop(cat);
    assert_eq!(snapshot(&path), first);
}

#[test]
fn replace_dataset_drops_images_that_are_gone_and_leaves_other_datasets() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.duckdb");
    let mut cat = open_with(&path, "cars196", (20, 20, 0));
    let (other, other_images) = sample("sop", 3, 3, 0);
    let (smaller, smaller_images) = sample("cars196", 5, 4, 1);
    cat.transaction(|tx| {
        replace_dataset(tx, &other, &other_images)?;
        replace_dataset(tx, &smaller, &smaller_images)?;
        Ok(())
    })
    .unwrap();
    let conn = cat.connection();
    assert_eq!(
        records::load_images(conn, "cars196").unwrap(),
        smaller_images
    );
    assert_eq!(records::load_images(conn, "sop").unwrap(), other_images);
}

#[test]
fn inconsistent_counts_are_rejected_with_the_dataset_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut cat = Catalog::open(dir.path().join("catalog.duckdb")).unwrap();
    let (mut dataset, images) = sample("cub200", 4, 4, 0);
    dataset.n_train = 5;
    let err = cat
        .transaction(|tx| Ok(replace_dataset(tx, &dataset, &images)?))
        .unwrap_err();
    match err.downcast_ref::<CatalogError>() {
        Some(CatalogError::InconsistentDataset { dataset, what }) => {
            assert_eq!(dataset, "cub200");
            assert_eq!(what, "n_train is 5 but the images give 4");
        }
        _ => panic!("expected InconsistentDataset, got {err:#}"),
    }
}

#[test]
fn a_failed_stage_leaves_the_catalogue_exactly_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.duckdb");
    drop(open_with(&path, "cub200", (6, 4, 2)));
    let before = snapshot(&path);

    let mut cat = Catalog::open(&path).unwrap();
    let (replacement, replacement_images) = sample("cub200", 1, 1, 0);
    let (new, new_images) = sample("cars196", 3, 3, 0);
    let err = cat
        .transaction(|tx| -> anyhow::Result<()> {
            replace_dataset(tx, &replacement, &replacement_images)?;
            replace_dataset(tx, &new, &new_images)?;
            record_stage_run(
                tx,
                &StageRunRecord {
                    stage: "fetch".into(),
                    subject: "cars196".into(),
                    inputs_fingerprint: "f00d".into(),
                    started_at: fixed_time(),
                    finished_at: None,
                    status: StageStatus::Running,
                    outputs: None,
                    error: None,
                },
            )?;
            tx.execute_batch(
                "INSERT INTO artifacts VALUES ('x.parquet', 'crops', 'ff', 1, NULL, now()::TIMESTAMP)",
            )?;
            anyhow::bail!("simulated stage failure after writing rows")
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "simulated stage failure after writing rows"
    );
    drop(cat);
    assert_eq!(snapshot(&path), before);
}

#[test]
fn stage_runs_record_outputs_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.duckdb");
    let mut cat = Catalog::open(&path).unwrap();
    let run = StageRunRecord {
        stage: "fetch".into(),
        subject: "cub200".into(),
        inputs_fingerprint: "f00d".into(),
        started_at: fixed_time(),
        finished_at: None,
        status: StageStatus::Running,
        outputs: None,
        error: None,
    };
    let run_id = cat
        .transaction(|tx| Ok(record_stage_run(tx, &run)?))
        .unwrap();
    assert_eq!(run_id, 1);
    let outputs = serde_json::json!({"n_images": 11788, "crops": ["a.parquet"]});
    finish_stage_run(
        cat.connection(),
        run_id,
        StageStatus::Succeeded,
        Some(&outputs),
        None,
    )
    .unwrap();
    let err = finish_stage_run(cat.connection(), 42, StageStatus::Failed, None, Some("x"));
    assert!(err.unwrap_err().to_string().contains("run_id 42"));
    drop(cat);

    let cat = Catalog::open_read_only(&path).unwrap();
    let out = query(
        &cat,
        "SELECT run_id, stage, status, started_at, outputs->>'$.n_images' AS n, \
         finished_at IS NOT NULL AS finished FROM stage_runs",
        OutputFormat::Json,
    )
    .unwrap();
    assert_eq!(
        out,
        "[\n{\"run_id\":1,\"stage\":\"fetch\",\"status\":\"succeeded\",\
         \"started_at\":\"2024-01-02T03:04:05.123456\",\"n\":\"11788\",\"finished\":true}\n]\n"
    );
}

/// The catalogue used by the `gl sql` tests: 3 train, 2 test, 1 val images.
fn small_read_only(dir: &Path) -> Catalog {
    let path = dir.join("catalog.duckdb");
    drop(open_with(&path, "tiny", (3, 2, 1)));
    Catalog::open_read_only(&path).unwrap()
}

const SPLIT_COUNTS: &str = "SELECT split, count(*) FROM images GROUP BY split ORDER BY split";

#[test]
fn sql_as_table() {
    let dir = tempfile::tempdir().unwrap();
    let cat = small_read_only(dir.path());
    let out = query(&cat, SPLIT_COUNTS, OutputFormat::Table).unwrap();
    let expected = "\
split  count_star()
-----  ------------
test              2
train             3
val               1
";
    assert_eq!(out, expected);
}

#[test]
fn sql_as_csv() {
    let dir = tempfile::tempdir().unwrap();
    let cat = small_read_only(dir.path());
    let out = query(&cat, SPLIT_COUNTS, OutputFormat::Csv).unwrap();
    assert_eq!(out, "split,count_star()\ntest,2\ntrain,3\nval,1\n");
}

#[test]
fn sql_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let cat = small_read_only(dir.path());
    let out = query(&cat, SPLIT_COUNTS, OutputFormat::Json).unwrap();
    let expected = "[\n{\"split\":\"test\",\"count_star()\":2},\n\
                    {\"split\":\"train\",\"count_star()\":3},\n\
                    {\"split\":\"val\",\"count_star()\":1}\n]\n";
    assert_eq!(out, expected);
    let parsed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(parsed[1]["count_star()"], 3);
}

#[test]
fn sql_renders_every_kind_of_column() {
    let dir = tempfile::tempdir().unwrap();
    let cat = small_read_only(dir.path());
    let sql = "SELECT 1::TINYINT AS i8, 12345678901234567890123::HUGEINT AS h, \
               1.25::DECIMAL(5,2) AS dec, 2.5::DOUBLE AS d, 'a,\"b\"' AS s, '' AS empty, \
               TIMESTAMP '2024-01-02 03:04:05' AS ts, DATE '2024-01-02' AS day, \
               [1, 2, NULL] AS list, {'x': 1, 'y': 'z'} AS st, MAP {'k': 1} AS m, \
               NULL AS nothing, INTERVAL 3 DAY AS iv, true AS b, \
               'ab'::BLOB AS bl, 'train'::ENUM('train', 'test') AS e, \
               '00000000-0000-0000-0000-000000000001'::UUID AS u";
    let table = query(&cat, sql, OutputFormat::Table).unwrap();
    for needle in [
        "12345678901234567890123",
        "2024-01-02 03:04:05",
        "[1, 2, NULL]",
        "{x: 1, y: z}",
        "3 days",
        "a,\"b\"",
        "1.25",
    ] {
        assert!(table.contains(needle), "{needle:?} missing from\n{table}");
    }
    let csv = query(&cat, sql, OutputFormat::Csv).unwrap();
    assert!(csv.contains(",\"a,\"\"b\"\"\",\"\","), "{csv}");
    let json = query(&cat, sql, OutputFormat::Json).unwrap();
    eprintln!("{table}\n{csv}\n{json}");
    let parsed: serde_json::Value = serde_json::from_str(&json).expect(&json);
    let row = &parsed[0];
    assert_eq!(row["i8"], 1, "{json}");
    assert_eq!(row["d"], 2.5, "{json}");
    assert_eq!(row["s"], "a,\"b\"", "{json}");
    assert_eq!(row["list"], serde_json::json!([1, 2, null]), "{json}");
    assert_eq!(row["st"]["y"], "z", "{json}");
    assert!(row["nothing"].is_null(), "{json}");
    assert_eq!(row["b"], true, "{json}");
    assert_eq!(row["e"], "train", "{json}");
    let empty = query(&cat, "SELECT * FROM images WHERE false", OutputFormat::Json).unwrap();
    assert_eq!(empty, "[]\n");
}

#[test]
fn a_write_through_sql_fails_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cat = small_read_only(dir.path());
    for sql in [
        "INSERT INTO datasets (name) VALUES ('x')",
        "DELETE FROM images",
        "CREATE TABLE t (x INTEGER)",
    ] {
        let err = query(&cat, sql, OutputFormat::Table).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("read-only"), "{sql}: {msg}");
        assert!(msg.contains("catalog.duckdb"), "{sql}: {msg}");
    }
    assert_eq!(count(&cat, "SELECT count(*) FROM images"), 6);

    let rw = Catalog::open(dir.path().join("other.duckdb")).unwrap();
    let err = query(&rw, "SELECT 1", OutputFormat::Table).unwrap_err();
    assert!(err.to_string().contains("open for writing"), "{err:#}");
}

#[test]
fn parquet_round_trip_needs_no_network() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("catalog.duckdb");
    let parquet = dir.path().join("split counts.parquet");
    let cat = open_with(&path, "tiny", (3, 2, 1));
    cat.connection()
        .execute_batch(&format!(
            "COPY (SELECT split, count(*) AS n FROM images GROUP BY split ORDER BY split) \
             TO '{}' (FORMAT parquet)",
            parquet.display()
        ))
        .expect("COPY TO parquet");
    drop(cat);
    let cat = Catalog::open_read_only(&path).unwrap();
    let out = query(
        &cat,
        &format!(
            "SELECT split, n FROM '{}' ORDER BY split",
            parquet.display()
        ),
        OutputFormat::Csv,
    )
    .unwrap();
    assert_eq!(out, "split,n\ntest,2\ntrain,3\nval,1\n");
}

#[test]
fn appending_120k_images_is_fast() {
    let dir = tempfile::tempdir().unwrap();
    let mut cat = Catalog::open(dir.path().join("catalog.duckdb")).unwrap();
    let (dataset, images) = sample("sop", 60_000, 60_000, 0);
    for round in 0..2 {
        let start = Instant::now();
        cat.transaction(|tx| Ok(replace_dataset(tx, &dataset, &images)?))
            .unwrap();
        eprintln!(
            "replace_dataset 120,000 images (round {round}): {:.3} s",
            start.elapsed().as_secs_f64()
        );
    }
    assert_eq!(count(&cat, "SELECT count(*) FROM images"), 120_000);
}

/// Two pipeline tasks that end together both index their outcome: `gl prepare` (and `gl
/// fetch`, `gl weights`) wait for a catalogue another process holds instead of failing (seen:
/// the weights task indexing while the crops' task opened the catalogue, with `jobs = 2`).
#[test]
fn prepare_waits_for_a_catalogue_another_process_holds() {
    use crate::common::tiny_pipeline::{gl, project};
    let dir = project();
    let p = dir.path();
    let (code, out, err) = gl(p, &["fetch", "tiny_synth", "--quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    let held = grouploss::catalog::Catalog::open(p.join("data/catalog.duckdb")).unwrap();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        drop(held);
    });
    let started = Instant::now();
    let (code, out, err) = gl(p, &["prepare", "tiny_synth", "--resize", "32", "--quiet"]);
    release.join().unwrap();
    assert_eq!(code, 0, "prepare gave up on the held catalogue: {out}{err}");
    assert!(started.elapsed() >= Duration::from_secs(2), "it waited");
}
