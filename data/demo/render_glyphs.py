#!/usr/bin/env python3
"""Build the embedded "glyphs" demo dataset (CUB-200-2011 style layout).

Each class is one character (Latin incl. Latin-1 / Latin Extended-A letters,
digits, Greek, Cyrillic); each image is that character rendered in a different
real font shipped by Debian.  Look-alikes (cross-script twins, o/O-style pairs
that differ only by size, l/I/1, ...) are removed, see DROP_GROUPS.  Class ids
come from a seeded shuffle; ids 1..N/2 are training classes, the rest test
classes (class-disjoint, like CUB).  Rendering and filtering are described in
the generated README.md (FreeType via Pillow, basic layout, supersampled, ink
box scaled to 70-84 % of the canvas with seeded jitter, .notdef/empty/duplicate
renderings rejected, PER_CLASS seeded fonts per class).

Requirements: Debian bookworm, `apt-get install --no-install-recommends` the
packages in PACKAGES (missing ones are skipped), Python 3 with Pillow, fontTools
and numpy (e.g. python3 -m venv /tmp/glyph-venv && pip install pillow fonttools numpy).

Usage:  python3 render_glyphs.py [--out DIR] [--keep DIR]
Writes glyphs.tar.gz, glyphs.tar.gz.sha256, fonts.tsv (fonts used) and
README.md to --out (default: this directory).  Deterministic: the same fonts
and Pillow/FreeType/zlib give a bit-identical archive (sorted entries,
mtime/uid/gid 0, gzip mtime 0).
"""
import argparse, fnmatch, gzip, hashlib, io, os, random, re, shutil, subprocess
import sys, tarfile, tempfile, unicodedata
from collections import Counter, defaultdict

import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont, features
import PIL, fontTools

SEED = 20240617
SIZE = 40            # output image side (px)
RENDER_PX = 160      # supersampled render size (font size in px)
PER_CLASS = 24       # fonts (= images) per class
MIN_FONTS = 12       # drop classes with fewer usable fonts
HERE = os.path.dirname(os.path.abspath(__file__))

PACKAGES = """fonts-urw-base35 fonts-dejavu-core fonts-liberation2
fonts-noto-core fonts-crosextra-carlito fonts-crosextra-caladea fonts-linuxlibertine
fonts-ebgaramond fonts-cantarell fonts-roboto-unhinted fonts-roboto-slab fonts-lato
fonts-cmu fonts-gfs-didot fonts-gfs-artemisia fonts-gfs-neohellenic fonts-paratype
fonts-oldstandard fonts-comfortaa fonts-quicksand fonts-firacode fonts-adf-accanthis
fonts-adf-gillius fonts-adf-universalis fonts-adf-baskervald fonts-adf-berenis
fonts-adf-ikarius fonts-adf-tribun fonts-adf-verana fonts-adf-romande fonts-adf-switzera
fonts-sil-gentiumplus fonts-sil-charis fonts-sil-andika fonts-go fonts-yanone-kaffeesatz
fonts-league-spartan fonts-cabin fonts-tuffy fonts-vollkorn fonts-anonymous-pro fonts-jura
fonts-averia-gwf fonts-inconsolata fonts-inter fonts-fantasque-sans fonts-monoid
fonts-humor-sans fonts-fanwood fonts-goudybookletter fonts-b612 fonts-opendyslexic
fonts-prociono fonts-mononoki fonts-jetbrains-mono fonts-manrope fonts-courier-prime
fonts-play fonts-comic-neue fonts-dosis fonts-century-catalogue
fonts-tiresias fonts-ocr-b fonts-klaudia-berenika fonts-beteckna""".split()

# Families left out: near-duplicates of a kept design (optical/width/caption
# variants, forks), or not usable for single letters (symbols, small caps,
# initials, keyboard caps, italic-only).
SKIP_FAMILIES = """Linux Libertine Display O|Linux Libertine Initials O|Linux Biolinum Keyboard O
|Inter Display|Anonymous Pro Minus|Monoisome|Fanwood Text|Gentium Book Plus|PT Sans Caption
|PT Serif Caption|PT Sans Narrow|Nimbus Sans Narrow|Roboto Condensed|Accanthis ADF Std No2
|Accanthis ADF Std No3|Gillius ADF No2|Ikarius ADF No2 Std|Romande ADF No2 Std
|Romande ADF Style Std|Verana Sans Demi|Verana Sans Medium|Tiresias Infofont|Tiresias Infofont Z
|Tiresias PCfont|Tiresias PCfont Z|Tiresias Signfont|Tiresias Signfont Z|Tiresias Keyfont V2
|OpenDyslexicAlta|OpenDyslexicMono|B612 Mono|Courier Prime Code|CMU Serif Extra
|CMU Typewriter Text Variable Width|CMU Sans Serif Demi Condensed|CMU Classical Serif
|BetecknaGSCondensed|Beteckna|Berenis ADF Pro Math|Go Medium|Go Smallcaps|D050000L
|Standard Symbols PS|Z003|DejaVu Math TeX Gyre""".replace("\n", "").split("|")
SKIP_STYLE = re.compile(r"italic|oblique|slant|cond|narrow|ext|caption|outline|inverted|sharp"
                        r"|initials|small ?caps|retina|hairline|thin|^08", re.I)
