use super::*;

fn table() -> Table {
    Table {
        caption: "demo: a caption".into(),
        header: vec!["method".into(), "R@1".into(), "Δ [95 % CI]".into()],
        rows: vec![
            vec![
                "Group Loss `run-s0`".into(),
                "86.43 ± 0.81".into(),
                "+0.15 [−5.61, +5.91]".into(),
            ],
            vec![
                "softmax <b> & co".into(),
                "87.37 ± 1.59".into(),
                "(reference)".into(),
            ],
        ],
        rules_after: vec![],
    }
}

/// An SVG as plotters writes it, and the first bytes of a 3 × 2 PNG.
const SVG: &str = "<svg width=\"640\" height=\"420\" viewBox=\"0 0 640 420\" \
                   xmlns=\"http://www.w3.org/2000/svg\">\n<text>R@K</text>\n</svg>\n";

fn png() -> Vec<u8> {
    let mut b = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    b.extend_from_slice(&[0, 0, 0, 3, 0, 0, 0, 2, 8, 2, 0, 0, 0]);
    b
}

fn doc() -> Doc {
    let mut d = Doc::new("# Report: profile `demo`\n\nFrom `pipeline/published.toml`: checked against https://example.org/paper.\n\n");
    d += "## demo\n\ncaption\n\n";
    d.table(&table(), true);
    d += "\nLaTeX: [`tables/demo.tex`](tables/demo.tex).\n\n";
    d.figure("figures/demo-recall.svg", "Recall@K", SVG.as_bytes());
    d.figure("figures/demo-gallery.png", "retrieval gallery", &png());
    d.footer("## Environment\n\nThe runs:\n\n- 2 run(s): x86-64 · **cpu**.\n");
    d
}

#[test]
fn the_markdown_is_the_blocks_markdown_concatenated() {
    let md = doc().to_markdown();
    let want = format!(
        "# Report: profile `demo`\n\nFrom `pipeline/published.toml`: checked against \
         https://example.org/paper.\n\n## demo\n\ncaption\n\n{}\nLaTeX: \
         [`tables/demo.tex`](tables/demo.tex).\n\n![Recall@K](figures/demo-recall.svg)\n\n\
         ![retrieval gallery](figures/demo-gallery.png)\n\n## Environment\n\nThe runs:\n\n\
         - 2 run(s): x86-64 · **cpu**.\n",
        table().to_markdown()
    );
    assert_eq!(md, want);
}

#[test]
fn the_page_references_nothing_on_the_network() {
    let page = doc().to_html("Report: profile demo");
    assert_eq!(network_references(&page), Vec::<usize>::new(), "{page}");
    // The source's URL is text, not a link; the relative link to the LaTeX table stays a link.
    assert!(
        page.contains("checked against https://example.org/paper.</p>"),
        "{page}"
    );
    assert!(page.contains("<a href=\"tables/demo.tex\"><code>tables/demo.tex</code></a>"));
    assert!(!page.contains("xmlns"), "{page}");
    for bad in ["<link", "src=\"http", "@import", "url("] {
        assert!(!page.contains(bad), "{bad} in {page}");
    }
    // The checker itself finds what it must: a script source, an attribute, a style rule.
    for bad in [
        "<script src=\"https://cdn.example/x.js\"></script>",
        "<img src=\"HTTP://example.org/x.png\">",
        "<style>body { background: url(http://example.org/x.png) }</style>",
    ] {
        let page = page.replace("<main>", &format!("<main>{bad}"));
        assert_eq!(network_references(&page).len(), 1, "{bad}");
    }
}

#[test]
fn tables_figures_and_footer_are_inline() {
    let page = doc().to_html("Report: profile demo");
    assert!(page.contains("<table class=\"sortable\">"), "{page}");
    assert!(page.contains(
        "<tr><td>Group Loss <code>run-s0</code></td><td>86.43 ± 0.81</td>\
         <td>+0.15 [−5.61, +5.91]</td></tr>"
    ));
    assert!(page.contains("<td>softmax &lt;b&gt; &amp; co</td>"));
    assert!(page.contains("<th>Δ [95 % CI]</th>"));
    assert!(page.contains("<svg role=\"img\" aria-label=\"Recall@K\" width=\"640\""));
    assert!(page.contains(
        "<img alt=\"retrieval gallery\" width=\"3\" height=\"2\" src=\"data:image/png;base64,iVBORw0KGgo"
    ));
    assert!(page.contains(
        "<footer>\n<h2>Environment</h2>\n<p>The runs:</p>\n<ul>\n\
         <li>2 run(s): x86-64 · <strong>cpu</strong>.</li>\n</ul>\n</footer>"
    ));
    assert!(page.contains("<title>Report: profile demo</title>"));
    assert!(page.contains(SORTABLE_JS) && page.contains(STYLE));
    assert_eq!(page, doc().to_html("Report: profile demo"), "deterministic");
}

#[test]
fn prose_is_rendered_block_by_block() {
    assert_eq!(
        prose("### Sweep\n\nline one\nline two\n\n- a\n- b `c`\n"),
        "<h3>Sweep</h3>\n<p>line one line two</p>\n<ul>\n<li>a</li>\n<li>b <code>c</code></li>\n</ul>\n"
    );
    assert_eq!(inline("a [x](https://e.org) b"), "a [x](https://e.org) b");
    assert_eq!(
        inline("CI [−5.61, +5.91] then [`t`](t.tex)"),
        "CI [−5.61, +5.91] then <a href=\"t.tex\"><code>t</code></a>"
    );
    assert_eq!(
        inline("2*, 2* and **bold** `<x>`"),
        "2*, 2* and <strong>bold</strong> <code>&lt;x&gt;</code>"
    );
    assert_eq!(
        inline("unclosed `code and **bold"),
        "unclosed `code and **bold"
    );
}

#[test]
fn base64_and_png_size() {
    for (raw, enc) in [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
    ] {
        assert_eq!(base64(raw.as_bytes()), enc);
    }
    assert_eq!(base64(&[0xff, 0xfe, 0x00]), "//4A");
    assert_eq!(png_size(&png()), Some((3, 2)));
    assert_eq!(png_size(b"GIF89a"), None);
}
