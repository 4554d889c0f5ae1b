//! The report as a document of blocks — prose, tables, figures, the environment footer — that
//! renders both `README.md` (the blocks' Markdown, concatenated) and `index.html`: one
//! self-contained page with the same tables (the leaderboard, sweep and ablation tables
//! sortable by a click on a header), every figure inline (SVG as markup, PNG as a base64
//! `data:` URI), its style and script inline, and nothing fetched from the network — readable
//! offline and attachable to an e-mail. Both come from the same in-memory tables, so their
//! numbers cannot differ, and the page is as deterministic as the Markdown.
//!
//! Prose is written in the small Markdown subset the report uses (headings, paragraphs, `-`
//! lists, code spans, bold, links); [`Doc::to_html`] renders that subset itself.

use crate::report::table::Table;
use std::fmt::Write;

/// The page's style sheet.
const STYLE: &str = include_str!("html/style.css");
/// The sorting of `table.sortable` (no dependencies, no network).
const SORTABLE_JS: &str = include_str!("html/sortable.js");

/// One part of the report.
#[derive(Debug, Clone, PartialEq)]
enum Block {
    /// Prose in the report's Markdown subset; consecutive prose is one block.
    Prose(String),
    Table {
        table: Table,
        sortable: bool,
    },
    /// A figure file of the report (`figures/…`): SVG text or PNG bytes.
    Figure {
        rel: String,
        alt: String,
        bytes: Vec<u8>,
    },
    /// The environment footer (Markdown prose).
    Footer(String),
}

/// The report of one profile, block by block.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Doc {
    blocks: Vec<Block>,
}

impl std::ops::AddAssign<&str> for Doc {
    /// Appends Markdown prose.
    fn add_assign(&mut self, s: &str) {
        if let Some(Block::Prose(p)) = self.blocks.last_mut() {
            p.push_str(s);
        } else {
            self.blocks.push(Block::Prose(s.to_string()));
        }
    }
}

impl Doc {
    /// A document that starts with the prose `md`.
    pub fn new(md: &str) -> Doc {
        let mut d = Doc::default();
        d += md;
        d
    }

    /// Appends a table; `sortable` ones get clickable headers in the page.
    pub fn table(&mut self, t: &Table, sortable: bool) {
        self.blocks.push(Block::Table {
            table: t.clone(),
            sortable,
        });
    }

    /// Appends the figure `rel` (relative to the report directory, e.g. `figures/x.svg`).
    pub fn figure(&mut self, rel: &str, alt: &str, bytes: &[u8]) {
        self.blocks.push(Block::Figure {
            rel: rel.to_string(),
            alt: alt.to_string(),
            bytes: bytes.to_vec(),
        });
    }

    /// Appends the environment footer (Markdown prose).
    pub fn footer(&mut self, md: &str) {
        self.blocks.push(Block::Footer(md.to_string()));
    }

    /// `README.md`: every block's Markdown, in order.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        for b in &self.blocks {
            match b {
                Block::Prose(p) | Block::Footer(p) => s += p,
                Block::Table { table, .. } => s += &table.to_markdown(),
                Block::Figure { rel, alt, .. } => s += &format!("![{alt}]({rel})\n\n"),
            }
        }
        s
    }

    /// `index.html`: the self-contained page titled `title`.
    pub fn to_html(&self, title: &str) -> String {
        let mut body = String::new();
        for b in &self.blocks {
            match b {
                Block::Prose(p) => body += &prose(p),
                Block::Footer(p) => body += &format!("<footer>\n{}</footer>\n", prose(p)),
                Block::Table { table, sortable } => body += &table_html(table, *sortable),
                Block::Figure { rel, alt, bytes } => body += &figure_html(rel, alt, bytes),
            }
        }
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
             <title>{}</title>\n<style>\n{STYLE}</style>\n</head>\n<body>\n<main>\n{body}</main>\n\
             <script>\n{SORTABLE_JS}</script>\n</body>\n</html>\n",
            escape(title)
        )
    }
}

/// Where `page` names a network resource: the byte offset of every `http:` or `https:`
/// (any case) inside a tag — an attribute, `src`, `href`, an SVG's `xmlns` — or inside its
/// `<style>` or `<script>`. A URL mentioned in the text (the published numbers' source) is
/// text, not a reference, and is allowed.
pub fn network_references(page: &str) -> Vec<usize> {
    let lower = page.to_ascii_lowercase();
    let mut raw = Vec::new();
    for (tag, end) in [("<style>", "</style>"), ("<script>", "</script>")] {
        let mut from = 0;
        while let Some(i) = lower[from..].find(tag).map(|i| i + from) {
            let j = lower[i..].find(end).map_or(lower.len(), |j| i + j);
            raw.push((i, j));
            from = j;
        }
    }
    let mut hits = Vec::new();
    for scheme in ["http:", "https:"] {
        for (at, _) in lower.match_indices(scheme) {
            let before = &lower[..at];
            let in_tag = before
                .rfind('<')
                .is_some_and(|l| before.rfind('>').is_none_or(|g| l > g));
            let in_raw = raw.iter().any(|&(i, j)| i <= at && at < j);
            if in_tag || in_raw {
                hits.push(at);
            }
        }
    }
    hits.sort_unstable();
    hits
}