SKIP_PATH = re.compile(r"LargeLineHeight|NoLoopK|/noto/(?!Noto(Sans|Serif)-)")
WEIGHT_WORDS = [("extralight", 200), ("ultralight", 200), ("semibold", 600), ("demibold", 600),
                ("extrabold", 800), ("ultrabold", 800), ("light", 300), ("book", 400),
                ("regular", 400), ("roman", 400), ("normal", 400), ("medium", 500),
                ("demi", 600), ("bold", 700), ("heavy", 800), ("black", 900)]

# ---------------------------------------------------------------- characters
RANGES = [(0x30, 0x39), (0x41, 0x5A), (0x61, 0x7A), (0xC0, 0x17F), (0x386, 0x3CE),
          (0x400, 0x45F)]
# Dropped characters: each is a look-alike of a kept one (kept one in brackets),
# differs from it only by size, or is rare/deprecated.  Filled from a rendered
# similarity check over ~20 full-coverage fonts plus manual review.
DROP_GROUPS = [
    ("same shape as a Latin letter", "ΑΒΕΖΗΙΚΜΝΟΡΤΥΧΪΫοϊίΐόΰ"
     "АВЕКМНОРСТХЅІЈЀЁЇаеорсуѕіјѐёїУ"),
    ("same shape as a Greek letter", "ГПФфћĸ"),
    ("Greek look-alike of a Latin/Cyrillic letter (ι~ı, κ~к, ν~v, ρ~p, χ~x)", "ικνρχ"),
    ("differs from its other case only by size (kept: upper case)",
     "cosvwxzçòóôõöøćĉċčōŏőśŝşšźżžŵвгджзийклмнпстхцчшщъыьэюяѓєќѝџљњўψ"),
    ("l/I/1 and o/O/0 confusables (kept: I, i, O)", "l01ıİìíîïĩīĭĺ"),
    ("digit look-alike (3~З, 6~б)", "Зб"),
    ("identical or nearly so to a kept letter (Đ=Ð, Ŀ~L, Ŧ~T, ſ~f, ŋ~η)", "ĐĿŀŦŧſŋ"),
    ("deprecated", "ŉ"),
]
CHAR_DROP = {ord(c): why for why, chars in DROP_GROUPS for c in chars}


def candidates():
    out = []
    for lo, hi in RANGES:
        for cp in range(lo, hi + 1):
            ch = chr(cp)
            if unicodedata.category(ch)[0] not in "LN" or cp in CHAR_DROP:
                continue
            out.append(cp)
    return out


def class_name(cp):
    return "U+%04X_%s" % (cp, re.sub(r"[^A-Z0-9]+", "_", unicodedata.name(chr(cp))))


# --------------------------------------------------------------------- fonts
def sh(*cmd):
    return subprocess.run(cmd, capture_output=True, text=True).stdout


def style_weight(style, os2_weight):
    s = style.lower().replace(" ", "").replace("-", "")
    for word, w in WEIGHT_WORDS:
        if word in s:
            return w
    return os2_weight


def licence(pkg, fname):
    try:
        text = open(f"/usr/share/doc/{pkg}/copyright", errors="replace").read()
    except OSError:
        return "unknown"
    if text.startswith("Format:"):  # machine-readable (DEP-5): last match wins
        lic = None
        for st in re.split(r"\n\s*\n", text):
            f = re.search(r"^Files:(.*(?:\n[ \t]+.*)*)", st, re.M)
            l = re.search(r"^License:[ \t]*(.*)", st, re.M)
            pats = [p if "/" not in p else os.path.basename(p) for p in f.group(1).split()
                    if "/" not in p or os.path.basename(p) != "*"] if f else []
            if l and any(fnmatch.fnmatch(fname, p) for p in pats):
                lic = l.group(1).strip()
        lic = lic or "unknown"
    else:
        m = re.search(r"Open Font License,? Version (1\.\d)", text, re.I)
        lic = f"OFL-{m.group(1)}" if m else "see copyright"
    lic = re.sub(r"SIL[-_ ]O(pen_Font_License_|FL-)1\.1", "OFL-1.1", lic)
    lic = lic.replace("GPL-2+FE", "GPL-2+ with font exception")
    return re.sub(r"\bApache-2\b(?!\.)", "Apache-2.0", lic).replace("bitstream-vera", "Bitstream-Vera")


