//! The leaderboard's tests: selection on validation, ranking on test, paired differences,
//! edge marks, and tracks.

mod grid {
    use super::super::*;
    use crate::report::data::sweep::select;
    use crate::report::data::RunRow;
    use crate::report::fixtures::{metric, run};
    use serde_json::{json, Value};

    /// Three objectives × two points × three seeds: each objective's point chosen on
    /// validation MAP@R alone (the test numbers of the unchosen points are higher, and must not
    /// matter), ranked on test MAP@R, Δ paired by seed, the floor last.
    fn benchmark() -> DatasetData {
        let mut d = DatasetData {
            name: "demo".into(),
            ..Default::default()
        };
        // (objective, lr, margin, val MAP@R, test MAP@R of seeds 0..3)
        let points: [(&str, f64, Value, f64, [f64; 3]); 6] = [
            // A key another objective tunes, present in Group Loss's configs: not shown for it.
            ("group_loss", 1.0, json!(9.9), 60.0, [50.0, 52.0, 51.0]),
            ("group_loss", 2.0, json!(9.9), 55.0, [90.0, 90.0, 90.0]),
            ("contrastive", 1.0, json!(0.5), 61.0, [53.0, 54.0, 55.0]),
            ("contrastive", 2.0, json!(1.0), 40.0, [99.0, 99.0, 99.0]),
            (
                "multi_similarity",
                1.0,
                Value::Null,
                59.0,
                [50.0, 51.0, 53.0],
            ),
            ("multi_similarity", 2.0, Value::Null, 10.0, [1.0, 1.0, 1.0]),
        ];
        for (i, (o, lr, margin, val, test)) in points.iter().enumerate() {
            for (seed, t) in test.iter().enumerate() {
                let id = format!("r{i}s{seed}");
                // 8 epochs run; seeds 0 and 1 stopped early (their best 2 epochs back), seed
                // 2's best was its last.
                let (done, selected) = [(7, 5), (8, 6), (8, 8)][seed];
                d.group_loss.push(RunRow {
                    point: vec![json!(lr), margin.clone(), json!(o)],
                    val_map_r: Some(*val),
                    epochs_done: done,
                    selected_epoch: Some(selected),
                    ..run(&id, seed as u64)
                });
                d.metrics.push(metric(Method::GroupLoss, &id, "map@r", *t));
                d.metrics
                    .push(metric(Method::GroupLoss, &id, "recall@1", 2.0 * t));
            }
        }
        d.metrics
            .push(metric(Method::Untrained, "r0s0", "map@r", 20.0));
        let tuned = [
            ("group_loss", vec!["lr"]),
            ("contrastive", vec!["lr", "margin"]),
            ("multi_similarity", vec!["lr"]),
        ]
        .into_iter()
        .map(|(o, k)| (o.to_string(), k.into_iter().map(String::from).collect()))
        .collect();
        let keys = ["lr".to_string(), "margin".into(), "objective".into()];
        select(&mut d, &keys, tuned, &[]);
        d
    }

    #[test]
    fn each_seeds_selected_epoch_is_shown_and_the_last_epoch_marked() {
        let d = benchmark();
        let t = table(&d, "").unwrap();
        let col = t.header.iter().position(|h| h == "epoch per seed").unwrap();
        for r in t.rows.iter().filter(|r| r[0] != "floor") {
            assert_eq!(r[col], "5, 6, 8*", "{r:?}");
        }
        assert!(
            t.caption.contains("still improving") && t.caption.contains("3 objective(s)"),
            "{}",
            t.caption
        );
        // Without a run at its cap, no mark and no sentence.
        let mut d = d;
        let s = d.sweep.as_mut().unwrap();
        for r in s.points.iter_mut().flat_map(|p| p.runs.iter_mut()) {
            r.epochs_done = 9;
        }
        let t = table(&d, "").unwrap();
        assert!(!t.rows.iter().any(|r| r[col].contains('*')));
        assert!(!t.caption.contains("still improving"), "{}", t.caption);
    }

