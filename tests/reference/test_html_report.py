"""`reports/<profile>/index.html` — the report as one self-contained page — loaded in a real
headless browser (Debian's `chromium` and `chromium-driver`, driven by selenium): it loads with
no console error and fetches nothing, every figure has a non-zero size, every table holds the
cells of the matching Markdown table of README.md, and the sortable tables sort numerically.
Checked on the report of a tiny pipeline run and on every committed `reports/*/index.html`.

Without the browser the tests fail under CI (`.ci/run` installs it) and are skipped locally,
saying why."""

import glob
import os
import pathlib
import re
import shutil

import pytest

from gl_tiny import REPO, gl, tiny_project

COMMITTED = sorted(glob.glob(str(REPO / "reports" / "*" / "index.html")))
INSTALL = ("install it: `apt-get install chromium chromium-driver` and "
           "`pip install -r requirements-dev.txt` (selenium)")


def missing(what: str):
    """Fails under CI, skips (printing why) elsewhere."""
    msg = f"the browser test needs {what}; {INSTALL}"
    if os.environ.get("CI"):
        pytest.fail(msg)
    print(f"SKIP: {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium with its console log kept and every host name unresolvable."""
    try:
        from selenium import webdriver
    except ImportError:
        missing("the selenium package")
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        missing("`chromium` and `chromedriver` on PATH")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,1024", "--disable-background-networking",
              "--host-resolver-rules=MAP * ~NOTFOUND"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    drv = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=driver))
    drv.set_page_load_timeout(60)
    yield drv
    drv.quit()


def norm(text: str) -> str:
    """Cell text with Markdown's inline marks (code, bold, links) dropped, whitespace folded."""
    text = re.sub(r"\[([^\]]*)\]\([^)\s]*\)", r"\1", text)
    text = text.replace("`", "").replace("**", "")
    return " ".join(text.split())


def markdown_tables(md: str) -> list:
    """Every table of a Markdown text: its rows (the header first) of cell texts."""
    tables, cur = [], None
    for line in md.splitlines():
        if line.startswith("|"):
            cells = [norm(c) for c in line.strip()[1:-1].split("|")]
            if cur is None:
                cur = [cells]
            elif not all(re.fullmatch(r":?-+:?", c) for c in cells):
                cur.append(cells)
        elif cur is not None:
            tables.append(cur)
            cur = None
    if cur is not None:
        tables.append(cur)
    return tables


PAGE_TABLES = """return Array.from(document.querySelectorAll('table')).map(t =>
  Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.textContent)));"""

FIGURES = """return Array.from(document.querySelectorAll('figure > svg, figure > img')).map(e => {
  const r = e.getBoundingClientRect();
  return [e.tagName, r.width, r.height, e.tagName === 'IMG' ? e.naturalWidth : 1];
});"""

FETCHED = "return performance.getEntriesByType('resource').map(e => e.name);"


def check_page(browser, page: pathlib.Path, md: str):
    """The checks of one page against the Markdown `md` it was made with."""
    browser.get_log("browser")  # drop what earlier pages logged
    browser.get(page.as_uri())
    assert browser.execute_script("return document.readyState") == "complete"
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not errors, f"{page}: console errors {errors}"
    assert browser.execute_script(FETCHED) == [], f"{page}: fetched something"
    figures = browser.execute_script(FIGURES)
    assert len(figures) == md.count("\n![") + md.startswith("!["), (page, figures)
    for tag, w, h, natural in figures:
        assert w > 0 and h > 0 and natural > 0, f"{page}: an empty {tag} figure {figures}"
    html = [[[" ".join(c.split()) for c in row] for row in t]
            for t in browser.execute_script(PAGE_TABLES)]
    want = markdown_tables(md)
    assert len(html) == len(want), f"{page}: {len(html)} tables, README.md has {len(want)}"
    for i, (got, exp) in enumerate(zip(html, want)):
        diff = [(g, e) for g, e in zip(got, exp) if g != e] or [(got, exp)]
        assert got == exp, f"{page}: table {i + 1} differs from README.md's: {diff[0]}"


@pytest.fixture(scope="module")
def tiny_report(tmp_path_factory):
    """The report of the tiny profile after `gl run`: its directory."""
    p = tiny_project(tmp_path_factory.mktemp("html"))
    gl(p, "run", "--profile", "tiny")
    return p / "reports" / "tiny"


def test_the_tiny_report_page_loads_with_its_tables_and_figures(browser, tiny_report):
    page = tiny_report / "index.html"
    md = (tiny_report / "README.md").read_text()
    assert len(markdown_tables(md)) >= 2 and "![" in md
    check_page(browser, page, md)


def test_the_check_fails_on_a_changed_number_or_a_console_error(browser, tiny_report, tmp_path):
    md = (tiny_report / "README.md").read_text()
    html = (tiny_report / "index.html").read_text()
    cell = re.search(r"<td>(\d+\.\d\d)", html)
    wrong = tmp_path / "wrong-number.html"
    wrong.write_text(html.replace(cell.group(0), "<td>" + cell.group(1) + "1", 1))
    with pytest.raises(AssertionError, match="differs from README.md"):
        check_page(browser, wrong, md)
    noisy = tmp_path / "console-error.html"
    noisy.write_text(html.replace("<main>", "<main><script>console.error('boom')</script>", 1))
    with pytest.raises(AssertionError, match="console errors"):
        check_page(browser, noisy, md)
    empty = tmp_path / "empty-figure.html"
    empty.write_text(html.replace("<svg ", "<svg style=\"display:none\" ", 1))
    with pytest.raises(AssertionError, match="empty"):
        check_page(browser, empty, md)


@pytest.mark.parametrize("page", COMMITTED, ids=lambda p: pathlib.Path(p).parent.name)
def test_a_committed_report_page(browser, page):
    page = pathlib.Path(page)
    check_page(browser, page, (page.parent / "README.md").read_text())


SORT_PAGE = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>t</title></head>
<body><table class="sortable"><thead><tr><th>objective</th><th>MAP@R</th><th>Δ</th>
<th>epoch</th></tr></thead><tbody>
<tr><td>a</td><td>44.60 ± 0.79</td><td>(reference)</td><td>2*</td></tr>
<tr><td>b</td><td>—</td><td>+0.15 [−5.61, +5.91]</td><td>10</td></tr>
<tr><td>c</td><td>9.50 ± 2.10</td><td>−0.94 [−6.60, +4.73]</td><td>3*</td></tr>
<tr><td>d</td><td>100.00</td><td>−12.00 [−20.00, −4.00]</td><td>1</td></tr>
</tbody></table><script>
SCRIPT</script></body></html>
"""


def test_a_sortable_table_sorts_numbers_as_numbers(browser, tmp_path):
    from selenium.webdriver.common.by import By

    js = (REPO / "src" / "report" / "html" / "sortable.js").read_text()
    page = tmp_path / "sort.html"
    page.write_text(SORT_PAGE.replace("SCRIPT", js))
    browser.get_log("browser")
    browser.get(page.as_uri())
    first = "return Array.from(document.querySelectorAll('tbody tr')).map(r => r.cells[0].textContent).join('')"
    for col, clicks in [(1, ["cadb", "dacb"]), (2, ["dcba", "bcda"]), (3, ["dacb", "bcad"])]:
        header = browser.find_elements(By.TAG_NAME, "th")[col]
        for want in clicks:
            header.click()
            assert browser.execute_script(first) == want, (col, want)
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []
