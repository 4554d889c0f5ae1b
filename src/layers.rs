//! The crate's layers, lowest first, written once: a top-level module may use modules of its
//! own layer or below, never above — so the library (data, models, the loss, training's
//! pieces) never depends on the stages, the pipeline or the commands built on it. The test
//! below reads every source file and fails on an edge that goes up, and on an import cycle
//! between the files of the directories in [`ACYCLIC`].

/// Top-level modules of `src/`, by layer (a new module must be placed here).
pub const LAYERS: &[&[&str]] = &[
    &[
        "fsutil",
        "config",
        "device",
        "runtime",
        "progress",
        "writer_lock",
        "env_vars",
        "clock",
        "numerics",
        "names",
        "interrupt",
        "tempfiles",
    ],
    &["data"],
    &["project"],
    &["loss", "model"],
    &["eval"],
    &["train"],
    &["stages"],
    &["catalog"],
    &["pipeline"],
    &["report"],
    &["cli", "cli_doc"],
    &["bench"],
    &["commands"],
    &["layers"],
];

/// Directories whose files must not import each other in a circle.
pub const ACYCLIC: &[&str] = &["train", "stages", "pipeline", "report"];

/// The layer of top-level module `m`.
pub fn layer(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::{Path, PathBuf};

    /// Every `.rs` file under `dir`.
    fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// The code of a file without comments and without its test module.
    fn code(path: &Path) -> String {
        let text = std::fs::read_to_string(path).unwrap();
        let text = match text.find("#[cfg(test)]\nmod tests") {
            Some(i) => &text[..i],
            None => &text[..],
        };
        text.lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// First path segments after each `prefix` (`crate::a::b` → `a`; `crate::{a, b::c}` → a, b).
    fn used(code: &str, prefix: &str) -> BTreeSet<String> {
        let ident = |s: &str| -> String {
            s.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect()
        };
        let mut out = BTreeSet::new();
        for (i, _) in code.match_indices(prefix) {
            let before = code[..i].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let rest = &code[i + prefix.len()..];
            match rest.strip_prefix('{') {
                Some(group) => {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    out.extend(group.split(',').map(|s| ident(s.trim())));
                }
                None => {
                    out.insert(ident(rest));
                }
            }
        }
        out.retain(|s| !s.is_empty() && s != "self");
        out
    }

    /// `src/a/b.rs` → ["a", "b"]; `src/a/mod.rs` → ["a"].
    fn module(src: &Path, file: &Path) -> Vec<String> {
        let rel = file.strip_prefix(src).unwrap().with_extension("");
        let mut parts: Vec<String> = rel.iter().map(|s| s.to_string_lossy().into()).collect();
        if parts.last().is_some_and(|p| p == "mod") {
            parts.pop();
        }
        parts
    }

    fn files() -> Vec<(Vec<String>, String)> {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut all = Vec::new();
        sources(&src, &mut all);
        all.iter()
            .map(|f| (module(&src, f), code(f)))
            .filter(|(m, _)| m.first().is_some_and(|t| t != "main" && t != "lib"))
            .collect()
    }

    #[test]
    fn no_module_uses_a_higher_layer() {
        let mut up = Vec::new();
        for (m, code) in files() {
            let from = &m[0];
            let lf = layer(from).unwrap_or_else(|| panic!("src/{from}: not in LAYERS"));
            for to in used(&code, "crate::") {
                match layer(&to) {
                    Some(lt) if lt > lf => up.push(format!("{} uses crate::{to}", m.join("/"))),
                    _ => {}
                }
            }
        }
        assert!(
            up.is_empty(),
            "edges that go up a layer:\n{}",
            up.join("\n")
        );
    }

    /// Tarjan's strongly connected components with more than one member.
    fn cycles(g: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
        struct S<'a> {
            g: &'a BTreeMap<String, BTreeSet<String>>,
            index: BTreeMap<&'a str, usize>,
            low: BTreeMap<&'a str, usize>,
            stack: Vec<&'a str>,
            out: Vec<Vec<String>>,
        }
        fn visit<'a>(s: &mut S<'a>, v: &'a str) {
            let i = s.index.len();
            s.index.insert(v, i);
            s.low.insert(v, i);
            s.stack.push(v);
            for w in s.g.get(v).into_iter().flatten() {
                if !s.index.contains_key(w.as_str()) {
                    visit(s, w);
                    let lw = s.low[w.as_str()];
                    s.low.entry(v).and_modify(|l| *l = (*l).min(lw));
                } else if s.stack.contains(&w.as_str()) {
                    let iw = s.index[w.as_str()];
                    s.low.entry(v).and_modify(|l| *l = (*l).min(iw));
                }
            }
            if s.low[v] == s.index[v] {
                let at = s.stack.iter().position(|x| *x == v).unwrap();
                let comp: Vec<String> = s.stack.drain(at..).map(String::from).collect();
                if comp.len() > 1 {
                    s.out.push(comp);
                }
            }
        }
        let mut s = S {
            g,
            index: BTreeMap::new(),
            low: BTreeMap::new(),
            stack: Vec::new(),
            out: Vec::new(),
        };
        for v in g.keys() {
            if !s.index.contains_key(v.as_str()) {
                visit(&mut s, v);
            }
        }
        s.out
    }

    #[test]
    fn the_files_of_each_layered_directory_form_no_cycle() {
        for dir in ACYCLIC {
            let mut g: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            for (m, code) in files() {
                if m.len() < 2 || m[0] != *dir {
                    continue;
                }
                let mut to = used(&code, &format!("crate::{dir}::"));
                if m.len() == 2 {
                    to.extend(used(&code, "super::"));
                }
                to.retain(|t| *t != m[1]);
                g.entry(m[1].clone()).or_default().extend(to);
            }
            let found = cycles(&g);
            assert!(found.is_empty(), "src/{dir}: import cycles {found:?}");
        }
    }

    /// The checks see what they claim to: a made-up upward use and a made-up cycle are found.
    #[test]
    fn the_checks_find_an_upward_use_and_a_cycle() {
        let code = "use crate::{data, commands::x};\nfn f() { crate::pipeline::run(); }";
        let got = used(code, "crate::");
        assert_eq!(
            got,
            ["commands", "data", "pipeline"].map(String::from).into()
        );
        assert!(layer("commands") > layer("data"));
        let g: BTreeMap<String, BTreeSet<String>> = [
            ("a".to_string(), ["b".to_string()].into()),
            ("b".to_string(), ["a".to_string()].into()),
            ("c".to_string(), ["a".to_string()].into()),
        ]
        .into();
        assert_eq!(cycles(&g).len(), 1);
    }
}