def discover_fonts():
    """Return list of dicts (path, family, style, weight, package, licence)."""
    fams = defaultdict(list)
    for pkg in PACKAGES:
        files = sorted(p for p in sh("dpkg", "-L", pkg).splitlines()
                       if re.search(r"\.(ttf|otf)$", p, re.I) and not SKIP_PATH.search(p))
        for path in files:
            tt = TTFont(path, lazy=True)
            name = tt["name"]
            fam = (name.getDebugName(16) or name.getDebugName(1)).strip()
            style = (name.getDebugName(17) or name.getDebugName(2) or "Regular").strip()
            fam = re.sub(r" (Light|Medium)$", "", fam)  # e.g. "Quicksand Light"
            os2, post = tt["OS/2"], tt["post"]
            if (fam in SKIP_FAMILIES or SKIP_STYLE.search(style) or os2.fsSelection & 0x201
                    or post.italicAngle != 0):
                continue
            cmap = set((tt.getBestCmap() or {}).keys())
            fams[fam].append(dict(path=path, family=fam, style=style, package=pkg,
                                  weight=style_weight(style, os2.usWeightClass), cmap=cmap,
                                  licence=licence(pkg, os.path.basename(path))))
    fonts = []
    for fam in sorted(fams):  # <= 3 weights: regular, bold, light
        pool, chosen = fams[fam], []
        for target, lo, hi in ((400, 0, 1000), (700, 600, 1000), (300, 250, 350)):
            c = [f for f in pool if lo <= f["weight"] <= hi and f not in chosen
                 and all(f["weight"] != g["weight"] for g in chosen)]
            if c:
                chosen.append(min(c, key=lambda f: (abs(f["weight"] - target), f["path"])))
        fonts.extend(chosen)
    for f in fonts:
        f["slug"] = re.sub(r"[^a-z0-9]+", "-", f"{f['family']} {f['style']}".lower()).strip("-")
    assert len({f["slug"] for f in fonts}) == len(fonts), "font slugs not unique"
    return sorted(fonts, key=lambda f: f["slug"])


# ----------------------------------------------------------------- rendering
_FONT_CACHE = {}


def ink(path, text):
    """High-resolution white-on-black rendering cropped to its ink box, or None."""
    if path not in _FONT_CACHE:
        _FONT_CACHE[path] = ImageFont.truetype(path, RENDER_PX,
                                               layout_engine=ImageFont.Layout.BASIC)
    img = Image.new("L", (4 * RENDER_PX, 4 * RENDER_PX), 0)
    ImageDraw.Draw(img).text((RENDER_PX, RENDER_PX), text, font=_FONT_CACHE[path], fill=255)
    box = img.getbbox()
    if box is None:
        return None
    g = img.crop(box)
    return g if np.asarray(g, dtype=np.uint32).sum() >= 255 * RENDER_PX // 4 else None