/// `s` with `&`, `<`, `>` and `"` escaped.
pub fn escape(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => o += "&amp;",
            '<' => o += "&lt;",
            '>' => o += "&gt;",
            '"' => o += "&quot;",
            c => o.push(c),
        }
    }
    o
}

/// Markdown prose (blocks separated by blank lines) → HTML: `#` headings, `- ` lists,
/// paragraphs.
fn prose(md: &str) -> String {
    let mut o = String::new();
    for block in md.split("\n\n").map(|b| b.trim_matches('\n')) {
        if block.is_empty() {
            continue;
        }
        let hashes = block.bytes().take_while(|&b| b == b'#').count();
        if (1..=6).contains(&hashes) && block[hashes..].starts_with(' ') && !block.contains('\n') {
            let _ = writeln!(o, "<h{hashes}>{}</h{hashes}>", inline(&block[hashes + 1..]));
        } else if block.lines().all(|l| l.starts_with("- ")) {
            o += "<ul>\n";
            for l in block.lines() {
                let _ = writeln!(o, "<li>{}</li>", inline(&l[2..]));
            }
            o += "</ul>\n";
        } else {
            let text: Vec<&str> = block.lines().map(str::trim).collect();
            let _ = writeln!(o, "<p>{}</p>", inline(&text.join(" ")));
        }
    }
    o
}

/// Inline Markdown → HTML: `code`, **bold**, [text](relative link); everything else escaped.
/// A link with a scheme (`https:`…) stays text: the page references nothing on the network.
fn inline(s: &str) -> String {
    let mut o = String::new();
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if let Some((code, tail)) = span(rest, "`", "`") {
            let _ = write!(o, "<code>{}</code>", escape(code));
            rest = tail;
        } else if let Some((bold, tail)) = span(rest, "**", "**") {
            let _ = write!(o, "<strong>{}</strong>", inline(bold));
            rest = tail;
        } else if let Some((text, href, tail)) = link(rest) {
            let _ = write!(o, "<a href=\"{}\">{}</a>", escape(href), inline(text));
            rest = tail;
        } else {
            o += &escape(&rest[..c.len_utf8()]);
            rest = &rest[c.len_utf8()..];
        }
    }
    o
}

/// When `s` starts with `open`: the text up to the next `close` and what follows it.
fn span<'a>(s: &'a str, open: &str, close: &str) -> Option<(&'a str, &'a str)> {
    let body = s.strip_prefix(open)?;
    let end = body.find(close)?;
    Some((&body[..end], &body[end + close.len()..]))
}

/// When `s` starts with a relative Markdown link `[text](href)`: text, href and what follows.
fn link(s: &str) -> Option<(&str, &str, &str)> {
    let (text, tail) = span(s, "[", "]")?;
    let (href, tail) = span(tail, "(", ")")?;
    (!text.contains('[') && !href.contains([':', ' '])).then_some((text, href, tail))
}

/// A table as HTML: the first column left-aligned, the others right-aligned (as in Markdown).
fn table_html(t: &Table, sortable: bool) -> String {
    let class = if sortable { " class=\"sortable\"" } else { "" };
    let mut o = format!("<div class=\"table\"><table{class}>\n<thead><tr>");
    for h in &t.header {
        let _ = write!(o, "<th>{}</th>", inline(h));
    }
    o += "</tr></thead>\n<tbody>\n";
    for r in &t.rows {
        o += "<tr>";
        for c in r {
            let _ = write!(o, "<td>{}</td>", inline(c));
        }
        o += "</tr>\n";
    }
    o += "</tbody>\n</table></div>\n";
    o
}

/// A figure inline: SVG as markup (without its `xmlns`, implied in HTML), PNG as a `data:` URI
/// with its size.
fn figure_html(rel: &str, alt: &str, bytes: &[u8]) -> String {
    let name = escape(rel.rsplit('/').next().unwrap_or(rel));
    let inner = if rel.ends_with(".svg") {
        let svg = String::from_utf8_lossy(bytes);
        let svg = svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
        let svg = svg.replacen(
            "<svg ",
            &format!("<svg role=\"img\" aria-label=\"{}\" ", escape(alt)),
            1,
        );
        svg.trim_end().to_string()
    } else {
        let size = png_size(bytes)
            .map(|(w, h)| format!(" width=\"{w}\" height=\"{h}\""))
            .unwrap_or_default();
        format!(
            "<img alt=\"{}\"{size} src=\"data:image/png;base64,{}\">",
            escape(alt),
            base64(bytes)
        )
    };
    format!(
        "<figure id=\"{name}\">\n{inner}\n<figcaption>{}</figcaption>\n</figure>\n",
        escape(alt)
    )
}

/// Width and height from a PNG's IHDR chunk.
fn png_size(b: &[u8]) -> Option<(u32, u32)> {
    if b.len() < 24 || &b[1..4] != b"PNG" || &b[12..16] != b"IHDR" {
        return None;
    }
    let be = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    Some((be(16), be(20)))
}

/// Standard base64 with padding (RFC 4648).
fn base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut o = String::with_capacity(b.len().div_ceil(3) * 4);
    for chunk in b.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &x)| n | ((x as u32) << (16 - 8 * i)));
        for i in 0..4 {
            if i <= chunk.len() {
                o.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

#[cfg(test)]
mod tests;