    #[test]
    fn each_objective_is_chosen_on_validation_and_ranked_on_test() {
        let d = benchmark();
        let t = table(&d, "").unwrap();
        let col = |name: &str| t.header.iter().position(|h| h.starts_with(name)).unwrap();
        let rows: Vec<(&str, &str, &str, &str)> = t
            .rows
            .iter()
            .map(|r| {
                let c = |k: &str| r[col(k)].as_str();
                (c("rank"), c("objective"), c("selected"), c("MAP@R"))
            })
            .collect();
        assert_eq!(
            rows,
            [
                // Two values per key: every selected value lies on an edge of its grid.
                (
                    "1",
                    "contrastive",
                    "lr=1.0 (edge), margin=0.5 (edge)",
                    "54.00 ± 1.00"
                ),
                ("2", "multi-similarity", "lr=1.0 (edge)", "51.33 ± 1.53"),
                ("3", "Group Loss", "lr=1.0 (edge)", "51.00 ± 1.00"),
                ("floor", "pretrained, untrained", "—", "20.00"),
            ]
        );
        let sweep = crate::report::sweep::sweep_table(&d, d.sweep.as_ref().unwrap()).unwrap();
        let gl_rows: Vec<&Vec<String>> =
            sweep.rows.iter().filter(|r| r[2] == "group_loss").collect();
        assert!(gl_rows.iter().all(|r| r[1] == "—"), "{:?}", sweep.rows);
        let marked = sweep
            .rows
            .iter()
            .filter(|r| r.last().unwrap() == "yes")
            .count();
        assert_eq!(
            marked, 3,
            "each objective's selected point: {:?}",
            sweep.rows
        );
        let delta = col("Δ");
        assert_eq!(t.rows[0][delta], "+3.00 [+0.52, +5.48]");
        assert!(t.caption.contains("the same 2 points") && t.caption.contains("validation MAP@R"));
        let s = summary(&d, "").unwrap();
        assert!(s.starts_with("Group Loss ranks 3 of 3"), "{s}");
        assert!(
            s.contains("Better than Group Loss, the interval excluding zero: contrastive (+3.00"),
            "{s}"
        );
        assert!(s.contains("No difference detectable with 3 seeds (the interval includes zero): multi-similarity"), "{s}");
        assert!(figure(&d, "")
            .unwrap()
            .unwrap()
            .contains("test MAP@R per objective"));
    }

    fn e(objective: &str, map_r: &[(u64, f64)]) -> Entry {
        Entry {
            objective: objective.into(),
            track: String::new(),
            on_edge: Vec::new(),
            selected: String::new(),
            val_map_r: None,
            epochs: Vec::new(),
            by_seed: [("map@r".to_string(), map_r.iter().copied().collect())].into(),
            rank: 0,
        }
    }

    #[test]
    fn the_paired_difference_uses_the_seeds_both_have() {
        let gl = e("group_loss", &[(0, 50.0), (1, 52.0), (2, 51.0)]);
        let c = e("contrastive", &[(0, 48.0), (1, 51.0), (3, 99.0)]);
        let i = c.paired(&gl, "map@r").unwrap();
        assert_eq!(i.n, 2);
        assert!((i.mean + 1.5).abs() < 1e-12, "{i:?}");
        // t(1) = 12.706, s = 0.7071: half = 12.706 · 0.7071 / √2 = 6.353
        assert!((i.half.unwrap() - 6.353).abs() < 1e-3, "{i:?}");
        assert_eq!(show_interval(&i), "−1.50 [−7.85, +4.85]");
        let cell = gl.cell("map@r").unwrap();
        assert_eq!(cell.show(), "51.00 ± 1.00");
    }
}

mod tracks {
    use super::super::*;
    use crate::report::data::sweep::select;
    use crate::report::data::RunRow;
    use crate::report::fixtures::{metric, run};
    use serde_json::json;