def place(glyph, rng, jitter=True):
    """Scale the ink to the canvas with seeded jitter; black on white SIZE x SIZE."""
    w, h = glyph.size
    frac = rng.uniform(0.70, 0.84) if jitter else 0.77
    s = frac * SIZE / max(w, h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    small = glyph.resize((nw, nh), Image.LANCZOS)
    pos = []
    for free in (SIZE - nw, SIZE - nh):
        d = rng.uniform(-1.5, 1.5) if jitter else 0.0
        pos.append(int(min(max(round(free / 2 + d), 1), free - 1)))
    canvas = Image.new("L", (SIZE, SIZE), 0)
    canvas.paste(small, tuple(pos))
    return Image.eval(canvas, lambda v: 255 - v)


def usable_renderings(fonts, cps):
    """{cp: {slug: glyph}} after cmap / empty / .notdef / duplicate filtering."""
    out = defaultdict(dict)
    stats = Counter()
    for f in fonts:
        notdef = ink(f["path"], chr(0x10FFFD))
        nd = notdef.tobytes() + repr(notdef.size).encode() if notdef else None
        seen = defaultdict(list)
        for cp in cps:
            if cp not in f["cmap"]:
                continue
            g = ink(f["path"], chr(cp))
            if g is None:
                stats["empty"] += 1
                continue
            key = g.tobytes() + repr(g.size).encode()
            if key == nd:
                stats["notdef"] += 1
                continue
            seen[key].append((cp, g))
        for key, lst in seen.items():
            if len(lst) > 1:  # same picture for two classes: fallback box or alias
                stats["duplicate"] += len(lst)
                continue
            out[lst[0][0]][f["slug"]] = lst[0][1]
    return out, stats


# ------------------------------------------------------------------- packing
def pack(tree, dest):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        paths = []
        for root, dirs, files in os.walk(os.path.join(tree, "glyphs")):
            paths.append(root)
            paths += [os.path.join(root, f) for f in files]
        for p in sorted(paths, key=lambda p: os.path.relpath(p, tree)):
            ti = tar.gettarinfo(p, arcname=os.path.relpath(p, tree))
            ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = 0, 0, 0, "", ""
            ti.mode = 0o755 if ti.isdir() else 0o644
            if ti.isdir():
                tar.addfile(ti)
            else:
                with open(p, "rb") as fh:
                    tar.addfile(ti, fh)
    with open(dest, "wb") as raw:
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
            gz.write(buf.getvalue())
    digest = hashlib.sha256(open(dest, "rb").read()).hexdigest()
    with open(dest + ".sha256", "w") as fh:
        fh.write(f"{digest}  {os.path.basename(dest)}\n")
    return digest


# ---------------------------------------------------------------------- main
def pkg_version(pkg):
    return sh("dpkg-query", "-W", "-f=${Version}", pkg).strip()


def write_readme(path, n_cls, n_train, per_class, n_img, fonts_used, dropped_cls, stats):
    by_pkg = defaultdict(list)
    for f in fonts_used:
        by_pkg[f["package"]].append(f)
    lic_rows = "\n".join(
        f"| {p} | {pkg_version(p)} | {len(fs)} | {', '.join(sorted({f['licence'] for f in fs}))} |"
        for p, fs in sorted(by_pkg.items()))
    drops = "\n".join(f"- {why}: {' '.join(chars)}" for why, chars in DROP_GROUPS)
    low = ", ".join(f"{class_name(cp)} ({n})" for cp, n in dropped_cls) or "none"
    text = f"""# glyphs: a small many-class demo dataset for deep metric learning

Each class is one character (Latin incl. Latin-1 and Latin Extended-A letters,
digits, Greek, Cyrillic); each image is that character rendered in a different
real font (Debian font packages).  Layout and split follow CUB-200-2011: class
ids 1..{n_train} are **training** classes, {n_train + 1}..{n_cls} are **test**
classes (class-disjoint; zero-shot retrieval).  Class ids come from a seeded
shuffle, so both halves mix all scripts.

| | |
|---|---|
| classes | {n_cls} ({n_train} train / {n_cls - n_train} test) |
| images | {n_img} ({per_class}) |
| image format | {SIZE}x{SIZE} 8-bit grayscale PNG, black glyph on white |
| fonts | {len(fonts_used)} font files from {len(by_pkg)} Debian bookworm packages |

## Files (inside `glyphs.tar.gz`, directory `glyphs/`)

- `classes.txt`: `<class_id> <name>`, name = `U+XXXX_<UNICODE_NAME>`
- `images.txt`: `<image_id> <path under images/>`, e.g. `001.U+0041/dejavu-sans-book.png`
- `image_class_labels.txt`: `<image_id> <class_id>`
- `train_test_split.txt`: `<image_id> <1 = training class, 0 = test class>`
- `images/<NNN>.U+XXXX/<font-slug>.png`
- `fonts.tsv`: font file, family, style, Debian package, licence (from the
  package's `/usr/share/doc/<pkg>/copyright`), images rendered
- `README.md`: this file

## How it was made

`data/demo/render_glyphs.py` (seed {SEED}; Pillow {PIL.__version__}, FreeType
{features.version('freetype2')}, fontTools {fontTools.version}).
Fonts: upright styles only, at most 3 weights (regular, bold, light) per family, near-duplicate
designs left out (see `SKIP_FAMILIES` in the script).  A glyph is rendered at
{RENDER_PX} px, cropped to its ink, scaled so its longer side is 70-84 % of the
canvas (seeded), centred with a seeded shift of up to 1.5 px, never clipped.
A font is used for a character only if its cmap has it and the rendering is
not empty, not the font's `.notdef` box and not bit-identical to another kept
character in that font (renderings filtered out: {stats['empty']} empty,
{stats['notdef']} `.notdef`, {stats['duplicate']} duplicates).  Each class gets a
seeded sample of {PER_CLASS} usable fonts; classes with fewer than {MIN_FONTS}
usable fonts are dropped (dropped here: {low}).

Characters left out on purpose (look-alikes; when in doubt a character was dropped):

{drops}

## Licences

The images are renderings of glyphs from the fonts below; each font stays under
its own licence.  Licence names are the short names used in each package's
Debian copyright file (for the font file actually used); "font exception" is the
usual GPL/AGPL font-embedding exception.  Per-font details are in `fonts.tsv`.

| package | version | fonts used | licence |
|---|---|---|---|
{lic_rows}
"""
    open(path, "w").write(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keep", help="also copy the unpacked glyphs/ tree to this directory")
    ap.add_argument("--out", default=HERE, help="output directory (default: next to script)")
    args = ap.parse_args()
    fonts = discover_fonts()
    cps = candidates()
    print(f"{len(fonts)} fonts, {len(cps)} candidate characters", file=sys.stderr)
    usable, stats = usable_renderings(fonts, cps)
    kept, dropped_cls = [], []
    for cp in cps:
        n = len(usable.get(cp, {}))
        (kept if n >= MIN_FONTS else dropped_cls).append(cp if n >= MIN_FONTS else (cp, n))
    order = random.Random(f"{SEED}:classes")
    order.shuffle(kept)
    n_train = len(kept) // 2
    by_slug = {f["slug"]: f for f in fonts}
    tmp = tempfile.mkdtemp(prefix="glyphs-")
    root = os.path.join(tmp, "glyphs")
    os.makedirs(os.path.join(root, "images"))
    images, labels, used, per_class = [], [], Counter(), Counter()
    for cid, cp in enumerate(kept, 1):
        slugs = sorted(usable[cp])
        rng = random.Random(f"{SEED}:pick:{cp}")
        pick = sorted(rng.sample(slugs, min(PER_CLASS, len(slugs))))
        folder = "%03d.U+%04X" % (cid, cp)
        os.makedirs(os.path.join(root, "images", folder))
        for slug in pick:
            img = place(usable[cp][slug], random.Random(f"{SEED}:jitter:{cp}:{slug}"))
            rel = f"{folder}/{slug}.png"
            img.save(os.path.join(root, "images", rel), optimize=True)
            images.append(rel)
            labels.append(cid)
            used[slug] += 1
            per_class[cid] += 1
    with open(os.path.join(root, "classes.txt"), "w") as fh:
        fh.writelines(f"{i} {class_name(cp)}\n" for i, cp in enumerate(kept, 1))
    with open(os.path.join(root, "images.txt"), "w") as fh:
        fh.writelines(f"{i} {p}\n" for i, p in enumerate(images, 1))
    with open(os.path.join(root, "image_class_labels.txt"), "w") as fh:
        fh.writelines(f"{i} {c}\n" for i, c in enumerate(labels, 1))
    with open(os.path.join(root, "train_test_split.txt"), "w") as fh:
        fh.writelines(f"{i} {int(c <= n_train)}\n" for i, c in enumerate(labels, 1))
    fonts_used = [by_slug[s] for s in sorted(used)]
    with open(os.path.join(root, "fonts.tsv"), "w") as fh:
        fh.write("file\tfamily\tstyle\tpackage\tlicence\timages\n")
        fh.writelines(f"{os.path.basename(f['path'])}\t{f['family']}\t{f['style']}\t"
                      f"{f['package']}\t{f['licence']}\t{used[f['slug']]}\n" for f in fonts_used)
    counts = Counter(per_class.values())
    desc = ", ".join(f"{n} per class for {k} classes" for n, k in sorted(counts.items(), reverse=True))
    write_readme(os.path.join(root, "README.md"), len(kept), n_train, desc, len(images),
                 fonts_used, dropped_cls, stats)
    dest = os.path.join(args.out, "glyphs.tar.gz")
    digest = pack(tmp, dest)
    for name in ("fonts.tsv", "README.md"):
        shutil.copyfile(os.path.join(root, name), os.path.join(args.out, name))
    if args.keep:
        shutil.copytree(root, os.path.join(args.keep, "glyphs"), dirs_exist_ok=True)
    shutil.rmtree(tmp)
    print(f"{len(kept)} classes ({n_train} train), {len(images)} images ({desc}), "
          f"{len(fonts_used)} fonts; {dest}: {os.path.getsize(dest)} bytes, sha256 {digest}\n"
          f"dropped classes (<{MIN_FONTS} fonts): {dropped_cls}\nfilter stats: {dict(stats)}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