    /// Two objectives × lr ∈ {1, 2, 3} × two tracks × two seeds, validation MAP@R chosen so
    /// that each track selects differently, and the fine-tune run's metrics as the fine-tuned
    /// track's floor.
    fn tracked(tuned_keys: &[&str]) -> DatasetData {
        let mut d = DatasetData {
            name: "demo".into(),
            ..Default::default()
        };
        // (objective, lr, start, val MAP@R, test MAP@R)
        let points = [
            ("group_loss", 1.0, "imagenet", 50.0, 30.0),
            ("group_loss", 2.0, "imagenet", 60.0, 31.0),
            ("group_loss", 3.0, "imagenet", 55.0, 32.0),
            ("group_loss", 1.0, "finetuned", 70.0, 45.0),
            ("group_loss", 2.0, "finetuned", 65.0, 44.0),
            ("group_loss", 3.0, "finetuned", 64.0, 43.0),
            ("contrastive", 1.0, "imagenet", 40.0, 40.0),
            ("contrastive", 2.0, "imagenet", 45.0, 41.0),
            ("contrastive", 3.0, "imagenet", 49.0, 42.0),
            ("contrastive", 1.0, "finetuned", 60.0, 40.0),
            ("contrastive", 2.0, "finetuned", 61.0, 41.0),
            ("contrastive", 3.0, "finetuned", 59.0, 42.0),
        ];
        for (i, (o, lr, start, val, test)) in points.iter().enumerate() {
            for seed in 0..2u64 {
                let id = format!("r{i}s{seed}");
                d.group_loss.push(RunRow {
                    point: vec![json!(lr), json!(o), json!(start)],
                    val_map_r: Some(*val),
                    ..run(&id, seed)
                });
                let t = test + seed as f64;
                d.metrics.push(metric(Method::GroupLoss, &id, "map@r", t));
                d.metrics
                    .push(metric(Method::GroupLoss, &id, "recall@1", t));
            }
        }
        d.metrics
            .push(metric(Method::Untrained, "r0s0", "map@r", 20.0));
        d.metrics.push(metric(Method::Softmax, "ft", "map@r", 35.0));
        let tuned = ["group_loss", "contrastive"]
            .into_iter()
            .map(|o| {
                (
                    o.to_string(),
                    tuned_keys.iter().map(|k| k.to_string()).collect(),
                )
            })
            .collect();
        let keys = ["lr".to_string(), "objective".into(), "start".into()];
        select(&mut d, &keys, tuned, &[]);
        d
    }

    #[test]
    fn each_track_selects_ranks_and_floors_on_its_own() {
        let d = tracked(&["lr"]);
        assert_eq!(tracks(&d), ["imagenet", "finetuned"]);
        let rows = |track: &str| -> Vec<(String, String, String)> {
            let t = table(&d, track).unwrap();
            let col = |name: &str| t.header.iter().position(|h| h.starts_with(name)).unwrap();
            t.rows
                .iter()
                .map(|r| {
                    let c = |k: &str| r[col(k)].clone();
                    (c("objective"), c("selected"), c("MAP@R"))
                })
                .collect()
        };
        assert_eq!(
            rows("imagenet"),
            [
                (
                    "contrastive".into(),
                    "lr=3.0 (edge)".into(),
                    "42.50 ± 0.71".into()
                ),
                ("Group Loss".into(), "lr=2.0".into(), "31.50 ± 0.71".into()),
                ("pretrained, untrained".into(), "—".into(), "20.00".into()),
            ]
        );
        assert_eq!(
            rows("finetuned"),
            [
                (
                    "Group Loss".into(),
                    "lr=1.0 (edge)".into(),
                    "45.50 ± 0.71".into()
                ),
                ("contrastive".into(), "lr=2.0".into(), "41.50 ± 0.71".into()),
                (
                    "the fine-tuned start, as it is".into(),
                    "—".into(),
                    "35.00".into()
                ),
            ]
        );
        let t = table(&d, "finetuned").unwrap();
        assert!(
            t.caption.contains("1 selected point(s) lie on an edge"),
            "{}",
            t.caption
        );
        assert!(t.caption.contains("fine-tuned"), "{}", t.caption);
        let s = summary(&d, "finetuned").unwrap();
        assert!(
            s.starts_with("Group Loss ranks 1 of 2 from the finetuned start"),
            "{s}"
        );
        let s = summary(&d, "imagenet").unwrap();
        assert!(
            s.starts_with("Group Loss ranks 2 of 2 from the imagenet start"),
            "{s}"
        );
    }

    #[test]
    fn a_start_tuned_like_any_key_makes_no_tracks() {
        // The same runs where every objective tunes `start` (demo_tune): one entry per
        // objective, the start among its selected values.
        let d = tracked(&["lr", "start"]);
        assert_eq!(tracks(&d), [""]);
        let e = entries(&d, "").unwrap();
        let gl = e.iter().find(|e| e.objective == "group_loss").unwrap();
        assert_eq!(gl.selected, "lr=1.0 (edge), start=finetuned");
        assert_eq!(e.len(), 2);
    }
}
